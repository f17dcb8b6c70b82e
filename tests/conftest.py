"""Shared test helpers: run the real CLI in a subprocess, find run folders."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def cli_env(toy: bool = False, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUADRUN_")}
    env.setdefault("OMP_NUM_THREADS", "1")
    if toy:
        env["QUADRUN_EXPERIMENTS"] = "toy=plugins.toy"
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
