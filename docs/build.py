"""Build the book and the notebooks: the eight tutorials as they run by default, with their outputs.

    python docs/build.py                # the book, docs/_build/html/index.html (re-runs stale notebooks)
    python docs/build.py notebooks      # tutorials/*.ipynb, executed, from the .py sources (stale ones)
    python docs/build.py notebooks --all   # every notebook run again

The .py files (percent format) are the single source. Each notebook beside it is that source
executed in a real Jupyter kernel in the tutorial's default mode, the run its prose describes, and
ships with its outputs and figures, so it reads complete before it is run; its metadata holds the
SHA-256 of the source it was made from, and a test fails when they differ. The book is built by
Sphinx with myst-nb from those executed notebooks (nothing runs at build time) in the
executable-book layout (sphinx-book-theme: previous/next, a download button, copy buttons), and
sphinx-mathjax-offline ships MathJax, so the pages need no network. Needs the docs extra:
pip install -e '.[docs]'.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIALS = ROOT / "tutorials"
BUILD = DOCS / "_build"


def tutorial_sources() -> list[Path]:
    return sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))


def notebook_of(source: Path):
    """The unexecuted notebook of a percent-format tutorial, with a Python 3 kernel named and
    cell ids that do not change from one generation to the next."""
    import jupytext
    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.pop("jupytext", None)  # the .ipynb stands alone; the .py is the source
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:03d}"
    return nb


def source_sha256(source: Path) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()


def widgets_sha256(source: Path) -> str | None:
    """For a tutorial that shows a live figure: the SHA-256 of the widgets' JavaScript and CSS, which
    its notebook carries inlined (None for the others)."""
    if "widgets." not in source.read_text():
        return None
    files = sorted((ROOT / "minivae" / "widgets").glob("*.[jc]s*"))
    return hashlib.sha256(b"".join(f.name.encode() + f.read_bytes() for f in files)).hexdigest()


def stamp(source: Path) -> dict:
    """What a notebook must have been made from to be current: its source, and any inlined widget code."""
    widgets = widgets_sha256(source)
    return {"source_sha256": source_sha256(source), **({"widgets_sha256": widgets} if widgets else {})}


def execute_notebook(source: Path, quick: bool = False, figures: Path | None = None):
    """The notebook of ``source``, executed in a Jupyter kernel in the tutorials' folder: the
    default run, as a learner gets it (``quick``: MINIVAE_QUICK=1, for fast tests only)."""
    import nbclient
    made_from = stamp(source)  # of the text that runs, even if a file is edited meanwhile
    nb = notebook_of(source)
    env = {"MINIVAE_FIGURES": str(figures or tempfile.mkdtemp(prefix="minivae-figures-")),
           "MINIVAE_QUICK": "1" if quick else None}
    old = {k: os.environ.get(k) for k in env}
    for k, v in env.items():  # the kernel inherits this process's environment
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    try:
        nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", record_timing=False,
                                store_widget_state=False,
                                resources={"metadata": {"path": str(source.parent)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    without_live_widgets(nb)
    nb.metadata["minivae"] = made_from
    return nb


def without_live_widgets(nb) -> None:
    """Drop the live-widget views from the outputs. A view points at a widget of the kernel that ran
    the notebook, which a saved notebook or the book does not have; each live figure's output also
    holds its inlined HTML (the same JavaScript, with the numbers) and the static figure, which is what
    a reader of the saved notebook or the book gets. Running the cell again brings the live widget back."""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            output.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)


def is_current(source: Path) -> bool:
    """Whether the notebook beside ``source`` was executed from this very source."""
    import nbformat
    path = source.with_suffix(".ipynb")
    if not path.is_file():
        return False
    return nbformat.read(path, as_version=4).metadata.get("minivae", {}) == stamp(source)


def write_notebooks(everything: bool = False) -> list[tuple[Path, float]]:
    """Execute the tutorials whose notebook is stale (all with ``everything``) and write each next
    to its source, outputs included. Returns (path, seconds) per notebook written."""
    import nbformat
    written = []
    for source in tutorial_sources():
        if not everything and is_current(source):
            continue
        t0 = time.perf_counter()
        nb = execute_notebook(source)
        path = source.with_suffix(".ipynb")
        nbformat.write(nb, path)
        written.append((path, time.perf_counter() - t0))
        print(f"wrote {path.relative_to(ROOT)} ({written[-1][1]:.0f}s)", flush=True)
    return written


def stage(target: Path) -> None:
    """The Sphinx source folder: conf, introduction, the executed notebooks, notation, exercises, and
    the teacher's page."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("conf.py", "index.md", "teaching.md"):
        shutil.copy(DOCS / name, target / name)
    for folder in ("_templates", "_static"):
        shutil.copytree(DOCS / folder, target / folder)
    downloads = target / "_downloads_extra"
    downloads.mkdir()
    for source in tutorial_sources():  # the page, and the notebook offered beside it
        shutil.copy(source.with_suffix(".ipynb"), target / source.with_suffix(".ipynb").name)
        shutil.copy(source.with_suffix(".ipynb"), downloads / source.with_suffix(".ipynb").name)
    shutil.copy(TUTORIALS / "NOTATION.md", target / "NOTATION.md")
    (target / "exercises.md").write_text((TUTORIALS / "exercises" / "README.md").read_text())


def build() -> Path:
    """Run the stale notebooks, then build the book from the executed notebooks."""
    t0 = time.perf_counter()
    write_notebooks()
    src, out = BUILD / "src", BUILD / "html"
    stage(src)
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going",
                           "-E", str(src), str(out)])
    if proc.returncode != 0:
        raise SystemExit(f"the book did not build (sphinx exit code {proc.returncode})")
    print(f"built {out / 'index.html'} in {time.perf_counter() - t0:.0f}s")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="book", choices=["book", "notebooks"])
    parser.add_argument("--all", action="store_true", help="with notebooks: run every tutorial again")
    args = parser.parse_args(argv)
    if args.what == "notebooks":
        written = write_notebooks(everything=args.all)
        print(f"{len(written)} notebook(s) written" + ("" if written else ": all were current"))
        return 0
    build()
    return 0


if __name__ == "__main__":
    sys.exit(main())
