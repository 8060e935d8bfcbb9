"""Preparation: a folder of video files -> memory-mappable shards of fixed-size clips plus a manifest.

``python -m dit.data prepare --source DIR --out DIR`` (see ``dit.data.__main__``) calls
``prepare_dataset``. The source folder is searched recursively for ``.mp4 .avi .mkv .webm .mov``
files (any letter case). Captions come from a CSV with columns ``file,caption`` (``file`` relative
to the source folder) when one is given or when ``SOURCE/captions.csv`` exists, else from the name
of each file's parent folder (UCF-101 layout: ``ApplyEyeMakeup/v_..._c01.avi`` -> ``"apply eye makeup"``).

Each file gives one clip (``dit.data.decode``), tokenized with ``dit.text.CaptionTokenizer``. A
file's split is fixed by a hash of its relative path alone, so adding files never moves existing
ones between ``train`` and ``validation``. Files that cannot be used are listed in the manifest
with a reason code and message; the run fails (``PreparationError``) when their share exceeds
``max_skipped_fraction`` or nothing usable remains. The output folder is built aside and renamed
into place at the end, so it is complete or absent; an existing one is replaced only when it is
empty or an earlier prepared folder (``dit.atomic.OutputPathError`` otherwise).

Output folder::

    manifest.json                      counts, shapes, sha256 per shard file, every file, provenance
                                       (per used file: decoder, codec, rotation_degrees applied,
                                       source_size [height, width] after rotation)
    train-00000.frames.npy             uint8 (n, frames, height, width, 3), RGB
    train-00000.caption_ids.npy        int32 (n, caption_length), dit.text ids
    train-00000.clips.json             {"captions": [...], "sources": [...], "start_frames": [...]}
    validation-00000.*                 the same for the validation split
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dit.atomic import atomic_directory, atomic_write_json
from dit.data.decode import REASONS, ClipSettings, DecodedClip, SkipReason, check_readable
from dit.data.shards import MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_VERSION, SPLITS, ShardWriter, is_prepared_folder
from dit.data.sources import (
    DEFAULT_CAPTIONS_NAME,
    VIDEO_EXTENSIONS,
    CaptionsCsvError,
    caption_for,
    find_video_files,
    is_utf8_path,
    printable_path,
    read_captions_csv,
    split_of,
)
from dit.data.workers import DecodePool
from dit.provenance import file_sha256, provenance
from dit.text import CaptionTokenizer

#: Reasons found before decoding (no decoder involved).
_PRECHECK_REASONS = ("unreadable", "empty_file", "missing_caption")


class PreparationError(RuntimeError):
    """Preparation failed; ``summary`` (when set) holds the counts and skipped files."""

    def __init__(self, message: str, summary: "PreparationSummary | None" = None):
        super().__init__(message)
        self.summary = summary


def available_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class PreparationSettings:
    """Everything that decides the content of a prepared folder.

    Attributes:
        frames, stride, height, width, start, seed: the clip cut from each file (``ClipSettings``).
        vocab_size, caption_length: tokenizer settings (ids per vocabulary, tokens per caption).
        validation_fraction: share of files (by path hash) in the validation split.
        max_skipped_fraction: the run fails when more than this share of the video files is skipped.
        shard_megabytes: target size of one frames shard in MiB (at least one clip per shard).
        workers: decoding processes (0 decodes in this process, without crash protection).
        decode_timeout_s: seconds one file may take to decode before it is skipped.
    """

    frames: int = 8
    stride: int = 1
    height: int = 32
    width: int = 32
    start: str = "center"
    seed: int = 0
    vocab_size: int = 4096
    caption_length: int = 24
    validation_fraction: float = 0.05
    max_skipped_fraction: float = 0.05
    shard_megabytes: float = 256.0
    workers: int = field(default_factory=lambda: min(8, available_cores()))
    decode_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        self.clip_settings()  # validates the clip fields
        self.tokenizer()
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must lie in [0, 1), got {self.validation_fraction}")
        if not 0.0 <= self.max_skipped_fraction <= 1.0:
            raise ValueError(f"max_skipped_fraction must lie in [0, 1], got {self.max_skipped_fraction}")
        if not (math.isfinite(self.shard_megabytes) and self.shard_megabytes > 0):
            raise ValueError(f"shard_megabytes must be a positive number, got {self.shard_megabytes}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if not (math.isfinite(self.decode_timeout_s) and self.decode_timeout_s > 0):
            raise ValueError(f"decode_timeout_s must be a positive number of seconds, got {self.decode_timeout_s}")

    def clip_settings(self) -> ClipSettings:
        return ClipSettings(
            frames=self.frames, stride=self.stride, height=self.height, width=self.width, start=self.start, seed=self.seed
        )

    def tokenizer(self) -> CaptionTokenizer:
        return CaptionTokenizer(vocab_size=self.vocab_size, max_length=self.caption_length)

    @property
    def clip_bytes(self) -> int:
        return self.frames * self.height * self.width * 3

    @property
    def shard_clips(self) -> int:
        """Clips per shard."""
        return max(1, int(self.shard_megabytes * 2**20) // self.clip_bytes)

    def content_config(self) -> dict:
        """The settings that decide the output's content (not how fast it is made)."""
        record = asdict(self)
        for key in ("workers", "decode_timeout_s"):
            record.pop(key)
        return record


@dataclass
class SkippedFile:
    path: str
    split: str
    reason: str
    message: str

    def to_dict(self) -> dict:
        return {"path": self.path, "split": self.split, "reason": self.reason, "message": self.message}


@dataclass
class PreparationSummary:
    """Counts of one preparation run (also what the command prints)."""

    source: str
    out: str
    video_files: int = 0
    clips: dict[str, int] = field(default_factory=lambda: {split: 0 for split in SPLITS})
    skipped: list[SkippedFile] = field(default_factory=list)
    ignored_files: int = 0
    truncated_captions: int = 0
    captions_without_video: int = 0
    seconds: float = 0.0
    first_result_s: float = 0.0  # from the start to the first decoded file (worker start-up included)
    last_result_s: float = 0.0  # from the start to the last decoded file
    max_skipped_fraction: float = 0.05

    @property
    def usable(self) -> int:
        return sum(self.clips.values())

    @property
    def skipped_fraction(self) -> float:
        return len(self.skipped) / self.video_files if self.video_files else 0.0

    def skipped_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(item.reason for item in self.skipped).items()))

    def clips_per_second(self) -> float:
        """Usable clips per second of the whole run."""
        return self.usable / self.seconds if self.seconds > 0 else float("inf")

    def decoded_files_per_second(self) -> float:
        """Files decoded per second once the first result arrived (the steady-state rate)."""
        span = self.last_result_s - self.first_result_s
        decoded = self.usable + sum(item.reason not in _PRECHECK_REASONS for item in self.skipped)
        return (decoded - 1) / span if span > 0 and decoded > 1 else float("nan")

    def lines(self, examples_per_reason: int = 0) -> list[str]:
        """Human-readable summary lines; with ``examples_per_reason``, skipped files are listed too."""
        lines = [
            f"{self.video_files} video files under {self.source}: {self.usable} clips prepared "
            f"(train {self.clips['train']}, validation {self.clips['validation']}) in {self.seconds:.1f} s"
        ]
        reasons = ", ".join(f"{code} {count}" for code, count in self.skipped_by_reason().items())
        lines.append(
            f"skipped {len(self.skipped)} files ({100 * self.skipped_fraction:.2f}%, "
            f"limit {100 * self.max_skipped_fraction:.2f}%)" + (f": {reasons}" if reasons else "")
        )
        if examples_per_reason:
            shown: Counter = Counter()
            for item in self.skipped:
                if shown[item.reason] < examples_per_reason:
                    lines.append(f"  {item.reason}: {item.path}: {item.message}")
                shown[item.reason] += 1
            for reason, count in shown.items():
                if count > examples_per_reason:
                    lines.append(f"  {reason}: ... and {count - examples_per_reason} more (see the manifest)")
        if self.ignored_files:
            lines.append(f"ignored {self.ignored_files} files without a video extension ({', '.join(VIDEO_EXTENSIONS)})")
        if self.truncated_captions:
            lines.append(f"{self.truncated_captions} captions were longer than the tokenizer keeps and were truncated")
        if self.captions_without_video:
            lines.append(f"{self.captions_without_video} caption rows name no video file found under the source")
        return lines


def publish_permissions(folder: Path) -> None:
    """Give a folder built with private temporary permissions the usual ones (``0o777``/``0o666`` less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def prepare_dataset(
    source: str | os.PathLike,
    out: str | os.PathLike,
    settings: PreparationSettings = PreparationSettings(),
    captions_csv: str | os.PathLike | None = None,
    folder_captions: bool = False,
) -> PreparationSummary:
    """Prepare every video file under ``source`` into shards in ``out`` (see the module docstring).

    Args:
        captions_csv: CSV with columns ``file,caption``; default ``SOURCE/captions.csv`` if it exists.
        folder_captions: caption every file by its parent folder's name even if a CSV exists.

    Raises:
        PreparationError: no usable file, an empty split, or too many skipped files; ``out`` is
            then left as it was.

    With ``settings.workers > 0`` files are decoded in processes started from a fork server, so a
    script that calls this must do so under ``if __name__ == "__main__":`` (as for any
    multiprocessing code that does not fork).
    """
    started = time.perf_counter()
    source_path = Path(source)
    out_path = Path(out)
    if not source_path.is_dir():
        raise PreparationError(f"source folder {source_path} does not exist or is not a folder")
    if out_path.resolve() == source_path.resolve() or out_path.resolve() in source_path.resolve().parents:
        raise PreparationError(f"output folder {out_path} would replace the source folder {source_path}")
    tokenizer = settings.tokenizer()
    csv_path = None
    if captions_csv is not None:
        csv_path = Path(captions_csv)
    elif not folder_captions and (source_path / DEFAULT_CAPTIONS_NAME).is_file():
        csv_path = source_path / DEFAULT_CAPTIONS_NAME
    if csv_path is not None and out_path.resolve() in (csv_path.resolve(), *csv_path.resolve().parents):
        raise PreparationError(f"output folder {out_path} would replace the captions CSV {csv_path}")
    try:
        captions = read_captions_csv(csv_path, source_path) if csv_path is not None else None
    except CaptionsCsvError as error:
        raise PreparationError(str(error)) from None

    videos, others = find_video_files(source_path)
    if csv_path is not None and csv_path.resolve().parent == source_path.resolve():
        others = [name for name in others if name != csv_path.name]
    others = [printable_path(name) for name in others]
    summary = PreparationSummary(
        source=str(source_path),
        out=str(out_path),
        video_files=len(videos),
        ignored_files=len(others),
        max_skipped_fraction=settings.max_skipped_fraction,
    )
    if not videos:
        raise PreparationError(
            f"no video files ({', '.join(VIDEO_EXTENSIONS)}) found under {source_path}", summary
        )
    tasks = _decode_tasks(source_path, videos, captions, csv_path, settings, summary)
    unmatched = sorted(set(captions) - set(videos)) if captions is not None else []
    summary.captions_without_video = len(unmatched)

    kind = f"prepared data folder (with a {MANIFEST_NAME})"
    with atomic_directory(out_path, replaces=is_prepared_folder, kind=kind) as folder:
        writers = {
            split: ShardWriter(folder, split, settings.shard_clips, settings.caption_length) for split in SPLITS
        }
        sources, truncated = _decode_into_shards(tasks, writers, settings, tokenizer, summary, started, folder)
        summary.truncated_captions = len(truncated)
        summary.skipped.sort(key=lambda item: item.path)
        summary.seconds = time.perf_counter() - started
        _check_outcome(summary, settings)
        lists = {
            "sources": sources,
            "ignored_files": others,
            "truncated_captions": truncated,
            "captions_without_video": unmatched,
        }
        manifest = _manifest(settings, tokenizer, writers, summary, lists, source_path, csv_path)
        atomic_write_json(folder / MANIFEST_NAME, manifest)
        publish_permissions(folder)
    return summary


#: One file to decode: (task index, absolute path, relative path, split, caption).
_Task = tuple[int, str, str, str, str]


def _decode_tasks(
    source_path: Path,
    videos: list[str],
    captions: dict[str, str] | None,
    csv_path: Path | None,
    settings: PreparationSettings,
    summary: PreparationSummary,
) -> list[_Task]:
    """The video files to decode; files unreadable or without a caption go to ``summary.skipped``."""
    tasks: list[_Task] = []
    for relative in videos:
        if not is_utf8_path(relative):
            # Skipped rather than carried along with surrogateescape: the manifest and the shards' JSON then hold
            # valid Unicode only, and the recorded name (bytes as \xNN) is the same on every run.
            shown = printable_path(relative)
            split = split_of(shown, settings.validation_fraction)
            summary.skipped.append(SkippedFile(shown, split, "unreadable", "file name is not valid UTF-8; rename the file"))
            continue
        split = split_of(relative, settings.validation_fraction)
        absolute = str(source_path / relative)
        try:
            check_readable(absolute)
            caption = caption_for(relative, captions, csv_path)
        except SkipReason as reason:
            summary.skipped.append(SkippedFile(relative, split, reason.code, reason.message))
            continue
        tasks.append((len(tasks), absolute, relative, split, caption))
    return tasks


def _decode_into_shards(
    tasks: list[_Task],
    writers: dict[str, ShardWriter],
    settings: PreparationSettings,
    tokenizer: CaptionTokenizer,
    summary: PreparationSummary,
    started: float,
    log_parent: Path | None = None,
) -> tuple[list[dict], list[str]]:
    """Decode ``tasks`` in worker processes into the split's shards; returns the manifest's source entries and
    the relative paths of truncated captions. Skipped files go to ``summary.skipped``, clip counts to ``summary.clips``.
    The workers' log folder is made in ``log_parent`` (the output being built), and removed before this returns."""
    sources: list[dict] = []
    truncated: list[str] = []
    pool = DecodePool(settings.clip_settings(), settings.workers, settings.decode_timeout_s, log_parent=log_parent)
    tasks_sent = [(index, absolute, relative) for index, absolute, relative, _, _ in tasks]
    with contextlib.closing(pool.run(tasks_sent)) as results:  # closed on an error too: workers stop, logs go
        for index, status, payload in results:
            summary.last_result_s = time.perf_counter() - started
            if not summary.first_result_s:
                summary.first_result_s = summary.last_result_s
            _, _, relative, split, caption = tasks[index]
            if status != "ok":
                code, message = payload
                summary.skipped.append(SkippedFile(relative, split, code, message))
                continue
            clip: DecodedClip = payload
            if tokenizer.truncated(caption):
                truncated.append(relative)
            shard, row = writers[split].add(clip.frames, clip.start_frame, tokenizer.encode(caption), caption, relative)
            sources.append(_source_entry(clip, relative, split, shard, row, caption))
    for writer in writers.values():
        writer.flush()
        summary.clips[writer.split] = writer.count
    return sources, truncated


def _source_entry(clip: DecodedClip, relative: str, split: str, shard: str, row: int, caption: str) -> dict:
    """The manifest's record of one used file: where its clip is stored and how it was decoded."""
    return {
        "path": relative,
        "split": split,
        "shard": shard,
        "row": row,
        "caption": caption,
        "source_frames": clip.source_frames,
        "start_frame": clip.start_frame,
        "source_fps": clip.source_fps,
        "source_size": [clip.source_height, clip.source_width],
        "decoder": clip.decoder,
        "codec": clip.codec,
        "rotation_degrees": clip.rotation_degrees,
        "mirrored": clip.mirrored,
    }


def _manifest(
    settings: PreparationSettings,
    tokenizer: CaptionTokenizer,
    writers: dict[str, ShardWriter],
    summary: PreparationSummary,
    lists: dict[str, list],
    source_path: Path,
    csv_path: Path | None,
) -> dict:
    """``manifest.json``: clip format, tokenizer, shards per split, counts, every file, provenance.

    ``lists`` holds the manifest's file lists: ``sources``, ``ignored_files``, ``truncated_captions``,
    ``captions_without_video``.
    """
    config = {
        "source": str(source_path.resolve()),
        "captions_csv": str(csv_path.resolve()) if csv_path is not None else None,
        "captions_from": "csv" if csv_path is not None else "folder names",
        "settings": settings.content_config(),
    }
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "clip": {
            "frames": settings.frames,
            "height": settings.height,
            "width": settings.width,
            "channels": 3,
            "dtype": "uint8",
            "layout": "FHWC",
            "color": "RGB",
            "stride": settings.stride,
            "start": settings.start,
        },
        "tokenizer": tokenizer.to_dict(),
        "caption_ids_dtype": "int32",
        "splits": {split: {"clips": writers[split].count, "shards": writers[split].shards} for split in SPLITS},
        "counts": {
            "video_files": summary.video_files,
            "clips": summary.usable,
            **{f"{split}_clips": summary.clips[split] for split in SPLITS},
            "skipped": len(summary.skipped),
            "skipped_fraction": summary.skipped_fraction,
            "skipped_by_reason": summary.skipped_by_reason(),
            "ignored_files": summary.ignored_files,
            "truncated_captions": summary.truncated_captions,
            "captions_without_video": summary.captions_without_video,
        },
        "reasons": REASONS,
        "sources": lists["sources"],
        "skipped": [item.to_dict() for item in summary.skipped],
        "ignored_files": lists["ignored_files"],
        "truncated_captions": lists["truncated_captions"],
        "captions_without_video": lists["captions_without_video"],
        "captions_csv_sha256": file_sha256(csv_path) if csv_path is not None else None,
        "seconds": summary.seconds,
        "provenance": provenance(config),
    }


def _check_outcome(summary: PreparationSummary, settings: PreparationSettings) -> None:
    if summary.usable == 0:
        raise PreparationError(f"no usable clip among {summary.video_files} video files under {summary.source}", summary)
    if summary.skipped_fraction > settings.max_skipped_fraction:
        raise PreparationError(
            f"{len(summary.skipped)} of {summary.video_files} video files skipped "
            f"({100 * summary.skipped_fraction:.2f}% > limit {100 * settings.max_skipped_fraction:.2f}%)",
            summary,
        )
    if summary.clips["train"] == 0:
        raise PreparationError("no clip fell in the train split; lower --validation-fraction", summary)
    if settings.validation_fraction > 0 and summary.clips["validation"] == 0:
        raise PreparationError(
            f"no clip fell in the validation split ({settings.validation_fraction:g} of {summary.usable} clips); "
            "raise --validation-fraction or add files",
            summary,
        )
