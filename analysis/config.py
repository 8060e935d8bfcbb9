"""The fit configuration: every choice the analysis makes, with defaults, validated with messages naming the key.

Keys (YAML file and ``--key-name`` command-line options take the same names and values)::

    fitting_sizes: null          # size names the laws are fitted on (null: every size with grid runs that is not held out)
    heldout_sizes: []            # size names kept out of the fits and predicted (the paper: 0.72B, 1.07B)
    loss_column: validation_loss # validation_loss | train_loss
    token_budgets: null          # budgets T in tokens (null: the grid's milestones, clustered within token_match_tolerance)
    token_match_tolerance: 0.05  # relative; runs reach budgets at whole steps (analysis.runs)
    conventional_cell: null      # {batch_clips: int, learning_rate: float}: the fixed cell of the conventional fit
                                 #   (null: the grid cell with the lowest mean rank over all fitting sizes and budgets)
    optimum_method: quadratic    # quadratic (interpolated; analysis.optima) | best_cell
    optimum_band: 0.0            # relative; cells within this of the best cell's loss join the 3 x 3 window of grid
                                 #   levels around it in the quadratic (0: the window alone; analysis.optima)
    optimum_max_gain: 0.1        # relative; an interpolated optimum this far below the best cell is not trusted
    near_optimal_tolerance: 0.002  # relative; cells within this of the best loss form the near-optimal band
    edge_optima: exclude         # exclude | include optima on the grid's edge from the B_opt / LR_opt fits (per axis)
    huber_delta_in_noise_std: 1.345  # Huber delta on log residuals of loss laws, in multiples of the run-to-run
                                 #   relative std (a log residual is a relative error; 1.345: 95% efficiency under noise)
    huber_delta_hyperparameters: 0.1  # Huber delta on log residuals of B_opt / LR_opt / N_opt laws
    bootstrap_resamples: 1000    # resamples of the run-to-run noise (each run's loss curve times 1 + sigma z, the same
                                 #   draws for every law); 0 disables intervals
    confidence_level: 0.95       # of every interval
    seed: 0                      # bootstrap and prediction-noise seed
    flop_convention: paper       # paper: C_token = (3/4) N (7 + n_ctx/d) | 6n: C_token = 6 N
    context_tokens: null         # n_ctx in tokens per clip (null: the runs' tokens_per_clip)
    width_rule: fitted           # fitted: d = k N^p least squares over the runs' sizes (smooth) |
                                 #   registry: dit.sizes.width_for_parameters(N, size_family) (piecewise between registered
                                 #   sizes; the tiny family's irregular shapes put kinks in C_token(N) that trap N_opt at them)
    size_family: null            # registry family for width_rule: registry (null: the family of the runs' sizes)
    target_flops: null           # budget C (FLOPs) of the precise-vs-conventional comparison (null: 100 x the largest run's C)
    compute_range_flops: null    # [low, high] FLOPs over which N_opt = k C^a is fitted (null: smallest run C .. target)
    empirical_method: parabola   # parabola (vertex over log N around the best size) | discrete (best size) at each C
    empirical_flops: model       # C of each size's curve in the empirical (isoFLOP) law: model = T * C_token(N) from the
                                 #   same FLOP model as the law-derived allocation (both N_opt laws count compute alike) |
                                 #   measured = each run's own flops/tokens (irregular shapes put kinks in C_token(N))
    inference:                   # what one generated video costs (dit.flops.inference_flops_per_video)
      sampling_steps: 50
      video_tokens: null         # null: context_tokens
      text_tokens: 24            # caption tokens (the suite's tokenizer length)
      patch_dim: 96              # 3 channels x (2 x 4 x 4) tubelet
      text_width: model          # width of the text features entering the caption projection; "model": the model width
      classifier_free_guidance: false
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from dit.sizes import SIZES


class FitConfigError(ValueError):
    """A fit-config key is unknown, missing or out of range; the message names it."""


@dataclass
class InferenceSetup:
    """What generating one video costs: forward passes of the model (attention included)."""

    sampling_steps: int = 50
    video_tokens: int | None = None
    text_tokens: int = 24
    patch_dim: int = 96
    text_width: int | str = "model"
    classifier_free_guidance: bool = False

    def resolved(self, context_tokens: int) -> "InferenceSetup":
        return InferenceSetup(
            sampling_steps=self.sampling_steps,
            video_tokens=int(self.video_tokens or context_tokens),
            text_tokens=self.text_tokens,
            patch_dim=self.patch_dim,
            text_width=self.text_width,
            classifier_free_guidance=self.classifier_free_guidance,
        )


#: The paper's setup, as far as REFERENCE.md knows it (our assumptions marked in analysis.paper).
PAPER_INFERENCE = InferenceSetup(
    sampling_steps=50, video_tokens=1280, text_tokens=120, patch_dim=16, text_width=4096, classifier_free_guidance=False
)


@dataclass
class FitConfig:
    """Validated fit configuration (module docstring lists every key)."""

    fitting_sizes: list[str] | None = None
    heldout_sizes: list[str] = field(default_factory=list)
    loss_column: str = "validation_loss"
    token_budgets: list[float] | None = None
    token_match_tolerance: float = 0.05
    conventional_cell: dict | None = None
    optimum_method: str = "quadratic"
    optimum_band: float = 0.0
    optimum_max_gain: float = 0.1
    near_optimal_tolerance: float = 0.002
    edge_optima: str = "exclude"
    huber_delta_in_noise_std: float = 1.345
    huber_delta_hyperparameters: float = 0.1
    bootstrap_resamples: int = 1000
    confidence_level: float = 0.95
    seed: int = 0
    flop_convention: str = "paper"
    context_tokens: int | None = None
    width_rule: str = "fitted"
    size_family: str | None = None
    target_flops: float | None = None
    compute_range_flops: list[float] | None = None
    empirical_method: str = "parabola"
    empirical_flops: str = "model"
    inference: InferenceSetup = field(default_factory=InferenceSetup)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_CHOICES = {
    "loss_column": ("validation_loss", "train_loss"),
    "optimum_method": ("quadratic", "best_cell"),
    "edge_optima": ("exclude", "include"),
    "flop_convention": ("paper", "6n"),
    "width_rule": ("registry", "fitted"),
    "empirical_method": ("parabola", "discrete"),
    "empirical_flops": ("model", "measured"),
}


def _number(key: str, value: Any, positive: bool = True, integer: bool = False, allow_zero: bool = False) -> Any:
    if isinstance(value, str):  # YAML reads 1e22 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            raise FitConfigError(f"{key}: expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FitConfigError(f"{key}: expected a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise FitConfigError(f"{key}: expected a finite number, got {value!r}")
    if integer and float(value) != int(value):
        raise FitConfigError(f"{key}: expected a whole number, got {value!r}")
    if positive and not (value > 0 or (allow_zero and value == 0)):
        raise FitConfigError(f"{key}: must be {'>= 0' if allow_zero else 'positive'}, got {value!r}")
    return int(value) if integer else float(value)


def _sizes(key: str, value: Any) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise FitConfigError(f"{key}: expected a list of size names, got {value!r}")
    unknown = [v for v in value if v not in SIZES]
    if unknown:
        raise FitConfigError(f"{key}: unknown size name(s) {', '.join(unknown)}; known: {', '.join(SIZES)}")
    return list(value)


def config_from_dict(raw: Mapping[str, Any] | None) -> FitConfig:
    """Build and validate a ``FitConfig`` from a mapping (unknown keys are errors)."""
    raw = dict(raw or {})
    known = {f.name for f in fields(FitConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise FitConfigError(f"unknown fit-config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
    config = FitConfig()
    for key, value in raw.items():
        if key == "inference":
            config.inference = _inference(value)
        else:
            setattr(config, key, value)
    _check(config)
    return config


def _inference(value: Any) -> InferenceSetup:
    if value is None:
        return InferenceSetup()
    if isinstance(value, InferenceSetup):
        value = asdict(value)
    if not isinstance(value, Mapping):
        raise FitConfigError(f"inference: expected a mapping, got {value!r}")
    known = {f.name for f in fields(InferenceSetup)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise FitConfigError(f"inference: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    setup = InferenceSetup(**value)
    setup.sampling_steps = _number("inference.sampling_steps", setup.sampling_steps, integer=True)
    if setup.video_tokens is not None:
        setup.video_tokens = _number("inference.video_tokens", setup.video_tokens, integer=True)
    setup.text_tokens = _number("inference.text_tokens", setup.text_tokens, integer=True, allow_zero=True)
    setup.patch_dim = _number("inference.patch_dim", setup.patch_dim, integer=True)
    if setup.text_width != "model":
        setup.text_width = _number("inference.text_width", setup.text_width, integer=True)
    if not isinstance(setup.classifier_free_guidance, bool):
        raise FitConfigError(f"inference.classifier_free_guidance: expected true or false, got {setup.classifier_free_guidance!r}")
    return setup


def _check(config: FitConfig) -> None:
    for key, choices in _CHOICES.items():
        if getattr(config, key) not in choices:
            raise FitConfigError(f"{key}: {getattr(config, key)!r} is not one of {', '.join(choices)}")
    if config.fitting_sizes is not None:
        config.fitting_sizes = _sizes("fitting_sizes", config.fitting_sizes)
    config.heldout_sizes = _sizes("heldout_sizes", config.heldout_sizes or [])
    if config.fitting_sizes is not None:
        both = sorted(set(config.fitting_sizes) & set(config.heldout_sizes))
        if both:
            raise FitConfigError(f"heldout_sizes: {', '.join(both)} also listed in fitting_sizes")
    if config.token_budgets is not None:
        if not isinstance(config.token_budgets, (list, tuple)) or not config.token_budgets:
            raise FitConfigError(f"token_budgets: expected a non-empty list of token counts, got {config.token_budgets!r}")
        config.token_budgets = sorted(_number("token_budgets", v) for v in config.token_budgets)
    config.token_match_tolerance = _number("token_match_tolerance", config.token_match_tolerance, allow_zero=True)
    if config.conventional_cell is not None:
        cell = config.conventional_cell
        if not isinstance(cell, Mapping) or set(cell) != {"batch_clips", "learning_rate"}:
            raise FitConfigError(f"conventional_cell: expected {{batch_clips: int, learning_rate: float}}, got {cell!r}")
        config.conventional_cell = {
            "batch_clips": _number("conventional_cell.batch_clips", cell["batch_clips"], integer=True),
            "learning_rate": _number("conventional_cell.learning_rate", cell["learning_rate"]),
        }
    config.near_optimal_tolerance = _number("near_optimal_tolerance", config.near_optimal_tolerance, allow_zero=True)
    config.optimum_band = _number("optimum_band", config.optimum_band, allow_zero=True)
    config.optimum_max_gain = _number("optimum_max_gain", config.optimum_max_gain)
    if not config.optimum_max_gain < 1:
        raise FitConfigError(f"optimum_max_gain: must be below 1, got {config.optimum_max_gain}")
    config.huber_delta_in_noise_std = _number("huber_delta_in_noise_std", config.huber_delta_in_noise_std)
    config.huber_delta_hyperparameters = _number("huber_delta_hyperparameters", config.huber_delta_hyperparameters)
    config.bootstrap_resamples = _number("bootstrap_resamples", config.bootstrap_resamples, integer=True, allow_zero=True)
    config.confidence_level = _number("confidence_level", config.confidence_level)
    if not config.confidence_level < 1:
        raise FitConfigError(f"confidence_level: must be between 0 and 1, got {config.confidence_level}")
    config.seed = _number("seed", config.seed, integer=True, allow_zero=True)  # numpy's generators take no negative seed
    if config.context_tokens is not None:
        config.context_tokens = _number("context_tokens", config.context_tokens, integer=True)
    if config.size_family is not None and config.size_family not in {s.family for s in SIZES.values()}:
        raise FitConfigError(f"size_family: {config.size_family!r} is not a registered family")
    if config.target_flops is not None:
        config.target_flops = _number("target_flops", config.target_flops)
    if config.compute_range_flops is not None:
        value = config.compute_range_flops
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise FitConfigError(f"compute_range_flops: expected [low, high] in FLOPs, got {value!r}")
        low, high = (_number("compute_range_flops", v) for v in value)
        if not low < high:
            raise FitConfigError(f"compute_range_flops: low {low} must be below high {high}")
        config.compute_range_flops = [low, high]
    config.inference = _inference(config.inference)


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> FitConfig:
    """Read a YAML fit config (``yaml.safe_load``; missing file is an error) and apply ``overrides``."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as error:
            raise FitConfigError(f"cannot read fit config {path}: {error.strerror or error}") from None
        except yaml.YAMLError as error:
            raise FitConfigError(f"fit config {path} is not valid YAML: {error}") from None
        if loaded is not None and not isinstance(loaded, Mapping):
            raise FitConfigError(f"fit config {path} must hold a mapping of keys, got {type(loaded).__name__}")
        raw.update(loaded or {})
    raw.update(overrides or {})
    return config_from_dict(raw)


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One ``--key-name VALUE`` option per fit-config key (values parsed as YAML, e.g. ``[a, b]``)."""
    group = parser.add_argument_group("fit-config keys (override the --config file; values are YAML)")
    for f in fields(FitConfig):
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"config_{f.name}", metavar="YAML", default=None)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {}
    for f in fields(FitConfig):
        text = getattr(args, f"config_{f.name}", None)
        if text is not None:
            try:
                overrides[f.name] = yaml.safe_load(text)
            except yaml.YAMLError as error:
                raise FitConfigError(f"--{f.name.replace('_', '-')}: {text!r} is not valid YAML: {error}") from None
    return overrides


def default_config_yaml() -> str:
    """The module docstring's key list: the documented defaults as a YAML file."""
    doc = __doc__.split("::", 1)[1]
    return "\n".join(line[4:] if line.startswith("    ") else line for line in doc.strip("\n").splitlines()) + "\n"
