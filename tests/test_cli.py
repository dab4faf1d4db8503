"""The command line as a careless or unlucky user meets it: every bad flag, path and file system error
is one clear line on stderr (exit 2), never a traceback, and nothing is half written."""

import json
import os

import pytest

from minivae.__main__ import main

SMALL = ["--hidden", "8", "--batch-size", "256", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--epochs", "2", "--out", str(out), *SMALL]) == 0
    return out


def _error(capsys):
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


@pytest.mark.parametrize("argv, message", [
    (["train", "--weight-decay", "-1"], "--weight-decay: expected a finite number >= 0, got -1"),
    (["train", "--opt-eps", "-1"], "--opt-eps: expected a finite number > 0, got -1"),
    (["train", "--opt-eps", "nan"], "--opt-eps: expected a finite number > 0, got nan"),
    (["train", "--lr", "inf"], "--lr: expected a finite number > 0, got inf"),
    (["train", "--max-steps", "0"], "--max-steps: expected an integer >= 1, got 0"),
    (["train", "--max-steps", "-1"], "--max-steps: expected an integer >= 1, got -1"),
    (["train", "--threads", "-1"], "--threads: expected an integer >= 1, got -1"),
    (["train", "--batch-size", "0"], "--batch-size: expected an integer >= 1, got 0"),
    (["train", "--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
    (["train", "--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
    (["train", "--name", "../../x"], "--name: expected a plain folder name under runs/"),
    (["train", "--name", "/tmp/x"], "--name: expected a plain folder name under runs/"),
    (["evaluate", "r", "--limit", "0"], "--limit: expected an integer >= 1, got 0"),
    (["evaluate", "r", "--limit", "-1"], "--limit: expected an integer >= 1, got -1"),
    (["evaluate", "r", "--k", "-1"], "--k: expected an integer >= 0, got -1"),
    (["gradcheck", "--directions", "-1"], "--directions: expected an integer >= 0, got -1"),
    (["gradcheck", "--h", "0"], "--h: expected a finite number > 0, got 0"),
    (["sample", "r", "--n", "0"], "--n: expected an integer >= 1, got 0"),
])
def test_bad_flags_are_refused_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in _error(capsys)


@pytest.mark.parametrize("epochs", ["0", "-5"])
def test_resume_with_a_bad_epoch_count_changes_nothing(run, epochs, capsys):
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(SystemExit):
        main(["train", "--resume", "--out", str(run), "--epochs", epochs])
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert main(["train", "--resume", "--out", str(run), "--epochs", "1", "--no-progress"]) == 2
    assert "has already trained 2 epoch(s) of 1; to train more, resume with --epochs N" in _error(capsys)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert main(["evaluate", str(run), "--k", "0", "--limit", "5"]) == 0  # still a usable run


def test_resume_says_which_flags_it_ignores(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--epochs", "1", "--out", str(out), *SMALL]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--lr=0.5", "--hidden", "9",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "--resume continues with the run's own settings (its run.json); ignoring --hidden, --lr" in text
    assert json.loads((out / "run.json").read_text())["train"]["lr"] is None


def test_out_that_is_a_file_or_under_one(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "run"):
        assert main(["train", "--epochs", "1", "--out", str(out), *SMALL]) == 2
        assert "error:" in _error(capsys)
    assert blocker.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(tmp_path, capsys):
    tmp_path.chmod(0o500)
    try:
        assert main(["train", "--epochs", "1", "--out", str(tmp_path / "r"), *SMALL]) == 2
        assert "Permission denied" in _error(capsys)
    finally:
        tmp_path.chmod(0o700)


def test_a_full_disk_is_one_line_and_leaves_no_temporary(tmp_path, capsys, monkeypatch):
    import errno

    import minivae.checkpoint as C
    out = tmp_path / "r"
    real_fdopen = os.fdopen
    calls = []

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            calls.append(1)
            if len(calls) > 2:  # run.json and metrics.csv fit; the checkpoint does not
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(C.os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))
    assert main(["train", "--epochs", "1", "--out", str(out), *SMALL]) == 2
    assert "No space left on device" in _error(capsys)
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == ["metrics.csv", "run.json"]


def test_sample_into_a_folder_names_the_file(run, tmp_path, capsys):
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path)]) == 0
    assert f"wrote {tmp_path / 'samples.png'}" in capsys.readouterr().out
    assert (tmp_path / "samples.png").stat().st_size > 500


def test_a_damaged_run_json_is_a_message(run, tmp_path, capsys):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    for text in ("{", "[]", json.dumps({"model": {"x_dim": 64}, "train": {"epochs": "many"}}),
                 json.dumps({"model": {"x_dim": 64, "hidden": "abc"}, "train": {}}),
                 json.dumps({"model": {"x_dim": 64}, "train": {"what": 1}})):
        (copy / "run.json").write_text(text)
        for argv in (["evaluate", str(copy), "--k", "0"], ["train", "--resume", "--out", str(copy)],
                     ["sample", str(copy)]):
            assert main(argv) == 2, (text, argv)
            assert "run.json is damaged" in _error(capsys)


def test_backend_auto_says_what_it_picked(tmp_path, capsys):
    from minivae.backend import cupy_status
    assert main(["train", "--epochs", "1", "--backend", "auto", "--out", str(tmp_path / "r"), *SMALL]) == 0
    picked = "cupy" if cupy_status()[0] else "numpy"
    assert f"backend auto -> {picked} (" in capsys.readouterr().out
    assert json.loads((tmp_path / "r" / "run.json").read_text())["train"]["backend"] == picked


def test_doctor_on_this_machine(capsys):
    from minivae.backend import cupy_status
    code = main(["doctor", "--no-tests"] if cupy_status()[0] else ["doctor"])
    text = capsys.readouterr().out
    for label in ("Python", "NumPy", "array-api-compat", "CuPy", "BLAS", "CUDA"):
        assert f"\n{label} " in "\n" + text
    if not cupy_status()[0]:
        assert code == 0 and "CUDA              not usable: " in text and "No GPU checks" in text


def test_doctor_runs_the_gpu_checks_on_the_stand_in_and_fails_on_a_wrong_gradient(capsys, monkeypatch):
    import minivae.doctor as D
    monkeypatch.setattr(D, "SPEED_ROWS", 2000)  # the checks, not the timings, are under test
    monkeypatch.setattr(D, "STEP_WARMUP", 1)
    monkeypatch.setattr(D, "STEP_SAMPLE", 3)
    assert main(["doctor", "--backend", "strict", "--no-tests"]) == 0
    text = capsys.readouterr().out
    assert "[pass] gradient check on strict" in text and "[pass] strict against numpy" in text
    assert "[pass] one epoch of 784-500-20 in float32" in text and "[pass] float32 against float64" in text
    assert "verdict: strict is an emulation" in text
    import minivae.core.model as V
    honest = V.backward

    def wrong(cache, cfg):  # a dropped factor in one block, on every backend
        grads = honest(cache, cfg)
        grads["dec.b_out"] = grads["dec.b_out"] * 1.001
        return grads
    monkeypatch.setattr(V, "backward", wrong)
    # the gradient stage is under test now: the timed epochs (12 s here) and the benchmark's dry
    # run (33 s where PyTorch is installed) would say nothing new
    monkeypatch.setattr(D, "_speed", lambda backend, tmp, log: [])
    monkeypatch.setattr(D, "_gpu_benchmark", lambda backend, log: D.Check("benchmark", True, "not run"))
    assert main(["doctor", "--backend", "strict", "--no-tests"]) == 1
    text = capsys.readouterr().out
    assert "[FAIL] gradient check on strict" in text and "<-- FAILED" in text


def test_evaluate_on_grayscale_bernoulli_never_calls_it_log_px(tmp_path, capsys):
    """A Bernoulli on grayscale digits (binarize none, asked for)."""
    gray = tmp_path / "gray"
    assert main(["train", "--epochs", "1", "--binarize", "none", "--out", str(gray), *SMALL]) == 0
    assert main(["evaluate", str(gray), "--k", "10", "--limit", "50"]) == 0
    text = capsys.readouterr().out
    assert "log p(x)" not in text and "bound" not in text.split("note:")[0]
    assert "the Bernoulli formula is not a probability for grayscale pixels" in text
    record = json.loads((gray / "evaluation.json").read_text())
    assert record["likelihood_is_density"] is False and "not bounds on a log-likelihood" in record["what"]


def test_the_default_run_is_binarized_and_its_bounds_are_bounds(run, capsys):
    """`python -m minivae train` with no options: the Bernoulli decoder on dynamically binarized
    digits, so evaluate states true bounds on log p(x) and has nothing to warn about."""
    assert json.loads((run / "run.json").read_text())["train"]["binarize"] == "dynamic"
    assert main(["evaluate", str(run), "--k", "10", "--limit", "50"]) == 0
    text = capsys.readouterr().out
    assert "log p(x) >= L_10" in text and "note:" not in text and "not a probability" not in text
    record = json.loads((run / "evaluation.json").read_text())
    assert record["likelihood_is_density"] is True
    from minivae.__main__ import build_parser, binarize
    for argv, expected in ((["train"], "dynamic"), (["train", "--likelihood", "gaussian"], "none"),
                           (["train", "--likelihood", "continuous_bernoulli"], "none"),
                           (["train", "--binarize", "static"], "static")):
        assert binarize(build_parser().parse_args(argv)) == expected, argv


def test_evaluate_on_binarized_data_states_the_bound(tmp_path, capsys):
    out = tmp_path / "bin"
    assert main(["train", "--epochs", "1", "--binarize", "static", "--out", str(out), *SMALL]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--k", "10", "--limit", "50"]) == 0
    text = capsys.readouterr().out
    assert "log p(x) >= L_10" in text and "(importance-weighted bound)" in text
    assert json.loads((out / "evaluation.json").read_text())["likelihood_is_density"] is True


def test_evaluate_reports_the_elbo_training_printed_last(run, capsys):
    import csv
    last = float(list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))[-1]["test_loss"])
    for batch in ("100", "7"):  # the draws do not depend on the batch size, nor on k
        assert main(["evaluate", str(run), "--k", "5", "--batch-size", batch]) == 0
        text = capsys.readouterr().out
        elbo = float(text.split("ELBO")[1].split()[0])
        assert elbo == pytest.approx(-last, abs=2e-4), text


@pytest.mark.parametrize("argv, message", [
    (["train", "--hidden", "100000000", "--epochs", "1"], "training this model needs about"),
    (["train", "--z-dim", "1000000000", "--epochs", "1"], "training this model needs about"),
    (["train", "--n-samples", "1000000000", "--epochs", "1"], "choose a smaller --batch-size, --n-samples"),
    (["gradcheck", "--n-samples", "1000000000"], "this gradient check needs about"),
    (["sample", "RUN", "--n", "1000000000"], "drawing 1,000,000,000 samples needs about"),
    (["evaluate", "RUN", "--k", "1000000000"], "--k: expected an integer <= 1,000,000"),
])
def test_sizes_that_cannot_fit_are_refused_before_allocating(run, argv, message, capsys):
    import resource
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    argv = [str(run) if a == "RUN" else a for a in argv]
    code = None
    try:
        code = main(argv + (["--no-progress"] if argv[0] == "train" else []))
    except SystemExit as e:  # argparse
        code = e.code
    assert code == 2
    err = _error(capsys)
    assert message in err.strip().splitlines()[-1], err  # one line (argparse puts its usage above)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # kB: nothing big allocated


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4, 5, 6])
def test_a_disk_that_fills_at_any_write_leaves_no_temporary(tmp_path, capsys, monkeypatch, fail_at):
    import errno
    out = tmp_path / "r"
    real_fdopen, calls = os.fdopen, []

    def filling(*a, **k):
        f = real_fdopen(*a, **k)
        calls.append(1)
        if len(calls) == fail_at:
            def full(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            f.write = full
        return f

    monkeypatch.setattr(os, "fdopen", filling)
    code = main(["train", "--epochs", "2", "--out", str(out), *SMALL])
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    assert code == 2 and "No space left on device" in _error(capsys)
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp") or p.name.endswith(".part")]


def test_doctor_fails_when_cupy_sees_a_device_but_cannot_run_a_kernel(capsys, monkeypatch):
    """The gpu extra without the CUDA libraries: the device is counted, the first random draw fails.
    Neither --backend auto nor doctor may take that for a usable GPU."""
    import sys
    import types

    import numpy as np

    import minivae.backend as B
    fake = types.SimpleNamespace(__version__="14.2.0", arange=np.arange, ones=np.ones)
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))

    def no_curand(*a, **k):
        raise ImportError('Failure finding "libcurand.so.11 or libcurand.so.10"')
    fake.random = types.SimpleNamespace(RandomState=no_curand)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    usable, why = B.cupy_status()
    assert not usable and "cannot run a random draw (cuRAND)" in why and "cupy-cuda12x[ctk]" in why
    assert B.resolve("auto") == "numpy"
    assert main(["doctor", "--no-tests"]) == 1
    text = capsys.readouterr().out
    assert "FAIL: backend 'cupy': CuPy 14.2.0 sees a CUDA device but cannot run a random draw" in text


def test_a_doctor_stage_that_runs_out_of_time_fails(capsys, monkeypatch):
    import minivae.doctor as D
    monkeypatch.setitem(D.LIMITS, "speed", 0.01)
    monkeypatch.setattr(D, "SPEED_ROWS", 200)
    assert main(["doctor", "--backend", "strict", "--no-tests"]) == 1
    assert "[FAIL] speed on strict: TIMEOUT: not done after 0.01 s" in capsys.readouterr().out
