"""The third reliability probe, one test per finding: device nodes and FIFOs are never replaced and
never block, a run's data is pinned, SIGTERM and SIGHUP save like Ctrl-C, every count is bounded,
every MemoryError is one line, run control and messages say what is true, and the tutorial copier
never writes through a folder link. Device nodes are made here (mknod, mkfifo), never /dev's."""

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from minivae import memory
from minivae.__main__ import main
from minivae.checkpoint import MAX_KEEP, load_checkpoint, save_checkpoint
from minivae.files import NotARegularFile, write_atomic
from minivae.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--hidden", "8", "--batch-size", "256", "--no-progress"]


def _err(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return captured.err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--epochs", "2", "--out", str(out), *SMALL]) == 0
    return out


def _device_node(path: Path) -> Path:
    """A character device like /dev/null (1, 3), made here; skipped where mknod is not allowed."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, AttributeError, OSError) as e:
        pytest.skip(f"cannot make a device node here ({e})")
    return path


@pytest.fixture(params=["device", "fifo", "folder"])
def not_a_file(request, tmp_path):
    path = tmp_path / "target.png"
    if request.param == "device":
        _device_node(path)
    elif request.param == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
        (path / "keep").write_text("mine")
    return path


def _kind(path: Path):
    mode = path.lstat().st_mode
    return stat.S_IFMT(mode), (sorted(p.name for p in path.iterdir()) if stat.S_ISDIR(mode) else None)


# --- 1. writers refuse what is not a regular file ------------------------------------------------

def test_write_atomic_refuses_a_device_a_fifo_and_a_folder(not_a_file):
    before = _kind(not_a_file)
    with pytest.raises(NotARegularFile, match="not a regular file.*left untouched"):
        write_atomic(not_a_file, b"data")
    assert _kind(not_a_file) == before
    assert not [p for p in not_a_file.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_link_to_a_device_is_refused_and_a_link_to_a_file_is_replaced(tmp_path):
    node = _device_node(tmp_path / "null")
    (tmp_path / "to-node").symlink_to(node)
    with pytest.raises(NotARegularFile):
        write_atomic(tmp_path / "to-node", b"x")
    assert stat.S_ISCHR(node.stat().st_mode)
    (tmp_path / "real").write_text("old")
    (tmp_path / "to-file").symlink_to(tmp_path / "real")
    write_atomic(tmp_path / "to-file", b"new")             # the link is replaced, never followed
    assert (tmp_path / "real").read_text() == "old" and (tmp_path / "to-file").read_bytes() == b"new"


def test_sample_out_onto_a_device_node_leaves_it_a_device(run, tmp_path, capsys):
    node = _device_node(tmp_path / "null")
    assert main(["sample", str(run), "--n", "4", "--out", str(node)]) == 2
    assert "is a character device, not a regular file" in _err(capsys)
    assert stat.S_ISCHR(node.lstat().st_mode) and os.major(node.lstat().st_rdev) == 1


def test_sample_out_onto_a_fifo_is_refused(run, tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert main(["sample", str(run), "--n", "4", "--out", str(fifo)]) == 2
    assert "is a FIFO (named pipe)" in _err(capsys) and stat.S_ISFIFO(fifo.lstat().st_mode)


def test_a_checkpoint_destination_that_is_a_device_is_refused_before_anything_moves(run, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".lock"))
    (copy / "checkpoint-1.safetensors").unlink()
    _device_node(copy / "checkpoint-1.safetensors")
    params, cfg, opt, meta = load_checkpoint(copy)
    before = (copy / "checkpoint.safetensors").read_bytes()
    with pytest.raises(NotARegularFile):
        save_checkpoint(copy / "checkpoint", params, cfg, opt, meta, keep=2)
    assert (copy / "checkpoint.safetensors").read_bytes() == before
    assert stat.S_ISCHR((copy / "checkpoint-1.safetensors").lstat().st_mode)


# --- 4. a FIFO never blocks a reader -------------------------------------------------------------

@pytest.mark.parametrize("command", [["evaluate", "--k", "0"], ["train", "--resume", "--out"]])
def test_a_fifo_named_checkpoint_never_blocks(run, tmp_path, command):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".lock", "checkpoint*"))
    os.mkfifo(copy / "checkpoint.safetensors")
    args = [*command[:1], *command[1:], str(copy)] if command[0] == "train" else [command[0], str(copy), *command[1:]]
    proc = subprocess.run([sys.executable, "-m", "minivae", *args, "--epochs", "5"] if command[0] == "train"
                          else [sys.executable, "-m", "minivae", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is a FIFO (named pipe), not a regular file" in proc.stderr


def test_a_fifo_named_run_json_or_metrics_never_blocks(run, tmp_path, capsys):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".lock", "run.json"))
    os.mkfifo(copy / "run.json")
    done = []
    t = threading.Thread(target=lambda: done.append(main(["evaluate", str(copy), "--k", "0"])), daemon=True)
    t.start()
    t.join(30)
    assert done == [2] and "FIFO" in _err(capsys)


# --- 2. a run's data is pinned --------------------------------------------------------------------

def _fake_mnist(folder: Path, seed: int) -> Path:
    """MNIST-shaped IDX files of random pixels (60k / 10k, 28 x 28) in ``folder``."""
    from minivae.data import IDX_SOURCES, write_idx
    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    for role, (name, _) in IDX_SOURCES["mnist"].files.items():
        n = 60000 if role.startswith("train") else 10000
        a = (g.integers(0, 256, (n, 28, 28), dtype=np.uint8) if role.endswith("images")
             else g.integers(0, 10, n, dtype=np.uint8))
        write_idx(folder / name[:-3], a)
    return folder


def test_a_relative_data_dir_is_recorded_absolute_and_other_data_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MINIVAE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    work = tmp_path / "work"
    _fake_mnist(work / "data", seed=1)
    monkeypatch.chdir(work)
    assert main(["train", "--dataset", "mnist", "--data-dir", "data", "--out", "r", "--max-steps", "3",
                 "--hidden", "4", "--batch-size", "50", "--no-progress"]) == 0
    record = json.loads((work / "r" / "run.json").read_text())
    assert record["train"]["data_dir"] == str(work / "data")
    assert record["data"]["fingerprint"].startswith("sha256:") and record["data"]["data_dir"] == str(work / "data")
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)                               # elsewhere: the same data is found
    assert main(["evaluate", str(work / "r"), "--k", "0", "--limit", "20"]) == 0
    _fake_mnist(work / "data", seed=2)                        # the files are swapped for others
    for args in (["evaluate", str(work / "r"), "--k", "0"],
                 ["train", "--resume", "--out", str(work / "r"), "--max-steps", "6", "--no-progress"]):
        before = (work / "r" / "checkpoint.safetensors").read_bytes()
        assert main(args) == 2
        err = _err(capsys)
        assert "differs from the data this run was trained on" in err and record["data"]["fingerprint"][:19] in err
        assert (work / "r" / "checkpoint.safetensors").read_bytes() == before


def test_a_run_json_without_a_fingerprint_still_loads_with_a_note(run, tmp_path, capsys):
    import shutil
    copy = tmp_path / "old"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".lock"))
    record = json.loads((copy / "run.json").read_text())
    del record["data"]["fingerprint"]
    (copy / "run.json").write_text(json.dumps(record))
    assert main(["evaluate", str(copy), "--k", "0"]) == 0
    assert "records no fingerprint of the data" in capsys.readouterr().out


# --- 3. SIGTERM and SIGHUP save like Ctrl-C --------------------------------------------------------

STOPPED_RUN = ["--epochs", "4", "--hidden", "16", "--batch-size", "8", "--no-progress", "--seed", "5"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The parameters of STOPPED_RUN trained without a stop: what every resumed run must equal."""
    out = tmp_path_factory.mktemp("whole") / "run"
    assert main(["train", "--out", str(out), *STOPPED_RUN]) == 0
    return load_checkpoint(out)[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_saves_the_partial_epoch_and_the_resume_is_bit_exact(tmp_path, signum, uninterrupted):
    args = STOPPED_RUN
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.Popen([sys.executable, "-m", "minivae", "train", "--out", str(tmp_path / "cut"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    for line in proc.stdout:                                   # mid-epoch 2: epoch 1 has been logged
        if line.startswith("epoch    1"):
            break
    time.sleep(0.05)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    assert f"stopped by {name}; saved" in out and "--resume --out" in out
    assert main(["train", "--resume", "--out", str(tmp_path / "cut"), "--no-progress"]) == 0
    a, b = uninterrupted, load_checkpoint(tmp_path / "cut")[0]
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


# --- 5, 6. every count is bounded; a MemoryError is one line --------------------------------------

def test_keep_has_an_upper_bound_in_the_library(tmp_path):
    with pytest.raises(ValueError, match=f"keep: expected an integer <= {MAX_KEEP}"):
        TrainConfig(keep=101)
    with pytest.raises(ValueError, match="at most 100 checkpoints"):
        save_checkpoint(tmp_path / "c", {}, None, keep=1000)


def test_keep_on_the_command_line_is_refused_at_once(tmp_path, capsys):
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        main(["train", "--keep", "1000000000", "--out", str(tmp_path / "k"), *SMALL])
    assert e.value.code == 2 and time.perf_counter() - t0 < 5 and not (tmp_path / "k").exists()
    assert "expected an integer <= 100" in capsys.readouterr().err


def test_evaluate_sizes_its_working_set_before_allocating(run, capsys, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 64 << 20)
    t0 = time.perf_counter()
    assert main(["evaluate", str(run), "--k", "100", "--batch-size", "1000000"]) == 2
    err = _err(capsys)
    assert "evaluating 300 examples at a time with 100 samples each needs about" in err
    assert "choose a smaller --batch-size" in err and time.perf_counter() - t0 < 5


def test_gradcheck_counts_are_bounded(capsys):
    with pytest.raises(SystemExit):
        main(["gradcheck", "--directions", "1000000000"])
    assert "expected an integer <= 10,000" in capsys.readouterr().err
    assert main(["gradcheck", "--x-dim", "1000000", "--likelihood", "bernoulli", "--activation", "tanh",
                 "--hidden", "5", "--n-samples", "1"]) == 2
    assert "over the 200,000 it checks" in _err(capsys)


class OutOfMemoryError(MemoryError):
    """What CuPy raises when the device's memory runs out (a MemoryError subclass)."""


@pytest.mark.parametrize("error", [MemoryError, OutOfMemoryError])
def test_a_memory_error_anywhere_is_one_line_and_keeps_what_was_saved(run, capsys, monkeypatch, error):
    from minivae.core import bounds
    before = (run / "checkpoint.safetensors").read_bytes()

    def exhausted(*a, **k):
        raise error("Out of memory allocating 16,000,000,000 bytes")
    monkeypatch.setattr(bounds, "evaluate", exhausted)
    assert main(["evaluate", str(run)]) == 2
    err = _err(capsys)
    assert err.startswith("error: out of memory while evaluating") and err.count("\n") == 1
    assert "choose a smaller --batch-size or --k" in err
    assert (run / "checkpoint.safetensors").read_bytes() == before


# --- 7. run control ---------------------------------------------------------------------------------

def test_resume_with_max_steps_extends_a_max_steps_run(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["train", "--out", str(out), "--max-steps", "2", "--epochs", "5", *SMALL]) == 0
    text = capsys.readouterr().out
    assert "no epoch has finished yet, so there is no test -ELBO" in text and "nan" not in text
    assert main(["train", "--resume", "--out", str(out), "--max-steps", "6", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "ignoring" not in text and "max_steps after 6 steps" in text


def test_evaluate_exits_non_zero_on_a_non_finite_result(run, tmp_path, capsys):
    import shutil
    from minivae.checkpoint import encode
    copy = tmp_path / "huge"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".lock"))
    params, cfg, opt, meta = load_checkpoint(copy)
    params = {k: np.full_like(v, 3e38) for k, v in params.items()}   # finite, and re-signed
    (copy / "checkpoint.safetensors").write_bytes(encode(params, cfg, opt, meta))
    with np.errstate(all="ignore"):
        assert main(["evaluate", str(copy), "--k", "0"]) == 1
    assert "non-finite bound" in _err(capsys)


# --- 8. messages that say what is true --------------------------------------------------------------

def test_errors_name_the_destination_not_the_temporary(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        write_atomic(tmp_path / "missing" / "evaluation.json", b"{}")
    assert "cannot write" in str(e.value) and "evaluation.json" in str(e.value) and ".tmp" not in str(e.value)


def test_a_value_out_of_range_is_shown_with_its_digits():
    import minivae
    from minivae import VAEConfig
    cfg = VAEConfig(x_dim=4, hidden=(3,), z_dim=2)
    params = minivae.init_params(cfg, dtype="float32")
    x = np.full((2, 4), 0.5, np.float32)
    x[0, 0] = np.float32(1.0000001)
    with pytest.raises(ValueError, match=r"got values in \[0\.5, 1\.00000012\]"):
        minivae.encode(params, x, cfg)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_advice_names_the_flag_that_caused_it(tmp_path, capsys):
    assert main(["train", "--likelihood", "gaussian", "--sigma", "1e-300", "--out", str(tmp_path / "s"),
                 "--epochs", "1", *SMALL]) == 2
    err = _err(capsys)
    assert "--sigma 1e-300 scales the reconstruction term" in err and "smaller --lr" not in err


def test_a_figure_failure_after_training_says_the_run_is_saved(tmp_path, capsys, monkeypatch):
    from minivae import plots

    def broken(*a, **k):
        raise RuntimeError("no display")
    monkeypatch.setattr(plots, "make_figures", broken)
    assert main(["train", "--out", str(tmp_path / "f"), "--epochs", "1", *SMALL]) == 1
    err = _err(capsys)
    assert "the run is complete and saved in" in err and "no display" in err
    assert (tmp_path / "f" / "checkpoint.safetensors").is_file()


def test_the_checksum_is_said_to_detect_damage_not_forgery(run, tmp_path):
    import shutil
    from minivae.checkpoint import CheckpointError
    copy = tmp_path / "c"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".lock"))
    data = bytearray((copy / "checkpoint.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (copy / "checkpoint.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="detects damage, not deliberate edits"):
        load_checkpoint(copy / "checkpoint.safetensors")
    readme = (ROOT / "README.md").read_text()
    assert "detects damage, not forgery" in readme


# --- 9. tutorials DIR never writes through a folder link --------------------------------------------

def test_tutorials_never_write_through_a_folder_link(tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tmp_path / "mine"
    target.mkdir()
    (target / "exercises").symlink_to(elsewhere, target_is_directory=True)
    assert main(["tutorials", str(target)]) == 2
    assert "is a link to a folder elsewhere" in _err(capsys)
    assert list(elsewhere.iterdir()) == [] and sorted(p.name for p in target.iterdir()) == ["exercises"]


# --- the hint file ----------------------------------------------------------------------------------

@pytest.mark.parametrize("content", ['"\u00b2"', "9" * 5000, "[" * 100_000, '{"linear": "x"}'])
def test_a_damaged_hint_file_is_set_aside_with_a_line(tmp_path, content):
    from minivae.exercises import HINT_FILE, next_hint
    (tmp_path / HINT_FILE).write_text(content)
    text = next_hint("linear", tmp_path)
    assert text.startswith(f"note: {HINT_FILE} was damaged") and "hint 1:" in text
    assert json.loads((tmp_path / HINT_FILE).read_text()) == {"linear": 1}
    assert len(list(tmp_path.glob(".minivae-hints.damaged-*.json"))) == 1


def test_the_hint_file_is_never_written_through_a_link(tmp_path):
    from minivae.exercises import HINT_FILE, next_hint
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / HINT_FILE).symlink_to(victim)
    next_hint("linear", tmp_path)
    assert victim.read_text() == "precious" and not (tmp_path / HINT_FILE).is_symlink()


# --- 10. platforms without fcntl, os.pread or O_NOFOLLOW -------------------------------------------

def test_this_session_runs_the_platform_it_says():
    """CI runs the run, checkpoint and reliability tests again with MINIVAE_NON_POSIX=1."""
    from minivae.run import lock_kind
    if os.environ.get("MINIVAE_NON_POSIX"):
        assert lock_kind() == "msvcrt" and not hasattr(os, "pread") and not hasattr(os, "O_NOFOLLOW")
    else:
        assert lock_kind() in ("flock", "msvcrt")


def test_the_pid_file_lock_where_no_kernel_lock_exists(tmp_path, monkeypatch):
    from minivae import run as R
    monkeypatch.setattr(R, "lock_kind", lambda: "pidfile")
    with R.RunLock(tmp_path / "r"):
        assert (tmp_path / "r" / ".lock").read_text() == str(os.getpid())
        holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            (tmp_path / "r2").mkdir()
            (tmp_path / "r2" / ".lock").write_text(str(holder.pid))   # a live holder
            with pytest.raises(R.RunBusy, match=f"pid {holder.pid}"):
                with R.RunLock(tmp_path / "r2"):
                    pass
        finally:
            holder.kill()
            holder.wait()
        with R.RunLock(tmp_path / "r2"):                              # its holder died: taken over
            assert (tmp_path / "r2" / ".lock").read_text() == str(os.getpid())
    assert not (tmp_path / "r" / ".lock").exists() and not (tmp_path / "r2" / ".lock").exists()


# --- every CLI flag at its extremes: a result or one line, never a traceback -------------------------

EXTREMES = {int: ["0", "-1", "1000000000", "1" + "0" * 30], float: ["nan", "-inf", "1e300", "1e-300", "0"]}
BASE = {  # each command small and short, so that only the flag under test is extreme
    "train": ["--hidden", "4", "--max-steps", "2", "--epochs", "1", "--no-progress", "--batch-size", "64"],
    "gradcheck": ["--likelihood", "bernoulli", "--activation", "tanh", "--hidden", "none", "--n-samples", "1",
                  "--x-dim", "3", "--z-dim", "2"],
    "evaluate": ["--k", "2", "--limit", "10"],
    "sample": ["--n", "4"],
}


def _numeric_flags():
    from minivae.__main__ import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for command, p in sub.choices.items():
        if command not in BASE:
            continue
        for action in p._actions:
            if not action.option_strings or action.type is None or action.choices:
                continue
            kind = float if "number" in getattr(action.type, "__name__", "") else int
            if kind is int and getattr(action.type, "__name__", "").startswith("integer") or kind is float:
                yield command, action.option_strings[-1], kind


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("command, flag, kind", list(_numeric_flags()), ids=lambda v: str(v))
def test_every_numeric_flag_at_its_extremes_gives_a_result_or_one_line(run, tmp_path, capsys, command, flag, kind):
    for i, value in enumerate(EXTREMES[kind]):
        args = [command, *BASE[command], flag, value]
        if command == "train":
            args += ["--out", str(tmp_path / f"r{i}")]
        elif command in ("evaluate", "sample"):
            args.insert(1, str(run))
            if command == "sample":
                args += ["--out", str(tmp_path / f"s{i}.png")]
        try:
            code = main(args)
        except SystemExit as e:        # argparse: usage and one line naming the flag
            code = e.code
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err + captured.out, (args, captured.err[-2000:])
        assert code in (0, 1, 2), (args, code)
        if code == 2:
            lines = [line for line in captured.err.splitlines() if line.startswith(("error:", "usage:"))
                     or ": error:" in line]
            assert lines, (args, captured.err[-500:])


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_every_file_minivae_writes_has_the_umasks_permissions(tmp_path, mask, mode, capsys):
    """A teacher's copies in a shared course folder are readable by the class (0644 under umask
    022), still written through a fresh temporary and a rename; a private umask keeps them private."""
    from minivae.__main__ import main as cli
    from minivae.files import write_atomic
    from minivae.tutorial import copy_tutorials
    old = os.umask(mask)
    try:
        copy_tutorials(tmp_path / "class")
        assert cli(["train", "--epochs", "1", "--out", str(tmp_path / "run"), "--hidden", "8",
                    "--batch-size", "256", "--no-progress"]) == 0
        write_atomic(tmp_path / "one.txt", b"x")
    finally:
        os.umask(old)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 40 and any(p.suffix == ".png" for p in written)
    wrong = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in written
             if p.stat().st_mode & 0o777 != mode and p.name != ".lock"}
    assert not wrong, wrong
