"""Sampling from a trained run (dit.sample): the files it writes, what they hold, determinism, and
refused input. Uses the suite's real prepared data set and its real tiny dit.train run (tests/conftest.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dit import sample
from dit.data.synthetic import caption_vocabulary
from dit.data.video_io import psnr
from dit.text import CaptionTokenizer

CAPTIONS = ("big red 7 moves left slowly", "small blue square moves up quickly and bounces")
FILE_CAPTION = "big green circle moves right slowly while small white K moves down quickly"


@pytest.fixture(scope="module")
def trained_run(tiny_run):
    return tiny_run


@pytest.fixture(scope="module")
def sampled(trained_run, tmp_path_factory):
    """``dit.sample.main`` with two --caption values and a captions file, 10 DDIM steps."""
    base = tmp_path_factory.mktemp("samples")
    captions_file = base / "captions.txt"
    captions_file.write_text(f"\n{FILE_CAPTION}\n\n")
    out = base / "out"
    assert sample.main([
        "--run", str(trained_run), "--out", str(out), "--caption", CAPTIONS[0], "--caption", CAPTIONS[1],
        "--captions-file", str(captions_file), "--steps", "10", "--seed", "5", "--upscale", "4", "--device", "cpu",
    ]) == 0
    return out


def read_index(out):
    return json.loads((out / sample.INDEX_NAME).read_text())


def test_sample_writes_one_decodable_mp4_per_caption(sampled):
    from decord import VideoReader

    videos = np.load(sampled / sample.SAMPLES_NAME)
    assert videos.dtype == np.uint8 and videos.shape == (3, 8, 16, 16, 3)
    for position in range(3):
        reader = VideoReader(str(sampled / f"sample_{position:03d}.mp4"), num_threads=1)
        frames = reader.get_batch(list(range(len(reader)))).asnumpy()
        assert frames.shape == (8, 64, 64, 3)  # 8 frames, 16x16 pixels enlarged 4 times
        enlarged = videos[position].repeat(4, axis=1).repeat(4, axis=2)
        assert psnr(enlarged, frames) > 30


def test_gif_grid_and_contact_sheet(sampled):
    videos = np.load(sampled / sample.SAMPLES_NAME)
    with Image.open(sampled / sample.GIF_NAME) as gif:
        # Pillow stores a frame identical to the one before as a longer display of that frame.
        changes = sum(not np.array_equal(videos[:, f], videos[:, f - 1]) for f in range(1, 8))
        assert gif.n_frames == 1 + changes == 8
        assert gif.size == ((2 * 17 - 1) * 4, (2 * 17 - 1) * 4)  # 2x2 tiles of 16 pixels, 1-pixel lines, x4
        gif.seek(0)
        first = np.asarray(gif.convert("RGB"))
    tile = first[: 16 * 4, : 16 * 4]
    assert np.abs(tile.astype(int) - videos[0, 0].repeat(4, 0).repeat(4, 1)).mean() < 12  # GIF palette error
    assert (first[16 * 4 : 17 * 4, :] == sample.TILE_LINE_LEVEL).all()  # the line between tile rows
    with Image.open(sampled / sample.CONTACT_SHEET_NAME) as sheet:
        assert sheet.format == "PNG" and sheet.size[0] > 300 and sheet.size[1] > 200


def test_index_records_captions_files_sampler_and_provenance(sampled, trained_run):
    index = read_index(sampled)
    summary = json.loads((trained_run / "summary.json").read_text())
    assert [entry["caption"] for entry in index["captions"]] == [*CAPTIONS, FILE_CAPTION]
    assert [entry["mp4"] for entry in index["captions"]] == ["sample_000.mp4", "sample_001.mp4", "sample_002.mp4"]
    tokenizer = CaptionTokenizer(vocab_size=4096, max_length=24)
    assert index["captions"][0]["caption_ids"] == tokenizer.encode(CAPTIONS[0]).tolist()
    assert all(entry["truncated"] is False for entry in index["captions"])
    assert index["files"] == {
        "mp4": ["sample_000.mp4", "sample_001.mp4", "sample_002.mp4"],
        "gif": "samples.gif", "contact_sheet": "contact_sheet.png", "samples": "samples.npy",
    }
    assert index["sampler"] == {
        "sampler": "ddim", "steps": 10, "guidance_scale": 3.0, "eta": 0.0, "seed": 5, "null_caption": "",
        "upscale": 4, "fps": 8.0,
    }
    assert index["clip_shape"] == [8, 16, 16] and index["mp4_shape"] == [8, 64, 64]
    assert index["run"]["run_id"] == summary["run_id"] and index["run"]["attention"] == "sdpa"
    assert index["provenance"]["config"]["captions"] == [*CAPTIONS, FILE_CAPTION]
    assert len(index["provenance"]["config_hash"]) == 64


def test_same_seed_same_videos_and_each_caption_independent_of_the_others(sampled, trained_run, tmp_path):
    again = tmp_path / "again"
    args = ["--run", str(trained_run), "--steps", "10", "--seed", "5", "--device", "cpu"]
    assert sample.main([*args, "--out", str(again), "--caption", CAPTIONS[0], "--caption", CAPTIONS[1],
                        "--caption", FILE_CAPTION]) == 0
    first, second = np.load(sampled / sample.SAMPLES_NAME), np.load(again / sample.SAMPLES_NAME)
    assert np.array_equal(first, second)
    assert (sampled / "sample_001.mp4").read_bytes() == (again / "sample_001.mp4").read_bytes()

    alone = tmp_path / "alone"
    assert sample.main([*args, "--out", str(alone), "--caption", CAPTIONS[0]]) == 0
    assert np.array_equal(np.load(alone / sample.SAMPLES_NAME)[0], first[0])

    other_seed = tmp_path / "other-seed"
    assert sample.main([*args[:-4], "--seed", "6", "--steps", "10", "--device", "cpu", "--out", str(other_seed),
                        "--caption", CAPTIONS[0]]) == 0
    assert not np.array_equal(np.load(other_seed / sample.SAMPLES_NAME)[0], first[0])


def test_default_captions_follow_the_data_set_grammar(trained_run, tmp_path):
    vocabulary = set(caption_vocabulary())
    tokenizer = CaptionTokenizer()
    for caption in sample.DEFAULT_CAPTIONS:
        words = tokenizer.words(caption)
        assert set(words) <= vocabulary, set(words) - vocabulary
        assert not tokenizer.truncated(caption)
    out = tmp_path / "defaults"
    assert sample.main(["--run", str(trained_run), "--out", str(out), "--steps", "2", "--upscale", "2",
                        "--device", "cpu"]) == 0
    index = read_index(out)
    assert [entry["caption"] for entry in index["captions"]] == list(sample.DEFAULT_CAPTIONS)
    assert np.load(out / sample.SAMPLES_NAME).shape == (len(sample.DEFAULT_CAPTIONS), 8, 16, 16, 3)
    with Image.open(out / sample.GIF_NAME) as gif:
        assert gif.size == ((3 * 17 - 1) * 2, (3 * 17 - 1) * 2)  # 8 samples: 3x3 tiles
    # Every default word occurs in the 30 training captions except some glyph names of this small set.
    unseen = {w for entry in index["captions"] for w in entry["words_not_in_training_captions"]}
    assert unseen <= vocabulary


def test_a_run_trained_with_xformers_samples_on_a_cpu(trained_run, tmp_path):
    run = tmp_path / "xformers-run"
    shutil.copytree(trained_run, run)
    checkpoint = run / "checkpoints" / "latest.pt"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state["model_config"]["attention"] = "xformers"
    torch.save(state, checkpoint)
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace("attention: sdpa", "attention: xformers"))

    out = tmp_path / "out"
    assert sample.main(["--run", str(run), "--out", str(out), "--steps", "10", "--seed", "5", "--device", "cpu",
                        "--caption", CAPTIONS[0]]) == 0
    assert read_index(out)["run"]["attention"] == "sdpa"
    reference = tmp_path / "reference"
    assert sample.main(["--run", str(trained_run), "--out", str(reference), "--steps", "10", "--seed", "5",
                        "--device", "cpu", "--caption", CAPTIONS[0]]) == 0
    assert np.array_equal(np.load(out / sample.SAMPLES_NAME), np.load(reference / sample.SAMPLES_NAME))


def test_bad_input_is_refused_with_a_message(trained_run, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    out = tmp_path / "out"
    assert sample.main(["--run", str(trained_run), "--out", str(out), "--captions-file", str(empty)]) == 2
    assert f"--captions-file {empty}: holds no captions" in capsys.readouterr().err
    missing = tmp_path / "missing.txt"
    assert sample.main(["--run", str(trained_run), "--out", str(out), "--captions-file", str(missing)]) == 2
    assert f"--captions-file {missing}: cannot read" in capsys.readouterr().err
    assert sample.main(["--run", str(trained_run), "--out", str(out), "--caption", " "]) == 2
    assert "--caption number 1 is empty" in capsys.readouterr().err
    assert sample.main(["--run", str(trained_run), "--out", str(out), "--upscale", "0", "--device", "cpu"]) == 2
    assert "--upscale must be a positive integer" in capsys.readouterr().err
    assert sample.main(["--run", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert not out.exists()


def test_guidance_eta_and_fps_flags_do_what_they_say(trained_run, tmp_path):
    """--guidance-scale 1 (no guidance) and --eta 1 (step noise) change the samples, --fps only the files' frame
    rate (read back from the MP4); the index records each value."""
    from decord import VideoReader

    base = ["--run", str(trained_run), "--steps", "4", "--seed", "5", "--device", "cpu", "--caption", CAPTIONS[0],
            "--upscale", "1"]
    variants = {"default": [], "unguided": ["--guidance-scale", "1"], "stochastic": ["--eta", "1"], "slow": ["--fps", "4"]}
    videos, indices = {}, {}
    for name, options in variants.items():
        assert sample.main([*base, "--out", str(tmp_path / name), *options]) == 0
        videos[name] = np.load(tmp_path / name / sample.SAMPLES_NAME)
        indices[name] = read_index(tmp_path / name)
    assert [indices[name]["sampler"]["guidance_scale"] for name in variants] == [3.0, 1.0, 3.0, 3.0]
    assert [indices[name]["sampler"]["eta"] for name in variants] == [0.0, 0.0, 1.0, 0.0]
    assert [indices[name]["sampler"]["fps"] for name in variants] == [8.0, 8.0, 8.0, 4.0]
    assert not np.array_equal(videos["unguided"], videos["default"])
    assert not np.array_equal(videos["stochastic"], videos["default"])
    assert np.array_equal(videos["slow"], videos["default"])
    for name, fps in (("default", 8.0), ("slow", 4.0)):
        assert VideoReader(str(tmp_path / name / "sample_000.mp4"), num_threads=1).get_avg_fps() == pytest.approx(fps)


class _Oracle(torch.nn.Module):
    """Predicts the exact noise of one fixed clean clip ``x0`` (model space): a sampler must return ``x0``."""

    def __init__(self, x0: torch.Tensor, schedule):
        super().__init__()
        self.x0, self.alpha_bar, self.weight = x0, schedule.alphas_cumprod(), torch.nn.Parameter(torch.zeros(1))

    def encode_captions(self, batch, *args, **kwargs):
        return torch.zeros(batch, 1, 1), torch.ones(batch, 1, dtype=torch.bool)

    def denoise(self, x, t, context, mask):
        a = self.alpha_bar[t].float().view(-1, 1, 1, 1, 1)
        return (x - a.sqrt() * self.x0) / (1 - a).sqrt()


def test_samples_in_latent_space_are_not_clamped_to_the_pixel_range():
    """The latent codec's latents have unit variance, so many lie outside [-1, 1]: clamping the predicted clean latent
    there (DDIM's pixel-space default) would cut them off. With an oracle model the sample decodes to the clip itself."""
    from types import SimpleNamespace

    from dit.diffusion import NoiseSchedule
    from dit.latent import PixelSpace, fit_codec

    generator = torch.Generator().manual_seed(0)
    base = torch.rand(8, 8, 16, 16, 3, generator=generator).permute(0, 4, 1, 2, 3)
    videos = (torch.nn.functional.avg_pool3d(base, 3, 1, 1).permute(0, 2, 3, 4, 1) * 255).round().to(torch.uint8)
    codec = fit_codec(videos, (2, 4, 4), 16)
    z = codec.encode(videos[:1])
    assert (z.abs() > 1).any() and codec.bounded is False and PixelSpace().bounded is True
    schedule = NoiseSchedule()
    config = SimpleNamespace(in_channels=16, clip_frames=4, clip_height=4, clip_width=4)
    run = SimpleNamespace(model=_Oracle(z, schedule), schedule=schedule, device=torch.device("cpu"), precision="fp32",
                          space=codec, model_config=config)
    clips = sample.sample_videos(run, torch.ones(1, 4, dtype=torch.long), steps=20, guidance_scale=1.0)
    assert np.abs(clips[0].astype(int) - codec.decode(z).numpy()[0].astype(int)).max() <= 1


def test_a_rerun_with_fewer_captions_leaves_only_the_samples_its_index_lists(trained_run, tmp_path):
    out = tmp_path / "out"
    for captions in (CAPTIONS, CAPTIONS[:1]):
        arguments = [item for caption in captions for item in ("--caption", caption)]
        assert sample.main(["--run", str(trained_run), "--out", str(out), *arguments, "--steps", "2", "--device", "cpu"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["files"]["mp4"] == sorted(p.name for p in out.glob("sample_*.mp4")) == ["sample_000.mp4"]


def test_a_call_that_fails_while_writing_leaves_the_earlier_samples_folder_as_it_was(trained_run, tmp_path, monkeypatch):
    """The folder is replaced as a whole: a failure after some of the new files are written (here the contact sheet)
    leaves every earlier file byte for byte, and no temporary folder beside it."""
    out = tmp_path / "out"
    arguments = ["--run", str(trained_run), "--out", str(out), "--steps", "2", "--device", "cpu"]
    assert sample.main([*arguments, "--caption", CAPTIONS[0], "--caption", CAPTIONS[1]]) == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    def broken_sheet(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sample, "write_contact_sheet", broken_sheet)
    with pytest.raises(OSError, match="disk full"):
        sample.main([*arguments, "--caption", CAPTIONS[1], "--seed", "9"])
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_an_out_folder_holding_other_files_is_refused_before_sampling(trained_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(sample, "sample_videos", lambda *args, **kwargs: pytest.fail("sampled before refusing"))
    assert sample.main(["--run", str(trained_run), "--out", str(out), "--caption", CAPTIONS[0], "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("dit.sample: --out: refusing to replace") and "notes.txt" in error and "\n" not in error
    assert [path.name for path in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
