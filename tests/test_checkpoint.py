import json
import os
import signal

import numpy as np
import pytest

from minivae import VAEConfig, backend as B, init_params, optim
from minivae.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

CFG = VAEConfig(x_dim=6, hidden=(5,), z_dim=2, likelihood="gaussian", variance="shared")


def _trained_state(backend):
    params = init_params(CFG, seed=1, backend=backend, dtype="float32")
    state = {}
    grads = {k: v * 0.5 + 0.1 for k, v in params.items()}
    for _ in range(3):
        optim.step(params, grads, state, "adam", lr=0.01)
    return params, state


@pytest.mark.parametrize("to", ["numpy", "strict"])
def test_round_trip_across_backends(tmp_path, backend, to):
    params, state = _trained_state(backend)
    save_checkpoint(tmp_path / "ck", params, CFG, state, {"epoch": 3})
    p2, cfg2, s2, meta = load_checkpoint(tmp_path / "ck", backend=to)
    assert cfg2 == CFG and meta == {"epoch": 3}
    for k in params:
        assert B.backend_of(p2[k]) == to
        np.testing.assert_array_equal(B.to_numpy(p2[k]), B.to_numpy(params[k]))
        np.testing.assert_array_equal(B.to_numpy(s2[k]["m"]), B.to_numpy(state[k]["m"]))
        assert s2[k]["t"] == 3 and s2[k]["lr"] == 0.01
    assert B.dtype_name(p2["dec.logvar"]) == "float32" and tuple(p2["dec.logvar"].shape) == ()


def test_one_file_in_safetensors_format_with_nothing_pickled(tmp_path):
    from safetensors import safe_open
    params, state = _trained_state("numpy")
    path = save_checkpoint(tmp_path / "ck", params, CFG, state)
    assert path.name == "ck.safetensors" and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    with safe_open(path, "np") as f:  # any safetensors reader opens it
        assert f.metadata()["format"] == "minivae-checkpoint"
        assert set(f.keys()) == {f"param/{k}" for k in params} | {f"opt/{k}/{m}" for k in params
                                                                 for m in ("m", "v")}
        assert f.get_tensor("param/enc.W0").dtype == np.float32


def test_other_architecture_is_refused(tmp_path):
    params, state = _trained_state("numpy")
    save_checkpoint(tmp_path / "ck", params, CFG, state)
    other = VAEConfig(x_dim=6, hidden=(7,), z_dim=2, likelihood="gaussian", variance="shared")
    with pytest.raises(CheckpointError, match=r"another architecture.*'hidden': \(\(7,\), \(5,\)\)"):
        load_checkpoint(tmp_path / "ck", expect=other)


def test_missing_and_old_format_checkpoints_say_what_to_do(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "old.json").write_text("{}")
    (tmp_path / "old.npz").write_bytes(b"PK")
    with pytest.raises(CheckpointError, match=r"old two-file format, which this version of "
                                              r"minivae no longer reads.*train the run again"):
        load_checkpoint(tmp_path / "old")


def test_writes_are_atomic_and_keep_the_previous_saves(tmp_path):
    params, state = _trained_state("numpy")
    for epoch in range(4):
        save_checkpoint(tmp_path / "ck", params, CFG, state, {"epoch": epoch}, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck-1.safetensors", "ck-2.safetensors",
                                                          "ck.safetensors"]
    assert [load_checkpoint(p)[3]["epoch"] for p in sorted(tmp_path.iterdir())] == [2, 1, 3]
    save_checkpoint(tmp_path / "ck", params, CFG, state, {"epoch": 4}, keep=1)  # a smaller --keep
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.safetensors"]


def test_a_damaged_newest_file_falls_back_to_the_previous_one_with_a_warning(tmp_path):
    params, state = _trained_state("numpy")
    for epoch in (1, 2):
        save_checkpoint(tmp_path / "ck", params, CFG, state, {"epoch": epoch})
    current = tmp_path / "ck.safetensors"
    data = bytearray(current.read_bytes())
    data[-5] ^= 0x10  # one flipped bit in a parameter
    current.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"ck.safetensors has a checksum that differs.*loaded ck-1.safetensors"):
        assert load_checkpoint(tmp_path / "ck")[3] == {"epoch": 1}
    (tmp_path / "ck-1.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no usable checkpoint: .*checksum that differs.*ck-1"):
        load_checkpoint(tmp_path / "ck")


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    params, state = _trained_state("numpy")
    save_checkpoint(tmp_path / "ck", params, CFG, state, {"run_id": "mine"})
    save_checkpoint(tmp_path / "ck", params, CFG, state, {"run_id": "theirs"})  # copied in over it
    with pytest.warns(UserWarning, match="written by another run"):
        assert load_checkpoint(tmp_path / "ck", run_id="mine")[3]["run_id"] == "mine"
    (tmp_path / "ck-1.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"written by another run \(run id 'theirs', this run is 'mine'\)"):
        load_checkpoint(tmp_path / "ck", run_id="mine")


# --- a save killed at any point leaves a loadable checkpoint (issue: reliability) -----------------

class _Killed(BaseException):
    """Stands for kill -9: nothing after it runs, no cleanup (BaseException: no except catches it)."""


class _KillAfter:
    """``os`` for checkpoint.py, dying after the n-th file operation (None: never; counts them)."""
    OPS = ("fdopen", "fsync", "replace", "unlink")

    def __init__(self, n):
        self.n, self.done = n, 0

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in self.OPS:
            return real

        def op(*a, **k):
            if self.n is not None and self.done >= self.n:
                raise _Killed(f"killed before {name} (operation {self.done + 1})")
            self.done += 1
            return real(*a, **k)
        return op


def _patch_os(monkeypatch, fake):
    """Give checkpoint.py, files.py and run.py the same ``os`` (every file operation of a run)."""
    import minivae.checkpoint as C
    import minivae.files as F
    import minivae.run as R
    for module in (C, F, R):
        monkeypatch.setattr(module, "os", fake)


def test_a_run_killed_after_any_file_operation_resumes_bit_exact(tmp_path, monkeypatch):
    """kill -9 after each file operation of a resumed epoch (run.json, metrics.csv, the checkpoint
    with its move of the previous one): the run always resumes, and ends as an uninterrupted one."""
    from minivae.data import load_digits, Dataset
    from minivae.train import TrainConfig, train

    digits = load_digits()
    data = Dataset("digits", digits.x_train[:96], digits.y_train[:96], digits.x_test[:20],
                   digits.y_test[:20], (8, 8))
    mcfg = VAEConfig(x_dim=64, hidden=(8,), z_dim=2)
    quiet = lambda *a, **k: None  # noqa: E731
    whole = train(mcfg, TrainConfig(epochs=3, batch_size=32), tmp_path / "whole", data=data,
                  progress=False, log=quiet)["params"]
    train(mcfg, TrainConfig(epochs=1, batch_size=32), tmp_path / "count", data=data, progress=False, log=quiet)
    counter = _KillAfter(None)
    _patch_os(monkeypatch, counter)
    train(mcfg, TrainConfig(epochs=2, batch_size=32), tmp_path / "count", data=data, resume=True,
          progress=False, log=quiet)
    _patch_os(monkeypatch, os)
    n_ops = counter.done
    assert n_ops >= 13  # 3 writes (fdopen, fsync, rename) of run.json and metrics.csv, 4 of the save
    for n in range(n_ops + 1):
        out = tmp_path / f"killed{n}"
        train(mcfg, TrainConfig(epochs=1, batch_size=32), out, data=data, progress=False, log=quiet)
        _patch_os(monkeypatch, _KillAfter(n))
        try:
            train(mcfg, TrainConfig(epochs=2, batch_size=32), out, data=data, resume=True,
                  progress=False, log=quiet)
        except _Killed:
            pass
        _patch_os(monkeypatch, os)
        _, _, _, meta = load_checkpoint(out / "checkpoint")  # the previous save or the new one
        assert meta["epoch"] in (1, 2), n
        resumed = train(mcfg, TrainConfig(epochs=3, batch_size=32), out, data=data, resume=True,
                        progress=False, log=quiet)["params"]
        for k in whole:  # and the run ends where an uninterrupted one does, bit for bit
            np.testing.assert_array_equal(B.to_numpy(resumed[k]), B.to_numpy(whole[k]), err_msg=f"{n}")
        assert not list(out.glob(".minivae-*")), n  # the next run removed what the killed one left


def test_a_second_ctrl_c_during_a_save_is_ignored():
    from minivae import train as T

    flag = T._StopFlag()
    flag.signum, flag.saving = signal.SIGINT, True
    flag._handle(signal.SIGINT, None)  # does not raise while saving
    flag.saving = False
    with pytest.raises(KeyboardInterrupt):
        flag._handle(signal.SIGINT, None)


# --- hostile or damaged files give a CheckpointError, and memory stays bounded ---------------------

def _rewrite(path, arrays=None, record=None, metadata=None, sign=True):
    """Write ``path`` again with some of its parts changed, re-signed as a forger would (``sign``)."""
    import minivae.checkpoint as C
    from safetensors import safe_open
    from safetensors.numpy import save
    with safe_open(path, "np") as f:
        old_meta = f.metadata()
        old_arrays = {k: f.get_tensor(k) for k in f.keys()}
    arrays = old_arrays if arrays is None else arrays(old_arrays)
    rec = json.loads(old_meta["record"])
    rec_json = record if isinstance(record, str) else json.dumps(rec if record is None else record(rec) or rec)
    meta = {**old_meta, "record": rec_json}
    if sign:
        meta["sha256"] = C._digest(rec_json, arrays)
    meta = metadata(meta) if metadata else meta
    path.write_bytes(save(arrays, metadata=meta))


def _saved(tmp_path):
    params, state = _trained_state("numpy")
    return save_checkpoint(tmp_path / "ck", params, CFG, state, {"epoch": 1})


def test_an_extra_array_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    _rewrite(path, arrays=lambda a: {**a, "huge": np.zeros(1_000_000, np.float64)})
    with pytest.raises(CheckpointError, match=r"holds arrays or state this model has no use for \(\['huge'\]\)"):
        load_checkpoint(tmp_path / "ck")


def test_an_array_of_the_wrong_shape_is_refused_from_its_header(tmp_path):
    path = _saved(tmp_path)
    _rewrite(path, arrays=lambda a: {**a, "param/enc.W0": np.zeros((6, 5000), np.float32)})
    with pytest.raises(CheckpointError, match=r"array 'param/enc.W0' as .*\[6, 5000\].*this model "
                                              r"needs float32 or float64 of shape \(6, 5\)"):
        load_checkpoint(tmp_path / "ck")


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(meta={"epoch": 99}), "checksum that differs"),
    (lambda r: r.pop("config"), "record is damaged"),
    (lambda r: r.update(config=[1, 2]), "record is damaged"),
    (lambda r: r["optimizer_scalars"]["enc.W0"].update(t=-1), r"optimizer state enc.W0.t = -1 is invalid"),
    (lambda r: r["optimizer_scalars"]["enc.W0"].update(lr="abc"), r"enc.W0.lr = 'abc' is invalid"),
    (lambda r: r["optimizer_scalars"]["enc.W0"].update(beta1=1), r"enc.W0.beta1 = 1 is invalid"),
    (lambda r: r["optimizer_scalars"]["enc.W0"].update(eps=0.0), r"enc.W0.eps = 0.0 is invalid"),
    (lambda r: r["optimizer_scalars"]["enc.W0"].update(stray=1), r"enc.W0.stray = 1 is invalid"),
    (lambda r: r.update(config={**r["config"], "hidden": "abc"}), "record is damaged"),
    (lambda r: r.update(config={**r["config"], "z_dim": -3}), "record is damaged"),
    (lambda r: r.update(optimizer_scalars={"nope": {"t": 1}}), r"no use for \(\['nope'\]\)"),
    ('{"config": ' + "[" * 100_000 + "]" * 100_000 + "}", r"record is damaged \(RecursionError"),
    ('{"config": ' + "9" * 5000 + "}", r"record is damaged \(ValueError"),
])
def test_a_damaged_record_is_a_clear_error(tmp_path, edit, message):
    path = _saved(tmp_path)
    _rewrite(path, record=edit, sign="checksum" not in message)  # a forger re-signs the file
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "ck")


def test_another_format_version_is_refused_not_trusted(tmp_path):
    path = _saved(tmp_path)
    _rewrite(path, metadata=lambda m: {**m, "version": "2"})
    with pytest.raises(CheckpointError, match="format version '2'"):
        load_checkpoint(tmp_path / "ck")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "not safetensors", "huge header",
                                    "padded", "header says 1 GiB"])
def test_a_damaged_file_is_a_clear_error_and_costs_no_memory(tmp_path, damage):
    import tracemalloc
    path = _saved(tmp_path)
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    path.write_bytes({
        "truncate": data[:len(data) // 2], "garbage": data[:200] + b"\0" * 300 + data[500:],
        "empty": b"", "not safetensors": b"hello" * 100,
        "huge header": (len(data) + 10**8).to_bytes(8, "little") + data[8:],
        "padded": data + b" " * 3_000_000,
        "header says 1 GiB": (1 << 30).to_bytes(8, "little") + data[8:8 + n] + b" " * 100,
    }[damage])
    tracemalloc.start()
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "ck")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000, peak


def test_a_planted_link_at_a_temporary_or_final_name_is_not_followed(tmp_path):
    params, state = _trained_state("numpy")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for name in ("ck.safetensors", "ck-1.safetensors", ".minivae-trainer-x.tmp"):
        (tmp_path / name).symlink_to(victim)
    save_checkpoint(tmp_path / "ck", params, CFG, state)
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "ck.safetensors").is_symlink()
    load_checkpoint(tmp_path / "ck")


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    from minivae.files import remove_stale_temporaries
    import subprocess
    dead = subprocess.Popen(["true"])
    dead.wait()
    names = [f".minivae-{dead.pid}-a.tmp", f".minivae-{os.getpid()}-b.tmp", ".minivae-trainer-c.tmp",
             ".minivae-old.tmp"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    removed = sorted(p.name for p in remove_stale_temporaries(tmp_path))
    assert removed == sorted([names[0], names[2], names[3]])
    assert (tmp_path / names[1]).exists()


_WRITER = """
import sys, numpy as np
from minivae import VAEConfig, init_params
from minivae.checkpoint import save_checkpoint
cfg = VAEConfig(x_dim=64, hidden=(64,), z_dim=2)
params = init_params(cfg, seed=0)
for i in range(int(sys.argv[2])):
    save_checkpoint(sys.argv[1], params, cfg, {}, {"i": i}, keep=int(sys.argv[3]))
"""


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_a_reader_beside_a_saving_process_never_sees_an_error(tmp_path, keep):
    """The reliability probe's case: load in a loop while another process saves in a loop."""
    import subprocess
    import sys
    stem = tmp_path / "checkpoint"
    cfg = VAEConfig(x_dim=64, hidden=(64,), z_dim=2)
    save_checkpoint(stem, init_params(cfg, seed=0), cfg, {}, {"i": -1}, keep=keep)
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(stem), "400", str(keep)])
    loads, seen = 0, set()
    try:
        with __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("error")  # not even a fallback warning
            while writer.poll() is None or loads == 0:
                seen.add(load_checkpoint(stem, expect=cfg)[3]["i"])
                loads += 1
    finally:  # a failed load must not leave the writer running into the next test
        writer.kill()
        writer.wait()
    assert writer.returncode == 0 and loads > 50 and len(seen) > 5, (loads, len(seen))


def test_a_listing_that_missed_the_renamed_files_is_looked_at_again(tmp_path, monkeypatch):
    """Mid-save the newest name is missing, and a directory listing made while files are renamed
    can miss the renamed ones: the first look finds no file at all. The load looks again (the CI
    failure of a reader beside a saving process, on a busy machine), instead of "nothing saved"."""
    import minivae.checkpoint as C
    cfg = VAEConfig(x_dim=4, hidden=(3,), z_dim=2)
    stem = tmp_path / "checkpoint"
    for i in range(2):
        save_checkpoint(stem, init_params(cfg, seed=i), cfg, {}, {"i": i}, keep=2)
    (tmp_path / "checkpoint.safetensors").unlink()       # the moment between two renames
    real, looks = C.checkpoint_files, []

    def listing(path):
        looks.append(1)
        return real(path)[:1] if len(looks) == 1 else real(path)   # the first listing missed -1
    monkeypatch.setattr(C, "checkpoint_files", listing)
    assert load_checkpoint(stem, expect=cfg)[3]["i"] == 0 and len(looks) == 2
