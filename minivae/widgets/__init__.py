"""Figures a learner can move: the ELBO identity and the latent space, live in Jupyter and in the book.

Each widget is one plain JavaScript file beside this module (``elbo_identity.js``,
``latent_explorer.js``) defining ``render({model, el})``, anywidget's interface. In Jupyter, ``model``
is a kernel-side widget (anywidget) holding the learner's own trained model; in a saved notebook
and in the book the same file is inlined in the page with the exported numbers (no server, no
kernel, no network). Where JavaScript cannot run, the static figure given as ``fallback`` shows.

The library computes; the browser only recombines:

- ``elbo_identity_data`` exports log p(x|z) of a few images on a grid of a 1-D latent, and the
  encoder's q; the page recomputes log p(x), the ELBO and KL(q || p(z|x)) for any q by the same
  quadrature as ``elbo_identity_terms``.
- ``latent_explorer_data`` exports a 2-D decoder's weights (float32) and the test set's encoded means;
  the page decodes E[x|z] itself for any z, as ``minivae.decode`` and ``likelihood_mean`` do.

Typical use, in a notebook cell (the last expression shows it)::

    from minivae import widgets
    widgets.latent_explorer(widgets.latent_explorer_data(params, cfg, x_test, y_test, names, (28, 28)))
"""

from __future__ import annotations

import base64
import html
import json
import math
import uuid
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..backend import to_numpy
from ..config import VAEConfig

HERE = Path(__file__).resolve().parent
WIDGETS = ("elbo_identity", "latent_explorer")


def _array(a) -> dict:
    """A float32 array as JSON: shape and little-endian base64 bytes."""
    a = np.ascontiguousarray(to_numpy(a), dtype="<f4")
    return {"shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def array_of(exported: dict) -> np.ndarray:
    """The float32 array ``_array`` exported (for tests and for reading a saved figure back)."""
    return np.frombuffer(base64.b64decode(exported["b64"]), dtype="<f4").reshape(exported["shape"])


# --- the ELBO identity on a 1-D latent -------------------------------------------------------------

def elbo_identity_data(params: dict, x, cfg: VAEConfig, z_grid) -> dict:
    """What the ELBO-identity widget draws from: log p(x|z) of each image on ``z_grid``, and q.

    x: (N, D) images; z_grid: (G,) evenly spaced, wide enough that p(z|x) and every q the sliders
    reach (mean in [-3, 3], log-variance in [-9, 0]) vanish at its ends. cfg.z_dim must be 1.
    Returns a JSON-ready dict (float64 numbers as lists).
    """
    from ..vae import encode, log_likelihood
    if cfg.z_dim != 1:
        raise ValueError(f"the ELBO-identity widget needs a 1-D latent (z_dim=1), got z_dim={cfg.z_dim}: "
                         f"its posterior is computed on a grid of z")
    z = np.asarray(z_grid, dtype=np.float64)
    steps = np.diff(z)
    if z.ndim != 1 or len(z) < 3 or not np.allclose(steps, steps[0], rtol=1e-9, atol=0):
        raise ValueError("z_grid must be one evenly spaced, increasing 1-D grid, e.g. np.linspace(-10, 10, 2001)")
    x = np.asarray(to_numpy(x), dtype=np.float64)
    params64 = {k: np.asarray(to_numpy(v), dtype=np.float64) for k, v in params.items()}
    log_lik = log_likelihood(params64, x, z[:, None, None], cfg)              # (G, N)
    mu, logvar = encode(params64, x, cfg)
    side = int(round(math.sqrt(cfg.x_dim)))
    shape = [side, side] if side * side == cfg.x_dim else [1, cfg.x_dim]
    return {"z": z.tolist(), "log_px_given_z": log_lik.T.tolist(), "images": x.tolist(), "image_shape": shape,
            "q": np.concatenate([mu, logvar], axis=1).tolist()}


def elbo_identity_terms(figure: dict, index: int, mu: float, logvar: float) -> tuple[float, float, float]:
    """(log p(x), ELBO, KL(q || p(z|x))) of image ``index`` for q = N(mu, exp(logvar)), by the
    quadrature the page does: the Python twin of ``terms`` in elbo_identity.js."""
    z = np.asarray(figure["z"])
    dz = z[1] - z[0]
    log_joint = np.asarray(figure["log_px_given_z"][index]) - 0.5 * (math.log(2 * math.pi) + z * z)
    m = log_joint.max()
    log_px = m + math.log(np.sum(np.exp(log_joint - m))) + math.log(dz)
    log_q = -0.5 * (math.log(2 * math.pi) + logvar + (z - mu) ** 2 / math.exp(logvar))
    weight = np.exp(log_q) * dz
    return (float(log_px), float(np.sum(weight * (log_joint - log_q))),
            float(np.sum(weight * (log_q - (log_joint - log_px)))))


# --- the 2-D latent space ------------------------------------------------------------------------

def latent_explorer_data(params: dict, cfg: VAEConfig, x, labels, class_names, image_shape,
                         n_points: int = 2000) -> dict:
    """What the latent-space widget draws from: the decoder's weights and the encoded test set.

    x: (N, D) test images (the first ``n_points`` are encoded); labels: (N,) class indices;
    image_shape: (H, W) with H * W = D. cfg.z_dim must be 2; the decoder Bernoulli (the page draws
    sigmoid(logits)) or Gaussian (its mean).
    """
    from ..vae import encode
    if cfg.z_dim != 2:
        raise ValueError(f"the latent-space widget draws a plane: it needs z_dim=2, got z_dim={cfg.z_dim}")
    heads = {"bernoulli": "sigmoid", "gaussian": "identity"}
    if cfg.likelihood not in heads:
        raise ValueError(f"the latent-space widget decodes Bernoulli and Gaussian decoders, not "
                         f"{cfg.likelihood!r}: train one with --likelihood bernoulli")
    if cfg.activation not in ("tanh", "relu"):
        raise ValueError(f"the latent-space widget knows tanh and relu, not {cfg.activation!r}")
    if int(np.prod(image_shape)) != cfg.x_dim:
        raise ValueError(f"image_shape {tuple(image_shape)} holds {int(np.prod(image_shape))} pixels; "
                         f"the model has x_dim={cfg.x_dim}")
    n = min(n_points, len(x))
    mu = np.asarray(to_numpy(encode(params, x[:n], cfg)[0]), dtype=np.float32)
    layers = [{"W": _array(params[f"dec.W{i}"]), "b": _array(params[f"dec.b{i}"])} for i in range(len(cfg.hidden))]
    layers.append({"W": _array(params["dec.W_out"]), "b": _array(params["dec.b_out"])})
    reach = float(np.ceil(max(3.0, np.percentile(np.abs(mu), 99.5) + 0.5) * 2) / 2)  # half-units past the data
    return {"layers": layers, "activation": cfg.activation, "head": heads[cfg.likelihood],
            "points": {"mu": _array(mu), "labels": [int(v) for v in np.asarray(to_numpy(labels))[:n]]},
            "class_names": [str(c) for c in class_names] if class_names is not None
            else [str(c) for c in range(int(np.max(to_numpy(labels))) + 1)],
            "image_shape": [int(s) for s in image_shape], "z_range": [-reach, reach]}


# --- showing a widget: live in Jupyter, inlined in saved notebooks and the book -------------------

def source(name: str) -> str:
    """The JavaScript of widget ``name`` (one file; Jupyter and the book run the same text)."""
    if name not in WIDGETS:
        raise ValueError(f"no widget {name!r}; the widgets are {', '.join(WIDGETS)}")
    return (HERE / f"{name}.js").read_text()


def css() -> str:
    return (HERE / "widgets.css").read_text()


def to_html(name: str, figure: dict, fallback: str | Path | None = None) -> str:
    """A self-contained HTML fragment: the static figure, replaced by the live widget where
    JavaScript runs. The page needs nothing else: the script, the style and the numbers are inline."""
    key = f"minivae-{name.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    static = ('<p class="minivae-static-note">Run this cell to get the live figure (in Jupyter; a notebook '
              'that has not run it, or is not trusted, cannot).'
              + (' Until then, the figure it starts from:' if fallback is not None else '') + '</p>')
    if fallback is not None:
        png = base64.b64encode(Path(fallback).read_bytes()).decode("ascii")
        static += f'<img alt="{html.escape(name)} (static figure)" src="data:image/png;base64,{png}">'
    # the JSON sits in a script element of its own type: "</" is escaped so it cannot end it
    payload = json.dumps(figure, separators=(",", ":")).replace("</", "<\\/")
    return (f'<div class="minivae-live" id="{key}"><div class="minivae-static">{static}</div></div>\n'
            f'<style>{css()}</style>\n'
            f'<script type="application/json" id="{key}-figure">{payload}</script>\n'
            f'<script>{source(name)}</script>\n'
            f'<script>(function () {{\n'
            f'  const el = document.getElementById("{key}");\n'
            f'  const figure = JSON.parse(document.getElementById("{key}-figure").textContent);\n'
            f'  const model = {{ get: () => figure, on: () => {{}} }};   // a fixed figure: nothing changes it\n'
            f'  globalThis.minivaeWidgets.{name}.render({{ model, el }});\n'
            f'}})();</script>')


@lru_cache(maxsize=None)
def _widget_class(name: str):
    """The anywidget class of widget ``name``, or None where anywidget is not installed."""
    try:
        import anywidget
        import traitlets
    except ImportError:
        return None
    esm = source(name) + f"\nexport default globalThis.minivaeWidgets.{name};\n"
    return type(f"Live_{name}", (anywidget.AnyWidget,),
                {"_esm": esm, "_css": css(), "figure": traitlets.Dict().tag(sync=True),
                 "__doc__": f"minivae's {name} widget: set .figure to redraw it."})


class Live:
    """A widget to show: the live anywidget in a Jupyter kernel, the inlined HTML in a saved notebook
    or the book, the static figure where JavaScript does not run.

    ``.widget`` is the kernel-side anywidget (None without anywidget): assign ``.widget.figure`` a new
    export to redraw it, e.g. after training more.
    """

    def __init__(self, name: str, figure: dict, fallback=None):
        self.name, self.figure, self.fallback = name, figure, fallback
        cls = _widget_class(name)
        self.widget = cls(figure=figure) if cls is not None else None

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = {"text/plain": f"<minivae {self.name} widget>", "text/html": to_html(self.name, self.figure,
                                                                                     self.fallback)}
        if self.fallback is not None:
            bundle["image/png"] = base64.b64encode(Path(self.fallback).read_bytes()).decode("ascii")
        if self.widget is not None:
            live = self.widget._repr_mimebundle_()
            live = live[0] if isinstance(live, tuple) else live        # (data, metadata) or data
            bundle.update({k: v for k, v in (live or {}).items() if k != "text/plain"})
        return bundle


def elbo_identity(figure: dict, fallback=None) -> Live:
    """The ELBO identity, live: sliders for q's mean and log-variance; p(z|x) and q(z|x) drawn, and
    log p(x) = ELBO + KL(q || p(z|x)) as bars. ``figure``: ``elbo_identity_data(...)``."""
    return Live("elbo_identity", figure, fallback)


def latent_explorer(figure: dict, fallback=None) -> Live:
    """The latent space, live: the encoded test set; pointing decodes E[x|z], two clicks interpolate.
    ``figure``: ``latent_explorer_data(...)``."""
    return Live("latent_explorer", figure, fallback)
