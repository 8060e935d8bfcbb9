"""Caption tokenizer: hashed words, deterministic, no vocabulary file.

No pretrained text encoder can be downloaded on the suite's machines, so captions are tokenized
here: lower-cased, NFKC-normalized, split into words (runs of letters/digits) and single punctuation
marks, and each word is mapped to an id by a stable hash (BLAKE2b) into ``vocab_size - 2`` buckets.
Id 0 is padding, id 1 is the begin-of-caption token that every caption starts with (so an empty
caption, used for classifier-free guidance, still has one key for cross-attention to attend to).

The learned text embedding that turns ids into vectors lives in the model (``dit.model``); a
frozen external encoder can replace both by passing precomputed embeddings of any width.

This module does not import torch.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable

import numpy as np

PAD_ID = 0
BOS_ID = 1
NUM_SPECIAL_TOKENS = 2

_WORD = re.compile(r"[^\W_]+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class CaptionTokenizer:
    """Hashed-word tokenizer.

    Attributes:
        vocab_size: number of ids including the 2 special ones.
        max_length: caption length in tokens (BOS included); longer captions are truncated,
            shorter ones padded with ``PAD_ID``.
    """

    vocab_size: int = 4096
    max_length: int = 24

    def __post_init__(self) -> None:
        if self.vocab_size <= NUM_SPECIAL_TOKENS:
            raise ValueError(f"vocab_size must exceed {NUM_SPECIAL_TOKENS}, got {self.vocab_size}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {self.max_length}")

    @staticmethod
    def words(caption: str) -> list[str]:
        """The normalized words of a caption."""
        return _WORD.findall(unicodedata.normalize("NFKC", caption).lower())

    def word_id(self, word: str) -> int:
        """Stable id of one normalized word."""
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
        return NUM_SPECIAL_TOKENS + int.from_bytes(digest, "little") % (self.vocab_size - NUM_SPECIAL_TOKENS)

    def encode(self, caption: str) -> np.ndarray:
        """Token ids of one caption, shape ``(max_length,)``, dtype int32, padded with ``PAD_ID``."""
        ids = np.full(self.max_length, PAD_ID, dtype=np.int32)
        ids[0] = BOS_ID
        words = self.words(caption)[: self.max_length - 1]
        for position, word in enumerate(words, start=1):
            ids[position] = self.word_id(word)
        return ids

    def encode_batch(self, captions: Iterable[str]) -> np.ndarray:
        """Token ids of many captions, shape ``(count, max_length)``, int32."""
        rows = [self.encode(caption) for caption in captions]
        if not rows:
            return np.zeros((0, self.max_length), dtype=np.int32)
        return np.stack(rows)

    def truncated(self, caption: str) -> bool:
        """Whether ``caption`` has more words than fit in ``max_length - 1``."""
        return len(self.words(caption)) > self.max_length - 1

    def to_dict(self) -> dict:
        return {"kind": "hashed-words-blake2b", "vocab_size": self.vocab_size, "max_length": self.max_length}

    @classmethod
    def from_dict(cls, record: dict) -> "CaptionTokenizer":
        kind = record.get("kind", "hashed-words-blake2b")
        if kind != "hashed-words-blake2b":
            raise ValueError(f"unknown tokenizer kind {kind!r}")
        return cls(vocab_size=int(record["vocab_size"]), max_length=int(record["max_length"]))
