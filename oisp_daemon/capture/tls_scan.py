"""`oisp-sensor tls-scan PATH|PID`: what the sensor finds in a binary, and how.

For a file: every family's findings (each probe point, its address and the evidence: symbol,
signature or pclntab) and what it looked for and did not find. For a pid: the same for its
executable and every file it maps executable, reached through /proc/PID/root as discovery
reaches them. Needs no BPF and no daemon: it is the scan discovery would run.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from . import libraries
from .discovery import parse_maps
from .probe_table import Scan


def scan_report(path: str, shown: str = "") -> Dict[str, Any]:
    """One file's report: {"path", "identity", "scans": [...]} (scans empty when nothing was found)."""
    identity = libraries.file_identity(path)
    scans = libraries.scan_file(path) if identity is not None else []
    report: Dict[str, Any] = {"path": shown or path, "scans": [_scan_dict(s) for s in scans]}
    if identity is None:
        report["error"] = "no such regular file"
    else:
        report["identity"] = {"device": identity[0], "inode": identity[1]}
        if shown and shown != path:
            report["reached_as"] = path
    return report


def _scan_dict(scan: Scan) -> Dict[str, Any]:
    return {
        "family": scan.family,
        "library": scan.library,
        "supported": scan.supported,
        "locations": [
            {"point": loc.point, "address": "%#x" % loc.address, "method": loc.method,
             **({"returns": ["%#x" % r for r in loc.returns]} if loc.returns else {})}
            for loc in scan.locations
        ],
        "missing": list(scan.missing),
        "notes": list(scan.notes),
    }


def reports_for(target: str, proc: str = "/proc") -> List[Dict[str, Any]]:
    """Reports for a path, or for every executable file a pid maps (its executable first)."""
    if not target.isdigit():
        return [scan_report(target)]
    root = os.path.join(proc, target, "root")
    try:
        with open(os.path.join(proc, target, "maps"), encoding="utf-8", errors="replace") as fh:
            mapped = [m for m in parse_maps(fh.read()) if m.executable]
        exe = os.readlink(os.path.join(proc, target, "exe"))
    except OSError as exc:
        return [{"path": f"pid {target}", "scans": [], "error": f"cannot read the process: {exc.strerror}"}]
    mapped.sort(key=lambda m: m.path != exe)
    return [scan_report(_reachable(m, root, proc, target), m.path) for m in mapped]


def _reachable(mapped, root: str, proc: str, pid: str) -> str:
    """The path discovery would open for this mapping (see Discovery._reach)."""
    for path in (mapped.path, root + mapped.path, os.path.join(proc, pid, "map_files", mapped.span)):
        try:
            if os.stat(path).st_ino == mapped.key[1]:
                return path
        except OSError:
            continue
    return mapped.path


def format_reports(reports: List[Dict[str, Any]], show_all: bool = False) -> str:
    """Text for people: every file with findings; with show_all also the files without."""
    lines: List[str] = []
    quiet = 0
    for report in reports:
        if not report["scans"] and not show_all and "error" not in report:
            quiet += 1
            continue
        head = report["path"] + (f" (as {report['reached_as']})" if "reached_as" in report else "")
        lines.append(head)
        if "error" in report:
            lines.append(f"  {report['error']}")
        if not report["scans"] and "error" not in report:
            lines.append("  no TLS library found")
        for scan in report["scans"]:
            state = "probed" if scan["supported"] and scan["locations"] else "not supported" if not scan["supported"] else "nothing to probe"
            lines.append(f"  {scan['library']} [{scan['family']}]: {state}")
            for loc in scan["locations"]:
                extra = f", {len(loc['returns'])} RET instructions" if loc.get("returns") else ""
                lines.append(f"    {loc['point']:<40} {loc['address']:>12}  by {loc['method']}{extra}")
            for missing in scan["missing"]:
                lines.append(f"    not found: {missing}")
            for note in scan["notes"]:
                lines.append(f"    note: {note}")
    if quiet:
        lines.append(f"({quiet} other mapped file{'s' if quiet != 1 else ''} with no TLS library; --all lists them)")
    return "\n".join(lines)


def main(targets: List[str], as_json: bool, show_all: bool) -> int:
    """Exit 0 when something probeable was found in every target, 1 otherwise."""
    code = 0
    all_reports = []
    for target in targets:
        reports = reports_for(target)
        all_reports.extend(reports)
        if not any(s["supported"] and s["locations"] for r in reports for s in r["scans"]):
            code = 1
    if as_json:
        print(json.dumps(all_reports, indent=2))
    else:
        print(format_reports(all_reports, show_all))
    return code
