"""Where results came from: the code (commit, dirty tree), the installed packages, the
devices and the seconds spent, read from run folders' meta.json and from this process's
environment. Torch-free: the report and `quadrun reproduce` use it.
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
import socket
from pathlib import Path
from typing import Iterable, Optional

from quadrun import vocab


def environment() -> dict:
    """This process's provenance: code identity (quadrun.identity), host, python, platform,
    packages, time."""
    from quadrun.identity import code_identity, installed_packages

    return {"code": code_identity(), "host": socket.gethostname(),
            "python": platform.python_version(), "platform": platform.platform(),
            "time": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "packages": installed_packages()}


REPORT_LAG = 120.0   # seconds between a run's summary and its own report, at most


def _parse_time(text) -> Optional[_dt.datetime]:
    try:
        return _dt.datetime.fromisoformat(str(text))
    except (TypeError, ValueError):
        return None


def run_seconds(folder: Path, meta: Optional[dict] = None) -> Optional[float]:
    """Wall seconds of a finished run of one attempt: from its start to its summary, and to
    its own report when that was written right after (within REPORT_LAG s; a report written
    again later does not count), None when unknown or resumed."""
    folder = Path(folder)
    if meta is None:
        try:
            meta = json.loads((folder / vocab.META).read_text())
        except (OSError, ValueError):
            return None
    if not isinstance(meta, dict) or int(meta.get("attempts") or 1) != 1:
        return None
    start, end = _parse_time(meta.get("start")), _parse_time(meta.get("end"))
    if start is None or end is None:
        return None
    last = end.timestamp()
    try:
        last = max(last, (folder / vocab.SUMMARY).stat().st_mtime)
        report = (folder / vocab.REPORT / "claims.json").stat().st_mtime
        if 0 <= report - last <= REPORT_LAG:
            last = report
    except OSError:
        pass
    return max(0.0, last - start.timestamp())


def split_describe(describe: Optional[str]) -> tuple:
    """`git describe --always --dirty` output -> (commit, dirty)."""
    if not describe:
        return None, None
    text = str(describe)
    dirty = text.endswith("-dirty")
    return (text[:-len("-dirty")] if dirty else text), dirty


def from_runs(runs: Iterable, environment_now: Optional[dict] = None) -> dict:
    """What the run folders say: the code versions (commit, dirty) that made them, their
    devices, python and torch versions, seconds per experiment, and the installed packages
    (a run's meta.json "packages" when it recorded them, else this process's, labelled)."""
    runs = list(runs)
    codes, devices, pythons, torches, hosts = {}, {}, set(), set(), set()
    seconds: dict = {}
    recorded_packages = None
    for r in runs:
        meta = getattr(r, "meta", {}) or {}
        code = meta.get("code") if isinstance(meta.get("code"), dict) else {}
        commit, dirty = code.get("commit"), code.get("dirty")
        if commit is None:
            commit, dirty = split_describe(meta.get("git"))
        key = (commit or "unknown", dirty)
        codes[key] = codes.get(key, 0) + 1
        device = meta.get("device")
        if device:
            name = meta.get("device_name") or ""
            label = f"{device} ({name})" if name and name != device else str(device)
            devices[label] = devices.get(label, 0) + 1
        if meta.get("python"):
            pythons.add(str(meta["python"]))
        if meta.get("torch"):
            torches.add(str(meta["torch"]))
        if meta.get("host"):
            hosts.add(str(meta["host"]))
        s = run_seconds(r.folder, meta) if getattr(r, "folder", None) else None
        exp = getattr(r, "experiment", "unknown")
        entry = seconds.setdefault(exp, {"seconds": 0.0, "runs": 0, "timed": 0})
        entry["runs"] += 1
        if s is not None:
            entry["seconds"] += s
            entry["timed"] += 1
        if recorded_packages is None and isinstance(meta.get("packages"), dict):
            recorded_packages = meta["packages"]
    if recorded_packages is not None:
        pkgs, pkg_source = recorded_packages, "recorded by the runs (meta.json)"
    else:
        from quadrun.identity import installed_packages

        env = environment_now or {"packages": installed_packages()}
        pkgs = env.get("packages", {})
        pkg_source = ("installed where this report was written (the runs' meta.json do not "
                      "list packages)")
    return {
        "codes": [{"commit": c, "dirty": d, "runs": n} for (c, d), n in sorted(codes.items(),
                                                                              key=str)],
        "devices": [{"device": d, "runs": n} for d, n in sorted(devices.items())],
        "python": sorted(pythons), "torch": sorted(torches), "hosts": sorted(hosts),
        "seconds": seconds, "packages": pkgs, "packages_source": pkg_source,
    }
