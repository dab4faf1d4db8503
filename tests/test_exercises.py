"""The grader: every reference passes, every untouched stub fails, planted classic bugs fail with the
hint that names them, and a learner's exception, None, list, wrong shape or NaN is a reported failure,
never a crash of the grader."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from minivae import exercises, vae
from minivae.core import distributions as D, layers
from minivae.exercises import REGISTRY, check, check_file, grade_function, grade_functions, main
from minivae.exercises.derivations import reference_iwae, reference_iwae_weights, reference_kl, reference_score

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the planted overflows are the point
REPO_EXERCISES = Path(__file__).resolve().parents[1] / "tutorials" / "exercises"
LIMIT = 2.0  # seconds: the time limit the hostile cases run under


@pytest.fixture(scope="module")
def sandbox():
    """One warm child-maker for the module's file gradings (as `check all` uses one)."""
    from minivae.exercises.sandbox import Sandbox
    with Sandbox(timeout=LIMIT) as box:
        yield box


# --- the learner-style answers --------------------------------------------------------------------

def _log_px(m):
    a = m.log_px_given_z(m.z) + m.log_prior(m.z)
    top = a.max()
    return float(top + np.log(m.integral(np.exp(a - top))))


def _elbo(m):
    return m.E_q(lambda z: m.log_px_given_z(z) + m.log_prior(z) - m.log_q(z))


def _kl_post(m):
    lp = _log_px(m)
    return m.E_q(lambda z: m.log_q(z) - (m.log_px_given_z(z) + m.log_prior(z) - lp))


def _correct_chains():
    return {
        "kl_expansion": [
            ("KL(q || p(z|x))", lambda m: m.E_q(lambda z: m.log_q(z) - m.log_post(z))),
            ("= -E_q[log p(z|x)] + E_q[log q]", lambda m: -m.E_q(m.log_post) + m.E_q(m.log_q)),
            ("= -E_q[log p(x|z)] - E_q[log p(z)] + log p(x) + E_q[log q]",
             lambda m: -m.E_q(m.log_px_given_z) - m.E_q(m.log_prior) + m.log_px() + m.E_q(m.log_q)),
        ],
        "log_likelihood": [
            ("log p(x)", lambda m: m.log_px()),
            ("= E_q[log p(x|z)] + E_q[log p(z)] - E_q[log q] + KL(q || p(z|x))",
             lambda m: m.E_q(m.log_px_given_z) + m.E_q(m.log_prior) - m.E_q(m.log_q)
             + m.E_q(lambda z: m.log_q(z) - m.log_post(z))),
            ("= E_q[log p(x|z)] - KL(q || p(z)) + KL(q || p(z|x))",
             lambda m: m.E_q(m.log_px_given_z) - m.kl_q_prior() + m.E_q(lambda z: m.log_q(z) - m.log_post(z))),
        ],
        "elbo": [
            ("ELBO", lambda m: m.E_q(lambda z: m.log_px_given_z(z) + m.log_prior(z) - m.log_q(z))),
            ("= E_q[log p(x|z)] + E_q[log p(z) - log q]",
             lambda m: m.E_q(m.log_px_given_z) + m.E_q(lambda z: m.log_prior(z) - m.log_q(z))),
            ("= E_q[log p(x|z)] - KL(q || p(z))", lambda m: m.E_q(m.log_px_given_z) - m.kl_q_prior()),
        ],
    }


REFERENCE = {
    "linear": {"linear_backward": layers.linear_backward},
    "tanh": {"tanh_backward": layers.tanh_backward},
    "softplus": {"softplus_backward": layers.softplus_backward},
    "reparameterize": {"reparameterize_backward": D.reparameterize_backward},
    "kl": {"gaussian_kl_backward": D.gaussian_kl_backward},
    "bernoulli": {"bernoulli_log_prob_backward": D.bernoulli_log_prob_backward},
    "gaussian": {"gaussian_log_prob_backward": D.gaussian_log_prob_backward},
    "vae": {"vae_backward": vae.backward},
    "elbo_identity": {"log_px": _log_px, "elbo": _elbo, "kl_to_posterior": _kl_post},
    "kl_general": {"kl_diag_gaussians": reference_kl},
    "iwae": {"iwae_bound": reference_iwae},
    "iwae_gradient": {"iwae_weights": reference_iwae_weights},
    "score_function": {"score_function_gradient": reference_score},
    "find_the_slip": {"my_chains": _correct_chains},
}


def test_there_are_fourteen_exercises_and_every_one_has_a_reference():
    assert len(REGISTRY) == 14 and set(REFERENCE) == set(REGISTRY)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_reference_implementations_pass(name):
    result = grade_functions(name, REFERENCE[name])
    assert result.passed, str(result)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_untouched_stubs_fail_without_crashing(name, sandbox):
    result = check_file(name, REPO_EXERCISES, sandbox)
    assert not result.passed
    assert "is None" in str(result) or "at least 3 steps" in str(result), str(result)
    assert str(REPO_EXERCISES / f"{name}.py") in str(result)  # it says which file it graded


# --- planted classic bugs, and the hint each must get -------------------------------------------

def _vae_without_kl_grads(cache, cfg):
    import dataclasses
    return vae.backward(cache, dataclasses.replace(cfg, beta=0.0))


def _vae_only_kl(cache, cfg):
    import dataclasses
    full, recon = vae.backward(cache, cfg), vae.backward(cache, dataclasses.replace(cfg, beta=0.0))
    return {k: (full[k] - recon[k] if k.startswith("enc.") else full[k]) for k in full}


def _vae_decoder_mean_over_samples(cache, cfg):
    grads = vae.backward(cache, cfg)
    return {k: (v / 3 if k in ("dec.W_out", "dec.b_out") else v) for k, v in grads.items()}


def _vae_wrong_trunk(cache, cfg):
    """Everything right but the encoder trunk's weight gradient."""
    grads = vae.backward(cache, cfg)
    grads["enc.W0"] = grads["enc.W0"] * 1.0 + 0.01
    return grads


def _raise_in_dW(dy, cache):
    x, W = cache
    dx = dy @ W.T
    dW = x @ dy  # the classic shape error: x is (N, D), dy (N, M)
    return dx, dW, dy.sum(0)


PLANTED = {
    "linear": [
        (lambda dy, c: (dy @ c[1].T, dy.T @ c[0], dy.sum(0)), "transposed"),
        (lambda dy, c: (dy @ c[1].T, c[0].T @ dy, dy.sum(1)), "summed over the wrong axis"),
        (_raise_in_dW, "Hint for dW: dW must have W's shape"),
        (lambda dy, c: (dy @ c[1].T, c[0].T @ dy, dy.mean(0)), "a factor 1/B = 1/5"),
    ],
    "tanh": [
        (lambda dh, h: dh * (1 - h), "does not match"),
        (lambda dh, h: 1 - h * h, "the right gradient for an upstream gradient of 1: multiply by the upstream"),
        (lambda dh, h: -dh * (1 - h * h), "wrong sign"),
    ],
    "softplus": [
        (lambda dh, a: dh * layers.sigmoid(-a), "does not match"),
        (lambda dh, a: layers.sigmoid(a), "upstream gradient of 1"),
        (lambda dh, a: 2 * dh * layers.sigmoid(a), "a factor 2 too big"),
    ],
    "reparameterize": [
        (lambda dz, c: (dz.sum(0), c[0] * (dz * c[1]).sum(0)), "a factor 2 too big: a missing 1/2"),
        (lambda dz, c: (dz, 0.5 * c[0] * (dz * c[1]).sum(0)), "not summed where a value is used many times"),
        (lambda dz, c: (dz.mean(0), 0.5 * c[0] * (dz * c[1]).sum(0)), "averaged over the L samples"),
        (lambda dz, c: (dz.sum(0), 0.5 * c[0] * (dz * c[1]).mean(0)), "a factor 1/L = 1/3"),
    ],
    "kl": [
        (lambda dkl, c: (dkl[:, None] * c[0], dkl[:, None] * 0.5 * (1 - c[1])), "wrong sign"),
        (lambda dkl, c: (dkl[:, None] * c[0], dkl[:, None] * (c[1] - 1)), "a factor 2 too big"),
        (lambda dkl, c: (c[0], 0.5 * (c[1] - 1)), "upstream gradient of 1"),
    ],
    "bernoulli": [
        (lambda d, c: d[..., None] * (layers.sigmoid(c[1]) - c[0]), "wrong sign"),
        (lambda d, c: d[..., None] * (c[0] - c[1]), "does not match"),
        (lambda d, c: c[0] - layers.sigmoid(c[1]), "upstream gradient of 1"),
    ],
    "gaussian": [
        (lambda d, c: (d[..., None] * c[0] * c[1], d[..., None] * (c[0] ** 2 * c[1] - 1)), "a factor 2 too big"),
        (lambda d, c: (-d[..., None] * c[0] * c[1], d[..., None] * 0.5 * (c[0] ** 2 * c[1] - 1)), "wrong sign"),
        (lambda d, c: (d[..., None] * c[0] * c[1], d[..., None] * 0.5 * c[0] ** 2 * c[1]), "Two terms depend on logvar"),
    ],
    "vae": [
        (_vae_without_kl_grads, "the encoder heads (reparameterization and KL). It needs"),
        (_vae_without_kl_grads, "Here the KL's gradient is missing"),
        (_vae_only_kl, "the part through the sample z is missing"),
        (_vae_decoder_mean_over_samples, "the likelihood head"),
        (_vae_decoder_mean_over_samples, "a factor 1/L = 1/3"),
        (_vae_wrong_trunk, "the encoder trunk. It needs h feeds both heads"),
    ],
    "elbo_identity": [
        ({"log_px": lambda m: m.integral(m.prior(m.z) * m.log_px_given_z(m.z))}, "the log is inside the integral"),
        ({"log_px": lambda m: float(np.log(np.sum(m.px_given_z(m.z) * m.prior(m.z))))}, "the grid spacing dz is missing"),
        ({"elbo": lambda m: m.E_q(m.log_px_given_z) + m.kl_q_prior()}, "the KL has the wrong sign"),
        ({"elbo": lambda m: m.E_q(lambda z: m.log_px_given_z(z) - m.log_q(z))}, "log p(z) is missing"),
        ({"kl_to_posterior": lambda m: m.kl_q_prior()}, "that is KL(q || p(z)), to the prior"),
        ({"kl_to_posterior": lambda m: m.integral(np.exp(m.log_post(m.z)) * (m.log_post(m.z) - m.log_q(m.z)))},
         "the KL the wrong way round"),
    ],
    "kl_general": [
        (lambda mq, lq, mp, lp: reference_kl(mp, lp, mq, lq), "that is KL(p || q), the wrong way round"),
        (lambda mq, lq, mp, lp: reference_kl(mq, lq, 0 * mp, 0 * lp), "that is KL(q || N(0, I))"),
        (lambda mq, lq, mp, lp: 0.5 * np.sum(0.5 * lp - 0.5 * lq + (np.exp(0.5 * lq) + (mq - mp) ** 2)
                                             / np.exp(0.5 * lp) - 1, -1), "exp(0.5 * logvar) is the std"),
        (lambda mq, lq, mp, lp: 2 * reference_kl(mq, lq, mp, lp), "the 0.5 in front is missing"),
        (lambda mq, lq, mp, lp: reference_kl(mq, lq, mp, lp) + 2.0, "the -1 per dimension is missing"),
        (lambda mq, lq, mp, lp: 0.5 * (lp - lq + (np.exp(lq) + (mq - mp) ** 2) / np.exp(lp) - 1),
         "sum over the latent dimensions"),
    ],
    "iwae": [
        (lambda w: np.log(np.mean(np.exp(w), axis=0)), "exp(1e4) overflows to inf: subtract the max"),
        (lambda w: np.log(np.mean(np.exp(w), axis=0)), "exp(-1e4) underflows to 0, and log(0) = -inf"),
        (lambda w: reference_iwae(w) + np.log(w.shape[0]), "that is log-SUM-exp"),
        (lambda w: np.mean(w, axis=0), "that is the mean of log w, the ELBO"),
        (lambda w: reference_iwae(w.T), "reduce over axis 0"),
        # the two false passes a learner found: a shift by each column's minimum (overflows once a
        # column spreads past exp's range), and one global shift (underflows columns far below it)
        (lambda w: np.log(np.mean(np.exp(w - w.min(0)), axis=0)) + w.min(0),
         "this column's weights spread by 3000: shifted by anything but its maximum"),
        (lambda w: np.log(np.mean(np.exp(w - w.max()), axis=0)) + w.max(),
         "the columns sit near +1e4, 0 and -1e4: shifted by one number for all columns"),
    ],
    "iwae_gradient": [
        (lambda w: np.full_like(w, 1.0 / w.shape[0]), "gives every sample 1/K: that is the gradient of the ELBO"),
        (lambda w: np.exp(w - w.max(0)), "divide each column by its sum"),
        (lambda w: w.shape[0] * reference_iwae_weights(w), "K times too big"),
        (lambda w: reference_iwae_weights(w.T).T, "normalized over the examples (axis 1)"),
        (lambda w: np.exp(w) / np.exp(w).sum(0), "exp(log w) overflows or underflows; subtract each column's max"),
        # shifted by one number for all columns: right at moderate weights, underflows the low columns
        (lambda w: np.exp(w - w.max()) / np.exp(w - w.max()).sum(0), "at log-weights mixed scales"),
        (lambda w: np.log(reference_iwae_weights(w)), "does not match"),
    ],
    "score_function": [
        (lambda f, z, mu, lv: (f[:, None] * (z - mu), reference_score(f, z, mu, lv)[1]),
         "the division by the variance is missing"),
        (lambda f, z, mu, lv: (f[:, None] * (z - mu) / np.exp(0.5 * lv), reference_score(f, z, mu, lv)[1]),
         "divide by the variance, exp(logvar), not the std"),
        (lambda f, z, mu, lv: (reference_score(f, z, mu, lv)[0], f[:, None] * 0.5 * (z - mu) ** 2 / np.exp(lv)),
         "the -1 (from the normalizer) is missing"),
        (lambda f, z, mu, lv: tuple(-g for g in reference_score(f, z, mu, lv)), "the wrong sign"),
    ],
    "find_the_slip": [
        (lambda: {**_correct_chains(), "elbo": [
            ("ELBO", lambda m: m.E_q(lambda z: m.log_px_given_z(z) + m.log_prior(z) - m.log_q(z))),
            ("= E_q[log p(x|z)] - E_q[q] + E_q[log p(z)]",
             lambda m: m.E_q(m.log_px_given_z) - m.E_q(m.q) + m.E_q(m.log_prior)),
            ("= E_q[log p(x|z)] - KL", lambda m: m.E_q(m.log_px_given_z) - m.kl_q_prior())]},
         "step 2: = E_q[log p(x|z)] - E_q[q] + E_q[log p(z)]"),
        (lambda: {**_correct_chains(), "log_likelihood": [
            ("log p(x)", lambda m: m.log_px()),
            ("= E_q[log p(x|z)] + KL(q || p(z)) + KL(q || p(z|x))",
             lambda m: m.E_q(m.log_px_given_z) + m.kl_q_prior() + m.E_q(lambda z: m.log_q(z) - m.log_post(z))),
            ("= same", lambda m: m.E_q(m.log_px_given_z) + m.kl_q_prior()
             + m.E_q(lambda z: m.log_q(z) - m.log_post(z)))]},
         "differs from the step before"),
        (lambda: {**_correct_chains(), "elbo": [
            ("ELBO = E_q[log p(x|z)]", lambda m: m.E_q(m.log_px_given_z)),
            ("= E_q[log p(x|z)]", lambda m: m.E_q(m.log_px_given_z)),
            ("= E_q[log p(x|z)]", lambda m: m.E_q(m.log_px_given_z))]},
         "the sides of '=' in this step differ"),
        # the two false passes a learner found: a chain that repeats its start (values alone agree),
        # and a step whose text keeps the slip while its function computes the right value
        (lambda: {**_correct_chains(), "elbo": [
            ("ELBO", lambda m: m.E_q(lambda z: m.log_px_given_z(z) + m.log_prior(z) - m.log_q(z))),
            ("= ELBO", lambda m: m.E_q(lambda z: m.log_px_given_z(z) + m.log_prior(z) - m.log_q(z))),
            ("= ELBO", lambda m: m.E_q(lambda z: m.log_px_given_z(z) + m.log_prior(z) - m.log_q(z)))]},
         "step 2 repeats step 1"),
        (lambda: {**_correct_chains(), "elbo": [
            ("ELBO", lambda m: m.E_q(lambda z: m.log_px_given_z(z) + m.log_prior(z) - m.log_q(z))),
            ("= E_q[log p(x|z)] - E_q[q] + E_q[log p(z)]",
             lambda m: m.E_q(m.log_px_given_z) - m.E_q(m.log_q) + m.E_q(m.log_prior)),
            ("= E_q[log p(x|z)] - KL(q || p(z))", lambda m: m.E_q(m.log_px_given_z) - m.kl_q_prior())]},
         "writes E_q[q], the expectation of a density where its log belongs"),
    ],
}


def _planted_cases():
    for name, bugs in PLANTED.items():
        for i, (bug, expected) in enumerate(bugs):
            yield pytest.param(name, bug, expected, id=f"{name}-{i}")


@pytest.mark.parametrize("name,bug,expected", list(_planted_cases()))
def test_planted_bugs_fail_with_the_hint_that_names_them(name, bug, expected):
    functions = dict(REFERENCE[name])
    if isinstance(bug, dict):
        functions.update(bug)
    else:
        functions[REGISTRY[name].functions[0]] = bug
    result = grade_functions(name, functions)
    assert not result.passed
    assert expected in str(result), str(result)


def test_at_least_three_planted_bugs_per_exercise():
    assert all(len(PLANTED[name]) >= 3 for name in REGISTRY)


# --- whatever a learner returns, the grader reports it -----------------------------------------------

def _returning(value):
    def fn(*args):
        return value(*args) if callable(value) else value
    return fn


def _bad_answers(name):
    n = len(REGISTRY[name].functions)

    def boom(*args):
        return 1 / 0
    shapes = {"vae": {}, "find_the_slip": {"kl_expansion": "nope"}}
    return [boom, _returning(None), _returning([1.0, 2.0]), _returning(np.zeros((2, 2, 2))),
            _returning(lambda *a: (np.full((5, 4), np.nan),) * 3 if n == 1 else float("nan")),
            _returning(shapes.get(name, (np.zeros(3),)))]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_exceptions_none_lists_shapes_and_nan_are_the_learners_failure(name):
    for bad in _bad_answers(name):
        result = grade_functions(name, {f: bad for f in REGISTRY[name].functions})
        assert not result.passed
        text = str(result)
        assert "FAIL" in text and "Traceback" not in text


def test_an_exception_gets_the_hint_of_the_line_that_raised():
    result = grade_function("linear", _raise_in_dW)
    text = str(result)
    assert "raised ValueError" in text and "Hint for dW: dW must have W's shape" in text
    assert "Hint for dx" not in text


# --- files, folders, staged help, the notebook API ---------------------------------------------------

def test_filled_in_files_pass_and_the_cli_exit_codes(tmp_path, capsys):
    folder = tmp_path / "ex"
    shutil.copytree(REPO_EXERCISES, folder)
    src = (folder / "tanh.py").read_text()
    (folder / "tanh.py").write_text(src.replace("    da = None\n", "    da = dh * (1 - h * h)\n"))
    assert main(["check", "tanh", "--dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 exercise(s) passed" in out and f"grading the files in {folder.resolve()}" in out
    assert main(["check", "all", "--dir", str(folder)]) == 1
    assert f"1 of {len(REGISTRY)} exercise(s) passed" in capsys.readouterr().out


def test_learner_errors_are_reported(tmp_path, capsys):
    folder = tmp_path / "ex"
    shutil.copytree(REPO_EXERCISES, folder)
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


def test_the_grader_grades_the_learners_folder_never_the_repository_copy(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "linear.py").write_text("def linear_backward(dy, cache):\n    return None, None, None\n")
    monkeypatch.chdir(mine)
    monkeypatch.delenv("MINIVAE_EXERCISES", raising=False)
    assert main(["check", "linear"]) == 1  # the learner's empty answer, not the repo's
    out = capsys.readouterr().out
    assert f"grading the files in {mine.resolve()}" in out and "is None" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert main(["check", "linear"]) == 2
    err = capsys.readouterr().err
    assert "no exercise files" in err and "python -m minivae tutorials DIR" in err and "Traceback" not in err


def test_hints_come_one_level_at_a_time_and_solution_says_where(tmp_path, capsys):
    folder = tmp_path / "ex"
    shutil.copytree(REPO_EXERCISES, folder)
    levels = len(REGISTRY["iwae"].hints)
    for level in range(1, levels + 2):
        assert main(["hint", "iwae", "--dir", str(folder)]) == 0
        out = capsys.readouterr().out
        assert out.count("hint ") >= min(level, levels)
    assert "that was the last hint" in out
    assert main(["solution", "iwae"]) == 0
    assert "minivae/core/bounds.py" in capsys.readouterr().out


def test_check_in_a_notebook(capsys):
    result = check("linear", layers.linear_backward)
    assert result.passed and "=> passed" in capsys.readouterr().out
    assert not check("elbo_identity", log_px=_log_px, elbo=_elbo, kl_to_posterior=lambda m: 0.0).passed
    with pytest.raises(ValueError, match="no exercise 'nope'"):
        check("nope", print)


def test_the_worked_example_finds_seed_002s_slips():
    import importlib.util
    spec = importlib.util.spec_from_file_location("fts", REPO_EXERCISES / "find_the_slip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from minivae.exercises.slip import first_slip
    # E_q[p(z)] for E_q[log p(z)] (step 5), the same slip carried into log p(x) (step 2), E_q[q] (step 2)
    assert {k: first_slip(v, by_text=False) for k, v in module.NOTES_DERIVATION.items()} == \
        {"kl_expansion": 4, "log_likelihood": 1, "elbo": 1}
    assert all(first_slip(v) is None for v in _correct_chains().values())


def test_diagnose_messages():
    n = np.arange(1.0, 7.0).reshape(2, 3)
    assert "transposed" in exercises.diagnose(n.T, n)
    assert "wrong sign" in exercises.diagnose(-n, n)
    assert "a factor 1/2" in exercises.diagnose(0.5 * n, n)
    assert "a factor 1/L = 1/3" in exercises.diagnose(n / 3, n)
    assert "a factor B = 5" in exercises.diagnose(5 * n, n)
    assert "is None" in exercises.diagnose(None, n)
    assert "not an array" in exercises.diagnose([1, 2], n)
    assert "NaN" in exercises.diagnose(n * np.nan, n)


# --- misdiagnoses a learner met, each now told what it is -------------------------------------------

def _tanh_in_place(dh, h):
    da = dh          # an alias: the next line writes into the caller's dh
    da *= 1 - h * h
    return da


def _reparameterize_eps_in_place(dz, cache):
    std, eps = cache
    eps *= std                      # the cache's eps now holds std * eps
    return dz.sum(0), 0.5 * (dz * eps).sum(0)


def _kl_mu_in_place(dkl, cache):
    mu, var = cache
    mu *= dkl[:, None]              # the cache's mu now holds dkl * mu
    return mu, dkl[:, None] * 0.5 * (var - 1.0)


def _naive_softplus(dout, a):
    return dout * np.exp(a) / (1 + np.exp(a))


def _naive_bernoulli(dlogp, cache):
    x, logits = cache[0], cache[1]
    return dlogp[..., None] * (x - np.exp(logits) / (1 + np.exp(logits)))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
@pytest.mark.parametrize("name, answer, expected", [
    ("tanh", _tanh_in_place, "wrote into its input dout in place (e.g. `da = dh; da *= ...`"),
    ("tanh", lambda dh, h: (dh * (1 - h * h)).astype(np.float32), "is float32, right to"),
    ("tanh", lambda dh, h: dh * (1 - h * h) * (1 + 1e-6), "is close (relative error 1.0e-06) but not within"),
    ("tanh", lambda dh: dh, "could not be called with 2 argument(s)"),
    ("reparameterize", _reparameterize_eps_in_place, "wrote into its input cache in place"),
    ("kl", _kl_mu_in_place, "wrote into its input cache in place"),
    ("softplus", _naive_softplus, "exp(800) overflows to inf"),
    ("bernoulli", _naive_bernoulli, "exp(800) overflows to inf"),
])
def test_what_a_learner_met_is_diagnosed_as_what_it_is(name, answer, expected):
    result = grade_function(name, answer)
    assert not result.passed
    text = str(result)
    assert expected in text, text
    assert "times the right gradient" not in text and "does not match" not in text


def test_the_tanh_answer_that_mutates_dh_gets_its_values_graded_on_untouched_inputs():
    result = grade_function("tanh", _tanh_in_place)
    values = [r for r in result.rows if r.name == "da"]
    assert values and values[0].passed  # the values were right: only the in-place write is wrong


def test_check_chain_at_the_end_of_a_notebook_cell_shows_its_rows():
    """IPython shows a cell's last value with _repr_pretty_: check_chain's rows, not just a verdict."""
    pretty = pytest.importorskip("IPython.lib.pretty", reason="IPython comes with the docs extra").pretty
    from minivae.exercises import check_chain
    shown = pretty(check_chain([("log p(x)", lambda m: m.log_px()), ("= log p(x) + 1", lambda m: m.log_px() + 1)]))
    assert "step 1" in shown and "step 2" in shown and "differs from the step before" in shown
    printed = check("linear", layers.linear_backward)
    assert pretty(printed) == "<linear: passed>"  # check() printed the report already


def test_a_float32_log_px_is_blamed_in_its_own_row_not_the_kls():
    """A learner's log p(x) in float32 agrees to ~1e-7 and used to pass, while the KL computed from it
    failed: now the float32 row itself says so."""
    ref = REFERENCE["elbo_identity"]
    result = grade_functions("elbo_identity", {**ref, "log_px": lambda m: np.float32(ref["log_px"](m))})
    rows = {r.name: r for r in result.rows}
    assert not rows["log_px"].passed and "is a float32 number" in rows["log_px"].message
    assert rows["elbo"].passed and rows["kl_to_posterior"].passed


# --- a grader a teacher can trust: hostile and odd answers, each in its own child process -----------

SOLUTIONS = REPO_EXERCISES.parent / "solutions"



def _solution(name):
    return (SOLUTIONS / f"{name}.py").read_text()


def _grade_source(tmp_path, sandbox, name, source):
    """Grade ``source`` as the learner's ``name``.py; returns (result, report text, seconds)."""
    import time
    folder = tmp_path / "answers"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(source)
    start = time.perf_counter()
    result = check_file(name, folder, sandbox)
    return result, str(result), time.perf_counter() - start


def _linear(body: str, top: str = "") -> str:
    """A linear.py whose function runs ``body`` before the right answer."""
    return (f"import numpy as np\n{top}\n\ndef linear_backward(dy, cache):\n    x, W = cache\n"
            + "".join(f"    {line}\n" for line in body.splitlines())
            + "    return dy @ W.T, x.T @ dy, dy.sum(0)\n")


def test_every_worked_solution_passes_in_a_child_process(sandbox):
    for name in REGISTRY:
        result = check_file(name, SOLUTIONS, sandbox)
        assert result.passed, str(result)
        assert result.source == str((SOLUTIONS / f"{name}.py").resolve())


HOSTILE = {
    # hangs: a time limit, and the process group killed
    "endless loop": ("linear", _linear("while True:\n    pass"), f"timed out after {LIMIT:g} s"),
    "sleep": ("linear", _linear("import time\ntime.sleep(3600)"), f"timed out after {LIMIT:g} s"),
    # endings without a verdict
    "sys.exit in the function": ("linear", _linear("import sys\nsys.exit(0)"), "ended the process (sys.exit"),
    "os._exit in the function": ("linear", _linear("import os\nos._exit(0)"),
                                 "ended the process before returning (os._exit(0)"),
    "exit() at the end of the file": ("linear", _linear("") + "\nexit()\n",
                                      "linear.py ended the process while it was imported (SystemExit"),
    "unittest.main at import": ("linear", _linear("") + "\nimport unittest\nunittest.main(argv=['x'])\n",
                                "linear.py ended the process while it was imported"),
    # the grader patched from inside the answer: a wrong answer still fails
    "rel_error patched": ("linear", "import minivae.exercises.backward as b\nb.rel_error = lambda a, n: 0.0\n"
                          "import minivae.core.gradcheck as g\ng.rel_error = lambda a, n: 0.0\n"
                          "def linear_backward(dy, cache):\n    x, W = cache\n    return 2 * dy @ W.T, x.T @ dy, dy.sum(0)\n",
                          "a factor 2 too big"),
    "TOLERANCE patched": ("linear", "import minivae.exercises.backward as b\nb.TOLERANCE = 1e300\n"
                          "def linear_backward(dy, cache):\n    x, W = cache\n    return 2 * dy @ W.T, x.T @ dy, dy.sum(0)\n",
                          "a factor 2 too big"),
    "numerical_gradient patched": ("linear", "import numpy as np\nimport minivae.exercises.backward as b\n"
                                   "b.numerical_gradient = lambda f, x, **k: (np.zeros_like(x), [])\n"
                                   "def linear_backward(dy, cache):\n    x, W = cache\n"
                                   "    return 0 * dy @ W.T, 0 * x.T @ dy, 0 * dy.sum(0)\n", "is 0 everywhere"),
    "numpy.max patched": ("linear", "import numpy as np\nnp.max = lambda *a, **k: 0.0\n"
                          "def linear_backward(dy, cache):\n    x, W = cache\n    return -dy @ W.T, x.T @ dy, dy.sum(0)\n",
                          "the wrong sign everywhere"),
    "GradeResult.passed patched": ("linear", "from minivae.exercises.result import GradeResult\n"
                                   "GradeResult.passed = property(lambda self: True)\n"
                                   "def linear_backward(dy, cache):\n    return None, None, None\n", "is None"),
    # what an answer returns that is not an answer
    "complex gradients": ("tanh", "def tanh_backward(dh, h):\n    return dh * (1 - h * h) + 1e-3j\n",
                          "returned complex values"),
    "an object array": ("kl_general", "import numpy as np\nfrom minivae.exercises.derivations import reference_kl\n"
                        "def kl_diag_gaussians(a, b, c, d):\n    return reference_kl(a, b, c, d).astype(object)\n",
                        "returned an object array"),
    "an object with a .shape": ("tanh", "class A:\n    shape = (5, 6)\n\ndef tanh_backward(dh, h):\n    return A()\n",
                                "is a A, not an array"),
    "BaseException": ("tanh", "def tanh_backward(dh, h):\n    raise BaseException('no')\n", "raised BaseException: no"),
    "KeyboardInterrupt": ("tanh", "def tanh_backward(dh, h):\n    raise KeyboardInterrupt\n", "raised KeyboardInterrupt"),
    "GeneratorExit": ("tanh", "def tanh_backward(dh, h):\n    raise GeneratorExit\n", "raised GeneratorExit"),
    "an exception whose __str__ raises": (
        "tanh", "class E(Exception):\n    def __str__(self):\n        raise ValueError\n\n"
                "def tanh_backward(dh, h):\n    raise E()\n", "its message could not be shown"),
    "an exception whose __str__ recurses": (
        "tanh", "class E(Exception):\n    def __str__(self):\n        return str(self)\n\n"
                "def tanh_backward(dh, h):\n    raise E()\n", "its message could not be shown"),
    "iwae for B = 5 only": ("iwae", _solution("iwae").replace("    m = np.max(", "    assert log_w.shape[1] == 5\n    m = np.max("),
                            "raised AssertionError"),
    "iwae that asserts K > 1": ("iwae", _solution("iwae").replace("    m = np.max(", "    assert log_w.shape[0] > 1\n    m = np.max("),
                                "raised AssertionError"),
    "50 GB": ("linear", _linear("big = np.ones(50 * 2**30 // 8)"), "ran out of memory"),
    "model.log_px() in elbo_identity": (
        "elbo_identity", _solution("elbo_identity").replace(
            "    a = model.log_px_given_z(model.z) + model.log_prior(model.z)\n    top = np.max(a)\n"
            "    value = float(top + np.log(model.integral(np.exp(a - top))))\n", "    value = model.log_px()\n"),
        "the answer calls model.log_px(), which hold the answers"),
    "the old fixed model's numbers typed in": (
        "elbo_identity", "def log_px(m):\n    return -1.7281942524\n\ndef elbo(m):\n    return -2.0154044929\n\n"
                         "def kl_to_posterior(m):\n    return 0.2872102405\n", "log_px is too"),
    "the reparameterized estimator": (
        "score_function", "import numpy as np\n\ndef score_function_gradient(f_z, z, mu, logvar):\n"
                          "    std = np.exp(0.5 * logvar)\n    return np.cos(z), np.cos(z) * 0.5 * std * (z - mu) / std\n",
        "the reparameterized (pathwise) estimator"),
    "steps that say banana": (
        "find_the_slip", "def my_chains():\n    chains = {}\n    for key, start in [('kl_expansion', 'KL(q || p(z|x))'), "
                         "('log_likelihood', 'log p(x)'), ('elbo', 'ELBO')]:\n"
                         "        chains[key] = [(start, None), ('= banana', None), ('= 42 apples', None)]\n"
                         "    return chains\n", "unknown word 'banana'"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_or_odd_answer_gets_its_own_verdict(case, tmp_path, sandbox):
    name, source, expected = HOSTILE[case]
    result, text, seconds = _grade_source(tmp_path, sandbox, name, source)
    assert not result.passed, text
    assert expected in text, text
    assert "Traceback" not in text
    assert seconds < LIMIT + 5, seconds


CORRECT_ODDLY = {
    "a thread left running": ("linear", _linear("import threading, time\nthreading.Thread(target=time.sleep, "
                                                "args=(3600,)).start()")),
    "a closed stdout": ("linear", _linear("", top="import sys\nprint('hello')\nsys.stdout.close()")),
    "os.chdir at import": ("linear", _linear("", top="import os, tempfile\nos.chdir(tempfile.gettempdir())")),
    "argparse at import": ("linear", _linear("", top="import argparse\np = argparse.ArgumentParser()\n"
                                                     "p.add_argument('--lr', default=0.1)\nargs = p.parse_args()")),
    "10 MB of printing": ("linear", _linear("print('x' * 10_000_000)")),
    "np.seterr(all='raise') softplus": ("softplus", "import numpy as np\nnp.seterr(all='raise')\n" + _solution("softplus")),
    "np.seterr(all='raise') bernoulli": ("bernoulli", "import numpy as np\nnp.seterr(all='raise')\n" + _solution("bernoulli")),
    "np.seterr(all='raise') iwae_gradient": ("iwae_gradient", "import numpy as np\nnp.seterr(all='raise')\n"
                                             + _solution("iwae_gradient")),
    "np.seterr(all='raise') elbo_identity": ("elbo_identity", "import numpy as np\nnp.seterr(all='raise')\n"
                                             + _solution("elbo_identity")),
    "sigmoid written with tanh": ("softplus", "import numpy as np\n\ndef softplus_backward(dh, a):\n"
                                        "    return dh * 0.5 * (1 + np.tanh(0.5 * a))\n"),
    "another operation order": ("linear", "def linear_backward(dy, cache):\n    x, W = cache\n"
                                "    return (W @ dy.T).T, (dy.T @ x).T, dy.T.sum(1)\n"),
    "a naive but safe iwae": ("iwae", "import numpy as np\n\ndef iwae_bound(log_w):\n    m = log_w.max(0)\n"
                              "    return m + np.log(np.exp(log_w - m).sum(0)) - np.log(len(log_w))\n"),
    "a score-function answer with a baseline": (
        "score_function", "import numpy as np\n\ndef score_function_gradient(f_z, z, mu, logvar):\n"
                          "    var = np.exp(logvar)\n    g = f_z - f_z.mean()\n"
                          "    return g[:, None] * (z - mu) / var, g[:, None] * 0.5 * ((z - mu) ** 2 / var - 1)\n"),
}


@pytest.mark.parametrize("case", list(CORRECT_ODDLY))
def test_a_right_answer_written_oddly_passes(case, tmp_path, sandbox):
    name, source = CORRECT_ODDLY[case]
    result, text, seconds = _grade_source(tmp_path, sandbox, name, source)
    assert result.passed, text
    assert result.source == str((tmp_path / "answers" / f"{name}.py").resolve())  # not the chdir'd folder
    assert seconds < LIMIT + 5


def test_what_an_answer_prints_is_shown_marked_and_cut(tmp_path, sandbox):
    result, text, _ = _grade_source(tmp_path, sandbox, "linear", _linear("print('x' * 10_000_000)\nprint('=> passed')"))
    assert "your code printed:\n  | xxx" in text and len(text) < 5000


def test_writing_into_the_vae_cache_is_named_and_not_blamed_on_a_block(tmp_path, sandbox):
    source = _solution("vae").replace("    # END OF YOUR CODE", "    std, eps = rep_cache\n    z = eps\n    z *= 2\n"
                                                              "    # END OF YOUR CODE")
    result, text, _ = _grade_source(tmp_path, sandbox, "vae", source)
    assert not result.passed and "vae_backward wrote into its input cache in place" in text, text
    assert "likelihood head" not in text and all(r.passed for r in result.rows if r.name != "inputs"), text


def test_calling_the_library_in_a_backward_exercise_passes_with_a_note_and_a_flag(tmp_path, sandbox):
    source = "from minivae.core.layers import linear_backward  # the library's own\n"
    result, text, _ = _grade_source(tmp_path, sandbox, "linear", source)
    assert result.passed and "the answer calls minivae.core.layers.linear_backward()" in text, text
    assert result.flags == ["calls the library's implementation: minivae.core.layers.linear_backward"]


def test_no_reference_number_is_ever_printed(tmp_path, sandbox):
    """A wrong answer's report says how far off it is, never the number it expected: the models are
    fresh each time, and none of their reference values appears in the report."""
    from minivae.exercises.derivations import plan_elbo_identity
    wrong = "def log_px(m):\n    return 0.0\n\ndef elbo(m):\n    return 0.0\n\ndef kl_to_posterior(m):\n    return 0.0\n"
    (tmp_path / "elbo_identity.py").write_text(wrong)
    result = check_file("elbo_identity", tmp_path, sandbox, rng=np.random.default_rng(5))
    _, state = plan_elbo_identity(np.random.default_rng(5))
    text = str(result)
    assert not result.passed and "too high by" in text
    for ref in state["refs"]:
        for value in ref.values():
            assert f"{value:.6f}"[:-1] not in text and f"{value:.4g}" not in text, (value, text)
    # fresh inputs: two gradings see different models
    other = plan_elbo_identity(np.random.default_rng())[1]["refs"][0]["log_px"]
    assert other != state["refs"][0]["log_px"]


def test_untouched_stubs_with_an_exit_at_the_end_fail_check_all(tmp_path, capsys):
    folder = tmp_path / "ex"
    shutil.copytree(REPO_EXERCISES, folder)
    (folder / "tanh.py").write_text((folder / "tanh.py").read_text() + "\nexit()\n")
    assert main(["check", "all", "--dir", str(folder)]) == 1
    out = capsys.readouterr().out
    assert f"0 of {len(REGISTRY)} exercise(s) passed" in out and "tanh.py ended the process while it was imported" in out


def test_check_all_prints_each_result_as_it_is_graded(tmp_path):
    """One endless loop costs its own exercise and its time limit: the results before it are already
    on the screen, and the ones after it come too."""
    import subprocess
    import sys
    import time
    folder = tmp_path / "ex"
    shutil.copytree(SOLUTIONS, folder)
    (folder / "tanh.py").write_text("def tanh_backward(dh, h):\n    while True:\n        pass\n")
    seen_linear = None
    lines = []
    with subprocess.Popen([sys.executable, "-m", "minivae.exercises", "check", "all", "--dir", str(folder),
                           "--timeout", "4"], stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("exercise linear") and seen_linear is None:
                seen_linear = time.perf_counter()
    out = "".join(lines)
    assert proc.returncode == 1 and f"{len(REGISTRY) - 1} of {len(REGISTRY)} exercise(s) passed" in out, out
    # linear's result was on the screen while tanh's loop still had its 4 seconds to run
    assert seen_linear is not None and time.perf_counter() - seen_linear > 3.5
    assert "timed out after 4 s" in out and out.index("exercise linear") < out.index("exercise tanh")


def test_a_notebook_check_survives_base_exceptions_a_stuck_answer_and_seterr(capsys):
    def interrupted(dh, h):
        raise KeyboardInterrupt

    def stuck(dh, h):
        while True:
            pass
    assert "raised KeyboardInterrupt" in str(check("tanh", interrupted))
    assert "raised BaseException" in str(check("tanh", lambda dh, h: (_ for _ in ()).throw(BaseException("x"))))
    result = check("tanh", stuck, timeout=1)
    assert not result.passed and "timed out after 1 s" in str(result)
    old = np.seterr(all="raise")
    try:
        for name in ("softplus", "bernoulli", "iwae_gradient", "linear"):
            assert check(name, *REFERENCE[name].values()).passed, name
    finally:
        np.seterr(**old)
    out = capsys.readouterr().out
    assert out.count("=> passed") == 4 and "Traceback" not in out


def test_the_spawn_path_of_a_platform_without_fork_gives_the_same_verdicts(tmp_path):
    """Windows has no fork: each answer runs in a fresh interpreter. The same verdicts, there too."""
    from minivae.exercises.sandbox import Sandbox
    with Sandbox(timeout=LIMIT, fork=False) as box:
        for case in ("endless loop", "sys.exit in the function", "GradeResult.passed patched"):
            name, source, expected = HOSTILE[case]
            result, text, seconds = _grade_source(tmp_path, box, name, source)
            assert not result.passed and expected in text and seconds < LIMIT + 5, text
        assert check_file("vae", SOLUTIONS, box).passed


def test_the_grader_reads_the_text_of_a_step_not_its_function():
    from minivae.exercises.expr import StepError, values
    from minivae.exercises.model import SmallModel
    m = SmallModel()
    kl_post = REFERENCE["elbo_identity"]["kl_to_posterior"](m)
    assert values("KL(q(z|x) || p(z|x))", m)[0] == pytest.approx(kl_post, rel=1e-12)
    assert values("= -int log p(z|x) q(z|x) dz + int log q(z|x) q(z|x) dz", m)[0] == pytest.approx(kl_post, rel=1e-9)
    assert values("log p(x) - ELBO", m)[0] == pytest.approx(kl_post, rel=1e-9)
    assert values("E_{q(z|x)}[log(p(x, z) / q(z|x))]", m)[0] == pytest.approx(m.log_px() - kl_post, rel=1e-9)
    for text, words in [("= banana", "unknown word 'banana'"), ("log p(x|z)", "depends on z outside"),
                        ("E_q[log p(x,z) / q(z|x)]", "can be read as log(A / B)"),
                        ("E_q[log q(x|z)]", "arguments swapped"), ("KL(q || p(x))", "density over z"),
                        ("E_q[log p(x|z)", "ends too early")]:
        with pytest.raises(StepError, match=re.escape(words)):
            values(text, m)


@pytest.mark.parametrize("name, source, written", [
    ("iwae", "import numpy as np\n\ndef iwae_bound(log_w):\n    m = log_w.max(0)\n    log_w -= m\n"
             "    return m + np.log(np.mean(np.exp(log_w), axis=0))\n", "log_w"),
    ("kl_general", "import numpy as np\n\ndef kl_diag_gaussians(mq, lq, mp, lp):\n    lq *= 1.0\n    mq -= mp\n"
                   "    return 0.5 * np.sum(lp - lq + (np.exp(lq) + mq ** 2) / np.exp(lp) - 1, -1)\n", "mu_q"),
])
def test_a_write_into_an_input_is_named_in_every_exercise(name, source, written, tmp_path, sandbox):
    result, text, _ = _grade_source(tmp_path, sandbox, name, source)
    assert not result.passed and f"wrote into its input {written} in place" in text, text
    assert all(r.passed for r in result.rows if r.name != "inputs"), text  # the values were right


def test_solutions_are_copied_only_for_the_teacher_and_each_one_passes_there(tmp_path, capsys, sandbox):
    from minivae.__main__ import main as cli
    assert cli(["tutorials", str(tmp_path / "class")]) == 0
    assert not (tmp_path / "class" / "solutions").exists()
    assert cli(["tutorials", str(tmp_path / "teacher"), "--solutions"]) == 0
    assert "the worked solutions in solutions/" in capsys.readouterr().out
    copied = tmp_path / "teacher" / "solutions"
    assert sorted(p.stem for p in copied.glob("*.py")) == sorted(REGISTRY)
    assert all(check_file(name, copied, sandbox).passed for name in REGISTRY)
    for name in REGISTRY:  # a teacher's solution comments its steps, and has no stub left
        body = (copied / f"{name}.py").read_text().split("# START OF YOUR CODE")[1].split("# END OF YOUR CODE")[0]
        assert body.count("#") >= 1 and "= None" not in body, name
