"""The hashed-word caption tokenizer."""

import numpy as np
import pytest

from dit.text import BOS_ID, PAD_ID, CaptionTokenizer


def test_encode_is_deterministic_padded_and_starts_with_bos():
    tokenizer = CaptionTokenizer(vocab_size=512, max_length=8)
    ids = tokenizer.encode("A red 7 moves left.")
    assert ids.dtype == np.int32 and ids.shape == (8,)
    assert ids[0] == BOS_ID
    # bos + "a", "red", "7", "moves", "left", "." = 7 real tokens, then 1 pad
    assert list(ids != PAD_ID) == [True] * 7 + [False]
    np.testing.assert_array_equal(ids, CaptionTokenizer(vocab_size=512, max_length=8).encode("a RED 7 moves left."))


def test_words_split_punctuation_and_normalize_case():
    assert CaptionTokenizer.words("A red 7, moving LEFT!") == ["a", "red", "7", ",", "moving", "left", "!"]


def test_truncation_and_empty_caption():
    tokenizer = CaptionTokenizer(vocab_size=100, max_length=3)
    assert tokenizer.truncated("one two three")
    assert not tokenizer.truncated("one two")
    empty = tokenizer.encode("")
    assert list(empty) == [BOS_ID, PAD_ID, PAD_ID]


def test_ids_stay_in_vocabulary_and_round_trip_config():
    tokenizer = CaptionTokenizer(vocab_size=37, max_length=16)
    ids = tokenizer.encode_batch(["the quick brown fox jumps over the lazy dog"] * 3)
    assert ids.shape == (3, 16)
    assert ids.min() >= 0 and ids.max() < 37
    assert CaptionTokenizer.from_dict(tokenizer.to_dict()) == tokenizer


@pytest.mark.parametrize("vocab_size, max_length", [(2, 4), (10, 0)])
def test_bad_settings_are_rejected(vocab_size, max_length):
    with pytest.raises(ValueError):
        CaptionTokenizer(vocab_size=vocab_size, max_length=max_length)
