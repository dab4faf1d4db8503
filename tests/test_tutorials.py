"""Every tutorial runs headless in its quick mode and asserts the numbers its text claims."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("[0-9][0-9]_*.py"))


def test_there_are_eight_tutorials():
    assert len(TUTORIALS) == 8


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_quick_mode(path, tmp_path):
    env = {**os.environ, "MINIVAE_QUICK": "1", "MINIVAE_FIGURES": str(tmp_path), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(path)], cwd=path.parents[1], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list(tmp_path.rglob("*.png")), "the tutorial wrote no figure"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_is_in_percent_format(path):
    text = path.read_text()
    assert text.startswith("# %% [markdown]") and "\n# %%\n" in text
    assert "import minivae" in text or "from minivae" in text
