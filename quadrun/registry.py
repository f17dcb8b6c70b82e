"""Experiment name -> the module that is its entry point (a package or one module).

An experiment is a small package, `quadrun/experiments/<name>/`, read top to bottom as its
paper's protocol:

    __init__.py   the paper and the protocol (docstring); the entry point below, torch-free
    config.py     Config (its section: the one home of its defaults, which are the cpu
                  scale; each training in it has its own TrainConfig), check(cfg), VARIANTS,
                  POOL and the protocol's constants; torch-free
    claims.py     the claims, declared once (quadrun.claims.Claim), and
                  claims(records, c): the evidence from records, decided; torch-free
    lab.py        cells(c) and measure(c, cell, ctx): the models, learners, targets and
                  evaluation the paper needs; imports torch at the top
    plots.py      figures(records, c, save): drawn from records (matplotlib); not named
                  figures.py, which would shadow the entry point's figures() once imported

The entry point (the package's __init__, or a one-module experiment such as
tests/plugins/toy.py) has:

    Config                        a dataclass: the experiment's config section
    cells(c) -> list[dict]        the grid it measures; a cell's fields are its stable key
    measure(c, cell, ctx) -> dict one cell's measured values (the record is cell + these)
    claims(records, c) -> list    its paper's claims, decided (quadrun.claims.decide)
  optional:
    summarize(records, c) -> dict derived results for summary.json (may set "status")
    figures(records, c, save)     its figures; save(fig, name)
    check(cfg)                    checks of the whole config before anything is created
    memory(c) -> (bytes, key, what)  the largest cell's memory, estimated from the config
                                  alone: a config that cannot fit where it will run is
                                  refused before anything is created (memory_check=false
                                  lets an expert go on)
    VARIANTS = (Variants, ...)    quadrun.schema.Variants: the keys each strategy, learner,
                                  arch... reads; an unread override is reported before the
                                  run and is left out of the fingerprint and the grouping
    HEADLINE = ("key", ...)       summary keys shown on a sweep job's line and in --runs
    POOL = ("key", ...)           section keys whose sweeps extend one study: the report
                                  pools their jobs' records before deciding the claims

`c` is the experiment's Config with the run's values; `ctx` is the run's
quadrun.artifacts.RunContext (device, seed, stop checks, shared objects, saved models).
The runner owns the loop over cells (stop checks, resume, progress) and decides the claims
once; quadrun-report renders them. The entry point must import without torch (the CLI
validates configs without it): a package's __init__ calls into lab.py and plots.py
from inside its functions.

Helpers that are not about the paper live beside what they serve: models in quadrun/nn/,
data and targets in quadrun/data/, solvers in quadrun/solvers/, statistics in
quadrun/stats.py.

To add an experiment: copy a package in quadrun/experiments/ and add its line here; the
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
