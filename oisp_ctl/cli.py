"""oisp-ctl: the unprivileged command-line client of oisp-sensor.

Control operations go over the Unix socket, or over D-Bus with --bus; `tail` always uses the
socket (captured content never travels on the bus). Exit codes: 0 success, 1 an error (the message
names cause and fix), 2 a usage error. This package must never import oisp_daemon: it runs as any
user on machines where the daemon's dependencies (bcc, root) are out of reach.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO

from oisp_ctl import completion, daemon_socket, doctor, protocol
from oisp_ctl.client import DBUS_ADDRESS_ENV, BusClient, ClientError, SocketClient
from oisp_ctl.format import (format_dropped, format_event, format_session, format_sessions,
                             format_status, use_color)
from oisp_ctl.protocol import ProtocolError

SOCKET_ENV = "OISP_SOCKET"
REDACTION_MODES = protocol.REDACTION_MODES

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: Optional[float] = None) -> float:
    """--since as POSIX seconds: "300" or "5m" (ago; units s, m, h, d) or an ISO 8601 time.

    An ISO time without a zone is local time, as a person typing it means.
    """
    now = time.time() if now is None else now
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match:
        return now - float(match.group(1)) * _SINCE_UNITS[match.group(2) or "s"]
    iso = text.strip()
    if iso.endswith(("Z", "z")):
        iso = iso[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "%r is neither seconds ago (300, 5m, 2h, 1d) nor an ISO 8601 time "
            "(2025-12-22T20:15:05Z, 2025-12-22 20:15)" % text) from None
    return parsed.timestamp()  # naive: local time


def socket_path(option: Optional[str]) -> str:
    """--socket, else $OISP_SOCKET, else $OISP_SENSOR_CONTROL_SOCKET, else the default path."""
    return option or os.environ.get(SOCKET_ENV) or protocol.socket_path()


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    """--socket/--bus/--json, accepted before and after the command.

    Subcommands get SUPPRESS defaults so that a value given before the command is not reset.
    """
    parser = argparse.ArgumentParser(add_help=False)

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--socket", metavar="PATH", default=default(None),
                        help="control socket (default: $%s, else %s)"
                        % (SOCKET_ENV, protocol.DEFAULT_SOCKET_PATH))
    parser.add_argument("--bus", action="store_true", default=default(False),
                        help="send control operations over the D-Bus system bus (or "
                        "$%s) instead of the socket" % DBUS_ADDRESS_ENV)
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="print machine-readable JSON")
    return parser


def build_parser() -> argparse.ArgumentParser:
    common = _common_options(suppress=True)
    parser = argparse.ArgumentParser(
        prog="oisp-ctl", parents=[_common_options(suppress=False)],
        description="Control the oisp-sensor daemon and watch the AI traffic it captures.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def command(group: Any, name: str, run: Callable[..., int], help: str,
                **kwargs: Any) -> argparse.ArgumentParser:
        sub = group.add_parser(name, parents=[common], help=help, description=help, **kwargs)
        sub.set_defaults(run=run)
        return sub

    command(commands, "status", _status, "show the daemon's version, probes, counters and sessions")

    session = commands.add_parser("session", help="recording sessions",
                                  description="recording sessions")
    sessions = session.add_subparsers(dest="session_command", metavar="ACTION")
    sessions.required = True
    start = command(sessions, "start", _session_start,
                    "start recording matching events to a file")
    start.add_argument("name", metavar="NAME")
    _filter_options(start, with_uid=True, with_session=False)
    start.add_argument("--redaction", choices=REDACTION_MODES,
                       help="the session's redaction mode (weaker than the global one needs "
                       "oisp-admin)")
    start.add_argument("--output", metavar="PATH",
                       help="the JSONL file to write (default: the daemon's sessions directory)")
    stop = command(sessions, "stop", _session_stop, "stop a session")
    stop.add_argument("name", metavar="NAME")
    command(sessions, "list", _session_list, "list sessions")

    paths = commands.add_parser("binary-paths", help="extra binaries to probe (statically linked TLS)",
                                description="extra binaries to probe (statically linked TLS)")
    path_commands = paths.add_subparsers(dest="paths_command", metavar="ACTION")
    path_commands.required = True
    add = command(path_commands, "add", _paths_change, "probe a binary or library")
    add.add_argument("path", metavar="PATH")
    add.set_defaults(op=protocol.OP_BINARY_PATHS_ADD)
    remove = command(path_commands, "remove", _paths_change, "stop probing a binary or library")
    remove.add_argument("path", metavar="PATH")
    remove.set_defaults(op=protocol.OP_BINARY_PATHS_REMOVE)
    command(path_commands, "list", _paths_list, "list the extra binary paths")

    redaction = commands.add_parser("redaction", help="the global redaction mode",
                                    description="the global redaction mode")
    redaction_commands = redaction.add_subparsers(dest="redaction_command", metavar="ACTION")
    redaction_commands.required = True
    command(redaction_commands, "get", _redaction_get, "show the global redaction mode")
    set_mode = command(redaction_commands, "set", _redaction_set, "change the global redaction mode")
    set_mode.add_argument("mode", metavar="MODE", choices=REDACTION_MODES,
                          help="one of: %s" % ", ".join(REDACTION_MODES))

    tail = command(commands, "tail", _tail,
                   "print captured events, one line each (like journalctl); -f to follow")
    tail.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new events until interrupted")
    _filter_options(tail, with_uid=True, with_session=True)
    tail.add_argument("--since", metavar="WHEN", type=parse_since,
                      help="start with recent events from then: seconds ago (300, 5m, 2h) or an "
                      "ISO 8601 time; without -f the default is every event the daemon keeps")

    reload = command(commands, "reload", _reload, "re-read the daemon's configuration")
    reload.add_argument("--pid", type=int, metavar="PID",
                        help="reload the daemon with this pid, over the control socket it listens "
                        "on (the unit's ExecReload: it waits for the result, which a SIGHUP "
                        "cannot; needs root)")
    command(commands, "doctor", _doctor,
            "check that this machine can run the sensor and say what to fix")
    shells = command(commands, "completion", _completion, "print a shell completion script")
    shells.add_argument("shell", metavar="SHELL", choices=completion.SHELLS,
                        help="one of: %s" % ", ".join(completion.SHELLS))
    return parser


def _filter_options(parser: argparse.ArgumentParser, with_uid: bool, with_session: bool) -> None:
    parser.add_argument("--type", dest="types", action="append", metavar="TYPE",
                        help="event type or glob, e.g. 'ai.*' (repeatable)")
    parser.add_argument("--pid", dest="pids", action="append", type=_non_negative, metavar="PID",
                        help="process id (repeatable)")
    parser.add_argument("--comm", dest="comms", action="append", metavar="NAME",
                        help="process name (repeatable)")
    if with_uid:
        parser.add_argument("--uid", dest="uids", action="append", type=_non_negative,
                            metavar="UID", help="user id of the process (repeatable)")
    parser.add_argument("--provider", dest="providers", action="append", metavar="PROVIDER",
                        help="AI provider, e.g. openai (repeatable)")
    if with_session:
        parser.add_argument("--session", dest="sessions", action="append", metavar="NAME",
                            help="only events recorded into this session (repeatable)")


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError("%r is not a non-negative integer" % text)
    return value


def _filters(args: argparse.Namespace) -> Dict[str, List[Any]]:
    keys = ("types", "pids", "comms", "uids", "providers", "sessions")
    return {key: getattr(args, key) for key in keys if getattr(args, key, None)}


# -- talking to the daemon -----------------------------------------------------------------------


def _control(args: argparse.Namespace, op: str, op_args: Optional[Dict[str, Any]] = None) -> Any:
    """Run one control operation over D-Bus (--bus) or the socket."""
    if args.bus:
        return BusClient(os.environ.get(DBUS_ADDRESS_ENV)).call(op, op_args)
    with SocketClient(socket_path(args.socket)) as client:
        return client.call(op, op_args)


def _socket_of(pid: int) -> str:
    """The one control socket pid listens on; ClientError when it has none or cannot be read."""
    try:
        paths = daemon_socket.listening_paths(pid)
    except OSError as exc:
        raise ClientError("cannot read the sockets of pid %d: %s (it must be running, and "
                          "reading another user's process needs root)" % (pid, exc.strerror or exc)) from None
    if len(paths) != 1:
        raise ClientError("pid %d listens on %s, not on one control socket: is it the oisp-sensor "
                          "daemon? (systemctl show -p MainPID oisp-sensor)"
                          % (pid, ", ".join(paths) or "no Unix socket"))
    return paths[0]


def _print_json(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _status(args: argparse.Namespace, out: TextIO) -> int:
    result = _control(args, protocol.OP_STATUS)
    if args.json or not isinstance(result, dict):
        _print_json(result, out)
    else:
        out.write(format_status(result) + "\n")
    return EXIT_OK


def _session_start(args: argparse.Namespace, out: TextIO) -> int:
    op_args: Dict[str, Any] = {"name": args.name, "filters": _filters(args)}
    if args.redaction:
        op_args["redaction"] = args.redaction
    if args.output:
        # the daemon has another working directory: send an absolute path
        op_args["sink"] = {"path": os.path.abspath(args.output)}
    result = _control(args, protocol.OP_SESSION_START, op_args)
    if args.json or not isinstance(result, dict):
        _print_json(result, out)
    else:
        out.write("started session " + format_session(result) + "\n")
    return EXIT_OK


def _session_stop(args: argparse.Namespace, out: TextIO) -> int:
    result = _control(args, protocol.OP_SESSION_STOP, {"name": args.name})
    if args.json or not isinstance(result, dict):
        _print_json(result, out)
    else:
        out.write("stopped session " + format_session(result) + "\n")
    return EXIT_OK


def _session_list(args: argparse.Namespace, out: TextIO) -> int:
    result = _control(args, protocol.OP_SESSION_LIST)
    if args.json or not isinstance(result, list):
        _print_json(result, out)
    else:
        out.write(format_sessions(result) + "\n")
    return EXIT_OK


def _print_paths(paths: Any, args: argparse.Namespace, out: TextIO) -> None:
    if args.json or not isinstance(paths, list):
        _print_json(paths, out)
    elif not paths:
        out.write("no extra binary paths (the daemon finds shared TLS libraries itself; add a "
                  "statically linked binary with: oisp-ctl binary-paths add PATH)\n")
    else:
        out.write("".join("%s\n" % p for p in paths))


def _paths_change(args: argparse.Namespace, out: TextIO) -> int:
    # the daemon has another working directory: send an absolute path
    _print_paths(_control(args, args.op, {"path": os.path.abspath(args.path)}), args, out)
    return EXIT_OK


def _paths_list(args: argparse.Namespace, out: TextIO) -> int:
    _print_paths(_control(args, protocol.OP_BINARY_PATHS_LIST), args, out)
    return EXIT_OK


def _print_redaction(result: Any, args: argparse.Namespace, out: TextIO) -> None:
    if args.json or not isinstance(result, dict):
        _print_json(result, out)
    else:
        out.write("%s (%s custom patterns)\n" % (result.get("mode"), result.get("custom_patterns", 0)))


def _redaction_get(args: argparse.Namespace, out: TextIO) -> int:
    _print_redaction(_control(args, protocol.OP_REDACTION_GET), args, out)
    return EXIT_OK


def _redaction_set(args: argparse.Namespace, out: TextIO) -> int:
    _print_redaction(_control(args, protocol.OP_REDACTION_SET, {"mode": args.mode}), args, out)
    return EXIT_OK


def _reload(args: argparse.Namespace, out: TextIO) -> int:
    if args.pid is not None:
        if args.bus:
            raise ClientError("--pid finds the daemon's socket; it cannot be used with --bus")
        args.socket = _socket_of(args.pid)
    result = _control(args, protocol.OP_RELOAD)
    if args.json or not isinstance(result, dict):
        _print_json(result, out)
    elif result.get("reloaded"):
        out.write("configuration reloaded\n")
    if isinstance(result, dict) and not result.get("reloaded"):
        sys.stderr.write("oisp-ctl: reload failed: %s; the daemon keeps its previous "
                         "configuration\n" % (result.get("error") or "no reason given"))
        return EXIT_ERROR
    return EXIT_OK


def _tail(args: argparse.Namespace, out: TextIO) -> int:
    if args.bus:
        sys.stderr.write("oisp-ctl: tail reads events over the control socket only (captured "
                         "content never travels on D-Bus); leave out --bus\n")
        return EXIT_USAGE
    since = args.since
    if since is None and not args.follow:
        since = 0.0  # everything the daemon still keeps
    tail_args: Dict[str, Any] = {"filters": _filters(args), "since": since, "follow": args.follow}
    color = not args.json and use_color(out)
    timeout = None if args.follow else 30.0
    with SocketClient(socket_path(args.socket), timeout=timeout) as client:
        for kind, value in client.tail(tail_args):
            if kind == "event":
                out.write((json.dumps(value, ensure_ascii=False) if args.json
                           else format_event(value, color)) + "\n")
            elif kind == "dropped":
                notice = format_dropped(int(value), color and not args.json)
                (sys.stderr if args.json else out).write(notice + "\n")
            elif value != "replayed":
                out.flush()
                sys.stderr.write("oisp-ctl: the daemon ended the stream (%s)\n" % value)
                return EXIT_ERROR
            if args.follow:
                out.flush()
    return EXIT_OK


def _doctor(args: argparse.Namespace, out: TextIO) -> int:
    checks = doctor.run_checks(socket_path(args.socket))
    if args.json:
        _print_json(doctor.as_json(checks), out)
    else:
        out.write(doctor.render(checks) + "\n")
    return doctor.exit_code(checks)


def _completion(args: argparse.Namespace, out: TextIO) -> int:
    out.write(completion.render(args.shell, build_parser()))
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None) -> int:
    """Run oisp-ctl; return the exit code (argparse exits with 2 by itself on usage errors)."""
    out = sys.stdout if out is None else out
    args = build_parser().parse_args(argv)
    try:
        return args.run(args, out)
    except ProtocolError as exc:
        sys.stderr.write("oisp-ctl: %s\n" % exc.message)
    except ClientError as exc:
        sys.stderr.write("oisp-ctl: %s\n" % exc)
    except KeyboardInterrupt:
        return EXIT_OK  # ^C ends `tail -f`, as it ends journalctl -f
    except BrokenPipeError:
        # the reader left (oisp-ctl tail | head): not an error; keep Python from complaining
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    return EXIT_ERROR
