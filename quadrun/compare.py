"""`quadrun-report --compare A B`: two runs, sweeps or reproductions side by side.

Each side is read as quadrun-report reads it (its runs grouped into studies, the records of
a group pooled, the claims of a one-run group as the run decided them, of a pooled group
decided again). Then:

- per claim (experiment, id, group): the verdict in A and in B and whether it changed;
  a claim present on one side only is listed with "-" on the other;
- per shared metric: every numeric record field, per experiment and table row (the record
  keys, replicates pooled), present in both: the mean in A, the mean in B and B - A, with a
  95 % Welch interval where both sides have two or more records.

Prints both tables; with --out, writes compare.md and compare.json there. Torch-free.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Optional

from quadrun import stats

REPLICATE_KEYS = ("seed", "replicate")


def _side(path: Path) -> tuple:
    from quadrun.report import find_runs, studies

    runs = find_runs([path])
    return runs, studies(runs)


def claim_changes(studies_a: list, studies_b: list) -> list:
    """[{experiment, id, group, a, b, changed}] over the claims of both sides."""
    def index(studies) -> dict:
        out = {}
        for s in studies:
            for c in s.claims:
                out[(s.experiment, c.get("id"), s.group)] = c.get("verdict")
        return out

    a, b = index(studies_a), index(studies_b)
    # a study's group may be spelled differently on each side (another scale, say): where an
    # experiment has one group on each side, its claims are matched by id
    for exp in {k[0] for k in a} | {k[0] for k in b}:
        ga = {k[2] for k in a if k[0] == exp}
        gb = {k[2] for k in b if k[0] == exp}
        if len(ga) == 1 and len(gb) == 1 and ga != gb:
            (g_a,) = ga
            b = {((k[0], k[1], g_a) if k[0] == exp else k): v for k, v in b.items()}
    rows = []
    for key in list(dict.fromkeys(list(a) + list(b))):
        va, vb = a.get(key), b.get(key)
        rows.append({"experiment": key[0], "id": key[1], "group": key[2], "a": va or "-",
                     "b": vb or "-", "changed": va != vb})
    return rows


def _varying(studies: list) -> dict:
    """{experiment: the record keys whose value differs between its records}."""
    values: dict = defaultdict(lambda: defaultdict(set))
    for s in studies:
        for rec in s.records:
            for k in s.keys:
                if k in rec and not isinstance(rec[k], (list, dict)):
                    values[s.experiment][k].add(json.dumps(rec[k], default=str))
    return {exp: {k for k, v in keys.items() if len(v) > 1} for exp, keys in values.items()}


def _metric_cells(studies: list, varying: dict) -> dict:
    """{(experiment, row label, metric): [values]} over the pooled records; a row is named
    by the record keys that vary (replicates pooled)."""
    cells: dict = defaultdict(list)
    for s in studies:
        keys = [k for k in s.keys if k not in REPLICATE_KEYS]
        shown = [k for k in keys if k in varying.get(s.experiment, ())]
        for rec in s.records:
            row = ", ".join(f"{k}={rec[k]}" for k in shown if k in rec) or "all records"
            for name, value in rec.items():
                if name in keys or name in REPLICATE_KEYS or isinstance(value, bool):
                    continue
                if stats.is_number(value):
                    cells[(s.experiment, row, name)].append(float(value))
    return cells


def metric_changes(studies_a: list, studies_b: list) -> list:
    """[{experiment, row, metric, a, b, n_a, n_b, diff, low, high}] for the metrics of both."""
    varying = _varying(list(studies_a) + list(studies_b))
    a, b = _metric_cells(studies_a, varying), _metric_cells(studies_b, varying)
    rows = []
    for key in a:
        if key not in b:
            continue
        xa, xb = stats.finite(a[key]), stats.finite(b[key])
        if not xa or not xb:
            continue
        ma, mb = stats.mean(xa), stats.mean(xb)
        low = high = None
        if len(xa) >= 2 and len(xb) >= 2:
            iv = stats.welch_interval(xb, xa)
            if iv.has_interval:
                low, high = iv.low, iv.high
        rows.append({"experiment": key[0], "row": key[1], "metric": key[2], "a": ma, "b": mb,
                     "n_a": len(xa), "n_b": len(xb), "diff": mb - ma, "low": low, "high": high})
    return rows


def compare(path_a: Path, path_b: Path) -> dict:
    _, sa = _side(Path(path_a))
    _, sb = _side(Path(path_b))
    return {"a": str(path_a), "b": str(path_b), "claims": claim_changes(sa, sb),
            "metrics": metric_changes(sa, sb)}


def _num(x) -> str:
    from quadrun.claims import fmt

    return fmt(x, 4)


def _diff_text(m: dict) -> str:
    text = _num(m["diff"])
    if m["low"] is not None:
        text += f" [{_num(m['low'])}, {_num(m['high'])}]"
    return text


def markdown(result: dict) -> str:
    lines = ["# Comparison", "", f"- A: `{result['a']}`", f"- B: `{result['b']}`", "",
             "## Claims", "", "| experiment | claim | group | A | B | changed |",
             "| --- | --- | --- | --- | --- | --- |"]
    for c in result["claims"]:
        lines.append(f"| {c['experiment']} | {c['id']} | {c['group']} | {c['a']} | {c['b']} | "
                     f"{'**yes**' if c['changed'] else 'no'} |")
    lines += ["", "## Shared metrics (mean over pooled records; B - A with a 95 % Welch "
              "interval where both sides have 2+ records)", "",
              "| experiment | row | metric | A | B | B - A |", "| --- | --- | --- | --- | --- | --- |"]
    for m in result["metrics"]:
        lines.append(f"| {m['experiment']} | {m['row']} | {m['metric']} | {_num(m['a'])} "
                     f"(n={m['n_a']}) | {_num(m['b'])} (n={m['n_b']}) | {_diff_text(m)} |")
    return "\n".join(lines) + "\n"


def print_result(result: dict, all_metrics: bool = False) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table as RichTable

    from quadrun.report import VERDICT_STYLE

    def verdict(v: str) -> str:
        style = VERDICT_STYLE.get(v)
        return f"[{style}]{escape(v)}[/]" if style else escape(v)

    console = Console()
    console.print(f"A: {result['a']}\nB: {result['b']}", highlight=False)
    rt = RichTable(title="Claims: verdict in A and B")
    for name in ("experiment", "claim", "A", "B", "changed"):
        rt.add_column(name, overflow="fold")
    for c in result["claims"]:
        label = c["id"] + (f" ({c['group']})" if c["group"] else "")
        rt.add_row(escape(c["experiment"]), escape(label), verdict(c["a"]), verdict(c["b"]),
                   "[bold]changed[/]" if c["changed"] else "same")
    console.print(rt)
    changed = sum(c["changed"] for c in result["claims"])
    console.print(f"{changed} of {len(result['claims'])} verdicts changed", highlight=False)
    metrics = result["metrics"]
    shown = metrics if all_metrics else [m for m in metrics if m["a"] != m["b"]]
    rt = RichTable(title="Shared metrics (mean; B - A with a 95 % Welch interval where both "
                         "sides pool 2+ records)")
    for name in ("experiment", "row", "metric", "A", "B", "B - A"):
        rt.add_column(name, overflow="fold")
    for m in shown:
        rt.add_row(escape(m["experiment"]), escape(m["row"]), escape(m["metric"]),
                   f"{_num(m['a'])} (n={m['n_a']})", f"{_num(m['b'])} (n={m['n_b']})",
                   escape(_diff_text(m)))
    if shown:
        console.print(rt)
    console.print(f"{len(metrics)} shared metrics, {len(metrics) - len(shown)} equal in A and B"
                  + ("" if all_metrics else " (not shown)"), highlight=False)


def main(path_a: Path, path_b: Path, out: Optional[Path] = None) -> dict:
    result = compare(path_a, path_b)
    print_result(result)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(markdown(result))
        (out / "compare.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"comparison written to {out / 'compare.md'}")
    return result
