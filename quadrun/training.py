"""The one training loop. Every neural experiment trains through `fit`.

    result = fit(model, data, loss_fn, ctx, c.train,
                 param_groups=groups, evaluate=evaluate, monitor=("test/acc", "max"))

- `tc` is the training's own config (a `quadrun.schema.TrainConfig` from the experiment's
  section); how to run (device, precision, compile, CUDA graphs, seed) comes from
  `ctx.runtime`, built once by the runner. Nothing else is read.
- `data` yields batches already on the device (see `TensorBatches`); an epoch's order
  comes from a generator seeded by derive_seed(seed, name, epoch), so a resumed run sees
  the same batches.
- `loss_fn(model, batch)` returns the loss tensor.
- `evaluate(model)` returns a dict of floats, logged every `eval_every` epochs; each entry
  of the history also has the epoch's mean training loss (`train/loss`).
- Checkpoints (`checkpoints/last.pt`) every `checkpoint_every` steps, at each epoch end and
  when a stop is requested (a signal the runner handles: quadrun.runner.STOP_SIGNALS),
  then `Interrupted` is raised.
- A non-finite loss ends training with status "diverged" (a result, not a crash).
- No host synchronisation per step: losses are summed on the device, read when logged.
- The training steps run through `quadrun.accel.accelerated` (CUDA graphs or compile).
- `FitResult` carries the training and evaluation seconds, summed over resumed attempts.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Iterator, Optional, Sequence

import torch

from quadrun.accel import accelerated, new_step
from quadrun.artifacts import RunContext
from quadrun.devices import autocast, rng_state, set_rng_state
from quadrun.errors import Interrupted
from quadrun.progress import Progress
from quadrun.vocab import derive_seed

log = logging.getLogger("quadrun")


@dataclass
class FitResult:
    status: str                      # "completed" | "diverged"
    step: int
    epoch: int
    metrics: dict = field(default_factory=dict)   # last evaluation
    best: dict = field(default_factory=dict)      # evaluation with the best monitored value
    history: list = field(default_factory=list)   # every evaluation, with "epoch" and "step"
    train_seconds: float = 0.0    # training steps, summed over resumed attempts
    eval_seconds: float = 0.0     # evaluations, likewise
    samples: int = 0              # training samples seen (steps x batch size)


class TensorBatches:
    """Mini-batches of device-resident tensors, shuffled by a seeded generator.

    `transform(batch)` (e.g. random crop + flip on the GPU) is applied to each batch as it
    is drawn, never to batches skipped when resuming mid-epoch."""

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int, shuffle: bool = True,
                 drop_last: bool = False, transform: Optional[Callable] = None):
        self.tensors = list(tensors)
        self.n = len(self.tensors[0])
        self.batch_size = min(batch_size, self.n)
        self.shuffle, self.drop_last, self.transform = shuffle, drop_last, transform

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def epoch(self, gen: torch.Generator, start: int = 0) -> Iterator[tuple]:
        order = torch.randperm(self.n, generator=gen) if self.shuffle else torch.arange(self.n)
        order = order.to(self.tensors[0].device)
        for i in range(start, len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            batch = tuple(t[idx] for t in self.tensors)
            yield self.transform(batch) if self.transform else batch


def make_optimizer(params, tc) -> torch.optim.Optimizer:
    if tc.optimizer == "sgd":
        return torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, nesterov=tc.nesterov,
                               weight_decay=tc.weight_decay)
    kind = torch.optim.Adam if tc.optimizer == "adam" else torch.optim.AdamW
    return kind(params, lr=tc.lr, weight_decay=tc.weight_decay)


def make_schedule(opt, tc, steps_per_epoch: int):
    """Step-wise LambdaLR: every parameter group's lr (the quadratic ones too) follows it."""
    total = tc.epochs * steps_per_epoch
    milestones = sorted(tc.milestones)

    def factor(step: int) -> float:
        if tc.schedule == "multistep":
            epoch = step // steps_per_epoch
            return tc.lr_decay ** sum(epoch >= m for m in milestones)
        if tc.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _prefixed(name: str, metrics: dict) -> dict:
    """Metric names of the main fit as they are (`train/loss`); those of other fits under
    their name, with a "fit" field so a resume of one fit never drops another's points."""
    if name == "train":
        return metrics
    return {"fit": name, **{f"{name}/{k}": v for k, v in metrics.items()}}


def _plain(tc):
    """Plain attributes: no OmegaConf look-ups in the hot loop."""
    if type(tc).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        tc = OmegaConf.to_object(tc)
        return SimpleNamespace(**tc) if isinstance(tc, dict) else tc
    return tc


def fit(model: torch.nn.Module, data, loss_fn: Callable, ctx: RunContext, tc, *,
        param_groups: Optional[list] = None, evaluate: Optional[Callable] = None,
        monitor: Optional[tuple] = None, penalty: Optional[Callable] = None,
        checkpoint: bool = True, name: str = "train") -> FitResult:
    """Train `model` for `tc.epochs` epochs; see the module docstring."""
    tc, rt = _plain(tc), ctx.runtime
    device, precision = rt.device, rt.precision
    model.to(device)
    opt = make_optimizer(param_groups if param_groups is not None else model.parameters(), tc)
    sched = make_schedule(opt, tc, len(data))
    steps_per_epoch = len(data)
    total = tc.epochs * steps_per_epoch
    step, history, best = 0, [], {}
    carried = (0.0, 0, 0.0)           # the open log window (loss sum, steps), epoch loss sum
    seconds = [0.0, 0.0]              # training, evaluation
    mon_key, mon_mode = monitor if monitor else (None, "max")

    state = ctx.load_checkpoint(map_location=device) if checkpoint else None
    if state is None or state.get("name") != name:
        ctx.truncate_metrics(-1, name)     # a fresh start: no points of an earlier attempt
    else:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, history, best = state["step"], state["history"], state["best"]
        carried, seconds = tuple(state["window"]), list(state["seconds"])
        set_rng_state(state["rng"])
        ctx.truncate_metrics(step, name)
        log.info("resumed %s from step %d (epoch %d)", name, step, step // steps_per_epoch)

    loss_sum = torch.full((), carried[0], device=device)
    epoch_sum = torch.full((), carried[2], device=device)
    bad = torch.zeros((), dtype=torch.bool, device=device)
    window, status = carried[1], "completed"

    def save(kind: str = "last") -> None:
        ctx.save_checkpoint({"name": name, "model": model.state_dict(),
                             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                             "step": step, "history": history, "best": best,
                             "window": (float(loss_sum), window, float(epoch_sum)),
                             "seconds": tuple(seconds), "rng": rng_state()}, kind)

    def better(metrics: dict) -> bool:
        if mon_key is None or mon_key not in metrics or not math.isfinite(metrics[mon_key]):
            return False
        if mon_key not in best:
            return True
        return metrics[mon_key] > best[mon_key] if mon_mode == "max" else metrics[mon_key] < best[mon_key]

    progress = Progress(name, total, step, label=ctx.label)
    shown = ["", ""]                  # the last logged loss, the last evaluation's headline
    t_start = time.perf_counter()
    try:
        with accelerated(model, rt) as step_model:
            while step < total:
                epoch, start = divmod(step, steps_per_epoch)
                gen = torch.Generator().manual_seed(derive_seed(rt.seed, name, epoch))
                model.train()
                for batch in data.epoch(gen, start):
                    new_step(step_model)
                    with autocast(device, precision):
                        loss = loss_fn(step_model, batch)
                    if penalty is not None:
                        loss = loss + penalty(model)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if tc.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                    opt.step()
                    sched.step()
                    step += 1
                    window += 1
                    loss_sum += loss.detach().float()
                    epoch_sum += loss.detach().float()
                    bad |= ~torch.isfinite(loss.detach())
                    end_of_epoch = step % steps_per_epoch == 0
                    if step % tc.log_every == 0 or end_of_epoch:
                        if bool(bad):  # the one host sync: every log_every steps and epoch end
                            status = "diverged"
                            break
                    if step % tc.log_every == 0 or step == total:
                        mean = (loss_sum / window).item()
                        ctx.log(step, _prefixed(name, {"train/loss": mean,
                                                       "epoch": step / steps_per_epoch,
                                                       "train/lr": opt.param_groups[0]["lr"]}))
                        shown[0] = f"loss {mean:.4g}"
                        loss_sum.zero_()
                        window = 0
                    progress.update(step, "  ".join(filter(None, shown)))
                    if ctx.stop_requested and not end_of_epoch:  # at an epoch end: after its eval
                        if checkpoint:
                            seconds[0] += time.perf_counter() - t_start
                            t_start = time.perf_counter()
                            save()
                        raise Interrupted(f"stopped at step {step}; checkpoint saved")
                    if checkpoint and tc.checkpoint_every and step % tc.checkpoint_every == 0 \
                            and not end_of_epoch:
                        seconds[0] += time.perf_counter() - t_start
                        t_start = time.perf_counter()
                        save()
                if status == "diverged":
                    log.warning("%s: non-finite loss by step %d: diverged", name, step)
                    break
                seconds[0] += time.perf_counter() - t_start
                t_start = time.perf_counter()
                epoch = step // steps_per_epoch
                epoch_loss = float(epoch_sum) / steps_per_epoch
                epoch_sum.zero_()
                if evaluate is not None and (epoch % tc.eval_every == 0 or step == total):
                    model.eval()
                    with torch.inference_mode(), autocast(device, precision):
                        metrics = {k: float(v) for k, v in evaluate(model).items()}
                    model.train()
                    ctx.log(step, _prefixed(name, metrics))
                    history.append({"epoch": epoch, "step": step, "train/loss": epoch_loss,
                                    **metrics})
                    if better(metrics):
                        best = {"epoch": epoch, "step": step, **metrics}
                        if checkpoint:
                            save("best")
                    headline = mon_key if mon_key in metrics else next(iter(metrics), None)
                    if headline is not None:
                        shown[1] = f"{headline} {metrics[headline]:.4g}"
                        progress.update(step, "  ".join(filter(None, shown)))
                    log.info("%s epoch %d: %s", name, epoch,
                             ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
                seconds[1] += time.perf_counter() - t_start
                t_start = time.perf_counter()
                if checkpoint:
                    save()
                if ctx.stop_requested and step < total:
                    raise Interrupted(f"stopped at step {step}; checkpoint saved")
    finally:
        progress.close()
    return FitResult(status=status, step=step, epoch=step // steps_per_epoch,
                     metrics=history[-1] if history else {}, best=best, history=history,
                     train_seconds=seconds[0], eval_seconds=seconds[1],
                     samples=step * data.batch_size)
