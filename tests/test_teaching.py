"""The teacher's kit: a class graded into Gradescope's format and a grade sheet, the autograder zip
run in a folder laid out like Gradescope's /autograder, and the worked solutions."""

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from minivae.exercises import REGISTRY, main
from minivae.exercises import batch
from minivae.exercises.batch import SubmissionError, read_points, unpack

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "tutorials" / "solutions"
STUBS = ROOT / "tutorials" / "exercises"
LIMIT = 3  # seconds an answer may run in these classes

# --- Gradescope's results.json, as its autograder specification describes it -------------------------

VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}
TOP = {"score": (int, float), "execution_time": (int, float), "output": str, "output_format": str,
       "test_output_format": str, "test_name_format": str, "visibility": str, "stdout_visibility": str,
       "extra_data": dict, "tests": list, "leaderboard": list}
TEST = {"score": (int, float), "max_score": (int, float), "status": str, "name": str, "name_format": str,
        "number": str, "output": str, "output_format": str, "tags": list, "visibility": str, "extra_data": dict}


def schema_problems(results: dict) -> list[str]:
    """What in ``results`` Gradescope's specification does not allow (empty when nothing)."""
    problems = [f"unknown key {k!r}" for k in results if k not in TOP]
    problems += [f"{k} is {type(v).__name__}" for k, v in results.items() if k in TOP and not isinstance(v, TOP[k])
                 or isinstance(v, bool)]
    if "score" not in results and not all("score" in t for t in results.get("tests", [])):
        problems.append("no score at the top and not every test has one")
    for key in ("visibility", "stdout_visibility"):
        if key in results and results[key] not in VISIBILITY:
            problems.append(f"{key} {results[key]!r}")
    for i, t in enumerate(results.get("tests", [])):
        problems += [f"test {i}: unknown key {k!r}" for k in t if k not in TEST]
        problems += [f"test {i}: {k} is {type(v).__name__}" for k, v in t.items()
                     if k in TEST and (not isinstance(v, TEST[k]) or isinstance(v, bool))]
        if t.get("status") not in (None, "passed", "failed"):
            problems.append(f"test {i}: status {t['status']!r}")
        if t.get("visibility", "visible") not in VISIBILITY:
            problems.append(f"test {i}: visibility {t['visibility']!r}")
    return problems


def test_the_schema_check_can_fail():
    good = {"score": 1.0, "tests": [{"name": "a", "score": 1.0, "max_score": 1.0, "status": "passed"}]}
    assert schema_problems(good) == []
    assert schema_problems({**good, "grade": 3}) == ["unknown key 'grade'"]
    assert schema_problems({"tests": [{"name": "a", "status": "ok", "visibility": "public"}]}) == [
        "no score at the top and not every test has one", "test 0: status 'ok'", "test 0: visibility 'public'"]
    assert schema_problems({"score": "1", "tests": []}) == ["score is str"]


# --- a class --------------------------------------------------------------------------------------------

def _linear(body: str) -> str:
    return f"def linear_backward(dy, cache):\n    x, W = cache\n    {body}\n"


CLASS = {  # student -> {exercise: source}, on top of the worked solutions (None: the untouched stubs)
    "ada_right": {},
    "ben_wrong": None,
    "cy_loop": {"tanh": "def tanh_backward(dh, h):\n    while True:\n        pass\n"},
    "di_exit": {"linear": _linear("import sys\n    sys.exit(0)")},
    "ed_patch": {"linear": "import minivae.exercises.backward as b\nb.rel_error = lambda a, n: 0.0\n"
                           "from minivae.exercises.result import GradeResult\n"
                           "GradeResult.passed = property(lambda self: True)\n" + _linear("return 2 * dy @ W.T, x.T @ dy, dy.sum(0)")},
    "flo_library": {"linear": "from minivae.core.layers import linear_backward  # the library's own\n"},
}
FLAG = "linear: calls the library's implementation: minivae.core.layers.linear_backward"


def make_class(folder: Path, students=CLASS) -> Path:
    for student, changes in students.items():
        own = folder / student
        shutil.copytree(SOLUTIONS if changes is not None else STUBS, own,
                        ignore=shutil.ignore_patterns("__pycache__", "*.md"))
        for name, source in (changes or {}).items():
            (own / f"{name}.py").write_text(source)
    return folder


def expected_scores(points: dict) -> dict:
    """Each student's passed exercises in CLASS."""
    failing = {"ada_right": set(), "ben_wrong": set(points), "cy_loop": {"tanh"}, "di_exit": {"linear"},
               "ed_patch": {"linear"}, "flo_library": set()}
    return {s: {n: (0.0 if n in failing[s] else points[n]) for n in points} for s in CLASS}


def check_results(out: Path, points: dict) -> None:
    """Every results.json against the schema and the expected scores; grades.csv the same."""
    expected = expected_scores(points)
    assert sorted(p.name for p in out.iterdir()) == sorted([*CLASS, "grades.csv"])
    for student, scores in expected.items():
        results = json.loads((out / student / "results.json").read_text())
        assert schema_problems(results) == [], (student, schema_problems(results))
        got = {t["name"]: t["score"] for t in results["tests"]}
        assert got == scores, (student, got)
        assert results["score"] == sum(scores.values())
        assert all(t["max_score"] == points[t["name"]] for t in results["tests"])
        assert all((t["status"] == "passed") == (t["score"] > 0 or points[t["name"]] == 0) for t in results["tests"])
        assert all(f"({student}/{t['name']}.py)" in t["output"] for t in results["tests"]), student
    by_name = {t["name"]: t for t in json.loads((out / "cy_loop" / "results.json").read_text())["tests"]}
    if "tanh" in by_name:
        assert f"timed out after {LIMIT:g} s" in by_name["tanh"]["output"]
    linear = {s: {t["name"]: t for t in json.loads((out / s / "results.json").read_text())["tests"]}.get("linear")
              for s in CLASS}
    if linear["di_exit"]:
        assert "ended the process (sys.exit" in linear["di_exit"]["output"]
        assert "a factor 2 too big" in linear["ed_patch"]["output"]
        assert linear["flo_library"]["extra_data"] == {"flags": [FLAG[len("linear: "):]]}
    rows = list(csv.DictReader((out / "grades.csv").read_text().splitlines()))
    assert [r["student"] for r in rows] == sorted(CLASS)
    for r in rows:
        assert {n: float(r[n]) for n in points} == expected[r["student"]]
        assert float(r["total"]) == sum(expected[r["student"]].values())
        assert float(r["max_total"]) == sum(points.values())
        assert r["flags"] == (FLAG if r["student"] == "flo_library" and "linear" in points else "")


def test_a_class_is_graded_from_a_zip_with_a_points_file(tmp_path, capsys):
    """Three exercises of the assignment, worth 2, 1 and 3; the class as a zip of its folder."""
    make_class(tmp_path / "class")
    export = tmp_path / "export.zip"
    with zipfile.ZipFile(export, "w") as z:
        for f in sorted((tmp_path / "class").rglob("*.py")):
            z.write(f, Path("class") / f.relative_to(tmp_path / "class"))
    points = {"linear": 2, "tanh": 1, "iwae": 3}
    (tmp_path / "points.json").write_text(json.dumps(points))
    started = time.perf_counter()
    code = main(["grade", str(export), "--out", str(tmp_path / "results"), "--points", str(tmp_path / "points.json"),
                 "--timeout", str(LIMIT), "--no-progress"])
    seconds = time.perf_counter() - started
    out = capsys.readouterr().out
    assert code == 0, out
    check_results(tmp_path / "results", {k: float(v) for k, v in points.items()})
    assert "6 student(s) graded" in out and "flo_library" in out and FLAG in out
    # the loop costs its own timeout, not one per student: under the time of two loops
    assert seconds < 2 * LIMIT + 15, seconds


@pytest.mark.slow
def test_a_class_of_six_is_graded_on_every_exercise(tmp_path, capsys):
    make_class(tmp_path / "class")
    started = time.perf_counter()
    assert main(["grade", str(tmp_path / "class"), "--out", str(tmp_path / "r"), "--timeout", str(LIMIT),
                 "--no-progress"]) == 0
    seconds = time.perf_counter() - started
    check_results(tmp_path / "r", {n: 1.0 for n in REGISTRY})
    print(f"6 students x {len(REGISTRY)} exercises graded in {seconds:.1f} s")
    assert seconds < LIMIT + 60, seconds


def test_grading_refuses_what_it_cannot_use_in_one_line_and_changes_nothing(tmp_path, capsys):
    make_class(tmp_path / "class", {"ada_right": {}})
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "grades.csv").write_text("earlier grades\n")
    cases = [
        (["--out", str(taken)], "already holds files (earlier results?); give --out a new folder"),
        (["--out", str(tmp_path / "r1"), "--points", str(tmp_path / "missing.json")], "cannot read the points file"),
    ]
    for extra, message in cases:
        assert main(["grade", str(tmp_path / "class"), *extra, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert (taken / "grades.csv").read_text() == "earlier grades\n"
    assert main(["grade", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2")]) == 2
    assert "is neither a folder of student folders nor a zip" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["grade", str(empty), "--out", str(tmp_path / "r3")]) == 2
    assert "holds no student folders" in capsys.readouterr().err
    for text, message in [("[1]", "must be a JSON object"), ('{"linar": 1}', "'linar', which is not an exercise"),
                          ('{"linear": -1}', "points are numbers >= 0"), ('{"linear": NaN}', "points are numbers"),
                          ("{", "cannot read the points file")]:
        (tmp_path / "p.json").write_text(text)
        with pytest.raises(SubmissionError, match=message):
            read_points(tmp_path / "p.json", REGISTRY)


def test_an_export_zip_never_writes_outside_its_folder(tmp_path, monkeypatch):
    archive = tmp_path / "hostile.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("alice/linear.py", "x = 1\n")
        z.writestr("../escaped.py", "x = 1\n")
        z.writestr("/abs/escaped.py", "x = 1\n")
        z.writestr("alice/../../escaped2.py", "x = 1\n")
        link = zipfile.ZipInfo("alice/tanh.py")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(link, "/etc/passwd")
    into = tmp_path / "into"
    into.mkdir()
    unpack(archive, into)
    assert sorted(p.relative_to(into).as_posix() for p in into.rglob("*")) == ["alice", "alice/linear.py"]
    assert not (tmp_path / "escaped.py").exists() and not (tmp_path / "escaped2.py").exists()
    monkeypatch.setattr(batch, "MAX_ZIP_BYTES", 1 << 20)  # the real limit (1 GB) takes seconds to compress
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a/linear.py", b"\0" * (batch.MAX_ZIP_BYTES // 2 + 1))
        z.writestr("b/linear.py", b"\0" * (batch.MAX_ZIP_BYTES // 2 + 1))
    with pytest.raises(SubmissionError, match="not a class's submissions"):
        unpack(bomb, into)
    assert sorted(p.name for p in into.iterdir()) == ["alice"]


# --- Gradescope's autograder ------------------------------------------------------------------------------

def _autograder_tree(tmp_path: Path, submission: Path, capsys, timeout=LIMIT) -> Path:
    """A folder laid out like Gradescope's /autograder: source/ (the zip's contents), submission/,
    run_autograder."""
    zip_path = tmp_path / "autograder.zip"
    assert main(["autograder", str(zip_path), "--timeout", str(timeout)]) == 0
    assert "Upload it as a Gradescope programming assignment's autograder" in capsys.readouterr().out
    root = tmp_path / "autograder"
    with zipfile.ZipFile(zip_path) as z:
        names = z.namelist()
        assert {"setup.sh", "run_autograder", "points.json"} <= set(names)
        assert any(n.startswith("minivae-") and n.endswith("-py3-none-any.whl") for n in names)
        for n in ("setup.sh", "run_autograder"):
            assert z.getinfo(n).external_attr >> 16 & 0o111, n
        z.extractall(root / "source")
    shutil.copytree(submission, root / "submission")
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    return root


def test_run_autograder_grades_a_submission_in_an_autograder_tree(tmp_path, capsys):
    make_class(tmp_path / "class", {"cy_loop": CLASS["cy_loop"]})
    root = _autograder_tree(tmp_path, tmp_path / "class" / "cy_loop", capsys)
    venv = root / "minivae-venv" / "bin"
    venv.mkdir(parents=True)  # setup.sh's virtual environment: here, this Python with minivae
    (venv / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (venv / "python").chmod(0o755)
    done = subprocess.run(["bash", str(root / "run_autograder"), str(root)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    assert schema_problems(results) == []
    assert results["score"] == len(REGISTRY) - 1 and results["output"] == f"{len(REGISTRY) - 1} of {len(REGISTRY)} exercise(s) passed"
    tanh = next(t for t in results["tests"] if t["name"] == "tanh")
    assert tanh["score"] == 0 and f"timed out after {LIMIT:g} s" in tanh["output"]


def test_the_bundled_wheel_holds_the_package_and_a_true_record(tmp_path):
    import base64
    import hashlib

    from minivae.exercises.autograder import build_wheel
    name, data = build_wheel()
    path = tmp_path / name
    path.write_bytes(data)
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/RECORD"))
        record = [line.split(",") for line in z.read(f"{info}/RECORD").decode().splitlines()]
        assert {r[0] for r in record} == names
        for file, digest, size in record:
            if digest:
                body = z.read(file)
                assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
                assert int(size) == len(body)
    assert {"minivae/__init__.py", "minivae/exercises/child.py", "minivae/tutorials_data/exercises/find_the_slip.py",
            "minivae/tutorials_data/solutions/linear.py"} <= names
    assert not any("__pycache__" in n for n in names)


@pytest.mark.slow
def test_setup_sh_installs_the_bundled_wheel_and_grades_there(tmp_path, capsys):
    """setup.sh as Gradescope runs it (root given, Python and pip present): a fresh virtual
    environment with NumPy from the package index and the wheel from the zip; then run_autograder."""
    make_class(tmp_path / "class", {"flo_library": CLASS["flo_library"]})
    root = _autograder_tree(tmp_path, tmp_path / "class" / "flo_library", capsys)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    setup = subprocess.run(["bash", str(root / "source" / "setup.sh"), str(root)], capture_output=True, text=True,
                           timeout=600, env=env)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    done = subprocess.run(["bash", str(root / "run_autograder"), str(root)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    assert schema_problems(results) == [] and results["score"] == len(REGISTRY), results["output"]
    linear = next(t for t in results["tests"] if t["name"] == "linear")
    assert linear["extra_data"] == {"flags": [FLAG[len("linear: "):]]}
    where = subprocess.run([str(root / "minivae-venv" / "bin" / "python"), "-c", "import minivae; print(minivae.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert str(root / "minivae-venv") in where.stdout  # the wheel's copy, not this checkout


# --- the course page's commands and outputs, and the notebook tools ------------------------------------

PAGE = ROOT / "docs" / "teaching.md"


def page_block(first_line: str, fence: str = "python") -> str:
    """The code block of the course page that starts with ``first_line``."""
    import re
    for block in re.findall(rf"```{fence}\n(.*?)```", PAGE.read_text(), re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"no {fence} block starting {first_line!r} in {PAGE.name}")


def page_class(folder: Path) -> Path:
    """The page's example class: ada right, ben's tanh an endless loop, cy the untouched files, dee's
    linear the library's own (ada's files in a subfolder, as some students hand them in)."""
    week = ["linear", "tanh", "softplus", "vae"]
    for student in ("ada", "ben", "cy", "dee"):
        own = folder / student / ("exercises" if student == "ada" else "")
        shutil.copytree(STUBS, own, ignore=shutil.ignore_patterns("__pycache__", "*.md"))
        for name in week if student != "cy" else []:
            shutil.copy(SOLUTIONS / f"{name}.py", own / f"{name}.py")
    (folder / "ben" / "tanh.py").write_text("def tanh_backward(dh, h):\n    while True:   # a loop that never ends\n"
                                            "        pass\n")
    (folder / "dee" / "linear.py").write_text("from minivae.core.layers import linear_backward  # the library's own\n")
    return folder


@pytest.mark.slow
def test_the_course_page_shows_what_the_commands_print(tmp_path):
    """Each output on the page, against the same commands run on the page's class (the seconds and
    the teacher's home folder aside)."""
    import re
    page = PAGE.read_text()
    page_class(tmp_path / "submissions")
    (tmp_path / "week1.json").write_text('{"linear": 2, "tanh": 1, "softplus": 1, "vae": 4}\n')
    assert page_block("$ cat week1.json", "console").splitlines()[1] == (tmp_path / "week1.json").read_text().strip()

    def run(command):
        done = subprocess.run([sys.executable, *command.split()[1:]], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    copied = run("python -m minivae tutorials course --solutions")
    shown = page_block("$ python -m minivae tutorials course", "console").splitlines()[1]
    assert copied.splitlines()[0] == shown.replace("/home/teacher/course", str(tmp_path / "course"))
    shown = page_block("$ python -m minivae.exercises grade", "console")
    command, *lines = shown.strip().splitlines()
    printed = run(command[2:]).strip().splitlines()
    assert printed[:-1] == lines[:-1]
    seconds = re.sub(r"graded in [0-9.]+ s", "graded in S s", printed[-1])
    assert seconds == re.sub(r"graded in [0-9.]+ s", "graded in S s", lines[-1])
    assert float(re.search(r"graded in ([0-9.]+) s", printed[-1]).group(1)) < 10 + 30  # one loop, not four
    csv_shown = page_block("$ cat results/grades.csv", "console").strip().splitlines()[1:]
    assert (tmp_path / "results" / "grades.csv").read_text().strip().splitlines() == csv_shown
    ben = json.loads((tmp_path / "results" / "ben" / "results.json").read_text())
    tanh = json.loads(page_block('{\n "name": "tanh"', "json"))
    assert next(t for t in ben["tests"] if t["name"] == "tanh") == tanh
    command, shown = page_block("$ python -m minivae.exercises autograder", "console").strip().splitlines()
    printed = run(command[2:]).strip()
    assert re.sub(r"\([0-9.]+ MB\)", "", printed) == re.sub(r"\([0-9.]+ MB\)", "", shown)
    assert "Teaching with minivae" in page


def _tools_env() -> dict:
    """This environment's bin folder first on PATH: nbgrader runs alembic, and Otter its tools, from there."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _nbgrader_notebook(solution: str, test: str):
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}

    def meta(**kw):
        return {"nbgrader": {"schema_version": 3, "locked": False, "solution": False, "grade": False,
                             "task": False, **kw}}
    nb.cells = [nbformat.v4.new_markdown_cell("Write `linear_backward`.", metadata=meta(locked=True, grade_id="intro")),
                nbformat.v4.new_code_cell(solution, metadata=meta(solution=True, grade_id="linear_answer")),
                nbformat.v4.new_code_cell(test, metadata=meta(grade=True, locked=True, points=2,
                                                              grade_id="linear_test"))]
    return nb


@pytest.mark.slow
def test_nbgrader_autogrades_the_pages_cells_on_a_right_a_wrong_and_an_endless_answer(tmp_path):
    pytest.importorskip("nbgrader", reason="nbgrader is not installed: pip install -e '.[teach]'")
    import nbformat
    solution, test = page_block("# nbgrader solution cell"), page_block("# nbgrader test cell")
    course = tmp_path / "course"
    (course / "source" / "week1").mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.root = {str(course)!r}\nc.CourseDirectory.course_id = 'vae101'\n"
        "c.ExecutePreprocessor.timeout = 60\n")
    nbformat.write(_nbgrader_notebook(solution, test), course / "source" / "week1" / "linear.ipynb")

    def nbgrader(*args):
        done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, capture_output=True, text=True,
                              timeout=600, env=_tools_env())
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr
    nbgrader("generate_assignment", "week1", "--force")
    released = nbformat.read(course / "release" / "week1" / "linear.ipynb", as_version=4)
    assert "raise NotImplementedError()" in released.cells[1].source and "dy @ W.T" not in released.cells[1].source
    answers = {"right": "def linear_backward(dy, cache):\n    x, W = cache\n    return dy @ W.T, x.T @ dy, dy.sum(axis=0)\n",
               "wrong": "def linear_backward(dy, cache):\n    x, W = cache\n    return dy @ W, x.T @ dy, dy.sum(axis=0)\n",
               "endless": "def linear_backward(dy, cache):\n    while True:\n        pass\n"}
    for student, answer in answers.items():
        nb = nbformat.read(course / "release" / "week1" / "linear.ipynb", as_version=4)
        nb.cells[1].source = answer
        (course / "submitted" / student / "week1").mkdir(parents=True)
        nbformat.write(nb, course / "submitted" / student / "week1" / "linear.ipynb")
    started = time.perf_counter()
    nbgrader("autograde", "week1", "--create", "--force")
    seconds = time.perf_counter() - started
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {s: gb.find_submission("week1", s).score for s in answers}
    assert scores == {"right": 2.0, "wrong": 0.0, "endless": 0.0}, scores
    graded = nbformat.read(course / "autograded" / "endless" / "week1" / "linear.ipynb", as_version=4)
    assert "timed out after 20 s" in json.dumps(graded.cells[2].outputs)
    print(f"nbgrader autograde: 3 submissions in {seconds:.1f} s, scores {scores}")


@pytest.mark.slow
def test_otter_grader_runs_the_pages_test_file_on_a_right_and_an_endless_answer(tmp_path):
    pytest.importorskip("otter", reason="Otter-Grader is not installed: pip install -e '.[teach]'")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "linear.py").write_text(page_block("# tests/linear.py (Otter-Grader)"))

    def otter(*args):
        done = subprocess.run([sys.executable, "-m", "otter", *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300, env=_tools_env())
        assert done.returncode == 0, done.stdout + done.stderr
    otter("generate")
    answers = {"right": "def linear_backward(dy, cache):\n    x, W = cache\n    return dy @ W.T, x.T @ dy, dy.sum(axis=0)\n",
               "endless": "def linear_backward(dy, cache):\n    while True:\n        pass\n"}
    scores = {}
    for student, answer in answers.items():
        (tmp_path / f"{student}.py").write_text(answer)
        (tmp_path / student).mkdir()
        otter("run", "-a", "autograder.zip", f"{student}.py", "-o", student)
        results = json.loads((tmp_path / student / "results.json").read_text())
        scores[student] = next(t for t in results["tests"] if t["name"] == "linear")["score"]
    assert scores == {"right": 2.0, "endless": 0.0}, scores


def test_ctrl_c_stops_the_batch_and_keeps_every_student_graded_so_far(tmp_path):
    import signal
    make_class(tmp_path / "class", {"a_right": {}, "b_loop": CLASS["cy_loop"], "c_loop": CLASS["cy_loop"],
                                    "d_right": {}})
    out = tmp_path / "results"
    with subprocess.Popen([sys.executable, "-m", "minivae.exercises", "grade", str(tmp_path / "class"), "--out",
                           str(out), "--timeout", "3", "--workers", "1", "--no-progress"], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          # as a terminal starts it: a test run in the background (CI's jobs, `cmd &`)
                          # ignores SIGINT, and a Python started with it ignored keeps ignoring it
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) as proc:
        deadline = time.monotonic() + 120
        while not (out / "a_right" / "results.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        printed, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, printed + err
    assert "stopping: the answers being graded finish first (at most 3 s)" in printed
    assert "1 student(s) graded" in printed and "stopped early" in printed
    rows = list(csv.DictReader((out / "grades.csv").read_text().splitlines()))
    assert [r["student"] for r in rows] == ["a_right"] and rows[0]["total"] == str(len(REGISTRY))
    assert sorted(p.name for p in out.iterdir()) == ["a_right", "grades.csv"]   # no half-graded student
