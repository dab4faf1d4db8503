import pytest

from minivae.core import model
from minivae.__main__ import main


def test_gradcheck_cli_all_pass(capsys):
    assert main(["gradcheck", "--likelihood", "bernoulli", "--activation", "tanh"]) == 0
    out = capsys.readouterr().out
    assert "6 of 6 configurations pass" in out and "FAIL" not in out


def test_gradcheck_cli_prints_the_table_for_one_config(capsys, backend):
    code = main(["gradcheck", "--likelihood", "gaussian_per_pixel", "--hidden", "4,3", "--n-samples", "2",
                 "--activation", "softplus", "--backend", backend])
    out = capsys.readouterr().out
    assert code == 0
    assert "dec.W_logvar" in out and "h = 0.001" in out and "cs231n" in out and "all pass" in out


def test_gradcheck_cli_exits_nonzero_on_a_wrong_gradient(capsys, monkeypatch):
    def wrong_kl(dkl, cache):
        mu, var = cache
        return dkl[..., None] * mu, dkl[..., None] * (var - 1.0)  # lost the factor 1/2
    monkeypatch.setattr(model, "gaussian_kl_backward", wrong_kl)
    assert main(["gradcheck", "--likelihood", "bernoulli", "--hidden", "none", "--n-samples", "1"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_gradcheck_cli_rejects_bad_options(capsys):
    with pytest.raises(SystemExit):
        main(["gradcheck", "--hidden", "8,x"])
    assert "comma-separated layer widths" in capsys.readouterr().err
