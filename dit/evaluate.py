"""Evaluation of one trained run: the validation protocol's own spread, and what the captions are worth.

``python -m dit.evaluate spread --run RUN_DIR --seeds 8 --out FILE.json``
    The run's validation loss (its validation split, timesteps count, ``max_clips``) under ``--seeds``
    different noise seeds, starting at the run's own validation seed, so the first value is the
    validation loss the run recorded at its last milestone when that milestone ends the run
    (bit-identical on the device and precision it was trained with). Reports mean, sample standard
    deviation, relative standard deviation (std / mean), min, max and every seed's value.

``python -m dit.evaluate captions --run RUN_DIR --out FILE.json [--shuffled] [--swap A:B ...] [--exchange W,W,...] [--seeds N]``
    The validation loss with the clips' own captions, with every caption replaced by the null caption
    (``tokenizer.encode("")``, the caption the model saw under caption dropout) and, with
    ``--shuffled``, with the captions permuted across clips so that no clip keeps its own. All
    conditions use the same clips, timesteps and noise, so the differences are paired:
    ``differences.null_minus_captions.mean > 0`` means the model uses what the captions say
    (``relative``: that difference over the null-caption loss). With ``--seeds N >= 2`` the
    differences are also given per noise seed with their standard deviation.

    Two contrasts ask which words the model uses. ``--swap A:B`` (repeatable): every word A of a
    caption becomes B and every B becomes A (condition ``swapped``; for the embedded set
    ``--swap left:right --swap up:down`` reverses every stated direction of motion). ``--exchange
    W1,W2,...``: in each caption, the first two words of that set trade places (condition
    ``exchanged``; with the embedded set's colour words the two objects trade colours, so a model that
    ties a colour to its object's other words loses, and one that reads the caption as a bag of
    colours does not). ``contrasts`` records the words and how many validation clips' captions each
    contrast changed; a caption it leaves as it was counts as unchanged, with a difference of 0.

Only completed runs are evaluated: a missing folder, a run without ``summary.json`` (not finished),
one whose status is not ``completed`` and one whose ``checkpoints/model.pt`` is unreadable (truncated)
are refused with a message naming the file (exit status 2, as for other bad arguments; nothing is
written); so is an ``--out`` that is a folder, lies below a file or is a file of the run, before the
run is read. ``--device auto`` uses CUDA when available; a run trained with xformers attention is
evaluated with sdpa on a CPU, and the run's ``precision`` setting is resolved for the evaluation
device (``auto``: bf16 autocast on CUDA, fp32 on a CPU).
Losses are mean squared errors of the epsilon prediction (dimensionless); clips are counted in clips.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from dit.atomic import OutputPathError, atomic_write_json, check_output_files
from dit.config import ConfigError, TrainConfig, load_config
from dit.data.loader import ShardDataset, limit_clips
from dit.diffusion import NoiseSchedule, validation_loss, validation_loss_spread
from dit.distributed import DeviceUnavailable, autocast, resolve_device, resolve_precision
from dit.latent import CodecError, LatentCodec, PixelSpace, encoded_batches, load_model_space
from dit.model import VideoDiTConfig
from dit.provenance import provenance
from dit.run_folder import MODEL_FILE, ModelFileError, load_trained_model, read_summary
from dit.text import PAD_ID

EXIT_OK = 0
EXIT_INPUT_ERROR = 2

#: Caption conditions of the ``captions`` command.
CAPTION_CONDITIONS = ("captions", "null", "shuffled", "swapped", "exchanged")


class EvaluationInputError(ValueError):
    """A bad command-line value or input file; the message names it."""


class RunNotReady(EvaluationInputError):
    """A run folder is missing, unfinished, not completed or incomplete; the message names the file."""


@dataclass
class TrainedRun:
    """A completed run's model on an evaluation device, with its config, summary and noise schedule."""

    run_dir: Path
    config: TrainConfig
    summary: dict
    model: torch.nn.Module
    model_config: VideoDiTConfig
    schedule: NoiseSchedule
    device: torch.device
    precision: str
    attention: str
    space: LatentCodec | PixelSpace  # what the model's input is: the run's latent codec, or pixels

    @property
    def run_id(self) -> str:
        return str(self.summary.get("run_id") or self.run_dir.name)

    @property
    def data_root(self) -> Path:
        return Path(self.config.data.root)

    def validation_split(self) -> ShardDataset:
        """The run's validation split, checked against the model."""
        if not (self.data_root / "manifest.json").is_file():
            raise RunNotReady(
                f"{self.run_dir / 'config.yaml'}: data.root {self.data_root} is not a prepared data folder "
                "(no manifest.json)"
            )
        dataset = ShardDataset(self.data_root, split="validation")
        tokenizer = dataset.tokenizer
        if (tokenizer.vocab_size, tokenizer.max_length) != (self.model_config.vocab_size, self.model_config.caption_length):
            raise RunNotReady(
                f"{self.data_root / 'manifest.json'}: tokenizer vocab_size={tokenizer.vocab_size}, "
                f"max_length={tokenizer.max_length} differs from the model's vocab_size={self.model_config.vocab_size}, "
                f"caption_length={self.model_config.caption_length} (the data folder changed after training)"
            )
        c = self.model_config
        expected = (c.in_channels, c.clip_frames, c.clip_height, c.clip_width)
        try:
            fits = dataset.frames >= self.frames and self.space.latent_shape(self.frames, dataset.height, dataset.width) == expected
        except ValueError:
            fits = False
        if not fits:
            raise RunNotReady(
                f"{self.data_root / 'manifest.json'}: clips of {dataset.frames}x{dataset.height}x{dataset.width} "
                f"(frames x height x width) do not give the model's input {c.in_channels}x{c.clip_frames}x"
                f"{c.clip_height}x{c.clip_width} (channels x frames x height x width)"
            )
        return dataset

    def validation_batches(self, dataset: ShardDataset) -> Callable[[], Iterator[dict]]:
        """A function returning a fresh pass over the clips the run validated on (its batch size and
        ``max_clips``), encoded into the model's space (pixels or the run's latent codec)."""
        settings = self.config.validation
        frames = self.frames

        def batches() -> Iterator[dict]:
            clips = limit_clips(dataset.iter_batches(settings.batch_clips, frames=frames), settings.max_clips)
            return encoded_batches(clips, self.space)

        return batches

    @property
    def frames(self) -> int:
        """Pixel frames per clip the model's input covers."""
        return self.config.data.frames or self.model_config.clip_frames * self._temporal_patch

    @property
    def _temporal_patch(self) -> int:
        return getattr(self.space, "patch", (1, 1, 1))[0]

    def validation_clips(self, dataset: ShardDataset) -> int:
        """Clips in the run's validation set (the split, cut to ``validation.max_clips``)."""
        limit = self.config.validation.max_clips
        return len(dataset) if limit is None else min(len(dataset), limit)

    def describe(self) -> dict:
        """Run identity and evaluation settings recorded in every result file."""
        summary = self.summary
        return {
            "run_dir": str(self.run_dir),
            "run_id": self.run_id,
            "series": summary.get("series"),
            "size": summary.get("size"),
            "non_embedding_parameters": summary.get("non_embedding_parameters"),
            "tokens": summary.get("tokens"),
            "steps": summary.get("steps"),
            "learning_rate": summary.get("learning_rate"),
            "batch_clips": summary.get("batch_clips"),
            "run_final_validation_loss": summary.get("final_validation_loss"),
            "run_config_hash": summary.get("provenance", {}).get("config_hash"),
            "data_root": str(self.data_root),
            "device": str(self.device),
            "precision": self.precision,
            "attention": self.attention,
        }


def evaluation_attention(recorded: str, device: torch.device) -> str:
    """The attention backend to evaluate with: the recorded one, except xformers on a CPU becomes sdpa."""
    if device.type != "cuda" and recorded == "xformers":
        return "sdpa"
    return recorded


def read_completed_summary(run_dir: str | Path) -> dict:
    """The ``summary.json`` of a completed run; ``RunNotReady`` for a missing, unfinished or failed run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunNotReady(f"{run_dir}: no such run folder")
    path = run_dir / "summary.json"
    if not path.is_file():
        started = (run_dir / "checkpoints").is_dir() or (run_dir / "metrics.csv").is_file()
        state = "has not finished (no summary.json yet)" if started else "has not started (no summary.json)"
        raise RunNotReady(f"{path}: the run {state}; train it with `python -m dit.train --config ... --out {run_dir}`")
    summary = read_summary(run_dir)
    if summary is None:
        raise RunNotReady(f"{path}: unreadable run summary (not a JSON file)")
    if not isinstance(summary, dict) or "status" not in summary:
        raise RunNotReady(f"{path}: no 'status' key; not a dit.train run summary")
    status = summary["status"]
    if status != "completed":
        reason = summary.get("status_reason") or "no reason recorded"
        hint = " (rerun the same dit.train command to resume)" if status == "preempted" else ""
        raise RunNotReady(f"{path}: status is {status!r}, not 'completed': {reason}{hint}")
    return summary


def open_trained_run(run_dir: str | Path, device: str = "auto", threads: int | None = None) -> TrainedRun:
    """Load a completed run's model onto ``device`` (CPU-safe attention) with its config and schedule.

    ``threads`` sets torch's CPU threads (default: the run's ``threads`` setting, if any).
    """
    run_dir = Path(run_dir)
    summary = read_completed_summary(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise RunNotReady(f"{config_path}: missing; the run folder is incomplete")
    try:
        config = load_config(config_path)
    except ConfigError as error:
        raise RunNotReady(f"{config_path}: {error}") from None
    checkpoint = run_dir / "checkpoints" / MODEL_FILE
    if not checkpoint.is_file():
        raise RunNotReady(f"{checkpoint}: missing; the run folder is incomplete")
    try:
        torch_device = resolve_device(device, setting="--device")
    except DeviceUnavailable as error:
        raise EvaluationInputError(str(error)) from None
    if threads is not None and threads < 1:
        raise EvaluationInputError(f"--threads must be at least 1, got {threads}")
    if threads or config.threads:
        torch.set_num_threads(threads or config.threads)
    attention = evaluation_attention(config.model.attention, torch_device)
    try:
        model, model_config = load_trained_model(run_dir, torch_device, attention=attention)
    except ModelFileError as error:
        raise RunNotReady(str(error)) from None
    try:
        space = load_model_space(config.data.latent)
    except CodecError as error:
        raise RunNotReady(f"{config_path}: data.latent: {error}") from None
    return TrainedRun(
        run_dir=run_dir,
        config=config,
        summary=summary,
        model=model,
        model_config=model_config,
        schedule=NoiseSchedule.from_config(config.diffusion),
        device=torch_device,
        precision=resolve_precision(config.precision, torch_device),
        attention=attention,
        space=space,
    )


# --------------------------------------------------------------------------------------------------
# Spread of the validation protocol over noise seeds
# --------------------------------------------------------------------------------------------------


def noise_seeds(first: int, count: int) -> list[int]:
    """``count`` consecutive noise seeds starting at ``first``."""
    if count < 1:
        raise EvaluationInputError(f"--seeds: the number of seeds must be at least 1, got {count}")
    return list(range(int(first), int(first) + int(count)))


def spread_summary(per_seed: dict[int, float]) -> dict:
    """Mean, sample std (0 for one seed), relative std (std / mean), min, max and the values per seed."""
    values = list(per_seed.values())
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) >= 2 else 0.0
    return {
        "mean": mean,
        "std": std,
        "relative_std": std / mean if mean else math.nan,
        "min": min(values),
        "max": max(values),
        "per_seed": {str(seed): value for seed, value in per_seed.items()},
    }


def validation_spread(run: TrainedRun, seeds: Sequence[int]) -> dict:
    """The run's validation loss under each noise seed of ``seeds`` (at least two), with its spread."""
    dataset = run.validation_split()
    with autocast(run.precision, run.device):
        spread = validation_loss_spread(
            run.model,
            run.schedule,
            run.validation_batches(dataset),
            seeds,
            num_timesteps=run.config.validation.timesteps,
            device=run.device,
        )
    record = spread_summary(spread.per_seed)
    record["seeds"] = list(seeds)
    record["validation"] = validation_settings(run, dataset)
    return record


def validation_settings(run: TrainedRun, dataset: ShardDataset) -> dict:
    settings = run.config.validation
    return {
        "split": "validation",
        "clips": run.validation_clips(dataset),
        "timesteps": settings.timesteps,
        "max_clips": settings.max_clips,
        "batch_clips": settings.batch_clips,
        "run_seed": settings.seed,
    }


# --------------------------------------------------------------------------------------------------
# Caption conditioning
# --------------------------------------------------------------------------------------------------


def null_caption_ids(tokenizer) -> torch.Tensor:
    """Ids ``(caption_length,)`` long of the null caption ``tokenizer.encode("")``."""
    return torch.as_tensor(tokenizer.encode(""), dtype=torch.long)


def shuffled_caption_order(clip_indices: Sequence[int], seed: int) -> dict[int, int]:
    """For each clip index, the clip whose caption it gets: a seeded cycle, so no clip keeps its own."""
    clips = [int(i) for i in clip_indices]
    if len(clips) < 2:
        raise EvaluationInputError(f"--shuffled: shuffling captions needs at least two clips, got {len(clips)}")
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5C0FF1E])).permutation(len(clips))
    cycle = [clips[i] for i in order]
    return {cycle[i]: cycle[(i + 1) % len(cycle)] for i in range(len(cycle))}


def with_captions(batches: Iterable[dict], caption_ids_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    """The batches with ``caption_ids`` replaced by ``caption_ids_of(index, caption_ids)`` and the mask renewed."""
    for batch in batches:
        ids = caption_ids_of(batch["index"], batch["caption_ids"])
        yield {**batch, "caption_ids": ids, "caption_mask": ids != PAD_ID}


def single_word_id(tokenizer, word: str) -> int:
    """The id of ``word``, which must be one word to the tokenizer (``EvaluationInputError`` otherwise)."""
    words = tokenizer.words(word)
    if len(words) != 1:
        raise EvaluationInputError(f"{word!r} is not one caption word (the tokenizer reads {words})")
    return tokenizer.word_id(words[0])


def swap_table(tokenizer, pairs: Sequence[tuple[str, str]]) -> dict[int, int]:
    """Token id -> the id it becomes under ``--swap``: each pair's two ids, both ways."""
    table: dict[int, int] = {}
    for first, second in pairs:
        a, b = single_word_id(tokenizer, first), single_word_id(tokenizer, second)
        if a == b or a in table or b in table:
            raise EvaluationInputError(
                f"--swap {first}:{second}: each word may appear in one pair only, and the two words need distinct "
                "token ids (the hashed tokenizer can map two words to one id)"
            )
        table[a], table[b] = b, a
    return table


def swapped_ids(ids: torch.Tensor, table: dict[int, int]) -> torch.Tensor:
    """``ids`` (clips, tokens) with every id in ``table`` replaced by its partner, all at once."""
    out = ids.clone()
    for source, target in table.items():
        out[ids == source] = target
    return out


def exchanged_ids(ids: torch.Tensor, word_ids: set[int]) -> torch.Tensor:
    """``ids`` (clips, tokens) with, in each row, the first two ids of ``word_ids`` trading places."""
    out = ids.clone()
    members = torch.isin(ids, torch.tensor(sorted(word_ids), dtype=ids.dtype))
    for row in range(ids.shape[0]):
        positions = torch.nonzero(members[row]).flatten()[:2].tolist()
        if len(positions) == 2:
            first, second = positions
            out[row, first], out[row, second] = ids[row, second], ids[row, first]
    return out


@dataclass(frozen=True)
class CaptionContrasts:
    """The words of the ``swapped`` and ``exchanged`` conditions (module docstring); empty: not evaluated."""

    swap: tuple[tuple[str, str], ...] = ()
    exchange: tuple[str, ...] = ()

    def conditions(self) -> list[str]:
        return (["swapped"] if self.swap else []) + (["exchanged"] if self.exchange else [])

    def exchange_ids(self, tokenizer) -> set[int]:
        ids = {single_word_id(tokenizer, word) for word in self.exchange}
        if len(ids) != len(self.exchange):
            raise EvaluationInputError(f"--exchange {','.join(self.exchange)}: two of the words share a token id "
                                       "(or a word is given twice)")
        return ids

    def describe(self) -> dict:
        out = {}
        if self.swap:
            out["swapped"] = {"pairs": [list(pair) for pair in self.swap]}
        if self.exchange:
            out["exchanged"] = {"words": list(self.exchange)}
        return out


def caption_condition_batches(run: TrainedRun, dataset: ShardDataset, condition: str, shuffle_seed: int = 0,
                              contrasts: CaptionContrasts = CaptionContrasts()):
    """A function returning fresh validation batches under a caption ``condition`` of ``CAPTION_CONDITIONS``."""
    batches = run.validation_batches(dataset)
    if condition == "captions":
        return batches
    if condition == "null":
        null_ids = null_caption_ids(dataset.tokenizer)
        return lambda: with_captions(batches(), lambda index, ids: null_ids.expand(ids.shape[0], -1).clone())
    if condition == "shuffled":
        captions: dict[int, torch.Tensor] = {}
        for batch in batches():
            for index, ids in zip(batch["index"].tolist(), batch["caption_ids"]):
                captions[int(index)] = ids.clone()
        donor = shuffled_caption_order(sorted(captions), shuffle_seed)
        return lambda: with_captions(
            batches(), lambda index, ids: torch.stack([captions[donor[int(i)]] for i in index.tolist()])
        )
    if condition == "swapped":
        if not contrasts.swap:
            raise ValueError("the swapped condition needs word pairs (CaptionContrasts.swap)")
        table = swap_table(dataset.tokenizer, contrasts.swap)
        return lambda: with_captions(batches(), lambda index, ids: swapped_ids(ids, table))
    if condition == "exchanged":
        if not contrasts.exchange:
            raise ValueError("the exchanged condition needs words (CaptionContrasts.exchange)")
        word_ids = contrasts.exchange_ids(dataset.tokenizer)
        return lambda: with_captions(batches(), lambda index, ids: exchanged_ids(ids, word_ids))
    raise ValueError(f"unknown caption condition {condition!r}; conditions are {', '.join(CAPTION_CONDITIONS)}")


def changed_clips(original: Callable[[], Iterable[dict]], changed: Callable[[], Iterable[dict]]) -> int:
    """How many clips' caption ids differ between two passes over the same validation batches."""
    count = 0
    for before, after in zip(original(), changed(), strict=True):
        count += int((before["caption_ids"] != after["caption_ids"]).any(dim=1).sum())
    return count


def caption_gain(run: TrainedRun, seeds: Sequence[int], shuffled: bool = False,
                 contrasts: CaptionContrasts = CaptionContrasts()) -> dict:
    """Validation loss with captions, with the null caption (and shuffled captions, and the ``contrasts``) on the
    same noise."""
    dataset = run.validation_split()
    conditions = ["captions", "null"] + (["shuffled"] if shuffled else []) + contrasts.conditions()
    results: dict[str, dict] = {}
    described = contrasts.describe()
    sources = {condition: caption_condition_batches(run, dataset, condition, shuffle_seed=run.config.validation.seed,
                                                    contrasts=contrasts) for condition in conditions}
    for condition in described:
        described[condition]["clips_changed"] = changed_clips(sources["captions"], sources[condition])
    for condition in conditions:
        source = sources[condition]
        per_seed, per_timestep = {}, {}
        for seed in seeds:
            with autocast(run.precision, run.device):
                result = validation_loss(
                    run.model,
                    run.schedule,
                    source(),
                    num_timesteps=run.config.validation.timesteps,
                    seed=seed,
                    device=run.device,
                )
            per_seed[seed] = result.mean
            per_timestep[str(seed)] = {str(t): value for t, value in result.per_timestep.items()}
        results[condition] = {**spread_summary(per_seed), "per_timestep": per_timestep}
    gains = {}
    for condition in conditions[1:]:
        differences = {
            seed: results[condition]["per_seed"][str(seed)] - results["captions"]["per_seed"][str(seed)]
            for seed in seeds
        }
        gain = spread_summary(differences)
        gain["relative"] = gain["mean"] / results[condition]["mean"] if results[condition]["mean"] else math.nan
        gains[f"{condition}_minus_captions"] = gain
    return {
        "seeds": list(seeds),
        "conditions": results,
        "differences": gains,
        "contrasts": described,
        "validation": validation_settings(run, dataset),
    }


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _run_spread(args: argparse.Namespace) -> dict:
    if args.seeds < 2:
        raise EvaluationInputError(f"--seeds must be at least 2 to measure a spread, got {args.seeds}")
    run = open_trained_run(args.run, args.device, args.threads)
    first = run.config.validation.seed if args.first_seed is None else args.first_seed
    seeds = noise_seeds(first, args.seeds)
    started = time.perf_counter()
    record = validation_spread(run, seeds)
    return {
        "kind": "validation_loss_spread",
        **record,
        "run": run.describe(),
        "wall_time_s": time.perf_counter() - started,
        "provenance": provenance({"command": "spread", "run": str(args.run), "seeds": seeds,
                                  "device": str(run.device), "precision": run.precision}),
    }


def _run_captions(args: argparse.Namespace) -> dict:
    run = open_trained_run(args.run, args.device, args.threads)
    first = run.config.validation.seed if args.first_seed is None else args.first_seed
    seeds = noise_seeds(first, args.seeds)
    started = time.perf_counter()
    record = caption_gain(run, seeds, shuffled=args.shuffled, contrasts=args.contrasts)
    return {
        "kind": "caption_conditioning",
        **record,
        "run": run.describe(),
        "wall_time_s": time.perf_counter() - started,
        "provenance": provenance({"command": "captions", "run": str(args.run), "seeds": seeds,
                                  "shuffled": args.shuffled, **args.contrasts.describe(), "device": str(run.device), "precision": run.precision}),
    }


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--threads``, shared with ``dit.sample``."""
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N (default auto)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: the run's threads setting)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dit.evaluate",
        description="Evaluate a completed dit.train run: the validation protocol's spread over noise seeds "
        "(spread) or the validation-loss gain from captions over the null caption (captions).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    spread = commands.add_parser(
        "spread",
        help="validation loss of one trained model under several noise seeds",
        description="Validation loss (the run's validation clips, timesteps and max_clips) under --seeds noise "
        "seeds starting at the run's validation seed; writes mean, std, relative std, min, max, per-seed values.",
    )
    spread.add_argument("--seeds", type=int, default=8, help="number of noise seeds, at least 2 (default %(default)s)")
    captions = commands.add_parser(
        "captions",
        help="validation loss with captions vs with the null caption, on the same noise",
        description="Validation loss with the clips' captions, with every caption replaced by the null caption, "
        "and (--shuffled) with captions permuted across clips; same clips, timesteps and noise.",
    )
    captions.add_argument("--seeds", type=int, default=1, help="number of noise seeds (default %(default)s)")
    captions.add_argument("--shuffled", action="store_true", help="also evaluate with captions shuffled across clips")
    captions.add_argument("--swap", action="append", default=[], metavar="A:B",
                          help="also evaluate with every word A of a caption made B and every B made A (repeatable)")
    captions.add_argument("--exchange", default=None, metavar="W1,W2,...",
                          help="also evaluate with the first two of these words in each caption trading places")
    for sub in (spread, captions):
        sub.add_argument("--run", required=True, type=Path, help="run folder written by python -m dit.train")
        sub.add_argument("--out", required=True, type=Path, help="result JSON file (written atomically)")
        sub.add_argument(
            "--first-seed", type=int, default=None, help="first noise seed (default: the run's validation.seed)"
        )
        add_device_arguments(sub)
    return parser


def parse_contrasts(swap: Sequence[str], exchange: str | None) -> CaptionContrasts:
    """``--swap A:B`` values and the ``--exchange`` list as ``CaptionContrasts`` (``EvaluationInputError`` when malformed)."""
    pairs = []
    for value in swap:
        words = value.split(":")
        if len(words) != 2 or not all(word.strip() for word in words):
            raise EvaluationInputError(f"--swap {value!r}: expected two words as A:B")
        pairs.append((words[0].strip(), words[1].strip()))
    words = tuple(word.strip() for word in exchange.split(",")) if exchange is not None else ()
    if exchange is not None and (len(words) < 2 or not all(words)):
        raise EvaluationInputError(f"--exchange {exchange!r}: expected two or more words separated by commas")
    return CaptionContrasts(swap=tuple(pairs), exchange=words)


def run_files(run_dir: Path) -> list[Path]:
    """The files of a run folder that evaluating or sampling it reads (an output must not be one of them)."""
    return [run_dir / "summary.json", run_dir / "config.yaml", run_dir / "checkpoints" / MODEL_FILE]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"spread": _run_spread, "captions": _run_captions}[args.command]
    try:
        try:
            check_output_files([args.out], run_files(args.run))
        except OutputPathError as error:
            raise EvaluationInputError(f"--out: {error}") from None
        if args.command == "captions":
            args.contrasts = parse_contrasts(args.swap, args.exchange)
        record = command(args)
    except EvaluationInputError as error:
        print(f"dit.evaluate {args.command}: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    atomic_write_json(args.out, record)
    print(f"dit.evaluate {args.command}: wrote {args.out}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
