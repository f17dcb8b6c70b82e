"""Reading a run folder's bookkeeping files, torch-free (the CLI's resume checks, the
report and the run context share it). A file that is not what quadrun wrote is damaged:
one line names it and how to recover."""
from __future__ import annotations

import json
from pathlib import Path

from quadrun import vocab
from quadrun.errors import CheckpointError


def read_json_dict(path: Path) -> dict:
    """A JSON object from a bookkeeping file; {} when the file is missing. A file that is
    not a JSON object is damaged: CheckpointError names it and how to recover."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        value = exc
    if not isinstance(value, dict):
        raise CheckpointError(damaged(path))
    return value


def damaged(path: Path) -> str:
    """One line: the bookkeeping file is damaged, and how to recover."""
    path = Path(path)
    how = {vocab.STAGES: "move it aside to measure every cell again (checkpoints are kept)",
           vocab.META: "move it aside (it holds provenance only) and run again",
           vocab.SUMMARY: "move it aside and resume the run to write it again",
           "overrides.yaml": "restore the run's overrides there (a YAML list, as in "
                             "config.yaml) or start a new run"}.get(path.name, "move it aside")
    return f"{path}: damaged (not what quadrun wrote); {how}"


def read_overrides(path: Path) -> list:
    """.hydra/overrides.yaml: a YAML list of override strings (CheckpointError if not)."""
    import yaml

    try:
        value = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        value = None
    if not isinstance(value, list) or not all(isinstance(o, str) for o in value):
        raise CheckpointError(damaged(path))
    return value
