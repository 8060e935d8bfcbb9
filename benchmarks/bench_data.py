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

``test_step_inputs_from_the_encoded_split`` times what a training job does before each step's forward
pass (``dit.engine.EnsembleTrainer.step_inputs``: every seed's clips, timesteps, noise and caption ids,
stacked for the members) in the default's job with the most steps, its smallest size at its smallest
batch, with that job's members (its learning rates times its seeds): clips gathered from the training
split encoded once (``encoded``, the engine's path since a90589a) against clips read from the shards and
encoded batch by batch (``per_batch``, the path before), in turns in one process, on a prepared set of
the default's clip shape and latent codec. Both give the same tensors (``tests/test_latent.py``,
``tests/test_benchmarks.py``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
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


def step_inputs_trainers(folder: Path, clips: int = 256) -> tuple[dict, dict]:
    """Two ``EnsembleTrainer``s of the default's smallest size at 1 clip with that job's members on a set of
    ``clips`` generated clips, ``encoded`` gathering encoded clips and ``per_batch`` encoding each batch
    (module docstring), and the run context."""
    from dit.config import ensemble_from_dict, resumable_config_hash
    from dit.engine import EnsembleTrainer, Member
    from pipeline.runs import ensemble_config

    source, _ = measure_generation(folder / "gen", clips, size=CLIP["height"])
    prepare_dataset(source, folder / "prepared", PreparationSettings(workers=0, validation_fraction=0.05, **CLIP))
    codec = fit_codec_from_data(folder / "prepared", _LATENT["patch"], _LATENT["channels"], max_clips=_LATENT["max_clips"])
    codec.save(folder / "codec.npz")
    experiment = Experiment.load("config")
    job = experiment.job(_DEFAULT["grid"]["sizes"][0], min(_DEFAULT["grid"]["batch_clips"]))

    def trainer(name: str) -> EnsembleTrainer:
        ensemble = ensemble_config(experiment.config, job, str(folder / name / "runs"), str(folder / "prepared"),
                                   str(folder / "codec.npz"))
        members = [Member(config, out, resumable_config_hash(config)) for config, out in ensemble_from_dict(ensemble)]
        return EnsembleTrainer(members, folder / name / "job")

    trainers = {"encoded": trainer("encoded"), "per_batch": trainer("per_batch")}
    if trainers["encoded"].encoded_clips is None:
        raise RuntimeError(f"the engine did not encode the training split: {trainers['encoded'].encoded_clips_facts}")
    trainers["per_batch"].encoded_clips = None
    run = job.runs[0]
    context = run_context(torch.device("cpu"), torch.float32, run.batch_clips, experiment.clip,
                          experiment.config["model"]["attention"], members=len(job.runs), threads=TRAINING_THREADS)
    return trainers, {**context, "size": run.size, "seeds": len({member.seed for member in job.runs})}


def _next_step_inputs(trainer) -> Callable[[], None]:
    """A call that builds ``trainer``'s inputs of its next step each time."""
    steps = iter(range(1 << 62))
    return lambda: trainer.step_inputs(next(steps))


def test_step_inputs_from_the_encoded_split(benchmark, tmp_path):
    with torch_threads(TRAINING_THREADS):
        trainers, context = step_inputs_trainers(tmp_path)
        timer = InterleavedTimer({name: _next_step_inputs(job) for name, job in trainers.items()}, torch.device("cpu"))
        timer.warm_up(20)
        benchmark.pedantic(timer.round, rounds=400, iterations=1)
    medians, spreads = timer.medians(), timer.spreads()
    ratio = medians["per_batch"] / medians["encoded"]
    benchmark.extra_info.update(context, spreads=spreads, per_batch_over_encoded=ratio)
    print(f"\nstep inputs, {context['size']} at {context['batch_clips']} clip(s), {context['members']} members "
          f"({context['seeds']} seeds), {TRAINING_THREADS} thread(s): encoded split {1e3 * medians['encoded']:.3f} ms, "
          f"per batch {1e3 * medians['per_batch']:.3f} ms (medians of {spreads['encoded']['rounds']} rounds in turns), "
          f"ratio {ratio:.2f}")


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
