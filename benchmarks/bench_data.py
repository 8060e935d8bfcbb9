"""Throughput of the data stage, and of the loader against what training consumes, measured in one process.

Run: ``.venv/bin/python benchmarks/bench_data.py`` (about 30-60 s on a 2-core CPU; ``--help`` for sizes),
or ``.venv/bin/python -m pytest benchmarks/bench_data.py -q -s``.

Shapes are the embedded default's (``config/config.yaml``): clips generated at ``data.generate.size``
pixels and prepared to ``data.prepare`` (8 frames of 16x16), the latent codec of ``data.latent``.
Measured, each in clips per second:

* generation: ``dit.data.synthetic.generate_dataset`` (render + H.264 encode), one process;
* preparation: ``dit.data.prepare.prepare_dataset`` with 2 decoding workers, on the default path
  (generated size resized to the prepared size through torchvision) and on files already at the
  prepared size (no resize), as a steady-state rate (first to last decoded file) plus the start-up
  time before the first file is decoded (worker start; the resize path also imports torch in each
  worker);
* loader: ``ClipLoader.next_batch`` at a global batch of 32 clips (memory-mapped shards in the page
  cache), alone and followed by the latent encoding the training step applies to each batch;
* training consumption (the baseline): one training step of ``TRAINING_SIZE`` (the largest size
  the default trains, its held-out size) on latent clips, at the grid's largest batch and the
  threads of one training job, as ``dit.train`` takes it (``harness.engine_training_step``: forward,
  backward, gradient clipping and AdamW of the engine, one run), median of several steps.

The loader, with the latent encoding, must deliver at least ``REQUIRED_RATIO`` times the training
consumption; the script prints the ratio and exits with status 1 when it is lower.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import yaml

from dit.data.loader import ClipLoader, ShardDataset
from dit.data.prepare import PreparationSettings, prepare_dataset
from dit.data.synthetic import GeneratorSettings, generate_dataset
from dit.latent import fit_codec_from_data
from dit.provenance import code_version
from dit.sizes import get_size
from harness import Experiment, InterleavedTimer, engine_training_step, run_context, torch_threads

_DEFAULT = yaml.safe_load((Path(__file__).resolve().parent.parent / "config" / "config.yaml").read_text())
_PREPARE, _LATENT = _DEFAULT["data"]["prepare"], _DEFAULT["data"]["latent"]
GENERATED_SIZE = _DEFAULT["data"]["generate"]["size"]
CLIP = dict(frames=_PREPARE["frames"], height=_PREPARE["height"], width=_PREPARE["width"])
TRAINING_SIZE = max([*_DEFAULT["grid"]["sizes"], *_DEFAULT["heldout"]["sizes"]], key=lambda name: get_size(name).non_embedding_parameters)
TRAINING_BATCH_CLIPS = max(_DEFAULT["grid"]["batch_clips"])
TRAINING_THREADS = _DEFAULT["training"]["threads"] or 1
LOADER_BATCH_CLIPS = 32
REQUIRED_RATIO = 10.0


def measure_generation(folder: Path, clips: int, size: int = GENERATED_SIZE) -> tuple[Path, float]:
    settings = GeneratorSettings(clips=clips, seed=0, frames=CLIP["frames"], height=size, width=size)
    summary = generate_dataset(folder, settings)
    return summary.out, summary.clips_per_second


def measure_preparation(source: Path, out: Path, workers: int = 2) -> tuple[float, float]:
    """Steady-state rate (files decoded per second) and start-up cost (s) of preparing ``source``.

    The rate counts from the first decoded file to the last; the start-up cost is the time to the
    first decoded file (worker start; on the resize path also the torch import in each worker).
    """
    summary = prepare_dataset(source, out, PreparationSettings(workers=workers, validation_fraction=0.05, **CLIP))
    return summary.decoded_files_per_second(), summary.first_result_s


def measure_loader(prepared: Path, batches: int, codec=None) -> float:
    """Clips per second of ``ClipLoader.next_batch`` (and, with ``codec``, the latent encoding of each batch)."""
    loader = ClipLoader(ShardDataset(prepared, "train"), global_batch_clips=LOADER_BATCH_CLIPS, seed=0)
    loader.next_batch()
    started = time.perf_counter()
    for _ in range(batches):
        batch = loader.next_batch()
        if codec is not None:
            codec.encode(torch.as_tensor(batch["video"]))
    return batches * LOADER_BATCH_CLIPS / (time.perf_counter() - started)


def measure_training(steps: int) -> dict:
    """Clips per second one training step of ``TRAINING_SIZE`` consumes, as ``dit.train`` takes it (the engine's
    step for one run: ``harness.engine_training_step``, latent clips, fp32), with the median and spread of ``steps``."""
    experiment = Experiment.load("config")
    config = experiment.model_config(TRAINING_SIZE)
    with torch_threads(TRAINING_THREADS):
        step = engine_training_step(experiment, config, [float(_DEFAULT["grid"]["learning_rates"][0])],
                                    TRAINING_BATCH_CLIPS, torch.device("cpu"))
        timer = InterleavedTimer({"training": step.run}, torch.device("cpu"))
        timer.warm_up(2)  # allocators and kernels
        for _ in range(steps):
            timer.round()
    timing = timer.spreads()["training"]
    return {"clips_per_s": TRAINING_BATCH_CLIPS / timing["median_s"], "step": timing,
            "context": run_context(torch.device("cpu"), torch.float32, TRAINING_BATCH_CLIPS, experiment.clip,
                                   config.attention, members=1, threads=TRAINING_THREADS)}


def run(clips: int = 512, loader_batches: int = 2000, training_steps: int = 20) -> tuple[dict, dict]:
    """Measure everything; return the rates (clips/s), start-up costs (s) and the loader/training ratio, and
    the training step's timing and run context."""
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-data-") as folder:
        root = Path(folder)
        source, results["generation"] = measure_generation(root / "gen", clips)
        small, _ = measure_generation(root / "gen-small", clips // 2, size=CLIP["height"])
        measure_preparation(small, root / "warmup")  # starts the worker pool's fork server once
        results["preparation_resize"], results["preparation_resize_startup_s"] = measure_preparation(source, root / "prepared")
        results["preparation"], results["preparation_startup_s"] = measure_preparation(small, root / "prepared-small")
        codec = fit_codec_from_data(root / "prepared", _LATENT["patch"], _LATENT["channels"], max_clips=_LATENT["max_clips"])
        results["loader"] = measure_loader(root / "prepared", loader_batches)
        results["loader_encoded"] = measure_loader(root / "prepared", loader_batches, codec)
    training = measure_training(training_steps)
    results["training"] = training["clips_per_s"]
    results["loader_over_training"] = results["loader_encoded"] / results["training"]
    return results, training


def report(results: dict) -> list[str]:
    commit = code_version()["commit"][:12]
    shape = f"{CLIP['frames']}x{CLIP['height']}x{CLIP['width']}"
    return [
        f"data-stage throughput ({torch.get_num_threads()} torch threads, torch {torch.__version__}, commit {commit})",
        f"generation ({GENERATED_SIZE}x{GENERATED_SIZE}, render + H.264 encode, 1 process): {results['generation']:10.0f} clips/s",
        f"preparation (2 workers, {GENERATED_SIZE}x{GENERATED_SIZE} -> {CLIP['height']}x{CLIP['width']}, resize): "
        f"{results['preparation_resize']:10.0f} clips/s  + {results['preparation_resize_startup_s']:.1f} s start-up",
        f"preparation (2 workers, {CLIP['height']}x{CLIP['width']} source, no resize):  {results['preparation']:10.0f} clips/s"
        f"  + {results['preparation_startup_s']:.1f} s start-up",
        f"loader (batch {LOADER_BATCH_CLIPS}, {shape} uint8):                 {results['loader']:10.0f} clips/s",
        f"loader + latent encoding ({_LATENT['channels']} channels per {_LATENT['patch']} tubelet):"
        f" {results['loader_encoded']:10.0f} clips/s",
        f"training {TRAINING_SIZE} (batch {TRAINING_BATCH_CLIPS}, {TRAINING_THREADS} thread(s), engine step): "
        f"{results['training']:10.1f} clips/s",
        f"loader with encoding / training = {results['loader_over_training']:.0f}x (required: at least {REQUIRED_RATIO:g}x)",
    ]


def test_loader_outpaces_training_tenfold(benchmark):
    """One round (the whole measurement); the rates go into the benchmark JSON's extra_info."""
    results, training = benchmark.pedantic(run, kwargs=dict(clips=256, loader_batches=500, training_steps=10), rounds=1,
                                           iterations=1)
    benchmark.extra_info.update({key: float(value) for key, value in results.items()})
    benchmark.extra_info.update(training["context"], training_step=training["step"], loader_batch_clips=LOADER_BATCH_CLIPS)
    print("\n" + "\n".join(report(results)))
    assert results["loader_over_training"] >= REQUIRED_RATIO


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=512, help="clips generated and prepared (default %(default)s)")
    parser.add_argument("--loader-batches", type=int, default=2000, help="loader batches timed (default %(default)s)")
    parser.add_argument("--training-steps", type=int, default=20, help="training steps timed (default %(default)s)")
    args = parser.parse_args(argv)
    results, _ = run(args.clips, args.loader_batches, args.training_steps)
    for line in report(results):
        print(line)
    return 0 if results["loader_over_training"] >= REQUIRED_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
