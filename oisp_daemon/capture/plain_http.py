"""Plain HTTP to local model servers: which destinations bpf/sockets.c tracks, and its probes.

Ollama, LM Studio, vLLM and llama.cpp serve plain HTTP, mostly on loopback; no TLS library is
involved, so their traffic is read from the socket syscalls instead. The kernel copies only
sockets whose destination is in a configured set (the defaults below plus `capture.plain_http`),
learned when they connect (and, with `capture.plain_http_server`, when a listener bound to such
an address accepts): every other socket costs one map lookup per call.

A destination is "host:port", "[v6]:port" or "CIDR:port" (e.g. "10.0.0.0/8:11434"); a host name
is resolved when the sensor starts (`capture` settings take effect at a restart). Destinations become prefixes
of an LPM trie keyed by port and address (IPv4 as IPv4-mapped IPv6), see `struct
sockets_dest_key` in bpf/sockets.c.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple, Union

from .records import PLAIN_TAG

log = logging.getLogger(__name__)

BPF_FILE = "sockets.c"

# Loopback ports of the local model servers: Ollama, LM Studio, vLLM, llama.cpp's server.
DEFAULT_PORTS = (11434, 1234, 8000, 8080)
LOOPBACK = ("127.0.0.0/8", "::1/128")

# (tracepoint, program) pairs: the probe table of bpf/sockets.c. The eight read/write calls share
# one exit program (their exits carry the same `ret`).
IO_CALLS = ("write", "read", "sendto", "recvfrom", "writev", "readv", "sendmsg", "recvmsg")
PROBES: Tuple[Tuple[str, str], ...] = tuple(
    [(f"syscalls:sys_enter_{call}", f"sockets_enter_{call}") for call in IO_CALLS]
    + [(f"syscalls:sys_exit_{call}", "sockets_exit_io") for call in IO_CALLS]
    + [
        ("syscalls:sys_enter_connect", "sockets_enter_connect"),
        ("syscalls:sys_exit_connect", "sockets_exit_connect"),
        ("syscalls:sys_enter_close", "sockets_enter_close"),
    ]
)
# Only with capture.plain_http_server: listeners and the connections they accept.
SERVER_PROBES: Tuple[Tuple[str, str], ...] = (
    ("syscalls:sys_enter_bind", "sockets_enter_bind"),
    ("syscalls:sys_exit_bind", "sockets_exit_bind"),
    ("syscalls:sys_enter_accept", "sockets_enter_accept"),
    ("syscalls:sys_exit_accept", "sockets_exit_accept"),
    ("syscalls:sys_enter_accept4", "sockets_enter_accept4"),
    ("syscalls:sys_exit_accept4", "sockets_exit_accept"),
)
CONTINUE_FN = "sockets_continue_emit"  # tail call of a large read/write (its own program type)

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class PlainHttpConfigError(ValueError):
    """A capture.plain_http entry is malformed; the message names it and says why."""


@dataclass(frozen=True)
class Destination:
    """One tracked destination: an address prefix and a port."""

    network: Network
    port: int

    def key(self) -> Tuple[int, bytes, bytes]:
        """(prefixlen, port in network order, 16-byte address): one LPM trie entry."""
        net = self.network
        if isinstance(net, ipaddress.IPv4Network):
            addr = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + net.network_address.packed).packed
            bits = 96 + net.prefixlen
        else:
            addr, bits = net.network_address.packed, net.prefixlen
        return 16 + bits, self.port.to_bytes(2, "big"), addr

    def __str__(self) -> str:
        net = self.network
        host = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        return f"[{host}]:{self.port}" if ":" in host and "/" not in host else f"{host}:{self.port}"


def _split(entry: str) -> Tuple[str, int]:
    """(host or CIDR, port) of "host:port", "[v6]:port", "CIDR:port" or "[v6/len]:port"."""
    text = entry.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1:].startswith(":"):
            raise PlainHttpConfigError(f"{entry!r}: expected [address]:port")
        host, port_text = text[1:end], text[end + 2:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise PlainHttpConfigError(f"{entry!r}: expected host:port or CIDR:port (a port is required)")
        if ":" in host and "/" not in host:
            raise PlainHttpConfigError(f"{entry!r}: write an IPv6 address in brackets, as [::1]:11434")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise PlainHttpConfigError(f"{entry!r}: port must be a number from 1 to 65535")
    return host, int(port_text)


def _networks(host: str, entry: str, resolve: bool) -> List[Network]:
    if "/" in host:
        try:
            return [ipaddress.ip_network(host, strict=True)]
        except ValueError as exc:
            raise PlainHttpConfigError(f"{entry!r}: {exc}") from None
    try:
        return [ipaddress.ip_network(host)]
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", host) or ".." in host:
        raise PlainHttpConfigError(f"{entry!r}: {host!r} is neither an IP address, a CIDR prefix nor a host name")
    if not resolve:
        return []
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        log.warning("capture.plain_http: %s does not resolve (%s); it is not tracked until a reload", host, exc)
        return []
    return sorted({ipaddress.ip_network(info[4][0].split("%", 1)[0]) for info in infos}, key=str)


def parse_entry(entry: Any, resolve: bool = True) -> List[Destination]:
    """The destinations of one `capture.plain_http` entry; PlainHttpConfigError when malformed.
    A host name is looked up unless `resolve` is false (syntax check only: check-config)."""
    if not isinstance(entry, str):
        raise PlainHttpConfigError(f"{entry!r}: expected a string host:port or CIDR:port")
    host, port = _split(entry)
    return [Destination(net, port) for net in _networks(host, entry, resolve)]


def check(config: Dict[str, Any]) -> None:
    """Syntax of every capture.plain_http entry (names are not resolved): for check-config."""
    for entry in config.get("capture", {}).get("plain_http", []):
        parse_entry(entry, resolve=False)


@dataclass(frozen=True)
class PlainHttpConfig:
    """What bpf/sockets.c is set up with."""

    destinations: Tuple[Destination, ...]
    server_side: bool = False

    @property
    def ports(self) -> Set[int]:
        return {d.port for d in self.destinations}


def default_destinations() -> List[Destination]:
    return [Destination(ipaddress.ip_network(net), port) for port in DEFAULT_PORTS for net in LOOPBACK]


def from_config(capture: Dict[str, Any], resolve: bool = True) -> PlainHttpConfig:
    """The tracked set of a `capture` config section: the defaults (unless
    `plain_http_defaults` is off), then `plain_http` entries, each destination once."""
    found: List[Destination] = default_destinations() if capture.get("plain_http_defaults", True) else []
    for entry in capture.get("plain_http", []):
        found.extend(parse_entry(entry, resolve))
    unique = tuple(dict.fromkeys(found))
    return PlainHttpConfig(unique, bool(capture.get("plain_http_server", False)))


# -- the BPF maps -------------------------------------------------------------------------------


def write_maps(bpf: Any, config: PlainHttpConfig) -> None:
    """Make the kernel's destination set, port set and server-side switch equal `config`."""
    import ctypes

    dest = bpf["sockets_dest"]
    wanted = {}
    for d in config.destinations:
        prefixlen, port, addr = d.key()
        k = dest.Key()
        k.prefixlen = prefixlen
        ctypes.memmove(ctypes.addressof(k.port), port, 2)
        ctypes.memmove(ctypes.addressof(k.addr), addr, 16)
        wanted[(prefixlen, port, addr)] = k
    for k in list(dest.keys()):
        if (k.prefixlen, bytes(k.port), bytes(k.addr)) not in wanted:
            del dest[k]
    for k in wanted.values():
        dest[k] = ctypes.c_uint8(1)
    ports = bpf["sockets_ports"]
    want_ports = {socket.htons(p) for p in config.ports}
    for k in list(ports.keys()):
        if k.value not in want_ports:
            del ports[k]
    for p in want_ports:
        ports[ctypes.c_uint16(p)] = ctypes.c_uint8(1)
    bpf["sockets_config"][ctypes.c_int(0)] = ctypes.c_uint32(1 if config.server_side else 0)


# -- attaching -----------------------------------------------------------------------------------

TRACEFS_EVENTS = ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events")
_FIELD = re.compile(r"field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);")


class PlainHttpUnavailable(RuntimeError):
    """The socket tracepoints cannot be used here; TLS capture goes on without them."""


def tracepoint_fields(tracepoint: str, events_dirs: Iterable[str] = TRACEFS_EVENTS) -> Optional[List[Tuple[str, int, int]]]:
    """(name, offset, size) of a tracepoint's own fields (after the common ones), from tracefs."""
    category, event = tracepoint.split(":", 1)
    for base in events_dirs:
        try:
            with open(os.path.join(base, category, event, "format"), encoding="ascii") as fh:
                text = fh.read()
        except OSError:
            continue
        out = []
        for m in _FIELD.finditer(text):
            name = m.group("decl").split()[-1].lstrip("*")
            if not name.startswith("common_"):
                out.append((name, int(m.group("offset")), int(m.group("size"))))
        return out
    return None


def check_layout(tracepoint: str, fields: Optional[List[Tuple[str, int, int]]]) -> Optional[str]:
    """Why `struct sockets_sys_enter` / `_exit` (bpf/sockets.c) does not match the tracepoint's
    record, or None when it does: the syscall number at 8, then 8-byte argument slots from 16, or
    the return value at 16."""
    if fields is None:
        return f"{tracepoint}: no format in tracefs"
    args = [f for f in fields if f[0] != "__syscall_nr"]
    if tracepoint.split(":", 1)[1].startswith("sys_exit_"):
        expected = [("ret", 16, 8)]
    else:
        expected = [(name, 16 + 8 * i, 8) for i, (name, _, _) in enumerate(args)]
    if args != expected or not args:
        return f"{tracepoint}: fields {args} are not the 8-byte slots from offset 16 that bpf/sockets.c reads"
    return None


def attach(bpf: Any, tracepoint_type: int, config: PlainHttpConfig) -> None:
    """Set up bpf/sockets.c in a loaded object: its tail call, its maps from `config`, its
    tracepoints (and the server side's, when configured) and the listeners already running.
    PlainHttpUnavailable when a tracepoint does not exist or has another layout."""
    import ctypes

    probes = PROBES + (SERVER_PROBES if config.server_side else ())
    for tracepoint in sorted({tp for tp, _ in probes}):
        problem = check_layout(tracepoint, tracepoint_fields(tracepoint))
        if problem:
            raise PlainHttpUnavailable(problem)
    try:
        cont = bpf.load_func(CONTINUE_FN, tracepoint_type)
        bpf["sockets_continue"][ctypes.c_int(0)] = ctypes.c_int(cont.fd)
        write_maps(bpf, config)
        # before the tracepoints: no program writes the maps yet (see write_connections)
        connections = write_connections(bpf, existing_connections(config))
        for tracepoint, fn_name in probes:
            bpf.attach_tracepoint(tp=tracepoint, fn_name=fn_name)
    except Exception as exc:  # bcc raises bare Exception
        raise PlainHttpUnavailable(f"loading the socket programs failed: {exc}") from exc
    listeners = write_listeners(bpf, existing_listeners(config)) if config.server_side else 0
    log.info("plain HTTP: %d destinations (%s); %d connections already open%s", len(config.destinations),
             ", ".join(str(d) for d in config.destinations[:8]) + (", ..." if len(config.destinations) > 8 else ""),
             connections, f"; server side on, {listeners} listeners already running" if config.server_side else "")


# -- sockets that existed before the sensor -------------------------------------------------------

_TCP_ESTABLISHED = "01"
_TCP_LISTEN = "0A"
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


@dataclass(frozen=True)
class ProcSocket:
    """One line of /proc/net/tcp or tcp6."""

    state: str  # "01" established, "0A" listening, ...
    local: Tuple[Address, int]
    remote: Tuple[Address, int]
    inode: int


def _proc_net_tcp(proc: str) -> Iterator[ProcSocket]:
    """The TCP sockets of the reader's network namespace (/proc/net/tcp and tcp6); lines that
    cannot be read are skipped."""
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            with open(os.path.join(proc, "net", name), encoding="ascii", errors="replace") as fh:
                lines = fh.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or not fields[9].isdigit():
                continue
            local, remote = _proc_endpoint(fields[1], v6), _proc_endpoint(fields[2], v6)
            if local is not None and remote is not None:
                yield ProcSocket(fields[3], local, remote, int(fields[9]))


def _proc_endpoint(text: str, v6: bool) -> Optional[Tuple[Address, int]]:
    addr_hex, _, port_hex = text.partition(":")
    address = _proc_address(addr_hex, v6)
    try:
        port = int(port_hex, 16)
    except ValueError:
        return None
    return None if address is None else (address, port)


def _proc_net_listeners(proc: str, config: PlainHttpConfig) -> Set[int]:
    """Socket inodes of TCP listeners bound to a tracked destination or to the wildcard address
    on a tracked port."""
    return {s.inode for s in _proc_net_tcp(proc) if s.state == _TCP_LISTEN and _listens_on_set(*s.local, config)}


def _proc_address(hex_text: str, v6: bool) -> Optional[Address]:
    try:
        raw = bytes.fromhex(hex_text)
    except ValueError:
        return None
    # /proc/net/tcp prints each 32-bit word in host (little-endian) order
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if v6 and len(words) == 16:
        addr = ipaddress.IPv6Address(words)
        return addr.ipv4_mapped or addr
    if not v6 and len(words) == 4:
        return ipaddress.IPv4Address(words)
    return None


def _in_set(address: Address, port: int, config: PlainHttpConfig) -> bool:
    return any(d.port == port and address.version == d.network.version and address in d.network for d in config.destinations)


def _listens_on_set(address: Address, port: int, config: PlainHttpConfig) -> bool:
    if port not in config.ports:
        return False
    return address.is_unspecified or _in_set(address, port, config)


def _proc_net_connections(proc: str, config: PlainHttpConfig) -> Dict[int, bool]:
    """Established TCP connections the kernel would track had it seen them begin: socket inode ->
    whether it is the accepting end (its own address is in the set, with the server side on)
    rather than the connecting one (its peer's address is)."""
    found: Dict[int, bool] = {}
    for s in _proc_net_tcp(proc):
        if s.state != _TCP_ESTABLISHED:
            continue
        if _in_set(*s.remote, config):
            found[s.inode] = False
        elif config.server_side and _in_set(*s.local, config):
            found[s.inode] = True
    return found


def _socket_fds(proc: str, inodes: Iterable[int]) -> List[Tuple[int, int, int]]:
    """(pid, fd, inode) of every descriptor of a process that holds one of the sockets. Processes
    that go away meanwhile are skipped."""
    wanted = set(inodes)
    if not wanted:
        return []
    found = []
    for pid_text in os.listdir(proc):
        if not pid_text.isdigit():
            continue
        fd_dir = os.path.join(proc, pid_text, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd_text in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd_text))
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1].isdigit() and int(target[8:-1]) in wanted:
                found.append((int(pid_text), int(fd_text), int(target[8:-1])))
    return found


def existing_listeners(config: PlainHttpConfig, proc: str = "/proc") -> List[Tuple[int, int]]:
    """(pid, fd) of every listening socket on the tracked set, from /proc: servers started before
    the sensor. Processes that go away meanwhile are skipped."""
    return [(pid, fd) for pid, fd, _ in _socket_fds(proc, _proc_net_listeners(proc, config))]


def existing_connections(config: PlainHttpConfig, proc: str = "/proc") -> List[Tuple[int, int, bool]]:
    """(pid, fd, accepting end?) of every connection on the tracked set that is open already: a
    client's keep-alive connection to a model server it opened before the sensor started."""
    ends = _proc_net_connections(proc, config)
    return [(pid, fd, ends[inode]) for pid, fd, inode in _socket_fds(proc, ends)]


def write_connections(bpf: Any, connections: Iterable[Tuple[int, int, bool]]) -> int:
    """Track open connections as if their connect or accept had been seen: (pid, fd) entries with
    connection numbers from 0, the pids' bits, and the kernel's next number after them. Only
    before the socket programs are attached: user space cannot set a bit of `sockets_pids`
    while the kernel may set another bit of the same word. How many were written."""
    import ctypes

    fds, pids = bpf["sockets_fds"], bpf["sockets_pids"]
    bits: Dict[int, int] = {}
    count = 0
    for pid, fd, server in connections:
        k = fds.Key()
        k.pid, k.fd = pid, fd
        v = fds.Leaf()
        v.id = PLAIN_TAG | (count & 0x7FFFFFFF) << 32 | fd
        v.server = 1 if server else 0
        try:
            fds[k] = v
        except Exception:  # map full: that connection is not seen
            log.warning("plain HTTP connection map full; pid %d fd %d not tracked", pid, fd)
            break
        if pid >> 6 < pids.max_entries:  # beyond the bit array the kernel looks every pid up
            bits[pid >> 6] = bits.get(pid >> 6, 0) | 1 << (pid & 63)
        count += 1
    for word, value in bits.items():
        pids[ctypes.c_int(word)] = ctypes.c_uint64(pids[ctypes.c_int(word)].value | value)
    bpf["sockets_next_id"][ctypes.c_int(0)] = ctypes.c_uint64(count)
    return count


def write_listeners(bpf: Any, listeners: Iterable[Tuple[int, int]]) -> int:
    """Mark existing listeners in the kernel; how many were written."""
    import ctypes

    table = bpf["sockets_listeners"]
    count = 0
    for pid, fd in listeners:
        k = table.Key()
        k.pid, k.fd = pid, fd
        try:
            table[k] = ctypes.c_uint8(1)
            count += 1
        except Exception:  # map full: that listener's connections are not seen
            log.warning("plain HTTP listener map full; pid %d fd %d not tracked", pid, fd)
    return count


def forget(bpf: Any, pid: int, conn_id: int) -> None:
    """Drop the kernel's (pid, fd) entry of a connection whose process exited (the kernel closed
    its descriptors without close(2) calls), unless the fd already belongs to a newer one."""
    table = bpf["sockets_fds"]
    k = table.Key()
    k.pid, k.fd = pid, conn_id & 0xFFFFFFFF
    try:
        if table[k].id == conn_id:
            del table[k]
    except KeyError:
        pass
