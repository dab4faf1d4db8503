"""Writing files so that nothing is ever half written or written through a link.

Every file minivae writes (checkpoints, run.json, metrics.csv, figures, evaluation.json, copied
tutorials) is written under a fresh temporary name in the target folder, created exclusively
(O_EXCL: a file or link already there is never opened), flushed to disk, and then renamed over the
target in one step. A reader sees the old file or the new one; a process killed midway leaves at
most a temporary, named ``.minivae-<pid>-*.tmp`` so that a later run can tell a dead writer's
leftovers from a live writer's file.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

_TEMP_PREFIX = ".minivae-"
_TEMP_SUFFIX = ".tmp"
TRAINER_TEMP = f"{_TEMP_PREFIX}trainer-"  # temporaries that only a run's trainer (the lock holder) writes


def write_new_file(folder: Path, data: bytes, prefix: str | None = None) -> Path:
    """Write ``data`` to a new uniquely named file in ``folder``, flushed to disk. Returns its path;
    the file is removed if writing fails (a full disk, say)."""
    prefix = prefix or f"{_TEMP_PREFIX}{os.getpid()}-"
    fd, name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=_TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        remove(Path(name))
        raise
    return Path(name)


def write_atomic(path, data: bytes, trainer: bool = False) -> None:
    """Replace ``path`` by a file holding ``data`` in one rename. ``trainer``: written by the
    process that holds the run's lock, whose leftovers the next holder may sweep."""
    path = Path(path)
    tmp = write_new_file(path.parent, data, prefix=TRAINER_TEMP if trainer else None)
    try:
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder) -> list[Path]:
    """Remove what killed writers left in ``folder``: every trainer's temporary (call this only
    while holding the run's lock) and any other whose writer's process is gone. Returns them."""
    removed = []
    for p in Path(folder).glob(f"{_TEMP_PREFIX}*{_TEMP_SUFFIX}"):
        owner = re.match(rf"{re.escape(_TEMP_PREFIX)}(\d+)-", p.name)
        if p.name.startswith(TRAINER_TEMP) or owner is None or not _alive(int(owner[1])):
            remove(p)
            removed.append(p)
    return removed
