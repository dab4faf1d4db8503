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


def test_nothing_is_pickled(tmp_path):
    params, state = _trained_state("numpy")
    save_checkpoint(tmp_path / "ck", params, CFG, state)
    with np.load(tmp_path / "ck.npz", allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_other_architecture_is_refused(tmp_path):
    params, state = _trained_state("numpy")
    save_checkpoint(tmp_path / "ck", params, CFG, state)
    other = VAEConfig(x_dim=6, hidden=(7,), z_dim=2, likelihood="gaussian", variance="shared")
    with pytest.raises(CheckpointError, match=r"another architecture.*'hidden': \(\(7,\), \(5,\)\)"):
        load_checkpoint(tmp_path / "ck", expect=other)


def test_mismatched_or_corrupt_files_are_refused(tmp_path):
    params, state = _trained_state("numpy")
    save_checkpoint(tmp_path / "a", params, CFG, state)
    save_checkpoint(tmp_path / "b", init_params(CFG, seed=2), CFG, {})
    (tmp_path / "a.npz").write_bytes((tmp_path / "b.npz").read_bytes())
    with pytest.raises(CheckpointError, match=r"does not match .*\(checksum differs\)"):
        load_checkpoint(tmp_path / "a")
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "b")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "missing")


def test_writes_are_atomic_and_leave_no_temporaries(tmp_path):
    params, state = _trained_state("numpy")
    for _ in range(2):
        save_checkpoint(tmp_path / "ck", params, CFG, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.json", "ck.npz"]
    record = json.loads((tmp_path / "ck.json").read_text())
    assert record["format"] == "minivae-checkpoint" and record["config"]["hidden"] == [5]


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


def _save_ops(tmp_path):
    import minivae.checkpoint as C
    params, state = _trained_state("numpy")
    save_checkpoint(tmp_path / "count", params, CFG, state)
    counter = _KillAfter(None)
    orig, C.os = C.os, counter
    try:
        save_checkpoint(tmp_path / "count", params, CFG, state)  # a save over an existing pair
    finally:
        C.os = orig
    return counter.done


def test_a_save_killed_after_any_file_operation_leaves_a_checkpoint_that_resumes(tmp_path, monkeypatch):
    import minivae.checkpoint as C
    from minivae.data import load_digits, Dataset
    from minivae.train import TrainConfig, train

    digits = load_digits()
    data = Dataset("digits", digits.x_train[:96], digits.y_train[:96], digits.x_test[:20],
                   digits.y_test[:20], (8, 8))
    mcfg = VAEConfig(x_dim=64, hidden=(8,), z_dim=2)
    quiet = lambda *a, **k: None  # noqa: E731
    whole = train(mcfg, TrainConfig(epochs=3, batch_size=32), tmp_path / "whole", data=data,
                  progress=False, log=quiet)["params"]
    n_ops = _save_ops(tmp_path)
    assert n_ops >= 8  # 2 files written (fdopen, fsync each), 4 renames, 2 removals
    for n in range(n_ops + 1):
        out = tmp_path / f"killed{n}"
        train(mcfg, TrainConfig(epochs=1, batch_size=32), out, data=data, progress=False, log=quiet)
        monkeypatch.setattr(C, "os", _KillAfter(n))
        try:
            train(mcfg, TrainConfig(epochs=2, batch_size=32), out, data=data, resume=True,
                  progress=False, log=quiet)
        except _Killed:
            pass
        monkeypatch.setattr(C, "os", os)
        _, _, _, meta = load_checkpoint(out / "checkpoint")  # the old pair or the new one
        assert meta["epoch"] in (1, 2), n
        resumed = train(mcfg, TrainConfig(epochs=3, batch_size=32), out, data=data, resume=True,
                        progress=False, log=quiet)["params"]
        for k in whole:  # and the run ends where an uninterrupted one does, bit for bit
            np.testing.assert_array_equal(B.to_numpy(resumed[k]), B.to_numpy(whole[k]), err_msg=f"{n}")
        assert not list(out.glob(".minivae-*")), n  # the next save removed what the killed one left


def test_a_second_ctrl_c_during_a_save_is_ignored():
    from minivae import train as T

    flag = T._StopFlag()
    flag.requested = flag.saving = True
    flag._handle(signal.SIGINT, None)  # does not raise while saving
    flag.saving = False
    with pytest.raises(KeyboardInterrupt):
        flag._handle(signal.SIGINT, None)


# --- hostile or damaged files give a CheckpointError, and memory stays bounded ---------------------

def test_an_extra_array_is_refused_before_it_is_read(tmp_path, monkeypatch):
    params, state = _trained_state("numpy")
    save_checkpoint(tmp_path / "ck", params, CFG, state)
    import zipfile
    import minivae.checkpoint as C
    with zipfile.ZipFile(tmp_path / "ck.npz", "a") as zf:  # a 400 MB array, declared in 1 kB of header
        with zf.open("huge.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False,
                                                     "shape": (50_000_000,)})
    record = json.loads((tmp_path / "ck.json").read_text())
    record["npz_sha256"] = C.sha256_of(tmp_path / "ck.npz")
    record["record_sha256"] = C._record_sha256(record)
    (tmp_path / "ck.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=r"holds arrays this model has no use for \(\['huge'\]\)"):
        load_checkpoint(tmp_path / "ck")


def test_a_member_of_the_wrong_shape_is_refused_from_its_header(tmp_path):
    params, state = _trained_state("numpy")
    params = dict(params, **{"enc.W0": np.zeros((6, 5000), np.float32)})
    save_checkpoint(tmp_path / "ck", params, CFG, state)
    with pytest.raises(CheckpointError, match=r"'param/enc.W0' is float32 of shape \(6, 5000\); this model "
                                              r"needs float32 or float64 of shape \(6, 5\)"):
        load_checkpoint(tmp_path / "ck")


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(meta={"epoch": 99}), "record's checksum differs"),
    (lambda r: r.pop("config"), "field 'config' is missing"),
    (lambda r: r.update(config=[1, 2]), "field 'config' is missing or not a dict"),
    (lambda r: r.update(optimizer_scalars={"enc.W0": {"t": -1}}), r"optimizer state enc.W0.t = -1"),
    (lambda r: r.update(optimizer_scalars={"enc.W0": {"lr": "NaN"}}) or r["optimizer_scalars"]["enc.W0"].update(lr=float("nan")), "is invalid"),
    (lambda r: r.update(config={**r["config"], "hidden": "abc"}), "the model config is invalid"),
    (lambda r: r.update(config={**r["config"], "z_dim": -3}), "the model config is invalid"),
    (lambda r: r.update(optimizer_scalars={"nope": {"t": 1}}), r"unknown parameters \['nope'\]"),
])
def test_a_damaged_record_is_a_clear_error(tmp_path, edit, message):
    import minivae.checkpoint as C
    params, state = _trained_state("numpy")
    save_checkpoint(tmp_path / "ck", params, CFG, state)
    record = json.loads((tmp_path / "ck.json").read_text())
    edit(record)
    if "checksum" not in message:  # a writer that recomputes the checksum: the structure is checked too
        record["record_sha256"] = C._record_sha256(record)
    (tmp_path / "ck.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "ck")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "not a zip"])
def test_a_damaged_npz_is_a_clear_error(tmp_path, damage):
    import minivae.checkpoint as C
    params, state = _trained_state("numpy")
    save_checkpoint(tmp_path / "ck", params, CFG, state)
    npz = tmp_path / "ck.npz"
    data = npz.read_bytes()
    npz.write_bytes({"truncate": data[:len(data) // 2], "garbage": data[:200] + b"\0" * 300 + data[500:],
                     "empty": b"", "not a zip": b"hello" * 100}[damage])
    record = json.loads((tmp_path / "ck.json").read_text())
    record["npz_sha256"] = C.sha256_of(npz)  # as if the damage happened before the checksum was taken
    record["record_sha256"] = C._record_sha256(record)
    (tmp_path / "ck.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "ck")


def test_a_planted_link_at_a_temporary_name_is_not_followed(tmp_path):
    params, state = _trained_state("numpy")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for name in ("ck.npz.tmp", "ck.json.tmp", ".minivae-x.tmp"):
        (tmp_path / name).symlink_to(victim)
    save_checkpoint(tmp_path / "ck", params, CFG, state)
    assert victim.read_text() == "keep me"
    load_checkpoint(tmp_path / "ck")
