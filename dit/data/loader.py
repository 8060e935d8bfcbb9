"""Reading prepared shards: a memory-mapped split (``ShardDataset``) and the training stream (``ClipLoader``).

Batches are dicts of torch tensors:

* ``"video"``: uint8 ``(B, F, H, W, 3)``, RGB;
* ``"caption_ids"``: long ``(B, M)``; ``"caption_mask"``: bool ``(B, M)``, True on real tokens;
* ``"index"``: long ``(B,)``, each clip's position in its split.

The training stream is the concatenation of one permutation of the split per epoch, permutation
``e`` drawn from ``(seed, e)``. Step ``k`` takes stream positions ``[k G, (k + 1) G)`` for a global
batch of ``G`` clips; rank ``r`` of ``W`` gets the contiguous slice ``[r G / W, (r + 1) G / W)`` of
it, so the ranks' batches together are exactly the one-process batch, in order. The position
(``clips_consumed``) is the whole state: a loader restored from ``state_dict()`` continues the same
stream. When the shards hold longer clips than asked for, training crops a window whose start is
drawn from ``(seed, epoch, clip index)``; ``iter_batches`` (validation) crops the centre.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from dit.data.shards import SPLITS, read_manifest
from dit.provenance import file_sha256
from dit.text import PAD_ID, CaptionTokenizer

_MASK64 = (1 << 64) - 1


class ShardDataset:
    """One split of a prepared folder, memory-mapped.

    Attributes:
        frames, height, width: stored clip shape (frames, pixels).
        tokenizer: the ``CaptionTokenizer`` the captions were encoded with.
        caption_length: tokens per caption.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
        self.root = Path(root)
        self.split = split
        self.manifest = read_manifest(self.root)
        clip = self.manifest["clip"]
        self.frames, self.height, self.width = int(clip["frames"]), int(clip["height"]), int(clip["width"])
        self.tokenizer = CaptionTokenizer.from_dict(self.manifest["tokenizer"])
        self.caption_length = self.tokenizer.max_length
        self._shards = self.manifest["splits"][split]["shards"]
        self._frames: list[np.ndarray] = []
        self._ids: list[np.ndarray] = []
        expected_clip = (self.frames, self.height, self.width, 3)
        for shard in self._shards:
            frames, ids = (self._load_shard_file(shard["files"][role]) for role in ("frames", "caption_ids"))
            count = int(shard["clips"])
            if frames.shape != (count, *expected_clip) or frames.dtype != np.uint8:
                raise ValueError(
                    f"{shard['files']['frames']}: shape {frames.shape} dtype {frames.dtype}, "
                    f"manifest says ({count}, {', '.join(map(str, expected_clip))}) uint8"
                )
            if ids.shape != (count, self.caption_length):
                raise ValueError(
                    f"{shard['files']['caption_ids']}: shape {ids.shape}, manifest says ({count}, {self.caption_length})"
                )
            self._frames.append(frames)
            self._ids.append(ids)
        counts = [int(shard["clips"]) for shard in self._shards]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._length = int(self._starts[-1])
        if self._length != int(self.manifest["splits"][split]["clips"]):
            raise ValueError(f"{self.root}: shards of split {split} hold {self._length} clips, manifest says otherwise")

    def _load_shard_file(self, name: str) -> np.ndarray:
        """A shard's array, memory-mapped; a missing, truncated or foreign file raises ``ValueError`` naming it."""
        path = self.root / name
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: cannot be read as a shard of {self.root} ({error}); prepare the folder again") from None

    def __len__(self) -> int:
        """Number of clips."""
        return self._length

    def verify(self) -> None:
        """Check every shard file of this split against the manifest's sha256; raise ``ValueError`` on a mismatch."""
        for shard in self._shards:
            for role, name in shard["files"].items():
                if file_sha256(self.root / name) != shard["sha256"][role]:
                    raise ValueError(f"{self.root / name}: sha256 differs from the manifest (file changed or damaged)")

    def _clip_records(self) -> tuple[list[str], list[str]]:
        captions, sources = [], []
        for shard in self._shards:
            with open(self.root / shard["files"]["clips"], encoding="utf-8") as handle:
                record = json.load(handle)
            captions += record["captions"]
            sources += record["sources"]
        return captions, sources

    @property
    def captions(self) -> list[str]:
        """Caption strings, in clip order."""
        return self._clip_records()[0]

    @property
    def sources(self) -> list[str]:
        """Source file of each clip (relative to the prepared source folder), in clip order."""
        return self._clip_records()[1]

    def _check_frames(self, frames: int | None) -> int:
        if frames is None:
            return self.frames
        if not 1 <= frames <= self.frames:
            raise ValueError(f"frames must lie in [1, {self.frames}] (stored clip length), got {frames}")
        return int(frames)

    def get(
        self, indices: Sequence[int] | np.ndarray, frames: int | None = None, frame_starts: Sequence[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """A batch of the clips at ``indices``.

        ``frames`` (default: all stored) frames are taken from ``frame_starts`` (default: the centred window).
        """
        indices, shards, rows = self._locate(indices)
        frames = self._check_frames(frames)
        if frame_starts is None:
            starts = np.full(indices.shape, (self.frames - frames) // 2, dtype=np.int64)
        else:
            starts = np.asarray(frame_starts, dtype=np.int64).reshape(-1)
            if starts.shape != indices.shape:
                raise ValueError(f"frame_starts has {starts.size} entries for {indices.size} clips")
            if starts.size and (starts.min() < 0 or starts.max() > self.frames - frames):
                raise ValueError(f"frame_starts must lie in [0, {self.frames - frames}]")
        video = np.empty((indices.size, frames, self.height, self.width, 3), dtype=np.uint8)
        for position, (shard, row, start) in enumerate(zip(shards, rows, starts.tolist())):
            video[position] = self._frames[shard][row, start : start + frames]
        caption_ids = self._caption_ids(shards, rows)
        return {
            "video": torch.from_numpy(video),
            "caption_ids": caption_ids,
            "caption_mask": caption_ids != PAD_ID,
            "index": torch.from_numpy(indices.copy()),
        }

    def caption_ids(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """The caption token ids ``(B, caption_length)`` (long) of the clips at ``indices``, without their frames."""
        _, shards, rows = self._locate(indices)
        return self._caption_ids(shards, rows)

    def _locate(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, list[int], list[int]]:
        """``indices`` as a flat int64 array (checked against the split's length), each clip's shard and its row there."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= self._length):
            raise IndexError(f"clip indices must lie in [0, {self._length}), got {indices.min()}..{indices.max()}")
        shard_of = np.searchsorted(self._starts, indices, side="right") - 1
        return indices, shard_of.tolist(), (indices - self._starts[shard_of]).tolist()

    def _caption_ids(self, shards: list[int], rows: list[int]) -> torch.Tensor:
        ids = np.empty((len(rows), self.caption_length), dtype=np.int64)
        for position, (shard, row) in enumerate(zip(shards, rows)):
            ids[position] = self._ids[shard][row]
        return torch.from_numpy(ids)

    def iter_batches(self, batch_clips: int, frames: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """The whole split in stored order, ``batch_clips`` clips at a time (the last batch may be smaller), centre crop."""
        if batch_clips < 1:
            raise ValueError(f"batch_clips must be at least 1, got {batch_clips}")
        for start in range(0, self._length, batch_clips):
            yield self.get(np.arange(start, min(start + batch_clips, self._length)), frames)


def _mix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on uint64 arrays (wrapping arithmetic)."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def temporal_crop_starts(seed: int, epoch: np.ndarray, clips: np.ndarray, room: int) -> np.ndarray:
    """Window starts in ``[0, room]``, one per clip, drawn from ``(seed, epoch, clip index)``."""
    if room <= 0:
        return np.zeros(np.shape(clips), dtype=np.int64)
    with np.errstate(over="ignore"):
        key = _mix64(np.full(np.shape(clips), seed & _MASK64, dtype=np.uint64))
        key = _mix64(key ^ np.asarray(epoch, dtype=np.uint64))
        key = _mix64(key ^ np.asarray(clips, dtype=np.uint64))
    return (key % np.uint64(room + 1)).astype(np.int64)


class ClipLoader:
    """The training stream of one rank (see the module docstring).

    Args:
        dataset: the training split.
        global_batch_clips: clips per optimizer step over all ranks.
        seed: seeds the per-epoch permutations and the temporal crops.
        rank, world_size: this process's place under DistributedDataParallel.
        frames: frames per clip handed out (default: all stored frames).
    """

    def __init__(
        self,
        dataset: ShardDataset,
        global_batch_clips: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        frames: int | None = None,
    ):
        if len(dataset) == 0:
            raise ValueError(f"split {dataset.split!r} of {dataset.root} holds no clips")
        if global_batch_clips < 1:
            raise ValueError(f"global_batch_clips must be at least 1, got {global_batch_clips}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if global_batch_clips % world_size:
            raise ValueError(
                f"global_batch_clips ({global_batch_clips}) must be divisible by world_size ({world_size})"
            )
        self.dataset = dataset
        self.global_batch_clips = int(global_batch_clips)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.frames = dataset._check_frames(frames)
        self.clips_consumed = 0
        self._permutations: dict[int, np.ndarray] = {}

    @property
    def local_batch_clips(self) -> int:
        """Clips per batch on this rank."""
        return self.global_batch_clips // self.world_size

    @property
    def epoch(self) -> int:
        """Epoch of the next clip in the stream (0-based)."""
        return self.clips_consumed // len(self.dataset)

    def permutation(self, epoch: int) -> np.ndarray:
        """Clip order of one epoch, drawn from ``(seed, epoch)``."""
        if epoch not in self._permutations:
            if len(self._permutations) >= 2:
                self._permutations.pop(min(self._permutations))
            generator = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, 0xC11B]))
            self._permutations[epoch] = generator.permutation(len(self.dataset))
        return self._permutations[epoch]

    def stream(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Clip indices and epochs at stream positions ``[start, start + count)``."""
        positions = np.arange(start, start + count, dtype=np.int64)
        epochs = positions // len(self.dataset)
        offsets = positions % len(self.dataset)
        indices = np.empty(count, dtype=np.int64)
        for epoch in np.unique(epochs).tolist():
            chosen = epochs == epoch
            indices[chosen] = self.permutation(epoch)[offsets[chosen]]
        return indices, epochs

    def next_clips(self) -> tuple[np.ndarray, np.ndarray]:
        """The clip indices of this rank's slice of the next global batch and each clip's first frame;
        advances the stream by ``global_batch_clips``. ``next_batch`` reads those clips."""
        local = self.local_batch_clips
        indices, epochs = self.stream(self.clips_consumed + self.rank * local, local)
        starts = temporal_crop_starts(self.seed, epochs, indices, self.dataset.frames - self.frames)
        self.clips_consumed += self.global_batch_clips
        return indices, starts

    def next_batch(self) -> dict[str, torch.Tensor]:
        """This rank's slice of the next global batch; advances the stream by ``global_batch_clips``."""
        indices, starts = self.next_clips()
        return self.dataset.get(indices, self.frames, starts)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        """The stream position (global clips consumed) and what it is a position in."""
        return {
            "clips_consumed": self.clips_consumed,
            "seed": self.seed,
            "dataset_clips": len(self.dataset),
            "global_batch_clips": self.global_batch_clips,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved position; the seed and the split's size must match."""
        if "clips_consumed" not in state:
            raise KeyError("loader state lacks 'clips_consumed'")
        for key, mine in (("seed", self.seed), ("dataset_clips", len(self.dataset))):
            if key in state and int(state[key]) != mine:
                raise ValueError(f"loader state has {key}={state[key]}, this loader has {key}={mine}")
        consumed = int(state["clips_consumed"])
        if consumed < 0:
            raise ValueError(f"clips_consumed must be >= 0, got {consumed}")
        self.clips_consumed = consumed


def limit_clips(batches: Iterable[dict], max_clips: int | None) -> Iterator[dict]:
    """The first ``max_clips`` clips of a stream of loader batches (all of them for ``None``)."""
    if max_clips is None:
        yield from batches
        return
    remaining = max_clips
    for batch in batches:
        if remaining <= 0:
            return
        if len(batch["index"]) > remaining:
            batch = {key: value[:remaining] for key, value in batch.items()}
        remaining -= len(batch["index"])
        yield batch
