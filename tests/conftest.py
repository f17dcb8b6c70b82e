"""Shared test helpers: run the real CLI in a subprocess, find run folders."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# Test-only experiments (tests/plugins/), registered in the CLI's environment: one line each.
PLUGINS = {"toy": "plugins.toy"}


def cli_env(toy: bool = False, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUADRUN_")}
    env.setdefault("OMP_NUM_THREADS", "1")
    if toy:
        env["QUADRUN_EXPERIMENTS"] = ",".join(f"{k}={v}" for k, v in PLUGINS.items())
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _command(args, toy: bool, script: str) -> list:  # toy: the env registers it
    code = f"import sys; from {script} import main; sys.argv[0] = 'quadrun'; main()"
    return [sys.executable, "-c", code, *args]


def run_cli(*args: str, cwd: Path, toy: bool = False, timeout: float = 300,
            env: dict | None = None, script: str = "quadrun.cli") -> subprocess.CompletedProcess:
    """`quadrun ARGS` in `cwd`, to completion (the toy test experiment registered when toy)."""
    return subprocess.run(_command(args, toy, script), cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**cli_env(toy), **(env or {})})


def start_cli(*args: str, cwd: Path, toy: bool = False, quiet: bool = False) -> subprocess.Popen:
    """`quadrun ARGS` in `cwd`, in the background, for tests that signal or kill it."""
    out = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen(_command(args, toy, "quadrun.cli"), cwd=cwd, env=cli_env(toy),
                            stdout=out, stderr=out, text=True)


def run_folders(cwd: Path, experiment: str) -> list[Path]:
    root = Path(cwd) / "outputs" / experiment
    return sorted(p for p in root.glob("*") if p.is_dir() and p.name != "multirun")


def summary(folder: Path) -> dict:
    return json.loads((Path(folder) / "summary.json").read_text())


@pytest.fixture
def cli(tmp_path):
    """cli(*args, toy=False) runs the real CLI in tmp_path."""
    def call(*args, **kw):
        return run_cli(*args, cwd=tmp_path, **kw)
    call.cwd = tmp_path
    return call


# -- composing configs and a stand-in run context ------------------------------------------------
def compose_config(*overrides: str):
    """(the composed config, the experiments) for `quadrun OVERRIDES`, through Hydra as the
    CLI does it (the hydra node left out)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from quadrun import registry
    from quadrun.cli import config_dir
    from quadrun.schema import register

    experiments = registry.load_all()
    register(experiments)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose("config", overrides=list(overrides)), experiments
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture
def compose():
    """compose(*overrides) -> (cfg, experiments)."""
    return compose_config


class FakeContext:
    """What `measure` uses of a quadrun.artifacts.RunContext, in memory: the runtime (seed,
    device), shared and latest objects (what was built is kept in `built`), the stop flag
    (set after `stop_after` logged points), logged points (`rows`) and a folder for
    checkpoints."""

    def __init__(self, seed: int = 0, folder: Path | None = None, stop_after: int | None = None,
                 device: str = "cpu"):
        from types import SimpleNamespace

        import torch

        self.runtime = SimpleNamespace(seed=seed, device=torch.device(device), precision="fp32",
                                       compile=False, cuda_graphs=False)
        self.device = self.runtime.device
        self.memo, self.built, self.rows = {}, [], []
        self.stop_requested, self.stop_after = False, stop_after
        self.dir = Path(folder) if folder else None
        self.data_dir = self.dir or Path("data")
        self.fingerprint, self.label = "fake", ""

    def shared(self, key, build):
        if key not in self.memo:
            self.built.append(key)
            self.memo[key] = build()
        return self.memo[key]

    def latest(self, kind, key, build):
        from quadrun.artifacts import RunContext

        return RunContext.latest(self, kind, key, lambda: (self.built.append((kind, key)), build())[1])

    def check_stop(self, where: str = "") -> None:
        from quadrun.artifacts import RunContext

        RunContext.check_stop(self, where)

    def checkpoint_path(self, name: str = "last") -> Path:
        return self.dir / "checkpoints" / f"{name}.pt"

    def save_checkpoint(self, state: dict, name: str = "last") -> None:
        from quadrun.artifacts import save_checkpoint

        save_checkpoint(self.checkpoint_path(name), {**state, "fingerprint": self.fingerprint})

    def save_model(self, name, model, **extra):
        from quadrun.artifacts import RunContext

        RunContext.save_model(self, name, model, **extra)

    def load_model(self, name, model, made_by):
        from quadrun.artifacts import RunContext

        return RunContext.load_model(self, name, model, made_by)

    def truncate_metrics(self, step, fit="train"):
        self.rows = [r for r in self.rows if r.get("fit", "train") != fit or r["step"] <= step]

    def log(self, step, metrics):
        self.rows.append({"step": step, **metrics})
        if self.stop_after is not None and len(self.rows) >= self.stop_after:
            self.stop_requested = True


@pytest.fixture
def fake_ctx(tmp_path):
    """fake_ctx(seed=0, stop_after=None) -> a FakeContext with its folder in tmp_path."""
    def make(seed: int = 0, stop_after: int | None = None) -> FakeContext:
        return FakeContext(seed, tmp_path, stop_after)
    return make
