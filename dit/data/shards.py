"""The format of a prepared data folder: shard files, ``manifest.json`` and their checksums.

``dit.data.prepare`` writes a folder with ``ShardWriter`` (one per split) and a manifest;
``dit.data.loader`` reads it back through ``read_manifest``. Per split, shard ``NNNNN`` is three files::

    {split}-NNNNN.frames.npy        uint8 (clips, frames, height, width, 3), RGB
    {split}-NNNNN.caption_ids.npy   int32 (clips, caption_length), dit.text ids
    {split}-NNNNN.clips.json        {"captions": [...], "sources": [...], "start_frames": [...]}

and the manifest records each file's SHA-256 (``dit.provenance.file_sha256``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from dit.atomic import atomic_write_json
from dit.provenance import file_sha256

SPLITS = ("train", "validation")
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "dit-video-shards"
MANIFEST_VERSION = 1


class ShardWriter:
    """Buffers clips of one split and writes a shard every ``shard_clips`` clips."""

    def __init__(self, folder: Path, split: str, shard_clips: int, caption_length: int):
        self.folder, self.split, self.shard_clips = folder, split, shard_clips
        self.caption_length = caption_length
        self.shards: list[dict] = []
        self.count = 0
        self._reset()

    def _reset(self) -> None:
        self.frames: list[np.ndarray] = []
        self.ids: list[np.ndarray] = []
        self.captions: list[str] = []
        self.sources: list[str] = []
        self.starts: list[int] = []

    def add(self, frames: np.ndarray, start_frame: int, ids: np.ndarray, caption: str, source: str) -> tuple[str, int]:
        """Append one clip (uint8 ``frames`` ``(F, H, W, 3)`` from source frame ``start_frame``); return (shard name, row)."""
        name, row = self._name(len(self.shards)), len(self.frames)
        self.frames.append(frames)
        self.ids.append(ids)
        self.captions.append(caption)
        self.sources.append(source)
        self.starts.append(start_frame)
        self.count += 1
        if len(self.frames) == self.shard_clips:
            self.flush()
        return name, row

    def _name(self, number: int) -> str:
        return f"{self.split}-{number:05d}"

    def flush(self) -> None:
        """Write the buffered clips as the next shard (nothing when none are buffered)."""
        if not self.frames:
            return
        name = self._name(len(self.shards))
        files = {
            "frames": f"{name}.frames.npy",
            "caption_ids": f"{name}.caption_ids.npy",
            "clips": f"{name}.clips.json",
        }
        frames = np.stack(self.frames)
        np.save(self.folder / files["frames"], frames)
        np.save(self.folder / files["caption_ids"], np.stack(self.ids).astype(np.int32))
        atomic_write_json(
            self.folder / files["clips"],
            {"captions": self.captions, "sources": self.sources, "start_frames": self.starts},
        )
        self.shards.append(
            {
                "name": name,
                "clips": len(self.frames),
                "files": files,
                "frames_shape": list(frames.shape),
                "caption_ids_shape": [len(self.ids), self.caption_length],
                "sha256": {role: file_sha256(self.folder / file) for role, file in files.items()},
            }
        )
        self._reset()


def is_prepared_folder(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds a ``manifest.json`` of this format (any version): a folder ``prepare`` wrote."""
    try:
        with open(Path(root) / MANIFEST_NAME, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT


def read_manifest(root: str | os.PathLike) -> dict:
    """The manifest of a prepared folder; a missing or foreign manifest raises ``FileNotFoundError``/``ValueError``."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} is not a prepared data folder (run python -m dit.data prepare)")
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path} is damaged (not a JSON document: {error}); prepare the folder again") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not a {MANIFEST_FORMAT} manifest (a JSON {type(manifest).__name__}, not an object)")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} is not a {MANIFEST_FORMAT} manifest (format {manifest.get('format')!r})")
    if manifest.get("format_version") != MANIFEST_VERSION:
        raise ValueError(f"{path} has format_version {manifest.get('format_version')}, this code reads {MANIFEST_VERSION}")
    return manifest
