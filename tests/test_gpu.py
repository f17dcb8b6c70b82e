"""GPU tier: skipped without CUDA; run by benchmarks/gpu_check.sh on a machine with a GPU."""
from __future__ import annotations

import pytest
import torch

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
