"""Grading a class: one folder per student in, Gradescope's ``results.json`` and a grade sheet out.

``grade_class(submissions, out)`` finds each student's exercise files (``submissions`` is a folder
of student folders, or a zip of them as an LMS exports it), grades every assigned exercise of every
student with ``check_file`` (each answer in a time-limited child process, never in the grader), and
writes, as each student finishes:

- ``out/<student>/results.json``: Gradescope's autograder format, one test per exercise, the
  grader's report as its ``output``;

and at the end (also after Ctrl-C, for the students graded so far):

- ``out/grades.csv``: one row per student, one column per exercise, the total, and ``flags`` (an
  answer that calls the library's own implementation of its exercise is flagged, not hidden).

Students are graded side by side, one worker (with its own warm child process) per usable core. A
student's endless loop, exit or crash costs that student's exercise, never the batch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
import tempfile
import signal
import time
import zipfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from ..files import write_atomic
from .grading import check_file
from .result import GradeResult
from .outcome import DEFAULT_MEMORY_MB
from .sandbox import Sandbox

IGNORED = {"__MACOSX", "__pycache__"}
MAX_ZIP_BYTES = 1 << 30      # uncompressed: more than any class's Python files
MAX_ZIP_MEMBERS = 100_000
SEARCH_DEPTH = 3             # how deep in a student's folder the exercise files are looked for


class SubmissionError(ValueError):
    """The submissions, the points file or the results folder cannot be used (one line says why)."""


# --- what is graded, and for how much ---------------------------------------------------------------

def read_points(path, registry) -> dict:
    """The exercises of the assignment and their points: a JSON object ``{"linear": 2, ...}``.
    Exercises it leaves out are not part of the assignment."""
    try:
        points = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SubmissionError(f"cannot read the points file {path}: {e}; it must be a JSON object "
                              f"such as {{\"linear\": 2, \"vae\": 5}}") from None
    if not isinstance(points, dict) or not points:
        raise SubmissionError(f"the points file {path} must be a JSON object of exercise names and "
                              f"points, such as {{\"linear\": 2, \"vae\": 5}}")
    unknown = [k for k in points if k not in registry]
    if unknown:
        raise SubmissionError(f"the points file {path} names {', '.join(map(repr, unknown))}, which is not "
                              f"an exercise; the exercises are {', '.join(registry)}")
    bad = [k for k, v in points.items() if isinstance(v, bool) or not isinstance(v, (int, float))
           or not math.isfinite(v) or v < 0]
    if bad:
        raise SubmissionError(f"the points file {path} gives {bad[0]!r} {points[bad[0]]!r} points; "
                              f"points are numbers >= 0")
    return {name: float(points[name]) for name in registry if name in points}  # the suggested order


# --- where the students' files are ------------------------------------------------------------------

def _holds_exercises(folder: Path, names) -> bool:
    return any((folder / f"{n}.py").is_file() for n in names)


def exercise_folder(student: Path, names) -> Path:
    """The shallowest folder in ``student`` (itself, or up to ``SEARCH_DEPTH`` levels down) that holds
    an exercise file; ``student`` itself when none does (every exercise is then "not found")."""
    level = [student]
    for _ in range(SEARCH_DEPTH + 1):
        for folder in level:
            if _holds_exercises(folder, names):
                return folder
        level = [d for f in level for d in sorted(f.iterdir(), key=lambda p: p.name)
                 if d.is_dir() and not d.is_symlink() and d.name not in IGNORED and not d.name.startswith(".")]
    return student


def student_folders(root: Path, names) -> list[Path]:
    """One folder per student in ``root``. A root holding a single folder of student folders (a zip
    of the class folder) is looked into."""
    def folders(d):
        return [p for p in sorted(d.iterdir(), key=lambda p: p.name)
                if p.is_dir() and not p.is_symlink() and p.name not in IGNORED and not p.name.startswith(".")]
    found = folders(root)
    if len(found) == 1 and not _holds_exercises(found[0], names) and folders(found[0]):
        inner = folders(found[0])
        if any(exercise_folder(s, names) != s or _holds_exercises(s, names) for s in inner):
            found = inner
    return found


def unpack(zip_path: Path, into: Path) -> Path:
    """Extract an LMS export safely: regular files only, no absolute paths or ``..``, no links, and
    at most ``MAX_ZIP_BYTES`` in all (a zip bomb is refused before anything is written)."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as e:
        raise SubmissionError(f"cannot read {zip_path} as a zip file: {e}") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_ZIP_MEMBERS or sum(m.file_size for m in members) > MAX_ZIP_BYTES:
            raise SubmissionError(f"{zip_path} holds more than {MAX_ZIP_MEMBERS} files or "
                                  f"{MAX_ZIP_BYTES >> 20} MB: not a class's submissions")
        for m in members:
            parts = Path(m.filename.replace("\\", "/")).parts
            is_link = stat.S_ISLNK(m.external_attr >> 16)
            if m.is_dir() or is_link or not parts or parts[0] in ("/", "") or ".." in parts \
                    or ":" in parts[0]:
                continue  # folders are made as needed; links and paths outside are never extracted
            target = into.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(m) as src:
                write_atomic(target, src.read())
    return into


# --- one student --------------------------------------------------------------------------------------

@dataclass
class StudentGrade:
    """A student's results: one ``GradeResult`` per assigned exercise, in order."""
    student: str
    results: list
    points: dict
    seconds: float = 0.0
    flags: list = field(default_factory=list)

    def score(self, name: str) -> float:
        result = next(r for r in self.results if r.exercise == name)
        return self.points[name] if result.passed else 0.0

    @property
    def total(self) -> float:
        return sum(self.score(r.exercise) for r in self.results)

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)


def gradescope_results(grade: StudentGrade) -> dict:
    """Gradescope's ``results.json`` (its autograder specification): a test per exercise."""
    tests = []
    for number, result in enumerate(grade.results, 1):
        tests.append({"name": result.exercise, "number": str(number),
                      "score": grade.score(result.exercise), "max_score": grade.points[result.exercise],
                      "status": "passed" if result.passed else "failed",
                      "output": str(result), "visibility": "visible",
                      **({"extra_data": {"flags": list(result.flags)}} if result.flags else {})})
    return {"score": grade.total, "execution_time": int(math.ceil(grade.seconds)),
            "output": f"{grade.passed} of {len(grade.results)} exercise(s) passed",
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}


def grade_student(folder: Path, points: dict, sandbox: Sandbox, rng=None, stop=None) -> StudentGrade | None:
    """Grade every exercise in ``points`` for the student whose files are in (or under) ``folder``;
    None when ``stop`` (an ``Event``) is set before the last one is graded."""
    started = time.perf_counter()
    files = exercise_folder(folder, points)
    results = []
    for name in points:
        if stop is not None and stop.is_set():
            return None
        result = check_file(name, files, sandbox, rng)
        result.source = _shown_path(Path(result.source or files / f"{name}.py"), folder)
        results.append(result)
    flags = [f"{r.exercise}: {flag}" for r in results for flag in r.flags]
    return StudentGrade(folder.name, results, points, time.perf_counter() - started, flags)


def _shown_path(path: Path, folder: Path) -> str:
    """The graded file as the student knows it: relative to their own folder, not the grader's."""
    try:
        return str(Path(folder.name) / path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return path.name


# --- a class ------------------------------------------------------------------------------------------

def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def results_folder(out: Path) -> Path:
    """``out``, made if needed; refused when it already holds something (earlier results are never
    written over)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SubmissionError(f"{out} exists and is not a folder; give --out a new folder for the results")
    if out.is_dir() and any(out.iterdir()):
        raise SubmissionError(f"{out} already holds files (earlier results?); give --out a new folder, "
                              f"nothing there was changed")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_grades_csv(path: Path, grades: list, points: dict) -> None:
    """One row per student: each exercise's score, the total, and the flags for the teacher."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", *points, "total", "max_total", "flags"])
    for g in sorted(grades, key=lambda g: g.student):
        writer.writerow([g.student, *[f"{g.score(n):g}" for n in points], f"{g.total:g}",
                         f"{sum(points.values()):g}", "; ".join(g.flags)])
    write_atomic(path, buffer.getvalue().encode())


def summary_table(grades: list, points: dict) -> str:
    width = max([7] + [len(g.student) for g in grades])
    lines = [f"{'student':<{width}}  {'score':>11}  passed  flags"]
    for g in sorted(grades, key=lambda g: g.student):
        lines.append(f"{g.student:<{width}}  {g.total:>5g} / {sum(points.values()):<3g}  "
                     f"{g.passed:>2} / {len(points):<2} {'; '.join(g.flags) or '-'}")
    return "\n".join(lines)


@dataclass
class ClassReport:
    grades: list
    points: dict
    seconds: float
    interrupted: bool = False


def grade_class(submissions, out, points: dict, timeout: float, memory_mb: int = DEFAULT_MEMORY_MB,
                workers: int | None = None, progress: bool = True) -> ClassReport:
    """Grade every student in ``submissions`` (a folder or a zip) into ``out``; see the module's text."""
    submissions, out = Path(submissions), results_folder(out)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="minivae-class-") as unpacked:
        if submissions.is_file() and zipfile.is_zipfile(submissions):
            root = unpack(submissions, Path(unpacked))
        elif submissions.is_dir():
            root = submissions
        else:
            raise SubmissionError(f"{submissions} is neither a folder of student folders nor a zip of them")
        students = student_folders(root, points)
        if not students:
            raise SubmissionError(f"{submissions} holds no student folders: it must hold one folder per "
                                  f"student (e.g. alice/linear.py, bob/linear.py)")
        names = [s.name for s in students]
        if len(set(names)) != len(names):
            raise SubmissionError("two student folders have the same name")
        grades, interrupted = _grade_all(students, out, points, timeout, memory_mb,
                                         workers or usable_cores(), progress)
    write_grades_csv(out / "grades.csv", grades, points)
    return ClassReport(grades, points, time.perf_counter() - started, interrupted)


# Each worker is a process of the grader's own (spawned, never forked from this one) with its own
# warm sandbox: the judging is Python and holds the GIL, so threads would take turns.
_worker: dict = {}


def _start_worker(timeout: float, memory_mb: int, stop) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the batch's to handle: it sets ``stop``
    _worker.update(sandbox=Sandbox(timeout, memory_mb), stop=stop)


def _grade_one(folder: Path, out: Path, points: dict) -> StudentGrade | None:
    if _worker["stop"].is_set():
        return None
    grade = grade_student(folder, points, _worker["sandbox"], stop=_worker["stop"])
    if grade is not None:
        own = out / grade.student
        own.mkdir(exist_ok=True)
        write_atomic(own / "results.json", json.dumps(gradescope_results(grade), indent=1).encode())
    return grade


def _grade_all(students, out, points, timeout, memory_mb, workers, progress):
    """Grade the students in ``workers`` processes; each student's results.json is written as soon
    as it is graded. Ctrl-C stops the batch: the answers being run finish (at most ``timeout``
    seconds), and every student graded so far is kept."""
    import multiprocessing
    from tqdm.auto import tqdm
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    bar = tqdm(total=len(students), unit="student", desc="grading", disable=not progress, leave=False)
    pool = ProcessPoolExecutor(min(workers, len(students)), mp_context=context, initializer=_start_worker,
                               initargs=(timeout, memory_mb, stop))
    futures = [pool.submit(_grade_one, s, out, points) for s in students]
    try:
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            bar.update(len(done))
    except KeyboardInterrupt:
        stop.set()
        print(f"\nstopping: the answers being graded finish first (at most {timeout:g} s)", flush=True)
        for f in futures:
            f.cancel()
    finally:
        bar.close()
        grades = [f.result() for f in futures if not f.cancelled()]  # waits for the ones running
        pool.shutdown(wait=True)
    return [g for g in grades if g is not None], stop.is_set()
