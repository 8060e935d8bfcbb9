"""The fixed linear patch codec (the latent-space stand-in for a video VAE) and training in its latents."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dit.data.loader import ShardDataset
from dit.data.video_io import psnr
from dit.latent import CodecError, LatentCodec, PixelSpace, fit_codec, fit_codec_from_data, load_model_space
from dit.latent import main as latent_main
from training_runs import train_in_process


@pytest.fixture(scope="module")
def prepared(prepared_data) -> Path:
    """The suite's data set: 48 generated clips (8 frames, rendered at 32x32) prepared at 16x16, as the
    default pipeline prepares its clips."""
    return prepared_data


@pytest.fixture(scope="module")
def codec(prepared) -> LatentCodec:
    return fit_codec_from_data(prepared, patch=(2, 4, 4), latent_channels=16, max_clips=64, seed=0)


def test_codec_shapes_scale_and_round_trip(prepared, codec):
    videos = ShardDataset(prepared, "validation").get(np.arange(8))["video"]
    latents = codec.encode(videos)
    assert latents.shape == (8, 16, 4, 4, 4) and latents.dtype == torch.float32
    assert codec.latent_shape(8, 16, 16) == (16, 4, 4, 4)
    assert 0.5 < float(latents.std()) < 2.0  # unit variance on the fitting clips, close on held-out ones
    decoded = codec.decode(latents)
    assert decoded.shape == videos.shape and decoded.dtype == torch.uint8
    quality = psnr(decoded.numpy(), videos.numpy())
    assert quality > 20.0, f"round-trip PSNR {quality:.1f} dB"
    assert 0.8 < codec.metadata["explained_variance"] <= 1.0
    assert codec.metadata["round_trip_psnr_db"] > 20.0


def test_full_rank_codec_is_lossless(prepared):
    videos = ShardDataset(prepared, "train").get(np.arange(16))["video"]
    full = fit_codec(videos, (2, 4, 4), latent_channels=96)
    assert torch.equal(full.decode(full.encode(videos)), videos)


def test_basis_is_orthonormal_and_fit_is_deterministic(prepared, codec):
    np.testing.assert_allclose(codec.basis.T @ codec.basis, np.eye(16), atol=1e-10)
    again = fit_codec_from_data(prepared, patch=(2, 4, 4), latent_channels=16, max_clips=64, seed=0)
    np.testing.assert_array_equal(again.basis, codec.basis)
    assert again.scale == codec.scale


def test_save_and_load_round_trip_without_pickles(tmp_path, codec, prepared):
    path = tmp_path / "codec.npz"
    codec.save(path)
    loaded = LatentCodec.load(path)
    assert loaded.patch == codec.patch and loaded.scale == codec.scale
    videos = ShardDataset(prepared, "validation").get(np.arange(4))["video"]
    assert torch.equal(loaded.encode(videos), codec.encode(videos))
    assert isinstance(load_model_space(path), LatentCodec) and isinstance(load_model_space(None), PixelSpace)


def test_bad_inputs_have_clear_errors(tmp_path, codec):
    with pytest.raises(CodecError, match="no latent codec file"):
        LatentCodec.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(CodecError, match="not a latent codec file"):
        LatentCodec.load(tmp_path / "bad.npz")
    with pytest.raises(CodecError, match="not divisible"):
        codec.encode(torch.zeros((1, 8, 18, 16, 3), dtype=torch.uint8))
    with pytest.raises(CodecError, match="uint8"):
        codec.encode(torch.zeros((1, 8, 16, 16, 3)))
    with pytest.raises(CodecError, match="latent channels"):
        fit_codec(torch.zeros((2, 8, 16, 16, 3), dtype=torch.uint8), (2, 4, 4), latent_channels=97)


def test_command_line_fit_writes_the_codec(tmp_path, prepared, capsys):
    out = tmp_path / "codec.npz"
    assert latent_main(["fit", "--data", str(prepared), "--out", str(out), "--channels", "12", "--max-clips", "32"]) == 0
    printed = capsys.readouterr().out
    assert "12 latent channels" in printed and "PSNR" in printed
    assert LatentCodec.load(out).latent_channels == 12
    assert latent_main(["fit", "--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "dit.latent:" in capsys.readouterr().err


def test_training_evaluation_and_samples_in_latent_space(tmp_path, prepared, codec):
    """A run in the codec's latent space trains, evaluates with the same loss, and samples decode to clips."""
    from dit import evaluate, sample

    codec_path = tmp_path / "codec.npz"
    codec.save(codec_path)
    config = {
        "seed": 1, "threads": 1,
        "model": {"size": "tiny-18k", "patch": [1, 1, 1], "attention": "sdpa"},
        "data": {"root": str(prepared), "latent": str(codec_path)},
        "optimizer": {"lr": 5e-3, "warmup_steps": 2},
        "batch": {"global_clips": 8},
        "schedule": {"milestones_tokens": [1024, 2048]},
        "validation": {"timesteps": 2, "batch_clips": 4},
        "progress": {"quiet": True},
    }
    run = tmp_path / "run"
    assert train_in_process(config, run) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["model_input_shape"] == [16, 4, 4, 4] and summary["tokens_per_clip"] == 64
    assert summary["model_config"]["in_channels"] == 16 and summary["latent_codec"] == str(codec_path)

    spread = tmp_path / "spread.json"
    assert evaluate.main(["spread", "--run", str(run), "--seeds", "2", "--out", str(spread)]) == 0
    per_seed = json.loads(spread.read_text())["per_seed"]
    # trained and validated with the member-axis model, evaluated with VideoDiT: equal up to float32 rounding
    assert math.isclose(per_seed[str(config["validation"].get("seed", 0))], summary["final_validation_loss"], rel_tol=1e-6)

    samples = tmp_path / "samples"
    assert sample.main(["--run", str(run), "--out", str(samples), "--steps", "3",
                        "--caption", "big red 7 moves left slowly"]) == 0
    videos = np.load(samples / "samples.npy")
    assert videos.shape == (1, 8, 16, 16, 3) and videos.dtype == np.uint8


def _trainer(config: dict, out: Path, seeds=(1, 2)):
    """An ``EnsembleTrainer`` of one member per seed of ``config`` (nothing trained yet)."""
    from dit.config import config_from_dict, resumable_config_hash
    from dit.engine import EnsembleTrainer, Member

    threads = torch.get_num_threads()
    members = []
    for seed in seeds:
        settings = config_from_dict({**config, "seed": seed, "run": {"id": f"s{seed}"}})
        members.append(Member(settings, out / f"s{seed}", resumable_config_hash(settings)))
    try:
        return EnsembleTrainer(members, out / "job")
    finally:
        torch.set_num_threads(threads)


def _latent_config(prepared: Path, codec_path: Path, **data) -> dict:
    return {
        "threads": 1, "model": {"size": "tiny-4k", "patch": [1, 1, 1], "attention": "sdpa"},
        "data": {"root": str(prepared), "latent": str(codec_path), **data},
        "optimizer": {"lr": 1e-3}, "batch": {"global_clips": 3}, "schedule": {"milestones_tokens": [1024]},
        "validation": {"timesteps": 2, "batch_clips": 4, "max_clips": 10}, "progress": {"quiet": True},
    }


def test_encoded_split_equals_each_batch_encoded_on_its_own(prepared, codec):
    from dit.latent import encode_split

    dataset = ShardDataset(prepared, "train")
    encoded, reason = encode_split(codec, dataset, chunk_clips=7)
    assert reason == "" and encoded.shape == (len(dataset), 16, 4, 4, 4) and encoded.dtype == torch.float32
    generator = np.random.default_rng(0)
    for size in (1, 2, 3, 5, len(dataset)):
        indices = generator.permutation(len(dataset))[:size]
        assert torch.equal(encoded[torch.from_numpy(indices)], codec.encode(dataset.get(indices)["video"]))
    pixels, _ = encode_split(PixelSpace(), dataset)
    assert torch.equal(pixels[torch.tensor([4, 0])], PixelSpace().encode(dataset.get([4, 0])["video"]))
    limit = len(dataset) * 16 * 4 * 4 * 4 * 4
    assert encode_split(codec, dataset, max_bytes=limit)[0] is not None
    too_large, reason = encode_split(codec, dataset, max_bytes=limit - 1)
    assert too_large is None and f"{limit:,} bytes" in reason


def test_training_steps_gather_their_clips_from_the_encoded_split_to_the_bit(tmp_path, prepared, codec):
    """A step's inputs (clips, timesteps, noise, caption ids) are those of the former per-batch encoding, step
    after step, across an epoch boundary; clips cropped in time are encoded per batch as before."""
    codec_path = tmp_path / "codec.npz"
    codec.save(codec_path)
    config = _latent_config(prepared, codec_path)
    gathered = _trainer(config, tmp_path / "gathered")
    encoded_alone = _trainer(config, tmp_path / "alone")
    assert gathered.encoded_clips is not None and gathered.encoded_clips_facts["used"] is True
    assert gathered._job_facts()["encoded_training_clips"]["clips"] == len(gathered.train_data)
    encoded_alone.encoded_clips = None  # the former path: every batch read from the shards and encoded
    steps = len(gathered.train_data) // 3 + 2
    for step in range(steps):
        for mine, former in zip(gathered.step_inputs(step), encoded_alone.step_inputs(step), strict=True):
            assert torch.equal(mine, former), step
    assert gathered.loaders[1].epoch == 1

    cropped = _trainer(_latent_config(prepared, codec_path, frames=6), tmp_path / "cropped")
    assert cropped.encoded_clips is None
    assert cropped.encoded_clips_facts == {"used": False, "reason": "clips are cropped in time"}
    assert cropped.step_inputs(0)[0].shape == (2, 3, 16, 3, 4, 4)


def test_validation_reads_and_encodes_its_clips_once(tmp_path, prepared, codec, monkeypatch):
    codec_path = tmp_path / "codec.npz"
    codec.save(codec_path)
    trainer = _trainer(_latent_config(prepared, codec_path), tmp_path / "job")
    first = trainer.validate()
    monkeypatch.setattr(trainer.validation_data, "iter_batches", lambda *a, **k: pytest.fail("read the clips again"))
    assert trainer.validate() == first and trainer.validation_passes == 2
    assert sum(len(batch["index"]) for batch in trainer.validation_batches) == 10
