"""Running a learner's answer where it cannot touch the judge: a child process per (file, exercise).

``Sandbox.run(path, functions, calls)`` sends the calls to a child (``child.py``), waits at most
``timeout`` seconds, and returns an ``Outcome``: the replies as plain data, or how the process ended
without them. On a timeout the child's whole process group is killed, so nothing it started (a
thread, a subprocess) outlives it. Where the platform can fork, one warm parent (the "zygote", with
NumPy and minivae loaded) forks each child, which costs milliseconds; elsewhere (Windows) each
child is a fresh interpreter. ``run_here`` is the notebook's path: the same calls, in this process,
on copies of the inputs, under a time limit where signals allow one.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from . import child, wire
from .outcome import DEFAULT_MEMORY_MB, Outcome, Raised, Reply

DEFAULT_TIMEOUT = 60.0
PRINTED_SHOWN = 2000  # characters of what the answer printed that a report shows


def _raised(d) -> Raised | None:
    if d is None:
        return None
    if not (isinstance(d, dict) and all(isinstance(d.get(k), str) for k in ("type", "message", "code", "signature"))
            and type(d.get("line")) is int):
        raise ValueError("an exception record that is not one")
    return Raised(d["type"][:100], d["message"][:child.MAX_MESSAGE + 4], d["line"], d["code"][:200],
                  d["signature"][:300])


def outcome_from(reply, printed: str = "") -> Outcome:
    """An ``Outcome`` from a child's reply (plain data, checked field by field)."""
    if not (isinstance(reply, dict) and isinstance(reply.get("replies"), list)
            and isinstance(reply.get("missing"), list)):
        raise ValueError("a reply that is not one")
    replies = []
    for r in reply["replies"]:
        if not (isinstance(r, dict) and isinstance(r.get("used"), list) and all(isinstance(u, str) for u in r["used"])):
            raise ValueError("a reply that is not one")
        replies.append(Reply(r.get("value"), _raised(r.get("raised")), r.get("after"), tuple(r["used"])))
    return Outcome(replies, _raised(reply.get("import")), tuple(str(m) for m in reply["missing"]),
                   printed=printed)


def _ended(status: int | None) -> str:
    if status is None:
        return "ended the grader's helper process before returning (it was killed from outside?)"
    if status >= 0:
        return (f"ended the process before returning (os._exit({status}), or a crash in compiled code): "
                f"an answer must return its result")
    name = signal.Signals(-status).name if -status in signal.Signals._value2member_map_ else f"signal {-status}"
    if name == "SIGKILL":
        return "was killed (SIGKILL) before returning: out of memory?"
    return f"crashed ({name}) before returning"


def child_env() -> dict:
    """The environment of a child: one BLAS thread (children may run side by side), and this minivae."""
    env = dict(os.environ)
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class _Lines:
    """Lines from a pipe, each waited for at most a given time (select: POSIX pipes only)."""

    def __init__(self, fd: int):
        self.fd, self.buffer = fd, b""

    def read(self, timeout: float):
        """The next line parsed as JSON; None on timeout; EOFError when the pipe closed."""
        import time
        end = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 4096)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


class Sandbox:
    """Children for answers, each under a time and a memory limit. Use as a context manager."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, memory_mb: int = DEFAULT_MEMORY_MB,
                 fork: bool | None = None):
        self.timeout, self.memory_mb = float(timeout), int(memory_mb)
        self.fork = (hasattr(os, "fork") and hasattr(os, "killpg")) if fork is None else fork
        self._zygote = self._lines = None
        if self.fork:
            self._start()  # it warms up while the grader plans the first exercise

    def _start(self) -> None:
        self._zygote = subprocess.Popen([sys.executable, "-m", "minivae.exercises.child", "--zygote"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, env=child_env())
        self._lines = _Lines(self._zygote.stdout.fileno())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self._zygote is not None:
            self._zygote.stdin.close()
            try:
                self._zygote.wait(5)
            except subprocess.TimeoutExpired:
                self._zygote.kill()
                self._zygote.wait()
            self._zygote.stdout.close()
            self._zygote = None

    def run(self, path: Path, functions, calls, watch=()) -> Outcome:
        """Import ``path`` in a child and make ``calls`` (``[(function name, args)]``) there."""
        job = Path(tempfile.mkdtemp(prefix="minivae-grade-"))
        try:
            wire.write({"file": str(Path(path).resolve()), "functions": list(functions),
                        "calls": [[name, tuple(args)] for name, args in calls], "watch": list(watch),
                        "memory_mb": self.memory_mb}, job, "job")
            status, timed_out = self._in_zygote(job) if self.fork else self._in_interpreter(job)
            printed = _printed(job)
            if timed_out:
                return Outcome(ended=f"timed out after {self.timeout:g} s (an endless loop, or a wait?); "
                                     f"the grader stopped it", printed=printed)
            try:
                return outcome_from(wire.read(job, "reply"), printed)
            except ValueError:
                return Outcome(ended=_ended(status), printed=printed)
        finally:
            shutil.rmtree(job, ignore_errors=True)

    # --- the two ways to start a child ----------------------------------------------------------------

    def _in_zygote(self, job: Path):
        if self._zygote is None or self._zygote.poll() is not None:
            self.close()
            self._start()
        try:
            self._zygote.stdin.write(json.dumps({"job": str(job)}).encode() + b"\n")
            self._zygote.stdin.flush()
            started = self._lines.read(60.0)
            if not (isinstance(started, dict) and type(started.get("pid")) is int):
                raise EOFError
            pid = started["pid"]
            ended = self._lines.read(self.timeout)
            timed_out = ended is None
            _kill_group(pid)  # on a timeout the child; after an end, anything it left behind
            if timed_out:
                ended = self._lines.read(30.0)
            return (ended.get("status") if isinstance(ended, dict) else None), timed_out
        except (EOFError, OSError, ValueError):
            self.close()
            return None, False

    def _in_interpreter(self, job: Path):
        kwargs = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else \
            {"start_new_session": True}
        proc = subprocess.Popen([sys.executable, "-m", "minivae.exercises.child", str(job)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=child_env(), **kwargs)
        try:
            return proc.wait(self.timeout), False
        except subprocess.TimeoutExpired:
            if hasattr(os, "killpg") and os.name != "nt":
                _kill_group(proc.pid)
            proc.kill()
            proc.wait()
            return None, True


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        pass


def _printed(job: Path) -> str:
    path = job / "printed.txt"
    try:
        if path.is_symlink() or not path.is_file():
            return ""
        with open(path, "rb") as f:
            return f.read(PRINTED_SHOWN).decode("utf-8", "replace")
    except OSError:
        return ""


# --- in this process: a notebook's function ---------------------------------------------------------

class _TimeLimit(BaseException):
    """Raised into an answer that runs past its time in this process."""


def run_here(functions: dict, calls, timeout: float = DEFAULT_TIMEOUT) -> Outcome:
    """The calls made here, on copies, each exception caught (BaseException too), and a time limit
    for all of them where this thread can receive signals (the main thread, on POSIX)."""
    can_stop = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    previous = None
    if can_stop:
        def stop(signum, frame):
            raise _TimeLimit
        previous = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        replies = child.answer_calls(functions, calls, _source_of(functions), reraise=(_TimeLimit,))
    except _TimeLimit:
        return Outcome(ended=f"timed out after {timeout:g} s (an endless loop, or a wait?); the grader stopped it")
    finally:
        if can_stop:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    return outcome_from({"replies": replies, "missing": [], "import": None})


def _source_of(functions: dict) -> str:
    for fn in functions.values():
        code = getattr(fn, "__code__", None)
        if code is not None:
            return code.co_filename
    return ""
