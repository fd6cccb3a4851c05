"""The root daemon's file primitives against what another user can plant: symlinks, FIFOs, hard
links, files of their own, and a umask of 000."""
from __future__ import annotations

import os
import stat
import threading

import pytest

from oisp_daemon.private_files import (
    UnsafeFile,
    create_private,
    ensure_private_dir,
    make_dirs,
    open_private,
    read_private,
    write_atomic,
)

NOBODY = 65534


@pytest.fixture
def umask_000():
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.fixture
def victim(tmp_path):
    """A file an attacker would like root to overwrite, chown or append to."""
    path = tmp_path / "victim"
    path.write_text("precious\n")
    path.chmod(0o644)
    return path


def mode_of(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def write_fd(fd: int, data: bytes) -> None:
    os.write(fd, data)
    os.close(fd)


def test_create_private_is_0600_and_owned_whatever_the_umask(tmp_path, umask_000):
    path = tmp_path / "new.jsonl"
    write_fd(create_private(str(path), NOBODY, 0o600), b"x\n")
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == NOBODY


def test_create_private_refuses_an_existing_file_and_leaves_it(victim):
    with pytest.raises(FileExistsError):
        create_private(str(victim), NOBODY)
    assert victim.read_text() == "precious\n" and os.stat(victim).st_uid == 0


def test_a_planted_symlink_is_refused_and_its_target_untouched(tmp_path, victim):
    link = tmp_path / "sink.jsonl"
    link.symlink_to(victim)
    for opener in (create_private, open_private):
        with pytest.raises(OSError):
            opener(str(link), NOBODY)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        open_private(str(link), NOBODY)
    assert victim.read_text() == "precious\n"
    st = os.stat(victim)
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o644


def test_a_dangling_symlink_is_not_followed_into_a_new_file(tmp_path):
    target = tmp_path / "would-be-created"
    link = tmp_path / "sink.jsonl"
    link.symlink_to(target)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        open_private(str(link), NOBODY)
    assert not target.exists()


def test_a_planted_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "sink.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeFile, match="not a regular file"):
        open_private(str(fifo), 0)


def test_a_fifo_with_a_reader_is_refused_too(tmp_path):
    fifo = tmp_path / "sink.jsonl"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(UnsafeFile, match="not a regular file"):
            open_private(str(fifo), 0)
    finally:
        os.close(reader)


def test_a_hard_link_to_another_file_is_refused(tmp_path, victim):
    link = tmp_path / "sink.jsonl"
    os.link(victim, link)
    with pytest.raises(UnsafeFile, match="hard links"):
        open_private(str(link), 0)
    assert victim.read_text() == "precious\n"


def test_an_existing_file_of_another_uid_is_not_reused(tmp_path):
    planted = tmp_path / "sink.jsonl"
    planted.write_text("")
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(UnsafeFile, match="belongs to uid 65534"):
        open_private(str(planted), 0)
    root_file = tmp_path / "roots.jsonl"
    root_file.write_text("root's events\n")
    with pytest.raises(UnsafeFile, match="belongs to uid 0"):
        open_private(str(root_file), NOBODY)
    assert os.stat(root_file).st_uid == 0


def test_the_owners_own_file_is_appended_to_and_made_private(tmp_path, umask_000):
    path = tmp_path / "mine.jsonl"
    path.write_text("one\n")
    os.chown(path, NOBODY, NOBODY)
    path.chmod(0o666)
    write_fd(open_private(str(path), NOBODY), b"two\n")
    assert path.read_text() == "one\ntwo\n" and mode_of(path) == 0o600


def test_read_private_refuses_links_foreign_files_and_oversize(tmp_path, victim):
    link = tmp_path / "runtime.json"
    link.symlink_to(victim)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        read_private(str(link), 1024)
    foreign = tmp_path / "foreign.json"
    foreign.write_text("{}")
    os.chown(foreign, NOBODY, NOBODY)
    with pytest.raises(UnsafeFile, match="belongs to uid"):
        read_private(str(foreign), 1024)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2048)
    with pytest.raises(UnsafeFile, match="2048 bytes"):
        read_private(str(big), 1024)
    with pytest.raises(FileNotFoundError):
        read_private(str(tmp_path / "absent"), 1024)
    assert read_private(str(victim), 1024) == b"precious\n"


def test_write_atomic_replaces_a_planted_symlink_instead_of_following_it(tmp_path, victim, umask_000):
    state = tmp_path / "state"
    ensure_private_dir(str(state), 0o711)
    target = state / "sessions.json"
    target.symlink_to(victim)
    (state / "sessions.json.tmp").symlink_to(victim)  # the old fixed temp name
    write_atomic(str(target), b'{"sessions": []}', 0o600)
    assert not target.is_symlink() and target.read_bytes() == b'{"sessions": []}'
    assert mode_of(target) == 0o600
    assert victim.read_text() == "precious\n" and mode_of(victim) == 0o644
    leftovers = sorted(p.name for p in state.iterdir())
    assert leftovers == ["sessions.json", "sessions.json.tmp"]


def test_write_atomic_refuses_a_directory_others_can_write(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UnsafeFile, match="writable by group or others"):
        write_atomic(str(shared / "runtime.json"), b"{}")
    assert list(shared.iterdir()) == []
    other = tmp_path / "other"
    other.mkdir()
    os.chown(other, NOBODY, NOBODY)
    other.chmod(0o700)
    with pytest.raises(UnsafeFile, match="belongs to uid 65534"):
        write_atomic(str(other / "runtime.json"), b"{}")


def test_write_atomic_readers_see_old_or_new_never_a_mix(tmp_path):
    path = tmp_path / "state.json"
    write_atomic(str(path), b"A" * 100_000)
    seen = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            data = path.read_bytes()
            seen.add((data[:1], len(data), len(set(data))))

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(50):
        write_atomic(str(path), (b"A" if i % 2 else b"B") * 100_000)
    stop.set()
    reader.join()
    assert seen <= {(b"A", 100_000, 1), (b"B", 100_000, 1)}


def test_ensure_private_dir_fixes_modes_whatever_the_umask(tmp_path, umask_000):
    deep = tmp_path / "a" / "b" / "state"
    ensure_private_dir(str(deep), 0o700)
    assert mode_of(deep) == 0o700 and mode_of(deep.parent) == 0o700
    deep.chmod(0o777)
    ensure_private_dir(str(deep), 0o711)
    assert mode_of(deep) == 0o711


def test_ensure_private_dir_refuses_a_symlink_or_a_foreign_directory(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    link = tmp_path / "state"
    link.symlink_to(elsewhere)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        ensure_private_dir(str(link), 0o700)
    assert mode_of(elsewhere) == 0o755
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chown(foreign, NOBODY, NOBODY)
    with pytest.raises(UnsafeFile, match="belongs to uid 65534"):
        ensure_private_dir(str(foreign), 0o700)


def test_make_dirs_leaves_existing_directories_alone(tmp_path, umask_000):
    existing = tmp_path / "logs"
    existing.mkdir()
    existing.chmod(0o755)
    make_dirs(str(existing / "oisp" / "x"), 0o711)
    assert mode_of(existing) == 0o755
    assert mode_of(existing / "oisp") == 0o711 and mode_of(existing / "oisp" / "x") == 0o711
