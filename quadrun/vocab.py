"""The words every part of quadrun agrees on, in one torch-free module.

- the names of the files in a run folder;
- the statuses a run can end with, and the verdicts a claim can get;
- the config keys that do not define a result (where and how a run ran, not what it
  measured): the config fingerprint, resume and `quadrun-report` all leave them out;
- `derive_seed(*parts)`, the one way to get the seed of a random stream.
"""
from __future__ import annotations

import hashlib

# -- the run folder ----------------------------------------------------------------------------
CONFIG = "config.yaml"          # the resolved config
META = "meta.json"              # versions, host, device, times, SLURM ids
METRICS = "metrics.jsonl"       # one JSON object per logged point
SUMMARY = "summary.json"        # records, claims, status; written last, atomically
STAGES = "stages.json"          # records of finished cells (a resumed run skips them)
ATTEMPTS = "attempts.jsonl"     # failed or interrupted attempts at a finished run
LOG = "quadrun.log"             # Hydra's job log
CHECKPOINTS = "checkpoints"     # last.pt, prev.pt, best.pt and named ones
REPORT = "report"               # claims, tables and figures (quadrun-report; a run writes its own)
OVERRIDES = ".hydra/overrides.yaml"

# -- outcomes -------------------------------------------------------------------------------------
STATUSES = ("completed", "diverged", "failed", "interrupted")
UNFINISHED = "running"          # a run folder without summary.json (running, or killed)
VERDICTS = ("holds", "fails", "inconclusive", "not_measured")

# -- keys that do not define a result -------------------------------------------------------------
# Top-level keys: where and how the run ran.
RUNTIME_KEYS = ("device", "precision", "compile", "cuda_graphs", "deterministic", "threads",
                "logger", "resume", "data_dir", "sweep", "memory_check")
# Keys of every training config (`<experiment>.train.*`, `<experiment>.<part>.train.*`):
# how often to log and checkpoint.
TRAIN_RUNTIME_KEYS = ("log_every", "checkpoint_every")
# Overrides that never split the groups of a report: the seed (runs of one group differ in
# it), the launch machinery, and the runtime keys above.
REPORT_IGNORED = ("seed", "experiment", "cluster", "hydra") + RUNTIME_KEYS


def defines_result(key: str) -> bool:
    """False for a dotted config key that only says where or how a run ran."""
    parts = key.lstrip("+~").split("=", 1)[0].split(".")
    if len(parts) == 1:
        return parts[0] not in RUNTIME_KEYS
    return not ("train" in parts[:-1] and parts[-1] in TRAIN_RUNTIME_KEYS)


def result_config(plain: dict, prefix: str = "") -> dict:
    """A plain (resolved) config with every key that does not define a result removed."""
    out = {}
    for key, value in plain.items():
        full = f"{prefix}{key}"
        if not defines_result(full):
            continue
        out[key] = result_config(value, full + ".") if isinstance(value, dict) else value
    return out


def derive_seed(*parts) -> int:
    """A stable 31-bit seed from names and numbers, e.g. derive_seed(seed, "test", d).

    The same parts give the same seed on every machine and Python version (numbers are
    written as text first, so 3, numpy's int64(3) and torch's are the same part)."""
    text = "\x1f".join(str(p.item() if hasattr(p, "item") else p) for p in parts)
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF
