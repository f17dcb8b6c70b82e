"""What a result is reused against, torch-free: the config that defines it and the code
that made it.

- `result_config(cfg)` / `config_fingerprint(cfg)`: the config without the keys that do not
  define a result (quadrun.vocab) and without the keys the experiment's chosen variants do
  not read (quadrun.schema.unread_keys). A run resumes on another device, with CUDA graphs
  off, or with a value its variant ignores.
- `code_identity()`: quadrun's version, a hash of the package's source (every .py file of
  the quadrun package and every shipped config), the git commit and whether the tree was
  dirty. A finished cell (stages.json), a checkpoint and a sweep job are reused only
  against the same `code_fingerprint()` (version + source hash): a commit that changes
  only documentation leaves it, any change to the code that measures changes it. The git
  commit and the dirty flag are provenance (meta.json, the report).
- `installed_packages()`: every installed distribution's version, for meta.json.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import json
import subprocess
from pathlib import Path
from typing import Optional

PACKAGE = Path(__file__).resolve().parent


def result_config(cfg) -> dict:
    """The plain config that defines a run's results."""
    from omegaconf import DictConfig, OmegaConf

    from quadrun import registry, vocab
    from quadrun.schema import drop_keys, unread_keys

    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    plain.pop("hydra", None)
    plain = vocab.result_config(plain)
    name = plain.get("experiment")
    module_path = registry.names().get(name)
    if module_path and isinstance(plain.get(name), dict):
        unread = unread_keys(importlib.import_module(module_path), plain[name])
        plain[name] = drop_keys(plain[name], unread)
    return plain


def config_fingerprint(cfg) -> str:
    text = json.dumps(result_config(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _config_folder() -> Path:
    from quadrun.schema import config_dir

    return Path(config_dir())


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """sha256 (16 hex digits) of the package's .py files and shipped configs, by path."""
    h = hashlib.sha256()
    roots = [(PACKAGE, "*.py"), (_config_folder(), "*.yaml")]
    for root, pattern in roots:
        for path in sorted(root.rglob(pattern)):
            if "__pycache__" in path.parts:
                continue
            h.update(str(path.relative_to(root)).encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def git_state() -> tuple:
    """(commit, dirty) of the source checkout, (None, None) outside a git checkout."""
    src = PACKAGE.parent
    if not (src / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
        status = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "quadrun",
                                 "configs"], capture_output=True, text=True, timeout=5)
        return commit, bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None, None


def code_identity() -> dict:
    """{"version", "source", "commit", "dirty"} of the quadrun code in use (commit and dirty
    None outside a git checkout, e.g. an installed wheel)."""
    import quadrun

    commit, dirty = git_state()
    return {"version": quadrun.__version__, "source": source_hash(), "commit": commit,
            "dirty": dirty}


def code_fingerprint(identity: Optional[dict] = None) -> str:
    """What a result is reused against: the version and the source hash."""
    ident = identity or code_identity()
    return f"{ident.get('version')}+{ident.get('source')}"


@functools.lru_cache(maxsize=1)
def installed_packages() -> dict:
    """{distribution: version} of every installed distribution, sorted by name (read once
    per process; a wheel's `<name>-<version>.dist-info` folder name is enough, other installs
    have their metadata parsed)."""
    from importlib import metadata

    found = {}
    for dist in metadata.distributions():
        folder = getattr(dist, "_path", None)
        stem = getattr(folder, "name", "")
        stem = stem[:-len(".dist-info")] if stem.endswith(".dist-info") else ""
        if stem.count("-") == 1:
            name, version = stem.split("-")
        else:
            meta = dist.metadata
            name, version = (meta["Name"] if meta else None), dist.version
        if name:
            found.setdefault(str(name), str(version))
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))
