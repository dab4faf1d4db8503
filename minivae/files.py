"""Writing files so that nothing is ever half written or written through a link.

Every file minivae writes (checkpoints, run.json, metrics.csv, figures, evaluation.json, copied
tutorials) is written under a fresh temporary name in the target folder, created exclusively
(O_EXCL: a file or link already there is never opened), flushed to disk, and then renamed over the
target in one step, with the permissions the umask gives (0644 under umask 022). A reader sees the old
file or the new one; a process killed midway leaves at
most a temporary, named ``.minivae-<pid>-*.tmp`` so that a later run can tell a dead writer's
leftovers from a live writer's file.

A destination that exists and is not a regular file (a device such as /dev/null, a FIFO, a socket,
a folder, or a link to one) is refused before anything is written: the rename would replace it.
Readers ask ``require_regular`` before opening, so a FIFO never blocks them. Errors name the file
being written, never the temporary.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from pathlib import Path

_TEMP_PREFIX = ".minivae-"
_TEMP_SUFFIX = ".tmp"
TRAINER_TEMP = f"{_TEMP_PREFIX}trainer-"  # temporaries that only a run's trainer (the lock holder) writes


class NotARegularFile(OSError):
    """A path to write or read is a device, FIFO, socket or folder (or a link to one)."""


_KINDS = [(stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")]


def require_regular(path, missing_ok: bool = True) -> None:
    """NotARegularFile unless ``path`` is a regular file or a link to one (or, with ``missing_ok``,
    does not exist). It never opens ``path``, so a FIFO cannot block it."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there (or under a file): not ours to judge
        if missing_ok:
            return
        raise
    if not stat.S_ISREG(mode):
        kind = next((what for test, what in _KINDS if test(mode)), "not a regular file")
        raise NotARegularFile(f"{path} is {kind}, not a regular file; minivae reads and writes only "
                              f"regular files: give another path (it was left untouched)")


def named_error(e: OSError, path) -> OSError:
    """``e`` as the same kind of error naming ``path`` (the destination), not the temporary."""
    try:
        return type(e)(e.errno, f"cannot write {path}: {e.strerror or e}")
    except TypeError:  # an OSError subclass with another signature
        return OSError(e.errno, f"cannot write {path}: {e.strerror or e}")


def umask() -> int:
    """This process's umask, read without changing it where the system says it (Linux), else set
    and restored at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file(folder, prefix: str, suffix: str):
    """``tempfile.mkstemp`` with the permissions the umask gives a new file (0644 under umask 022),
    not mkstemp's private 0600: a teacher's copy in a shared course folder is readable by the class.
    Returns ``(fd, name)``."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    if hasattr(os, "fchmod"):  # Windows keeps its own permissions
        os.fchmod(fd, 0o666 & ~umask())
    return fd, name


def write_new_file(folder: Path, data: bytes, prefix: str | None = None) -> Path:
    """Write ``data`` to a new uniquely named file in ``folder``, flushed to disk, with the umask's
    permissions. Returns its path; the file is removed if writing fails (a full disk, say)."""
    prefix = prefix or f"{_TEMP_PREFIX}{os.getpid()}-"
    fd, name = new_file(folder, prefix, _TEMP_SUFFIX)
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
    process that holds the run's lock, whose leftovers the next holder may sweep. NotARegularFile
    if ``path`` exists and is not a regular file; other OSErrors name ``path``."""
    path = Path(path)
    require_regular(path)
    try:
        tmp = write_new_file(path.parent, data, prefix=TRAINER_TEMP if trainer else None)
    except OSError as e:
        raise named_error(e, path) from None
    try:
        replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def replace(tmp: Path, path: Path) -> None:
    """``os.replace(tmp, path)``, refusing a ``path`` that is not a regular file (checked again
    right before the rename), with errors that name ``path``."""
    require_regular(path)
    try:
        os.replace(tmp, path)
    except OSError as e:
        raise named_error(e, path) from None


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
