"""The one place where devices, precision and seeds are chosen.

`make_runtime(cfg)` (called once, by the runner) turns the top-level keys into a `Runtime`:
the device, the precision, compile / CUDA graphs and the run seed. The training loop reads
these from the runtime and nothing from the global config.
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from quadrun.errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """`auto` is CUDA when present, else CPU; `cuda` without a GPU is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for but no CUDA device is available; "
                          "use device=auto or device=cpu")
    return torch.device(name)


@dataclass(frozen=True)
class Runtime:
    """How a run runs (none of it defines a result, see quadrun.vocab)."""
    device: torch.device
    precision: str = "fp32"          # fp32 | bf16 (autocast on CUDA)
    compile: bool = False
    cuda_graphs: bool = True
    seed: int = 0                    # the run seed: every stream is derive_seed(seed, ...)


def make_runtime(cfg) -> Runtime:
    """Pick the device, set threads and determinism, seed the global generators once."""
    device = pick_device(cfg.device)
    from quadrun.estimate import cpu_threads

    threads = cpu_threads(cfg.threads)
    torch.set_num_threads(threads)
    # numpy's and scipy's BLAS (OpenBLAS, MKL) keep their own pools: the same limit for them
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    seed_everything(cfg.seed, cfg.deterministic)
    return Runtime(device=device, precision=cfg.precision, compile=bool(cfg.compile),
                   cuda_graphs=bool(cfg.cuda_graphs), seed=int(cfg.seed))


@contextlib.contextmanager
def seeded(seed: int):
    """Draw from torch's global generator (e.g. a module's default initialisation) as if it
    were seeded with `seed`, and leave the global stream as it was afterwards."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA when asked for; a no-op context elsewhere. Without autocast's
    weight cache (each weight is cast once per forward anyway), which CUDA graph capture
    does not allow."""
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def rng_state() -> dict:
    """Every RNG's state, in types that torch.load(weights_only=True) accepts."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
