"""Command line of the data stage: ``python -m dit.data generate ...`` and ``python -m dit.data prepare ...``."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence

from dit.atomic import OutputPathError, Terminated
from dit.data.decode import REASONS
from dit.data.prepare import PreparationError, PreparationSettings, prepare_dataset
from dit.data.sources import VIDEO_EXTENSIONS
from dit.data.synthetic import GeneratorSettings, generate_dataset
from dit.data.video_io import PIXEL_FORMATS


def _generate_parser(commands) -> None:
    defaults = GeneratorSettings()
    parser = commands.add_parser(
        "generate",
        help="write the embedded synthetic data set (MP4 files + captions.csv)",
        description="Write seeded, captioned clips of moving glyphs and shapes as H.264 MP4 files, "
        "plus captions.csv (columns file,caption) and generation.json, into a new folder.",
    )
    parser.add_argument(
        "--out", required=True, help="output folder; an empty one or an earlier output of this command is replaced"
    )
    parser.add_argument("--clips", type=int, default=defaults.clips, help="number of clips (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    parser.add_argument("--frames", type=int, default=defaults.frames, help="frames per clip (default %(default)s)")
    parser.add_argument(
        "--size", type=int, default=None, help=f"frame height and width in pixels, even (default {defaults.height})"
    )
    parser.add_argument("--height", type=int, default=None, help="frame height in pixels (overrides --size)")
    parser.add_argument("--width", type=int, default=None, help="frame width in pixels (overrides --size)")
    parser.add_argument("--fps", type=float, default=defaults.fps, help="frames per second (default %(default)s)")
    parser.add_argument(
        "--min-objects", type=int, default=defaults.min_objects, help="fewest objects per clip (default %(default)s)"
    )
    parser.add_argument(
        "--max-objects", type=int, default=defaults.max_objects, help="most objects per clip (default %(default)s)"
    )
    parser.add_argument(
        "--crf", type=int, default=defaults.crf, help="x264 constant rate factor, 0 = lossless (default %(default)s)"
    )
    parser.add_argument(
        "--pixel-format", default=defaults.pixel_format, choices=sorted(PIXEL_FORMATS),
        help="encoder pixel format (default %(default)s)",
    )


def _prepare_parser(commands) -> None:
    defaults = PreparationSettings()
    parser = commands.add_parser(
        "prepare",
        help="decode a folder of videos into clip shards + manifest.json",
        description=f"Decode every {'/'.join(VIDEO_EXTENSIONS)} file under --source (recursively) into one "
        "fixed-size clip each, tokenize its caption, and write memory-mappable shards and manifest.json "
        "into --out. Files that cannot be used are listed in the manifest with a reason: "
        + ", ".join(REASONS)
        + ". Exit status 1 when too many are skipped or nothing usable is found, 2 for a bad option or an --out "
        "that is neither empty nor an earlier prepared folder (--out is then left as it was).",
    )
    parser.add_argument("--source", required=True, help="folder searched recursively for video files")
    parser.add_argument(
        "--out", required=True, help="output folder; an empty one or an earlier output of this command is replaced"
    )
    parser.add_argument(
        "--captions",
        default=None,
        help="CSV with columns file,caption (file relative to --source); default: SOURCE/captions.csv if it "
        "exists, else each file's parent folder name (ApplyEyeMakeup -> 'apply eye makeup')",
    )
    parser.add_argument(
        "--folder-captions", action="store_true", help="caption by parent folder name even if SOURCE/captions.csv exists"
    )
    parser.add_argument("--frames", type=int, default=defaults.frames, help="frames per clip (default %(default)s)")
    parser.add_argument(
        "--stride", type=int, default=defaults.stride, help="source frames between clip frames (default %(default)s)"
    )
    parser.add_argument(
        "--start",
        choices=("center", "random"),
        default=defaults.start,
        help="clip start in the video: centred, or random seeded per file (default %(default)s)",
    )
    parser.add_argument("--height", type=int, default=defaults.height, help="clip height in pixels (default %(default)s)")
    parser.add_argument("--width", type=int, default=defaults.width, help="clip width in pixels (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of random clip starts (default %(default)s)")
    parser.add_argument(
        "--vocab-size", type=int, default=defaults.vocab_size, help="tokenizer ids, 2 special included (default %(default)s)"
    )
    parser.add_argument(
        "--caption-length",
        type=int,
        default=defaults.caption_length,
        help="tokens per caption, begin token included (default %(default)s)",
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=defaults.validation_fraction,
        help="share of files in the validation split, by path hash, 0..1 (default %(default)s)",
    )
    parser.add_argument(
        "--max-skipped-fraction",
        type=float,
        default=defaults.max_skipped_fraction,
        help="fail when more than this share of video files is skipped, 0..1 (default %(default)s)",
    )
    parser.add_argument(
        "--shard-megabytes",
        type=float,
        default=defaults.shard_megabytes,
        help="target size of one frames shard in MiB (default %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=defaults.workers,
        help="decoding processes; 0 decodes in this process (default %(default)s = CPU cores, at most 8)",
    )
    parser.add_argument(
        "--decode-timeout",
        type=float,
        default=defaults.decode_timeout_s,
        help="seconds one file may take to decode before it is skipped (default %(default)s)",
    )


def generate_main(args: argparse.Namespace) -> int:
    """Write the generated set; a negative ``--seed`` and a non-positive ``--size``, ``--height`` or ``--width``
    are refused (exit status 2) before anything is written."""
    base = GeneratorSettings()
    size = args.size
    if args.seed < 0:
        print(f"error: --seed must be a non-negative integer, got {args.seed}", file=sys.stderr)
        return 2
    for option, value in (("--size", size), ("--height", args.height), ("--width", args.width)):
        if value is not None and value < 1:
            print(f"error: {option} must be a positive number of pixels, got {value}", file=sys.stderr)
            return 2
    try:
        settings = GeneratorSettings(
            clips=args.clips,
            frames=args.frames,
            height=args.height if args.height is not None else size if size is not None else base.height,
            width=args.width if args.width is not None else size if size is not None else base.width,
            fps=args.fps,
            seed=args.seed,
            min_objects=args.min_objects,
            max_objects=args.max_objects,
            crf=args.crf,
            pixel_format=args.pixel_format,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    status, summary = _write_output(args.out, lambda: generate_dataset(args.out, settings))
    if summary is None:
        return status
    print(
        f"wrote {summary.clips} clips ({settings.frames} frames at {settings.height}x{settings.width} pixels, "
        f"{settings.fps:g} fps, seed {settings.seed}) to {summary.out} in {summary.seconds:.1f} s "
        f"({summary.clips_per_second:.0f} clips/s)"
    )
    return 0


def prepare_main(args: argparse.Namespace) -> int:
    try:
        settings = PreparationSettings(
            frames=args.frames,
            stride=args.stride,
            height=args.height,
            width=args.width,
            start=args.start,
            seed=args.seed,
            vocab_size=args.vocab_size,
            caption_length=args.caption_length,
            validation_fraction=args.validation_fraction,
            max_skipped_fraction=args.max_skipped_fraction,
            shard_megabytes=args.shard_megabytes,
            workers=args.workers,
            decode_timeout_s=args.decode_timeout,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        status, summary = _write_output(
            args.out,
            lambda: prepare_dataset(
                args.source, args.out, settings, captions_csv=args.captions, folder_captions=args.folder_captions
            ),
        )
    except PreparationError as error:
        print(f"error: preparation failed: {error}", file=sys.stderr)
        if error.summary is not None:
            for line in error.summary.lines(examples_per_reason=10):
                print(line, file=sys.stderr)
        print(f"nothing was written to {args.out}", file=sys.stderr)
        return 1
    if summary is None:
        return status
    for line in summary.lines(examples_per_reason=3):
        print(line)
    print(f"wrote {args.out} ({summary.clips_per_second():.0f} clips/s)")
    return 0


def _write_output(out: str, write: Callable):
    """``(0, write())``; or ``(status, None)`` with a message when ``out`` may not or cannot be written, or on SIGTERM."""
    try:
        return 0, write()
    except OutputPathError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2, None
    except OSError as error:
        print(f"error: cannot write {out}: {error}", file=sys.stderr)
        return 2, None
    except Terminated as error:
        print(f"error: {error}; nothing was written to {out}", file=sys.stderr)
        return 128 + signal.SIGTERM, None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dit.data", description="Data stage: generate the synthetic data set, prepare video folders."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _generate_parser(commands)
    _prepare_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "generate":
        return generate_main(args)
    return prepare_main(args)


if __name__ == "__main__":
    sys.exit(main())
