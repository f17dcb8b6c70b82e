"""dcdm experiment (being written)."""
from dataclasses import dataclass


@dataclass
class Config:
    pass


def run(cfg, ctx) -> dict:
    raise RuntimeError("the dcdm experiment is not written yet")
