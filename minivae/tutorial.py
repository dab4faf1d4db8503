"""What the tutorials share: quick mode, where their figures go, and showing a figure.

    from minivae.tutorial import start
    t = start("01")          # t.quick, t.figures
    t.save(fig, "posteriors.png")   # a PNG in t.figures; inline too when run in a notebook

Figures go to ``$MINIVAE_FIGURES/<number>`` if set, else to ``_output/<number>`` beside the tutorial
itself (the notebook's folder in Jupyter), whatever the working directory. In a Jupyter kernel a
saved figure also shows inline; run as a script, it is saved and closed. matplotlib's backend is
never switched: a notebook keeps its inline backend, a headless run gets Agg from matplotlib.

``MINIVAE_QUICK=1`` selects quick mode: smaller data and fewer epochs, so that every tutorial runs in
seconds in the tests. It says so when it starts, and a claim that holds only at full size is checked
only there (``t.full_size_claim``) and labelled in the quick output.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path


def in_notebook() -> bool:
    """Whether this runs in a Jupyter (IPython) kernel, where figures show inline."""
    if "ipykernel" not in sys.modules:
        return False
    from IPython import get_ipython
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


@dataclass
class Tutorial:
    number: str
    quick: bool
    figures: Path

    def save(self, fig, name: str) -> Path:
        """Save ``fig`` as ``figures/name``; in a notebook it then shows inline, else it is closed."""
        import matplotlib.pyplot as plt
        path = self.figures / name
        fig.savefig(path, dpi=110, bbox_inches="tight")
        if in_notebook():
            plt.show()
        else:
            plt.close(fig)
        return path

    def show(self, path) -> None:
        """Show an image file (e.g. one of ``minivae.plots``' figures) inline in a notebook."""
        if in_notebook():
            from IPython.display import Image, display
            display(Image(filename=str(path)))

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
