"""Atomic file writes: a reader, or a crash at any moment, sees the old file or the new one, never a
half-written one. Adapters, checkpoints, trajectory files and training logs are all written here."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_write_text", "fsync_dir"]


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file (mkstemp's 0600 would otherwise leak into the result)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make renames in ``directory`` durable; best effort (not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(target: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write ``target`` through a temporary file in its directory: ``write(tmp_path)``, fsync, the
    target's mode (or a new file's), rename over ``target``. On any failure, including an exception
    from ``write``, the temporary file is removed and ``target`` is untouched. The caller fsyncs the
    directory (:func:`fsync_dir`) once its renames are done."""
    target = Path(target)
    if not target.parent.is_dir():  # else mkstemp's error would name the hidden temporary file
        raise FileNotFoundError(f"cannot write {target}: the directory {target.parent} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "r+b") as f:  # r+ so that fsync works on every OS
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = os.stat(target).st_mode & 0o7777
        except FileNotFoundError:
            mode = _new_file_mode()
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of a UTF-8 text, then the directory fsynced."""
    atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    fsync_dir(Path(target).parent)
