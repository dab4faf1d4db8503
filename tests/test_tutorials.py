"""Every tutorial runs headless in its quick mode and asserts the numbers its text claims."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("[0-9][0-9]_*.py"))


def test_there_are_eight_tutorials():
    assert len(TUTORIALS) == 8


QUICK_TIMEOUT = 300  # seconds for one tutorial's quick run (they take 4-25 s on a quiet 2-core machine)


class QuickRuns:
    """The tutorials' quick runs, each in its own Python process, as many at a time as there are
    usable cores: most of a run is one core's Python and small matrix products, so two at once take
    about half the time of one after the other. A tutorial in ``ALONE`` times training steps at one
    thread and at every core (tutorial 8), so it runs with no other tutorial beside it. Each run's
    output goes to files (a pipe nobody reads would fill and stop the run); ``result`` waits for one."""

    ALONE = ("08",)

    def __init__(self, paths, root: Path, workers: int):
        alone = [p for p in paths if p.name[:2] in self.ALONE]
        # the longest first, so that the others fill the second core meanwhile
        self.queue = sorted((p for p in paths if p not in alone), key=lambda p: p.name[:2] != "04") + alone
        self.root, self.workers = root, workers
        self.running, self.done = {}, {}

    def _start(self, path):
        folder = self.root / path.stem
        (folder / "figures").mkdir(parents=True)
        env = {**os.environ, "MINIVAE_QUICK": "1", "MINIVAE_FIGURES": str(folder / "figures"),
               "MPLBACKEND": "Agg"}
        out = open(folder / "output.txt", "wb")
        proc = subprocess.Popen([sys.executable, str(path)], cwd=path.parents[1], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        self.running[path] = (proc, out, time.monotonic())

    def _fill(self):
        while self.queue and len(self.running) < self.workers:
            if self.queue[0].name[:2] in self.ALONE and self.running:
                return
            self._start(self.queue.pop(0))

    def _reap(self):
        for path, (proc, out, started) in list(self.running.items()):
            timed_out = False
            if proc.poll() is None:
                if time.monotonic() - started <= QUICK_TIMEOUT:
                    continue
                proc.kill()
                timed_out = True
            proc.wait()
            out.close()
            folder = self.root / path.stem
            text = (folder / "output.txt").read_text(errors="replace")
            self.done[path] = (None if timed_out else proc.returncode, text, folder / "figures")
            del self.running[path]

    def result(self, path):
        """``(exit status or None when it ran past QUICK_TIMEOUT, its output, its figures' folder)``."""
        if path not in self.done and path not in self.running and path not in self.queue:
            self.queue.insert(0, path)
        while path not in self.done:
            self._fill()
            time.sleep(0.05)
            self._reap()
        self._fill()  # the next ones start while this test's assertions run
        return self.done[path]

    def stop(self):
        for proc, out, _ in self.running.values():
            proc.kill()
            proc.wait()
            out.close()


@pytest.fixture(scope="module")
def quick_runs(request, tmp_path_factory):
    """The quick runs of the tutorials this session selected (``-k 04`` runs one), started together."""
    from minivae.threads import usable_cores
    selected = [item.callspec.params["path"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_tutorial_runs_in_quick_mode"
                and item.module.__name__ == __name__]
    runs = QuickRuns(selected, tmp_path_factory.mktemp("quick"), min(2, usable_cores()))
    yield runs
    runs.stop()


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_quick_mode(path, quick_runs):
    returncode, output, figures = quick_runs.result(path)
    assert returncode is not None, f"{path.name} ran past {QUICK_TIMEOUT} s: " + output[-3000:]
    assert returncode == 0, output[-6000:]
    assert list(figures.rglob("*.png")), "the tutorial wrote no figure"


def test_quick_runs_run_two_at_a_time_and_tutorial_8_alone(tmp_path):
    """The scheduler itself, on stand-in scripts that record when they start and end: never more
    runs at once than workers, the ALONE one with nobody beside it, and a failing run's status kept."""
    log = tmp_path / "log.txt"
    scripts = []
    for name in ("01_a", "04_b", "05_c", "08_d"):
        script = tmp_path / "tutorials" / f"{name}.py"
        script.parent.mkdir(exist_ok=True)
        script.write_text(f"import time, sys\nopen({str(log)!r}, 'a').write('start {name[:2]} %f\\n' % time.time())\n"
                          f"time.sleep(1.0)\nopen({str(log)!r}, 'a').write('end {name[:2]} %f\\n' % time.time())\n"
                          f"sys.exit({int(name == '05_c')})\n")
        scripts.append(script)
    runs = QuickRuns(scripts, tmp_path / "runs", workers=2)
    assert runs.queue[0].name.startswith("04") and runs.queue[-1].name.startswith("08")
    results = {p.name[:2]: runs.result(p)[0] for p in scripts}
    assert results == {"01": 0, "04": 0, "05": 1, "08": 0}
    events = sorted((float(t), kind, n) for kind, n, t in (line.split() for line in log.read_text().splitlines()))
    at_once, most, eight_with = set(), 0, set()
    for _, kind, n in events:
        at_once = at_once | {n} if kind == "start" else at_once - {n}
        most = max(most, len(at_once))
        if "08" in at_once:
            eight_with |= at_once - {"08"}
    assert most == 2 and not eight_with


def test_a_quick_run_past_its_time_is_killed_and_fails(tmp_path, monkeypatch):
    """A hang still fails: the run is killed at QUICK_TIMEOUT and its status is None, with its output."""
    monkeypatch.setattr(sys.modules[__name__], "QUICK_TIMEOUT", 1.0)
    script = tmp_path / "tutorials" / "03_hangs.py"
    script.parent.mkdir()
    script.write_text("import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    t0 = time.monotonic()
    returncode, output, _ = QuickRuns([script], tmp_path / "runs", workers=2).result(script)
    assert returncode is None and "started" in output and time.monotonic() - t0 < 30


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_is_in_percent_format(path):
    text = path.read_text()
    assert text.startswith("# %% [markdown]") and "\n# %%\n" in text
    assert "import minivae" in text or "from minivae" in text


def test_the_lesson_code_carries_no_test_switch():
    """A learner reads the run they get: no tutorial's code branches on quick mode or names its
    sizes; quick mode's sizes are looked up by name (tutorial.QUICK_SIZES), and a name that the
    tutorial and the table do not share is an error, not a silent full-size test run."""
    import re

    from minivae.tutorial import QUICK_SIZES, Tutorial
    switch = re.compile(r"QUICK|\.quick\b|MINIVAE_QUICK")
    hits = [f"{p.name}:{i}: {line.strip()}" for p in TUTORIALS
            for i, line in enumerate(p.read_text().splitlines(), 1) if switch.search(line)]
    assert not hits, hits
    for number, quick in QUICK_SIZES.items():
        path = next(p for p in TUTORIALS if p.name.startswith(number))
        call = re.search(r"tut\.sizes\(([^)]*(?:\([^)]*\)[^)]*)*)\)", path.read_text())
        assert call, path.name
        names = set(re.findall(r"(\w+)=", call.group(1)))
        assert names == set(quick), (path.name, names, set(quick))
    t = Tutorial("04", quick=True, figures=Path("."))
    assert t.sizes(samples=1_000_000, epochs=60).samples == QUICK_SIZES["04"]["samples"]
    assert Tutorial("04", quick=False, figures=Path(".")).sizes(samples=10, epochs=6).samples == 10
    with pytest.raises(KeyError, match="QUICK_SIZES"):
        t.sizes(samples=1_000_000, epoch=60)       # misspelt: would run 60 epochs in the tests


def test_nothing_a_user_sees_names_the_projects_background_documents():
    """Tutorials, notebooks, exercises, the book's pages, README and the package quote a question or a
    slip itself, never a background document by its number or a path outside the repository."""
    import re
    root = Path(__file__).resolve().parents[1]
    named = re.compile(r"\bseeds?\s*#?\s*0\d\d\b|seeds/|\.\./shared", re.IGNORECASE)
    seen = [p for pattern in ("README.md", "tutorials/**/*.py", "tutorials/**/*.md", "tutorials/*.ipynb",
                              "docs/*.md", "docs/*.py", "docs/_static/*", "minivae/**/*.py", "minivae/**/*.js")
            for p in root.glob(pattern)]
    assert len(seen) > 40
    hits = [f"{p.relative_to(root)}: {m.group(0)!r}" for p in seen for m in named.finditer(p.read_text())]
    assert not hits, hits


# --- the notebooks beside the sources, and copying them into a learner's folder --------------------

QUICK_TEXT = ("QUICK MODE", "[full run only]", "does NOT hold")


def test_the_committed_notebooks_are_the_executed_sources():
    """The .py files are the single source; each .ipynb is that source run by default in a kernel
    (`python docs/build.py notebooks`), with its outputs, never in quick mode."""
    import hashlib
    import json
    jupytext = pytest.importorskip("jupytext", reason="the docs extra is not installed")
    sys.path.insert(0, str(TUTORIALS[0].parents[1] / "docs"))
    try:
        import build
    finally:
        sys.path.pop(0)
    for path in TUTORIALS:
        source = jupytext.read(path)
        committed = json.loads(path.with_suffix(".ipynb").read_text())
        stale = f"{path.with_suffix('.ipynb').name} is out of date: run python docs/build.py notebooks"
        assert committed["metadata"].get("minivae", {}).get("source_sha256") == \
            hashlib.sha256(path.read_bytes()).hexdigest(), stale
        if "widgets." in path.read_text():  # its live figure inlines the widgets' JavaScript
            assert committed["metadata"]["minivae"].get("widgets_sha256") == build.widgets_sha256(path), \
                f"{stale} (the widgets' JavaScript changed)"
        assert [(c["cell_type"], "".join(c["source"])) for c in committed["cells"]] == \
            [(c.cell_type, c.source) for c in source.cells], stale
        assert committed["metadata"]["kernelspec"]["name"] == "python3"
        code = [c for c in committed["cells"] if c["cell_type"] == "code"]
        assert all(c["execution_count"] for c in code), f"{path.stem}: a cell was not executed"
        outputs = [o for c in code for o in c["outputs"]]
        assert not [o for o in outputs if o["output_type"] == "error"]
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.stem}: no figure shipped"
        text = json.dumps(outputs)
        assert not [t for t in QUICK_TEXT if t in text], f"{path.stem} was executed in quick mode"
        # a live figure is saved as its inlined page and static figure; the kernel's widget view is not
        assert "widget-view+json" not in text and "widgets" not in committed["metadata"]
        assert ("minivae-live" in text) == ("widgets." in path.read_text()), path.stem


def test_tutorials_command_copies_and_never_overwrites(tmp_path, capsys):
    from minivae.__main__ import main
    target = tmp_path / "learn"
    assert main(["tutorials", str(target)]) == 0
    out = capsys.readouterr().out
    assert "jupyter lab 01_model_and_elbo.ipynb" in out and "python -m minivae.exercises check all" in out
    assert len(list(target.glob("[0-9][0-9]_*.ipynb"))) == 8 and len(list(target.glob("[0-9][0-9]_*.py"))) == 8
    assert (target / "NOTATION.md").is_file() and len(list((target / "exercises").glob("*.py"))) == 14
    mine = target / "exercises" / "linear.py"
    mine.write_text("# my own work\n")
    assert main(["tutorials", str(target)]) == 2
    err = capsys.readouterr().err
    assert "nothing was copied" in err and "--force" in err
    assert mine.read_text() == "# my own work\n"
    assert main(["tutorials", str(target), "--force"]) == 0
    assert "START OF YOUR CODE" in mine.read_text()


@pytest.mark.slow
def test_tutorials_command_after_a_non_editable_install(tmp_path):
    """`pip install .` (not editable) into a folder, run from elsewhere: the tutorials and the
    exercises come from the installed package, and the grader grades the learner's copy."""
    root = Path(__file__).resolve().parents[1]
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(root)],
                   check=True, timeout=600)
    assert (site / "minivae" / "tutorials_data" / "01_model_and_elbo.ipynb").is_file()
    env = {**os.environ, "PYTHONPATH": str(site)}
    work = tmp_path / "elsewhere"
    work.mkdir()
    run = lambda *args, cwd=work: subprocess.run([sys.executable, *args], cwd=cwd, env=env,  # noqa: E731
                                                 capture_output=True, text=True, timeout=300)
    where = run("-c", "import minivae, minivae.tutorial as t; print(minivae.__file__); print(t.tutorials_source())")
    assert where.stdout.split()[0].startswith(str(site)), where.stdout + where.stderr
    assert where.stdout.split()[1].startswith(str(site))
    made = run("-m", "minivae", "tutorials", "learn")
    assert made.returncode == 0, made.stderr
    assert len(list((work / "learn").glob("*.ipynb"))) == 8
    graded = run("-m", "minivae.exercises", "check", "linear", cwd=work / "learn")
    assert graded.returncode == 1 and f"grading the files in {work / 'learn'}" in graded.stdout


_EXECUTE = """
import sys, nbformat
from pathlib import Path
from nbclient import NotebookClient
failed = []
for nb_path in sorted(Path(sys.argv[1]).glob("*.ipynb")):
    nb = nbformat.read(nb_path, as_version=4)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(nb_path.parent)}}).execute()
        print("ok", nb_path.name, flush=True)
    except Exception as e:
        failed.append(nb_path.name)
        print("FAILED", nb_path.name, type(e).__name__, str(e)[-300:], flush=True)
sys.exit(1 if failed else 0)
"""


@pytest.mark.slow
def test_the_learner_install_runs_every_notebook(tmp_path):
    """The README's learner lines in a fresh virtual environment: `pip install '.[learn]'` (no book
    tools), the tutorials copied outside the clone, and all eight notebooks executed there in a
    kernel of that environment (quick mode, to keep CI short)."""
    root = Path(__file__).resolve().parents[1]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", f"{root}[learn]"], check=True, timeout=900)
    for tool in ("sphinx", "playwright", "myst_nb"):  # the learner extra brings nothing for the book
        assert subprocess.run([py, "-c", f"import {tool}"], capture_output=True).returncode != 0, tool
    work = tmp_path / "my-vae"
    made = subprocess.run([py, "-m", "minivae", "tutorials", str(work)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert made.returncode == 0, made.stderr
    env = {**os.environ, "MINIVAE_QUICK": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    env.pop("MINIVAE_FIGURES", None)
    ran = subprocess.run([py, "-c", _EXECUTE, str(work)], capture_output=True, text=True, cwd=work,
                         env=env, timeout=1500)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-2000:]
    assert ran.stdout.count("ok ") == 8
    _jupyterlab_runs_the_live_figure(py, work)


_LEARNERS_CELL = """\
from minivae import VAEConfig, data, train, widgets
digits = data.load_digits()
cfg = VAEConfig(x_dim=64, hidden=(32,), z_dim=2)
run = train.train(cfg, train.TrainConfig(epochs=2, batch_size=64, seed=0), "live-run", data=digits,
                  overwrite=True, progress=False, log=lambda *a: None)
widgets.latent_explorer(widgets.latent_explorer_data(run["params"], cfg, digits.x_test, digits.y_test,
                                                     digits.class_names, digits.image_shape))
"""


def _jupyterlab_runs_the_live_figure(py, work):
    """In the learner's JupyterLab (the learn extra), a cell that trains a 2-D model and shows the
    latent explorer: the anywidget front end draws it, and decodes what minivae decodes."""
    import socket
    import time
    import urllib.request

    import nbformat
    import numpy as np
    playwright = pytest.importorskip("playwright.sync_api")
    import minivae
    from minivae.checkpoint import load_checkpoint
    chromium = "/usr/bin/chromium"
    if not Path(chromium).is_file():
        pytest.skip("Debian's chromium is not installed")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(_LEARNERS_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, work / "live.ipynb")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("MINIVAE_QUICK", "MINIVAE_FIGURES")}
    log = open(work / "jupyterlab.log", "w")
    server = subprocess.Popen([py, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                               "--allow-root", "--IdentityProvider.token=", f"--ServerApp.root_dir={work}",
                               "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None"],
                              cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            assert server.poll() is None, (work / "jupyterlab.log").read_text()[-2000:]
            try:
                urllib.request.urlopen(url + "/api", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start: " + (work / "jupyterlab.log").read_text()[-2000:])
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url + "/lab/tree/live.ipynb", wait_until="load")
            page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook')",
                                   timeout=120_000)
            page.wait_for_function("() => { const s = window.jupyterapp.shell.currentWidget?.sessionContext;"
                                   " return s?.session?.kernel?.status === 'idle'; }", timeout=120_000)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_selector(".minivae-latent-explorer canvas.minivae-map", timeout=180_000)
            z = [0.4, -0.3]
            got = np.asarray(page.evaluate(f"() => document.querySelector('.minivae-latent-explorer').minivae.decode({z})"))
            if os.environ.get("MINIVAE_SCREENSHOTS"):
                page.screenshot(path=str(Path(os.environ["MINIVAE_SCREENSHOTS"]) / "jupyterlab-live.png"))
            browser.close()
        params, cfg, _, _ = load_checkpoint(work / "live-run")
        want = minivae.likelihood_mean(minivae.decode(params, np.asarray([z], dtype=np.float32), cfg), cfg)[0]
        assert float(np.max(np.abs(got - want))) < 1e-5
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_figure_text_is_legible_at_the_books_column_width():
    """A wide figure shrinks to the column (650 px): Tutorial.save raises text that would show
    below 9 px, and leaves larger text alone."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minivae.tutorial import LEGIBLE_PX, legible, smallest_text_px
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax in axes:
        ax.plot([0, 1], [0, 1], label="a curve")
        ax.legend(fontsize=7)
        ax.set_title("a title", fontsize=20)
    assert smallest_text_px(fig) < 5
    legible(fig)
    assert smallest_text_px(fig) >= LEGIBLE_PX - 1e-9
    assert axes[0].title.get_fontsize() == 20  # larger text is left alone
    plt.close(fig)


def test_the_try_this_commands_run_as_the_tutorials_say(tmp_path, capsys, monkeypatch):
    """The command lines the tutorials' "Try this" prompts give a learner (5.3, 7.1, 7.2, 8.1), on
    small settings: each runs and prints what the prompt asks the learner to read."""
    from minivae.__main__ import main
    small = ["--hidden", "16", "--batch-size", "128", "--epochs", "2", "--no-progress"]
    binary, gray = tmp_path / "binary", tmp_path / "gray"
    assert main(["train", "--binarize", "dynamic", "--out", str(binary), *small]) == 0         # 5.3
    assert main(["train", "--binarize", "none", "--out", str(gray), *small]) == 0              # 5.3, 7.2
    capsys.readouterr()
    assert main(["evaluate", str(binary), "--k", "20", "--limit", "50"]) == 0                  # 5.3, 7.1
    out = capsys.readouterr().out
    assert "log p(x) >= L_20" in out and "active units" in out
    assert main(["evaluate", str(gray), "--k", "20", "--limit", "50"]) == 0                    # 7.2
    assert "not bounds on a log-likelihood" in capsys.readouterr().out
    import minivae.doctor as D
    monkeypatch.setattr(D, "SPEED_ROWS", 1000)  # the command, not the timings, is under test
    monkeypatch.setattr(D, "STEP_WARMUP", 1)
    monkeypatch.setattr(D, "STEP_SAMPLE", 3)
    assert main(["doctor", "--backend", "strict", "--no-tests"]) == 0                          # 8.1
    assert "verdict" in capsys.readouterr().out
