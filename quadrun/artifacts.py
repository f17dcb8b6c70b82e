"""The run-folder writer: what a run writes into its folder goes through here (names:
quadrun.vocab); the report (quadrun-report) writes only under report/, and the
sweep machinery only its own dot-files in a sweep folder.

    <run>/config.yaml        resolved config
    <run>/meta.json          versions, host, device, times, SLURM ids
    <run>/metrics.jsonl      one JSON object per logged point: {"step": s, "train/loss": ...}
    <run>/summary.json       records, claims and `status`; written last, atomically
    <run>/checkpoints/       last.pt (and prev.pt, the one before), best.pt; atomic writes
    <run>/stages.json        records of finished cells (resume skips them)
    <run>/report/            the run's tables (quadrun-report, run at the end)
    <run>/quadrun.log        Hydra's job log
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import math
import os
import platform
import socket
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from quadrun import identity, vocab
from quadrun.runfolder import read_json_dict
from quadrun.errors import CheckpointError, Interrupted
from quadrun.vocab import STATUSES

log = logging.getLogger("quadrun")


def _load():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return _jsonable(value.item())  # numpy scalars
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync, then rename over `path`: readers see old or new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")


def save_checkpoint(path: Path, state: dict, keep_previous: bool = True) -> None:
    """Atomic checkpoint write; the previous `last.pt` is kept as `prev.pt` until the new
    one is complete, so a kill at any moment leaves at least one good checkpoint."""
    buf = io.BytesIO()
    torch.save(state, buf)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous and path.exists():
            os.replace(path, path.with_name("prev.pt"))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Load with weights_only=True (no code runs); CheckpointError names the file."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling refused, truncated zip, bad magic...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} cannot be loaded: {first[:300]}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is not a quadrun checkpoint")
    return state


class RunContext:
    """What an experiment sees of its run: folder, device, logging, checkpoints, plots."""

    def __init__(self, run_dir: Path, cfg: DictConfig, runtime):
        self.dir = Path(run_dir)
        self.cfg = cfg
        self.runtime = runtime           # quadrun.devices.Runtime: device, precision, seed...
        self.data_dir = Path(cfg.data_dir)
        self.stop_requested = False      # set by SIGTERM/INT/USR1/USR2; the loop checkpoints
        self.stop_signal = None
        self.label = ""                  # the cell being measured, e.g. "[2/12 d=8]"
        self.memo: dict = {}             # what cells of one run share in memory (models, data)
        self.fingerprint = identity.config_fingerprint(cfg)
        self.code = identity.code_identity()
        self.code_fingerprint = identity.code_fingerprint(self.code)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / vocab.CHECKPOINTS).mkdir(exist_ok=True)
        self._tracker = None             # logger=tensorboard | mlflow (quadrun.tracking)
        self._meta: dict = {}

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def threads(self) -> int:
        """The CPU threads this run uses (recorded in meta.json and in every record)."""
        return torch.get_num_threads()

    def shared(self, key, build: Callable[[], Any]) -> Any:
        """`build()` once per run for `key`; later cells get the same object."""
        if key not in self.memo:
            self.memo[key] = build()
        return self.memo[key]

    def latest(self, kind: str, key, build: Callable[[], Any]) -> Any:
        """Like `shared`, keeping only the newest key of one kind in memory (a scene, a
        target, a one-pass learner's results): cells that share an object are consecutive,
        so an older one is never needed again and its memory is freed."""
        held = self.memo.get(("latest", kind))
        if held is None or held[0] != key:
            self.memo.pop(("latest", kind), None)   # free the old one before building
            held = (key, build())
            self.memo[("latest", kind)] = held
        return held[1]

    def check_stop(self, where: str = "") -> None:
        """Raise Interrupted when a stop was requested (a signal): long loops outside the
        training loop call this between their steps. Finished cells are kept."""
        if self.stop_requested:
            raise Interrupted(f"stopped{' ' + where if where else ''}; finished cells are kept")

    # -- lifecycle (called by the runner) ----------------------------------------------
    def start(self) -> None:
        from quadrun import locks

        locks.hold(self.dir, "run")
        previous = read_json_dict(self.dir / vocab.META)
        atomic_write_text(self.dir / vocab.CONFIG, OmegaConf.to_yaml(self.cfg, resolve=True))
        self._meta = {
            "package": "quadrun", "version": self.code["version"], "code": self.code,
            "experiment": self.cfg.experiment, "scale": self.cfg.scale,
            "host": socket.gethostname(), "pid": os.getpid(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": str(self.device),
            "device_name": (torch.cuda.get_device_name(self.device)
                            if self.device.type == "cuda" else platform.processor() or "cpu"),
            "start": previous.get("start", _now()),
            "attempts": previous.get("attempts", 0) + 1,
            "failed_attempts": previous.get("failed_attempts", 0),
            "resumed_at": _now() if previous else None,
            "end": None,
            "slurm": {k: os.environ[k] for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID",
                                                 "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")
                      if k in os.environ} or None,
            "packages": identity.installed_packages(),
            "load": {"start": _load()},            # the machine's load average (estimates)
        }
        if previous.get("mlflow_run_id"):
            self._meta["mlflow_run_id"] = previous["mlflow_run_id"]
        if self.cfg.get("logger", "none") != "none":
            from quadrun.tracking import TRACKERS

            self._tracker = TRACKERS[self.cfg.logger](self.dir, self.cfg, self._meta)
        write_json(self.dir / vocab.META, self._meta)

    def finish(self, status: str, summary: dict) -> None:
        """Write the summary (last, atomically). A failed or interrupted attempt never
        replaces the summary of a finished (completed or diverged) run: it is appended to
        attempts.jsonl beside it."""
        assert status in STATUSES, status
        self._meta["end"] = _now()
        self._meta.setdefault("load", {})["end"] = _load()
        if status == "failed":
            self._meta["failed_attempts"] = self._meta.get("failed_attempts", 0) + 1
        out = {"status": status, "experiment": self.cfg.experiment, "scale": self.cfg.scale,
               "seed": self.cfg.seed, "code": self.code, **summary}
        if self._tracker is not None:
            self._tracker.finish(status, out)
        finished = read_json_dict(self.dir / vocab.SUMMARY).get("status") in ("completed", "diverged")
        try:
            write_json(self.dir / vocab.META, self._meta)
            if finished and status in ("failed", "interrupted"):
                with open(self.dir / vocab.ATTEMPTS, "a") as fh:
                    fh.write(json.dumps(_jsonable({**out, "end": self._meta["end"]})) + "\n")
                log.warning("this attempt %s; the finished run's summary.json is kept (the "
                            "attempt is in %s)", status, vocab.ATTEMPTS)
            else:
                write_json(self.dir / vocab.SUMMARY, out)  # last, atomic
        except OSError as exc:  # disk full: what was saved before stays as it was
            log.error("could not write summary.json: %s", exc)
            if status != "failed":
                raise

    def close(self) -> None:
        """After the summary and the report: the tracker gets its files, then ends; the
        folder's lock is released."""
        from quadrun import locks

        locks.release(self.dir)
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            try:
                tracker.close(self.dir)
            except Exception as exc:  # a tracker's failure never loses the run folder
                log.error("logger %s: could not close (%s)", self.cfg.logger, exc)

    # -- metrics -----------------------------------------------------------------------
    def log(self, step: int, metrics: dict) -> None:
        """Append one point to metrics.jsonl (and to the tracker, when one is on)."""
        row = {"step": int(step), **{k: _jsonable(v) for k, v in metrics.items()}}
        with open(self.dir / vocab.METRICS, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self._tracker is not None:
            self._tracker.log(int(step), row)

    def truncate_metrics(self, step: int, fit: str = "train") -> None:
        """Drop the points of training `fit` logged after `step` (redone after a resume);
        points of other fits (rows with another "fit" field; the main fit "train" writes
        none) are kept."""
        path = self.dir / vocab.METRICS
        if not path.exists():
            return
        lines = path.read_text().splitlines()
        keep = []
        for line in lines:
            try:
                row = json.loads(line)
                if row.get("fit", "train") != fit or row["step"] <= step:
                    keep.append(line)
            except (ValueError, KeyError, TypeError, AttributeError):
                break  # a line cut by a kill: it was the last one written
        if keep != lines:
            atomic_write_text(path, "".join(line + "\n" for line in keep))

    def metrics(self) -> list:
        path = self.dir / vocab.METRICS
        return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []

    # -- checkpoints -----------------------------------------------------------------------
    def checkpoint_path(self, name: str = "last") -> Path:
        return self.dir / vocab.CHECKPOINTS / f"{name}.pt"

    def save_checkpoint(self, state: dict, name: str = "last") -> None:
        state = {**state, "experiment": self.cfg.experiment, "fingerprint": self.fingerprint,
                 "code": self.code_fingerprint}
        save_checkpoint(self.checkpoint_path(name), state, keep_previous=(name == "last"))

    def save_model(self, name: str, model, **extra) -> None:
        """checkpoints/<name>.pt with the model's weights and `extra` (e.g. its training
        status), for a later cell of the same run (`load_model`)."""
        self.save_checkpoint({"model": model.state_dict(), **extra}, name)

    def load_model(self, name: str, model, made_by: str) -> dict:
        """Load checkpoints/<name>.pt, saved by `save_model` in this run, into `model`;
        return the rest of the saved state. CheckpointError (naming the file, the cell
        that makes it and what to do) when it is missing or belongs to another config."""
        path = self.checkpoint_path(name)
        if not path.exists():
            raise CheckpointError(f"{path} is missing: it is saved by the cell {made_by}; "
                                  "start a new run folder")
        state = load_checkpoint(path, self.device)
        if state.get("fingerprint") != self.fingerprint or "model" not in state:
            raise CheckpointError(f"{path} belongs to another config; start a new run folder")
        model.load_state_dict(state["model"])
        return {k: v for k, v in state.items() if k not in ("model", "fingerprint", "experiment")}

    def load_checkpoint(self, map_location="cpu") -> Optional[dict]:
        """The newest usable of last.pt / prev.pt, or None when there is none.

        A corrupt file is reported and skipped (never deleted); a checkpoint of another
        experiment or config is an error naming the file."""
        for name in ("last", "prev"):
            path = self.checkpoint_path(name)
            if not path.exists():
                continue
            try:
                state = load_checkpoint(path, map_location)
            except CheckpointError as exc:
                aside = path.with_name(f"{path.name}.corrupt-{_dt.datetime.now():%Y%m%d-%H%M%S}")
                os.replace(path, aside)  # kept for inspection, never overwritten
                log.error("%s; moved to %s; trying the previous checkpoint", exc, aside.name)
                continue
            if state.get("code") != self.code_fingerprint and \
                    state.get("experiment") == self.cfg.experiment and \
                    state.get("fingerprint") == self.fingerprint:
                log.warning("%s was written by other code (%s; this is %s): this training "
                            "starts over", path, state.get("code"), self.code_fingerprint)
                return None
            if state.get("experiment") != self.cfg.experiment or \
                    state.get("fingerprint") != self.fingerprint:
                raise CheckpointError(
                    f"checkpoint {path} belongs to another experiment or config "
                    f"({state.get('experiment')}, {state.get('fingerprint')}); "
                    f"this run is {self.cfg.experiment}, {self.fingerprint}. "
                    "Use a new run folder, or the same overrides as that run")
            return state
        if list((self.dir / vocab.CHECKPOINTS).glob("*.corrupt-*")):
            raise CheckpointError(f"no usable checkpoint in {self.dir / 'checkpoints'}: every "
                                  "one is corrupt (kept as *.corrupt-*); start a new run folder")
        return None

    # -- stages of multi-part experiments --------------------------------------------------------
    def _stages(self) -> dict:
        path = self.dir / vocab.STAGES
        saved = read_json_dict(path) if path.exists() else {}
        if saved and saved.get("fingerprint") != self.fingerprint:
            raise CheckpointError(f"{path} holds results of another config "
                                  f"({saved.get('fingerprint')}; this run is {self.fingerprint}). "
                                  "Use a new run folder, or the same overrides as that run")
        return saved

    def done_keys(self) -> set:
        """The cells measured before by this code (a resume skips them)."""
        saved = self._stages()
        code = saved.get("code", {})
        return {k for k in saved.get("stages", {}) if code.get(k) == self.code_fingerprint}

    def stale_stages(self, keys) -> list:
        """The finished cells among `keys` that other code measured (they are measured again)."""
        saved = self._stages()
        done, code = saved.get("stages", {}), saved.get("code", {})
        return [k for k in keys if k in done and code.get(k) != self.code_fingerprint]

    def stage(self, key: str, compute: Callable[[], Any]) -> Any:
        """Result of `compute()`, remembered in stages.json so a resumed run skips it.

        stages.json carries the config fingerprint (results of another config are never
        reused: an error names the file, which is left as it is) and each cell's code
        fingerprint (a cell measured by other code is measured again)."""
        saved = self._stages()
        done, code = saved.get("stages", {}), saved.get("code", {})
        if key in done and code.get(key) == self.code_fingerprint:
            return done[key]
        value = _jsonable(compute())
        saved = self._stages()                      # the file as it is now
        done, code = saved.get("stages", {}), saved.get("code", {})
        done[key], code[key] = value, self.code_fingerprint
        write_json(self.dir / vocab.STAGES, {"fingerprint": self.fingerprint, "stages": done,
                                             "code": code})
        return value
