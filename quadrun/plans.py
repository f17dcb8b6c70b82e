"""A paper's reproduction plan: configs/reproduce/<paper>.yaml, read and checked.

    title: Quadratic networks (Fan et al.)
    source: Fan, Li, Wang, Lai, Wang (arXiv 2110.06081, IEEE TNNLS 2023)
    steps:
      - experiment: relinear          # a registered experiment
        sweep: relinear_ablation      # optional: a named sweep in configs/sweep/
        overrides: []                 # optional: added to the step's command
        scales: [smoke, cpu]          # optional: where the step runs (default: every scale)

`all.yaml` has `papers: [quadratic, hierpoly, ...]` instead of steps. A plan names no claim
and counts no job: those come from the experiments and the sweeps. `next_command` says
what to run to decide a claim that a scale could not. Torch-free.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from quadrun.errors import ConfigError

PLANS = "reproduce"                 # configs/reproduce/<paper>.yaml
# Overrides that the plan sets for each step: not accepted from the command line.
PLAN_KEYS = ("experiment", "sweep", "hydra.sweep.dir", "hydra.run.dir", "hydra.mode")


# -- plans ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One experiment (and named sweep) of a paper's plan."""
    paper: str
    experiment: str
    sweep: Optional[str] = None
    overrides: tuple = ()
    scales: tuple = ()                  # empty: every scale

    @property
    def name(self) -> str:
        from quadrun.sweeps import defining, job_name

        parts = [self.experiment] + ([self.sweep] if self.sweep else [])
        if defining(self.overrides):    # a launch override (hydra.*) does not rename a step
            parts.append(job_name(self.overrides))
        return "-".join(parts)

    def runs_at(self, scale: str) -> bool:
        return not self.scales or scale in self.scales

    def argv(self, scale: str, extra: list = (), folder: Optional[Path] = None) -> list:
        """The step's `quadrun` arguments (a sweep of one job when it names no sweep). Of the
        extra overrides, one of another experiment's section (`relinear.download=true` for a
        dcdm step) is left out: it reaches that experiment's steps only."""
        from quadrun import registry

        others = set(registry.names()) - {self.experiment}
        argv = ["-m", f"experiment={self.experiment}", f"scale={scale}"]
        if self.sweep:
            argv.append(f"sweep={self.sweep}")
        argv += list(self.overrides) + [o for o in extra
                                        if o.lstrip("+~").split(".", 1)[0] not in others]
        if folder is not None:
            quoted = str(Path(folder).resolve()).replace("\\", "\\\\").replace("'", "\\'")
            argv.append(f"hydra.sweep.dir='{quoted}'")
        return argv


@dataclass
class Plan:
    name: str
    title: str
    steps: list
    papers: dict = field(default_factory=dict)     # paper -> title, in order

    def scales(self) -> list:
        from quadrun.schema import SCALES

        return [s for s in SCALES if self.at(s)]

    def at(self, scale: str) -> list:
        return [s for s in self.steps if s.runs_at(scale)]


def plans_dir() -> Path:
    """configs/reproduce/ (QUADRUN_PLANS=<folder> reads the plans from another folder)."""
    import os

    if os.environ.get("QUADRUN_PLANS"):
        return Path(os.environ["QUADRUN_PLANS"])
    from quadrun.cli import config_dir

    return Path(config_dir()) / PLANS


def plan_names() -> list:
    return sorted(p.stem for p in plans_dir().glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError:
        raise ConfigError(f"reproduce: {path} cannot be read") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"reproduce: {path} is not valid YAML "
                          f"({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"reproduce: {path} must be a mapping with title and steps (or papers)")
    return data


def load_plan(name: str, _seen: tuple = ()) -> Plan:
    """configs/reproduce/<name>.yaml, checked against the registered experiments, the
    scales and configs/sweep/: a plan that names something that does not exist is one line
    naming the file, the step and what is allowed."""
    from quadrun import registry
    from quadrun.cli import config_dir
    from quadrun.schema import SCALES

    names = plan_names()
    if name not in names:
        raise ConfigError(f"reproduce: unknown {name!r}; must be one of: {', '.join(names)} "
                          f"(plans in {plans_dir()})")
    path = plans_dir() / f"{name}.yaml"
    data = _read_yaml(path)
    title = str(data.get("title") or name)
    unknown = set(data) - {"title", "source", "steps", "papers"}
    if unknown:
        raise ConfigError(f"reproduce: {path}: unknown key {sorted(unknown)[0]!r}; allowed: "
                          "title, source, steps, papers")
    if "papers" in data:
        papers = data["papers"]
        if not isinstance(papers, list) or not papers or "steps" in data:
            raise ConfigError(f"reproduce: {path}: papers must be a non-empty list of plan "
                              "names (and no steps beside it)")
        steps, titles = [], {}
        for paper in papers:
            if paper in _seen + (name,):
                raise ConfigError(f"reproduce: {path}: {paper!r} includes itself")
            sub = load_plan(str(paper), _seen + (name,))
            steps += sub.steps
            titles.update(sub.papers)
        plan = Plan(name, title, steps, titles)
    else:
        raw = data.get("steps")
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"reproduce: {path}: steps must be a non-empty list")
        experiments = registry.names()
        sweeps = sorted(p.stem for p in (Path(config_dir()) / "sweep").glob("*.yaml"))
        steps = []
        for i, item in enumerate(raw, 1):
            where = f"reproduce: {path}: step {i}"
            if not isinstance(item, dict):
                raise ConfigError(f"{where} must be a mapping (experiment, sweep, overrides, scales)")
            bad = set(item) - {"experiment", "sweep", "overrides", "scales"}
            if bad:
                raise ConfigError(f"{where}: unknown key {sorted(bad)[0]!r}; allowed: "
                                  "experiment, sweep, overrides, scales")
            exp = item.get("experiment")
            if exp not in experiments:
                raise ConfigError(f"{where}: experiment {exp!r} is not registered; must be one "
                                  f"of: {', '.join(sorted(experiments))}")
            sweep = item.get("sweep")
            if sweep is not None and sweep not in sweeps:
                raise ConfigError(f"{where}: sweep {sweep!r} is not in configs/sweep/; must be "
                                  f"one of: {', '.join(sweeps)}")
            scales = item.get("scales") or []
            if isinstance(scales, str):
                scales = [scales]
            for s in scales:
                if s not in SCALES:
                    raise ConfigError(f"{where}: scale {s!r} is not a scale; must be one of: "
                                      f"{', '.join(SCALES)}")
            overrides = item.get("overrides") or []
            if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
                raise ConfigError(f"{where}: overrides must be a list of key=value strings")
            for o in overrides:
                if o.lstrip("+~").split("=", 1)[0] in PLAN_KEYS:
                    raise ConfigError(f"{where}: overrides may not set {o.split('=', 1)[0]} "
                                      "(the step's experiment and sweep keys set it)")
            steps.append(Step(name, exp, sweep, tuple(overrides), tuple(scales)))
        plan = Plan(name, title, steps, {name: title})
    seen = {}
    for s in plan.steps:
        for scale in (s.scales or SCALES):
            if (s.name, scale) in seen:
                raise ConfigError(f"reproduce: {path}: two steps named {s.name} run at "
                                  f"scale={scale} ({seen[(s.name, scale)]} and {s.paper})")
            seen[(s.name, scale)] = s.paper
    return plan


def paper_of(experiment: str) -> Optional[str]:
    """The first paper plan (not an aggregate like `all`) with a step of `experiment`."""
    for name in plan_names():
        try:
            data = _read_yaml(plans_dir() / f"{name}.yaml")
        except ConfigError:
            continue
        if "papers" in data:
            continue
        if any(isinstance(s, dict) and s.get("experiment") == experiment
               for s in data.get("steps") or []):
            return name
    return None


def paper_titles() -> dict:
    """{experiment: its paper's title} from the plans."""
    out = {}
    for name in plan_names():
        try:
            data = _read_yaml(plans_dir() / f"{name}.yaml")
        except ConfigError:
            continue
        for s in data.get("steps") or []:
            if isinstance(s, dict) and s.get("experiment") and "papers" not in data:
                out.setdefault(s["experiment"], str(data.get("title") or name))
    return out


# -- the command that would decide a claim -------------------------------------------------------
def next_command(claim: dict, study) -> str:
    """For an inconclusive or not-measured claim: the command to run next. The claim's own
    `command` when the experiment gives one; else its paper's reproduction at the next larger
    scale that runs the experiment; at the largest scale, the same study with more seeds."""
    from quadrun.schema import SCALES
    from quadrun.sweeps import is_sweep

    if claim.get("command"):
        return str(claim["command"])
    runs = list(getattr(study, "runs", []))
    scale = claim.get("scale") or next((r.summary.get("scale") or r.config.get("scale")
                                        for r in runs if r.summary.get("scale")
                                        or r.config.get("scale")), None)
    paper = paper_of(study.experiment)
    if paper and scale in SCALES:
        try:
            plan = load_plan(paper)
        except ConfigError:
            plan = None
        later = [s for s in (plan.scales() if plan else [])
                 if SCALES.index(s) > SCALES.index(scale)
                 and any(st.experiment == study.experiment for st in plan.at(s))]
        if later:
            return f"quadrun reproduce={paper} scale={later[0]}"
    seeds = sorted({int(r.seed) for r in runs if isinstance(r.seed, int)})
    more = max(2 * len(seeds), len(seeds) + 3, 3)
    sweep = next((r.folder.parent for r in runs if is_sweep(r.folder.parent)), None)
    if sweep is not None:
        return f"quadrun resume={shlex.quote(str(sweep))} 'seed=range(0,{more})'  # more seeds"
    if runs:
        kept = [o for o in runs[0].overrides if not o.startswith(("seed=", "hydra.", "resume="))]
        return " ".join(["quadrun -m"] + [shlex.quote(o) for o in kept]
                        + [f"'seed=range(0,{more})'", " # more seeds"])
    return ""
