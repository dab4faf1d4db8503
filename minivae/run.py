"""A run folder: made once, locked while it trains, never silently replaced or mixed with another.

::

    run.json                  the model and training configs, the data trained on, and the run's id
    metrics.csv               one row per epoch (see train.py)
    checkpoint.safetensors    the newest checkpoint, and checkpoint-1.safetensors, ... the ones before
    .lock                     locked by the process that is training the run (see RunLock)

The run id is written into run.json and into every checkpoint, so a checkpoint copied in from
another run is refused rather than continued. The lock makes a second ``train`` (or ``--resume``)
of a run that is training fail at once, instead of two processes writing one folder. A folder that
holds a run is never used for a new one without ``overwrite``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
import uuid
from pathlib import Path

from .checkpoint import checkpoint_files
from .files import _alive, remove_stale_temporaries, require_regular, write_atomic
from .config import TrainConfig, VAEConfig

MAX_RUN_JSON = 1 << 20  # bytes; a real run.json is about 1 kB
RUN_FILES = ("run.json", "metrics.csv", "evaluation.json", "reconstructions.png", "samples.png",
             "manifold.png", "latent.png", "curves.png")


class RunBusy(RuntimeError):
    """Another process is training this run folder."""


def new_run_folder(parent, name: str) -> Path:
    """Create ``parent/name`` exclusively, or ``name-2``, ``name-3``, ... if it is taken: two runs
    started in the same second get two folders."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):
        folder = parent / (name if i == 1 else f"{name}-{i}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent / name}: 999 folders of that name exist; pick another --name")


def holds_a_run(folder) -> bool:
    folder = Path(folder)
    return (folder / "run.json").exists() or any(p.exists() for p in checkpoint_files(folder))


class RunLock:
    """``with RunLock(folder):`` holds an exclusive lock on ``folder/.lock``, or raises RunBusy.

    On POSIX the lock is the kernel's (``fcntl.flock``) and on Windows ``msvcrt.locking``: either is
    released when the process ends, however it ends, so a killed run never leaves a stale lock.
    Where neither exists, ``.lock`` is created exclusively and holds the holder's pid; a lock whose
    pid is dead is taken over. The pid is written into ``.lock`` in every case, to name the holder.
    While the lock is held, the temporaries that killed writers left in the folder are removed."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / ".lock"

    def __enter__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        require_regular(self.path)
        self._kind = lock_kind()
        if self._kind == "pidfile":
            self._fd = self._take_pidfile()
        else:
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
            if self.path.is_symlink():  # what O_NOFOLLOW refuses where the platform has it
                raise OSError(f"{self.path} is a link; remove it (a run's lock file is its own)")
            self._fd = os.open(self.path, flags, 0o644)
            if not _try_lock(self._fd, self._kind):
                holder = _read_at_start(self._fd) or "?"
                os.close(self._fd)
                raise self._busy(holder)
            os.ftruncate(self._fd, 0)
        _write_at_start(self._fd, str(os.getpid()))
        remove_stale_temporaries(self.folder)
        return self

    def _busy(self, holder) -> RunBusy:
        return RunBusy(f"{self.folder} is being trained by another process (pid {holder}); wait "
                       f"for it to finish, or train under another --name")

    def _take_pidfile(self) -> int:
        """The lock without kernel locks: create ``.lock`` exclusively; a dead holder's is removed."""
        for _ in range(2):
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
            except FileExistsError:
                holder = self.path.read_text(errors="replace").strip()
                if holder.isdigit() and _alive(int(holder)) and int(holder) != os.getpid():
                    raise self._busy(holder) from None
                os.unlink(self.path)  # its process is gone (or it never wrote a pid)
        raise self._busy("?")

    def __exit__(self, *exc):
        os.close(self._fd)  # closing releases a kernel lock
        if self._kind == "pidfile":
            os.unlink(self.path)


def lock_kind() -> str:
    """How this platform locks a run: "flock" (POSIX), "msvcrt" (Windows) or "pidfile"."""
    for module, kind in (("fcntl", "flock"), ("msvcrt", "msvcrt")):
        try:
            __import__(module)
            return kind
        except ImportError:
            continue
    return "pidfile"


def _try_lock(fd: int, kind: str) -> bool:
    """Take an exclusive kernel lock on ``fd`` without waiting; False if another process holds it."""
    if kind == "flock":
        import fcntl
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    import msvcrt  # locks a byte range; byte 0 stands for the file
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _read_at_start(fd: int, n: int = 32) -> str:
    """The first ``n`` bytes of ``fd`` as text (``os.pread`` where the platform has it)."""
    if hasattr(os, "pread"):
        data = os.pread(fd, n, 0)
    else:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, n)
    return data.decode(errors="replace").strip()


def _write_at_start(fd: int, text: str) -> None:
    if hasattr(os, "pwrite"):
        os.pwrite(fd, text.encode(), 0)
    else:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, text.encode())


def clear_for_new_run(folder, overwrite: bool) -> None:
    """Refuse a folder that holds a run, unless ``overwrite``: then remove that run's files."""
    folder = Path(folder)
    if not holds_a_run(folder):
        return
    if not overwrite:
        raise FileExistsError(f"{folder} already holds a run; continue it with --resume, choose "
                              f"another --name or --out, or replace it with --overwrite")
    files = [folder / name for name in RUN_FILES] + checkpoint_files(folder)
    for p in files:  # refuse before removing anything
        if not p.is_symlink():
            require_regular(p)
    for p in files:
        if p.exists() or p.is_symlink():
            os.unlink(p)


def save_run_config(folder, mcfg: VAEConfig, tcfg, run_id: str, data_info: dict) -> None:
    record = {"model": mcfg.to_dict(), "train": dataclasses.asdict(tcfg), "data": data_info,
              "run_id": run_id}
    write_atomic(Path(folder) / "run.json", json.dumps(record, indent=1).encode(), trainer=True)


def check_same_data(folder, data, log=print) -> None:
    """ValueError when ``data`` differs from the data the run in ``folder`` was trained on, by the
    fingerprint its run.json recorded; a note (``log``) when that run.json has none (minivae < 0.3)."""
    from .data import fingerprint

    path = Path(folder) / "run.json"
    if not path.is_file():  # none, or not a regular file: load_run says so
        return
    try:
        recorded = json.loads(path.read_bytes()).get("data") or {}
    except (OSError, ValueError, AttributeError):
        return  # load_run has said what is wrong with run.json
    if not isinstance(recorded, dict) or "fingerprint" not in recorded:
        log(f"note: {path} records no fingerprint of the data it was trained on (an older minivae "
            f"wrote it), so the data loaded now ({data.name}) cannot be checked against it")
        return
    now = fingerprint(data)
    if now != recorded["fingerprint"]:
        where = f" in {recorded['data_dir']}" if recorded.get("data_dir") else ""
        raise ValueError(f"the {data.name} data loaded now (fingerprint {now[:19]}...) differs from the "
                         f"data this run was trained on{where} ({str(recorded['fingerprint'])[:19]}...): "
                         f"put the original files back where the run found them (or point "
                         f"$MINIVAE_DATA at them), or train a new run on this data")


def new_run_id() -> str:
    return uuid.uuid4().hex


def load_run(folder) -> tuple[VAEConfig, TrainConfig, str | None]:
    """``(model config, TrainConfig, run id)`` of a run folder; ValueError if run.json is damaged."""
    path = Path(folder) / "run.json"
    require_regular(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a minivae run folder (no run.json); train one with "
                                f"`python -m minivae train --out {folder}`")
    try:
        if path.stat().st_size > MAX_RUN_JSON:
            raise ValueError(f"{path.stat().st_size} bytes, a run.json is about 1 kB")
        record = json.loads(path.read_bytes())
        if not (isinstance(record, dict) and isinstance(record.get("model"), dict)
                and isinstance(record.get("train"), dict)):
            raise ValueError("expected an object with 'model' and 'train' objects")
        unknown = set(record["train"]) - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}")
        run_id = record.get("run_id")
        if run_id is not None and not isinstance(run_id, str):
            raise ValueError("its run_id is not a string")
        return VAEConfig.from_dict(record["model"]), TrainConfig(**record["train"]), run_id
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{path} is damaged ({type(e).__name__}: {str(e)[:200]}); restore it, or "
                         f"train a new run") from None


# --- metrics.csv: a log, which must never cost the run ----------------------------------------------

def read_metrics(path: Path, fields: list[str], before_epoch: int, log=print) -> list[dict]:
    """The rows of ``path`` for epochs before ``before_epoch``. A damaged file is set aside (renamed
    to ``metrics.damaged-<time>.csv``) with a message, and the run goes on with an empty log: the
    checkpoint, not the log, holds the run."""
    require_regular(path)
    if not path.is_file():
        return []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "epoch" not in reader.fieldnames:
                raise ValueError(f"its header {reader.fieldnames!r} has no 'epoch' column")
            rows = []
            for row in reader:
                if None in row or set(row) - set(fields):
                    raise ValueError(f"line {reader.line_num} has columns it should not have")
                if int(row["epoch"]) < before_epoch:
                    rows.append(row)
            return rows
    except (ValueError, TypeError, csv.Error, UnicodeDecodeError) as e:
        aside = path.with_name(f"metrics.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.csv")
        os.replace(path, aside)
        log(f"{path} was damaged ({type(e).__name__}: {str(e)[:120]}); set it aside as {aside.name} "
            f"and started a new one (the checkpoint is intact; earlier epochs' rows are in the old file)")
        return []


def write_metrics(path: Path, fields: list[str], rows: list[dict]) -> None:
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=fields, restval="")  # rows from before a column existed
    w.writeheader()
    w.writerows(rows)
    write_atomic(path, text.getvalue().encode(), trainer=True)
