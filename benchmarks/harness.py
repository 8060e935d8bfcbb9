"""What the benchmarks share: the experiments' shapes, the context stored with every result, interleaved
timing, and the training step exactly as ``dit.train`` takes it.

* ``Experiment``: a pipeline config (``config/config.yaml``, the embedded default, or
  ``config/paper.yaml``) read as the pipeline reads it: the model-space clip it trains on (the latent
  video when ``data.latent`` is set), caption tokens, the grid's middle batch, the members one training
  job holds (``pipeline.runs.training_jobs``), threads and optimizer settings. Sizes and batches are never
  typed into a benchmark: they come from here.
* ``run_context``: torch version, dtype, threads, device, batch, clip shape, attention backend (asked
  and resolved) and member count, for a benchmark's ``extra_info``.
* ``InterleavedTimer``: times several variants in turns in one process (device sync inside each
  timed call) so load from other processes falls on all of them alike; medians and spread in seconds.
* ``engine_training_step``: ``MemberParameters.zero_grad``, ``dit.engine.accumulate_gradients`` and
  ``MemberAdamW.step`` with the config's gradient clipping, bf16 autocast on CUDA (``precision: auto``),
  for an ensemble of M members (one run trained alone is an ensemble of one); its FLOPs come from
  ``dit.flops.training_flops_per_clip``.

Importing this module reads two YAML files; it changes no torch setting.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Optional

import torch

from dit.attention import resolve_backend
from dit.diffusion import NoiseSchedule
from dit.ensemble import EnsembleDiT
from dit.flops import training_flops_per_clip
from dit.latent import latent_shape
from dit.member_training import MemberAdamW, MemberParameters, accumulate_gradients
from dit.model import VideoDiT, VideoDiTConfig
from dit.text import BOS_ID, PAD_ID
from pipeline.config import load_pipeline_config, validate_pipeline_config
from pipeline.runs import JobSpec, grid_runs, training_jobs

ROOT = Path(__file__).resolve().parent.parent
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

#: Attention heads of the tiny sizes before commit f1962f2 (since then: one head up to width 127, 64-channel heads above).
#: tiny-4k and tiny-9k came later; at widths 16 and 24 they would have had tiny-8k's 2 and tiny-18k's 3 heads of 8 channels.
FORMER_TINY_HEADS = {"tiny-4k": 2, "tiny-8k": 2, "tiny-9k": 3, "tiny-18k": 3, "tiny-33k": 4, "tiny-66k": 4, "tiny-147k": 6, "tiny-262k": 8,
                     "tiny-590k": 8, "tiny-1m": 8, "tiny-1.6m": 8, "tiny-2.5m": 10, "tiny-4.2m": 12}


@dataclass(frozen=True)
class Experiment:
    """A pipeline config's shapes as a training job sees them (module docstring)."""

    name: str
    config: dict = field(repr=False)

    @classmethod
    def load(cls, name: str) -> "Experiment":
        """``name``: a file stem under ``config/`` (``"config"`` is the embedded default, ``"paper"`` the paper's),
        validated with the schema's defaults filled in, as the pipeline loads it."""
        config = load_pipeline_config(ROOT / "config" / f"{name}.yaml")
        validate_pipeline_config(config)
        return cls(name, config)

    @cached_property
    def clip(self) -> dict:
        """``VideoDiTConfig`` fields of the model-space clip: ``in_channels``, frames, height, width, patch."""
        prepare, latent = self.config["data"]["prepare"], self.config["data"].get("latent")
        channels, frames, height, width = 3, prepare["frames"], prepare["height"], prepare["width"]
        if latent:
            channels, frames, height, width = latent_shape(latent["patch"], latent["channels"], frames, height, width)
        return dict(in_channels=channels, clip_frames=frames, clip_height=height, clip_width=width,
                    patch=tuple(self.config["model"]["patch"]))

    def model_config(self, size: str, **overrides) -> VideoDiTConfig:
        """The ``VideoDiTConfig`` a run of ``size`` trains (caption tokens and table, attention), with ``overrides``."""
        prepare, model = self.config["data"]["prepare"], self.config["model"]
        values = dict(self.clip, vocab_size=prepare["vocab_size"], caption_length=prepare["caption_length"],
                      text_width=model.get("text_width"), attention=model.get("attention", "auto"),
                      caption_table=model.get("caption_table", "frozen"))
        return VideoDiTConfig.from_size(size, **{**values, **overrides})

    @property
    def sizes(self) -> list[str]:
        """The grid's fitting sizes, in the config's order."""
        return list(self.config["grid"]["sizes"])

    @property
    def heldout_sizes(self) -> list[str]:
        return list((self.config.get("heldout") or {}).get("sizes", []))

    @property
    def smallest_batch_clips(self) -> int:
        """The grid's smallest batch size in clips."""
        return min(int(b) for b in self.config["grid"]["batch_clips"])

    @property
    def middle_batch_clips(self) -> int:
        """The grid's middle batch size in clips."""
        batches = sorted(int(b) for b in self.config["grid"]["batch_clips"])
        return batches[len(batches) // 2]

    @property
    def threads(self) -> Optional[int]:
        """CPU threads one training job gets (``training.threads``; None: torch's default)."""
        return self.config["training"].get("threads")

    @property
    def processes(self) -> int:
        """Processes (GPUs) per training job."""
        return int(self.config["training"].get("processes", 1))

    @property
    def optimizer(self) -> dict:
        return dict(self.config["training"]["optimizer"])

    @property
    def schedule(self) -> NoiseSchedule:
        d = self.config["training"]["diffusion"]
        return NoiseSchedule(kind=d["beta_schedule"], num_timesteps=d["num_timesteps"], beta_start=d["beta_start"],
                             beta_end=d["beta_end"])

    def job(self, size: str, batch_clips: int) -> JobSpec:
        """The grid's training job at (``size``, ``batch_clips``): its runs are its members."""
        for job in training_jobs(grid_runs(self.config), self.config["training"].get("ensemble", "auto")):
            if job.runs[0].size == size and job.runs[0].batch_clips == batch_clips:
                return job
        raise KeyError(f"{self.name}: no training job trains {size} at {batch_clips} clips")

    def job_learning_rates(self, size: str, batch_clips: int) -> list[float]:
        """Learning rates of the runs one training job holds at (``size``, ``batch_clips``): one per member."""
        return [run.learning_rate for run in self.job(size, batch_clips).runs]


def run_context(device: torch.device, dtype: torch.dtype, batch_clips: int, clip: dict, attention: str,
                members: Optional[int] = None, threads: Optional[int] = None) -> dict:
    """What every benchmark result records: torch, dtype, CPU threads (this process's unless ``threads``
    says what the timed processes used), device, batch (clips), clip shape, attention (asked and
    resolved), and the member count for ensembles."""
    context = {
        "torch": torch.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "batch_clips": batch_clips,
        "clip_shape": {key: list(value) if isinstance(value, tuple) else value for key, value in clip.items()},
        "attention": attention,
        "attention_resolved": resolve_backend(attention, device),
    }
    if members is not None:
        context["members"] = members
    return context


def training_dtype(device: torch.device) -> torch.dtype:
    """The compute dtype ``precision: auto`` trains in: bf16 autocast on CUDA, fp32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


@contextlib.contextmanager
def torch_threads(count: Optional[int]):
    """Run the block with ``count`` torch CPU threads (None: unchanged); the former count is restored after."""
    former = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(former)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spread(seconds: list[float]) -> dict:
    """Median, interquartile range, min and max of timed calls (seconds), and their count."""
    ordered = sorted(seconds)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return {"median_s": statistics.median(ordered), "iqr_s": quartiles[2] - quartiles[0], "min_s": ordered[0],
            "max_s": ordered[-1], "rounds": len(ordered)}


class InterleavedTimer:
    """Times ``variants`` (name -> zero-argument callable) in turns; each call ends with a device sync.

    ``round()`` calls every variant once, starting one later each round so none always runs first;
    pass it to ``benchmark.pedantic``. ``warm_up`` rounds are not recorded.
    """

    def __init__(self, variants: dict[str, Callable[[], None]], device: torch.device):
        self.variants, self.device = variants, device
        self.seconds: dict[str, list[float]] = {name: [] for name in variants}
        self._rounds = 0

    def _time(self, name: str) -> float:
        synchronize(self.device)
        started = time.perf_counter()
        self.variants[name]()
        synchronize(self.device)
        return time.perf_counter() - started

    def warm_up(self, rounds: int) -> None:
        for _ in range(rounds):
            for name in self.variants:
                self._time(name)

    def round(self) -> None:
        names = list(self.variants)
        shift = self._rounds % len(names)
        for name in names[shift:] + names[:shift]:
            self.seconds[name].append(self._time(name))
        self._rounds += 1

    def medians(self) -> dict[str, float]:
        return {name: statistics.median(values) for name, values in self.seconds.items()}

    def spreads(self) -> dict[str, dict]:
        return {name: spread(values) for name, values in self.seconds.items()}


def caption_ids(shape: tuple[int, ...], vocab_size: int, caption_length: int, generator: torch.Generator) -> torch.Tensor:
    """Random caption ids ``(*shape, caption_length)``: the begin token, 1 to L-1 words, then padding."""
    ids = torch.randint(BOS_ID + 1, vocab_size, (*shape, caption_length), generator=generator)
    lengths = torch.randint(2, caption_length + 1, (*shape, 1), generator=generator)
    ids[..., 0] = BOS_ID
    return ids.masked_fill(torch.arange(caption_length) >= lengths, PAD_ID)


@dataclass
class TrainingStep:
    """One timed training step: ``run()`` does it (ending on the device), ``flops`` its matrix-product FLOPs."""

    run: Callable[[], None]
    members: int
    batch_clips: int
    flops: float
    config: VideoDiTConfig


def engine_training_step(experiment: Experiment, config: VideoDiTConfig, learning_rates: list[float],
                         batch_clips: int, device: torch.device = DEVICE, seed: int = 0) -> TrainingStep:
    """The engine's step for ``len(learning_rates)`` members of ``config`` on ``batch_clips`` clips each,
    inputs built once (outside the timed call); one micro-batch, as the default's jobs run."""
    members = len(learning_rates)
    torch.manual_seed(seed)
    model = EnsembleDiT.from_members(config, [VideoDiT(config) for _ in range(members)]).to(device)
    parameters = MemberParameters(model, members)
    opt = experiment.optimizer
    optimizer = MemberAdamW(parameters, betas=tuple(opt["betas"]), eps=opt["eps"], weight_decay=opt["weight_decay"])
    generator = torch.Generator().manual_seed(seed)
    shape = (members, batch_clips, config.in_channels, config.clip_frames, config.clip_height, config.clip_width)
    video = (torch.rand(shape, generator=generator) * 2 - 1).to(device)
    noise = torch.randn(shape, generator=generator).to(device)
    schedule = experiment.schedule
    timesteps = torch.randint(0, schedule.num_timesteps, shape[:2], generator=generator).to(device)
    captions = caption_ids(shape[:2], config.vocab_size, config.caption_length, generator).to(device)
    bf16 = training_dtype(device) == torch.bfloat16
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    active = [True] * members

    def run() -> None:
        parameters.zero_grad()
        accumulate_gradients(model, schedule, video, timesteps, noise, captions, batch_clips, batch_clips, autocast)
        optimizer.step(learning_rates, active, opt.get("grad_clip"))

    per_clip = training_flops_per_clip(config.forward_flops(), config.caption_feature_width, config.caption_length,
                                       config.width, text_input_gradient=config.caption_features_have_gradient)
    return TrainingStep(run, members, batch_clips, members * batch_clips * per_clip, config)


@dataclass
class MatmulBaseline:
    """A square ``torch.mm`` of ``size`` in ``dtype``: ``run()`` does one, ``flops = 2 * size**3``."""

    run: Callable[[], None]
    size: int
    dtype: torch.dtype

    @property
    def flops(self) -> float:
        return 2.0 * self.size**3


def matmul_baseline(device: torch.device, dtype: torch.dtype) -> MatmulBaseline:
    """The machine's matmul rate to compare a training step with: 1024 x 1024 on a CPU, 8192 x 8192 on CUDA."""
    size = 8192 if device.type == "cuda" else 1024
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(device, dtype) for _ in range(2))
    return MatmulBaseline(lambda: torch.mm(a, b), size, dtype)
