"""`quadrun`: a thin Hydra wrapper around quadrun.runner.run.

Before Hydra starts, the overrides are composed and validated once (every value of a sweep
too), so bad input gives one line naming the key and what is allowed, exit status 2, and
no run folder. `resume=<folder>` becomes that run's own overrides plus hydra.run.dir.
"""
from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path

from quadrun import registry
from quadrun.errors import ConfigError
from quadrun.schema import DEFAULT_EXPERIMENT, SCALES, config_dir, register

EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 3


def _error(message: str, code: int = EXIT_BAD_INPUT) -> None:
    print(f"quadrun: error: {message}", file=sys.stderr)
    sys.exit(code)


def _one_line(exc: BaseException, experiment: str | None = None, overrides: tuple = ()) -> str:
    """Hydra's and OmegaConf's multi-line errors as `key: reason`."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, ConfigError):
        return str(exc)
    cause = exc
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, MissingConfigException) or "Could not find" in str(exc):
        text = str(exc)
        found = re.search(r"Could not find '([^']+)'", text)
        if found:
            missing = found.group(1)
            group, _, option = missing.rpartition("/")
            extra = {"optuna": "optuna", "submitit_local": "slurm", "submitit_slurm": "slurm"}
            if group.startswith("hydra/") and option in extra:
                return (f"{group}: {option!r} needs its Hydra plugin; "
                        f"pip install 'quadrun[{extra[option]}]'")
            if group.startswith("hydra/"):
                return f"{group}: unknown {option!r}; it is not an installed Hydra plugin"
            options = set(p.stem for p in Path(config_dir(), group).glob("*.yaml"))
            if group == "experiment":
                options |= set(registry.names())
            elif group == "scale":
                options |= set(SCALES)
            if options or group:
                return (f"{group}: unknown {option!r}; must be one of: "
                        + (", ".join(sorted(options)) or "(none)"))
        return text.splitlines()[0]
    if cause is not None:
        key = getattr(cause, "full_key", None) or ""
        reason = str(getattr(cause, "msg", "") or cause).strip().splitlines()[0]
        if key and ("not in" in reason or "not in struct" in reason):
            from quadrun.schema import unknown_key

            typed = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
            key = next((t for t in typed if t.startswith(key + ".")), key)  # what was typed

            return unknown_key(key, registry.load_all(), experiment)
        return f"{key}: {reason}" if key else reason
    lines = [l for l in str(exc).strip().splitlines() if l.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__


FLAGS = ("-m", "--multirun", "-h", "--help", "--hydra-help", "--version", "--resolve",
         "--experimental-rerun", "-i", "--info", "-sc", "--shell-completion")
VALUE_FLAGS = ("-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn", "--config-name",
               "-cd", "--config-dir")
INFO_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion",
              "-sc", "--version")


def _check_flags(argv: list) -> None:
    """Only Hydra's own flags, written in full (argparse would take `--experiment=x` as an
    abbreviation of --experimental-rerun, which quadrun does not support: it unpickles a
    file; `quadrun resume=<folder>` continues a run)."""
    for a in argv:
        if a.split("=", 1)[0] == "--experimental-rerun":
            raise ConfigError("arguments: --experimental-rerun is not supported; continue a run "
                              "with quadrun resume=<run folder>")
        if a.startswith("-") and a.split("=", 1)[0] not in FLAGS + VALUE_FLAGS:
            guess = a.lstrip("-")
            raise ConfigError(f"arguments: {a!r} is not an option; overrides are written without "
                              f"dashes, e.g. {guess if '=' in guess else 'experiment=relinear'} "
                              "(-m for a sweep; quadrun --help lists the options)")


def _parse_error(override: str, exc: BaseException) -> ConfigError:
    """One line for an override Hydra's grammar rejects, and the right form."""
    key = override.split("=", 1)[0].lstrip("+~") or "overrides"
    text = str(exc)
    if "=" not in override:
        why = "it has no '='"
    elif "LexerNoViableAlt" in text or "token recognition" in text:
        why = "it has a character that needs quotes"
    elif override.rstrip().endswith(","):
        why = "it ends with a comma"
    elif override.count("[") != override.count("]") or override.count("{") != override.count("}"):
        why = "a bracket is not closed"
    else:
        why = "it is not valid override syntax"
    return ConfigError(f"{key}: cannot parse {override!r}: {why}; write key=value, quote a value "
                       "with spaces or special characters (key='a b'), key=[a,b] for a list, "
                       "-m key=a,b for a sweep")


def _split(argv: list) -> tuple[list, bool]:
    """(overrides, is_multirun); Hydra flags other than -m are left to Hydra."""
    overrides, multirun = [], False
    for arg in argv:
        if arg in ("-m", "--multirun"):
            multirun = True
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, multirun


def _latest_run(experiment: str) -> Path:
    """The newest run folder of `experiment` under ./outputs (single runs, not sweeps)."""
    import json

    root = Path("outputs") / experiment
    runs = [p for p in root.glob("*") if p.is_dir() and (p / ".hydra" / "overrides.yaml").exists()]
    if not runs:
        raise ConfigError(f"resume: 'latest' found no run of experiment {experiment!r} under "
                          f"{root}; give a run folder (resume=outputs/{experiment}/<folder>)")

    def started(p: Path):
        try:
            return (json.loads((p / "meta.json").read_text()).get("start") or "", p.name)
        except (OSError, ValueError):
            return ("", p.name)
    return max(runs, key=started)


def _resume_overrides(folder: str) -> list:
    path = Path(folder).expanduser()
    saved = path / ".hydra" / "overrides.yaml"
    if not saved.exists():
        raise ConfigError(f"resume: {folder!r} is not a run folder (no .hydra/overrides.yaml)")
    from quadrun.errors import CheckpointError
    from quadrun.runfolder import read_overrides

    try:
        previous = read_overrides(saved)
    except CheckpointError as exc:
        raise ConfigError(f"resume: {exc}") from None
    quoted = str(path.resolve()).replace("\\", "\\\\").replace("'", "\\'")
    return [o for o in previous if not o.startswith("resume=")] + [f"hydra.run.dir='{quoted}'"]


class Finished(Exception):
    """Nothing to do: the message says why (exit 0)."""


def _check_existing(folder: Path, cfg, what: str, lock: bool = True) -> None:
    """Before Hydra writes into an existing run folder (resume=, or hydra.run.dir= naming
    it): its bookkeeping files are readable, the config is the run's own, a finished run is
    left as it is, and no other process works in it (the lock is held from here on). A
    refused resume changes no file."""
    from omegaconf import OmegaConf

    from quadrun import identity, locks, vocab
    from quadrun.errors import CheckpointError
    from quadrun.runfolder import read_json_dict

    try:
        done = read_json_dict(folder / vocab.SUMMARY).get("status")
        read_json_dict(folder / vocab.META)
        stages = read_json_dict(folder / vocab.STAGES)
    except CheckpointError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    mine = identity.config_fingerprint(cfg)
    theirs = stages.get("fingerprint")
    if (folder / vocab.CONFIG).exists():
        try:
            theirs = identity.config_fingerprint(OmegaConf.load(folder / vocab.CONFIG))
        except Exception:  # noqa: BLE001 - a config.yaml of another version
            theirs = theirs or "unreadable"
    if theirs is not None and theirs != mine:
        raise ConfigError(f"{what}: these overrides change the config of the run in {folder} "
                          f"(fingerprint {mine}, the run's is {theirs}); resume with the run's "
                          "own overrides, or start a new run (nothing in the folder was changed)")
    if done in ("completed", "diverged"):
        raise Finished(f"{folder} is {done}: nothing to resume (report: "
                       f"{folder / vocab.REPORT / 'table.md'})")
    if lock:
        locks.hold(folder, what)


def _check_hydra(cfg_hydra, multirun: bool) -> None:
    """Hydra settings quadrun relies on: a run folder, and .hydra/ in it (resume reads it)."""
    from omegaconf import OmegaConf

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    folder = OmegaConf.select(cfg_hydra, key[len("hydra."):], throw_on_resolution_failure=False)
    if folder is None or not str(folder).strip():
        raise ConfigError(f"{key}: empty; give a folder (the default is outputs/<experiment>/"
                          "<date>_<time>_<id>)")
    if OmegaConf.select(cfg_hydra, "output_subdir") in (None, ""):
        raise ConfigError("hydra.output_subdir: quadrun keeps each run's overrides in .hydra/ "
                          "(resume reads them); leave it at its default")


def _strict_bools(variant: list, cfg) -> None:
    """A bool key takes true or false, nothing else (OmegaConf would read 2 or yes as true),
    and so does each item of a list of bools."""
    from omegaconf import ListConfig, OmegaConf

    for o in _parse(variant):
        if o.is_sweep_override() or o.is_delete():
            continue
        key = o.get_key_element().lstrip("+~")
        try:
            node = OmegaConf.select(cfg, key, throw_on_missing=False, default=None)
        except Exception:  # noqa: BLE001 - not a key of the config (Hydra's own, say)
            continue
        raw = o.value()
        if isinstance(node, bool):
            pairs = [(raw, node)]
        elif isinstance(node, ListConfig) and len(node) and all(isinstance(v, bool) for v in node) \
                and isinstance(raw, list):
            pairs = list(zip(raw, node))
        else:
            continue
        for given, _ in pairs:
            if not isinstance(given, bool):
                raise ConfigError(f"{key}: {given!r} is not allowed; must be true or false")


def _fixed_folder(output) -> "Path | None":
    """The run or sweep folder when the config names it outright (no ${...} in it)."""
    if isinstance(output, str) and output.strip() and "${" not in output:
        return Path(output).expanduser()
    return None


def _parse(overrides: list) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = []
    for o in overrides:
        try:
            parsed += parser.parse_overrides([o])
        except Exception as exc:  # Hydra's grammar errors name token types: say it plainly
            raise _parse_error(o, exc) from None
    return parsed


def _values(o) -> tuple:
    """(the distinct values of a sweep override worth validating, how many jobs it makes),
    without listing a range: its first and last value stand for it (ranges are of numbers,
    whose checks are bounds)."""
    from hydra.core.override_parser.types import RangeSweep

    value = o.value()
    if o.is_sweep_override() and not o.is_discrete_sweep():   # interval(a, b) of a search
        return [str(value.start), str(value.end)], 1
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step or 1
        count = max(0, math.ceil((stop - start) / step))
        if count == 0:
            raise ConfigError(f"{o.get_key_element()}: the range {o.input_line.split('=', 1)[1]} "
                              "is empty")
        last = start + (count - 1) * step
        shown = [start, last] if count > 1 else [start]
        return [str(int(v)) if float(v).is_integer() and isinstance(start, int) else str(v)
                for v in shown], count
    values = list(o.sweep_string_iterator())
    return values, len(values)


def _variants(overrides: list) -> tuple:
    """(one override list per distinct value of each sweep dimension, the others at their
    first value; the number of jobs the sweep makes). Nothing is listed in full: a range
    of 10^8 seeds costs two variants."""
    firsts, sweeps, jobs = [], [], 1
    for o in _parse(overrides):
        if o.is_sweep_override():
            values, count = _values(o)
            jobs *= count
            firsts.append(f"{o.get_key_element()}={values[0]}")
            sweeps.append((len(firsts) - 1, o.get_key_element(), values))
        else:
            firsts.append(o.input_line)
    variants = [firsts]
    for i, key, values in sweeps:
        for v in values[1:]:
            variants.append(firsts[:i] + [f"{key}={v}"] + firsts[i + 1:])
    return variants, jobs


def _sweeper_params(overrides: list) -> list:
    """The sweep of a named sweep (`sweep=...` sets hydra.sweeper.params and maybe
    hydra.sweeper.grids) as lists of overrides for the keys the command line does not sweep
    itself: the params' first, then one per grid the sweep adds (quadrun.sweeps.grid_jobs)."""
    from omegaconf import OmegaConf

    try:
        cfg = _compose(_variants(overrides)[0][0])
    except Exception:  # noqa: BLE001 - the variants' own validation says what is wrong
        return [[]]
    from quadrun.sweeps import kept_grids

    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    grids = OmegaConf.select(cfg, "hydra.sweeper.grids") or []
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    return [[f"{k}={v}" for k, v in {**params, **grid}.items() if k not in given]
            for grid in [{}] + kept_grids(grids, overrides)]


def _compose(overrides: list):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose("config", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _culprit(overrides: list) -> str | None:
    """The first override without which the config composes."""
    for i, o in enumerate(overrides):
        try:
            _compose(overrides[:i] + overrides[i + 1:])
            return o
        except Exception:
            continue
    return None


def preflight(argv: list, experiments: dict, lock: bool = True) -> list:
    """Validate the command line; return the argv that Hydra should see. With lock, the
    fixed run or sweep folder it names is locked for this process (a plan that only checks
    the command, like reproduce's, passes lock=False and leaves that to the command)."""
    from omegaconf import OmegaConf

    _check_flags(argv)
    if any(a.split("=", 1)[0] in INFO_FLAGS for a in argv):
        if any(a.split("=", 1)[0] in ("--cfg", "-c") for a in argv):
            _validate_info(argv, experiments)   # --cfg job checks what a run would
        return argv
    overrides, multirun = _split(argv)
    resume = [o for o in overrides if o.startswith("resume=")]
    if resume:
        folder = resume[-1].split("=", 1)[1].strip("'\"")
        from quadrun.sweeps import is_sweep, resume_argv

        if is_sweep(Path(folder).expanduser()):
            # extra overrides replace the sweep's own for the same keys: 'seed=range(0,15)'
            # extends a sweep over seeds 0-4 (its finished jobs are not run again)
            extra = [o for o in overrides if not o.startswith("resume=")]
            given = {o.lstrip("+~").split("=", 1)[0] for o in extra}
            saved = [a for a in resume_argv(Path(folder).expanduser())
                     if a.startswith("-") or a.lstrip("+~").split("=", 1)[0] not in given]
            argv = saved + extra
            print(f"quadrun: continuing the sweep in {folder}", file=sys.stderr)
            return preflight(argv, experiments)
        if multirun:
            raise ConfigError("resume: cannot be combined with -m (give a run or a sweep folder)")
        extra = [o for o in overrides if not o.startswith("resume=")]
        if folder == "latest":
            chosen = [o.split("=", 1)[1] for o in extra if o.startswith("experiment=")]
            folder = str(_latest_run(chosen[-1] if chosen else DEFAULT_EXPERIMENT))
            extra = [o for o in extra if not o.startswith("experiment=")]
            print(f"quadrun: resuming {folder}", file=sys.stderr)
        overrides = _resume_overrides(folder) + extra
        argv = [a for a in argv if a.startswith("-")] + overrides
    try:
        variants, jobs = _variants(overrides)
        if multirun:   # a job in two grids is counted twice: max_jobs errs on the safe side
            variants, jobs = [], 0
            for grid in _sweeper_params(overrides):
                more, count = _variants(grid + overrides)
                variants, jobs = variants + [v for v in more if v not in variants], jobs + count
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"overrides: {_one_line(exc)}") from None
    if not multirun:
        _no_sweeps(overrides)
    _other_experiments_keys(overrides, experiments)
    output, cfg, cfg_hydra = _validate_variants(variants, multirun, experiments)
    _check_hydra(cfg_hydra, multirun)
    if multirun and jobs > cfg.sweep.max_jobs:
        raise ConfigError(f"sweep: {jobs} jobs, more than sweep.max_jobs={cfg.sweep.max_jobs}; "
                          "sweep fewer values, or raise sweep.max_jobs")
    if multirun and "optuna" in str(OmegaConf.select(cfg_hydra, "sweeper._target_") or "") \
            and not cfg.sweep.objective:
        raise ConfigError("sweep.objective: a search sweeper needs the summary value to "
                          "optimise, e.g. sweep.objective=test/acc")
    _check_writable(output)
    fixed = _fixed_folder(output)
    if fixed is not None and multirun and lock:
        from quadrun import locks

        locks.hold(fixed, "sweep")          # one launch at a time in a sweep folder
    elif fixed is not None and fixed.exists():
        _check_existing(fixed, cfg, "resume" if resume else "hydra.run.dir", lock)
    return argv


def _other_experiments_keys(overrides: list, experiments: dict) -> None:
    """A key of another experiment's section: one line naming that experiment."""
    chosen = [o.split("=", 1)[1].strip("'\"") for o in overrides if o.startswith("experiment=")]
    experiment = chosen[-1] if chosen else DEFAULT_EXPERIMENT
    if "," in experiment:            # a sweep over experiments: each job has its own section
        return
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        head = key.split(".")[0]
        if head in experiments and head != experiment:
            raise ConfigError(f"{key}: a key of experiment {head}, and this run is experiment="
                              f"{experiment}; add experiment={head} to run {head}, or drop it")


def _validate_info(argv: list, experiments: dict) -> None:
    """`--cfg job` and friends: the overrides (flag values left out) validated as a run's."""
    overrides, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in VALUE_FLAGS:
            skip = True
        elif not a.startswith("-"):
            overrides.append(a)
    multirun = any(a in ("-m", "--multirun") for a in argv)
    try:
        variants, _ = _variants(overrides)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"overrides: {_one_line(exc)}") from None
    _validate_variants(variants, multirun, experiments, report_unread=False)


def _validate_variants(variants: list, multirun: bool, experiments: dict,
                       report_unread: bool = True) -> tuple:
    """Compose and validate every variant; print one line per override that the chosen
    variant of the experiment does not read (once each). Returns (the run or sweep folder
    pattern, the last config, its hydra node)."""
    from omegaconf import OmegaConf, open_dict

    from quadrun.schema import is_unread, unread_keys, validate

    said = set()
    for variant in variants:
        try:
            cfg = _compose(variant)
        except Exception as exc:
            chosen = [o.split("=", 1)[1] for o in variant if o.startswith("experiment=")]
            message = _one_line(exc, chosen[-1] if chosen else DEFAULT_EXPERIMENT, variant)
            if not re.match(r"^[^\s:]+: ", message):  # name the override that breaks it
                culprit = _culprit(variant)
                if culprit:
                    message = f"{culprit.split('=', 1)[0].lstrip('+~')}: {message} (in {culprit!r})"
            raise ConfigError(message) from None
        output = OmegaConf.to_container(cfg.hydra.sweep if multirun else cfg.hydra.run,
                                        resolve=False)["dir"]
        cfg_hydra = cfg.hydra
        with open_dict(cfg):
            cfg.pop("hydra", None)
        validate(cfg, experiments)
        _strict_bools(variant, cfg)
        name = cfg.experiment
        unread = unread_keys(experiments[name], cfg.get(name))
        for o in variant:
            key = o.lstrip("+~").split("=", 1)[0]
            if report_unread and key not in said and is_unread(key, name, unread):
                said.add(key)
                rel = key[len(name) + 1:]
                why = next(v for k, v in unread.items() if rel == k or rel.startswith(k + "."))
                print(f"quadrun: {key}: unused, {why}; it does not change the result",
                      file=sys.stderr)
    return output, cfg, cfg_hydra


def _no_sweeps(overrides: list) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override():
            key = o.get_key_element()
            value = o.input_line.split("=", 1)[1]
            raise ConfigError(f"{key}: {value!r} is a sweep; add -m to run one job per value "
                              f"(quadrun -m {o.input_line}), or write {key}=[{value}] for a list")


def _check_writable(output) -> None:
    """The run folder's fixed part (before any ${...}) must be creatable: one line, not two
    tracebacks from inside Hydra. Creating it is harmless: Hydra would create it next."""
    if not isinstance(output, str):
        return
    fixed = output.split("${", 1)[0]
    folder = Path(fixed if fixed.endswith("/") or fixed == output else Path(fixed).parent)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".quadrun-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"hydra.run.dir: cannot write the run folder {str(folder)!r} "
                          f"({exc.strerror or exc}); give a writable hydra.run.dir, or run from "
                          "a writable directory") from None


def _help(argv: list) -> None:
    """`quadrun --help`: the groups and the composed config (the given overrides applied).
    Printed here rather than by Hydra, whose help composes the config once per group."""
    from omegaconf import OmegaConf, open_dict

    overrides = [a for a in argv if not a.startswith("-")]
    names = [a for a in overrides if a in registry.names()]
    if names:                                   # quadrun --help relinear
        _print(_keys_help(names[-1], [a for a in overrides if "=" in a]))
        return
    try:
        cfg = _compose(overrides)
    except Exception as exc:
        raise ConfigError(_one_line(exc)) from None
    groups = {"experiment": sorted(registry.names()), "scale": list(sorted(SCALES))}
    for group in ("sweep", "cluster", "reproduce"):
        groups[group] = sorted(p.stem for p in Path(config_dir(), group).glob("*.yaml"))
    header = cfg.hydra.help.header.rstrip()
    footer = cfg.hydra.help.footer.rstrip()
    with open_dict(cfg):
        cfg.pop("hydra")
    lines = [header, "", "Experiments, scales, named sweeps and cluster presets (config groups):"]
    lines += [f"{g}: {', '.join(opts)}" for g, opts in groups.items()]
    shown = " ".join(overrides) or f"experiment={cfg.experiment}, scale={cfg.scale}"
    lines += ["", f"The config ({shown}); every key can be overridden as key=value:", "",
              OmegaConf.to_yaml(cfg).rstrip(), "",
              "Every key of one experiment, with its type, range and help: quadrun --help NAME",
              footer]
    _print("\n".join(lines))


def _print(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `quadrun --help | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _keys_help(name: str, overrides: list) -> str:
    """`quadrun --help NAME [scale=...]`: every key of the experiment's section with its
    value at that scale, type, allowed values and help, from the schema."""
    import dataclasses
    import typing

    from omegaconf import OmegaConf

    try:
        cfg = _compose([f"experiment={name}", *overrides])
    except Exception as exc:
        raise ConfigError(_one_line(exc)) from None
    module = registry.load_all()[name]
    rows = []

    def type_name(tp) -> str:
        text = getattr(tp, "__name__", None) if typing.get_origin(tp) is None else None
        return text or str(tp).replace("typing.", "")

    def walk(cls, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp, key = hints[f.name], f"{prefix}{f.name}"
            sub = next((a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)),
                       None)
            if sub is not None:
                walk(sub, key + ".")
                continue
            meta = f.metadata
            allowed = []
            if meta.get("choices"):
                allowed.append("one of " + ", ".join(map(str, meta["choices"])))
            for k, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                if k in meta:
                    allowed.append(f"{sym} {meta[k]}")
            if meta.get("nonempty"):
                allowed.append("not empty")
            value = OmegaConf.select(cfg, key)
            shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            rows.append((key, str(shown), type_name(tp), ", ".join(allowed), meta.get("help", "")))

    walk(module.Config, f"{name}.")
    scale = cfg.get("scale")
    doc = (module.__doc__ or "").strip().splitlines()
    out = [f"{name}: {doc[0] if doc else ''}".rstrip(), f"keys at scale={scale} "
           "(quadrun experiment=NAME KEY=VALUE ...):", ""]
    width = max(len(r[0]) for r in rows)
    for key, value, tp, allowed, text in rows:
        out.append(f"  {key.ljust(width)}  {value}   ({tp}{'; ' + allowed if allowed else ''})")
        if text:
            out.append(f"  {' ' * width}    {text}")
    unread = getattr(module, "VARIANTS", ())
    if unread:
        out += ["", "Keys read only by some variants:"]
        for table in unread:
            for variant, keys in table.reads.items():
                if keys:
                    out.append(f"  {table.label()}={variant}: " + ", ".join(f"{name}.{k}" for k in keys))
    return "\n".join(out)


_STARTED: list = []       # the run folder Hydra made for this process, once it made it


def _stop_before_start(signum, _frame) -> None:
    """SIGTERM before the run installs its own handler: the same clean exit as Ctrl-C."""
    raise KeyboardInterrupt


def _forget_empty_folder() -> None:
    """A run stopped before it started leaves no folder behind: remove the one Hydra made
    for it if nothing but Hydra's own files is in it."""
    import shutil

    for folder in _STARTED:
        left = [p for p in folder.rglob("*") if p.is_file()
                and ".hydra" not in p.relative_to(folder).parts
                and p.name not in ("quadrun.log", ".quadrun.lock")]
        if folder.is_dir() and not left:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: list | None = None) -> None:
    import signal

    argv = list(sys.argv[1:] if argv is None else argv)
    from quadrun import reproduce

    if reproduce.wants(argv):  # reproduce=<paper>: its steps are sweeps run by this CLI
        try:
            sys.exit(reproduce.main(argv))
        except KeyboardInterrupt:
            _error("interrupted before the reproduction started", EXIT_INTERRUPTED)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _stop_before_start)
    try:
        experiments = registry.load_all()
        register(experiments)
        if "--help" in argv or "-h" in argv:
            _check_flags(argv)
            _help(argv)
            return
        argv = preflight(argv, experiments)
    except Finished as done:
        print(f"quadrun: {done}", file=sys.stderr)
        return
    except ConfigError as exc:
        _error(str(exc))
    except KeyboardInterrupt:
        _error("interrupted before the run started; nothing to resume", EXIT_INTERRUPTED)
    sys.argv = [sys.argv[0]] + argv
    try:
        _hydra_entry()
    except ValueError as exc:  # Hydra's own argument checks (e.g. -m with --cfg)
        _error(f"arguments: {str(exc).splitlines()[0]}")
    except KeyboardInterrupt:  # Ctrl-C before the run's own handler was installed
        _forget_empty_folder()
        _error("interrupted before the run started; nothing to resume", EXIT_INTERRUPTED)


def _task(cfg):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        folder = Path(hc.runtime.output_dir)
        if not (folder / "meta.json").exists():   # made for this run, not a resumed one
            _STARTED.append(folder)
        return _run_one(cfg, sweep=False)
    from omegaconf import open_dict

    from quadrun import sweeps

    job_dir, sweep_dir = Path(hc.runtime.output_dir), Path(str(hc.sweep.dir))
    sweeps.die_with_parent()
    summary = sweeps.before_job(cfg, job_dir, sweep_dir)
    if summary is None:
        in_sweep_process = "SUBMITIT_EXECUTOR" not in os.environ
        with sweeps.device_slot(cfg, sweep_dir), \
                (sweeps.quiet_console() if in_sweep_process else _nothing()):
            threads = sweeps.slot_threads(cfg)
            if threads and not cfg.threads:
                with open_dict(cfg):
                    cfg.threads = threads
            summary = _run_one(cfg, sweep=True)
        sweeps.after_job(cfg, job_dir, sweep_dir, summary.get("status", "failed"))
        if in_sweep_process:   # submitit's jobs are reported by the sweeper when they end
            total = os.environ.get(sweeps.TOTAL)
            print(sweeps.job_line(job_dir, summary, hc.job.num + 1, int(total) if total else None),
                  file=sys.stderr, flush=True)
    if "optuna" in str(hc.sweeper.get("_target_", "")):
        return _objective(cfg, summary)
    return summary


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def _objective(cfg, summary: dict) -> float:
    """The value a search sweeper optimises: `sweep.objective` of the job's summary (NaN for
    a job that did not complete, which Optuna records as a failed trial)."""
    import math

    key = cfg.sweep.objective
    value = summary.get(key) if summary.get("status") == "completed" else None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return math.nan
    return float(value)


def _run_one(cfg, sweep: bool) -> dict:
    from hydra.core.hydra_config import HydraConfig

    from quadrun.errors import CheckpointError, Interrupted, RunFailed
    from quadrun.estimate import wait_policy

    wait_policy(int(cfg.get("threads") or 0))     # before torch loads its OpenMP runtime
    from quadrun.runner import run

    try:
        summary = run(cfg, after=_report_quietly if sweep else _report)
    except (ConfigError, CheckpointError) as exc:
        if sweep:  # one bad job never stops the others; its summary says why
            return {"status": "failed", "error": str(exc)}
        _error(str(exc), EXIT_BAD_INPUT)
    except RunFailed as exc:
        if sweep:
            return {"status": "failed", "error": str(exc)}
        _error(str(exc), EXIT_FAILED)
    except Interrupted as exc:
        hc = HydraConfig.get()
        folder = hc.sweep.dir if sweep else hc.runtime.output_dir
        print(f"quadrun: interrupted: {exc}; continue with: quadrun resume={folder}",
              file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    return summary


def _report_quietly(run_dir: Path) -> None:
    _report(run_dir, show=False)


def _report(run_dir: Path, show: bool = True) -> None:
    """The run's own report/ (tables and figures), from the folder, with the claims the
    run decided; a report that cannot be written is logged and never loses the run."""
    import logging
    import traceback

    from quadrun import report, vocab

    log = logging.getLogger("quadrun")
    try:
        result = report.build([run_dir], out=run_dir / vocab.REPORT, quiet=True)
    except Exception:
        log.error("could not write the report:\n%s", traceback.format_exc())
        return
    if show:
        report.print_claims(result["claims"])
    log.info("report: %s", run_dir / vocab.REPORT / "table.md")


def _hydra_entry() -> None:
    import hydra

    hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")(_task)()
