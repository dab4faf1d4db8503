"""The grader: the library's own backward passes pass, every untouched stub fails, and planted
classic bugs fail with a hint that names the kind of mistake."""

import shutil

import numpy as np
import pytest

from minivae import distributions as D, exercises, layers, vae
from minivae.exercises import EXERCISES, check, exercise_dir, grade_function, main

REFERENCE = {
    "linear": layers.linear_backward, "tanh": layers.tanh_backward,
    "softplus": layers.softplus_backward, "reparameterize": D.reparameterize_backward,
    "kl": D.gaussian_kl_backward, "bernoulli": D.bernoulli_log_prob_backward,
    "gaussian": D.gaussian_log_prob_backward, "vae": vae.backward,
}


def _vae_without_kl_grads(cache, cfg):
    grads = vae.backward(cache, cfg)
    # the classic slip: mu and logvar also feed the KL; forget to add its gradient
    _, mu_var = cache[6]
    mu, var = mu_var
    B = mu.shape[0]
    h = cache[2][0][-1][1]  # the encoder's last hidden activation
    grads["enc.b_mu"] = grads["enc.b_mu"] - mu.sum(0) / B
    grads["enc.W_mu"] = grads["enc.W_mu"] - h.T @ mu / B
    return grads


PLANTED = {
    "linear": [(lambda dy, c: (dy @ c[1].T, dy.T @ c[0], dy.sum(0)), "transposed"),
               (lambda dy, c: (dy @ c[1].T, c[0].T @ dy, dy.sum(1)), "summed over the wrong axis"),
               (lambda dy, c: (dy @ c[1], c[0].T @ dy, dy.sum(0)), "raised ValueError")],
    "tanh": [(lambda dh, h: dh * (1 - h), "does not match")],
    "softplus": [(lambda dh, a: dh * layers.sigmoid(-a), "does not match")],
    "reparameterize": [(lambda dz, c: (dz.sum(0), c[0] * (dz * c[1]).sum(0)), "2 times the right gradient"),
                       (lambda dz, c: (dz, 0.5 * c[0] * (dz * c[1]).sum(0)), "not summed where a value is used many times")],
    "kl": [(lambda dkl, c: (dkl[:, None] * c[0], dkl[:, None] * 0.5 * (1 - c[1])), "wrong sign"),
           (lambda dkl, c: (dkl[:, None] * c[0], dkl[:, None] * (c[1] - 1)), "2 times the right gradient")],
    "bernoulli": [(lambda d, c: d[..., None] * (layers.sigmoid(c[1]) - c[0]), "wrong sign"),
                  (lambda d, c: d[..., None] * (c[0] - c[1]), "does not match")],
    "gaussian": [(lambda d, c: (d[..., None] * c[0] * c[1], d[..., None] * (c[0] ** 2 * c[1] - 1)), "2 times"),
                 (lambda d, c: (-d[..., None] * c[0] * c[1], d[..., None] * 0.5 * (c[0] ** 2 * c[1] - 1)), "wrong sign")],
    "vae": [(_vae_without_kl_grads, "Hint: Walk the forward pass backwards")],
}


@pytest.mark.parametrize("name", list(EXERCISES))
def test_reference_implementations_pass(name):
    result = grade_function(name, REFERENCE[name])
    assert result.passed, str(result)
    assert all(r.error < 1e-8 for r in result.rows)


@pytest.mark.parametrize("name", list(EXERCISES))
def test_untouched_stubs_fail_without_crashing(name):
    result = check(name, exercise_dir())
    assert not result.passed
    assert "is None" in str(result) or "returned" in str(result), str(result)


@pytest.mark.parametrize("name,bug,expected", [(n, b, e) for n, bugs in PLANTED.items() for b, e in bugs],
                         ids=[f"{n}-{i}" for n, bugs in PLANTED.items() for i in range(len(bugs))])
def test_planted_bugs_fail_with_a_hint(name, bug, expected):
    result = grade_function(name, bug)
    assert not result.passed
    text = str(result)
    assert expected in text, text
    assert "Hint" in text


def test_filled_in_files_pass_and_the_cli_exit_codes(tmp_path, capsys):
    folder = tmp_path / "ex"
    shutil.copytree(exercise_dir(), folder)
    src = (folder / "tanh.py").read_text()
    (folder / "tanh.py").write_text(src.replace("    da = None\n", "    da = dh * (1 - h * h)\n"))
    assert main(["check", "tanh", "--dir", str(folder)]) == 0
    assert "1 of 1 exercise(s) passed" in capsys.readouterr().out
    assert main(["check", "all", "--dir", str(folder)]) == 1
    assert "1 of 8 exercise(s) passed" in capsys.readouterr().out


def test_learner_errors_are_reported(tmp_path, capsys):
    folder = tmp_path / "ex"
    shutil.copytree(exercise_dir(), folder)
    (folder / "kl.py").write_text("def gaussian_kl_backward(dkl, cache:\n")  # a syntax error
    (folder / "tanh.py").write_text("def something_else():\n    pass\n")
    (folder / "softplus.py").write_text("def softplus_backward(dh, a):\n    return 1 / 0\n")
    assert main(["check", "all", "--dir", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "kl.py does not import: SyntaxError" in out
    assert "tanh.py has no function tanh_backward()" in out
    assert "raised ZeroDivisionError: division by zero (line 2 of softplus.py)" in out
    (folder / "linear.py").unlink()
    assert main(["check", "linear", "--dir", str(folder)]) == 1
    assert "linear.py not found" in capsys.readouterr().out


def test_diagnose_messages():
    n = np.arange(1.0, 7.0).reshape(2, 3)
    assert "transposed" in exercises.diagnose(n.T, n)
    assert "wrong sign" in exercises.diagnose(-n, n)
    assert "0.5 times" in exercises.diagnose(0.5 * n, n)
    assert "is None" in exercises.diagnose(None, n)
    assert "not an array" in exercises.diagnose([1, 2], n)
    assert "NaN" in exercises.diagnose(n * np.nan, n)
