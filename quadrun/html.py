"""index.html (and a reproduction's report.md): one page per report, from one renderer.

Every report (a run's own, a sweep's, `quadrun-report PATH...`, a reproduction's) gets the
same `index.html`, rendered by Jinja2 from `quadrun/templates/report.html.j2`: one
self-contained file (figures embedded as data URIs, styles inline, no script, nothing
fetched) that opens with the claims (coloured verdicts, measured, target, why, and for
every inconclusive or not-measured claim the command that would decide it), a coverage
line, then each experiment's tables and figures, then provenance (code, packages,
devices, seconds per experiment).

`page(result, **extra)` builds the template's context from what quadrun.report.build
returned; a reproduction adds its title, paper names, plan and provenance through
`extra`. Torch-free.
"""
from __future__ import annotations

import base64
import datetime as _dt
from pathlib import Path
from typing import Callable, Optional

from quadrun import vocab

TEMPLATES = Path(__file__).resolve().parent / "templates"
UNDECIDED = ("inconclusive", "not_measured")
VERDICT_ORDER = {"fails": 0, "inconclusive": 1, "not_measured": 2, "holds": 3}


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
                             trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["seconds"] = fmt_seconds
    env.filters["md"] = lambda text: " ".join(str(text).split()).replace("|", "\\|")
    return env


def fmt_seconds(s) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    if s is None:
        return "-"
    s = float(s)
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def coverage(claims: list) -> dict:
    """Counts of the claims' verdicts and the one-line summary."""
    counts = {v: sum(c.get("verdict") == v for c in claims) for v in vocab.VERDICTS}
    listed = len(claims)
    decided = counts["holds"] + counts["fails"]
    text = (f"Coverage: {decided} of {listed} claims decided ({counts['holds']} hold, "
            f"{counts['fails']} fail); {counts['inconclusive']} inconclusive, "
            f"{counts['not_measured']} not measured.")
    return {"listed": listed, "decided": decided, **counts, "text": text}


def _data_uri(path: Path) -> Optional[str]:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _scale_of(study) -> Optional[str]:
    for r in study.runs:
        scale = r.summary.get("scale") or r.config.get("scale")
        if scale:
            return str(scale)
    return None


def _sweep_folder(study) -> Optional[Path]:
    from quadrun.sweeps import is_sweep

    for r in study.runs:
        if is_sweep(r.folder.parent):
            return r.folder.parent
    return None


def claim_rows(studies: list, command: Optional[Callable] = None, paper_of: Optional[dict] = None
               ) -> list:
    """One row per claim of every study, with its experiment, paper, scale and, when it is
    inconclusive or not measured, the command that would decide it (`command(claim, study)`,
    by default quadrun.plans.next_command)."""
    if command is None:
        from quadrun.plans import next_command as command
    rows = []
    for s in studies:
        scale = _scale_of(s)
        for c in s.claims:
            row = {k: c.get(k, "") for k in ("id", "group", "statement", "source", "measured",
                                                "target", "why", "setup")}
            row.update(experiment=s.experiment, verdict=c.get("verdict", "not_measured"),
                       extension=bool(c.get("extension")), scale=c.get("scale") or scale,
                       paper=(paper_of or {}).get(s.experiment, ""), command="",
                       values=c.get("values") or {})
            if row["verdict"] in UNDECIDED:
                try:
                    row["command"] = command(c, s) or ""
                except Exception as exc:  # a command is help, never a reason to lose the page
                    row["command"] = f"(no command: {type(exc).__name__}: {exc})"
            rows.append(row)
    return rows


def _sections(result: dict, order: Optional[list] = None, titles: Optional[dict] = None) -> list:
    by_exp: dict = {}
    for s in result["studies"]:
        by_exp.setdefault(s.experiment, {"studies": [], "figures": []})
        by_exp[s.experiment]["studies"].append(s)
        by_exp[s.experiment]["figures"] += list(getattr(s, "figures", []) or [])
    names = [e for e in (order or []) if e in by_exp] + sorted(e for e in by_exp
                                                               if e not in (order or []))
    sections = []
    for exp in names:
        tables = [t for t in result["tables"] if t.title.split(":", 1)[0] == exp]
        figures = []
        for path in by_exp[exp]["figures"]:
            uri = _data_uri(path)
            if uri:
                figures.append({"name": Path(path).stem, "src": uri, "file": Path(path).name})
        runs = [r for s in by_exp[exp]["studies"] for r in s.runs]
        sections.append({"experiment": exp, "title": (titles or {}).get(exp, ""),
                         "tables": tables, "figures": figures, "runs": len(runs),
                         "groups": [s.group for s in by_exp[exp]["studies"] if s.group],
                         "errors": [f"{s.group + ': ' if s.group else ''}{s.error}"
                                    for s in by_exp[exp]["studies"] if s.error]})
    return sections


def page(result: dict, **extra) -> dict:
    """The template's context for a report. `extra` may set: kind, title, subtitle,
    banner, claims (rows made by the caller), paper_of, order, titles, steps,
    provenance, command."""
    from quadrun import provenance as prov

    runs = result["runs"]
    folders = sorted({str(r.folder) for r in runs})
    from quadrun.sweeps import is_sweep

    kind = extra.get("kind")
    if kind is None:
        kind = "run" if len(runs) == 1 else (
            "sweep" if len({r.folder.parent for r in runs}) == 1
            and is_sweep(runs[0].folder.parent) else "report")
    titles = extra.get("titles")
    if titles is None:
        from quadrun.plans import paper_titles

        titles = paper_titles()
    claims = extra.get("claims")
    if claims is None:
        claims = claim_rows(result["studies"], extra.get("command"),
                            extra.get("paper_of") or titles)
    order = list(extra.get("order") or [])
    if order:  # a reproduction's claims in its plan's order (stable within an experiment)
        claims = sorted(claims, key=lambda c: order.index(c["experiment"])
                        if c["experiment"] in order else len(order))
    scales = sorted({c["scale"] for c in claims if c.get("scale")})
    banner = extra.get("banner")
    if banner is None and "smoke" in scales:
        banner = ("scale=smoke: these verdicts check that the code runs end to end on tiny "
                  "problems; they are not evidence for or against the papers.")
    exps = sorted({r.experiment for r in runs})
    title = extra.get("title") or f"quadrun {kind}: {', '.join(exps) or 'no runs'}"
    status = {}
    for r in runs:
        status[r.status] = status.get(r.status, 0) + 1
    return {
        "kind": kind, "title": title,
        "subtitle": extra.get("subtitle") or (folders[0] if len(folders) == 1 else
                                              str(Path(result["out"]).parent)),
        "generated": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "banner": banner, "scales": scales,
        "claims": claims, "coverage": coverage(claims),
        "sections": _sections(result, extra.get("order"), titles),
        "status": ", ".join(f"{n} {s}" for s, n in sorted(status.items())),
        "runs": len(runs),
        "problems": [{"folder": str(r.folder), "status": r.status, "error": r.error or ""}
                     for r in runs if r.status != "completed"],
        "steps": extra.get("steps") or [],
        "provenance": extra.get("provenance") or prov.from_runs(runs),
    }


def render(context: dict, template: str = "report.html.j2") -> str:
    return _environment().get_template(template).render(**context)


def write_index(result: dict, out: Path, **extra) -> Path:
    """Render `out/index.html` for a report; returns its path."""
    path = Path(out) / "index.html"
    write_text(path, render(page(result, **extra)))
    return path


def write_markdown(context: dict, path: Path) -> Path:
    write_text(Path(path), render(context, "report.md.j2"))
    return Path(path)


def write_text(path: Path, text: str) -> None:
    """Write to a temporary file, then rename: a reader sees the old page or the new one."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
