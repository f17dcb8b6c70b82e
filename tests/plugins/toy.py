"""A test-only experiment that drives the core: least squares with a small MLP on fixed
synthetic data, one cell. Registered only in tests (QUADRUN_EXPERIMENTS="toy=plugins.toy");
it needs no YAML file."""
from dataclasses import dataclass

from quadrun.claims import Above, Claim, Evidence, decide, fmt, missing
from quadrun.schema import TrainConfig, spec, train_config
from quadrun.stats import Interval


@dataclass
class Config:
    n: int = spec(256, ge=1)
    width: int = spec(16, ge=1, le=4096)
    sleep: float = spec(0.0, ge=0, help="seconds per step, so a test can signal mid-run")
    nan_after: int = spec(0, ge=0, help="the loss turns NaN from this step on (0: never)")
    fail_at: int = spec(0, ge=0, help="raise an error at this step (0: never)")
    fail_seed: int = spec(-1, ge=-1, help="fail_at applies only to the run with this seed "
                                          "(-1: every run)")
    train: TrainConfig = train_config(optimizer="sgd", lr=0.05, epochs=6, batch_size=32,
                                      log_every=4)


def cells(c):
    return [{"model": "mlp"}]


def measure(c, cell, ctx) -> dict:
    import torch

    from quadrun.training import TensorBatches, fit

    g = torch.Generator().manual_seed(1234)
    x = torch.randn(c.n, 4, generator=g)
    y = (x[:, :1] * x[:, 1:2]).sin()
    model = torch.nn.Sequential(torch.nn.Linear(4, c.width), torch.nn.Tanh(),
                                torch.nn.Linear(c.width, 1))
    data = TensorBatches([x.to(ctx.device), y.to(ctx.device)], c.train.batch_size)
    calls = [0]

    def loss_fn(m, batch):
        if c.sleep:
            import time
            time.sleep(c.sleep)
        calls[0] += 1
        if c.fail_at and calls[0] >= c.fail_at and c.fail_seed in (-1, ctx.runtime.seed):
            raise RuntimeError("toy failure requested by toy.fail_at")
        xb, yb = batch
        loss = torch.nn.functional.mse_loss(m(xb), yb)
        return loss * float("nan") if c.nan_after and calls[0] >= c.nan_after else loss

    def evaluate(m):
        return {"val/mse": torch.nn.functional.mse_loss(m(x.to(ctx.device)), y.to(ctx.device))}

    res = fit(model, data, loss_fn, ctx, c.train, evaluate=evaluate, monitor=("val/mse", "min"))
    return {"status": res.status, "val/mse": res.metrics.get("val/mse"), "steps": res.step,
            "variance": float(y.var()), "samples": res.samples, "train_seconds": res.train_seconds,
            "weights_sum": float(sum(p.detach().double().sum() for p in model.parameters()))}


def summarize(records, c) -> dict:
    r = records[0]
    return {"status": r["status"],
            **{k: r[k] for k in ("val/mse", "steps", "weights_sum", "samples", "train_seconds")}}


FITS = Claim("fits", "The network fits y better than its mean does.", "toy",
             target="Var y - val/mse above 0 (exact: one training, no noise)", rule=Above(0.0))


def claims(records, c) -> list:
    """One claim, so the core's claim path is exercised: training fits better than a constant."""
    done = [r for r in records if isinstance(r.get("val/mse"), float)]
    if not done:
        return decide([FITS], {"fits": missing("no record has a validation MSE")})
    gap = min(r["variance"] - r["val/mse"] for r in done)
    return decide([FITS], {"fits": Evidence(
        measured=f"val/mse {fmt(done[0]['val/mse'])} vs Var y {fmt(done[0]['variance'])}",
        interval=Interval(gap, gap, gap))})
