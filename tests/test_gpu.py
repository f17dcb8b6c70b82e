"""GPU tier: skipped without CUDA; run by benchmarks/gpu_check.sh on a machine with a GPU."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import run_cli, run_folders, summary
from quadrun import registry

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_quadratic_conv_matches_cpu():
    from quadrun.nn.quadratic import QuadraticConv2d

    torch.manual_seed(0)
    layer = QuadraticConv2d(3, 8, 3, padding=1, init="random").double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    expected = layer(x)
    got = layer.cuda()(x.cuda()).cpu()
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_cg_on_cuda_matches_cpu_iterations():
    from quadrun.solvers import krylov
    from quadrun.solvers.poisson import scene

    system, b = scene("box_obstacle", 16, 3, seed=0)
    counts = []
    for device in ("cpu", "cuda"):
        A = system.matrix(torch.device(device), torch.float64)
        residuals = []
        krylov.cg(A, torch.from_numpy(b).to(device), tol=1e-6, residuals=residuals)
        counts.append(len(residuals))
    assert counts[0] == counts[1]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graphs_train_like_eager(tmp_path, monkeypatch, precision):
    """`fit` with CUDA graphs (the default on CUDA) gives the eager run's losses, weights and
    BatchNorm statistics; a short last batch gets its own graph."""
    import json

    from omegaconf import OmegaConf

    from quadrun.accel import CudaGraphed
    from quadrun.artifacts import RunContext
    from quadrun.devices import Runtime, seeded
    from quadrun.nn.resnet import qresnet
    from quadrun.schema import TrainConfig
    from quadrun.training import TensorBatches, fit

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    captured = []
    capture = CudaGraphed._capture
    monkeypatch.setattr(CudaGraphed, "_capture",
                        lambda self, args: captured.append(tuple(args[0].shape)) or capture(self, args))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, 16, 16, generator=gen).cuda()
    y = torch.randint(0, 10, (200,), generator=gen).cuda()
    tc = TrainConfig(epochs=2, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4,
                     schedule="cosine", grad_clip=5.0, log_every=1)
    losses, states = {}, {}
    for graphs in (False, True):
        cfg = OmegaConf.create({"experiment": "t", "scale": "t", "seed": 0, "data_dir": "data"})
        with seeded(0):
            model = qresnet(20, width=8, init="random").cuda()
        runtime = Runtime(torch.device("cuda"), precision=precision, cuda_graphs=graphs)
        ctx = RunContext(tmp_path / str(graphs), cfg, runtime)
        fit(model, TensorBatches([x, y], 64), lambda m, b: F.cross_entropy(m(b[0]), b[1]),
            ctx, tc, checkpoint=False)
        rows = [json.loads(line) for line in (tmp_path / str(graphs) / "metrics.jsonl").open()]
        losses[graphs] = torch.tensor([r["train/loss"] for r in rows if "train/loss" in r])
        states[graphs] = model.state_dict()
    assert captured == [(64, 3, 16, 16), (8, 3, 16, 16)]
    assert len(losses[True]) == 8
    tol = {"fp32": 1e-4, "bf16": 2e-2}[precision]
    assert torch.allclose(losses[True], losses[False], rtol=tol)
    for k, v in states[False].items():
        assert torch.allclose(states[True][k].float(), v.float(), rtol=tol, atol=tol), k


@pytest.mark.parametrize("experiment", sorted(registry.EXPERIMENTS))
def test_smoke_run_on_cuda(tmp_path, experiment):
    extra = ["precision=bf16"] if experiment == "relinear" else []
    r = run_cli(f"experiment={experiment}", "scale=smoke", "device=cuda", *extra, cwd=tmp_path,
                timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    [run] = run_folders(tmp_path, experiment)
    assert summary(run)["status"] in ("completed", "diverged")
    import json
    assert json.loads((run / "meta.json").read_text())["device"].startswith("cuda")
    assert "CUDA graph capture failed" not in (run / "quadrun.log").read_text()
