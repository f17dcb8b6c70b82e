"""The one training loop. Every neural experiment trains through `fit`.

    result = fit(model, data, loss_fn, ctx, cfg.train,
                 param_groups=groups, evaluate=evaluate, monitor=("test/acc", "max"))

- `data` yields batches already on the device (see `TensorBatches`); an epoch's order
  comes from a generator seeded by (seed, epoch), so a resumed run sees the same batches.
- `loss_fn(model, batch)` returns the loss tensor.
- `evaluate(model)` returns a dict of floats, logged every `eval_every` epochs.
- Checkpoints (`checkpoints/last.pt`) every `checkpoint_every` steps, at each epoch end and
  when a stop is requested (SIGTERM/SIGINT/SIGUSR1), then `Interrupted` is raised.
- A non-finite loss ends training with status "diverged" (a result, not a crash).
- No host synchronisation per step: losses are summed on the device, read when logged.
- On CUDA the model's training forward and backward are replayed as CUDA graphs
  (`CudaGraphed`; `cuda_graphs=false` turns this off, `compile=true` replaces it).
"""
from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Iterator, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from quadrun.artifacts import RunContext
from quadrun.devices import autocast, rng_state, set_rng_state

log = logging.getLogger("quadrun")


class Interrupted(Exception):
    """A stop was requested; the state is checkpointed and the run can be resumed."""


@dataclass
class FitResult:
    status: str                      # "completed" | "diverged"
    step: int
    epoch: int
    metrics: dict = field(default_factory=dict)   # last evaluation
    best: dict = field(default_factory=dict)      # evaluation with the best monitored value
    history: list = field(default_factory=list)   # every evaluation, with "epoch" and "step"


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


class _Forward(torch.nn.Module):
    """The module a graph is captured from: the model's own forward, hook-free."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args):
        return self.model(*args)


class CudaGraphed:
    """`model`, with its training forward and backward replayed as CUDA graphs.

    Small models on a GPU are bound by the host launching their kernels one by one. A graph
    launches a whole forward, or a whole backward, at once (a QResNet20 step at batch 128 on
    an H100: 17.3 ms eager, 6.2 ms with graphs; benchmarks/train.py --breakdown). One graph is captured per
    input signature (shapes, dtypes, strides, autocast), at most `max_graphs`, through
    `torch.cuda.make_graphed_callables`. Eager instead: eval mode, no grad, arguments that
    are not CUDA tensors, signatures past `max_graphs`, and a second call with the same
    signature in one step (a graph's output buffers are reused; `new_step` starts a step).
    After a failed capture (e.g. a host copy inside forward) the model trains eagerly.

    Capture runs three warm-up passes; the buffers they change (BatchNorm statistics) are
    put back, so a graphed run trains like an eager one. Parameters, buffers and the
    optimizer keep their storage for the graphs' lifetime, which is one `fit`."""

    def __init__(self, model: torch.nn.Module, max_graphs: int = 4):
        self.model, self.max_graphs = model, max_graphs
        self.graphs: dict = {}   # signature -> graphed callable, or None (ran eagerly)
        self.used: set = set()

    def __getattr__(self, name: str):
        """The model's other attributes and methods (those run eagerly)."""
        model = self.__dict__.get("model")
        if model is None:
            raise AttributeError(name)
        return getattr(model, name)

    def new_step(self) -> None:
        self.used.clear()

    def release(self) -> None:
        """Drop the graphs (and their memory pools) now, not at the next garbage collection:
        a graphed module's forward refers back to the module."""
        for graphed in self.graphs.values():
            if graphed is not None:
                del graphed.forward
        self.graphs.clear()

    def __call__(self, *args):
        model = self.model
        if not (model.training and torch.is_grad_enabled() and args
                and all(isinstance(a, torch.Tensor) and a.is_cuda for a in args)):
            return model(*args)
        key = tuple((a.shape, a.dtype, a.stride(), a.requires_grad) for a in args) \
            + (torch.is_autocast_enabled("cuda"),)
        if key in self.used:
            return model(*args)
        self.used.add(key)
        if key not in self.graphs:
            room = len(self.graphs) < self.max_graphs and None not in self.graphs.values()
            self.graphs[key] = self._capture(args) if room else None
        graphed = self.graphs[key]
        return graphed(*args) if graphed is not None else model(*args)

    def _capture(self, args):
        saved = [b.detach().clone() for b in self.model.buffers()]
        try:
            graphed = torch.cuda.make_graphed_callables(
                _Forward(self.model), tuple(a.detach().clone().requires_grad_(a.requires_grad)
                                            for a in args), allow_unused_input=True)
        except Exception as exc:  # e.g. a host sync inside forward: not capturable
            log.warning("CUDA graph capture failed (%s: %s); this model trains eagerly. "
                        "cuda_graphs=false skips the attempt", type(exc).__name__, exc)
            graphed = None
        with torch.no_grad():
            for b, s in zip(self.model.buffers(), saved):
                b.copy_(s)
        return graphed


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


def _progress(total: int, done: int, name: str):
    """A rich progress bar on a terminal, None otherwise (plain log lines are used)."""
    if not sys.stderr.isatty():
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True)
    bar.start()
    bar.add_task(name, total=total, completed=done, info="")
    return bar


def _prefixed(name: str, metrics: dict) -> dict:
    """Metric names of the main fit as they are (`train/loss`); those of other fits under
    their name, with a "fit" field so a resume of one fit never drops another's points."""
    if name == "train":
        return metrics
    return {"fit": name, **{f"{name}/{k}": v for k, v in metrics.items()}}


def fit(model: torch.nn.Module, data, loss_fn: Callable, ctx: RunContext, tc, *,
        param_groups: Optional[list] = None, evaluate: Optional[Callable] = None,
        monitor: Optional[tuple] = None, penalty: Optional[Callable] = None,
        checkpoint: bool = True, name: str = "train") -> FitResult:
    """Train `model` for `tc.epochs` epochs; see the module docstring."""
    if isinstance(tc, DictConfig):  # plain attributes: no OmegaConf look-ups in the hot loop
        tc = OmegaConf.to_object(tc)
        tc = SimpleNamespace(**tc) if isinstance(tc, dict) else tc
    device = ctx.device
    model.to(device)
    opt = make_optimizer(param_groups if param_groups is not None else model.parameters(), tc)
    sched = make_schedule(opt, tc, len(data))
    if ctx.cfg.get("compile"):
        step_model = torch.compile(model)
    elif device.type == "cuda" and ctx.cfg.get("cuda_graphs", True):
        step_model = CudaGraphed(model)
    else:
        step_model = model
    precision = ctx.cfg.get("precision", "fp32")
    steps_per_epoch = len(data)
    total = tc.epochs * steps_per_epoch
    step, history, best, carried = 0, [], {}, (0.0, 0)  # carried: the open log window
    mon_key, mon_mode = monitor if monitor else (None, "max")

    if checkpoint:
        state = ctx.load_checkpoint(map_location=device)
        if state is not None and state.get("name") == name:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            step, history, best = state["step"], state["history"], state["best"]
            carried = tuple(state["window"])
            set_rng_state(state["rng"])
            ctx.truncate_metrics(step, name)
            log.info("resumed %s from step %d (epoch %d)", name, step, step // steps_per_epoch)

    def save(kind: str = "last") -> None:
        ctx.save_checkpoint({"name": name, "model": model.state_dict(),
                             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                             "step": step, "history": history, "best": best,
                             "window": (float(loss_sum), window), "rng": rng_state()}, kind)

    def better(metrics: dict) -> bool:
        if mon_key is None or mon_key not in metrics or not math.isfinite(metrics[mon_key]):
            return False
        if mon_key not in best:
            return True
        return metrics[mon_key] > best[mon_key] if mon_mode == "max" else metrics[mon_key] < best[mon_key]

    bar = _progress(total, step, name)
    loss_sum = torch.full((), carried[0], device=device)
    bad = torch.zeros((), dtype=torch.bool, device=device)
    window, t0, status = carried[1], time.perf_counter(), "completed"
    try:
        while step < total:
            epoch, start = divmod(step, steps_per_epoch)
            gen = torch.Generator().manual_seed(int(ctx.cfg.seed) * 100003 + epoch)
            model.train()
            for batch in data.epoch(gen, start):
                if isinstance(step_model, CudaGraphed):
                    step_model.new_step()
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
                bad |= ~torch.isfinite(loss.detach())
                end_of_epoch = step % steps_per_epoch == 0
                if step % tc.log_every == 0 or end_of_epoch:
                    if bool(bad):  # the one host sync: every log_every steps and epoch end
                        status = "diverged"
                        break
                if step % tc.log_every == 0 or step == total:
                    mean = (loss_sum / window).item()
                    ctx.log(step, _prefixed(name, {"train/loss": mean, "epoch": step / steps_per_epoch,
                                                   "train/lr": opt.param_groups[0]["lr"]}))
                    rate = window * data.batch_size / (time.perf_counter() - t0)
                    if bar is not None:
                        bar.update(bar.task_ids[0], completed=step,
                                   info=f"loss {mean:.4g}  {rate:,.0f}/s")
                    else:
                        log.info("%s step %d/%d epoch %.2f loss %.4g lr %.3g (%.0f samples/s)",
                                 name, step, total, step / steps_per_epoch, mean,
                                 opt.param_groups[0]["lr"], rate)
                    loss_sum.zero_()
                    window, t0 = 0, time.perf_counter()
                if ctx.stop_requested and not end_of_epoch:  # at an epoch end: after its eval
                    if checkpoint:
                        save()
                    raise Interrupted(f"stopped at step {step}; checkpoint saved")
                if checkpoint and tc.checkpoint_every and step % tc.checkpoint_every == 0 \
                        and not end_of_epoch:
                    save()
            if status == "diverged":
                log.warning("%s: non-finite loss by step %d: diverged", name, step)
                break
            epoch = step // steps_per_epoch
            if evaluate is not None and (epoch % tc.eval_every == 0 or step == total):
                model.eval()
                with torch.inference_mode(), autocast(device, precision):
                    metrics = {k: float(v) for k, v in evaluate(model).items()}
                model.train()
                ctx.log(step, _prefixed(name, metrics))
                history.append({"epoch": epoch, "step": step, **metrics})
                if better(metrics):
                    best = {"epoch": epoch, "step": step, **metrics}
                    if checkpoint:
                        save("best")
            if checkpoint:
                save()
            if ctx.stop_requested and step < total:
                raise Interrupted(f"stopped at step {step}; checkpoint saved")
    finally:
        if bar is not None:
            bar.stop()
        if isinstance(step_model, CudaGraphed):
            step_model.release()
    return FitResult(status=status, step=step, epoch=step // steps_per_epoch,
                     metrics=history[-1] if history else {}, best=best, history=history)
