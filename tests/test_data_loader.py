"""The shard loader: batches, seeded shuffles, resume, per-rank slices, temporal crops."""

import numpy as np
import pytest
import torch

from dit.data.loader import ClipLoader, ShardDataset
from dit.data.prepare import PreparationSettings, prepare_dataset
from dit.data.synthetic import GeneratorSettings, generate_dataset
from dit.text import PAD_ID


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    source = generate_dataset(root / "gen", GeneratorSettings(clips=30, seed=4)).out
    # small shards (4 clips) so that batches cross shard boundaries
    settings = PreparationSettings(validation_fraction=0.3, workers=0, shard_megabytes=4 * 8 * 32 * 32 * 3 / 2**20)
    prepare_dataset(source, root / "prepared", settings)
    return root / "prepared"


def _stream(loader, steps):
    return [loader.next_batch() for _ in range(steps)]


def test_get_returns_the_contract_tensors(prepared):
    dataset = ShardDataset(prepared, "train")
    assert len(dataset) > 10 and len(dataset._shards) > 2
    assert (dataset.frames, dataset.height, dataset.width) == (8, 32, 32)
    batch = dataset.get([0, 5, len(dataset) - 1])
    assert batch["video"].dtype == torch.uint8 and batch["video"].shape == (3, 8, 32, 32, 3)
    assert batch["caption_ids"].dtype == torch.long and batch["caption_ids"].shape == (3, 24)
    assert torch.equal(batch["caption_mask"], batch["caption_ids"] != PAD_ID)
    assert batch["index"].tolist() == [0, 5, len(dataset) - 1]
    captions = dataset.captions
    expected = dataset.tokenizer.encode_batch([captions[i] for i in (0, 5, len(dataset) - 1)])
    assert torch.equal(batch["caption_ids"], torch.from_numpy(expected).long())
    with pytest.raises(IndexError):
        dataset.get([len(dataset)])


def test_iter_batches_covers_the_split_in_order_with_a_centre_crop(prepared):
    dataset = ShardDataset(prepared, "validation")
    batches = list(dataset.iter_batches(4, frames=4))
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(len(dataset)))
    full = dataset.get(np.arange(len(dataset)))["video"]
    assert torch.equal(torch.cat([b["video"] for b in batches]), full[:, 2:6])


def test_shuffle_is_a_seeded_permutation_per_epoch(prepared):
    dataset = ShardDataset(prepared, "train")
    n = len(dataset)
    loader = ClipLoader(dataset, global_batch_clips=n, seed=1)
    first, second = (loader.next_batch()["index"].tolist() for _ in range(2))
    assert sorted(first) == sorted(second) == list(range(n))
    assert first != second and loader.epoch == 2
    again = ClipLoader(dataset, global_batch_clips=n, seed=1).next_batch()["index"].tolist()
    other = ClipLoader(dataset, global_batch_clips=n, seed=2).next_batch()["index"].tolist()
    assert again == first and other != first


def test_resume_mid_epoch_continues_the_same_stream(prepared):
    dataset = ShardDataset(prepared, "train")
    uninterrupted = _stream(ClipLoader(dataset, global_batch_clips=6, seed=3, frames=4), 12)
    first = ClipLoader(dataset, global_batch_clips=6, seed=3, frames=4)
    _stream(first, 5)
    state = first.state_dict()
    assert state["clips_consumed"] == 30
    resumed = ClipLoader(dataset, global_batch_clips=6, seed=3, frames=4)
    resumed.load_state_dict(state)
    for expected, batch in zip(uninterrupted[5:], _stream(resumed, 7)):
        assert torch.equal(expected["index"], batch["index"])
        assert torch.equal(expected["video"], batch["video"])
        assert torch.equal(expected["caption_ids"], batch["caption_ids"])
    with pytest.raises(ValueError, match="seed"):
        ClipLoader(dataset, global_batch_clips=6, seed=4).load_state_dict(state)


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_slices_are_disjoint_and_make_up_the_global_batch(prepared, world_size):
    dataset = ShardDataset(prepared, "train")
    single = _stream(ClipLoader(dataset, global_batch_clips=6, seed=5, frames=4), 9)
    ranks = [
        _stream(ClipLoader(dataset, global_batch_clips=6, seed=5, rank=r, world_size=world_size, frames=4), 9)
        for r in range(world_size)
    ]
    for step, expected in enumerate(single):
        parts = [ranks[r][step] for r in range(world_size)]
        assert all(part["index"].numel() == 6 // world_size for part in parts)
        assert torch.equal(torch.cat([part["index"] for part in parts]), expected["index"])
        assert torch.equal(torch.cat([part["video"] for part in parts]), expected["video"])
        if step * 6 // len(dataset) == (step * 6 + 5) // len(dataset):  # batch inside one epoch
            seen = [set(part["index"].tolist()) for part in parts]
            assert sum(map(len, seen)) == len(set.union(*seen)) == 6  # disjoint slices
    with pytest.raises(ValueError, match="divisible"):
        ClipLoader(dataset, global_batch_clips=7, seed=5, world_size=2)


def test_temporal_crops_are_random_but_seeded_windows_of_the_stored_clip(prepared):
    dataset = ShardDataset(prepared, "train")
    n = len(dataset)
    loader = ClipLoader(dataset, global_batch_clips=n, seed=6, frames=3)
    batch = loader.next_batch()
    stored = dataset.get(batch["index"].numpy())["video"]
    starts = []
    for clip, full in zip(batch["video"], stored):
        matches = [s for s in range(6) if torch.equal(full[s : s + 3], clip)]
        assert matches, "the crop is not a window of the stored clip"
        starts.append(matches[0])
    assert len(set(starts)) > 2
    repeat = ClipLoader(dataset, global_batch_clips=n, seed=6, frames=3).next_batch()
    assert torch.equal(repeat["video"], batch["video"])
    next_epoch = loader.next_batch()  # same clips, new epoch: new crops
    assert not torch.equal(next_epoch["video"][torch.argsort(next_epoch["index"])], batch["video"][torch.argsort(batch["index"])])


def test_verify_detects_a_changed_shard(prepared, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    ShardDataset(copy, "train").verify()
    shard = sorted(copy.glob("train-*.frames.npy"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        ShardDataset(copy, "train").verify()
    with pytest.raises(FileNotFoundError, match="not a prepared data folder"):
        ShardDataset(tmp_path, "train")


def test_next_clips_is_the_stream_of_next_batch_and_caption_ids_those_of_get(prepared):
    dataset = ShardDataset(prepared, "train")
    batches = ClipLoader(dataset, global_batch_clips=5, seed=3, frames=4)
    clips = ClipLoader(dataset, global_batch_clips=5, seed=3, frames=4)
    for _ in range(2 * len(dataset) // 5 + 1):  # across epochs, and crops that differ per epoch
        batch = batches.next_batch()
        indices, starts = clips.next_clips()
        assert batch["index"].tolist() == indices.tolist()
        assert torch.equal(dataset.get(indices, 4, starts)["video"], batch["video"])
        assert torch.equal(dataset.caption_ids(indices), batch["caption_ids"])
    assert clips.state_dict() == batches.state_dict()
    with pytest.raises(IndexError):
        dataset.caption_ids([len(dataset)])
