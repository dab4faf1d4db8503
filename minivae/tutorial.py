"""What the tutorials share: quick mode, where their figures go, and showing a figure; and copying
them into a learner's folder (``python -m minivae tutorials DIR``).

    from minivae.tutorial import start
    t = start("01")          # t.figures, t.quick
    sizes = t.sizes(epochs=60)      # sizes.epochs: 60, or quick mode's smaller value
    t.save(fig, "posteriors.png")   # a PNG in t.figures; inline too when run in a notebook

Figures go to ``$MINIVAE_FIGURES/<number>`` if set, else to ``_output/<number>`` beside the tutorial
itself (the notebook's folder in Jupyter), whatever the working directory. In a Jupyter kernel a
saved figure also shows inline; run as a script, it is saved and closed. matplotlib's backend is
never switched: a notebook keeps its inline backend, a headless run gets Agg from matplotlib.

``MINIVAE_QUICK=1`` selects quick mode: smaller data and fewer epochs, so that every tutorial runs in
seconds in the tests. It says so when it starts, and a claim that holds only at full size is checked
only there (``t.full_size_claim``) and labelled in the quick output. The lesson's code names only its
own sizes (``t.sizes(epochs=60)``); the smaller ones of quick mode live here, in ``QUICK_SIZES``, so
that the code a learner reads is the run they get, without the test suite's switch in it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace


def in_notebook() -> bool:
    """Whether this runs in a Jupyter (IPython) kernel, where figures show inline."""
    if "ipykernel" not in sys.modules:
        return False
    from IPython import get_ipython
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


# Figures are shown at the width of a text column: about 650 px in the book at 1280 px, less in
# JupyterLab's narrower panes than its wide ones. A wide figure shrinks, and its text with it; below
# 9 px a legend cannot be read. ``legible`` enlarges a figure's text so that it is shown at 9 px or more.
COLUMN_PX = 650
LEGIBLE_PX = 9.0


def smallest_text_px(fig, column_px: float = COLUMN_PX) -> float:
    """The smallest text of ``fig`` in screen pixels when the figure is shown ``column_px`` wide."""
    import matplotlib.text
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text() and t.get_visible()]
    return min(sizes, default=LEGIBLE_PX * 72) / 72 * column_px / fig.get_size_inches()[0]


def legible(fig) -> None:
    """Raise every text of ``fig`` that would show below LEGIBLE_PX to that size (larger text is
    left alone), then lay the figure out again."""
    import warnings

    import matplotlib.text
    if smallest_text_px(fig) >= LEGIBLE_PX:
        return
    minimum_pt = LEGIBLE_PX * 72 * fig.get_size_inches()[0] / COLUMN_PX
    for text in fig.findobj(matplotlib.text.Text):
        text.set_fontsize(max(text.get_fontsize(), minimum_pt))
    with warnings.catch_warnings():  # a hand-placed layout keeps its places
        warnings.simplefilter("ignore")
        try:
            fig.tight_layout()
        except Exception:  # noqa: BLE001 - some layouts cannot be tightened; the text is enlarged anyway
            pass


# Quick mode's sizes, per tutorial, by the names the tutorial gives its full sizes in ``sizes(...)``.
QUICK_SIZES = {
    "01": {"ae_epochs": 8, "bars_epochs": 20, "grid_points": 8001},
    "03": {"repeats": 200, "epochs": 5},
    "04": {"samples": 20_000, "epochs": 15},
    "05": {"epochs": 3},
    "06": {"steps": 3000},
    "07": {"fashion_mnist": False, "digits_epochs": 4, "manifold_n": 15, "n_eval": 200, "ks": (1, 10, 100)},
    "08": {"repeats": 5, "batches": (100,)},
}


@dataclass
class Tutorial:
    number: str
    quick: bool
    figures: Path

    def save(self, fig, name: str) -> None:
        """Save ``fig`` as ``figures/name`` and close it; in a notebook the PNG then shows inline.
        (Returns nothing, so that a cell ending with it shows the figure and not a path.)"""
        import matplotlib.pyplot as plt

        from .plots import save_figure
        path = self.figures / name
        legible(fig)
        save_figure(fig, path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.show(path)  # the saved PNG itself, so it shows whatever matplotlib backend the kernel has

    def show(self, path) -> None:
        """Show an image file (e.g. one of ``minivae.plots``' figures) inline in a notebook."""
        if in_notebook():
            from IPython.display import Image, display
            display(Image(filename=str(path)))

    def sizes(self, **full):
        """The run's sizes: ``full`` (name -> the full run's value), or in quick mode the smaller
        values of ``QUICK_SIZES``. A name that one of them has and the other lacks is a KeyError, so
        that a size renamed in a tutorial cannot silently run at full size in the tests."""
        quick = QUICK_SIZES.get(self.number, {})
        if set(quick) != set(full):
            raise KeyError(f"tutorial {self.number}'s sizes {sorted(full)} are not quick mode's "
                           f"{sorted(quick)} (minivae/tutorial.py, QUICK_SIZES)")
        return SimpleNamespace(**(quick if self.quick else full))

    def full_size_claim(self, holds: bool, claim: str) -> None:
        """Assert ``claim`` in a full run; in quick mode, say whether it happened to hold."""
        if self.quick:
            print(f"[full run only] {claim}: {'holds' if holds else 'does NOT hold'} in this quick run "
                  f"(too little data or training to be expected to)")
        else:
            assert holds, claim
            print(f"checked: {claim}")


def start(number: str) -> Tutorial:
    """The settings of tutorial ``number`` (``"01"``...), its figures folder made."""
    quick = os.environ.get("MINIVAE_QUICK") == "1"
    caller = sys._getframe(1).f_globals.get("__file__")
    here = Path(caller).resolve().parent if caller else Path.cwd()
    figures = Path(os.environ.get("MINIVAE_FIGURES") or here / "_output") / number
    figures.mkdir(parents=True, exist_ok=True)
    if quick:
        print("QUICK MODE (MINIVAE_QUICK=1): small data, few epochs. The numbers below are checked, "
              "but claims that need a full run are labelled [full run only].")
    return Tutorial(number, quick, figures)


def tutorials_source() -> Path:
    """The folder holding the tutorials: the checkout's ``tutorials/``, else the installed copy."""
    package = Path(__file__).resolve().parent
    checkout = package.parent / "tutorials"
    if (checkout / "exercises").is_dir():
        return checkout
    return package / "tutorials_data"  # where pyproject.toml's package-dir puts them in a wheel


def tutorial_files(source: Path, solutions: bool = False) -> list[Path]:
    """What a learner gets, relative to ``source``: notebooks, sources, notation, exercises; with
    ``solutions`` (a teacher's copy) also the worked solutions, in ``solutions/`` beside them."""
    names = sorted(p.name for p in source.glob("[0-9][0-9]_*.ipynb"))
    names += sorted(p.name for p in source.glob("[0-9][0-9]_*.py"))
    names += [n for n in ("NOTATION.md", "README.md") if (source / n).is_file()]
    for folder in ("exercises", "solutions") if solutions else ("exercises",):
        names += sorted(f"{folder}/{p.name}" for p in (source / folder).iterdir()
                        if p.suffix in (".py", ".md") and not p.name.startswith(("_", ".")))
    return [Path(n) for n in names]


def _parents_inside(target: Path, f: Path) -> list[Path]:
    """The folders between ``target`` and the file ``f`` (a path relative to it): exercises/, ..."""
    return [p for p in Path(f).parents if p != Path(".")]


def copy_tutorials(target, force: bool = False, solutions: bool = False) -> list[Path]:
    """Copy the tutorials and exercises (and, with ``solutions``, the worked solutions) into
    ``target``; refuses to overwrite unless ``force``.

    Raises ValueError naming the files that are already there (nothing is written then)."""
    from .files import write_atomic
    source, target = tutorials_source(), Path(target)
    files = tutorial_files(source, solutions)
    if not any(f.suffix == ".ipynb" for f in files):
        raise ValueError(f"no notebooks in {source}: the installation is incomplete")
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} is a file; give a folder to copy the tutorials into")
    linked = sorted({str(parent) for f in files for parent in _parents_inside(target, f)
                     if (target / parent).is_symlink()})
    if linked:
        raise ValueError(f"{target / linked[0]} is a link to a folder elsewhere; the tutorials are copied "
                         f"only into real folders under {target}, so nothing was copied. Remove the link "
                         f"or choose another folder")
    existing = [f for f in files if (target / f).exists() or (target / f).is_symlink()]
    if existing and not force:
        shown = ", ".join(str(f) for f in existing[:4]) + (" ..." if len(existing) > 4 else "")
        raise ValueError(f"{target} already has {len(existing)} of these files ({shown}); they may be your "
                         f"own work, so nothing was copied. Choose another folder, or pass --force to "
                         f"overwrite them")
    for f in files:
        (target / f).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target / f, (source / f).read_bytes())  # a link at the target is replaced, not followed
    return files
