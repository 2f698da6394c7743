"""Files written safely: atomically (a temporary file, fsynced, swapped in by os.replace, so an
interruption leaves the old file or the new one, never half of one), under a folder lock for a
read-modify-write by jobs running side by side, and checked by sha256.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path


def nearest_existing(path: Path) -> Path | None:
    """`path` where it exists, else its nearest existing parent: where a write into it lands first."""
    return next((part for part in (path, *path.parents) if part.exists()), None)


def file_in_the_way(folder: Path) -> Path | None:
    """The file on `folder`'s path (itself or the nearest existing parent) that would stop a write
    into it, found before any work rather than at the first write; None where the path is clear."""
    existing = nearest_existing(folder)
    return existing if existing is not None and not existing.is_dir() else None


def share_like_any_file(path: Path | str) -> None:
    """Give a file the mode a plain open() would (0666 less the umask): mkstemp, and safetensors'
    writer, make 0600, but results, data and checkpoints are shared like any file."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`data` at `path`, whole or not at all (a temporary file beside it, then renamed). A failed
    write's OSError names `path`: the system names the temporary file, or no file at all (a disk
    full while writing), neither of which the user chose."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:  # said of the folder where it takes no new file, else of `path` (not a random name)
        refused = err.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
        raise type(err)(err.errno, err.strerror, str(path.parent if refused else path)) from None
    share_like_any_file(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename in (None, tmp):
            raise type(err)(err.errno, err.strerror, str(path)) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class FolderLocked(Exception):
    """`folder_lock(wait=False)` found the folder locked by another process: `pid` is that process,
    where the system says (Linux's /proc/locks), else None."""

    def __init__(self, folder: Path, pid: int | None):
        super().__init__(folder, pid)  # both in args: the error pickles whole
        self.folder, self.pid = folder, pid

    def __str__(self) -> str:
        return f"{self.folder} is locked by another process" + (f" (pid {self.pid})" if self.pid else "")


@contextlib.contextmanager
def folder_lock(folder: Path, wait: bool = True):
    """Hold an exclusive advisory lock on a folder (flock on its descriptor: no lock file is left
    behind in a results folder that gets committed) for one read-modify-write of a file in it, or,
    with wait=False, for a job that must be the folder's only writer: FolderLocked at once where
    another process holds it. The OS releases a flock when its holder dies, so a killed job's lock
    blocks no one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLocked(folder, lock_holder(fd)) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def lock_holder(fd: int) -> int | None:
    """The pid holding a flock on the file open as `fd`, from /proc/locks (Linux), whose lines read
    `1: FLOCK  ADVISORY  WRITE PID MAJOR:MINOR:INODE 0 EOF` (a waiter's has `->` after the number);
    None where there is no such file or the lock is gone."""
    st = os.fstat(fd)
    file_id = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for fields in map(str.split, lines):
        if fields[1:2] == ["FLOCK"] and fields[5:6] == [file_id]:
            return int(fields[4])
    return None


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 16 MiB blocks (corpora and checkpoints need not fit in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()
