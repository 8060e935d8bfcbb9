"""Throughput of the data stage, and of the loader against what training consumes, measured in one process.

Run: ``.venv/bin/python benchmarks/bench_data.py`` (about 30-60 s on a 2-core CPU; ``--help`` for sizes),
or ``.venv/bin/python -m pytest benchmarks/bench_data.py -q -s``.

Measured, each in clips per second:

* generation: ``dit.data.synthetic.generate_dataset`` (render + H.264 encode), one process;
* preparation: ``dit.data.prepare.prepare_dataset`` with 2 decoding workers, on generated 32x32
  files (no resize) and on 64x64 files resized to 32x32 (the torchvision path), as a steady-state
  rate (first to last decoded file) plus the start-up time before the first file is decoded
  (worker start; the resize path also imports torch in each worker);
* loader: ``ClipLoader.next_batch`` at a global batch of 32 clips of 8x32x32 (memory-mapped shards
  in the page cache);
* training consumption (the baseline): one real training step of ``TRAINING_SIZE`` (the largest
  size of the default tiny grid) at the default clip shape, micro batch 32, forward + backward
  (``dit.diffusion.epsilon_mse``) + AdamW, median of several steps.

The loader must deliver at least ``REQUIRED_RATIO`` times the training consumption; the script
prints the ratio and exits with status 1 when it is lower.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from dit.data.loader import ClipLoader, ShardDataset
from dit.data.prepare import PreparationSettings, prepare_dataset
from dit.data.synthetic import GeneratorSettings, generate_dataset
from dit.provenance import code_version

TRAINING_SIZE = "tiny-1.6m"
TRAINING_BATCH_CLIPS = 32
CLIP = dict(frames=8, height=32, width=32)
REQUIRED_RATIO = 10.0


def measure_generation(folder: Path, clips: int, size: int = 32) -> tuple[Path, float]:
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


def measure_loader(prepared: Path, batches: int) -> float:
    loader = ClipLoader(ShardDataset(prepared, "train"), global_batch_clips=TRAINING_BATCH_CLIPS, seed=0)
    loader.next_batch()
    started = time.perf_counter()
    for _ in range(batches):
        loader.next_batch()
    return batches * TRAINING_BATCH_CLIPS / (time.perf_counter() - started)


def measure_training(steps: int) -> float:
    """Clips per second one real training step of ``TRAINING_SIZE`` consumes (micro batch 32, fp32)."""
    from dit.diffusion import NoiseSchedule, epsilon_mse, video_to_model_space
    from dit.model import VideoDiT, VideoDiTConfig

    torch.manual_seed(0)
    config = VideoDiTConfig.from_size(
        TRAINING_SIZE, clip_frames=CLIP["frames"], clip_height=CLIP["height"], clip_width=CLIP["width"]
    )
    model = VideoDiT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    schedule = NoiseSchedule()
    generator = torch.Generator().manual_seed(0)
    shape = (TRAINING_BATCH_CLIPS, CLIP["frames"], CLIP["height"], CLIP["width"], 3)
    video = video_to_model_space(torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator))
    caption_ids = torch.randint(2, config.vocab_size, (TRAINING_BATCH_CLIPS, config.caption_length), generator=generator)
    caption_mask = torch.ones_like(caption_ids, dtype=torch.bool)
    seconds = []
    for step in range(steps + 2):
        timesteps = torch.randint(0, schedule.num_timesteps, (TRAINING_BATCH_CLIPS,), generator=generator)
        noise = torch.randn(video.shape, generator=generator)
        started = time.perf_counter()
        loss = epsilon_mse(model, schedule, video, timesteps, noise, caption_ids, caption_mask).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 2:  # the first two steps warm up allocators and kernels
            seconds.append(time.perf_counter() - started)
    return TRAINING_BATCH_CLIPS / statistics.median(seconds)


def run(clips: int = 512, loader_batches: int = 2000, training_steps: int = 5) -> dict:
    """Measure everything; return the rates (clips/s), start-up costs (s) and the loader/training ratio."""
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-data-") as folder:
        root = Path(folder)
        source, results["generation"] = measure_generation(root / "gen", clips)
        big, _ = measure_generation(root / "gen64", clips // 2, size=64)
        measure_preparation(big, root / "warmup")  # starts the worker pool's fork server once
        results["preparation"], results["preparation_startup_s"] = measure_preparation(source, root / "prepared")
        results["preparation_resize"], results["preparation_resize_startup_s"] = measure_preparation(
            big, root / "prepared64"
        )
        results["loader"] = measure_loader(root / "prepared", loader_batches)
    results["training"] = measure_training(training_steps)
    results["loader_over_training"] = results["loader"] / results["training"]
    return results


def report(results: dict) -> list[str]:
    commit = code_version()["commit"][:12]
    return [
        f"data-stage throughput ({torch.get_num_threads()} torch threads, torch {torch.__version__}, commit {commit})",
        f"generation (render + H.264 encode, 1 process):       {results['generation']:10.0f} clips/s",
        f"preparation (2 workers, 32x32 source, no resize):    {results['preparation']:10.0f} clips/s"
        f"  + {results['preparation_startup_s']:.1f} s start-up",
        f"preparation (2 workers, 64x64 source, resize):       {results['preparation_resize']:10.0f} clips/s"
        f"  + {results['preparation_resize_startup_s']:.1f} s start-up",
        f"loader (batch {TRAINING_BATCH_CLIPS}, 8x32x32):                       {results['loader']:10.0f} clips/s",
        f"training {TRAINING_SIZE} (micro batch {TRAINING_BATCH_CLIPS}, fwd+bwd+AdamW):  {results['training']:10.1f} clips/s",
        f"loader / training = {results['loader_over_training']:.0f}x (required: at least {REQUIRED_RATIO:g}x)",
    ]


def test_loader_outpaces_training_tenfold():
    results = run(clips=256, loader_batches=500, training_steps=3)
    print("\n" + "\n".join(report(results)))
    assert results["loader_over_training"] >= REQUIRED_RATIO


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=512, help="clips generated and prepared (default %(default)s)")
    parser.add_argument("--loader-batches", type=int, default=2000, help="loader batches timed (default %(default)s)")
    parser.add_argument("--training-steps", type=int, default=5, help="training steps timed (default %(default)s)")
    args = parser.parse_args(argv)
    results = run(args.clips, args.loader_batches, args.training_steps)
    for line in report(results):
        print(line)
    return 0 if results["loader_over_training"] >= REQUIRED_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
