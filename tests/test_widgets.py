"""The live figures' Python side: what is exported, the quadrature the page repeats, and the HTML a
saved notebook and the book carry (self-contained: no URL to fetch, the static figure inside). The
browser side (the same JavaScript run in Chromium, compared with the library's numbers) is in
tests/test_book.py, in the slow suite."""

import json
import math
import re

import numpy as np
import pytest

import minivae
from minivae import VAEConfig, widgets

BARS = VAEConfig(x_dim=16, hidden=(8,), z_dim=1, likelihood="bernoulli", init="uniform")
PLANE = VAEConfig(x_dim=36, hidden=(7, 5), z_dim=2)


@pytest.fixture
def identity():
    params = minivae.init_params(BARS, seed=0, dtype="float64", init="uniform")
    x = (np.random.default_rng(0).random((3, 16)) < 0.5).astype(np.float64)
    return params, x, widgets.elbo_identity_data(params, x, BARS, np.linspace(-10, 10, 2001))


def exact_terms(params, x, mu, logvar):
    """log p(x), ELBO and KL(q || p(z|x)) on a fine grid, independently of the widget's code."""
    z = np.linspace(-10, 10, 40001)
    dz = z[1] - z[0]
    log_joint = minivae.log_likelihood(params, x[None], z[:, None, None], BARS)[:, 0] - 0.5 * (np.log(2 * np.pi) + z * z)
    log_px = np.logaddexp.reduce(log_joint) + np.log(dz)
    log_q = -0.5 * (np.log(2 * np.pi) + logvar + (z - mu) ** 2 / np.exp(logvar))
    q = np.exp(log_q) * dz
    return log_px, np.sum(q * (log_joint - log_q)), np.sum(q * (log_q - log_joint + log_px))


def test_the_identity_terms_are_the_quadrature_for_any_q(identity):
    params, x, figure = identity
    for i, (mu, logvar) in enumerate([(0.3, -2.0), (-2.5, -8.5), (1.0, 0.0)]):
        got = widgets.elbo_identity_terms(figure, i, mu, logvar)
        want = exact_terms(params, x[i], mu, logvar)
        assert np.max(np.abs(np.subtract(got, want))) < 1e-9
        assert abs(got[0] - got[1] - got[2]) < 1e-12 and got[2] > 0          # the identity, and KL >= 0
    encoder = minivae.encode(params, x, BARS)
    assert np.allclose(figure["q"], np.concatenate(encoder, axis=1), rtol=0, atol=0)


def test_a_wrong_grid_or_latent_size_is_refused_with_the_fix():
    params = minivae.init_params(BARS, seed=0, dtype="float64")
    with pytest.raises(ValueError, match="evenly spaced"):
        widgets.elbo_identity_data(params, np.zeros((1, 16)), BARS, np.array([0.0, 1.0, 3.0]))
    with pytest.raises(ValueError, match="z_dim=1"):
        widgets.elbo_identity_data(minivae.init_params(PLANE), np.zeros((1, 36)), PLANE, np.linspace(-1, 1, 5))
    with pytest.raises(ValueError, match="z_dim=2"):
        widgets.latent_explorer_data(params, BARS, np.zeros((2, 16)), [0, 1], None, (4, 4))
    with pytest.raises(ValueError, match="holds 35 pixels"):
        widgets.latent_explorer_data(minivae.init_params(PLANE), PLANE, np.zeros((2, 36)), [0, 1], None, (5, 7))


def test_the_explorer_exports_the_decoder_exactly_and_the_encoded_points():
    params = minivae.init_params(PLANE, seed=1, dtype="float32", init="uniform")
    x = np.random.default_rng(1).random((50, 36)).astype(np.float32)
    figure = widgets.latent_explorer_data(params, PLANE, x, np.arange(50) % 3, ["a", "b", "c"], (6, 6), n_points=40)
    names = ["dec.W0", "dec.W1", "dec.W_out"]
    assert [widgets.array_of(layer["W"]).tolist() for layer in figure["layers"]] == [params[n].tolist() for n in names]
    assert widgets.array_of(figure["layers"][0]["b"]).tolist() == params["dec.b0"].tolist()
    mu = widgets.array_of(figure["points"]["mu"])
    assert mu.shape == (40, 2) and np.array_equal(mu, minivae.encode(params, x[:40], PLANE)[0])
    assert figure["points"]["labels"] == (np.arange(40) % 3).tolist() and figure["class_names"] == ["a", "b", "c"]
    assert figure["head"] == "sigmoid" and figure["activation"] == "tanh" and figure["z_range"][1] >= 3
    json.dumps(figure)  # JSON-ready


def test_the_html_is_self_contained_and_carries_the_static_figure(identity, tmp_path):
    _, _, figure = identity
    png = tmp_path / "static.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    figure = {**figure, "note": "</script><script>alert(1)</script>"}   # cannot end the data's script element
    page = widgets.to_html("elbo_identity", figure, fallback=png)
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page) and "import " not in page
    assert page.count("</script>") == 3 and "data:image/png;base64," in page
    data = re.search(r'<script type="application/json" id="[^"]+">(.*?)</script>', page, re.S).group(1)
    assert json.loads(data)["note"] == figure["note"]
    assert widgets.source("elbo_identity") in page       # the one JavaScript file, as it is
    with pytest.raises(ValueError, match="the widgets are"):
        widgets.source("nope")


def test_a_live_figure_offers_the_widget_the_page_and_the_static_figure(identity, tmp_path, monkeypatch):
    _, _, figure = identity
    png = tmp_path / "static.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    without = widgets.Live.__new__(widgets.Live)
    monkeypatch.setattr(widgets, "_widget_class", lambda name: None)   # no anywidget installed
    without.__init__("elbo_identity", figure, png)
    assert without.widget is None
    assert set(without._repr_mimebundle_()) == {"text/plain", "text/html", "image/png"}
    monkeypatch.undo()
    pytest.importorskip("anywidget")
    live = widgets.elbo_identity(figure, fallback=png)
    assert live.widget.figure == figure                       # the kernel-side model holds the numbers
    assert "application/vnd.jupyter.widget-view+json" in live._repr_mimebundle_()
    assert "export default globalThis.minivaeWidgets.elbo_identity" in live.widget._esm


def test_the_javascript_ships_in_the_package():
    from importlib.resources import files
    for name in widgets.WIDGETS:
        assert (files("minivae.widgets") / f"{name}.js").is_file()
        text = widgets.source(name)
        assert "function render" in text and f"{name}: " in text.replace("{ ", "")


def test_the_static_figure_is_the_widgets_first_view_with_a_note_to_run_the_cell(identity, tmp_path):
    """Where the widget cannot run (an untrusted notebook, no JavaScript), the page says how to get it
    and shows the view it starts from: the encoder's q of the first image, with its three numbers."""
    params, x, figure = identity
    from minivae import plots
    png = plots.plot_elbo_identity(figure, tmp_path / "first.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = widgets.to_html("elbo_identity", figure, fallback=png)
    static = re.search(r'<div class="minivae-static">(.*?)</div>', page, re.S).group(1)
    assert static.startswith('<p class="minivae-static-note">Run this cell to get the live figure')
    assert "the figure it starts from" in static and "data:image/png;base64," in static
    assert "Run this cell" in widgets.to_html("elbo_identity", figure)   # no figure: still the note
