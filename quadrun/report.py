"""`quadrun-report PATH...`: run and sweep folders -> claims, tables and figures.

The one presentation path. A run writes its own `report/` through this code when it ends;
`quadrun-report <sweep folder>` pools the records of the sweep's jobs. Reads only run
folders (summary.json, .hydra/overrides.yaml, config.yaml), never a run's internals.

- Runs are grouped by experiment, then by their overrides, leaving out the seed, the
  keys that do not define a result (quadrun.vocab), the keys the run's variant does not
  read (quadrun.schema.unread_keys) and the experiment's `POOL` keys (sweeps over those
  extend one study, e.g. relinear's strategies). The records of the
  finished runs (completed or diverged) of a group are pooled.
- Claims come first. A group of one run shows the claims the run decided (summary.json);
  a group of several runs decides them again, once, on the pooled records (the
  experiment's `claims(records, cfg)`, `cfg` read from the group's first run).
- Record tables: one per experiment (per `part` where records have one), a row per
  combination of the record keys (replicate seeds pooled): mean ± std of every number
  (sample std), k/n for flags, `count` records per row, counts of non-completed records
  only where there are any.
  Columns that are the same in every row become a header line; a one-row table is shown
  as key: value lines; wide tables wrap into several blocks in the terminal.
- Figures: the experiment's `figures(records, cfg, save)` on the pooled records.

Writes, into `<first PATH>/report/` (or --out): claims.json, results.csv (every record,
every field), table.md, table.tex (every column) and the figures; prints the claims and
the tables.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import logging
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional

import yaml

from quadrun import stats, vocab

log = logging.getLogger("quadrun")

REPLICATE_KEYS = ("seed", "replicate")   # record keys pooled over in tables
FINISHED = ("completed", "diverged")     # runs whose records count


# -- reading run folders ---------------------------------------------------------------------------
class Run:
    """What a run folder says: status, overrides, config, records, claims."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.summary: dict = {}
        self.status = vocab.UNFINISHED
        self.error: Optional[str] = None
        from quadrun.errors import CheckpointError
        from quadrun.runfolder import read_json_dict

        path = folder / vocab.SUMMARY
        if path.exists():
            try:
                self.summary = read_json_dict(path)
                self.status = str(self.summary.get("status", "failed"))
            except CheckpointError:
                self.status, self.error = "failed", "damaged summary.json"
        elif (folder / vocab.META).exists():
            try:
                if read_json_dict(folder / vocab.META).get("end"):
                    self.status, self.error = "failed", "missing summary.json"
            except CheckpointError:
                self.status, self.error = "failed", "damaged meta.json"
        if self.status == "failed" and self.error is None:
            self.error = str(self.summary.get("error", "failed"))
        if self.status == "interrupted" and self.error is None:
            self.error = str(self.summary.get("reason", "interrupted"))
        self.overrides = self._overrides()
        self.config = self._config()
        from_overrides = [o.split("=", 1)[1] for o in self.overrides if o.startswith("experiment=")]
        self.experiment = self.summary.get("experiment") or self.config.get("experiment") \
            or (from_overrides[-1] if from_overrides else "unknown")
        self.seed = self.summary.get("seed", self.config.get("seed"))
        self.meta = self._json(vocab.META)
        records = self.summary.get("records")
        self.records = [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []
        self.record_keys = list(self.summary.get("record_keys") or [])

    def _json(self, name: str) -> dict:
        try:
            value = json.loads((self.folder / name).read_text())
            return value if isinstance(value, dict) else {}
        except (OSError, ValueError):
            return {}

    @property
    def state(self) -> str:
        """The status, with an unfinished run told apart: running (its process is alive on
        this host) or killed (no summary and no process: resume it)."""
        if self.status != vocab.UNFINISHED:
            return self.status
        import os
        import socket

        pid, host = self.meta.get("pid"), self.meta.get("host")
        if not pid or host != socket.gethostname():
            return vocab.UNFINISHED if pid else "pending"
        try:
            os.kill(int(pid), 0)
            return vocab.UNFINISHED
        except ProcessLookupError:
            return "killed"
        except (PermissionError, ValueError):
            return vocab.UNFINISHED

    @property
    def last_step(self) -> Optional[int]:
        """The step of the last point in metrics.jsonl (read from the end of the file)."""
        path = self.folder / vocab.METRICS
        try:
            with open(path, "rb") as fh:
                fh.seek(0, 2)
                fh.seek(max(0, fh.tell() - 4096))
                lines = fh.read().decode(errors="replace").splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            try:
                return int(json.loads(line)["step"])
            except (ValueError, KeyError, TypeError):
                continue
        return None

    def _overrides(self) -> list:
        try:
            return [str(o) for o in (yaml.safe_load((self.folder / vocab.OVERRIDES).read_text()) or [])]
        except (OSError, yaml.YAMLError):
            return []

    def _config(self) -> dict:
        for name in (vocab.CONFIG, ".hydra/config.yaml"):
            try:
                cfg = yaml.safe_load((self.folder / name).read_text())
                if isinstance(cfg, dict):
                    return cfg
            except (OSError, yaml.YAMLError):
                continue
        return {}

    def group(self, pool: Iterable[str] = (), module=None) -> str:
        """The overrides that define this run's study (seed, runtime, pooled and unread keys
        left out)."""
        from quadrun.schema import is_unread, unread_keys

        pool, keep = set(pool), []
        unread = unread_keys(module, self.config.get(self.experiment)) if module else {}
        for o in self.overrides:
            key = o.lstrip("+~").split("=", 1)[0]
            parts = key.split(".")
            if parts[0].split("/")[0] in vocab.REPORT_IGNORED or not vocab.defines_result(key):
                continue
            if is_unread(key, self.experiment, unread):
                continue
            if len(parts) >= 2 and parts[0] == self.experiment and ".".join(parts[1:]) in pool:
                continue
            keep.append(o.lstrip("+"))
        return " ".join(sorted(keep))


def find_runs(paths: Iterable[Path]) -> list:
    """Every run folder at or below the given paths (a folder with .hydra/, summary.json or
    meta.json), outside report/ folders."""
    found = {}
    for root in paths:
        root = Path(root)
        candidates = [root] + sorted(p.parent for p in root.rglob(".hydra")) + \
            sorted(p.parent for p in root.rglob(vocab.SUMMARY))
        for folder in candidates:
            if (folder / ".hydra").is_dir() or (folder / vocab.SUMMARY).exists() or \
                    (folder / vocab.META).exists():
                if vocab.REPORT not in folder.parts[len(root.parts):]:
                    found[folder.resolve()] = folder
    return [Run(f) for f in sorted(found.values())]


def experiment_module(name: str):
    """The experiment's module, or None when it is not registered here."""
    from quadrun import registry

    path = registry.names().get(name)
    if path is None:
        return None
    try:
        return importlib.import_module(path)
    except ImportError as exc:
        log.warning("experiment %s: module %s does not import (%s)", name, path, exc)
        return None


class ConfigMissing(Exception):
    """A run folder whose config cannot give the experiment's section."""


def experiment_config(module, run: Run):
    """The experiment's Config dataclass with the run's values. ConfigMissing when the
    run's config has no section for its experiment or does not fit this version's schema:
    never a silent fall back to the defaults."""
    from omegaconf import OmegaConf

    section = run.config.get(run.experiment)
    if not isinstance(section, dict):
        raise ConfigMissing(f"{run.folder / vocab.CONFIG}: no {run.experiment} section")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(module.Config), section)
        return OmegaConf.to_object(merged)
    except Exception as exc:  # a run folder of another quadrun version
        raise ConfigMissing(f"{run.folder / vocab.CONFIG}: its {run.experiment} section does "
                            f"not fit this version's schema ({str(exc).splitlines()[0]})") from None


# -- numbers and cells ---------------------------------------------------------------------------
def _cell_stats(values: list) -> dict:
    """mean, sample std (ddof=1; 0 for one value) and n of the finite numbers."""
    values = stats.finite(values)
    return {"mean": stats.mean(values), "std": stats.std(values), "n": len(values)}


def fmt_number(x) -> str:
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}" if math.isfinite(x) else str(x)
    if isinstance(x, (list, dict)):
        return json.dumps(x, separators=(",", ":"))
    return "-" if x is None else str(x)


def fmt_cell(cell: dict) -> str:
    if not cell or cell.get("n", 0) == 0:
        return "-"
    if "true" in cell:                       # a flag: how many of how many
        return f"{cell['true']}/{cell['n']}"
    if cell["n"] == 1 or cell["std"] == 0:
        return f"{cell['mean']:.4g}"
    return f"{cell['mean']:.4g} ± {cell['std']:.2g}"


# -- tables -------------------------------------------------------------------------------------
class Table:
    """A rendered table: title, header lines (what every row shares), columns, rows.
    `data` keeps the numbers: [(key values, {column: stats})]."""

    def __init__(self, title: str, columns: list, rows: list, header: Optional[list] = None,
                 keys: int = 1, data: Optional[list] = None):
        self.title, self.columns, self.rows = title, columns, rows
        self.header = header or []
        self.keys = keys                     # leading columns repeated in every wrapped block
        self.data = data or []

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""] + [f"{h}  " for h in self.header]
        if self.header:
            lines.append("")
        lines += ["| " + " | ".join(self.columns) + " |",
                  "| " + " | ".join("---" for _ in self.columns) + " |"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        """A booktabs table: key columns left-aligned, number columns right-aligned with
        mean $\\pm$ std in math mode; what every row shares in the caption."""
        numeric = [i >= self.keys and all(_numberish(r[i]) for r in self.rows)
                   for i in range(len(self.columns))]
        spec = "".join("r" if n else "l" for n in numeric)
        caption = "; ".join(_tex(h) for h in self.header)
        lines = [r"\begin{table}[ht]", r"\centering\small",
                 rf"\caption{{{_tex(self.title)}{'. ' + caption if caption else ''}}}",
                 rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
                 " & ".join(_tex(h) for h in self.columns) + r" \\", r"\midrule"]
        lines += [" & ".join(_tex_number(c) if n else _tex(c) for c, n in zip(row, numeric))
                  + r" \\" for row in self.rows]
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"

    def blocks(self, width: int) -> list:
        """Column index lists, each fitting `width` characters (key columns in every one)."""
        def w(i):
            return max([len(self.columns[i])] + [len(r[i]) for r in self.rows]) + 3

        keys = list(range(min(self.keys, len(self.columns))))
        base = sum(w(i) for i in keys) + 1
        out, current, used = [], [], base
        for i in range(len(keys), len(self.columns)):
            if current and used + w(i) > width:
                out.append(keys + current)
                current, used = [], base
            current.append(i)
            used += w(i)
        if current or not out:
            out.append(keys + current)
        return out


def _numberish(cell: str) -> bool:
    head = cell.split(" ± ")[0].split("/")[0]
    try:
        float(head)
        return True
    except ValueError:
        return cell == "-"


def _tex_number(cell: str) -> str:
    if " ± " in cell:
        mean, std = cell.split(" ± ", 1)
        return f"${mean} \\pm {std}$"
    return cell


def claims_latex(claims: list) -> str:
    """The verdicts as a short booktabs table: claim, verdict, and the first clause of why
    (the full text is in claims.json and table.md)."""
    lines = [r"\begin{table}[ht]", r"\centering\small",
             r"\caption{Claims and verdicts" + (r" (scale=smoke: not evidence)" if claims and
                                               all(is_smoke(c) for c in claims) else "") + "}",
             r"\begin{tabular}{llp{0.5\linewidth}}", r"\toprule",
             r"claim & verdict & why \\", r"\midrule"]
    for c in claims:
        why = c["why"].split(";")[0].strip()
        why = why if len(why) <= 90 else why[:89] + "…"
        name = c["id"] + (" (ext.)" if c.get("extension") else "")
        lines.append(f"{_tex(name)} & {_tex(shown_verdict(c))} & {_tex(why)} \\\\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"),
                 ("#", r"\#"), ("±", r"$\pm$"), ("^", r"\^{}"), ("<=", r"$\le$"), (">=", r"$\ge$")):
        s = s.replace(a, b)
    return s


def _aggregate(values: list) -> dict:
    flags = [v for v in values if isinstance(v, bool)]
    if flags and len(flags) == len([v for v in values if v is not None]):
        return {"true": sum(flags), "n": len(flags)}
    return _cell_stats(values)


def records_table(title: str, rows_in: list, keys: list) -> Table:
    """`rows_in`: [(group, record)]. One row per (group, key values), numbers pooled."""
    records = [r for _, r in rows_in]
    skip = set(keys) | set(REPLICATE_KEYS) | {"part", "status"}
    metrics = []
    for r in records:
        for k, v in r.items():
            if k not in skip and k not in metrics and (stats.is_number(v) or isinstance(v, bool)):
                metrics.append(k)
    statuses = sorted({str(r.get("status")) for r in records
                       if r.get("status") not in (None, "completed")})
    multi_group = len({g for g, _ in rows_in}) > 1   # else the group is the table's header
    grouped: dict = defaultdict(list)
    for group, r in rows_in:
        key = ((group,) if multi_group else ()) + tuple(fmt_number(r.get(k)) for k in keys)
        grouped[key].append(r)
    key_names = (["group"] if multi_group else []) + list(keys)
    columns = key_names + ["count"] + statuses + metrics
    rows, data = [], []
    for key in sorted(grouped, key=lambda k: tuple(_sort_key(x) for x in k)):
        members = grouped[key]
        cells = {m: _aggregate([r.get(m) for r in members]) for m in metrics}
        counts = [str(sum(str(r.get("status")) == s for r in members)) for s in statuses]
        rows.append(list(key) + [str(len(members))] + counts + [fmt_cell(cells[m]) for m in metrics])
        data.append((key, cells))
    header = ["numbers: mean ± sample standard deviation over the `count` records of a row; "
              "k/n: flags true in k of n"] if any(" ± " in c for r in rows for c in r) else []
    return _simplify(Table(title, columns, rows, header=header, keys=len(key_names), data=data))


def _sort_key(x: str):
    try:
        return (0, float(x), "")
    except ValueError:
        return (1, 0.0, x)


def _simplify(table: Table) -> Table:
    """Constant columns -> header lines, a column equal to another -> a header line saying
    so, one row -> transposed."""
    if len(table.rows) == 1:
        row = table.rows[0]
        keep = [(c, v) for c, v in zip(table.columns, row) if v != "-"]
        return Table(table.title, ["field", "value"], [[c, v] for c, v in keep],
                     header=table.header, keys=1, data=table.data)
    columns, rows = list(table.columns), [list(r) for r in table.rows]
    header, drop = list(table.header), set()
    seen = {}
    for i, name in enumerate(columns):
        values = tuple(r[i] for r in rows)
        if len(set(values)) == 1:
            if values[0] != "-":
                header.append(f"{name}: {values[0]}")
            drop.add(i)
        elif values in seen:
            header.append(f"{name} = {columns[seen[values]]} in every row")
            drop.add(i)
        else:
            seen[values] = i
    if len(drop) == len(columns):
        drop = set()
    keep = [i for i in range(len(columns)) if i not in drop]
    nkeys = sum(1 for i in keep if i < table.keys) or 1
    return Table(table.title, [columns[i] for i in keep], [[r[i] for i in keep] for r in rows],
                 header=header, keys=nkeys, data=table.data)


def claims_table(title: str, claims: list) -> Table:
    rows = [[c.get("group", ""), c["id"] + (" (extension)" if c.get("extension") else ""),
             shown_verdict(c), c["statement"], c["measured"], c["target"],
             c["why"] + (f". Next: {c['next']['text']}" if isinstance(c.get("next"), dict)
                         and c["next"].get("text") else ""), c["source"]]
            for c in claims]
    if claims and all(is_smoke(c) for c in claims):
        title = f"{title} ({SMOKE_NOTE})"
    columns = ["group", "claim", "verdict", "statement", "measured", "target", "why", "source"]
    if not any(r[0] for r in rows):
        columns, rows = columns[1:], [r[1:] for r in rows]
    return Table(title, columns, rows, keys=1)


# -- the report ------------------------------------------------------------------------------------
class Study:
    """One experiment's group of runs: pooled records, their claims and figures."""

    def __init__(self, experiment: str, group: str, runs: list, module, label: bool = True):
        self.experiment, self.group, self.runs, self.module = experiment, group, runs, module
        self.label = label            # several groups: each claim says which it belongs to
        self.error: Optional[str] = None   # why the claims could not be decided
        finished = [r for r in runs if r.status in FINISHED]
        self.records = [rec for r in finished for rec in r.records]
        self.keys = []
        for r in finished:
            self.keys += [k for k in r.record_keys if k not in self.keys]
        self.cfg = None
        if module and finished:
            try:
                self.cfg = experiment_config(module, finished[0])
            except ConfigMissing as exc:
                self.error = str(exc)
        self.claims = self._claims(finished)

    def _claims(self, finished: list) -> list:
        """One run: the claims it decided and stored. Several: decided on the pooled records
        (with the scale and device the runs share). Each `next` command gets its folder and
        a time."""
        if len(finished) == 1 and isinstance(finished[0].summary.get("claims"), list):
            found = [c for c in finished[0].summary["claims"] if isinstance(c, dict)]
        else:
            scales = {str(r.summary.get("scale")) for r in finished}
            devices = {str(r.meta.get("device")) for r in finished}
            shared = {"scale": scales.pop() if len(scales) == 1 else "mixed",
                      "device": devices.pop() if len(devices) == 1 else "mixed"}
            found = [{**shared, **c} for c in self._decide()]
        return [self._next({**c, "group": self.group} if self.group and self.label else dict(c))
                for c in found]

    def folder(self) -> Optional[Path]:
        """The sweep folder of the study's runs (their common parent), or its one run's."""
        folders = {r.folder for r in self.runs}
        if len(folders) == 1:
            return next(iter(folders))
        parents = {f.parent for f in folders}
        return parents.pop() if len(parents) == 1 else None

    def _next(self, c: dict) -> dict:
        """`next.text`: the command with its folder, and how long it should take."""
        from quadrun import estimate

        step = c.get("next")
        if not isinstance(step, dict) or not step.get("command"):
            return c
        folder = self.folder()
        command = step["command"].replace("{folder}", str(folder) if folder else "<sweep folder>")
        jobs = step.get("jobs")
        when = ""
        if jobs:
            rate = estimate.per_job(self.experiment, str(c.get("scale") or "cpu"))
            when = f" ({jobs} new run{'s' if jobs != 1 else ''}" + (
                f", about {estimate.duration(rate[0] * jobs)} one at a time: {rate[1]})"
                if rate else ")")
        return {**c, "next": {**step, "text": command + when}}

    def _decide(self) -> list:
        fn = getattr(self.module, "claims", None)
        if fn is None or self.cfg is None:
            return []
        try:
            return list(fn(self.records, self.cfg))
        except Exception as exc:  # records of another version, say: the tables still render
            log.warning("%s claims%s could not be decided: %s: %s", self.experiment,
                        f" ({self.group})" if self.group else "", type(exc).__name__, exc)
            self.error = f"{type(exc).__name__}: {exc}"
            return []


def _code(run: Run) -> str:
    from quadrun import identity

    code = run.summary.get("code")
    return identity.code_fingerprint(code) if isinstance(code, dict) else "unknown"


def studies(runs: list, mix_code: bool = False) -> list:
    """The runs as studies: by experiment, then by the overrides that define a study. Runs
    whose code identities differ are not pooled (each code is its own group, labelled
    `code=...`) unless `mix_code`."""
    by_exp = defaultdict(list)
    for r in runs:
        by_exp[r.experiment].append(r)
    out = []
    for exp in sorted(by_exp):
        module = experiment_module(exp)
        pool = tuple(getattr(module, "POOL", ()))
        codes = {_code(r) for r in by_exp[exp] if r.status in FINISHED}
        split = len(codes) > 1 and not mix_code
        groups = defaultdict(list)
        for r in by_exp[exp]:
            key = r.group(pool, module)
            if split:
                key = " ".join(filter(None, [key, f"code={_code(r)}"]))
            groups[key].append(r)
        out += [Study(exp, g, groups[g], module, label=len(groups) > 1) for g in sorted(groups)]
    return out


def _status_line(runs: list) -> str:
    counts = defaultdict(int)
    for r in runs:
        counts[r.status] += 1
    order = list(vocab.STATUSES) + [vocab.UNFINISHED]
    parts = [f"{counts[s]} {s}" for s in order if counts[s]]
    return f"{len(runs)} run{'s' if len(runs) != 1 else ''}: " + ", ".join(parts)


def claims_line(exp: str, claims: list, level: float = 0.05) -> str:
    """`relinear: 9 claims: 3 hold, 1 fails, 4 inconclusive, 1 not measured; after Holm's
    correction over the 6 with a p-value, 2 of the 3 that hold still hold at 0.05` (each
    claim itself stays a 95 % statement; `p` is its p-value in the claimed direction)."""
    from quadrun.stats import holm

    counts = defaultdict(int)
    for c in claims:
        counts[c["verdict"]] += 1
    words = {"holds": "hold", "fails": "fail", "inconclusive": "inconclusive",
             "not_measured": "not measured"}
    parts = [f"{counts[v]} {words[v] if counts[v] != 1 else v.replace('_', ' ')}"
             for v in vocab.VERDICTS if counts[v]]
    smoke = " (scale=smoke: not evidence)" if claims and all(is_smoke(c) for c in claims) else ""
    text = f"{exp}: {len(claims)} claim{'s' if len(claims) != 1 else ''}{smoke}: " + ", ".join(parts)
    tested = [c for c in claims if isinstance(c.get("values", {}).get("p"), (int, float))
              and not isinstance(c["values"]["p"], bool)]
    if tested:
        adjusted = holm([c["values"]["p"] for c in tested])
        held = [a for c, a in zip(tested, adjusted) if c["verdict"] == "holds"]
        still = sum(a <= level * (1 + 1e-9) for a in held)
        text += (f"; after Holm's correction over the {len(tested)} with a p-value, {still} of "
                 f"the {len(held)} that hold still hold at {level:g}")
    return text


def _tables(exp: str, group_studies: list) -> list:
    """The record tables of one experiment, over all its groups."""
    rows = [(s.group, rec) for s in group_studies for rec in s.records]
    if not rows:
        return []
    keys = []
    for s in group_studies:
        keys += [k for k in s.keys if k not in keys]
    keys = [k for k in keys if k not in REPLICATE_KEYS and k != "part"]
    parts = list(dict.fromkeys(str(r.get("part")) for _, r in rows if "part" in r))
    if not parts:
        return [records_table(f"{exp}: records", rows, keys)]
    tables = []
    for part in parts:
        mine = [(g, r) for g, r in rows if str(r.get("part")) == part]
        used = [k for k in keys if any(k in r for _, r in mine)]
        tables.append(records_table(f"{exp}: {part}", mine, used))
    return tables


def _write_csv(path: Path, runs: list, group_of: dict) -> None:
    fields = []
    for r in runs:
        for rec in r.records:
            fields += [k for k in rec if k not in fields]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["folder", "experiment", "group", "run_seed", "run_status", "error"] + fields)
        for r in runs:
            base = [str(r.folder), r.experiment, group_of.get(r.folder, ""), r.seed, r.status,
                    r.error or ""]
            for rec in (r.records or [{}]):
                w.writerow(base + [fmt_number(rec[k]) if isinstance(rec.get(k), (list, dict))
                                   else ("" if rec.get(k) is None else rec.get(k)) for k in fields])


def build(paths: list, out: Optional[Path] = None, figures: Optional[Path] = None,
          quiet: bool = False, mix_code: bool = False, page=None) -> dict:
    """Write the report for the runs under `paths` into `out` (default <first PATH>/report),
    figures into `figures` (default: `out`), and its index.html (quadrun.html; `page`: what
    the caller adds to the page, e.g. a reproduction's title and plan, or a function of
    the result that returns it); return {"runs",
    "studies", "claims", "tables", "out", "figures", "index"}."""
    runs = find_runs(paths)
    out = Path(out) if out else Path(paths[0]) / vocab.REPORT
    out.mkdir(parents=True, exist_ok=True)
    figures = Path(figures) if figures else out
    all_studies = studies(runs, mix_code)
    group_of = {r.folder: s.group for s in all_studies for r in s.runs}
    claims, tables, made = [], [], []
    by_exp = defaultdict(list)
    for s in all_studies:
        by_exp[s.experiment].append(s)
    for exp, group_studies in by_exp.items():
        exp_claims = [c for s in group_studies for c in s.claims]
        if exp_claims:
            claims.append((exp, exp_claims))
        tables += _tables(exp, group_studies)
        for s in group_studies:
            s.figures = _figures(s, figures)
            made += s.figures
    claim_tables = [claims_table(f"Claims: {exp}", cs) for exp, cs in claims]
    problems = [r for r in runs if r.status != "completed"]
    lines = [_status_line(runs)] + [claims_line(exp, cs) for exp, cs in claims]
    md = ["  \n".join(lines) + "\n"] + [t.markdown() for t in claim_tables + tables]
    undecided = [s for s in all_studies if s.error]
    if undecided:
        md.append("### Claims not decided\n\n" + "".join(
            f"- {s.experiment}{' (' + s.group + ')' if s.group else ''}: {s.error}\n"
            for s in undecided))
    if problems:
        md.append("### Runs not completed\n\n" + "".join(
            f"- `{r.folder}`: {r.status}{': ' + r.error if r.error else ''}\n" for r in problems))
    (out / "table.md").write_text("\n".join(md))
    (out / "table.tex").write_text(
        "% tables for a paper: \\usepackage{booktabs}; numbers are mean $\\pm$ sample std over "
        "the runs of a row\n" + "\n".join([claims_latex([c for _, cs in claims for c in cs])]
                                          + [t.latex() for t in tables]))
    (out / "claims.json").write_text(json.dumps(
        [{"experiment": exp, **c} for exp, cs in claims for c in cs], indent=2, default=str) + "\n")
    _write_csv(out / "results.csv", runs, group_of)
    result = {"runs": runs, "studies": all_studies, "claims": [c for _, cs in claims for c in cs],
              "claim_tables": claim_tables, "tables": tables, "out": out, "figures": made}
    try:  # the page is one view more: a failure is logged, the tables stay
        from quadrun import html

        extra = page(result) if callable(page) else (page or {})
        result["index"] = html.write_index(result, out, **extra)
    except Exception as exc:
        log.error("could not write %s: %s: %s", out / "index.html", type(exc).__name__, exc)
        result["index"] = None
    if not quiet:
        print_report(result)
    return result


def _figures(study: Study, folder: Path) -> list:
    fn = getattr(study.module, "figures", None)
    if fn is None or study.cfg is None or not study.records:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    suffix = "".join(c if c.isalnum() or c in "=-_." else "_" for c in study.group) \
        if study.label else ""

    def save(fig, name: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (f"{name}_{suffix}.png" if suffix else f"{name}.png")
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        made.append(path)
        return path

    fn(study.records, study.cfg, save)
    return made


# -- printing --------------------------------------------------------------------------------------
VERDICT_STYLE = {"holds": "bold green", "fails": "bold red", "inconclusive": "yellow",
                 "not_measured": "dim"}


SMOKE_NOTE = ("scale=smoke: a check that the code runs end to end; these verdicts are not "
              "evidence about the paper (run the cpu or paper scale for that)")


def is_smoke(claim: dict) -> bool:
    return claim.get("scale") == "smoke"


def shown_verdict(claim: dict) -> str:
    """The verdict as shown: a smoke run's in parentheses (never a bare holds or fails)."""
    return f"({claim['verdict']})" if is_smoke(claim) else claim["verdict"]


def print_claims(claims: list, console=None, title: str = "Claims") -> None:
    """The claims as a two-column table (verdict | claim, measured, target, why); a smoke
    run's under a heading that says they are not evidence."""
    from rich.console import Console
    from rich.table import Table as RichTable

    console = console or Console()
    if not claims:
        return
    smoke = all(is_smoke(c) for c in claims)
    rt = RichTable(title=f"{title} ({SMOKE_NOTE})" if smoke else title, show_lines=True,
                   expand=False)
    rt.add_column("verdict", no_wrap=True)
    rt.add_column("claim", overflow="fold")
    for c in claims:
        ext = " [extension: quadrun's own, not the paper's]" if c.get("extension") else ""
        text = (f"[bold]{c['id']}[/]{' (' + c['group'] + ')' if c.get('group') else ''}{ext}: "
                f"{c['statement']}\nmeasured: {c['measured']}\ntarget: {c['target']}\n"
                f"why: {c['why']}")
        if isinstance(c.get("next"), dict) and c["next"].get("text"):
            text += f"\nnext: {c['next']['text']}"
        style = "dim" if is_smoke(c) else VERDICT_STYLE.get(c["verdict"], "")
        rt.add_row(f"[{style}]{shown_verdict(c)}[/]", text)
    console.print(rt)


def print_claims_compact(claims: list, console=None) -> None:
    """One line per claim: verdict, id, what was measured (cut to the terminal's width); a
    smoke run's claims, which are not evidence, one line per verdict."""
    from rich.console import Console
    from rich.text import Text

    console = console or Console()
    width = max(40, console.width)
    if claims and all(is_smoke(c) for c in claims):
        # not evidence: one line per verdict, naming its claims
        console.print("claims (scale=smoke: the code runs; not evidence about the paper):",
                      highlight=False)
        for verdict in vocab.VERDICTS:
            ids = [c["id"] for c in claims if c["verdict"] == verdict]
            if ids:
                line = f"  ({verdict}) {len(ids)}: " + ", ".join(ids)
                console.print(line if len(line) <= width else line[:width - 1] + "…",
                              highlight=False, soft_wrap=True)
        return
    for c in claims:
        verdict = shown_verdict(c)
        head = f"  {verdict:<14} {c['id']}{' (' + c['group'] + ')' if c.get('group') else ''}: "
        body = c["measured"].replace("\n", " ")
        line = head + body
        if len(line) > width:
            line = line[:width - 1] + "…"
        style = "dim" if is_smoke(c) else VERDICT_STYLE.get(c["verdict"], "")
        text = Text(line)
        text.stylize(style, 2, 2 + len(verdict))
        console.print(text, highlight=False, soft_wrap=True)


def print_table(table: Table, console) -> None:
    from rich.table import Table as RichTable

    blocks = table.blocks(console.width)
    for i, block in enumerate(blocks):
        last = i == len(blocks) - 1          # the header lines once, under the last block
        rt = RichTable(title=table.title if i == 0 else None,
                       caption=("\n".join(table.header) or None) if last else None,
                       caption_justify="left")
        for i in block:
            rt.add_column(table.columns[i], overflow="fold")
        for row in table.rows:
            rt.add_row(*[row[i] for i in block])
        console.print(rt)


def print_report(result: dict) -> None:
    from rich.console import Console

    console = Console()
    for exp in dict.fromkeys(s.experiment for s in result["studies"]):
        print_claims([c for s in result["studies"] if s.experiment == exp for c in s.claims],
                     console, title=f"Claims: {exp}")
    for t in result["tables"]:
        print_table(t, console)
    for r in result["runs"]:
        if r.status != "completed":
            console.print(f"[yellow]{r.status}[/]: {r.folder}{': ' + r.error if r.error else ''}",
                          markup=True, highlight=False)
    by_exp = defaultdict(list)
    for s in result["studies"]:
        by_exp[s.experiment] += s.claims
    for exp, claims in by_exp.items():
        if claims:
            console.print(claims_line(exp, claims), highlight=False)
    console.print(f"{_status_line(result['runs'])}; report written to {result['out']}",
                  highlight=False)


def recent_runs(root: Path, experiment: Optional[str] = None, limit: int = 20) -> list:
    """The newest run folders under `root` (./outputs), of one experiment or all."""
    folders = []
    for exp_dir in sorted(Path(root).glob("*")):
        if not exp_dir.is_dir() or (experiment and exp_dir.name != experiment):
            continue
        folders += [p for p in exp_dir.glob("*") if (p / ".hydra").is_dir()]
        folders += [p for p in exp_dir.glob("multirun/*/*") if (p / ".hydra").is_dir()]
    runs = [Run(f) for f in folders]
    runs.sort(key=lambda r: (r.meta.get("start") or "", str(r.folder)), reverse=True)
    return runs[:limit]


def shorten(text: str, width: int) -> str:
    """`text` cut in the middle to `width` characters (`…` marks the cut), so both ends of a
    path stay readable and nothing wraps."""
    if len(text) <= width or width < 5:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def _took(runs: list) -> str:
    from quadrun.estimate import duration

    starts = [r.meta.get("start") for r in runs if r.meta.get("start")]
    ends = [r.meta.get("end") for r in runs if r.meta.get("end")]
    if not starts or not ends or len(ends) < len(runs):
        return "-"
    import datetime as dt

    try:
        span = dt.datetime.fromisoformat(max(ends)) - dt.datetime.fromisoformat(min(starts))
    except ValueError:
        return "-"
    return duration(span.total_seconds())


def _state_counts(runs: list) -> str:
    counts: dict = {}
    for r in runs:
        counts[r.state] = counts.get(r.state, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def listing(root: Path, experiment: Optional[str] = None, limit: int = 20) -> list:
    """The newest runs and sweeps under `root` (./outputs), of one experiment or all:
    [(folder, [Run] (one for a run, its jobs for a sweep), is_sweep)], newest first."""
    entries = []
    for exp_dir in sorted(Path(root).glob("*")):
        if not exp_dir.is_dir() or (experiment and exp_dir.name != experiment):
            continue
        entries += [(p, [Run(p)], False) for p in exp_dir.glob("*") if (p / ".hydra").is_dir()]
        for sweep in exp_dir.glob("multirun/*"):
            jobs = [Run(p) for p in sorted(sweep.iterdir()) if (p / ".hydra").is_dir()]
            if jobs:
                entries.append((sweep, jobs, True))
    entries.sort(key=lambda e: (min((r.meta.get("start") or "") for r in e[1]), str(e[0])),
                 reverse=True)
    return entries[:limit]


def _pooled_verdicts(folder: Path) -> str:
    """`claims: 3 holds, 9 inconclusive` from a sweep's report/claims.json, or ''."""
    try:
        claims = json.loads((folder / vocab.REPORT / "claims.json").read_text())
    except (OSError, ValueError):
        return ""
    counts: dict = {}
    for c in claims if isinstance(claims, list) else []:
        if isinstance(c, dict):
            counts[c.get("verdict")] = counts.get(c.get("verdict"), 0) + 1
    smoke = all(isinstance(c, dict) and c.get("scale") == "smoke" for c in claims) if claims else False
    shown = ", ".join(f"{n} {v}" for v, n in counts.items())
    return f"claims{' at smoke scale' if smoke else ''}: {shown}" if shown else ""


def print_runs(entries: list, root: Path = Path("outputs")) -> None:
    """One row per run and per sweep: its folder relative to outputs/ (never wrapped), state
    (a sweep: its jobs' states), start, duration, and the headline (the experiment's
    HEADLINE values, or the overrides)."""
    from rich.console import Console
    from rich.table import Table as RichTable

    from quadrun.sweeps import headline

    console = Console()
    rows = []
    for folder, runs, sweep in entries:
        try:
            shown = str(folder.relative_to(root))
        except ValueError:
            shown = str(folder)
        start = min((r.meta.get("start") or "-") for r in runs)[5:16].replace("T", " ")
        if sweep:
            state = f"{len(runs)} jobs: {_state_counts(runs)}"
            what = _pooled_verdicts(folder) or \
                " ".join(o for o in runs[0].overrides if o.startswith("experiment="))
        else:
            r = runs[0]
            state = r.state + (f" at step {r.last_step}" if r.state not in FINISHED and r.last_step else "")
            what = headline(r.experiment, r.summary) or \
                " ".join(o for o in r.overrides if not o.startswith("hydra.")) or "(defaults)"
        rows.append((shown, state, start, _took(runs), what))
    widths = [max((len(r[i]) for r in rows), default=0) for i in (1, 2, 3)]
    width = max(20, console.width - sum(widths) - 16 - 30)   # the headline keeps 30 columns
    rt = RichTable(title=f"recent runs and sweeps in {root}/ (newest first)")
    rt.add_column("folder", no_wrap=True)
    for name in ("state", "started", "took"):
        rt.add_column(name, no_wrap=True)
    rt.add_column("headline / overrides", overflow="fold")
    for shown, *rest in rows:
        rt.add_row(shorten(shown, width), *rest)
    console.print(rt)
    if any(r.state in ("killed", "interrupted") for _, runs, _ in entries for r in runs):
        print("continue a killed or interrupted run with: quadrun resume=outputs/<folder>")


def sweep_status(sweep_dir: Path) -> list:
    """[(job folder, state, last step, overrides)] of every job of a sweep, pending ones too
    (from the sweep's multirun.yaml). Reads files only: the jobs are not disturbed."""
    from quadrun import sweeps

    expected = sweeps.expected_jobs(sweep_dir)
    known = {str(folder) for folder, _ in expected}
    found = [p for p in sorted(Path(sweep_dir).iterdir()) if (p / ".hydra").is_dir()
             and str(p) not in known] if Path(sweep_dir).is_dir() else []
    rows = []
    for folder, overrides in expected + [(p, Run(p).overrides) for p in found]:
        if not (folder / ".hydra").is_dir() and not (folder / vocab.META).exists():
            rows.append((folder, "pending", None, overrides))
            continue
        run = Run(folder)
        rows.append((folder, run.state, run.last_step, overrides))
    return rows


def print_status(sweep_dir: Path, rows: list) -> None:
    """One row per job: its name (its overrides, shortened in the middle, never wrapped),
    state, last step, duration and headline."""
    from rich.console import Console
    from rich.table import Table as RichTable

    from quadrun.sweeps import headline

    console = Console()
    rt = RichTable(title=f"sweep {sweep_dir}")
    rt.add_column("job (its overrides)", no_wrap=True)
    for name in ("state", "step", "took"):
        rt.add_column(name, no_wrap=True)
    rt.add_column("headline", overflow="fold")
    width = max(20, console.width - 9 - 6 - 9 - 16 - 24)      # the headline keeps 24 columns
    counts: dict = {}
    for folder, state, step, _ in rows:
        counts[state] = counts.get(state, 0) + 1
        run = Run(folder) if (folder / vocab.META).exists() else None
        rt.add_row(shorten(folder.name, width), state, "-" if step is None else str(step),
                   _took([run]) if run else "-",
                   headline(run.experiment, run.summary) if run else "")
    console.print(rt)
    console.print(f"{len(rows)} jobs: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())),
                  highlight=False)


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(prog="quadrun-report", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="run or sweep folders")
    parser.add_argument("--out", type=Path, help="report folder (default: <first PATH>/report)")
    parser.add_argument("--runs", nargs="?", const="", metavar="EXPERIMENT",
                        help="list recent runs under ./outputs (of one experiment) and exit")
    parser.add_argument("--mix-code", action="store_true",
                        help="pool the records of runs made by different code (by default each "
                             "code identity is its own group)")
    parser.add_argument("--status", action="store_true",
                        help="show the state of every job of the given sweep folders and exit")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"),
                        help="two runs, sweeps or reproductions: each claim's verdict in both "
                             "and each shared metric's values and difference")
    args = parser.parse_args(argv)
    if args.compare:
        missing = [p for p in args.compare if not p.exists() or not find_runs([p])]
        if missing:
            print(f"quadrun-report: error: --compare: no run folders under {missing[0]}",
                  file=sys.stderr)
            sys.exit(2)
        from quadrun import compare

        compare.main(*args.compare, out=args.out)
        return
    if args.status:
        for sweep in args.paths:
            from quadrun.sweeps import is_sweep

            if not is_sweep(sweep):
                print(f"quadrun-report: error: --status: {sweep} is not a sweep folder",
                      file=sys.stderr)
                sys.exit(2)
            print_status(sweep, sweep_status(sweep))
        return
    if args.runs is not None:
        entries = listing(Path("outputs"), args.runs or None)
        if not entries:
            print(f"quadrun-report: error: --runs: no runs under outputs/{args.runs}", file=sys.stderr)
            sys.exit(2)
        print_runs(entries)
        return
    if not args.paths:
        parser.error("give run or sweep folders, or --runs")
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        print(f"quadrun-report: error: paths: {missing[0]} does not exist", file=sys.stderr)
        sys.exit(2)
    if not find_runs(args.paths):
        print(f"quadrun-report: error: paths: no run folders under {', '.join(map(str, args.paths))}",
              file=sys.stderr)
        sys.exit(2)
    from quadrun import reproduce

    if len(args.paths) == 1 and reproduce.is_reproduction(args.paths[0]) and not args.out:
        reproduce.write_report(args.paths[0], quiet=False)   # its own page: plan, papers
        return
    build(args.paths, args.out, mix_code=args.mix_code)


if __name__ == "__main__":
    main()
