"""Experiment name -> module. Each module defines `Config` (a dataclass: its config
section's schema) and `run(cfg, ctx) -> dict` (the summary); optionally `check(cfg)`.

To add an experiment: copy a module in quadrun/experiments/, add its line here, and add
configs/experiment/<name>.yaml plus configs/sizes/<name>/{smoke,cpu,paper}.yaml.
Experiments kept outside the package can be added with the environment variable
QUADRUN_EXPERIMENTS="name=package.module,other=pkg.mod".
"""
from __future__ import annotations

import importlib
import os

EXPERIMENTS = {
    "expressivity": "quadrun.experiments.expressivity",
    "relinear": "quadrun.experiments.relinear",
    "hierpoly": "quadrun.experiments.hierpoly",
    "pde": "quadrun.experiments.pde",
    "dcdm": "quadrun.experiments.dcdm",
}


def names() -> dict:
    table = dict(EXPERIMENTS)
    for item in filter(None, os.environ.get("QUADRUN_EXPERIMENTS", "").split(",")):
        name, _, module = item.partition("=")
        table[name.strip()] = module.strip()
    return table


def load_all() -> dict:
    """name -> imported module, for every experiment."""
    return {name: importlib.import_module(module) for name, module in names().items()}
