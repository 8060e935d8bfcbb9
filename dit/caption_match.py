"""Do samples follow their captions? An objective check on the embedded data set's known factors.

``python -m dit.caption_match --run RUN_DIR --out caption_match.json [--clips 32] [--seed 0]``

The embedded set (``dit.data.synthetic``) captions every clip with each object's colour and direction
of motion. This check draws held-aside captions from the generator's own grammar (scenes of a seed
the training set never used, keeping only scenes whose objects do not bounce, so each moves one way),
samples one clip per caption from the trained run, and reads each captioned object back from the
pixels:

* **colour**: a pixel bright enough to be an object (the background is black) takes the palette colour
  (``COLOURS``) whose direction in RGB space is nearest to its own (largest cosine), so that a dim or
  blurred rendering of a colour reads as that colour: the nearest colour by RGB distance reads a dim
  magenta as red. A colour is *visible* when it holds at least ``MIN_PIXELS`` pixels in at least half
  of the frames, and a clip's *main colours* are its visible colours with the most pixels over all
  frames, two at most. A captioned object's colour is *matched* when it is one of its clip's main
  colours;
* **direction**: for a matched object, the least-squares slope of its colour's centroid over the
  frames, along the axis where it moves more, gives left, right, up or down.

Rates are fractions (matched colours over the captioned objects, right directions over the matched
objects), with Wilson intervals at ``--confidence``, beside what chance gives: a clip whose main
colours do not depend on its caption has at most two of the eight palette colours, so it matches a
captioned colour (each drawn uniformly from the palette) with probability at most 2/8, and a random
direction is right with probability 1/4. Counting colours that are merely present would not have
that bound: a clip of every colour would match every caption. The same reader applied to the generator's
own frames of those captions (brought to the prepared size and through the run's latent codec, as
training clips are) gives the reader's ceiling, recorded as ``reference``.

Refused before sampling (exit status 2, nothing written): ``--clips`` below 1, a ``--confidence`` outside (0, 1),
the DDIM settings ``dit.sample.check_ddim_settings`` refuses (``--steps`` outside the run's schedule, a non-finite
``--guidance-scale``), a run that is not ready (``dit.evaluate.open_trained_run``), and an ``--out`` that is a
folder, lies below a file or is a file of the run.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from dit.atomic import OutputPathError, atomic_write_json, check_output_files
from dit.data.decode import resize_and_crop
from dit.data.synthetic import COLOURS, DIRECTIONS, GeneratorSettings, caption_scene, render_scene, sample_scene
from dit.evaluate import EvaluationInputError, RunNotReady, open_trained_run, run_files
from dit.provenance import provenance
from dit.sample import check_ddim_settings, sample_videos

#: Seed of the held-aside scenes (the default data set uses seed 0; any other seed gives other scenes).
CHECK_SEED = 20_241_126
#: Brightness (largest RGB channel, 0-255) above which a pixel can belong to an object.
BRIGHTNESS_THRESHOLD = 60
#: Pixels of an object's colour a frame needs for the object to count as visible in that frame.
MIN_PIXELS = 2
PALETTE = np.array(list(COLOURS.values()), dtype=np.float64)
#: The palette's directions in RGB space (unit vectors): a pixel's colour is the one nearest in direction.
PALETTE_DIRECTIONS = PALETTE / np.linalg.norm(PALETTE, axis=-1, keepdims=True)
NAMES = list(COLOURS)
#: A clip's main colours: this many at most.
MAIN_COLOURS = 2
CHANCE = {"colour": MAIN_COLOURS / len(COLOURS), "direction": 1 / len(DIRECTIONS)}


def check_scenes(count: int, settings: GeneratorSettings):
    """``count`` scenes of the generator (seed ``CHECK_SEED``) whose objects do not bounce, with their captions."""
    scenes, index = [], 0
    while len(scenes) < count:
        scene = sample_scene(settings, index)
        index += 1
        if not any(obj.bounces for obj in scene.objects):
            scenes.append(scene)
    return scenes


def colour_labels(frames: np.ndarray) -> np.ndarray:
    """Per pixel: index of the palette colour nearest in direction (largest cosine), or -1 for background; ``(F, H, W)``."""
    pixels = frames.astype(np.float64)
    directions = pixels / np.maximum(np.linalg.norm(pixels, axis=-1, keepdims=True), 1e-12)
    labels = (directions @ PALETTE_DIRECTIONS.T).argmax(axis=-1)
    return np.where(pixels.max(axis=-1) > BRIGHTNESS_THRESHOLD, labels, -1)


def _frames_showing(labels: np.ndarray, colour: str) -> np.ndarray:
    """Per frame: whether ``colour`` holds at least ``MIN_PIXELS`` of its pixels."""
    return (labels == NAMES.index(colour)).reshape(labels.shape[0], -1).sum(axis=1) >= MIN_PIXELS


def visible(labels: np.ndarray, colour: str) -> bool:
    """Whether ``colour`` holds at least ``MIN_PIXELS`` pixels in at least half of the frames."""
    showing = _frames_showing(labels, colour)
    return bool(showing.sum() * 2 >= len(showing))


def main_colours(labels: np.ndarray) -> list[str]:
    """The clip's visible colours with the most pixels over all frames, ``MAIN_COLOURS`` at most (ties: palette order)."""
    shown = [name for name in NAMES if visible(labels, name)]
    return sorted(shown, key=lambda name: -int((labels == NAMES.index(name)).sum()))[:MAIN_COLOURS]


def read_object(labels: np.ndarray, colour: str) -> dict:
    """Whether an object of ``colour`` is visible, and the direction its pixels move (``None`` if not visible)."""
    mask = labels == NAMES.index(colour)
    showing = _frames_showing(labels, colour)
    present = visible(labels, colour)
    if showing.sum() < 2:
        return {"present": present, "direction": None}
    frames = np.nonzero(showing)[0]
    rows = np.array([np.nonzero(mask[f])[0].mean() for f in frames])
    cols = np.array([np.nonzero(mask[f])[1].mean() for f in frames])
    row_slope, col_slope = np.polyfit(frames, rows, 1)[0], np.polyfit(frames, cols, 1)[0]
    if abs(col_slope) >= abs(row_slope):
        direction = "right" if col_slope > 0 else "left"
    else:
        direction = "down" if row_slope > 0 else "up"
    return {"present": present, "direction": direction}


def score(clips: np.ndarray, scenes) -> dict:
    """Matched colours and right directions of every captioned object of ``scenes`` in ``clips`` (uint8 ``(N, F, H, W, 3)``)."""
    objects, matched, right = 0, 0, 0
    for clip, scene in zip(clips, scenes, strict=True):
        labels = colour_labels(clip)
        main = main_colours(labels)
        for obj in scene.objects:
            objects += 1
            if obj.colour in main:
                matched += 1
                right += read_object(labels, obj.colour)["direction"] == obj.direction
    return {"objects": objects, "colour": matched, "direction_right": right}


def wilson(successes: int, trials: int, confidence: float) -> list[float]:
    """Wilson score interval of a binomial proportion."""
    if trials == 0:
        return [math.nan, math.nan]
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return [centre - half, centre + half]


def rates(counts: dict, confidence: float) -> dict:
    """Matched colours over all captioned objects; right directions over the matched objects (module docstring)."""
    out = {"objects": counts["objects"]}
    for key, hits, trials in (("colour", counts["colour"], counts["objects"]),
                              ("direction", counts["direction_right"], counts["colour"])):
        out[key] = {"rate": hits / trials if trials else math.nan, "interval": wilson(hits, trials, confidence),
                    "chance": CHANCE[key], "count": hits, "of": trials}
    return out


def reference_clips(scenes, settings: GeneratorSettings, run) -> np.ndarray:
    """The generator's own frames of ``scenes`` at the run's clip size, through its latent codec (as training saw them)."""
    frames, height, width = run.summary["clip_shape"]
    clips = np.stack([resize_and_crop(render_scene(scene, settings)[:frames], height, width) for scene in scenes])
    video = torch.from_numpy(clips)
    return run.space.decode(run.space.encode(video)).numpy() if hasattr(run.space, "decode") else clips


def caption_match(run_dir: Path, clips: int, seed: int, steps: int, guidance_scale: float, confidence: float) -> dict:
    """Sample one clip per held-aside caption from the run and score it and the reference frames (module docstring)."""
    run = open_trained_run(run_dir)
    check_ddim_settings(run, steps, guidance_scale)
    settings = GeneratorSettings(clips=clips, seed=CHECK_SEED)
    scenes = check_scenes(clips, settings)
    captions = [caption_scene(scene) for scene in scenes]
    tokenizer = run.validation_split().tokenizer
    ids = torch.as_tensor(np.stack([tokenizer.encode(caption) for caption in captions]), dtype=torch.long)
    samples = sample_videos(run, ids, steps=steps, guidance_scale=guidance_scale, seed=seed)
    return {
        "captions": captions,
        "samples": rates(score(samples, scenes), confidence),
        "reference": rates(score(reference_clips(scenes, settings, run), scenes), confidence),
        "confidence_level": confidence,
        "settings": {"clips": clips, "seed": seed, "steps": steps, "guidance_scale": guidance_scale,
                     "check_seed": CHECK_SEED, "brightness_threshold": BRIGHTNESS_THRESHOLD, "min_pixels": MIN_PIXELS,
                     "main_colours": MAIN_COLOURS, "colour_reading": "palette colour nearest in RGB direction"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dit.caption_match", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="a completed run folder")
    parser.add_argument("--out", required=True, type=Path, help="JSON to write")
    parser.add_argument("--clips", type=int, default=32, help="held-aside captions, one sample each (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default %(default)s)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default %(default)s)")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="classifier-free guidance (default %(default)s)")
    parser.add_argument("--confidence", type=float, default=0.95, help="level of the Wilson intervals (default %(default)s)")
    args = parser.parse_args(argv)
    if args.clips < 1 or not 0 < args.confidence < 1:
        print("dit.caption_match: --clips must be positive and --confidence inside (0, 1)", file=sys.stderr)
        return 2
    try:
        check_output_files([args.out], run_files(args.run))
    except OutputPathError as error:
        print(f"dit.caption_match: {error}", file=sys.stderr)
        return 2
    try:
        result = caption_match(args.run, args.clips, args.seed, args.steps, args.guidance_scale, args.confidence)
    except (RunNotReady, EvaluationInputError) as error:
        print(f"dit.caption_match: {error}", file=sys.stderr)
        return 2
    result["provenance"] = provenance({**vars(args), "run": str(args.run), "out": str(args.out)})
    atomic_write_json(args.out, result)
    samples = result["samples"]
    print(f"dit.caption_match: colour matched {samples['colour']['rate']:.2f} (chance {CHANCE['colour']:.2f}), "
          f"direction {samples['direction']['rate']:.2f} (chance {CHANCE['direction']:.2f}) over {samples['objects']} objects",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
