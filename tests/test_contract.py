"""The contract every registered experiment keeps, run through the real CLI at scale=smoke:
exit 0, records, unique claim ids each with a verdict and the scale, figures, and a
finished run that is not measured again. Test-only experiments (conftest.PLUGINS) are
picked up with no other change."""
from __future__ import annotations

import json

import pytest

from conftest import PLUGINS, run_cli, run_folders, summary
from quadrun import registry, vocab

EXPERIMENTS = sorted(registry.EXPERIMENTS) + sorted(PLUGINS)


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_keeps_the_contract(name, tmp_path):
    toy = name in PLUGINS
    done = run_cli(f"experiment={name}", "scale=smoke", "threads=1", cwd=tmp_path, toy=toy)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = run_folders(tmp_path, name)
    s = summary(folder)
    assert s["status"] in ("completed", "diverged")
    assert s["records"] and all(isinstance(r, dict) for r in s["records"])
    assert s["record_keys"] and all(k in s["records"][0] for k in s["record_keys"][:1])
    ids = [c["id"] for c in s["claims"]]
    assert ids and len(ids) == len(set(ids))
    for c in s["claims"]:
        assert c["verdict"] in vocab.VERDICTS
        assert c["scale"] == "smoke" and c["device"] == "cpu"
        assert c["statement"] and c["target"] and c["why"]
    module = __import__(PLUGINS.get(name) or registry.EXPERIMENTS[name], fromlist=["x"])
    if hasattr(module, "figures"):
        assert list((folder / vocab.REPORT).glob("*.png")), "no figures in report/"
    # the stored claims are what the run's report shows
    shown = json.loads((folder / vocab.REPORT / "claims.json").read_text())
    assert [c["verdict"] for c in shown] == [c["verdict"] for c in s["claims"]]

    # resuming a finished run changes no file and says so
    before = _snapshot(folder)
    again = run_cli(f"resume={folder}", cwd=tmp_path, toy=toy)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "nothing to resume" in again.stderr
    assert _snapshot(folder) == before


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_the_entry_points_functions_stay_functions(name):
    """Importing a package's submodules (as its functions do) never rebinds its entry
    points: a submodule named like a function (figures.py beside figures()) would."""
    import importlib
    import pkgutil

    module = importlib.import_module(PLUGINS.get(name) or registry.EXPERIMENTS[name])
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        importlib.import_module(f"{module.__name__}.{info.name}")
    for fn in ("cells", "measure", "claims", "summarize", "figures", "check", "memory"):
        if hasattr(module, fn):
            assert callable(getattr(module, fn)), f"{name}.{fn} is {getattr(module, fn)!r}"
