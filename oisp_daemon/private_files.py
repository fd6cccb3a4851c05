"""Files and directories the root daemon writes, opened so that nobody can redirect them.

The daemon runs as root and writes into places (a session's sink directory, the state directory)
where another user may have planted something first. Every file it writes therefore goes through
here:

- opened with O_NOFOLLOW, so a planted symlink is refused instead of followed;
- created with O_EXCL where a new file is meant, so existing content is never handed over;
- an existing file is taken only if it is a regular file with one link that already belongs to
  the uid it is written for (a FIFO, a device, a hard link to someone else's file are refused);
- chowned and chmodded through the descriptor (fchown/fchmod), never by path;
- replaced atomically through a temp file of a fresh name, created O_EXCL|O_NOFOLLOW in a
  directory only root can write, fsynced, then renamed over the target.

Modes are set explicitly with fchmod, so they hold whatever the umask.
"""
from __future__ import annotations

import errno
import os
import secrets
import stat
from typing import Optional

_OPEN_BASE = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: a planted FIFO cannot hang us


class UnsafeFile(OSError):
    """A path the daemon will not write through: a symlink, not a regular file, a hard link,
    or a file or directory that belongs to someone else."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(errno.EPERM, why, path)


def _check_regular(fd: int, path: str, expected_uid: Optional[int]) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFile(path, "not a regular file; refusing to write to it")
    if st.st_nlink != 1:
        raise UnsafeFile(path, f"has {st.st_nlink} hard links; refusing to write to it")
    if expected_uid is not None and st.st_uid != expected_uid:
        raise UnsafeFile(path, f"exists and belongs to uid {st.st_uid}, not {expected_uid}; refusing to reuse it")
    return st


def _open(path: str, flags: int, mode: int, dir_fd: Optional[int] = None) -> int:
    try:
        return os.open(path, flags | _OPEN_BASE, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(path, "is a symbolic link; refusing to follow it") from exc
        if exc.errno == errno.ENXIO:  # O_WRONLY|O_NONBLOCK on a FIFO without a reader
            raise UnsafeFile(path, "not a regular file; refusing to write to it") from exc
        raise


def _finish(fd: int, owner_uid: Optional[int], mode: int) -> int:
    """Blocking again, owned by owner_uid, mode `mode`: all through the descriptor."""
    os.set_blocking(fd, True)
    if owner_uid is not None and os.fstat(fd).st_uid != owner_uid:
        os.fchown(fd, owner_uid, -1)
    os.fchmod(fd, mode)
    return fd


def create_private(path: str, owner_uid: Optional[int] = None, mode: int = 0o600) -> int:
    """Create a new file for appending and return its descriptor; fails if anything exists there.

    `owner_uid` None keeps it the daemon's own (root's)."""
    fd = _open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, mode)
    try:
        _check_regular(fd, path, None)
        return _finish(fd, owner_uid, mode)
    except BaseException:
        os.close(fd)
        raise


def open_private(path: str, owner_uid: Optional[int] = None, mode: int = 0o600) -> int:
    """Open a file for appending: created fresh if missing, else reused only if it is a regular
    file with one link that already belongs to `owner_uid` (default: the daemon's own uid).

    So the daemon never appends to, or hands over, a file somebody else put there."""
    try:
        return create_private(path, owner_uid, mode)
    except FileExistsError:
        pass
    fd = _open(path, os.O_WRONLY | os.O_APPEND, mode)
    try:
        _check_regular(fd, path, os.geteuid() if owner_uid is None else owner_uid)
        return _finish(fd, owner_uid, mode)
    except BaseException:
        os.close(fd)
        raise


def read_private(path: str, max_bytes: int) -> bytes:
    """The content of a file the daemon wrote itself (regular, not a link, owned by the daemon's
    uid), at most `max_bytes`; FileNotFoundError when there is none."""
    fd = _open(path, os.O_RDONLY, 0)
    try:
        st = _check_regular(fd, path, os.geteuid())
        if st.st_size > max_bytes:
            raise UnsafeFile(path, f"is {st.st_size} bytes, more than the {max_bytes} allowed")
        os.set_blocking(fd, True)
        chunks = []
        while True:
            chunk = os.read(fd, max_bytes + 1 - sum(map(len, chunks)))
            if not chunk:
                break
            chunks.append(chunk)
            if sum(map(len, chunks)) > max_bytes:
                raise UnsafeFile(path, f"grew past the {max_bytes} bytes allowed")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _open_own_dir(path: str) -> int:
    """A descriptor on `path`, which must be a real directory owned by the daemon's uid."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeFile(path, "is not a directory (or is a symbolic link); refusing to use it") from exc
        raise
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        os.close(fd)
        raise UnsafeFile(path, f"belongs to uid {st.st_uid}; the daemon keeps its files only in its own directories")
    return fd


def make_dirs(path: str, mode: int) -> None:
    """Create the missing directories of `path`, each with exactly `mode`; leave existing ones."""
    path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            continue  # someone else made it meanwhile: not ours to chmod
        fd = _open_own_dir(directory)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)


def ensure_private_dir(path: str, mode: int = 0o700) -> None:
    """Make `path` a directory of the daemon's own with exactly `mode`, whatever the umask;
    missing parents are created with `mode` too."""
    make_dirs(path, mode)
    fd = _open_own_dir(path)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data`, all or nothing, in a directory only the daemon can write.

    The temp file has a fresh random name, so nothing planted under a predictable name is ever
    opened; a symlink planted at `path` itself is replaced, never followed."""
    directory, name = os.path.split(os.path.abspath(path))
    dir_fd = _open_own_dir(directory)
    try:
        if os.fstat(dir_fd).st_mode & 0o022:
            raise UnsafeFile(directory, "is writable by group or others; refusing to keep daemon state there")
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        fd = _open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode, dir_fd=dir_fd)
        try:
            os.set_blocking(fd, True)
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.close(fd)
        try:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
