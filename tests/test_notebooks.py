"""Every tutorial as a learner meets it in Jupyter: converted from its percent-format source by jupytext
and executed cell by cell in a real kernel (nbclient), in its default mode, the run its text
describes, so every claim is asserted. No cell may fail, every cell that draws must show its figure
inline, and nothing may say it ran in quick mode. Slow suite: python -m pytest -m slow."""

import os
import re
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext", reason="the docs extra is not installed: pip install -e '.[docs]'")
nbclient = pytest.importorskip("nbclient")

pytestmark = pytest.mark.slow
TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("[0-9][0-9]_*.py"))
DRAWS = re.compile(r"\btut\.(save|show)\(")


def quiet_seconds() -> dict:
    """Each tutorial's run time on a quiet 2-core machine, as the tutorials README's table gives it."""
    times = {}
    for line in (TUTORIALS[0].parent / "README.md").read_text().splitlines():
        row = re.match(r"\| (\d) \|.*\| (\d+) (s|min)\b[^|]*\|$", line)
        if row:
            times[f"{int(row[1]):02d}"] = int(row[2]) * (60 if row[3] == "min" else 1)
    return times


# A cell may take 3x its tutorial's whole quiet run (at least 2 minutes): a busy neighbour on a
# shared machine (CI's, a learner's laptop) does not fail a tutorial, and a real hang still does.
SLACK, FLOOR = 3, 120


def cell_timeout(path: Path) -> int:
    return max(FLOOR, SLACK * quiet_seconds()[path.name[:2]])


def test_every_tutorial_has_a_quiet_time_to_size_its_limit():
    assert set(quiet_seconds()) == {p.name[:2] for p in TUTORIALS}


def execute(path: Path, figures: Path):
    """The executed notebook of one tutorial, run in its own folder as Jupyter would."""
    nb = jupytext.read(path)
    env = {"MINIVAE_FIGURES": str(figures)}
    old = {k: os.environ.get(k) for k in (*env, "MINIVAE_QUICK")}
    os.environ.pop("MINIVAE_QUICK", None)
    os.environ.update(env)  # the kernel inherits the environment
    try:
        nbclient.NotebookClient(nb, timeout=cell_timeout(path), kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def inline_images(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_as_a_notebook_with_its_figures_inline(path, tmp_path):
    import json
    import time
    t0 = time.perf_counter()
    nb = execute(path, tmp_path)
    seconds = time.perf_counter() - t0
    drawing = [c for c in nb.cells if c.cell_type == "code" and DRAWS.search(c.source)]
    assert drawing, "a tutorial without a figure"
    for cell in drawing:
        assert inline_images(cell) >= 1, f"no inline figure from the cell:\n{cell.source[:300]}"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    text = json.dumps([o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])])
    assert "QUICK MODE" not in text and "[full run only]" not in text and "does NOT hold" not in text
    live = live_figures(nb)
    if path.stem.startswith("01"):
        check_elbo_identity_widget(live, figures=tmp_path)
    if path.stem.startswith("07"):
        check_latent_explorer_widget(live, figures=tmp_path)
    print(f"{path.stem}: {sum(inline_images(c) for c in nb.cells)} inline figures, {len(live)} live, "
          f"{seconds:.0f}s (quiet: {quiet_seconds()[path.name[:2]]}s; limit per cell {cell_timeout(path)}s)")


def live_figures(nb) -> list[dict]:
    """The figures the kernel's live widgets received (their synced state, as nbclient recorded it)."""
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    return [s["state"]["figure"] for s in state.values() if "figure" in s.get("state", {})]


def check_elbo_identity_widget(live, figures):
    """The widget's model holds the trained model's numbers: its q is the trained encoder's."""
    import numpy as np
    import minivae
    from minivae.checkpoint import load_checkpoint
    assert len(live) == 1
    params, cfg, _, _ = load_checkpoint(figures / "01" / "run", dtype="float64")  # the tutorial's run
    mu, logvar = minivae.encode(params, np.asarray(live[0]["images"]), cfg)
    assert np.array_equal(np.concatenate([mu, logvar], axis=1), np.asarray(live[0]["q"]))


def check_latent_explorer_widget(live, figures):
    """The widget's model holds the trained 2-D decoder's weights, bit for bit."""
    from minivae import widgets
    from minivae.checkpoint import load_checkpoint
    assert len(live) == 1
    params, cfg, _, _ = load_checkpoint(figures / "07" / "z2")
    names = [(f"dec.W{i}", f"dec.b{i}") for i in range(len(cfg.hidden))] + [("dec.W_out", "dec.b_out")]
    for layer, (w, b) in zip(live[0]["layers"], names):
        assert widgets.array_of(layer["W"]).tobytes() == params[w].astype("<f4").tobytes()
        assert widgets.array_of(layer["b"]).tobytes() == params[b].astype("<f4").tobytes()
