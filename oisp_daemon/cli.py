"""`oisp-sensor` command line: `record` (foreground capture to a JSONL file), `run` (the daemon,
under systemd), `check-config` (validate configuration files as the daemon would) and
`tls-scan` (what the sensor finds in a binary or process)."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from . import __version__
from .config.defaults import CONFIG_FILE, DROPIN_DIR
from .config.load import ConfigError, load, system_files


def _uid(text: str) -> int:
    if not text.isdigit() or int(text) >= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a user id (a number, as in id -u)")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oisp-sensor",
        description="Zero-instrumentation observability for AI traffic (eBPF, OISP v0.1 events).",
    )
    parser.add_argument("--version", action="version", version=f"oisp-sensor {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="capture in the foreground and write events to a JSONL file")
    rec.add_argument("-o", "--output", help="JSONL file to append events to (default: ./oisp-events-<time>.jsonl)")
    rec.add_argument("-c", "--config", help="YAML configuration file")
    rec.add_argument("--comm", help="capture only processes with this command name (as in ps -o comm)")
    rec.add_argument("--pid", type=int, default=0, help="capture only this process id")
    rec.add_argument("--uid", type=_uid, help="capture only processes running as this user id (filtered in the kernel)")
    run = sub.add_parser("run", help="run the daemon (under systemd: Type=notify)")
    run.add_argument("-c", "--config", default=CONFIG_FILE, help=f"configuration file (default {CONFIG_FILE}; its config.d/ applies too)")
    scan = sub.add_parser("tls-scan", help="show the TLS library functions found in a binary or a process, and how")
    scan.add_argument("targets", nargs="+", metavar="PATH|PID", help="a file, or a pid (its executable and mapped files)")
    scan.add_argument("--json", action="store_true", help="machine-readable output")
    scan.add_argument("--all", action="store_true", help="also list mapped files with no TLS library")
    check = sub.add_parser("check-config", help="validate configuration files; exit 1 naming file, key and problem")
    check.add_argument("files", nargs="*", help=f"files to check (default: {CONFIG_FILE} and {DROPIN_DIR}/*.yaml)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="oisp-sensor: %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "record":
        from .record import RecordOptions, run

        try:
            config = load([args.config] if args.config else [])
        except ConfigError as exc:
            print(f"oisp-sensor record: bad configuration:\n{exc}", file=sys.stderr)
            return 1
        return run(RecordOptions(output=args.output, config=config, comm=args.comm, pid=args.pid, uid=args.uid))
    if args.command == "run":
        from .service import run as run_daemon

        return run_daemon(args.config)
    if args.command == "check-config":
        return check_config(args.files)
    if args.command == "tls-scan":
        from .capture.tls_scan import main as tls_scan

        return tls_scan(args.targets, args.json, args.all)
    return 2


def check_config(files: List[str]) -> int:
    """Validate files (each alone and merged, with OISP_* overrides) as the daemon would."""
    files = files or system_files()
    try:
        load(files)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"configuration OK ({', '.join(files) or 'built-in defaults only'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
