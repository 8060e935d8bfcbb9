"""Sample videos from a trained run: ``python -m dit.sample --run RUN_DIR --out DIR [--caption TEXT ...]``.

One video per caption, drawn with DDIM (``dit.ddim.ddim_sample``) and classifier-free guidance
against the null caption ``tokenizer.encode("")``. Caption ``i`` starts from noise seeded by
``(--seed, i)`` alone, so a caption's video does not depend on the other captions, and the same
command gives the same videos. Captions are tokenized with the tokenizer recorded in the run's
data manifest.

Files written into ``--out``, which is replaced as a whole once every file is complete (``dit.atomic.atomic_directory``:
a killed call leaves the earlier folder as it was); an existing ``--out`` is replaced only when it is empty or holds
only the files below (``is_sample_folder``):

* ``sample_000.mp4``, ...: one H.264 MP4 per caption, frames enlarged ``--upscale`` times
  (nearest neighbour), at ``--fps`` frames per second;
* ``samples.gif``: all samples tiled side by side in rows and columns (row-major in caption order,
  1-pixel grey lines between them before enlarging), one GIF frame per video frame; ``index.json``
  gives the rows and columns under ``gif_grid``;
* ``contact_sheet.png``: one row per caption (the caption above it), one column per frame;
* ``samples.npy``: the generated clips at model resolution, uint8 ``(captions, frames, height, width, 3)``;
* ``index.json``: captions, files, sampler settings, run identity and provenance.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dit.atomic import (
    OutputPathError,
    atomic_directory,
    atomic_path,
    atomic_write_json,
    check_output_files,
    check_replaceable,
)
from dit.data.loader import ShardDataset
from dit.data.video_io import enlarge, write_gif, write_mp4
from dit.ddim import ddim_sample
from dit.distributed import autocast
from dit.evaluate import (
    EXIT_INPUT_ERROR,
    EXIT_OK,
    EvaluationInputError,
    TrainedRun,
    add_device_arguments,
    open_trained_run,
)
from dit.provenance import provenance
from dit.seeds import stable_seed
from dit.text import PAD_ID, CaptionTokenizer

#: Captions sampled when none are given: in the grammar and vocabulary of the embedded data set
#: (``dit.data.synthetic``: two objects, ``{size} {colour} {name} moves {direction} {speed}``
#: [``and bounces``] joined by ``while``, optional ``, {colour} {name} in front``).
DEFAULT_CAPTIONS = (
    "big red 7 moves left slowly while small blue square moves up quickly",
    "small green circle moves right quickly and bounces while big yellow K moves down slowly",
    "big white triangle moves up slowly while small magenta 3 moves left slowly",
    "small cyan diamond moves down quickly and bounces while big orange cross moves right slowly",
    "big blue E moves right slowly while small red circle moves left quickly, red circle in front",
    "small yellow square moves left slowly while big green 5 moves up quickly and bounces",
    "big magenta cross moves down slowly while small white 9 moves right quickly",
    "small orange triangle moves up quickly and bounces while big cyan M moves left slowly",
)

#: Grey level of the lines between the tiled videos of the GIF.
TILE_LINE_LEVEL = 96
MP4_NAME = "sample_{index:03d}.mp4"
GIF_NAME = "samples.gif"
CONTACT_SHEET_NAME = "contact_sheet.png"
SAMPLES_NAME = "samples.npy"
INDEX_NAME = "index.json"


def read_captions_file(path: str | Path) -> list[str]:
    """Captions from a UTF-8 text file, one per line; blank lines are not captions and are passed over."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise EvaluationInputError(f"--captions-file {path}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise EvaluationInputError(f"--captions-file {path}: not UTF-8 text: {error}") from None
    captions = [line.strip() for line in text.splitlines() if line.strip()]
    if not captions:
        raise EvaluationInputError(f"--captions-file {path}: holds no captions (one caption per line)")
    return captions


def caption_list(captions: Sequence[str] | None, captions_file: str | Path | None) -> list[str]:
    """``--caption`` values followed by the lines of ``--captions-file``; ``DEFAULT_CAPTIONS`` if neither is given."""
    chosen = list(captions or [])
    for position, caption in enumerate(chosen):
        if not caption.strip():
            raise EvaluationInputError(f"--caption number {position + 1} is empty (the null caption is not a prompt)")
    if captions_file is not None:
        chosen += read_captions_file(captions_file)
    return chosen or list(DEFAULT_CAPTIONS)


def sample_seed(seed: int, position: int) -> int:
    """Generator seed of the caption at ``position`` under ``--seed``."""
    return stable_seed(int(seed), "sample", int(position))


def sample_videos(
    run: TrainedRun,
    caption_ids: torch.Tensor,
    steps: int = 50,
    guidance_scale: float = 3.0,
    eta: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """One clip per caption row of ``caption_ids`` ``(B, caption_length)``: uint8 ``(B, F, H, W, 3)``.

    Each predicted clean clip is clamped to ``[-1, 1]`` in pixel space only: the latent codec's latents have unit
    variance, and many of their values lie outside that range."""
    c = run.model_config
    videos = []
    for position, ids in enumerate(caption_ids):
        generator = torch.Generator(device="cpu").manual_seed(sample_seed(seed, position))
        ids = ids[None].to(run.device)
        with autocast(run.precision, run.device):
            x = ddim_sample(
                run.model,
                run.schedule,
                ids,
                ids != PAD_ID,
                (1, c.in_channels, c.clip_frames, c.clip_height, c.clip_width),
                steps=steps,
                guidance_scale=guidance_scale,
                eta=eta,
                generator=generator,
                clip_denoised=run.space.bounded,  # pixels lie in [-1, 1]; unit-variance latents do not
            )
        videos.append(run.space.decode(x.float().cpu()).numpy()[0])
    return np.stack(videos)


def tile_shape(count: int) -> tuple[int, int]:
    """Rows and columns of the near-square tiling of ``count`` videos (columns first: ``ceil(sqrt(count))``)."""
    columns = math.ceil(math.sqrt(count))
    return math.ceil(count / columns), columns


def tile_videos(videos: np.ndarray, line_level: int = TILE_LINE_LEVEL) -> np.ndarray:
    """Videos ``(N, F, H, W, 3)`` tiled row-major into ``tile_shape(N)``, 1-pixel lines between tiles: ``(F, H', W', 3)``."""
    count, frames, height, width, channels = videos.shape
    rows, columns = tile_shape(count)
    tiled = np.full(
        (frames, rows * (height + 1) - 1, columns * (width + 1) - 1, channels), line_level, dtype=np.uint8
    )
    for position in range(count):
        row, column = divmod(position, columns)
        top, left = row * (height + 1), column * (width + 1)
        tiled[:, top : top + height, left : left + width] = videos[position]
    return tiled


def write_contact_sheet(videos: np.ndarray, captions: Sequence[str], path: str | Path, title: str = "") -> Path:
    """PNG with one row per video (its caption above the row) and one column per frame."""
    import matplotlib  # deferred: matplotlib takes seconds to import and only the contact sheet uses it

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    count, frames, height, width = videos.shape[:4]
    cell_inches = 0.9  # width of one frame
    image_inches = cell_inches * height / width
    gap_inches = 0.05
    figure_width = max(frames * (cell_inches + gap_inches), 4.0)
    characters_per_line = max(int(figure_width * 72 / (7 * 0.6)), 20)
    labels = [textwrap.fill(caption, characters_per_line) for caption in captions]
    label_inches = [0.13 * (label.count("\n") + 1) + 0.06 for label in labels]
    title_inches = 0.3 if title else 0.0
    footer_inches = 0.2
    figure_height = title_inches + sum(label_inches) + count * image_inches + footer_inches
    figure = plt.figure(figsize=(figure_width, figure_height), dpi=100)
    top = figure_height - title_inches  # inches from the bottom edge
    for row in range(count):
        top -= label_inches[row]
        figure.text(0.01, (top + 0.03) / figure_height, labels[row], fontsize=7, va="bottom", ha="left")
        top -= image_inches
        for frame in range(frames):
            left = frame * (cell_inches + gap_inches) + gap_inches / 2
            axes = figure.add_axes(
                (left / figure_width, top / figure_height, cell_inches / figure_width, image_inches / figure_height)
            )
            axes.imshow(videos[row, frame], interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            if row == count - 1:
                axes.set_xlabel(f"frame {frame}", fontsize=6, labelpad=2)
    if title:
        figure.text(0.01, 1.0 - 0.06 / figure_height, title, fontsize=8, va="top", ha="left")
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return Path(path)


def training_vocabulary(run: TrainedRun) -> set[str]:
    """The words of the run's training captions (as the tokenizer normalizes them)."""
    words: set[str] = set()
    for caption in ShardDataset(run.data_root, split="train").captions:
        words.update(CaptionTokenizer.words(caption))
    return words


def check_ddim_settings(run: TrainedRun, steps: int, guidance_scale: float, eta: float = 0.0) -> None:
    """``EvaluationInputError`` naming the flag for DDIM settings ``sample_videos`` cannot use: ``--steps`` outside
    ``[1, num_timesteps]`` of the run's schedule, a non-finite ``--guidance-scale`` (NaN or infinity turns every
    sample black), and an ``--eta`` that is negative or not finite."""
    if not 1 <= steps <= run.schedule.num_timesteps:
        raise EvaluationInputError(f"--steps must lie in [1, {run.schedule.num_timesteps}], got {steps}")
    if not math.isfinite(guidance_scale):
        raise EvaluationInputError(f"--guidance-scale must be a finite number, got {guidance_scale}")
    if not 0 <= eta < math.inf:
        raise EvaluationInputError(f"--eta must be >= 0 and finite, got {eta}")


def check_sampler_settings(run: TrainedRun, captions: Sequence[str], steps: int, eta: float, upscale: int,
                           fps: float, guidance_scale: float = 3.0) -> None:
    """``EvaluationInputError`` naming the flag for settings ``sample_run`` cannot use (``check_ddim_settings``, and
    no captions, a non-positive ``--upscale``, a ``--fps`` that is not positive and finite)."""
    if not captions:
        raise EvaluationInputError("no captions to sample")
    if upscale < 1:
        raise EvaluationInputError(f"--upscale must be a positive integer, got {upscale}")
    if not 0 < fps < math.inf:
        raise EvaluationInputError(f"--fps must be positive and finite, got {fps}")
    check_ddim_settings(run, steps, guidance_scale, eta)


def sample_run(
    run: TrainedRun,
    out: str | Path,
    captions: Sequence[str],
    steps: int = 50,
    guidance_scale: float = 3.0,
    eta: float = 0.0,
    seed: int = 0,
    upscale: int = 4,
    fps: float = 8.0,
) -> dict:
    """Sample one video per caption and write the files of the module docstring; returns the index record."""
    check_sampler_settings(run, captions, steps, eta, upscale, fps, guidance_scale)
    out = Path(out)
    tokenizer = run.validation_split().tokenizer
    caption_ids = torch.as_tensor(tokenizer.encode_batch(captions), dtype=torch.long)
    known_words = training_vocabulary(run)

    started = time.perf_counter()
    videos = sample_videos(run, caption_ids, steps=steps, guidance_scale=guidance_scale, eta=eta, seed=seed)
    sampling_seconds = time.perf_counter() - started

    entries = []
    for position, caption in enumerate(captions):
        words = tokenizer.words(caption)
        entries.append(
            {
                "caption": caption,
                "mp4": MP4_NAME.format(index=position),
                "seed": sample_seed(seed, position),
                "caption_ids": caption_ids[position].tolist(),
                "truncated": tokenizer.truncated(caption),
                "words_not_in_training_captions": sorted({w for w in words if w not in known_words}),
            }
        )
    settings = {
        "sampler": "ddim",
        "steps": steps,
        "guidance_scale": guidance_scale,
        "eta": eta,
        "seed": seed,
        "null_caption": "",
        "upscale": upscale,
        "fps": fps,
    }
    record = index_record(run, captions, entries, videos.shape[1:4], settings, sampling_seconds, tokenizer)
    try:
        with atomic_directory(out, replaces=is_sample_folder, kind="samples folder") as folder:
            for position, entry in enumerate(entries):
                write_mp4(enlarge(videos[position], upscale), folder / entry["mp4"], fps=fps)
            write_gif(tile_videos(videos), folder / GIF_NAME, fps=fps, scale=upscale)
            with atomic_path(folder / SAMPLES_NAME, suffix=".npy") as tmp:
                np.save(tmp, videos)
            write_contact_sheet(
                videos, captions, folder / CONTACT_SHEET_NAME,
                title=f"{run.run_id}: DDIM {steps} steps, guidance {guidance_scale:g}, eta {eta:g}, seed {seed}",
            )
            atomic_write_json(folder / INDEX_NAME, record)
    except OutputPathError as error:
        raise EvaluationInputError(f"--out: {error}") from None
    return record


#: Names of the files a samples folder holds (``sample_run``).
SAMPLE_FILE_PATTERN = re.compile(r"sample_[0-9]{3,}\.mp4|" + "|".join(
    re.escape(name) for name in (GIF_NAME, CONTACT_SHEET_NAME, SAMPLES_NAME, INDEX_NAME)))


def is_sample_folder(folder: Path) -> bool:
    """Whether ``folder`` holds only files of an earlier ``sample_run`` (``SAMPLE_FILE_PATTERN``), so it may be replaced."""
    return all(SAMPLE_FILE_PATTERN.fullmatch(entry.name) and entry.is_file() for entry in Path(folder).iterdir())


def index_record(run: TrainedRun, captions: Sequence[str], entries: list[dict], clip_shape: Sequence[int],
                 settings: dict, sampling_seconds: float, tokenizer: CaptionTokenizer) -> dict:
    """The ``index.json`` record: per-caption ``entries``, files, shapes (frames, height, width in pixels), settings."""
    frames, height, width = clip_shape
    upscale = settings["upscale"]
    rows, columns = tile_shape(len(captions))
    return {
        "kind": "samples",
        "captions": entries,
        "files": {
            "mp4": [entry["mp4"] for entry in entries],
            "gif": GIF_NAME,
            "contact_sheet": CONTACT_SHEET_NAME,
            "samples": SAMPLES_NAME,
        },
        "clip_shape": [frames, height, width],
        "mp4_shape": [frames, height * upscale, width * upscale],
        "gif_grid": {"rows": rows, "columns": columns, "order": "row-major by caption"},
        "sampler": settings,
        "sampling_seconds": sampling_seconds,
        "tokenizer": tokenizer.to_dict(),
        "run": run.describe(),
        "provenance": provenance({"command": "sample", "run": str(run.run_dir), "captions": list(captions), **settings}),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dit.sample",
        description="Sample one video per caption from a completed dit.train run with DDIM and classifier-free "
        "guidance; writes MP4s, a GIF grid, a PNG contact sheet, samples.npy and index.json into --out.",
    )
    parser.add_argument("--run", required=True, type=Path, help="run folder written by python -m dit.train")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder, replaced as a whole (only an empty one or an earlier samples folder)")
    parser.add_argument(
        "--caption", action="append", default=None, metavar="TEXT", help="a caption to sample (repeatable)"
    )
    parser.add_argument("--captions-file", type=Path, default=None, help="text file with one caption per line")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default %(default)s)")
    parser.add_argument(
        "--guidance-scale", type=float, default=3.0, help="classifier-free guidance scale; 1 = none (default %(default)s)"
    )
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta: 0 deterministic, 1 DDPM-like (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default %(default)s)")
    parser.add_argument("--upscale", type=int, default=4, help="pixel enlargement of MP4/GIF frames (default %(default)s)")
    parser.add_argument("--fps", type=float, default=8.0, help="frames per second of MP4/GIF (default %(default)s)")
    add_device_arguments(parser)
    return parser


def output_files(out: str | Path, count: int) -> list[Path]:
    """The files ``sample_run`` writes into ``out`` for ``count`` captions."""
    out = Path(out)
    return [*(out / MP4_NAME.format(index=i) for i in range(count)), out / GIF_NAME, out / SAMPLES_NAME,
            out / CONTACT_SHEET_NAME, out / INDEX_NAME]


def main(argv: list[str] | None = None) -> int:
    """Refused before any sampling (exit status 2): bad flags (``check_sampler_settings``), a run that is not
    ready, and an ``--out`` that is a file or lies below one, whose files would be folders or the captions file, or
    that holds other files than an earlier call's (``is_sample_folder``)."""
    args = build_parser().parse_args(argv)
    try:
        captions = caption_list(args.caption, args.captions_file)
        try:
            check_output_files(output_files(args.out, len(captions)), [args.captions_file])
            check_replaceable(args.out, is_sample_folder, "samples folder")
        except OutputPathError as error:
            raise EvaluationInputError(f"--out: {error}") from None
        run = open_trained_run(args.run, args.device, args.threads)
        record = sample_run(
            run,
            args.out,
            captions,
            steps=args.steps,
            guidance_scale=args.guidance_scale,
            eta=args.eta,
            seed=args.seed,
            upscale=args.upscale,
            fps=args.fps,
        )
    except EvaluationInputError as error:
        print(f"dit.sample: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    print(
        f"dit.sample: wrote {len(record['captions'])} samples to {args.out} ({INDEX_NAME}, {GIF_NAME}, "
        f"{CONTACT_SHEET_NAME})",
        file=sys.stderr,
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
