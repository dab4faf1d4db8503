"""Figures, drawn with matplotlib into a run folder.

reconstructions.png  rows of inputs, each above its reconstructions E[x|z], z ~ q(z|x)
samples.png          E[x|z] for z ~ p(z) = N(0, I)
manifold.png         2-D latent only: a grid of z pushed through the inverse Gaussian CDF and
                     decoded, as in the paper's Figure 4, with the z values on the axes
latent.png           2-D latent only: the test set's posterior means, colored by class
curves.png           train and test -ELBO, recon and KL per epoch, in nats

matplotlib's backend is never switched here: without a display matplotlib picks Agg by itself (or
MPLBACKEND decides), and in a Jupyter kernel the learner's inline figures keep working.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from statistics import NormalDist

import numpy as np

from .backend import Generator, from_numpy, to_numpy
from .files import write_atomic
from .core.distributions import reparameterize_forward
from .core.model import decode, encode, likelihood_mean


def _pyplot():
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path, **kwargs) -> None:
    """Save ``fig`` to ``path`` (format from its suffix) through a fresh temporary file and one
    rename, like every file minivae writes: a link planted at ``path`` is replaced, not followed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix[1:] or "png", **kwargs)
    write_atomic(Path(path), buffer.getvalue())


def image_grid(images: np.ndarray, image_shape, ncols: int, pad: int = 1) -> np.ndarray:
    """Tile (n, D) images into one 2-D array, ``ncols`` per row, with ``pad`` pixels between."""
    h, w = image_shape
    n = len(images)
    nrows = -(-n // ncols)
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad), np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h,
             pad + c * (w + pad): pad + c * (w + pad) + w] = np.clip(img.reshape(h, w), 0, 1)
    return grid


def _save_grid(grid, path, title, axes=None):
    """Save an image grid; ``axes = (xticks, xlabels, yticks, ylabels, xname, yname)`` labels it."""
    plt = _pyplot()
    width = max(6.0, grid.shape[1] / 70)  # about two screen pixels per image pixel for big grids
    fig, ax = plt.subplots(figsize=(width, width * grid.shape[0] / grid.shape[1] + 0.4))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    if axes is None:
        ax.axis("off")
    else:
        xticks, xlabels, yticks, ylabels, xname, yname = axes
        ax.set_xticks(xticks, xlabels)
        ax.set_yticks(yticks, ylabels)
        ax.set_xlabel(xname)
        ax.set_ylabel(yname)
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _mean_image(params, z, cfg) -> np.ndarray:
    return to_numpy(likelihood_mean(decode(params, z, cfg), cfg))


def plot_reconstructions(params, cfg, x: np.ndarray, image_shape, path, backend="numpy",
                         dtype="float32", n: int = 16, seed: int = 0, per_row: int = 8):
    """The first ``n`` inputs, ``per_row`` to a row, each row above its reconstructions E[x|z],
    z ~ q(z|x), with the rows labelled."""
    xb = from_numpy(x[:n], backend, dtype)
    mu, logvar = encode(params, xb, cfg)
    eps = Generator(seed, backend).normal((1, *mu.shape), dtype)
    z, _ = reparameterize_forward(mu, logvar, eps)             # (1, n, Z): the library's sampler
    recon = _mean_image(params, z[0, ...], cfg)
    rows = []
    for start in range(0, n, per_row):
        rows += [x[start:start + per_row], recon[start:start + per_row]]
    grid = image_grid(np.concatenate(rows), image_shape, per_row)
    h = image_shape[0] + 1
    labels = ["input", "reconstruction"] * (len(rows) // 2)
    _save_grid(grid, path, "inputs and their reconstructions E[x|z], z ~ q(z|x)",
               ([], [], [1 + h * i + h / 2 - 1 for i in range(len(rows))], labels, "", ""))


def plot_samples(params, cfg, image_shape, path, backend="numpy", dtype="float32", n: int = 64,
                 seed: int = 0):
    """E[x|z] for ``n`` draws z ~ N(0, I)."""
    from .memory import batch_bytes, itemsize, require_on
    require_on(backend, 8 * n * cfg.x_dim, batch_bytes(cfg, n, 1, itemsize(dtype)), f"drawing {n:,} samples",
               "ask for fewer with --n")
    z = Generator(seed, backend).normal((n, cfg.z_dim), dtype)
    _save_grid(image_grid(_mean_image(params, z, cfg), image_shape, int(np.sqrt(n))), path,
               "samples: E[x|z], z ~ p(z)")


def plot_manifold(params, cfg, image_shape, path, backend="numpy", dtype="float32", n: int = 20):
    """The learned 2-D manifold: z on a grid of the inverse Gaussian CDF of (0.05 .. 0.95)^2."""
    if cfg.z_dim != 2:
        raise ValueError(f"plot_manifold needs z_dim == 2, got {cfg.z_dim}")
    q = np.linspace(0.05, 0.95, n)
    values = np.array([NormalDist().inv_cdf(p) for p in q])
    z = np.array([[zx, zy] for zy in values[::-1] for zx in values])
    images = _mean_image(params, from_numpy(z, backend, dtype), cfg)
    h, w = image_shape[0] + 1, image_shape[1] + 1
    shown = list(range(0, n, max(1, n // 5))) + [n - 1]
    xticks = [1 + w * i + w / 2 - 1 for i in shown]
    yticks = [1 + h * i + h / 2 - 1 for i in shown]
    _save_grid(image_grid(images, image_shape, n), path,
               "learned manifold: E[x|z] on a grid of Gaussian quantiles (5% .. 95%)",
               (xticks, [f"{values[i]:+.2f}" for i in shown], yticks,
                [f"{values[::-1][i]:+.2f}" for i in shown], "$z_1$", "$z_2$"))


def plot_latent(params, cfg, x: np.ndarray, labels: np.ndarray, path, backend="numpy",
                dtype="float32", class_names=None):
    """The posterior means E_q[z] of ``x`` in a 2-D latent space, colored by class (named by
    ``class_names[label]`` when given)."""
    mu = to_numpy(encode(params, from_numpy(x, backend, dtype), cfg)[0])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7 if class_names else 6, 5))
    cmap = plt.get_cmap("tab10")
    for label in np.unique(labels):
        pick = labels == label
        name = class_names[label] if class_names else str(label)
        ax.scatter(mu[pick, 0], mu[pick, 1], color=cmap(int(label) % 10), s=6, label=name)
    ax.legend(title="class", markerscale=2.5, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_title("test set: posterior means $E_q[z]$")
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_curves(metrics_csv, path):
    """-ELBO, reconstruction and KL, train and test, against the epoch."""
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    epoch = [int(r["epoch"]) for r in rows]
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, title, ylabel in zip(
            axes, ("loss", "recon", "kl"),
            ("-ELBO, lower is better", "reconstruction term", "KL term"),
            ("-ELBO (nats per example)", "$-E_q[\\log p(x|z)]$ (nats)", "KL(q(z|x) || p(z)) (nats)")):
        for split, style in (("train", "-"), ("test", "--")):
            ax.plot(epoch, [float(r[f"{split}_{key}"]) for r in rows], style, label=split)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def make_figures(run_dir, params, cfg, data, backend="numpy", dtype="float32") -> list[Path]:
    """Every figure that applies to this run, written into ``run_dir``; returns their paths."""
    run_dir = Path(run_dir)
    paths = []
    shape = data.image_shape
    plot_reconstructions(params, cfg, data.x_test, shape, run_dir / "reconstructions.png", backend, dtype)
    plot_samples(params, cfg, shape, run_dir / "samples.png", backend, dtype)
    paths += [run_dir / "reconstructions.png", run_dir / "samples.png"]
    if cfg.z_dim == 2:
        plot_manifold(params, cfg, shape, run_dir / "manifold.png", backend, dtype)
        plot_latent(params, cfg, data.x_test, data.y_test, run_dir / "latent.png", backend, dtype,
                    data.class_names)
        paths += [run_dir / "manifold.png", run_dir / "latent.png"]
    if (run_dir / "metrics.csv").is_file():
        plot_curves(run_dir / "metrics.csv", run_dir / "curves.png")
        paths.append(run_dir / "curves.png")
    return paths


def plot_elbo_identity(figure: dict, path, index: int = 0) -> Path:
    """The ELBO-identity widget's first view, as a static figure: p(z|x) and the encoder's q for
    image ``index`` of ``figure`` (``widgets.elbo_identity_data``), and -ELBO = -log p(x) + KL as bars.
    It is what a page shows where the live figure cannot run."""
    from .widgets import elbo_identity_terms
    plt = _pyplot()
    z = np.asarray(figure["z"])
    mu, logvar = figure["q"][index]
    log_px, elbo, kl = elbo_identity_terms(figure, index, mu, logvar)
    log_joint = np.asarray(figure["log_px_given_z"][index]) - 0.5 * (np.log(2 * np.pi) + z * z)
    post = np.exp(log_joint - log_px)
    q = np.exp(-0.5 * (np.log(2 * np.pi) + logvar + (z - mu) ** 2 / np.exp(logvar)))
    keep = (post > 1e-4 * post.max()) | (q > 1e-4 * q.max())
    fig, (top, bars) = plt.subplots(2, 1, figsize=(6.4, 3.8), gridspec_kw={"height_ratios": [3, 1]})
    top.plot(z[keep], post[keep], label="p(z|x), exact")
    top.plot(z[keep], q[keep], "--", label=f"q(z|x) = N({mu:.3f}, exp({logvar:.2f})), the encoder's")
    top.set_xlabel("z")
    top.legend(fontsize=8, loc="upper left")
    top.set_title(f"test image {index}: log p(x) = {log_px:.6f}, ELBO = {elbo:.6f}, KL = {kl:.6f}", fontsize=9)
    bars.barh([1], [-log_px], color="#1f77b4", label="-log p(x)")
    bars.barh([1], [kl], left=[-log_px], color="#d62728", label="KL(q || p(z|x))")
    bars.barh([0], [-elbo], color="#555555", label="-ELBO")
    bars.set_yticks([])
    bars.set_ylim(-0.5, 2.7)  # room above the bars for the legend
    bars.set_xlabel("nats")
    bars.legend(fontsize=7, loc="upper right", ncol=3, frameon=False)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return Path(path)
