"""run(cfg): validate, pick the device, seed, open the run folder, dispatch, write the summary."""
from __future__ import annotations

import logging
import signal
import traceback
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig

from quadrun import registry
from quadrun.artifacts import CheckpointError, RunContext
from quadrun.devices import pick_device, seed_everything
from quadrun.schema import ConfigError, validate
from quadrun.training import Interrupted

log = logging.getLogger("quadrun")

# SIGUSR2 is submitit's preemption / pre-timeout signal: after the checkpoint, its own
# handler runs (it requeues the job, which then resumes in the same folder).
STOP_SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2]


class RunFailed(Exception):
    """The run ended with status failed; the message is one line."""


def _output_dir() -> Optional[Path]:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return None


def run(cfg: DictConfig, run_dir: Optional[Path] = None) -> dict:
    """Run one experiment into `run_dir` (Hydra's output dir by default) and return its
    summary. Raises ConfigError for bad input, Interrupted when stopped by a signal
    (checkpoint saved), RunFailed when the experiment raised (summary status failed)."""
    experiments = registry.load_all()
    validate(cfg, experiments)
    run_dir = Path(run_dir) if run_dir is not None else _output_dir()
    if run_dir is None:
        raise ConfigError("run_dir: no run folder; call run(cfg, run_dir) outside Hydra")
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed, cfg.deterministic)
    ctx = RunContext(run_dir, cfg, device)
    ctx.start()
    log.info("run %s: experiment=%s scale=%s device=%s", run_dir, cfg.experiment, cfg.scale, device)

    def request_stop(signum, _frame):
        log.warning("signal %s received: checkpointing and stopping", signal.Signals(signum).name)
        ctx.stop_requested = True
        ctx.stop_signal = signum

    previous = {s: signal.signal(s, request_stop) for s in STOP_SIGNALS}
    try:
        summary = dict(experiments[cfg.experiment].run(cfg[cfg.experiment], ctx) or {})
        status = summary.pop("status", "completed")
        ctx.finish(status, summary)
        log.info("run %s: %s", run_dir, status)
        return {"status": status, **summary}
    except Interrupted as exc:
        ctx.finish("interrupted", {"reason": str(exc)})
        chained = previous.get(ctx.stop_signal)
        if callable(chained):  # the handler that was there before ours, e.g. submitit's requeue
            signal.signal(ctx.stop_signal, chained)
            chained(ctx.stop_signal, None)
        raise
    except (ConfigError, CheckpointError) as exc:
        ctx.finish("failed", {"error": str(exc)})
        raise
    except Exception as exc:
        log.error("run failed:\n%s", traceback.format_exc())
        message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        ctx.finish("failed", {"error": message})
        raise RunFailed(f"run failed: {message} (traceback in {run_dir}/quadrun.log)") from exc
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
