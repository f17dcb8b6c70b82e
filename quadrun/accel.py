"""Faster training steps on the device, behind one function: `accelerated(model, runtime)`.

- `compile=true`: the model is `torch.compile`d.
- on CUDA (unless `cuda_graphs=false`): every training forward and backward is replayed
  as a CUDA graph (`CudaGraphed`).
- otherwise the model runs as it is.

The training loop calls `new_step(step_model)` before each step and uses the wrapped model
only for the training forward; evaluation and checkpoints use the model itself.
"""
from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger("quadrun")


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
    launches a whole forward, or a whole backward, at once (measured step times:
    benchmarks/train.py --breakdown, results in benchmarks/results/). One graph is captured per
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


def new_step(step_model) -> None:
    """Tell a graphed model that a new training step starts (its graphs may be reused)."""
    if isinstance(step_model, CudaGraphed):
        step_model.new_step()


@contextlib.contextmanager
def accelerated(model: torch.nn.Module, runtime):
    """The model to call in training steps, for the lifetime of one training."""
    if runtime.compile:
        yield torch.compile(model)
    elif runtime.device.type == "cuda" and runtime.cuda_graphs:
        graphed = CudaGraphed(model)
        try:
            yield graphed
        finally:
            graphed.release()
    else:
        yield model
