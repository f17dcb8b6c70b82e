"""`quadrun-report PATH...`: run and sweep folders -> paper-style tables and figures.

Reads only run folders (summary.json, .hydra/overrides.yaml, config.yaml). Runs are grouped
by experiment, then by their overrides other than the seed; each cell is mean, std (sample,
ddof=1; 0 for a single run) and n over completed runs. Diverged, collapsed, failed and
unfinished runs are counted and listed, never dropped. Writes, into `<first PATH>/report/`
(or --out): results.csv, table.md, table.tex and figures, and prints a rich table.

Summaries that hold lists of records (expressivity's `fit`/`dimension`, hierpoly's
`points`, pde's `results`, dcdm's `solves`) get one table each, grouped by the record's key
fields as well.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional

import yaml

# Overrides that do not define a result: they never split groups.
IGNORED = ("seed", "experiment", "sweep", "cluster", "resume", "device", "threads", "logger",
           "precision", "compile", "data_dir", "hydra")
# Fields that identify a record in a list-valued summary entry (the rest are measured).
RECORD_KEYS = {
    "dimension": ("widths", "kind", "bias"),
    "fit": ("target", "model"),
    "points": ("learner", "d", "n"),
    "results": ("solver", "d", "width"),
    "solves": ("solver", "scene", "dim", "n"),
}
NOT_METRICS = {"seed"}
UNFINISHED = "running"   # no summary.json yet (a sweep still running, or a killed job)


class Run:
    def __init__(self, folder: Path):
        self.folder = folder
        self.summary: dict = {}
        self.status = UNFINISHED
        self.error: Optional[str] = None
        path = folder / "summary.json"
        if path.exists():
            try:
                self.summary = json.loads(path.read_text())
                self.status = self.summary.get("status", "failed")
            except (ValueError, OSError) as exc:
                self.status, self.error = "failed", f"corrupt summary.json ({exc.__class__.__name__})"
        elif (folder / "meta.json").exists():
            try:
                if json.loads((folder / "meta.json").read_text()).get("end"):
                    self.status, self.error = "failed", "missing summary.json"
            except ValueError:
                self.status, self.error = "failed", "corrupt meta.json"
        if self.status == "failed" and self.error is None:
            self.error = str(self.summary.get("error", "failed"))
        self.overrides = self._overrides()
        from_overrides = [o.split("=", 1)[1] for o in self.overrides if o.startswith("experiment=")]
        self.experiment = self.summary.get("experiment") or self._config_value("experiment") \
            or (from_overrides[-1] if from_overrides else "unknown")
        self.seed = self.summary.get("seed", self._config_value("seed"))

    def _overrides(self) -> list:
        path = self.folder / ".hydra" / "overrides.yaml"
        try:
            return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]
        except (OSError, yaml.YAMLError):
            return []

    def _config_value(self, key: str):
        for name in ("config.yaml", ".hydra/config.yaml"):
            try:
                return (yaml.safe_load((self.folder / name).read_text()) or {}).get(key)
            except (OSError, yaml.YAMLError, AttributeError):
                continue
        return None

    @property
    def group(self) -> str:
        keep = []
        for o in self.overrides:
            key = o.lstrip("+~").split("=", 1)[0]
            if key.split(".")[0].split("/")[0] not in IGNORED:
                keep.append(o.lstrip("+"))
        return " ".join(sorted(keep)) or "(defaults)"

    @property
    def collapsed(self) -> bool:
        return bool(self.summary.get("collapsed", False))


def find_runs(paths: Iterable[Path]) -> list[Run]:
    """Every run folder at or below the given paths (a folder with .hydra/ or summary.json)."""
    found = {}
    for root in paths:
        root = Path(root)
        candidates = [root] + sorted(p.parent for p in root.rglob(".hydra")) + \
            sorted(p.parent for p in root.rglob("summary.json"))
        for folder in candidates:
            if (folder / ".hydra").is_dir() or (folder / "summary.json").exists() or \
                    (folder / "meta.json").exists():
                if "report" not in folder.parts[len(root.parts):]:
                    found[folder.resolve()] = folder
    return [Run(f) for f in sorted(found.values())]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def stats(values: list) -> dict:
    n = len(values)
    if n == 0:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def fmt(cell: dict) -> str:
    if not cell or cell["n"] == 0:
        return "-"
    if cell["n"] == 1:
        return f"{cell['mean']:.4g}"
    return f"{cell['mean']:.4g} ± {cell['std']:.2g}"


class Table:
    """Rows of (group key columns, status counts, metric cells)."""

    def __init__(self, title: str, keys: list, metrics: list):
        self.title, self.keys, self.metrics = title, keys, metrics
        self.rows: list = []  # (key values, counts dict, {metric: stats})

    def header(self) -> list:
        return self.keys + ["n", "completed", "diverged", "collapsed", "failed", "running"] + self.metrics

    def cells(self) -> list:
        out = []
        for key, counts, cells in self.rows:
            out.append([str(k) for k in key] + [str(counts[c]) for c in
                       ("n", "completed", "diverged", "collapsed", "failed", "running")]
                       + [fmt(cells.get(m)) for m in self.metrics])
        return out

    def markdown(self) -> str:
        head = self.header()
        lines = [f"### {self.title}", "", "| " + " | ".join(head) + " |",
                 "| " + " | ".join("---" for _ in head) + " |"]
        lines += ["| " + " | ".join(row) + " |" for row in self.cells()]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        def esc(s: str) -> str:
            for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"),
                         ("#", r"\#"), ("±", r"$\pm$")):
                s = s.replace(a, b)
            return s

        head = self.header()
        lines = [f"% {esc(self.title)}", r"\begin{tabular}{" + "l" * len(head) + "}", r"\hline",
                 " & ".join(esc(h) for h in head) + r" \\", r"\hline"]
        lines += [" & ".join(esc(c) for c in row) + r" \\" for row in self.cells()]
        lines += [r"\hline", r"\end{tabular}"]
        return "\n".join(lines) + "\n"


def _counts(runs: list) -> dict:
    c = {"n": len(runs), "completed": 0, "diverged": 0, "collapsed": 0, "failed": 0, "running": 0}
    for r in runs:
        key = {"completed": "completed", "diverged": "diverged", UNFINISHED: "running"}.get(
            r.status, "failed")
        c[key] += 1
        c["collapsed"] += r.collapsed
    return c


def scalar_table(experiment: str, runs: list) -> Table:
    """One row per override group: mean ± std of every numeric summary value."""
    groups = defaultdict(list)
    for r in runs:
        groups[r.group].append(r)
    metrics = sorted({k for r in runs for k, v in r.summary.items()
                      if _is_number(v) and k not in NOT_METRICS})
    table = Table(f"{experiment}: runs", ["group"], metrics)
    for group in sorted(groups):
        members = groups[group]
        done = [r for r in members if r.status == "completed"]
        cells = {m: stats([r.summary[m] for r in done if _is_number(r.summary.get(m))])
                 for m in metrics}
        table.rows.append(([group], _counts(members), cells))
    return table


def record_tables(experiment: str, runs: list) -> list:
    """One table per list-of-records summary entry, grouped by (override group, record key)."""
    tables = []
    names = sorted({k for r in runs for k, v in r.summary.items()
                    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)})
    for name in names:
        records = [(r, rec) for r in runs if r.status == "completed"
                   for rec in r.summary.get(name, [])]
        if not records:
            continue
        keys = list(RECORD_KEYS.get(name, ())) or sorted(
            {k for _, rec in records for k, v in rec.items() if not _is_number(v) or isinstance(v, int)})
        keys = [k for k in keys if k not in NOT_METRICS]
        metrics = sorted({k for _, rec in records for k, v in rec.items()
                          if k not in keys and k not in NOT_METRICS and
                          (_is_number(v) or isinstance(v, bool))})
        cells = defaultdict(lambda: defaultdict(list))
        members = defaultdict(set)
        for r, rec in records:
            key = (r.group,) + tuple(json.dumps(rec.get(k)) if isinstance(rec.get(k), list)
                                     else rec.get(k) for k in keys)
            members[key].add(r.folder)
            for m in metrics:
                v = rec.get(m)
                if isinstance(v, bool):
                    v = float(v)
                if _is_number(v):
                    cells[key][m].append(float(v))
        table = Table(f"{experiment}: {name}", ["group"] + keys, metrics)
        for key in sorted(members, key=lambda k: tuple(str(x) for x in k)):
            runs_in = [r for r in runs if r.folder in members[key]]
            table.rows.append((list(key), _counts(runs_in),
                               {m: stats(cells[key][m]) for m in metrics}))
        tables.append(table)
    return tables


def plot_tables(tables: list, out: Path) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for table in tables:
        if not table.metrics or not table.rows:
            continue
        numeric_key = next((i for i, k in enumerate(table.keys)
                            if k != "group" and all(_is_number(row[0][i]) for row in table.rows)), None)
        shown = table.metrics[:4]
        fig, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 3.6), squeeze=False)
        for ax, metric in zip(axes[0], shown):
            if numeric_key is not None:  # a line per combination of the other keys
                lines = defaultdict(list)
                for key, _, cells in table.rows:
                    c = cells.get(metric)
                    if c and c["n"]:
                        label = " ".join(str(k) for i, k in enumerate(key) if i != numeric_key)
                        lines[label].append((key[numeric_key], c["mean"], c["std"]))
                for label, pts in sorted(lines.items()):
                    pts.sort()
                    ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                                yerr=[p[2] for p in pts], marker="o", capsize=2, label=label[:40])
                ax.set_xlabel(table.keys[numeric_key])
                positive = [p[1] for pts in lines.values() for p in pts]
                if positive and min(positive) > 0 and max(positive) / min(positive) > 100:
                    ax.set_yscale("log")
                if len(table.rows) > 1 and all(row[0][numeric_key] > 0 for row in table.rows):
                    ax.set_xscale("log")
                if len(lines) <= 12:
                    ax.legend(fontsize=6)
            else:
                labels = [" ".join(str(k) for k in key)[:30] for key, _, _ in table.rows]
                means = [(cells.get(metric) or {}).get("mean") or 0.0 for _, _, cells in table.rows]
                stds = [(cells.get(metric) or {}).get("std") or 0.0 for _, _, cells in table.rows]
                ax.bar(range(len(labels)), means, yerr=stds, capsize=2)
                ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=6)
            ax.set_title(metric, fontsize=9)
        fig.suptitle(table.title, fontsize=10)
        name = "".join(c if c.isalnum() else "_" for c in table.title).strip("_") + ".png"
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(out / name)
    return paths


def build(paths: list, out: Optional[Path] = None, quiet: bool = False) -> dict:
    """Write the report for the runs under `paths`; return {"runs", "tables", "out"}."""
    runs = find_runs(paths)
    out = Path(out) if out else Path(paths[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    by_exp = defaultdict(list)
    for r in runs:
        by_exp[r.experiment].append(r)
    tables = []
    for exp in sorted(by_exp):
        tables.append(scalar_table(exp, by_exp[exp]))
        tables.extend(record_tables(exp, by_exp[exp]))

    scalar_keys = sorted({k for r in runs for k, v in r.summary.items() if _is_number(v)})
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["folder", "experiment", "group", "seed", "status", "collapsed", "error"] + scalar_keys)
        for r in runs:
            w.writerow([str(r.folder), r.experiment, r.group, r.seed, r.status, r.collapsed,
                        r.error or ""] + [r.summary.get(k, "") for k in scalar_keys])

    problems = [r for r in runs if r.status != "completed" or r.collapsed]
    md = "\n".join(t.markdown() for t in tables)
    if problems:
        md += "\n### Runs not counted as completed, or collapsed\n\n"
        md += "".join(f"- `{r.folder}`: {r.status}{' (collapsed)' if r.collapsed else ''}"
                      f"{': ' + r.error if r.error else ''}\n" for r in problems)
    (out / "table.md").write_text(md)
    (out / "table.tex").write_text("\n".join(t.latex() for t in tables))
    figures = plot_tables(tables, out)
    if not quiet:
        _print(tables, problems, out, len(runs))
    return {"runs": runs, "tables": tables, "out": out, "figures": figures}


def _print(tables: list, problems: list, out: Path, n: int) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console()
    for t in tables:
        rt = RichTable(title=t.title)
        for h in t.header():
            rt.add_column(h, overflow="fold")
        for row in t.cells():
            rt.add_row(*row)
        console.print(rt)
    for r in problems:
        console.print(f"[yellow]{r.status}[/]{' (collapsed)' if r.collapsed else ''}: {r.folder}"
                      f"{': ' + r.error if r.error else ''}")
    console.print(f"{n} runs; report written to {out}")


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(prog="quadrun-report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run or sweep folders")
    parser.add_argument("--out", type=Path, help="report folder (default: <first PATH>/report)")
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        print(f"quadrun-report: error: paths: {missing[0]} does not exist", file=sys.stderr)
        sys.exit(2)
    result = build(args.paths, args.out)
    if not result["runs"]:
        print(f"quadrun-report: error: paths: no run folders under {', '.join(map(str, args.paths))}",
              file=sys.stderr)
        sys.exit(2)
