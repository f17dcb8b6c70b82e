"""Typed config schemas, registered in Hydra's ConfigStore, and the range checks.

Types and unknown keys are checked by OmegaConf while Hydra composes the config (the
root schema below is the first entry of `configs/config.yaml`'s defaults list). Ranges and
choices live in each field's metadata, written with `spec(...)`, and are checked by
`validate(cfg)`, which names the full key and what is allowed in one line.
"""
from __future__ import annotations

import copy
import math
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, make_dataclass
from typing import Any, List, Optional, Union, get_args, get_origin

from omegaconf import DictConfig, ListConfig, OmegaConf

from quadrun.errors import ConfigError

SCALES = ("smoke", "cpu", "paper", "gpu")   # gpu: an experiment's one-GPU size, where it has one


def config_dir() -> str:
    """configs/ as shipped in the wheel (quadrun.configs), or the source checkout's."""
    from importlib import resources
    from pathlib import Path

    try:
        path = Path(str(resources.files("quadrun.configs")))
        if (path / "config.yaml").exists():
            return str(path)
    except (ModuleNotFoundError, TypeError):
        pass
    return str(Path(__file__).resolve().parent.parent / "configs")
DEFAULT_EXPERIMENT = "relinear"     # the main job: `quadrun` with no overrides


def spec(default: Any = MISSING, *, ge=None, gt=None, le=None, lt=None, choices=None,
         nonempty: bool = False, help: str = "") -> Any:
    """A dataclass field with its allowed range. Bounds apply to every number in a list;
    `nonempty` refuses an empty list."""
    meta = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt, choices=choices, help=help,
                                  nonempty=nonempty or None).items()
            if v is not None and v != ""}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """The one training loop's settings (quadrun.training.fit). Each training of an
    experiment has its own, inside the experiment's section (e.g. `relinear.train`), with
    the experiment's defaults: `train: TrainConfig = train_config(optimizer="adam", ...)`."""
    epochs: int = spec(10, ge=1, le=1_000_000)
    batch_size: int = spec(128, ge=1, le=1_048_576)
    optimizer: str = spec("sgd", choices=["sgd", "adam", "adamw"])
    lr: float = spec(0.1, gt=0, le=10)
    momentum: float = spec(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = spec(0.0, ge=0, le=1)
    schedule: str = spec("multistep", choices=["none", "multistep", "cosine"])
    milestones: List[int] = spec([], ge=1, le=1_000_000, help="epochs at which the lr is multiplied by lr_decay")
    lr_decay: float = spec(0.1, gt=0, le=1)
    grad_clip: float = spec(0.0, ge=0, le=1e6, help="max gradient norm; 0 turns clipping off")
    eval_every: int = spec(1, ge=1, le=1_000_000, help="epochs between evaluations")
    log_every: int = spec(50, ge=1, le=10**9, help="steps between logged points")
    checkpoint_every: int = spec(0, ge=0, le=10**9, help="steps between checkpoints; 0: each epoch end")


def train_config(**defaults) -> Any:
    """A TrainConfig field of an experiment's Config, with that training's own defaults."""
    unknown = set(defaults) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise TypeError(f"train_config: unknown TrainConfig fields {sorted(unknown)}")
    return field(default_factory=lambda: TrainConfig(**copy.deepcopy(defaults)))


@dataclass
class SweepConfig:
    """How the jobs of a sweep behave (quadrun/sweeps.py); none of it defines a result."""
    retries: int = spec(0, ge=0, le=100, help="times a failed job is run again when the sweep "
                                              "is launched again")
    fail_fast: bool = spec(False, help="after the first failed job, start no more")
    jobs_per_device: int = spec(0, ge=0, le=64, help="jobs at once per GPU (CPU: processes "
                                                     "sharing the cores); 0: no packing")
    objective: Optional[str] = spec(None, help="summary key a search sweeper (optuna) "
                                               "optimises, e.g. test/acc")
    max_jobs: int = spec(2000, ge=1, le=10**7, help="a sweep of more jobs is refused before "
                                                    "anything starts")


@dataclass
class BaseConfig:
    experiment: str = DEFAULT_EXPERIMENT
    scale: str = spec("cpu", choices=list(SCALES))
    seed: int = spec(0, ge=0, lt=2**31)
    device: str = spec("auto", choices=["auto", "cpu", "cuda"])
    precision: str = spec("fp32", choices=["fp32", "bf16"],
                          help="bf16 autocast, used on CUDA only")
    compile: bool = False
    cuda_graphs: bool = True
    deterministic: bool = False
    threads: int = spec(0, ge=0, le=1024, help="torch CPU threads; 0: the free cores (the "
                                               "cores minus the machine's load, at least 1)")
    logger: str = spec("none", choices=["none", "tensorboard", "mlflow"],
                       help="a tracker beside the run folder (quadrun/tracking.py)")
    resume: Optional[str] = None
    data_dir: str = "data"
    memory_check: bool = spec(True, help="refuse, before anything is created, a config whose "
                                         "largest cell needs more memory than is free "
                                         "(false: an expert goes on anyway)")
    sweep: SweepConfig = field(default_factory=SweepConfig)


def root_schema(experiments: dict) -> type:
    """The root config class: BaseConfig plus one optional section per experiment."""
    extra = [(name, Optional[mod.Config], None) for name, mod in experiments.items()]
    return make_dataclass("QuadrunConfig", extra, bases=(BaseConfig,))


def register(experiments: dict) -> type:
    """The root schema, and one `experiment=<name>` and `scale=<name>` option for each
    experiment and scale (so an experiment needs no YAML file)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    schema = root_schema(experiments)
    store.store(name="quadrun_schema", node=schema)
    for name in experiments:
        store.store(group="experiment", name=name, package="_global_",
                    node={"experiment": name, name: {}})
    if DEFAULT_EXPERIMENT in experiments:   # configs/config.yaml's `experiment: default`
        store.store(group="experiment", name="default", package="_global_",
                    node={"experiment": DEFAULT_EXPERIMENT, DEFAULT_EXPERIMENT: {}})
    for name in SCALES:
        store.store(group="scale", name=name, package="_global_", node={"scale": name})
    from hydra.core.plugins import Plugins

    # Hydra finds plugins by listing the hydra_plugins namespace, which an editable install
    # (PEP 660) hides: register the sweeper by hand, as Hydra's Plugins.register allows,
    # after Hydra's own scan (which re-imports the basic sweeper it subclasses)
    plugins = Plugins.instance()
    from hydra_plugins.quadrun_sweeper import QuadrunSweeper

    plugins.register(QuadrunSweeper)
    store.store(group="hydra/sweeper", name="quadrun", provider="quadrun",
                node={"_target_": "hydra_plugins.quadrun_sweeper.QuadrunSweeper", "max_batch_size": None,
                      "params": None, "grids": None})
    return schema


def _dataclass_of(tp):
    if is_dataclass(tp):
        return tp
    if get_origin(tp) is Union:
        for arg in get_args(tp):
            if is_dataclass(arg):
                return arg
    return None


def _numbers(value):
    if isinstance(value, (list, tuple, ListConfig)):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def _check_field(key: str, value: Any, meta: dict) -> None:
    if meta.get("nonempty") and isinstance(value, (list, ListConfig)) and len(value) == 0:
        raise ConfigError(f"{key}: empty; give at least one value")
    choices = meta.get("choices")
    if choices is not None and value is not None:
        values = value if isinstance(value, (list, ListConfig)) else [value]
        for v in values:
            if v not in choices:
                raise ConfigError(f"{key}: {v!r} is not allowed; must be one of: "
                                  + ", ".join(map(str, choices)))
    for v in _numbers(value):
        if isinstance(v, float) and math.isnan(v):
            raise ConfigError(f"{key}: NaN is not allowed; give a number")
        if isinstance(v, int) and not -2**63 <= v < 2**63:
            raise ConfigError(f"{key}: {v} is out of range; must fit in a 64-bit integer")
        if isinstance(v, float) and math.isinf(v):
            raise ConfigError(f"{key}: {v} is not allowed; give a finite number")
        bounds = [("ge", ">=", lambda a, b: a >= b), ("gt", ">", lambda a, b: a > b),
                  ("le", "<=", lambda a, b: a <= b), ("lt", "<", lambda a, b: a < b)]
        for name, sym, ok in bounds:
            if name in meta and not ok(v, meta[name]):
                allowed = " and ".join(f"{s} {meta[n]}" for n, s, _ in bounds if n in meta)
                raise ConfigError(f"{key}: {v} is out of range; must be {allowed}")


def all_keys(cls: type, prefix: str = "") -> list:
    """Every dotted key of a config dataclass, nested sections included."""
    out = []
    for f in fields(cls):
        out.append(prefix + f.name)
        sub = _dataclass_of(f.type) if not isinstance(f.type, str) else None
        if sub is None and isinstance(f.type, str) and f.default_factory is not MISSING:
            value = f.default_factory()
            sub = type(value) if is_dataclass(value) else None
        if sub is not None:
            out += all_keys(sub, prefix + f.name + ".")
    return out


def unknown_key(key: str, experiments: dict, experiment: Optional[str] = None) -> str:
    """`key: unknown key; did you mean ...? allowed here: ...` for a dotted key: the valid
    keys of its section, the closest matches to what was typed first."""
    import difflib

    root = root_schema(experiments)
    known = all_keys(BaseConfig)
    for name, mod in experiments.items():
        known += [name] + all_keys(mod.Config, name + ".")
    parent, _, leaf = key.rpartition(".")
    while parent and parent not in known:           # the nearest section that exists
        parent = parent.rpartition(".")[0]
    leaf = key[len(parent) + 1:] if parent else key
    section = sorted(k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == parent
                     and (parent or k not in experiments or k == experiment)) \
        or sorted(f.name for f in fields(root))

    def score(candidate: str) -> float:
        # "train.epoch" is close to "relinear.train.epochs": compare without the section too
        tails = [candidate] + [candidate.split(".", i)[-1] for i in range(1, candidate.count(".") + 1)]
        return max(difflib.SequenceMatcher(None, key, t).ratio() for t in tails)

    pool = [k for k in known if (experiment is None or k.split(".")[0] not in experiments
                                 or k.split(".")[0] == experiment)
            and not key.startswith(k + ".")]
    close = sorted((k for k in pool if score(k) >= 0.75), key=lambda k: (-score(k), k))[:3]
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    near = difflib.get_close_matches(leaf, section, n=len(section), cutoff=0.0)
    return f"{key}: unknown key; {hint}allowed {'in ' + parent if parent else 'here'}: " + \
        ", ".join(near)


def _walk(node: DictConfig, cls: type, prefix: str, experiments: dict) -> None:
    known = {f.name for f in fields(cls)}
    for key in node.keys():
        if key not in known and not (prefix == "" and key == "hydra"):
            raise ConfigError(unknown_key(f"{prefix}{key}", experiments, node.get("experiment")
                                          if prefix == "" else prefix.split(".")[0]))
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        value = node.get(f.name)
        if isinstance(value, str) and f.type in ("str", str) and value.strip() == "" \
                and f.metadata.get("choices") is None and f.name not in ("resume",):
            raise ConfigError(f"{key}: must not be empty")
        _check_field(key, value, f.metadata)
        sub = _dataclass_of(f.type) if not isinstance(f.type, str) else None
        if sub is None and isinstance(value, DictConfig):
            sub = OmegaConf.get_type(value)
            sub = sub if is_dataclass(sub) else None
        if sub is not None and isinstance(value, DictConfig):
            _walk(value, sub, key + ".", experiments)


def validate(cfg: DictConfig, experiments: dict) -> None:
    """Raise ConfigError for the first value out of range, or a missing experiment section."""
    name = cfg.get("experiment")
    if name not in experiments:
        raise ConfigError(f"experiment: unknown {name!r}; must be one of: "
                          + ", ".join(sorted(experiments)))
    if cfg.get(name) is None:
        raise ConfigError(f"{name}: section missing; the experiment={name} option sets it "
                          "(quadrun.schema.register)")
    try:
        OmegaConf.resolve(copy.deepcopy(cfg))
    except Exception as exc:  # an interpolation that does not resolve
        raise ConfigError(f"{getattr(exc, 'full_key', '') or 'config'}: "
                          f"{str(exc).splitlines()[0]}") from None
    _walk(cfg, root_schema(experiments), "", experiments)
    if cfg.get("scale") == "gpu":
        from pathlib import Path

        sizes = [p.parent.name for p in Path(config_dir(), "sizes").glob("*/gpu.yaml")]
        if name not in sizes:
            raise ConfigError(f"scale: {name} has no gpu scale (configs/sizes/{name}/gpu.yaml); "
                              f"experiments with one: {', '.join(sorted(sizes)) or 'none'}")
    if cfg.get("device") == "cuda":
        import torch  # only for device=cuda: is there one?

        if not torch.cuda.is_available():
            raise ConfigError("device: cuda asked for, but no CUDA device is visible here; "
                              "use device=auto (CUDA when present) or device=cpu")
    logger = cfg.get("logger", "none")
    if logger != "none":
        import importlib.util

        if importlib.util.find_spec(logger) is None:
            raise ConfigError(f"logger: {logger!r} needs its package; "
                              f"pip install 'quadrun[{logger}]' (or use logger=none)")
    check = getattr(experiments[name], "check", None)
    if callable(check):  # experiment-specific checks, e.g. that a dataset folder exists
        check(cfg)
    if cfg.get("memory_check", True):
        check_memory(experiments[name], cfg)


def available_memory(device: str) -> tuple:
    """(bytes free, where) for a run on `device`: the GPU's free memory when the run will be
    on one (nvidia-smi; no torch needed), else the host's available memory."""
    import shutil
    import subprocess

    if device in ("auto", "cuda") and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,"
                                  "nounits"], capture_output=True, text=True, timeout=10)
            free = [int(v) for v in out.stdout.split() if v.strip().isdigit()]
            if out.returncode == 0 and free:
                return free[0] * 2 ** 20, "the GPU"
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    try:
        with open("/proc/meminfo") as fh:
            info = dict(line.split(":", 1) for line in fh)
        return int(info["MemAvailable"].split()[0]) * 1024, "this machine"
    except (OSError, KeyError, ValueError):
        return None, "this machine"


def check_memory(module, cfg) -> None:
    """The experiment's estimate of its largest cell (`memory(c) -> (bytes, key, what)`,
    optional in the entry point) against the memory free where it will run."""
    estimate = getattr(module, "memory", None)
    if not callable(estimate):
        return
    c = OmegaConf.to_object(cfg[cfg.experiment])
    need, key, what = estimate(c)
    free, where = available_memory(cfg.get("device", "auto"))
    if free is None or need <= 0.8 * free:
        return
    raise ConfigError(f"{key}: the largest cell needs about {need / 2 ** 30:.3g} GB ({what}), "
                      f"and {free / 2 ** 30:.3g} GB is free on {where}; use smaller values, or "
                      "add memory_check=false to go on anyway")


# -- variants: which keys each strategy, learner, arch... reads ---------------------------------
@dataclass(frozen=True)
class Variants:
    """One table of an experiment's variants and the section keys each of them reads.

        Variants("strategy", {"conventional": (), "plain": (),
                              "relinear_sg": ("gamma",), "relinear_sw": ("alpha", "beta")})

    `selector` is the section key that chooses (a value or a list of values), or a function
    of the section (the experiment's Config) returning the chosen names. A key listed under
    some variant is read only when one of its variants is chosen; keys listed nowhere are
    always read. Keys are relative to the section; a key names a value or a whole
    sub-section ("joint" covers joint.width1, joint.train.lr, ...). An unread key is
    reported before the run starts and left out of the fingerprint and the report's
    grouping, so a sweep over it is one study."""
    selector: object
    reads: dict
    name: str = ""

    def chosen(self, section) -> set:
        if callable(self.selector):
            value = self.selector(section)
        else:
            value = section
            for part in str(self.selector).split("."):
                value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
        if isinstance(value, (list, tuple, set, ListConfig)):
            return {str(v) for v in value}
        return {str(value)} if value is not None else set()

    def label(self) -> str:
        return self.name or str(self.selector)


def _plain_section(section):
    if isinstance(section, DictConfig):
        return OmegaConf.to_container(section, resolve=True)
    if is_dataclass(section):
        return OmegaConf.to_container(OmegaConf.structured(section), resolve=True)
    return section


def unread_keys(module, section) -> dict:
    """{key relative to the section: one line saying why it is not read} for the section
    of `module` (an experiment) with these values; {} when the experiment has no VARIANTS
    or the section is missing."""
    tables = getattr(module, "VARIANTS", ())
    if not tables or section is None:
        return {}
    plain = _plain_section(section)
    owners: dict = {}
    for table in tables:
        chosen = table.chosen(plain)
        for variant, keys in table.reads.items():
            for key in keys:
                owners.setdefault(key, []).append((table, variant, variant in chosen))
    out = {}
    for key, uses in owners.items():
        if any(read for _, _, read in uses):
            continue
        table = uses[0][0]
        readers = ", ".join(v for _, v, _ in uses)
        now = ", ".join(sorted(table.chosen(plain))) or "none"
        out[key] = f"not read by {table.label()}={now} (read by {readers})"
    return out


def drop_keys(plain: dict, keys) -> dict:
    """A copy of a plain nested dict without the dotted `keys`."""
    out = copy.deepcopy(plain)
    for key in keys:
        node, parts = out, key.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return out


def is_unread(override_key: str, experiment: str, unread: dict) -> bool:
    """Whether an override's key (e.g. relinear.gamma, relinear.joint.train.lr) falls under
    one of the experiment's unread keys."""
    key = override_key.lstrip("+~").split("=", 1)[0]
    if not key.startswith(experiment + "."):
        return False
    rel = key[len(experiment) + 1:]
    return any(rel == k or rel.startswith(k + ".") for k in unread)
