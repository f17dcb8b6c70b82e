"""A test-only experiment that drives the core training loop: least squares with a
small MLP on fixed synthetic data. Registered only in tests (QUADRUN_EXPERIMENTS)."""
from dataclasses import dataclass

import torch

from quadrun.schema import spec
from quadrun.training import TensorBatches, fit


@dataclass
class Config:
    n: int = spec(256, ge=1)
    width: int = spec(16, ge=1, le=4096)
    sleep: float = spec(0.0, ge=0, help="seconds per step, so a test can signal mid-run")
    nan_after: int = spec(0, ge=0, help="the loss turns NaN from this step on (0: never)")
    fail_at: int = spec(0, ge=0, help="raise an error at this step (0: never)")


def run(cfg, ctx) -> dict:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(cfg.n, 4, generator=g)
    y = (x[:, :1] * x[:, 1:2]).sin()
    model = torch.nn.Sequential(torch.nn.Linear(4, cfg.width), torch.nn.Tanh(),
                                torch.nn.Linear(cfg.width, 1))
    data = TensorBatches([x.to(ctx.device), y.to(ctx.device)], ctx.cfg.train.batch_size)

    calls = [0]

    def loss_fn(m, batch):
        if cfg.sleep:
            import time
            time.sleep(cfg.sleep)
        calls[0] += 1
        if cfg.fail_at and calls[0] >= cfg.fail_at:
            raise RuntimeError("toy failure requested by toy.fail_at")
        xb, yb = batch
        loss = torch.nn.functional.mse_loss(m(xb), yb)
        return loss * float("nan") if cfg.nan_after and calls[0] >= cfg.nan_after else loss

    def evaluate(m):
        return {"val/mse": torch.nn.functional.mse_loss(m(x.to(ctx.device)), y.to(ctx.device))}

    res = fit(model, data, loss_fn, ctx, ctx.cfg.train, evaluate=evaluate,
              monitor=("val/mse", "min"))
    return {"status": res.status, "val/mse": res.metrics.get("val/mse"), "steps": res.step,
            "weights_sum": float(sum(p.detach().double().sum() for p in model.parameters()))}
