"""Training-run configuration: one YAML file, validated at start with messages that name the bad key.

Every number must be finite (NaN and infinity are refused like any other value out of range), except
``divergence.max_loss``, which may be infinite (no threshold). Whether the device and the attention
backend exist on this machine is checked where the job starts (``dit.engine.check_runtime``).

A run trains one model size at one (batch size, learning rate) with a constant learning rate after
a linear warmup, and records the validation loss at every token milestone along the way, so one run
gives the loss at every training budget T in ``schedule.milestones_tokens``.

Example (every key, with its default where it has one)::

    run: {id: tiny-262k_b32_lr1e-3, series: grid}   # metadata copied to summary.json
    seed: 0
    device: auto          # auto | cpu | cuda
    precision: auto       # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    threads: null         # torch CPU threads (null: torch's default)
    model:
      size: tiny-262k     # a name from dit.sizes.SIZES
      patch: [2, 4, 4]    # tubelet (frames, height, width)
      attention: auto     # auto | xformers | sdpa | math
      text_width: null    # width of the caption token table (null: model width)
      caption_table: frozen  # frozen (fixed random vectors, a frozen text encoder's stand-in) | learned
      caption_dropout: 0.1  # probability of training on the null caption (classifier-free guidance)
    data:
      root: work/data/prepared   # output of `python -m dit.data prepare`
      frames: null        # frames the model takes (null: as stored; fewer: seeded temporal crop)
      latent: null        # a `python -m dit.latent fit` codec: diffuse in its latent space (null: pixels);
                          # model.patch then tiles the latent grid (e.g. [1, 1, 1])
    diffusion: {num_timesteps: 1000, beta_schedule: linear, beta_start: 1.0e-4, beta_end: 0.02,
                timestep_sampling: uniform}   # uniform | low_discrepancy (dit.diffusion.training_timesteps)
                          # 0 < beta_start <= beta_end < 1
    validation: {timesteps: 8, seed: 0, batch_clips: 64, max_clips: null, weights: ema}  # timesteps <= num_timesteps
    ema: {gamma: 6.94}    # power-function EMA of the weights (validation.weights: ema validates it)
    optimizer: {lr: 1.0e-3, betas: [0.9, 0.999], weight_decay: 0.0, eps: 1.0e-8, warmup_steps: 0, grad_clip: null}
    batch: {global_clips: 32, micro_clips: null}   # micro_clips null: global_clips / processes
    schedule: {milestones_tokens: [65536, 131072, 262144], total_tokens: null}  # total null: last milestone
    checkpoint: {every_steps: 100}
    divergence: {max_loss: 10.0}
    progress: {interval_seconds: 5.0, quiet: false}
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from dit.provenance import config_hash
from dit.sizes import SIZES

#: The ways a training clip's timestep can be drawn (``dit.diffusion.training_timesteps``).
TIMESTEP_SAMPLING = ("uniform", "low_discrepancy")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range; the message names the key."""


@dataclass
class RunSection:
    id: str = ""
    series: str = "grid"


@dataclass
class ModelSection:
    size: str = ""
    patch: tuple[int, int, int] = (2, 4, 4)
    attention: str = "auto"
    text_width: int | None = None
    caption_table: str = "frozen"
    caption_dropout: float = 0.1


@dataclass
class DataSection:
    root: str = ""
    frames: int | None = None
    latent: str | None = None


@dataclass
class DiffusionSection:
    num_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    #: How a training clip's timestep is drawn (``dit.diffusion.training_timesteps``): "uniform", independent
    #: uniform draws; "low_discrepancy", an additive golden-ratio sequence over the run's clips from a
    #: random start per seed (uniform over the run, each timestep's share even within any stretch of steps).
    timestep_sampling: str = "uniform"


@dataclass
class ValidationSection:
    timesteps: int = 8
    seed: int = 0
    batch_clips: int = 64
    max_clips: int | None = None
    weights: str = "ema"


@dataclass
class EmaSection:
    gamma: float = 6.94


@dataclass
class OptimizerSection:
    lr: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    warmup_steps: int = 0
    grad_clip: float | None = None


@dataclass
class BatchSection:
    global_clips: int = 0
    micro_clips: int | None = None


@dataclass
class ScheduleSection:
    milestones_tokens: list[int] = field(default_factory=list)
    total_tokens: int | None = None


@dataclass
class CheckpointSection:
    every_steps: int = 100


@dataclass
class DivergenceSection:
    max_loss: float = 10.0


@dataclass
class ProgressSection:
    interval_seconds: float = 5.0
    quiet: bool = False


@dataclass
class TrainConfig:
    """A validated training configuration (see the module docstring for every key)."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    batch: BatchSection = field(default_factory=BatchSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    run: RunSection = field(default_factory=RunSection)
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    diffusion: DiffusionSection = field(default_factory=DiffusionSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    ema: EmaSection = field(default_factory=EmaSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    divergence: DivergenceSection = field(default_factory=DivergenceSection)
    progress: ProgressSection = field(default_factory=ProgressSection)

    @property
    def total_tokens(self) -> int:
        """The run's training budget in video tokens."""
        return int(self.schedule.total_tokens or max(self.schedule.milestones_tokens))

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))

    def validate_world_size(self, world_size: int) -> int:
        """Check the batch split for ``world_size`` processes; return micro-batch clips per process."""
        global_clips = self.batch.global_clips
        if global_clips % world_size:
            raise ConfigError(
                f"batch.global_clips: {global_clips} clips cannot be split evenly over {world_size} processes"
            )
        per_process = global_clips // world_size
        micro = self.batch.micro_clips or per_process
        if per_process % micro:
            raise ConfigError(
                f"batch.micro_clips: {global_clips} clips over {world_size} processes is {per_process} per process, "
                f"which is not divisible by micro_clips={micro} (batch must be divisible by micro-batch x processes)"
            )
        return micro


#: Keys in which the members of one ensemble may differ; everything else they share (``ensemble_key``).
MEMBER_KEYS = ("run", "seed", "optimizer.lr", "progress")


def resumable_config_hash(config: TrainConfig) -> str:
    """Hash of everything that determines the run's numbers (progress display excluded)."""
    record = config.to_dict()
    record.pop("progress", None)
    return config_hash(record)


def ensemble_key(config: TrainConfig) -> dict[str, Any]:
    """The settings members of one ensemble must share: the config without ``MEMBER_KEYS``."""
    record = config.to_dict()
    for dotted in MEMBER_KEYS:
        section, _, key = dotted.partition(".")
        if key:
            record[section].pop(key, None)
        else:
            record.pop(section, None)
    return record


def check_ensemble(configs: list[TrainConfig]) -> None:
    """Raise ``ConfigError`` naming the first key in which two would-be members differ beyond ``MEMBER_KEYS``."""
    if not configs:
        raise ConfigError("members: an ensemble needs at least one member")
    reference = _flatten(ensemble_key(configs[0]))
    for position, config in enumerate(configs[1:], start=1):
        other = _flatten(ensemble_key(config))
        for key in sorted(set(reference) | set(other)):
            if reference.get(key) != other.get(key):
                raise ConfigError(
                    f"members[{position}].config.{key}: {other.get(key)!r} differs from members[0]'s "
                    f"{reference.get(key)!r}; members of one ensemble differ only in {', '.join(MEMBER_KEYS)}"
                )


def _flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_yaml_mapping(path: str | Path, what: str, error: type[Exception] = ConfigError) -> Mapping[str, Any]:
    """The mapping a YAML file holds (``yaml.safe_load``); ``error`` naming the file and ``what`` it should be otherwise."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as problem:
        raise error(f"cannot read {what} {path}: {problem.strerror or problem}") from None
    except yaml.YAMLError as problem:
        raise error(f"{what} {path} is not valid YAML: {problem}") from None
    if not isinstance(raw, Mapping):
        raise error(f"{what} {path} must hold a mapping of sections, got {type(raw).__name__}")
    return raw


def load_ensemble(path: str | Path) -> list[tuple[TrainConfig, Path]]:
    """Read an ensemble file: ``members: [{out: RUN_FOLDER, config: {...}}, ...]``, checked to be compatible."""
    path = Path(path)
    raw = read_yaml_mapping(path, "ensemble file")
    try:
        return ensemble_from_dict(raw)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def ensemble_from_dict(raw: Any) -> list[tuple[TrainConfig, Path]]:
    """Members of an ensemble from ``{"members": [{"out": RUN_FOLDER, "config": {...}}, ...]}``, checked."""
    members = raw.get("members") if isinstance(raw, Mapping) else None
    if not isinstance(members, list) or not members:
        raise ConfigError("members: expected a non-empty list of {out: RUN_FOLDER, config: {...}}")
    result = []
    for position, entry in enumerate(members):
        if not isinstance(entry, Mapping) or set(entry) != {"out", "config"}:
            raise ConfigError(f"members[{position}]: expected exactly the keys out and config")
        try:
            result.append((config_from_dict(entry["config"]), Path(entry["out"])))
        except ConfigError as error:
            raise ConfigError(f"members[{position}].config.{error}") from None
    outs = [str(out) for _, out in result]
    if len(set(outs)) != len(outs):
        raise ConfigError(f"members: two members share the run folder {sorted(o for o in outs if outs.count(o) > 1)[0]}")
    check_ensemble([config for config, _ in result])
    return result


REQUIRED_KEYS = ("model.size", "data.root", "optimizer.lr", "batch.global_clips", "schedule.milestones_tokens")


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a YAML training config (``yaml.safe_load``)."""
    return config_from_dict(read_yaml_mapping(path, "config file"))


def config_from_dict(raw: Mapping[str, Any]) -> TrainConfig:
    """Build and validate a ``TrainConfig`` from a plain mapping."""
    raw = copy.deepcopy(dict(raw))
    for dotted in REQUIRED_KEYS:
        section, key = dotted.split(".")
        if not isinstance(raw.get(section), Mapping) or key not in raw[section]:
            raise ConfigError(f"{dotted}: required key is missing")
    config = _build(TrainConfig, raw, prefix="")
    _check_values(config)
    return config


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key (known keys here: {', '.join(sorted(known))})"
        )
    values = {}
    for name, value in raw.items():
        spec = known[name]
        key = f"{prefix}{name}"
        default = spec.default_factory() if callable(spec.default_factory) else spec.default  # type: ignore[misc]
        if is_dataclass(default):
            values[name] = _build(type(default), value, prefix=f"{key}.")
        else:
            values[name] = _coerce(key, value, default)
    return cls(**values)


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Coerce a scalar/list to the type of its default; raise ``ConfigError`` naming ``key``."""
    if value is None:
        return None
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or len(value) != len(default):
                raise TypeError
            return tuple(type(d)(_number(v, type(d))) for v, d in zip(value, default))
        if isinstance(default, list):
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return [_number(v, int) for v in value]
        if isinstance(default, float):
            return float(_number(value, float))
        if isinstance(default, int):
            return _number(value, int)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError
            return value
        # defaults of None: int or float settings
        if key.endswith(("grad_clip",)):
            return float(_number(value, float))
        if key.endswith(".latent"):
            if not isinstance(value, str):
                raise TypeError
            return value
        return _number(value, int)
    except (TypeError, ValueError):
        expected = type(default).__name__ if default is not None else "number"
        if isinstance(default, tuple):
            expected = f"list of {len(default)} numbers"
        raise ConfigError(f"{key}: expected {expected}, got {value!r}") from None


def _number(value: Any, kind: type) -> Any:
    if isinstance(value, bool):
        raise TypeError
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            parsed = float(value)
            if not parsed.is_integer():
                raise ValueError
            return int(parsed)
        if not isinstance(value, int):
            raise TypeError
        return value
    if isinstance(value, str):
        return float(value)
    if not isinstance(value, (int, float)):
        raise TypeError
    return float(value)


def _fail(key: str, message: str) -> None:
    """Raise ``ConfigError`` for ``key``."""
    raise ConfigError(f"{key}: {message}")


def _check_values(config: TrainConfig) -> None:
    _check_model_and_data(config)
    _check_training(config)


def _check_model_and_data(config: TrainConfig) -> None:
    if config.model.size not in SIZES:
        _fail("model.size", f"unknown size {config.model.size!r}; known sizes: {', '.join(SIZES)}")
    if any(p <= 0 for p in config.model.patch):
        _fail("model.patch", f"patch sizes must be positive, got {list(config.model.patch)}")
    if config.model.attention not in ("auto", "xformers", "sdpa", "math"):
        _fail("model.attention", f"must be one of auto, xformers, sdpa, math; got {config.model.attention!r}")
    if config.model.text_width is not None and config.model.text_width <= 0:
        _fail("model.text_width", f"must be positive, got {config.model.text_width}")
    if config.model.caption_table not in ("frozen", "learned"):
        _fail("model.caption_table", f"must be frozen or learned; got {config.model.caption_table!r}")
    if not 0.0 <= config.model.caption_dropout < 1.0:
        _fail("model.caption_dropout", f"must be in [0, 1), got {config.model.caption_dropout}")
    if not config.data.root:
        _fail("data.root", "must name a prepared data folder")
    if config.data.frames is not None and config.data.frames <= 0:
        _fail("data.frames", f"must be positive, got {config.data.frames}")
    if config.device not in ("auto", "cpu", "cuda"):
        _fail("device", f"must be auto, cpu or cuda; got {config.device!r}")
    if config.precision not in ("auto", "fp32", "bf16"):
        _fail("precision", f"must be auto, fp32 or bf16; got {config.precision!r}")
    if config.threads is not None and config.threads <= 0:
        _fail("threads", f"must be positive or null, got {config.threads}")


def _check_training(config: TrainConfig) -> None:
    # NaN fails every comparison, so each check below is written to fail on it; infinities are refused too
    if not 0 < config.optimizer.lr < math.inf:
        _fail("optimizer.lr", f"learning rate must be positive and finite, got {config.optimizer.lr}")
    if not all(0.0 <= b < 1.0 for b in config.optimizer.betas):
        _fail("optimizer.betas", f"each beta must be in [0, 1), got {list(config.optimizer.betas)}")
    if not 0 <= config.optimizer.weight_decay < math.inf:
        _fail("optimizer.weight_decay", f"must be non-negative and finite, got {config.optimizer.weight_decay}")
    if not 0 < config.optimizer.eps < math.inf:
        _fail("optimizer.eps", f"must be positive and finite, got {config.optimizer.eps}")
    if config.optimizer.warmup_steps < 0:
        _fail("optimizer.warmup_steps", f"must be non-negative, got {config.optimizer.warmup_steps}")
    if config.optimizer.grad_clip is not None and not 0 < config.optimizer.grad_clip < math.inf:
        _fail("optimizer.grad_clip", f"must be positive and finite, or null; got {config.optimizer.grad_clip}")
    if config.batch.global_clips <= 0:
        _fail("batch.global_clips", f"must be positive, got {config.batch.global_clips}")
    if config.batch.micro_clips is not None:
        if config.batch.micro_clips <= 0:
            _fail("batch.micro_clips", f"must be positive, got {config.batch.micro_clips}")
        if config.batch.global_clips % config.batch.micro_clips:
            _fail(
                "batch.micro_clips",
                f"global batch {config.batch.global_clips} clips is not divisible by micro-batch "
                f"{config.batch.micro_clips} clips",
            )
    milestones = config.schedule.milestones_tokens
    if not milestones:
        _fail("schedule.milestones_tokens", "must list at least one token budget")
    if any(m <= 0 for m in milestones):
        _fail("schedule.milestones_tokens", f"token budgets must be positive, got {milestones}")
    if sorted(set(milestones)) != list(milestones):
        _fail("schedule.milestones_tokens", f"token budgets must be strictly increasing, got {milestones}")
    total = config.schedule.total_tokens
    if total is not None:
        if total <= 0:
            _fail("schedule.total_tokens", f"must be positive, got {total}")
        beyond = [m for m in milestones if m > total]
        if beyond:
            _fail("schedule.milestones_tokens", f"milestones {beyond} lie beyond the budget total_tokens={total}")
    if config.validation.batch_clips <= 0:
        _fail("validation.batch_clips", f"must be positive, got {config.validation.batch_clips}")
    if config.validation.max_clips is not None and config.validation.max_clips <= 0:
        _fail("validation.max_clips", f"must be positive or null, got {config.validation.max_clips}")
    if config.validation.weights not in ("ema", "raw"):
        _fail("validation.weights", f"must be ema or raw; got {config.validation.weights!r}")
    if not 0 < config.ema.gamma < math.inf:
        _fail("ema.gamma", f"must be positive and finite, got {config.ema.gamma}")
    if config.diffusion.num_timesteps <= 1:
        _fail("diffusion.num_timesteps", f"must exceed 1, got {config.diffusion.num_timesteps}")
    if not 0 < config.validation.timesteps <= config.diffusion.num_timesteps:
        _fail("validation.timesteps", f"must be positive and at most diffusion.num_timesteps="
              f"{config.diffusion.num_timesteps}, got {config.validation.timesteps}")
    diffusion = config.diffusion
    if not 0.0 < diffusion.beta_start <= diffusion.beta_end < 1.0:  # dit.diffusion.NoiseSchedule's condition
        key = "diffusion.beta_end" if 0.0 < diffusion.beta_start < 1.0 and not diffusion.beta_end < 1.0 \
            else "diffusion.beta_start"  # the one out of (0, 1), else beta_start above beta_end
        _fail(key, f"need 0 < beta_start <= beta_end < 1, got beta_start={diffusion.beta_start}, "
                   f"beta_end={diffusion.beta_end}")
    if config.diffusion.beta_schedule not in ("linear", "cosine"):
        _fail("diffusion.beta_schedule", f"must be linear or cosine, got {config.diffusion.beta_schedule!r}")
    if config.diffusion.timestep_sampling not in TIMESTEP_SAMPLING:
        _fail("diffusion.timestep_sampling",
              f"must be one of {', '.join(TIMESTEP_SAMPLING)}, got {config.diffusion.timestep_sampling!r}")
    if config.checkpoint.every_steps <= 0:
        _fail("checkpoint.every_steps", f"must be positive, got {config.checkpoint.every_steps}")
    if not config.divergence.max_loss > 0:
        _fail("divergence.max_loss", f"must be positive, got {config.divergence.max_loss}")
    if not 0 < config.progress.interval_seconds < math.inf:
        _fail("progress.interval_seconds", f"must be positive and finite, got {config.progress.interval_seconds}")


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
