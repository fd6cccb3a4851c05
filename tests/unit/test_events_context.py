"""Host block and the per-pid process cache (with a fake /proc)."""
from __future__ import annotations

import os
import pwd

import pytest

from oisp_daemon.events.context import HostContext, ProcessCache, app_specific_id, oisp_arch, os_pretty_name


@pytest.mark.parametrize("machine, arch", [("x86_64", "x86_64"), ("aarch64", "aarch64"), ("arm64", "aarch64"), ("armv7l", "arm"), ("i686", "i686"), ("riscv64", "other")])
def test_oisp_arch(machine, arch):
    assert oisp_arch(machine) == arch


def test_os_pretty_name(tmp_path):
    release = tmp_path / "os-release"
    release.write_text('NAME="Debian GNU/Linux"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
    assert os_pretty_name((str(tmp_path / "missing"), str(release))) == "Debian GNU/Linux 12 (bookworm)"
    assert os_pretty_name((str(tmp_path / "missing"),)) is None


def test_device_id_is_the_systemd_app_specific_id():
    # systemd-id128 machine-id --app-specific=9ee92f5f7b084026a3a1b7756eef84fd on a host whose
    # machine-id is 3d1219c7c4c5404aaa1f6d2a48adfda4 prints 822c9a2ce41d4b2e9f9c627bb48a6b50.
    assert app_specific_id("3d1219c7c4c5404aaa1f6d2a48adfda4\n") == "822c9a2c-e41d-4b2e-9f9c-627bb48a6b50"
    assert app_specific_id("not hex") is None
    assert app_specific_id("abcd") is None


def test_host_context_detect(tmp_path):
    release = tmp_path / "os-release"
    release.write_text("PRETTY_NAME='Fedora Linux 40'\n")
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    host = HostContext.collect(os_release_paths=(str(release),), machine_id_path=str(machine_id)).as_dict()
    assert host["os"] == "linux" and host["os_version"] == "Fedora Linux 40"
    assert host["device_id"] == "822c9a2c-e41d-4b2e-9f9c-627bb48a6b50"
    assert host["kernel_version"] == os.uname().release and host["hostname"]
    assert "3d1219c7" not in str(host)


def test_host_context_without_machine_id(tmp_path):
    host = HostContext.collect(os_release_paths=(str(tmp_path / "none"),), machine_id_path=str(tmp_path / "none")).as_dict()
    assert "device_id" not in host and "os_version" not in host


def fake_proc(root, pid, ppid=1, uid=None, comm="agent", cmdline=b"python3\0agent.py\0--fast\0", exe=None):
    uid = os.getuid() if uid is None else uid
    d = root / str(pid)
    d.mkdir()
    (d / "status").write_text(f"Name:\t{comm}\nPPid:\t{ppid}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t7\t7\t7\t7\n")
    (d / "comm").write_text(comm + "\n")
    (d / "cmdline").write_bytes(cmdline)
    if exe:
        os.symlink(exe, d / "exe")
    return d


def test_lookup_reads_proc(tmp_path):
    fake_proc(tmp_path, 100, ppid=10, exe="/usr/bin/python3")
    process, actor = ProcessCache(proc_root=str(tmp_path)).lookup(100)
    assert process == {"pid": 100, "ppid": 10, "exe": "/usr/bin/python3", "name": "agent", "cmdline": "python3 agent.py --fast"}
    assert actor == {"uid": os.getuid(), "gid": 7, "user": pwd.getpwuid(os.getuid()).pw_name}


def test_lookup_is_cached_after_the_process_exits(tmp_path):
    d = fake_proc(tmp_path, 100)
    cache = ProcessCache(proc_root=str(tmp_path))
    first = cache.lookup(100)
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
    assert cache.lookup(100) == first


def test_lookup_of_an_unknown_process_never_raises(tmp_path):
    assert ProcessCache(proc_root=str(tmp_path)).lookup(4242) == ({"pid": 4242}, {})


def test_lookup_of_the_real_current_process():
    process, actor = ProcessCache().lookup(os.getpid())
    assert process["pid"] == os.getpid() and process["ppid"] == os.getppid()
    assert actor["uid"] == os.getuid()


def test_fork_sets_ppid_and_inherits_until_exec(tmp_path):
    fake_proc(tmp_path, 100, exe="/usr/bin/python3")
    cache = ProcessCache(proc_root=str(tmp_path))
    cache.lookup(100)
    cache.note_fork(100, 101)  # the child exits before anyone looks at /proc
    process, actor = cache.lookup(101)
    assert process == {"pid": 101, "ppid": 100, "exe": "/usr/bin/python3", "name": "agent", "cmdline": "python3 agent.py --fast"}
    assert actor["gid"] == 7


def test_fork_ppid_beats_reparented_proc_ppid(tmp_path):
    fake_proc(tmp_path, 101, ppid=1)  # the parent died: /proc says init
    cache = ProcessCache(proc_root=str(tmp_path))
    cache.note_fork(100, 101)
    assert cache.lookup(101)[0]["ppid"] == 100


def test_exec_invalidates_the_image(tmp_path):
    d = fake_proc(tmp_path, 100, comm="bash", cmdline=b"bash\0", exe="/usr/bin/bash")
    cache = ProcessCache(proc_root=str(tmp_path))
    assert cache.lookup(100)[0]["name"] == "bash"
    (d / "comm").write_text("curl\n")
    (d / "cmdline").write_bytes(b"curl\0https://api.openai.com\0")
    os.unlink(d / "exe")
    os.symlink("/usr/bin/curl", d / "exe")
    assert cache.lookup(100)[0]["name"] == "bash"  # cached
    cache.note_exec(100, "/usr/bin/curl")
    process = cache.lookup(100)[0]
    assert (process["name"], process["exe"], process["cmdline"]) == ("curl", "/usr/bin/curl", "curl https://api.openai.com")


def test_exec_filename_survives_a_quick_exit(tmp_path):
    cache = ProcessCache(proc_root=str(tmp_path))
    cache.note_fork(1, 200)
    cache.note_exec(200, "/usr/local/bin/agent")
    assert cache.lookup(200)[0] == {"pid": 200, "ppid": 1, "exe": "/usr/local/bin/agent"}


def test_the_kernels_uid_wins_over_a_setuid_wrappers_parent(tmp_path):
    fake_proc(tmp_path, 100, uid=0)  # root's test runner
    cache = ProcessCache(proc_root=str(tmp_path))
    cache.lookup(100)
    cache.note_fork(100, 101)  # setpriv --reuid 65534 ... curl: no exec after the setuid
    cache.note_exec(101, "/usr/bin/curl")  # and gone before the pipeline looks at /proc
    cache.note_uid(101, 65534)  # from the data record
    assert cache.lookup(101)[1] == {"uid": 65534, "user": pwd.getpwuid(65534).pw_name}


def test_a_matching_kernel_uid_keeps_the_gid(tmp_path):
    fake_proc(tmp_path, 100)
    cache = ProcessCache(proc_root=str(tmp_path))
    uid = cache.lookup(100)[1]["uid"]
    cache.note_uid(100, uid)
    assert cache.lookup(100)[1]["gid"] == 7


def test_the_kernels_comm_and_uid_survive_a_quick_exit(tmp_path):
    cache = ProcessCache(proc_root=str(tmp_path))
    cache.note_fork(1, 210)
    cache.note_exec(210, "/usr/bin/python3.11", "python3", 1000)
    process, actor = cache.lookup(210)
    assert (process["exe"], process["name"], actor["uid"]) == ("/usr/bin/python3.11", "python3", 1000)
    cache.note_comm(220, "curl")  # no exec seen (started before the sensor), /proc gone
    cache.note_uid(220, 1001)
    process, actor = cache.lookup(220)
    assert (process["name"], actor["uid"]) == ("curl", 1001)


def test_proc_wins_over_what_the_kernel_said_while_it_exists(tmp_path):
    fake_proc(tmp_path, 230, comm="node", cmdline=b"node\0app.js\0", exe="/usr/bin/node")
    cache = ProcessCache(proc_root=str(tmp_path))
    cache.note_comm(230, "node-MainThread")
    process, _ = cache.lookup(230)
    assert (process["name"], process["exe"]) == ("node", "/usr/bin/node")


def test_the_command_line_read_at_exec_survives_a_quick_exit(tmp_path):
    cache = ProcessCache(proc_root=str(tmp_path))
    cache.note_exec(240, "/work/.venv/bin/python", "python", 0, b"python\0client.py\0--ca\0ca.pem\0", "/usr/bin/python3.11")
    process, _ = cache.lookup(240)
    assert (process["exe"], process["cmdline"]) == ("/usr/bin/python3.11", "python client.py --ca ca.pem")


def test_forget_drops_the_pid(tmp_path):
    cache = ProcessCache(proc_root=str(tmp_path))
    cache.note_fork(1, 300)
    cache.forget(300)
    assert cache.lookup(300) == ({"pid": 300}, {})


def test_cache_is_bounded(tmp_path):
    cache = ProcessCache(proc_root=str(tmp_path), max_entries=3)
    for pid in range(10, 16):
        cache.note_fork(1, pid)
    assert cache.lookup(10)[0] == {"pid": 10}  # evicted
    assert cache.lookup(15)[0] == {"pid": 15, "ppid": 1}


def test_unknown_uid_has_no_user_name(tmp_path):
    fake_proc(tmp_path, 100, uid=4_000_000)
    assert ProcessCache(proc_root=str(tmp_path)).lookup(100)[1] == {"uid": 4_000_000, "gid": 7}
