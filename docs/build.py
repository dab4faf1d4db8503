"""Build the book: the eight tutorials executed, with their figures and formulas, as static HTML.

    python docs/build.py                # quick mode (about a minute): docs/_build/html/index.html
    python docs/build.py --full         # the tutorials' full runs (about 10 minutes)
    python docs/build.py notebooks      # regenerate tutorials/*.ipynb from the .py sources

Sphinx with myst-nb, because myst-nb reads the percent-format sources through jupytext, executes
them in a real Jupyter kernel and keeps every output (figures included), and because
sphinx-mathjax-offline ships MathJax with the build's own dependencies: the pages typeset their
formulas with no network. (mkdocs-jupyter was the other candidate; its math goes through a CDN
unless configured page by page.) Needs the docs extra: pip install -e '.[docs]'.
"""

from __future__ import annotations

import argparse
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
    """The unexecuted notebook of a percent-format tutorial, with a Python 3 kernel named."""
    import jupytext
    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.pop("jupytext", None)  # the .ipynb stands alone; the .py is the source
    return nb


def write_notebooks() -> list[Path]:
    """tutorials/NN_*.ipynb from tutorials/NN_*.py (the .py files are the single source)."""
    import jupytext
    written = []
    for source in tutorial_sources():
        path = source.with_suffix(".ipynb")
        jupytext.write(notebook_of(source), path, fmt="ipynb")
        written.append(path)
    return written


def stage(target: Path) -> None:
    """The Sphinx source folder: conf, introduction, tutorials, notation, exercises, notebooks."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("conf.py", "index.md"):
        shutil.copy(DOCS / name, target / name)
    shutil.copytree(DOCS / "_templates", target / "_templates")
    for source in tutorial_sources():
        shutil.copy(source, target / source.name)
    shutil.copy(TUTORIALS / "NOTATION.md", target / "NOTATION.md")
    exercises = (TUTORIALS / "exercises" / "README.md").read_text()
    (target / "exercises.md").write_text(exercises)
    downloads = target / "_downloads_extra"
    downloads.mkdir()
    for source in tutorial_sources():  # offered on each page: the notebook to run yourself
        shutil.copy(source.with_suffix(".ipynb"), downloads / source.with_suffix(".ipynb").name)


def build(full: bool = False) -> Path:
    src, out = BUILD / "src", BUILD / "html"
    stage(src)
    env = dict(os.environ)
    if not full:
        env["MINIVAE_QUICK"] = "1"
    env["MINIVAE_FIGURES"] = tempfile.mkdtemp(prefix="minivae-book-figures-")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going",
                           "-E", str(src), str(out)], env=env)
    if proc.returncode != 0:
        raise SystemExit(f"the book did not build (sphinx exit code {proc.returncode})")
    print(f"built {out / 'index.html'} in {time.perf_counter() - t0:.0f}s "
          f"({'full' if full else 'quick'} mode)")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="book", choices=["book", "notebooks"])
    parser.add_argument("--full", action="store_true", help="run the tutorials at full size")
    args = parser.parse_args(argv)
    if args.what == "notebooks":
        for path in write_notebooks():
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    build(args.full)
    return 0


if __name__ == "__main__":
    sys.exit(main())
