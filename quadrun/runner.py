"""run(cfg): validate, pick the device, seed, open the run folder, measure every cell,
decide the claims (once: they are stored in summary.json) and write the summary. The CLI
writes the run's report from the folder afterwards (quadrun.report); the runner does not
import it.

The loop over cells lives here, not in the experiments: an experiment says what it
measures (`cells(c)`), how to measure one cell (`measure(c, cell, ctx) -> record`) and what
its paper claims (`claims(records, c)`); see quadrun/registry.py.
"""
from __future__ import annotations

import json
import logging
import signal
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

from omegaconf import DictConfig, OmegaConf

from quadrun import estimate, registry, vocab
from quadrun.errors import CheckpointError, ConfigError, Interrupted, RunFailed
from quadrun.schema import validate

log = logging.getLogger("quadrun")

# SIGUSR2 is submitit's preemption / pre-timeout signal: after the checkpoint, its own
# handler runs (it requeues the job, which then resumes in the same folder).
STOP_SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2]


def _output_dir() -> Optional[Path]:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return None


def section(cfg: DictConfig, name: str):
    """The experiment's section as its Config dataclass (plain attributes)."""
    return OmegaConf.to_object(cfg[name])


def cell_key(cell: dict) -> str:
    """A cell's stable key, e.g. "learner=layerwise/d=8/seed=1000"."""
    def text(v):
        return json.dumps(v, separators=(",", ":")) if isinstance(v, (list, dict)) else str(v)
    return "/".join(f"{k}={text(v)}" for k, v in cell.items()) or "run"


def record_keys(cells: list) -> list:
    keys: list = []
    for cell in cells:
        keys += [k for k in cell if k not in keys]
    return keys


def measure_cells(exp, c, ctx, cells: list) -> list:
    """Measure every cell in order; a finished cell is a stage, so a resumed run skips it.
    The record of a cell is the cell's own fields followed by what `measure` returned."""
    keys = [cell_key(cell) for cell in cells]
    if len(set(keys)) != len(keys):
        raise RuntimeError(f"{exp.__name__}.cells: two cells share a key")
    stale = ctx.stale_stages(keys)
    if stale:
        log.warning("measuring %d of %d finished cells again: other code measured them "
                    "(this is %s)", len(stale), len(keys), ctx.code_fingerprint)
    done = ctx.done_keys()
    todo = [k for k in keys if k not in done]
    log.info("%s", estimate.run_line(ctx.cfg.experiment, ctx.cfg.scale, len(keys),
                                     len(keys) - len(todo)))
    records, spent, measured = [], 0.0, 0
    for i, (cell, key) in enumerate(zip(cells, keys), 1):
        ctx.check_stop(f"before cell {i}/{len(cells)} ({key})")
        left = ""
        if measured and key in todo:     # the time left, from the cells measured so far
            remaining = len(todo) - todo.index(key)
            left = f", {estimate.duration(spent / measured * remaining)} left"
        ctx.label = f"[{i}/{len(cells)}{left}]" if len(cells) > 1 else ""
        if len(cells) > 1:
            log.info("cell %d/%d%s: %s", i, len(cells), left, key)
        t0 = time.perf_counter()
        records.append(ctx.stage(key, lambda: {**cell, **exp.measure(c, cell, ctx),
                                               "threads": ctx.threads}))
        if key in todo:
            spent, measured = spent + time.perf_counter() - t0, measured + 1
    ctx.label = ""
    return records


def conclude(exp, c, records: list, keys: list, scale: str, device: str) -> dict:
    """The summary: records, record_keys, the experiment's derived results, and the claims,
    decided here once, each with the scale and the device that produced it."""
    derived = dict(exp.summarize(records, c)) if hasattr(exp, "summarize") else {}
    claims = list(exp.claims(records, c)) if hasattr(exp, "claims") else []
    claims = [{**cl, "scale": scale, "device": device} for cl in claims]
    return {**derived, "records": records, "record_keys": keys, "claims": claims}


def _to_log_file(text: str) -> None:
    """A traceback for the run's log file only (the terminal gets the one-line error)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, text, None, None)
    handlers = [h for h in logging.getLogger().handlers + log.handlers
                if isinstance(h, logging.FileHandler)]
    for h in handlers:
        h.handle(record)
    if not handlers:
        log.error("%s", text)


def run(cfg: DictConfig, run_dir: Optional[Path] = None,
        after: Optional[Callable[[Path], None]] = None) -> dict:
    """Run one experiment into `run_dir` (Hydra's output dir by default) and return its
    summary; `after(run_dir)` is called once the summary is written, before a tracker
    (logger=...) takes the folder's files (the CLI writes the run's report there). Raises
    ConfigError for bad input, Interrupted when stopped by a signal (checkpoint saved),
    RunFailed when the experiment raised (summary status failed)."""
    from quadrun.artifacts import RunContext
    from quadrun.devices import make_runtime

    experiments = registry.load_all()
    validate(cfg, experiments)
    run_dir = Path(run_dir) if run_dir is not None else _output_dir()
    if run_dir is None:
        raise ConfigError("run_dir: no run folder; call run(cfg, run_dir) outside Hydra")
    exp = experiments[cfg.experiment]
    c = section(cfg, cfg.experiment)
    runtime = make_runtime(cfg)
    ctx = RunContext(run_dir, cfg, runtime)
    ctx.start()
    log.info("run %s: experiment=%s scale=%s device=%s", run_dir, cfg.experiment, cfg.scale,
             runtime.device)
    log.info("to continue this run after a stop, kill or crash: quadrun resume=%s", run_dir)

    def request_stop(signum, _frame):
        log.warning("signal %s received: checkpointing and stopping", signal.Signals(signum).name)
        ctx.stop_requested = True
        ctx.stop_signal = signum

    previous = {s: signal.signal(s, request_stop) for s in STOP_SIGNALS}
    try:
        cells = list(exp.cells(c))
        records = measure_cells(exp, c, ctx, cells)
        summary = conclude(exp, c, records, record_keys(cells), cfg.scale, str(runtime.device))
        status = summary.pop("status", "completed")
        ctx.finish(status, summary)
        log.info("run %s: %s", run_dir, status)
        if after is not None:
            after(run_dir)
        return {"status": status, **summary}
    except Interrupted as exc:
        ctx.finish("interrupted", {"reason": str(exc)})
        chained = previous.get(ctx.stop_signal)
        if callable(chained) and chained is not signal.default_int_handler:
            # the handler that was there before ours, e.g. submitit's requeue (never
            # Python's Ctrl-C handler: it would turn the clean stop into a traceback)
            signal.signal(ctx.stop_signal, chained)
            chained(ctx.stop_signal, None)
        raise
    except (ConfigError, CheckpointError) as exc:
        ctx.finish("failed", {"error": str(exc)})
        raise
    except Exception as exc:
        _to_log_file(f"run failed:\n{traceback.format_exc()}")
        message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        ctx.finish("failed", {"error": message})
        raise RunFailed(f"run failed: {message} (traceback in {run_dir}/{vocab.LOG})") from exc
    finally:
        for s, handler in previous.items():
            # after a stop the process only saves and exits: a second signal must not
            # turn that into a traceback or a kill (exit 3 stays exit 3)
            signal.signal(s, signal.SIG_IGN if ctx.stop_requested else handler)
        ctx.close()
