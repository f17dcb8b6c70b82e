"""Experiment name -> module. An experiment module is science only:

    Config                        a dataclass: its config section, the one home of its
                                  defaults (each training in it has its own TrainConfig)
    cells(c) -> list[dict]        the grid it measures; a cell's fields are its stable key
    measure(c, cell, ctx) -> dict one cell's measured values (the record is cell + these)
    claims(records, c) -> list    its paper's claims, decided from records
                                  (quadrun.claims.claim)
  optional:
    summarize(records, c) -> dict derived results for summary.json (may set "status")
    figures(records, c, save)     experiment-specific figures; save(fig, name)
    check(cfg)                    checks of the whole config before anything is created
    POOL = ("key", ...)           section keys whose sweeps extend one study: the report
                                  pools their jobs' records before deciding the claims

`c` is the experiment's Config with the run's values. The runner owns the loop over cells
(stop checks, resume, progress); quadrun-report renders records and claims. The module
must import without torch (the CLI validates configs without it): import torch inside
the functions that use it.

To add an experiment: copy a module in quadrun/experiments/ and add its line here; the
`experiment=<name>` option exists without a YAML file. What a scale changes goes in
configs/sizes/<name>/<scale>.yaml, only where it changes something. Experiments kept
outside the package can be added with QUADRUN_EXPERIMENTS="name=package.module,...".
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
