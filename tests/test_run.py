"""Runs are never lost: a run folder is never overwritten or shared, a checkpoint is bound to its
run, a damaged file costs at most one save, and nothing is written through a planted link."""

import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest

from minivae.__main__ import main
from minivae.checkpoint import CheckpointError, checkpoint_files
from minivae.run import RunBusy, RunLock, new_run_folder

SMALL = ["--hidden", "8", "--batch-size", "256", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--epochs", "3", "--out", str(out), *SMALL]) == 0
    return out


def _copy(run, tmp_path, name="copy"):
    copy = tmp_path / name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


def _error(capsys):
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


def test_a_new_run_never_replaces_one_without_overwrite(run, tmp_path, capsys):
    copy = _copy(run, tmp_path)
    before = _snapshot(copy)
    other_architecture = ["--hidden", "5", "--batch-size", "256", "--no-progress"]
    assert main(["train", "--epochs", "1", "--out", str(copy), *other_architecture]) == 2
    assert "already holds a run; continue it with --resume, choose another --name or --out, or " \
           "replace it with --overwrite" in _error(capsys)
    assert _snapshot(copy) == before
    assert main(["train", "--epochs", "1", "--out", str(copy), "--resume", "--overwrite"]) == 2
    assert "give one of them" in _error(capsys)
    assert main(["train", "--epochs", "1", "--out", str(copy), "--overwrite", *other_architecture]) == 0
    record = json.loads((copy / "run.json").read_text())
    assert record["model"]["hidden"] == [5] and record["train"]["epochs"] == 1
    assert [p.name for p in checkpoint_files(copy) if p.exists()] == ["checkpoint.safetensors"]


def test_run_folders_are_made_exclusively():
    import tempfile
    parent = tempfile.mkdtemp()
    names = [new_run_folder(parent, "digits-20261128-120000").name for _ in range(3)]
    assert names == ["digits-20261128-120000", "digits-20261128-120000-2", "digits-20261128-120000-3"]


def test_two_trains_started_together_get_two_folders(tmp_path):
    """Two real processes with the default name (a one-second timestamp): never one folder."""
    cmd = [sys.executable, "-m", "minivae", "train", "--epochs", "2", *SMALL]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 2
    for f in folders:  # each a whole run of its own
        assert len(json.loads((f / "run.json").read_text())["run_id"]) == 32
        assert len((f / "metrics.csv").read_text().splitlines()) == 3
    ids = {json.loads((f / "run.json").read_text())["run_id"] for f in folders}
    assert len(ids) == 2


_HOLD = "import sys, time; from minivae.run import RunLock\nwith RunLock(sys.argv[1]):\n" \
        "    print('locked', flush=True); time.sleep(60)\n"


def test_a_run_being_trained_cannot_be_trained_twice(run, tmp_path, capsys):
    copy = _copy(run, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(copy)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _snapshot(copy)
        assert main(["train", "--resume", "--epochs", "5", "--out", str(copy)]) == 2
        assert f"is being trained by another process (pid {holder.pid})" in _error(capsys)
        with pytest.raises(RunBusy):
            RunLock(copy).__enter__()
        assert _snapshot(copy) == before
        assert main(["evaluate", str(copy), "--k", "0"]) == 0  # reading a run in progress is fine
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert main(["train", "--resume", "--epochs", "4", "--out", str(copy)]) == 0  # the kernel freed it


def test_a_checkpoint_from_another_run_is_refused(run, tmp_path, capsys):
    """Same architecture, another seed and optimizer: copied in, it must not load silently."""
    other = tmp_path / "other"
    assert main(["train", "--epochs", "1", "--seed", "7", "--optimizer", "sgd", "--out", str(other), *SMALL]) == 0
    copy = _copy(run, tmp_path)
    for f in checkpoint_files(copy):
        f.unlink(missing_ok=True)
    shutil.copy(other / "checkpoint.safetensors", copy / "checkpoint.safetensors")
    capsys.readouterr()
    for argv in (["evaluate", str(copy), "--k", "0"], ["train", "--resume", "--epochs", "5", "--out", str(copy)]):
        assert main(argv) == 2
        assert "was written by another run" in _error(capsys)


def test_one_damaged_checkpoint_never_costs_the_run(run, tmp_path, capsys):
    copy = _copy(run, tmp_path)
    assert [p.name for p in checkpoint_files(copy)] == ["checkpoint.safetensors", "checkpoint-1.safetensors"]
    current = copy / "checkpoint.safetensors"
    current.write_bytes(current.read_bytes()[:-100])  # truncated
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["evaluate", str(copy), "--k", "0"]) == 0
        assert main(["train", "--resume", "--epochs", "4", "--out", str(copy)]) == 0
    assert any("loaded checkpoint-1.safetensors instead" in str(w.message) for w in caught)
    rows = (copy / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]  # resumed after epoch 2, redid 3


@pytest.mark.parametrize("damage", ["garbled header", "200k field", "epoch not a number", "binary",
                                    "extra column", "empty"])
def test_a_damaged_metrics_log_never_blocks_the_resume(run, tmp_path, capsys, damage):
    copy = _copy(run, tmp_path)
    metrics = copy / "metrics.csv"
    text = metrics.read_text()
    metrics.write_bytes({
        "garbled header": b"ep\x00och,st" + text.encode()[20:],
        "200k field": text.encode() + b"4," + b"9" * 200_000 + b"\n",
        "epoch not a number": text.replace("\n1,", "\none,", 1).encode(),
        "binary": os.urandom(3000),
        "extra column": text.encode() + b"3," + b"1," * (text.splitlines()[0].count(",")) + b"surprise\n",
        "empty": b"",
    }[damage])
    messages = []
    assert main(["train", "--resume", "--epochs", "4", "--out", str(copy)]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    if damage != "empty":
        assert "metrics.csv was damaged" in out.out and "set it aside as metrics.damaged-" in out.out
        assert len(list(copy.glob("metrics.damaged-*.csv"))) == 1
    assert (copy / "metrics.csv").read_text().splitlines()[-1].startswith("4,")
    del messages


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000,
                                  '{"model": {"x_dim": ' + "9" * 5000 + "}, \"train\": {}}",
                                  " " * 2_000_000 + "{}"])
def test_a_pathological_run_json_is_one_line_naming_the_file(run, tmp_path, capsys, text):
    copy = _copy(run, tmp_path)
    (copy / "run.json").write_text(text)
    for argv in (["evaluate", str(copy), "--k", "0"], ["train", "--resume", "--out", str(copy)],
                 ["sample", str(copy)]):
        assert main(argv) == 2
        err = _error(capsys)
        assert f"{copy / 'run.json'} is damaged" in err and len(err.strip().splitlines()) == 1


def test_nothing_is_written_through_a_planted_link(run, tmp_path, capsys):
    copy = _copy(run, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    outside_run_json = tmp_path / "elsewhere.json"  # a link to a valid run.json elsewhere: read, not written
    shutil.copy(run / "run.json", outside_run_json)
    for name in ("evaluation.json", "samples.png", "curves.png", "metrics.csv", "run.json"):
        (copy / name).unlink(missing_ok=True)
        (copy / name).symlink_to(outside_run_json if name == "run.json" else victim)
    assert main(["evaluate", str(copy), "--k", "0"]) == 0
    assert main(["sample", str(copy), "--n", "4"]) == 0
    assert main(["train", "--resume", "--epochs", "4", "--out", str(copy)]) == 0
    assert victim.read_text() == "keep me"
    assert outside_run_json.read_bytes() == (run / "run.json").read_bytes()
    for name in ("evaluation.json", "samples.png", "curves.png", "metrics.csv", "run.json"):
        assert not (copy / name).is_symlink() and (copy / name).stat().st_size > 10, name
    target = tmp_path / "tutorials"
    assert main(["tutorials", str(target)]) == 0
    (target / "NOTATION.md").unlink()
    (target / "NOTATION.md").symlink_to(victim)
    assert main(["tutorials", str(target), "--force"]) == 0
    assert victim.read_text() == "keep me" and not (target / "NOTATION.md").is_symlink()


def test_a_negative_example_count_in_a_resigned_checkpoint_is_refused(run, tmp_path, capsys):
    from test_checkpoint import _rewrite
    copy = _copy(run, tmp_path)
    for f in checkpoint_files(copy)[1:]:
        f.unlink()

    def negative(record):
        record["meta"]["sums"][3] = -5
        record["meta"]["step"] = 1

    _rewrite(copy / "checkpoint.safetensors", record=negative)
    assert main(["train", "--resume", "--epochs", "5", "--out", str(copy)]) == 2
    assert "training progress (epoch, step, sums, elapsed) is missing or invalid" in _error(capsys)
    with pytest.raises(CheckpointError):
        from minivae.run import load_run
        from minivae.checkpoint import load_checkpoint
        from minivae.train import Progress
        Progress.from_meta(load_checkpoint(copy, run_id=load_run(copy)[2])[3], 10)


def test_reading_a_run_while_it_trains_never_fails(tmp_path):
    """evaluate or sample beside a run in progress: every load sees one whole, current checkpoint."""
    from minivae.checkpoint import load_checkpoint
    from minivae.run import load_run
    out = tmp_path / "live"
    trainer = subprocess.Popen([sys.executable, "-m", "minivae", "train", "--epochs", "150", "--out",
                                str(out), *SMALL], stdout=subprocess.DEVNULL)
    loads, epochs = 0, set()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # not even a fallback to an older file
            while trainer.poll() is None:
                if not (out / "checkpoint.safetensors").exists():
                    continue
                mcfg, _, run_id = load_run(out)
                epochs.add(load_checkpoint(out, expect=mcfg, run_id=run_id)[3]["epoch"])
                loads += 1
    finally:
        trainer.kill()
        trainer.wait()
    assert trainer.returncode == 0 and loads > 100 and len(epochs) > 20, (loads, len(epochs))


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(run, tmp_path, capsys):
    from minivae.checkpoint import load_checkpoint
    copy = _copy(run, tmp_path)
    for f in checkpoint_files(copy):
        f.unlink(missing_ok=True)
    (copy / "metrics.csv").write_text("epoch\n")
    assert main(["train", "--resume", "--out", str(copy)]) == 0
    assert "stopped before its first checkpoint: starting it from the beginning" in capsys.readouterr().out
    mine, theirs = load_checkpoint(copy)[0], load_checkpoint(run)[0]
    assert all((mine[k] == theirs[k]).all() for k in theirs)  # the run it would have been


def test_run_json_records_the_data_the_run_was_trained_on(tmp_path, capsys):
    """Tutorial 7's "Try this": a run trained with train(..., data=ds) is evaluated from the command
    line on the same data set, whatever TrainConfig.dataset said."""
    from minivae import VAEConfig
    from minivae.data import make_bars
    from minivae.train import TrainConfig, train
    out = tmp_path / "bars-run"
    train(VAEConfig(x_dim=16, hidden=(8,), z_dim=2), TrainConfig(epochs=1, batch_size=50), out,
          data=make_bars(), progress=False, log=lambda *a: None)
    record = json.loads((out / "run.json").read_text())
    assert record["train"]["dataset"] == "bars" and record["data"]["name"] == "bars"
    assert record["data"]["n_train"] == 2000 and record["data"]["x_dim"] == 16
    assert main(["evaluate", str(out), "--k", "5", "--limit", "20"]) == 0
    assert "bars test set, 20 examples" in capsys.readouterr().out
    # trained on a part of the set: `evaluate` would load the whole set, which is other data
    train(VAEConfig(x_dim=16, hidden=(8,), z_dim=2), TrainConfig(epochs=1, batch_size=50), tmp_path / "part",
          data=make_bars(n=200), progress=False, log=lambda *a: None)
    assert main(["evaluate", str(tmp_path / "part"), "--k", "5"]) == 2
    assert "differs from the data this run was trained on" in capsys.readouterr().err
