"""`quadrun reproduce=<paper>`: every run and sweep a paper's claims need, one command, one
report.

    quadrun reproduce=quadratic                  # cpu scale: expressivity + relinear's ablation
    quadrun reproduce=all scale=smoke            # every paper, tiny sizes: a check that all runs
    quadrun reproduce=dcdm scale=paper cluster=slurm_gpu   # other overrides go to every step
    quadrun reproduce=hierpoly --plan            # print the plan and the estimate, run nothing
    quadrun resume=outputs/reproduce/quadratic_cpu         # continue (or the same command again)

A paper's plan is `configs/reproduce/<paper>.yaml`: its steps, each an experiment with an
optional named sweep (configs/sweep/), extra overrides and the scales it runs at; `all.yaml`
lists the papers. Nothing here names a claim or counts jobs: job counts come from the
sweeps, claims from the experiments.

Each step runs as `quadrun -m experiment=E [sweep=S] scale=... hydra.sweep.dir=<folder>/<step>`
in its own process, through the sweep machinery (any launcher), so the same command again
continues: finished jobs are skipped and their folders untouched, interrupted ones resume.
Before it starts, the plan is printed with each step's job count and an estimated time
from measured seconds per job: this reproduction's own finished jobs, else earlier runs of
the same experiment and scale under ./outputs, else the reference rates shipped in
configs/reproduce/rates.json (`python -m quadrun.reproduce rates <folder>` rewrites them
from a finished reproduction); each line says which.

The reproduction folder (`outputs/reproduce/<paper>_<scale>`, or hydra.run.dir=...) holds
`reproduction.json` (the command, every launch's environment and step times), one folder and
one log per step, and `report/`: index.html (quadrun/html.py), report.md, claims.json (every
claim with its verdict, scale and, when undecided, the command that would decide it),
results.csv, table.md, the figures.

Torch-free (the steps run in their own processes).
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


from quadrun import vocab
from quadrun.errors import ConfigError
from quadrun.plans import PLAN_KEYS, Plan, Step, load_plan, paper_titles, plan_names, plans_dir

RECORD = "reproduction.json"        # in a reproduction folder
ROOT = Path("outputs") / "reproduce"
EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 3


# -- jobs, rates and the estimate -----------------------------------------------------------------
@dataclass
class Prepared:
    """A step of this reproduction, ready to launch."""
    step: Step
    folder: Path
    argv: list
    jobs: list                  # job folders (empty for a search sweeper: count only)
    count: int
    done: int
    per_job: Optional[float]
    startup: float
    source: str

    @property
    def remaining(self) -> int:
        return max(0, self.count - self.done)

    @property
    def estimate(self) -> Optional[float]:
        if not self.remaining:
            return 0.0
        if self.per_job is None:
            return None
        return self.startup + self.per_job * self.remaining

    @property
    def command(self) -> str:
        return "quadrun " + " ".join(shlex.quote(a) for a in self.argv
                                     if not a.startswith("hydra.sweep.dir="))


def list_jobs(argv: list, folder: Path) -> tuple:
    """(job folders, job count, retries) of a step's sweep, computed as the sweeper will."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from quadrun.cli import _compose
    from quadrun.sweeps import grid_jobs, job_name

    overrides = [a for a in argv if not a.startswith("-")]
    parser = OverridesParser.create()
    plain = [o for o in overrides if not parser.parse_override(o).is_sweep_override()]
    cfg = _compose(plain)   # the sweep's own parameters come from the composed config
    sweeper = cfg.hydra.sweeper
    retries = int(cfg.sweep.retries)
    if "optuna" in str(sweeper.get("_target_", "")):
        return [], int(sweeper.get("n_trials") or 0), retries
    params = OmegaConf.to_container(sweeper.params, resolve=False) if sweeper.get("params") else {}
    grids = OmegaConf.to_container(sweeper.grids, resolve=False) if sweeper.get("grids") else []
    task = [o for o in overrides if not o.startswith(("hydra.", "hydra/"))]
    jobs = [Path(folder) / job_name(job) for job in grid_jobs(params, grids, task, parser)]
    return jobs, len(jobs), retries


def _job_done(job: Path, retries: int) -> bool:
    """Whether the sweeper will not launch the job again (quadrun.sweeps.finished)."""
    try:
        status = json.loads((job / vocab.SUMMARY).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return False
    if status in ("completed", "diverged"):
        return True
    if status == "failed":
        try:
            failed = int(json.loads((job / vocab.META).read_text()).get("failed_attempts", 1))
        except (OSError, ValueError, AttributeError, TypeError):
            failed = 1
        return failed > retries
    return False


def _step_load(job: Path) -> Optional[float]:
    """The mean load average while the step that holds `job` ran, when a reproduction
    sampled it, else while the job ran (its meta.json), else None."""
    from quadrun import estimate

    step = Path(job).parent
    loads = [l["steps"][step.name]["load_mean"]
             for l in _read_record(step.parent).get("launches") or []
             if (l.get("steps") or {}).get(step.name, {}).get("load_mean") is not None]
    if loads:
        return statistics.fmean(loads)
    try:
        return estimate.run_load(json.loads((Path(job) / vocab.META).read_text()))
    except (OSError, ValueError):
        return None


def estimate_rate(step: Step, scale: str, jobs: list, folder: Path, retries: int,
                  reference: dict, job_overrides: set, load_now: Optional[float] = None) -> tuple:
    """(seconds per job, seconds to start the step, where the rate comes from): this
    reproduction's finished jobs, else earlier runs under outputs/ whose defining overrides
    are among the step's, else the reference rates (quadrun.estimate); a rate measured at a
    known load is scaled to the load now."""
    from quadrun import estimate, provenance

    startup = float(reference.get("startup_s") or 0.0)
    mine = [(provenance.run_seconds(j), _step_load(j)) for j in jobs if _job_done(j, retries)]
    mine = [(s, load) for s, load in mine if s is not None]
    if mine:
        rate, how = estimate.scaled(mine, load_now)
        return rate, startup, (f"mean of {len(mine)} job{'s' if len(mine) != 1 else ''} "
                               f"finished in this reproduction ({how})")
    seen = estimate.history(step.experiment, scale, defining=job_overrides, exclude=folder)
    if seen:
        rate, how = estimate.scaled([(s, load) for s, load, _ in seen], load_now)
        return rate, startup, (f"mean of {len(seen)} earlier run{'s' if len(seen) != 1 else ''}"
                               f" of {step.experiment} at scale={scale} under outputs/ ({how})")
    rows = estimate.reference_rows(step.experiment, scale, step.sweep or "run", reference)
    if rows:
        rate, how = estimate.scaled(rows, load_now)
        m = reference.get("measured") or {}
        where = ", ".join(str(x) for x in (m.get("host") and f"on {m['host']}",
                                             m.get("cores") and f"{m['cores']} cores",
                                             m.get("date")) if x)
        return rate, startup, (f"reference rate in configs/reproduce/{estimate.RATES} "
                               f"({how}{'; ' + where if where else ''})")
    return None, startup, "no measured rate: no earlier run of this experiment at this scale"


# -- the command line -----------------------------------------------------------------------------
@dataclass
class Request:
    plan: str
    scale: str
    extra: list
    folder: Path
    plan_only: bool = False


def wants(argv: list) -> bool:
    """Whether a `quadrun` command line is a reproduction (reproduce=..., or resume= of a
    reproduction folder)."""
    for a in argv:
        if a.startswith("reproduce="):
            return True
        if a.startswith("resume="):
            return is_reproduction(Path(a.split("=", 1)[1].strip("'\"")).expanduser())
    return False


def parse(argv: list) -> Request:
    from quadrun.schema import SCALES

    plan, scale, folder, extra, plan_only = None, None, None, [], False
    resume = None
    for a in argv:
        if a in ("-m", "--multirun"):
            continue
        if a == "--plan":
            plan_only = True
            continue
        if a.startswith("-"):
            raise ConfigError(f"arguments: {a!r} is not an option of quadrun reproduce=...; "
                              "use --plan to print the plan without running it")
        key, _, value = a.partition("=")
        value = value.strip("'\"")
        if not _:
            raise ConfigError(f"{a}: cannot parse {a!r}: it has no '='; write key=value")
        if key == "reproduce":
            plan = value
        elif key == "scale":
            scale = value
        elif key == "resume":
            resume = Path(value).expanduser()
        elif key == "hydra.run.dir":
            folder = Path(value).expanduser()
        elif key.lstrip("+~") in PLAN_KEYS:
            raise ConfigError(f"{key}: not allowed with reproduce=...; the paper's plan "
                              f"(configs/reproduce/) chooses the experiments, sweeps and folders")
        else:
            extra.append(a)
    if resume is not None:
        record = _read_record(resume)
        if not record:
            raise ConfigError(f"resume: {resume} is not a reproduction folder (no {RECORD})")
        if plan and plan != record.get("plan") or scale and scale != record.get("scale"):
            raise ConfigError(f"resume: {resume} is reproduce={record.get('plan')} "
                              f"scale={record.get('scale')}; drop reproduce= and scale=")
        plan, scale, folder = record.get("plan"), record.get("scale"), resume
        extra = list(record.get("extra") or []) + [o for o in extra
                                                  if o not in (record.get("extra") or [])]
    if not plan:
        raise ConfigError(f"reproduce: give a paper: reproduce=<{'|'.join(plan_names())}>")
    scale = scale or "cpu"
    if scale not in SCALES:
        raise ConfigError(f"scale: {scale!r} is not allowed; must be one of: {', '.join(SCALES)}")
    folder = folder or ROOT / f"{plan}_{scale}"
    return Request(plan, scale, extra, Path(folder), plan_only)


def is_reproduction(folder: Path) -> bool:
    return (Path(folder) / RECORD).exists()


def _read_record(folder: Path) -> dict:
    try:
        data = json.loads((Path(folder) / RECORD).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_record(folder: Path, record: dict) -> None:
    from quadrun.html import write_text

    write_text(Path(folder) / RECORD, json.dumps(record, indent=2, default=str) + "\n")


def _this_command(req: Request) -> str:
    parts = ["quadrun", f"reproduce={req.plan}", f"scale={req.scale}"] + \
        [shlex.quote(o) for o in req.extra]
    if req.folder != ROOT / f"{req.plan}_{req.scale}":
        parts.append(shlex.quote(f"hydra.run.dir={req.folder}"))
    return " ".join(parts)


# -- preparing, printing, running -----------------------------------------------------------------
def prepare(req: Request, plan: Plan, experiments: dict) -> list:
    """Every step at this scale, validated as its sweep would be (bad input: ConfigError,
    and the folders the check created are removed), its jobs listed and its time estimated."""
    from quadrun.cli import preflight

    steps = plan.at(req.scale)
    if not steps:
        raise ConfigError(f"scale: reproduce={req.plan} has no step at scale={req.scale}; its "
                          f"scales: {', '.join(plan.scales())}")
    created = _first_missing(req.folder)   # removed again if checking fails
    from quadrun.estimate import reference_rates

    reference = reference_rates()
    load_now = os.getloadavg()[0]
    prepared = []
    try:
        for step in steps:
            folder = req.folder / step.name
            argv = step.argv(req.scale, req.extra, folder)
            try:
                preflight(list(argv), experiments, lock=False)
                jobs, count, retries = list_jobs(argv, folder)
            except ConfigError as exc:
                raise ConfigError(f"{exc} (in step {step.name} of reproduce={req.plan}: "
                                  f"{' '.join(argv[:-1])})") from None
            done = sum(_job_done(j, retries) for j in jobs)
            job_overrides = set()
            for j in jobs:
                job_overrides |= set(j.name.split(","))
            job_overrides |= set(step.overrides)
            per_job, startup, source = estimate_rate(step, req.scale, jobs, folder, retries,
                                                     reference, job_overrides, load_now)
            prepared.append(Prepared(step, folder, argv, jobs, count, done, per_job, startup,
                                     source))
    except BaseException:
        _remove_if_empty(created)
        raise
    if req.plan_only:
        _remove_if_empty(created)
    return prepared


def _first_missing(folder: Path) -> Optional[Path]:
    """The outermost folder of `folder`'s path that does not exist yet (None: it exists)."""
    missing = None
    for p in [folder, *folder.parents]:
        if p.exists():
            break
        missing = p
    return missing


def _remove_if_empty(created: Optional[Path]) -> None:
    """Remove the folders that checking the steps created (from `created` down), when they
    hold no file."""
    if created is not None and created.exists() and \
            not any(p.is_file() for p in created.rglob("*")):
        import shutil

        shutil.rmtree(created, ignore_errors=True)


def print_plan(req: Request, plan: Plan, prepared: list, out=sys.stdout) -> Optional[float]:
    from quadrun.html import fmt_seconds

    total = sum(p.count for p in prepared)
    done = sum(p.done for p in prepared)
    known = [p.estimate for p in prepared]
    estimate = None if any(e is None for e in known) else sum(known)
    print(f"quadrun: reproduce={req.plan} scale={req.scale}: {plan.title}", file=out)
    print(f"  folder: {req.folder}", file=out)
    width = max(len(p.step.name) for p in prepared)
    for i, p in enumerate(prepared, 1):
        jobs = f"{p.count} job{'s' if p.count != 1 else ''}"
        if p.done:
            jobs += f" ({p.done} done)"
        est = "done" if not p.remaining else (
            "unknown" if p.estimate is None else f"~{fmt_seconds(p.estimate)}")
        print(f"  [{i}] {p.step.name:<{width}}  {jobs:<18} {est:<12} rate: {p.source}", file=out)
        print(f"      {p.command}", file=out)
    startup = prepared[0].startup if prepared else 0
    note = f"; each step adds ~{startup:.0f} s to start" if startup else ""
    print(f"  total: {total} job{'s' if total != 1 else ''}, {done} done; estimated "
          f"{'unknown (a step has no measured rate)' if estimate is None else fmt_seconds(estimate)}"
          f"{note}", file=out, flush=True)
    return estimate


class _Stop:
    def __init__(self):
        self.signal = None
        self.child: Optional[subprocess.Popen] = None

    def __call__(self, signum, _frame):
        first = self.signal is None
        self.signal = signum
        if first and self.child is not None and self.child.poll() is None:
            try:
                self.child.send_signal(signum)   # the step checkpoints and stops
            except OSError:
                pass


def run_step(p: Prepared, log_path: Path, stop: _Stop, out=sys.stdout) -> dict:
    """Launch one step's sweep in its own process (its output in `log_path`); show its jobs
    finishing; return what happened."""
    from quadrun.html import fmt_seconds

    start = time.time()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "a") as log:
        log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')}: quadrun "
                  f"{' '.join(shlex.quote(a) for a in p.argv)}\n")
        log.flush()
        child = subprocess.Popen([sys.executable, "-m", "quadrun", *p.argv], stdout=log,
                                 stderr=subprocess.STDOUT, env=env, start_new_session=True)
        stop.child = child
        tty = out.isatty() if hasattr(out, "isatty") else False
        shown, last_print, last_sample = -1, 0.0, 0.0
        retries = 0
        loads = [os.getloadavg()[0]]          # the 1-min load average, every 10 s
        while child.poll() is None:
            time.sleep(1.0)
            if time.time() - last_sample >= 10:
                loads.append(os.getloadavg()[0])
                last_sample = time.time()
            finished = sum(_job_done(j, retries) for j in p.jobs) if p.jobs else 0
            now = time.time()
            # a terminal line every 5 s; a log line when a job finished (at most every 30 s)
            # or every 2 minutes
            if p.jobs and now - last_print >= (5 if tty else 30) and \
                    (tty or finished != shown or now - last_print >= 120):
                where = _last_cell(log_path)
                text = (f"      {finished}/{p.count} jobs finished, {fmt_seconds(now - start)}"
                        + (f" (running: {where})" if where and finished < p.count else ""))
                print(("\r" + text + " " * 8) if tty else text, end="" if tty else "\n",
                      file=out, flush=True)
                shown, last_print = finished, now
        if tty and shown >= 0:
            print(file=out)
        stop.child = None
    seconds = time.time() - start
    summary = ""
    try:
        for line in reversed(log_path.read_text(errors="replace").splitlines()):
            if line.startswith("sweep "):
                summary = line.split(": ", 1)[1] if ": " in line else line
                break
    except OSError:
        pass
    finished = sum(_job_done(j, 0) for j in p.jobs) if p.jobs else None
    return {"start": start, "end": time.time(), "seconds": seconds, "rc": child.returncode,
            "summary": summary, "jobs": p.count, "done_before": p.done, "done_after": finished,
            "estimate": p.estimate, "rate_source": p.source,
            "load_mean": round(statistics.fmean(loads), 2), "load_max": round(max(loads), 2)}


def _last_cell(log_path: Path) -> str:
    """The newest `cell i/N` or `train i/N steps` of a step's log (its end only is read)."""
    import re

    try:
        with open(log_path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 8192))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return ""
    found = re.findall(r"(cell \d+/\d+|train \d+/\d+ steps)", tail)
    return found[-1] if found else ""


def _statuses(prepared: list) -> dict:
    counts: dict = {}
    for p in prepared:
        for j in p.jobs:
            try:
                status = json.loads((j / vocab.SUMMARY).read_text()).get("status", "failed")
            except (OSError, ValueError, AttributeError):
                status = "not run" if not j.exists() else "unfinished"
            counts[status] = counts.get(status, 0) + 1
    return counts


def main(argv: list) -> int:
    """`quadrun reproduce=...`: the exit status (0 done, 1 a job failed, 2 bad input,
    3 interrupted)."""
    from quadrun import registry
    from quadrun.schema import register

    try:
        req = parse(argv)
        experiments = registry.load_all()
        register(experiments)
        plan = load_plan(req.plan)
        record = _read_record(req.folder)
        if record and (record.get("plan"), record.get("scale")) != (req.plan, req.scale):
            raise ConfigError(f"hydra.run.dir: {req.folder} holds reproduce={record.get('plan')} "
                              f"scale={record.get('scale')}; give another folder")
        if req.folder.exists() and not record and any(req.folder.iterdir()):
            raise ConfigError(f"hydra.run.dir: {req.folder} exists and is not a reproduction "
                              f"folder (no {RECORD}); give a new or empty folder")
        prepared = prepare(req, plan, experiments)
    except ConfigError as exc:
        print(f"quadrun: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    estimate = print_plan(req, plan, prepared)
    if req.plan_only:
        return 0
    from quadrun import provenance
    from quadrun.html import fmt_seconds

    req.folder.mkdir(parents=True, exist_ok=True)
    launch = {"start": time.time(), "load_start": list(os.getloadavg()),
              "estimate": estimate, "environment": provenance.environment(), "steps": {}}
    record = {"plan": req.plan, "scale": req.scale, "extra": req.extra,
              "command": _this_command(req), "title": plan.title,
              "launches": list(record.get("launches") or []) + [launch]}
    _write_record(req.folder, record)
    stop = _Stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    try:
        for i, p in enumerate(prepared, 1):
            if stop.signal is not None:
                break
            if not p.remaining:
                print(f"  [{i}] {p.step.name}: all {p.count} jobs finished before; not launched",
                      flush=True)
                continue
            print(f"  [{i}] {p.step.name}: {p.remaining} job{'s' if p.remaining != 1 else ''} to "
                  f"run (log: {req.folder / (p.step.name + '.log')})", flush=True)
            result = run_step(p, req.folder / f"{p.step.name}.log", stop)
            launch["steps"][p.step.name] = {**result, "experiment": p.step.experiment,
                                            "paper": p.step.paper}
            _write_record(req.folder, record)
            est = "" if p.estimate is None else f" (estimated {fmt_seconds(p.estimate)})"
            print(f"  [{i}] {p.step.name}: {result['summary'] or 'exit ' + str(result['rc'])}; "
                  f"took {fmt_seconds(result['seconds'])}{est}", flush=True)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        launch["end"] = time.time()
        launch["seconds"] = launch["end"] - launch["start"]
        launch["load_end"] = list(os.getloadavg())
        launch["interrupted"] = stop.signal is not None
        _write_record(req.folder, record)
    took = launch["seconds"]
    if stop.signal is not None:
        print(f"quadrun: interrupted after {fmt_seconds(took)}; finished jobs are kept. "
              f"Continue with: {_this_command(req)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    est = "" if estimate is None else f" (estimated {fmt_seconds(estimate)} at the start)"
    print(f"quadrun: reproduce={req.plan} scale={req.scale}: steps took {fmt_seconds(took)}{est}",
          flush=True)
    result = write_report(req.folder, quiet=False)
    counts = _statuses(prepared)
    failed = sum(n for s, n in counts.items() if s not in ("completed", "diverged"))
    print("quadrun: jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
          flush=True)
    print(f"quadrun: report: {result['index']} (and report.md, claims.json beside it)", flush=True)
    return EXIT_FAILED if failed else 0


# -- the report ------------------------------------------------------------------------------------
def _missing_claims(plan: Plan, scale: str, studies: list, folder: Path) -> list:
    """Rows for the declared claims of experiments in the plan that have no finished run
    here (every step failed or has not run): not_measured, with the step's command."""
    from quadrun.report import experiment_module

    have = {s.experiment for s in studies if s.claims}
    rows = []
    for step in plan.at(scale):
        if step.experiment in have:
            continue
        have.add(step.experiment)
        module = experiment_module(step.experiment)
        if module is None or not hasattr(module, "claims"):
            continue
        try:
            from omegaconf import OmegaConf

            cfg = OmegaConf.to_object(OmegaConf.structured(module.Config))
            declared = list(module.claims([], cfg))
        except Exception:  # an experiment that cannot list its claims without records
            declared = []
        command = "quadrun " + " ".join(shlex.quote(a) for a in step.argv(scale)) + \
            f" 'hydra.sweep.dir={folder / step.name}'"
        for c in declared:
            rows.append({"id": c.get("id", ""), "group": "", "statement": c.get("statement", ""),
                         "source": c.get("source", ""), "measured": "not measured",
                         "target": c.get("target", ""), "setup": c.get("setup", ""),
                         "experiment": step.experiment, "verdict": "not_measured",
                         "extension": bool(c.get("extension")), "scale": scale,
                         "paper": plan.papers.get(step.paper, step.paper), "values": {},
                         "why": f"no finished run of step {step.name} (see "
                                f"{folder / (step.name + '.log')})",
                         "command": command})
    return rows


def write_report(folder: Path, quiet: bool = True) -> dict:
    """The reproduction's report/: index.html, report.md, claims.json (and the tables,
    results.csv and figures of quadrun-report), from the step folders."""
    from quadrun import html, provenance
    from quadrun import report as rep

    folder = Path(folder)
    record = _read_record(folder)
    if not record:
        raise ConfigError(f"{folder} is not a reproduction folder (no {RECORD})")
    plan = load_plan(record["plan"])
    scale = record["scale"]
    steps = plan.at(scale)
    paths = [folder / s.name for s in steps if (folder / s.name).is_dir()]
    titles = paper_titles()
    paper_of_exp = {s.experiment: plan.papers.get(s.paper, s.paper) for s in steps}
    order = list(dict.fromkeys(s.experiment for s in steps))
    launches = record.get("launches") or []
    last_env = next((l.get("environment") for l in reversed(launches) if l.get("environment")), {})
    wall: dict = {}
    for l in launches:
        for st in (l.get("steps") or {}).values():
            wall[st.get("experiment")] = wall.get(st.get("experiment"), 0.0) + float(st.get("seconds") or 0)
    step_rows = []
    for s in steps:
        runs_of = [l["steps"][s.name] for l in launches if s.name in (l.get("steps") or {})]
        last = runs_of[-1] if runs_of else {}
        step_rows.append({
            "name": s.name, "paper": plan.papers.get(s.paper, s.paper),
            "command": "quadrun " + " ".join(shlex.quote(a) for a in s.argv(scale, record.get("extra") or [])),
            "jobs": last.get("jobs", "-"), "finished": last.get("done_after", "-"),
            "estimate": runs_of[0].get("estimate") if runs_of else None,
            "rate_source": runs_of[0].get("rate_source", "") if runs_of else "",
            "seconds": sum(float(r.get("seconds") or 0) for r in runs_of) if runs_of else None,
            "outcome": last.get("summary") or ("not launched" if not runs_of else f"exit {last.get('rc')}"),
        })

    def launch_text(l) -> str:
        code = (l.get("environment") or {}).get("code") or {}
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(l.get("start", 0)))
        dirty = {True: "dirty", False: "clean", None: "dirty: unknown"}[code.get("dirty")]
        load = l.get("load_start")
        load = f", load {load[0]:.1f}" if load else ""
        took = html.fmt_seconds(l.get("seconds")) if l.get("seconds") is not None else "unfinished"
        return f"{when}: commit {str(code.get('commit') or 'unknown')[:12]} ({dirty}){load}, took {took}"

    extra = {"kind": "reproduction", "order": order, "titles": titles,
             "title": f"Reproduction: {plan.title} (scale={scale})",
             "subtitle": str(folder), "paper_of": paper_of_exp, "steps": step_rows}

    def page(result: dict) -> dict:
        """The page's claims (with those of experiments that have no finished run) and
        provenance (this reproduction's launches beside what its runs recorded)."""
        claims = html.claim_rows(result["studies"], paper_of=paper_of_exp)
        claims += _missing_claims(plan, scale, result["studies"], folder)
        prov = provenance.from_runs(result["runs"])
        if last_env.get("packages"):
            prov["packages"] = last_env["packages"]
            prov["packages_source"] = "recorded by this reproduction at its last launch"
        prov["version"] = (last_env.get("code") or {}).get("version", "")
        prov["launches"] = [launch_text(l) for l in launches]
        prov["wall"] = wall
        return {**extra, "claims": claims, "provenance": prov}

    result = rep.build(paths or [folder], out=folder / vocab.REPORT, quiet=True, page=page)
    context = html.page(result, **page(result))
    html.write_markdown(context, folder / vocab.REPORT / "report.md")
    html.write_text(folder / vocab.REPORT / "claims.json",
                    json.dumps({"plan": record["plan"], "scale": scale,
                                "coverage": context["coverage"], "claims": context["claims"]},
                               indent=2, default=str) + "\n")
    result["context"] = context
    if not quiet:
        print_verdicts(context)
    return result


def print_verdicts(context: dict) -> None:
    """One line per claim: verdict, experiment and id (group), what was measured; then the
    coverage line."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table as RichTable

    from quadrun.report import VERDICT_STYLE

    console = Console()
    rt = RichTable(title=escape(context["title"]), show_lines=False, expand=True)
    rt.add_column("verdict", no_wrap=True)
    rt.add_column("claim", overflow="fold", min_width=24, ratio=1)
    rt.add_column("measured", overflow="ellipsis", no_wrap=True, ratio=2)
    for c in context["claims"]:
        label = f"{c['experiment']} {c['id']}" + (f" ({c['group']})" if c.get("group") else "")
        style = VERDICT_STYLE.get(c["verdict"])
        rt.add_row(f"[{style}]{escape(c['verdict'])}[/]" if style else escape(c["verdict"]),
                   escape(label), escape(str(c.get("measured", ""))))
    console.print(rt)
    if context.get("banner"):
        console.print(context["banner"], style="yellow", highlight=False)
    console.print(context["coverage"]["text"], highlight=False)


# -- reference rates -------------------------------------------------------------------------------
def measured_rates(folders: list) -> dict:
    """Seconds per job (mean over the finished jobs of each step) and the seconds a step
    takes to start (median over steps of its wall time less its jobs' seconds), from
    finished reproductions; in the form of configs/reproduce/rates.json."""
    from quadrun import provenance

    rates: dict = {}
    startups, record = [], {}
    for folder in folders:
        folder = Path(folder)
        record = _read_record(folder)
        if not record:
            raise ConfigError(f"rates: {folder} is not a reproduction folder (no {RECORD})")
        plan, scale = load_plan(record["plan"]), record["scale"]
        for step in plan.at(scale):
            jobs = [p for p in (folder / step.name).glob("*") if (p / vocab.META).exists()]
            seconds = [s for s in (provenance.run_seconds(j) for j in jobs if _job_done(j, 0))
                       if s is not None]
            if not seconds:
                continue
            load = _step_load(jobs[0])
            rates.setdefault(step.experiment, {}).setdefault(scale, {})[step.sweep or "run"] = {
                "seconds_per_job": round(statistics.fmean(seconds), 2),
                "load": None if load is None else round(load, 1), "jobs": len(seconds)}
            for launch in record.get("launches") or []:
                ran = (launch.get("steps") or {}).get(step.name)
                if ran and not ran.get("done_before") and ran.get("done_after") == len(seconds):
                    startups.append(max(0.0, float(ran["seconds"]) - sum(seconds)))
    env = ((record.get("launches") or [{}])[-1].get("environment") or {}) if record else {}
    return {
        "about": "seconds per job of each experiment, scale and sweep ('run': no sweep), "
                 "measured by finished reproductions, with the mean 1-min load average while "
                 "the step ran (null: not sampled); `quadrun reproduce=...` estimates from "
                 "them, scaled to the load at its start, when no run of this machine is "
                 "known. Rewrite with: python -m quadrun.reproduce rates <reproduction "
                 "folder>... --write",
        "measured": {"date": time.strftime("%Y-%m-%d"), "host": env.get("host"),
                     "cores": os.cpu_count(),
                     "commit": str((env.get("code") or {}).get("commit") or "")[:12] or None,
                     "reproductions": [Path(f).name for f in folders]},
        "startup_s": round(statistics.median(startups), 1) if startups else 0.0,
        "rates": rates,
    }


def _rates_main(argv: list) -> int:
    import argparse

    from quadrun import estimate

    parser = argparse.ArgumentParser(
        prog="python -m quadrun.reproduce rates",
        description="Reference seconds per job from finished reproductions (stdout; --write "
                    f"merges them into configs/reproduce/{estimate.RATES}).")
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    try:
        new = measured_rates(args.folders)
    except ConfigError as exc:
        print(f"quadrun: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.write:
        old = estimate.reference_rates()
        merged = dict(old.get("rates") or {})
        for exp, scales in new["rates"].items():
            for scale, table in scales.items():
                merged.setdefault(exp, {}).setdefault(scale, {}).update(table)
        new["rates"] = merged
        from quadrun.html import write_text

        write_text(plans_dir() / estimate.RATES, json.dumps(new, indent=2, sort_keys=False) + "\n")
        print(f"written: {plans_dir() / estimate.RATES}")
    else:
        print(json.dumps(new, indent=2))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["rates"]:
        sys.exit(_rates_main(sys.argv[2:]))
    print("usage: python -m quadrun.reproduce rates <reproduction folder>... [--write]",
          file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
