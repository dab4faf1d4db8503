"""The training loop: bit-exact resume, Ctrl-C, the NaN guard, metrics, and the CLI end to end."""

import csv
import math
import signal

import numpy as np
import pytest

from minivae import VAEConfig, backend as B
from minivae.__main__ import main
from minivae.checkpoint import load_checkpoint
from minivae.data import load_digits
from minivae.train import TrainConfig, TrainingDiverged, train

DIGITS = load_digits()


def _small(dataset=DIGITS, n=200):
    from minivae.data import Dataset
    return Dataset("digits", dataset.x_train[:n], dataset.y_train[:n], dataset.x_test[:50],
                   dataset.y_test[:50], (8, 8))


MCFG = VAEConfig(x_dim=64, hidden=(16,), z_dim=2)


def _params(out, backend="numpy"):
    return {k: B.to_numpy(v) for k, v in load_checkpoint(out / "checkpoint", backend)[0].items()}


def _quiet(*a, **k):
    pass


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_resume_after_an_epoch_is_bit_exact(tmp_path, backend, binarize):
    tcfg = TrainConfig(epochs=3, batch_size=32, backend=backend, binarize=binarize, seed=4)
    train(MCFG, tcfg, tmp_path / "a", data=_small(), progress=False, log=_quiet)
    first = TrainConfig(epochs=1, batch_size=32, backend=backend, binarize=binarize, seed=4)
    train(MCFG, first, tmp_path / "b", data=_small(), progress=False, log=_quiet)
    train(MCFG, tcfg, tmp_path / "b", data=_small(), resume=True, progress=False, log=_quiet)
    a, b = _params(tmp_path / "a"), _params(tmp_path / "b")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    rows = list(csv.DictReader((tmp_path / "b" / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    ref = list(csv.DictReader((tmp_path / "a" / "metrics.csv").read_text().splitlines()))
    assert [r["test_loss"] for r in rows] == [r["test_loss"] for r in ref]


def test_ctrl_c_mid_epoch_saves_and_resume_is_bit_exact(tmp_path):
    tcfg = TrainConfig(epochs=2, batch_size=32, seed=1, optimizer="adagrad", lr=0.05)
    train(MCFG, tcfg, tmp_path / "a", data=_small(), progress=False, log=_quiet)

    def press_ctrl_c(epoch, step, stats):
        if (epoch, step) == (0, 2):
            signal.raise_signal(signal.SIGINT)

    messages = []
    result = train(MCFG, tcfg, tmp_path / "b", data=_small(), progress=False,
                   callback=press_ctrl_c, log=messages.append)
    assert result["status"] == "interrupted" and result["global_step"] == 3
    assert any("--resume" in m for m in messages)
    meta = load_checkpoint(tmp_path / "b" / "checkpoint")[3]
    assert (meta["epoch"], meta["step"]) == (0, 3)
    train(MCFG, tcfg, tmp_path / "b", data=_small(), resume=True, progress=False, log=_quiet)
    a, b = _params(tmp_path / "a"), _params(tmp_path / "b")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    ra = list(csv.DictReader((tmp_path / "a" / "metrics.csv").read_text().splitlines()))
    rb = list(csv.DictReader((tmp_path / "b" / "metrics.csv").read_text().splitlines()))
    assert [r["train_loss"] for r in ra] == [r["train_loss"] for r in rb]


def test_max_steps_stops_and_resumes(tmp_path):
    tcfg = TrainConfig(epochs=2, batch_size=32, max_steps=5)
    result = train(MCFG, tcfg, tmp_path / "r", data=_small(), progress=False, log=_quiet)
    assert result["status"] == "max_steps" and result["global_step"] == 5


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    tcfg = TrainConfig(epochs=3, batch_size=32, optimizer="sgd", lr=1.0)
    out = tmp_path / "r"
    train(MCFG, TrainConfig(epochs=1, batch_size=32, optimizer="sgd", lr=1.0), out, data=_small(),
          progress=False, log=_quiet)
    good = _params(out)

    import minivae.train as T
    honest = T.gradient

    def poisoned(params, xb, mcfg, tcfg, epoch, step, rng=None):  # the loss is NaN from epoch 2, step 3 on
        stats, grads = honest(params, xb, mcfg, tcfg, epoch, step, rng)
        return (stats * float("nan") if (epoch, step) >= (1, 2) else stats), grads

    monkeypatch.setattr(T, "gradient", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2, step 3 \(global step 10\), "
                                              r"and at \d+ later step\(s\) up to step \d+; "
                                              r"the last good checkpoint is .*checkpoint"):
        train(MCFG, tcfg, out, data=_small(), resume=True, progress=False, log=_quiet)
    after = _params(out)
    for k in good:
        np.testing.assert_array_equal(good[k], after[k])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_diverging_learning_rate_is_caught(tmp_path):
    tcfg = TrainConfig(epochs=5, batch_size=32, optimizer="sgd", lr=1e6)
    with pytest.raises(TrainingDiverged, match="Try a smaller --lr"):
        train(VAEConfig(x_dim=64, hidden=(16,), z_dim=2, likelihood="gaussian", variance="per_pixel",
                        init="uniform"), tcfg, tmp_path / "r", data=_small(), progress=False, log=_quiet)


def test_training_lowers_the_loss_on_every_backend(tmp_path, backend):
    tcfg = TrainConfig(epochs=6, batch_size=20, backend=backend, lr=3e-3)
    train(MCFG, tcfg, tmp_path / "r", data=_small(), progress=False, log=_quiet)
    rows = list(csv.DictReader((tmp_path / "r" / "metrics.csv").read_text().splitlines()))
    assert float(rows[-1]["test_loss"]) < float(rows[0]["test_loss"]) - 1.0
    assert all(math.isfinite(float(r["seconds"])) for r in rows)


def test_bad_train_config():
    with pytest.raises(ValueError, match="optimizer: expected one of"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="binarize"):
        TrainConfig(binarize="yes")


@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "epochs: expected an integer >= 1, got 0"),
    ("epochs", -5, "epochs: expected an integer >= 1, got -5"),
    ("weight_decay", -1.0, "weight_decay: expected 0 or a positive number"),
    ("opt_eps", -1.0, "opt_eps: expected a positive epsilon"),
    ("opt_eps", float("nan"), "opt_eps: expected a positive epsilon"),
    ("max_steps", 0, "max_steps: expected an integer >= 1, got 0"),
    ("max_steps", -1, "max_steps: expected an integer >= 1, got -1"),
    ("threads", -1, "threads: expected an integer >= 1, got -1"),
    ("seed", -1, "seed: expected an integer >= 0, got -1"),
    ("sync_every", 0, "sync_every: expected an integer >= 1, got 0"),
    ("backend", "gpu", "backend must be one of"),
])
def test_every_train_setting_is_validated(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        TrainConfig(**{field: value})


def test_model_and_data_dimensions_must_agree(tmp_path):
    with pytest.raises(ValueError, match="the model has x_dim=784 but data set 'digits' has 64"):
        train(VAEConfig(x_dim=784), TrainConfig(epochs=1), tmp_path, data=_small(), log=_quiet)


# --- the CLI end to end, on digits with a tiny network ---------------------------------------------

def test_cli_train_evaluate_sample(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--hidden", "16", "--epochs", "2", "--batch-size", "64", "--out", str(out),
                 "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert f"run folder: {out.resolve()}" in text and "finished after 48 steps" in text
    for name in ("metrics.csv", "checkpoint.safetensors", "run.json", "reconstructions.png",
                 "samples.png", "manifold.png", "latent.png", "curves.png"):
        assert (out / name).is_file(), name
    assert main(["evaluate", str(out), "--k", "20", "--limit", "40"]) == 0
    text = capsys.readouterr().out
    assert "L_20" in text and "active units" in text and (out / "evaluation.json").is_file()
    assert main(["evaluate", str(out), "--k", "5", "--limit", "10", "--backend", "strict"]) == 0
    assert main(["sample", str(out), "--n", "16", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert main(["train", "--resume", "--out", str(out), "--epochs", "3", "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert len(list(csv.DictReader((out / "metrics.csv").read_text().splitlines()))) == 3


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert "not a minivae run folder" in capsys.readouterr().err
    assert main(["train", "--resume", "--no-progress"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_default_run_and_evaluate(tmp_path, capsys, monkeypatch):
    """The README's main job, exactly: `python -m minivae train`, then evaluate with k = 5000."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--no-progress", "--name", "default"]) == 0
    text = capsys.readouterr().out
    final = float(text.split("final test -ELBO ")[1].split()[0])
    assert final < 26.0  # a model that learned something (an untrained one scores 64 ln 2 = 44.4)
    assert main(["evaluate", "runs/default"]) == 0
    text = capsys.readouterr().out
    assert "log p(x) >= L_5000" in text and "not bounds" not in text, text  # binary data: true bounds
    elbo = float(text.split("ELBO")[1].split()[0])
    iwae = float(text.split("L_5000")[1].split()[0])
    assert iwae > elbo


@pytest.mark.slow
def test_cli_trains_on_strict(tmp_path):
    assert main(["train", "--backend", "strict", "--hidden", "32", "--epochs", "3", "--out",
                 str(tmp_path / "s"), "--no-progress"]) == 0


@pytest.mark.slow
@pytest.mark.skipif(not __import__("pathlib").Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_cli_trains_on_fashion_mnist(tmp_path, capsys):
    assert main(["train", "--dataset", "fashion-mnist", "--hidden", "64", "--z-dim", "5", "--epochs", "1",
                 "--batch-size", "100", "--out", str(tmp_path / "f"), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "60000 train / 10000 test, x_dim 784" in text


# --- no device-to-host copies inside a step (issue: the CuPy path) ---------------------------------

HOST_READS = ("__float__", "__bool__", "__int__", "__index__", "__complex__", "__array__", "__dlpack__")


@pytest.fixture
def host_reads(monkeypatch):
    """Counts every read of a strict array back to the host: float(), bool(), int(), np.asarray,
    DLPack, and to_device(CPU). Returns the list of the reads' names, in order."""
    import array_api_strict
    Array = type(array_api_strict.asarray([0.0]))
    reads = []
    device = array_api_strict.Device("device1")

    def counting(name, method):
        def wrapper(self, *a, **k):
            if self.device == device:  # a host array's own conversions are no device read
                reads.append(name)
            return method(self, *a, **k)
        return wrapper

    for name in HOST_READS:
        monkeypatch.setattr(Array, name, counting(name, getattr(Array, name)))
    to_device = Array.to_device

    def counting_to_device(self, target, /, **k):
        if self.device == device and target != device:
            reads.append("to_device")
        return to_device(self, target, **k)

    monkeypatch.setattr(Array, "to_device", counting_to_device)
    return reads


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_a_training_step_reads_nothing_back_from_the_device(tmp_path, host_reads, binarize):
    per_step = []

    def count(epoch, step, stats):
        per_step.append(len(host_reads))
        host_reads.clear()

    tcfg = TrainConfig(epochs=2, batch_size=16, backend="strict", binarize=binarize, sync_every=4)
    train(MCFG, tcfg, tmp_path / "r", data=_small(n=160), progress=False, callback=count, log=_quiet)
    assert len(per_step) == 20
    # before the first step: the data checks, 3 reads per set (all finite, min, max), train and test
    assert per_step[0] == 6
    # after every 4th step the batch of 4 losses is read once (one to_device of a (4, 3) array);
    # nothing else is read back during the epoch
    assert per_step[1:10] == [0, 0, 0, 1, 0, 0, 0, 1, 0]
    # the epoch's end (a last read, evaluation, the parameters' finiteness, the checkpoint) comes
    # after its last callback, so it lands in the next epoch's first count; then steps are clean again
    assert per_step[10] > 1 and per_step[11:14] == [0, 0, 0] and per_step[14] == 1


def test_the_nan_guard_still_names_the_step_when_reads_are_batched(tmp_path, monkeypatch):
    import minivae.train as T
    honest = T.gradient

    def poisoned(params, xb, mcfg, tcfg, epoch, step, rng=None):
        stats, grads = honest(params, xb, mcfg, tcfg, epoch, step, rng)
        return (stats * float("inf") if step == 5 else stats), grads

    monkeypatch.setattr(T, "gradient", poisoned)
    tcfg = TrainConfig(epochs=1, batch_size=16, backend="strict", sync_every=100)
    with pytest.raises(TrainingDiverged, match=r"loss became inf at epoch 1, step 6 \(global step 6\); "
                                              r"no checkpoint had been written yet"):
        train(MCFG, tcfg, tmp_path / "r", data=_small(n=160), progress=False, log=_quiet)
    assert not (tmp_path / "r" / "checkpoint.safetensors").exists()


# --- no checkpoint of a diverged model (issue: reliability) ----------------------------------------

@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
@pytest.mark.parametrize("optimizer, lr", [("adam", 1e39), ("sgd", 1e38)])
def test_a_diverged_model_is_never_saved(tmp_path, optimizer, lr):
    """The two reproducers: whole-data batches with an absurd learning rate, where the training loss
    of the step is still finite but the parameters or the test loss are not."""
    cfg = VAEConfig(x_dim=64, hidden=(8,), z_dim=2)
    data = _small(n=200)
    out = tmp_path / "r"
    with pytest.raises(TrainingDiverged, match="not saved|loss became"):
        train(cfg, TrainConfig(epochs=3, batch_size=200, optimizer=optimizer, lr=lr), out,
              data=data, progress=False, log=_quiet)
    assert not (out / "checkpoint.safetensors").exists()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_parameters_are_never_saved_even_with_a_finite_test_loss(tmp_path, monkeypatch):
    import minivae.train as T
    monkeypatch.setattr(T, "evaluate", lambda *a, **k: {"elbo": -1.0, "recon": 1.0, "kl": 0.0})
    cfg = VAEConfig(x_dim=64, hidden=(8,), z_dim=2)
    with pytest.raises(TrainingDiverged, match=r"the parameters are no longer finite after global step 1 .*not saved"):
        train(cfg, TrainConfig(epochs=2, batch_size=200, optimizer="adam", lr=1e39), tmp_path / "r",
              data=_small(n=200), progress=False, log=_quiet)
    assert not (tmp_path / "r" / "checkpoint.safetensors").exists()


def test_kl_warmup_rises_linearly_to_beta_and_the_reported_elbo_keeps_weight_one(tmp_path, backend):
    from minivae.train import kl_weight
    mcfg = VAEConfig(x_dim=64, hidden=(16,), z_dim=2, beta=2.0)
    tcfg = TrainConfig(epochs=3, batch_size=50, kl_warmup=2, backend=backend)
    assert [kl_weight(mcfg, tcfg, e, s, 4) for e, s in ((0, 0), (0, 3), (1, 1), (1, 3), (2, 0))] == \
        [0.25, 1.0, 1.5, 2.0, 2.0]
    assert kl_weight(mcfg, TrainConfig(), 0, 0, 4) == 2.0
    train(mcfg, tcfg, tmp_path / "r", data=_small(), progress=False, log=_quiet)
    rows = list(csv.DictReader((tmp_path / "r" / "metrics.csv").read_text().splitlines()))
    assert [float(r["beta"]) for r in rows] == [1.0, 2.0, 2.0]
    for r in rows:  # train -ELBO = recon + KL (weight 1), whatever the training weight
        assert float(r["train_loss"]) == pytest.approx(float(r["train_recon"]) + float(r["train_kl"]), rel=1e-6)
        assert 0 <= int(r["test_active_units"]) <= 2


def test_resume_of_a_run_whose_metrics_lack_the_new_columns(tmp_path):
    out = tmp_path / "r"
    train(MCFG, TrainConfig(epochs=1, batch_size=32), out, data=_small(), progress=False, log=_quiet)
    rows = list(csv.DictReader((out / "metrics.csv").read_text().splitlines()))
    with open(out / "metrics.csv", "w", newline="") as f:  # as an older minivae wrote it
        old = [k for k in rows[0] if k not in ("beta", "test_active_units")]
        w = csv.DictWriter(f, fieldnames=old, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    result = train(MCFG, TrainConfig(epochs=2, batch_size=32), out, data=_small(), resume=True,
                   progress=False, log=_quiet)
    assert result["last"]["epoch"] == 2.0
