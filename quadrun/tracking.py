"""Experiment trackers beside the run folder: `logger=tensorboard` and `logger=mlflow`.

The run folder stays the record of a run; a tracker gets a copy as it is written:

- tensorboard: every logged number as a scalar, under <run>/tensorboard/.
- mlflow: the resolved config as params, every logged number as a metric, the summary's
  numbers and the status, the claims' verdicts as tags, and summary.json, report/ and
  its figures) as artifacts. By default into an embedded store under ./outputs/mlruns (a SQLite
  file and an artifact folder; nothing to start: `mlflow ui --backend-store-uri
  sqlite:///outputs/mlruns/mlflow.db` shows it), or the server in MLFLOW_TRACKING_URI.
  A resumed run continues the same MLflow run (its id is kept in meta.json).

Each needs its extra: `pip install 'quadrun[tensorboard]'` or `'quadrun[mlflow]'`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def _numbers(row: dict) -> dict:
    return {k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
            and abs(v) != float("inf")}


class TensorBoard:
    def __init__(self, run_dir: Path, cfg, meta: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, step: int, row: dict) -> None:
        for key, value in _numbers(row).items():
            if key != "step":
                self.writer.add_scalar(key, value, step)

    def finish(self, status: str, summary: dict) -> None:
        self.writer.flush()

    def close(self, run_dir: Path) -> None:
        self.writer.close()


def default_mlflow_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{(Path.cwd() / 'outputs' / 'mlruns' / 'mlflow.db').resolve()}"


class MLflow:
    def __init__(self, run_dir: Path, cfg, meta: dict):
        import mlflow
        from omegaconf import OmegaConf

        self.mlflow = mlflow
        uri = default_mlflow_uri()
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(uri)
        name = f"quadrun/{cfg.experiment}"
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            artifacts = None
            if uri.startswith("sqlite:///"):
                artifacts = (Path(uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
            exp_id = mlflow.create_experiment(name, artifact_location=artifacts)
        else:
            exp_id = exp.experiment_id
        run_id: Optional[str] = meta.get("mlflow_run_id")
        run = mlflow.start_run(run_id=run_id, experiment_id=None if run_id else exp_id,
                               run_name=Path(run_dir).name)
        meta["mlflow_run_id"] = run.info.run_id
        if not run_id:
            plain = OmegaConf.to_container(cfg, resolve=True)
            params = {k: str(v)[:500] for k, v in _flatten(plain).items() if v is not None}
            mlflow.log_params(params)
            mlflow.set_tags({"quadrun.run_dir": str(Path(run_dir).resolve()),
                             "quadrun.experiment": cfg.experiment})

    def log(self, step: int, row: dict) -> None:
        metrics = {k.replace(":", "_"): v for k, v in _numbers(row).items() if k != "step"}
        if metrics:
            self.mlflow.log_metrics(metrics, step=step)

    def finish(self, status: str, summary: dict) -> None:
        self.mlflow.set_tag("quadrun.status", status)
        numbers = _numbers({f"summary/{k}": v for k, v in summary.items()})
        if numbers:
            self.mlflow.log_metrics(numbers)
        for c in summary.get("claims") or []:
            self.mlflow.set_tag(f"claim.{c['id']}", c["verdict"])

    def close(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        for name in ("summary.json", "meta.json", "config.yaml"):
            if (run_dir / name).exists():
                self.mlflow.log_artifact(str(run_dir / name))
        report = run_dir / "report"
        if report.is_dir() and any(report.iterdir()):
            self.mlflow.log_artifacts(str(report), artifact_path="report")
        self.mlflow.end_run()


def _flatten(node, prefix: str = "") -> dict:
    out = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = node
    return out


TRACKERS = {"tensorboard": TensorBoard, "mlflow": MLflow}
