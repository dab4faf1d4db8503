"""The process that runs a learner's answer: it imports the file, calls the functions on the inputs
the grader sent, and writes back what they returned, as plain data. It judges nothing.

    python -m minivae.exercises.child JOB      one job (the platforms without fork, e.g. Windows)
    python -m minivae.exercises.child --zygote   a warm parent with NumPy and minivae loaded, which
                                                 forks one child per job it reads on stdin

A job folder holds ``job.json`` (``wire``): the file, its functions, the calls and what to watch.
The child writes ``reply.json`` and, for what the answer printed, ``printed.txt``. Whatever the
answer does to this process (patch the grader, change the folder, exit, hang, leave a thread
running) stays here: the grader decides from the reply alone, against references it computed itself.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path

import numpy as np

from . import wire

MAX_MESSAGE = 500
FILE_LIMIT = 96 << 20  # bytes any one file the answer writes may reach (it prints into one)
USED: list[str] = []   # the library implementations called during the current call


def _watch(target: str) -> None:
    """Count the calls of ``module.attr`` (a library implementation of an exercise)."""
    module_name, attr = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    original = getattr(module, attr)

    def watched(*args, **kwargs):
        USED.append(target)
        return original(*args, **kwargs)
    watched.__name__, watched.__doc__, watched.__wrapped__ = original.__name__, original.__doc__, original
    setattr(module, attr, watched)


def _model(params: dict):
    from .model import SmallModel

    class Model(SmallModel):
        """The model an answer gets; it notes the use of the two methods that hold the answers."""
        def log_px(self):
            USED.append("model.log_px")
            return SmallModel.log_px(self)

        def log_post(self, z):
            USED.append("model.log_post")
            return SmallModel.log_post(self, z)
    return Model(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items()})


def build(value):
    """The inputs as the answer gets them: specs become a model or a config, the rest is copied."""
    if isinstance(value, wire.ModelSpec):
        return _model(value.params)
    if isinstance(value, wire.ConfigSpec):
        from ..config import VAEConfig
        return VAEConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in value.fields.items()})
    if type(value) in (tuple, list):
        return type(value)(build(v) for v in value)
    if type(value) is dict:
        return {k: build(v) for k, v in value.items()}
    if hasattr(value, "copy"):
        return value.copy()
    return value


def _text(e) -> str:
    try:
        s = str(e)
    except BaseException as inner:  # noqa: BLE001 - a __str__ that raises or recurses
        return f"(its message could not be shown: str() raised {type(inner).__name__})"
    return s if len(s) <= MAX_MESSAGE else s[:MAX_MESSAGE] + " ..."


def raised(e: BaseException, path: str, fn=None) -> dict:
    """What an exception says about the answer: its type, message and the line of the learner's file."""
    frames = traceback.extract_tb(e.__traceback__)
    mine = [f for f in frames if os.path.realpath(f.filename) == os.path.realpath(path)]
    at = mine[-1] if mine else None
    info = {"type": type(e).__name__[:100], "message": _text(e), "line": at.lineno if at else 0,
            "code": (at.line or "")[:200] if at else "", "signature": ""}
    code = getattr(fn, "__code__", None)
    if not mine and isinstance(e, TypeError) and code is not None:  # never entered: its signature
        names = ", ".join(code.co_varnames[:code.co_argcount])
        info["signature"] = f"{getattr(fn, '__name__', '?')}({names}) at line {code.co_firstlineno}"
    return info


def answer_calls(functions: dict, calls, path: str, reraise=()) -> list:
    """Call the answer's functions: one reply per call, ``{"value", "raised", "after", "used"}``.
    An exception of a type in ``reraise`` (the notebook's time limit) is not an answer: it stops.
    Underflow is never an error here, whatever ``np.seterr`` the answer chose: the stable formulas
    the exercises teach underflow on purpose (exp(-|a|) at a = 800 is 0)."""
    replies = []
    for name, args in calls:
        fn, given = functions[name], build(args)
        USED.clear()
        try:
            with np.errstate(under="ignore"):  # exp(-800) = 0 is what a stable formula means
                value, problem = fn(*given), None
        except BaseException as e:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are answers too
            if isinstance(e, reraise):
                raise
            value, problem = None, raised(e, path, fn)
        replies.append({"value": wire.plain(value), "raised": problem, "after": wire.plain(given),
                        "used": sorted(set(USED))})
    return replies


def load(path: str, functions):
    """Import the learner's file: ``(functions found, import problem or None, missing names)``."""
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)
    sys.argv = [path]
    spec = importlib.util.spec_from_file_location(f"minivae_exercise_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except BaseException as e:  # noqa: BLE001
        info = raised(e, path)
        if isinstance(e, SyntaxError) and e.lineno:
            info["line"], info["code"] = e.lineno, (e.text or "").strip()[:200]
        return {}, info, []
    found = {f: getattr(module, f, None) for f in functions}
    return found, None, [f for f, fn in found.items() if not callable(fn)]


def run_job(job: Path) -> None:
    """Do one job and end the process: nothing the answer left behind (a thread) keeps it alive."""
    sys.dont_write_bytecode = True  # no __pycache__ in a learner's folder
    try:
        spec = wire.read(job, "job")
        _limit(spec["memory_mb"])
        _quiet(job)
        for target in spec["watch"]:
            _watch(target)
        path = spec["file"]
        os.chdir(os.path.dirname(os.path.abspath(path)))
        found, problem, missing = load(path, spec["functions"])
        replies = [] if problem or missing else answer_calls(found, spec["calls"], path)
        wire.write({"import": problem, "missing": missing, "replies": replies}, job, "reply")
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001 - the answer may have closed or replaced them
                pass
        os._exit(0)


def _limit(memory_mb: int) -> None:
    """Address space: what the process holds now plus ``memory_mb``; any one file: FILE_LIMIT."""
    try:
        import resource
        import signal
    except ImportError:  # Windows: no rlimits; the time limit still holds
        return
    try:
        with open("/proc/self/statm") as f:
            now = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        now = 1 << 30
    for what, amount in ((resource.RLIMIT_AS, now + (memory_mb << 20)), (resource.RLIMIT_FSIZE, FILE_LIMIT)):
        try:
            hard = resource.getrlimit(what)[1]
            resource.setrlimit(what, (amount if hard == resource.RLIM_INFINITY else min(amount, hard), hard))
        except (ValueError, OSError):  # e.g. macOS, which keeps RLIMIT_AS to itself
            pass
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an over-long print fails, it does not kill


def _quiet(job: Path) -> None:
    """stdin from nowhere, stdout and stderr into the job's printed.txt (the grader shows its start)."""
    out = os.open(job / "printed.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.close(null)


def _warm() -> None:
    """Plan every exercise once, so that what loads on a first call (array-api-compat's NumPy
    namespace, NumPy's lazy modules) is loaded here, once, and not again in every child."""
    import numpy as np

    from . import backward, derivations  # noqa: F401
    with np.errstate(all="ignore"):
        for name in backward.EXERCISES:
            for _, args in backward.plan(name, np.random.default_rng(0))[0][:1]:
                wire.plain(build(args))


def zygote() -> None:
    """Fork one child per job line on stdin; report ``{"pid"}`` then ``{"status"}`` for each.

    Ctrl-C at the terminal reaches the whole foreground group: the zygote ignores it, so an answer
    being graded is never cut short by it (the grader stops the zygote by closing its stdin)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _warm()
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        job = Path(json.loads(line)["job"])
        out.flush()
        pid = os.fork()
        if pid == 0:
            os.setpgid(0, 0)  # its own group: the grader kills the group, threads and all
            run_job(job)
        try:
            os.setpgid(pid, pid)
        except OSError:  # the child did it first, or has ended
            pass
        out.write(json.dumps({"pid": pid}).encode() + b"\n")
        out.flush()
        _, status = os.waitpid(pid, 0)
        out.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
        out.flush()


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--zygote"]:
        zygote()
    elif len(argv) == 1:
        run_job(Path(argv[0]))
    else:
        sys.exit("usage: python -m minivae.exercises.child (JOB | --zygote)")


if __name__ == "__main__":
    main()
