"""The embedded synthetic data set: determinism, faithful captions, a collision-free vocabulary."""

import csv
import json

import numpy as np
import pytest

from dit.data.__main__ import main
from dit.data.synthetic import (
    COLOURS,
    DIRECTIONS,
    DIGITS,
    LETTERS,
    SHAPES,
    GeneratorSettings,
    caption_scene,
    caption_vocabulary,
    generate_dataset,
    object_mask,
    render_scene,
    sample_scene,
)
from dit.data.video_io import psnr, read_frames, write_gif
from dit.text import CaptionTokenizer


def test_caption_vocabulary_is_collision_free_at_the_default_vocabulary_size():
    tokenizer = CaptionTokenizer()  # vocab_size 4096
    vocabulary = caption_vocabulary()
    assert len(set(vocabulary)) == len(vocabulary)
    ids = [tokenizer.word_id(word) for word in vocabulary]
    assert len(set(ids)) == len(ids)


def test_captions_use_only_the_vocabulary_and_fit_the_default_caption_length():
    settings = GeneratorSettings()
    tokenizer = CaptionTokenizer()
    vocabulary = set(caption_vocabulary())
    for index in range(300):
        caption = caption_scene(sample_scene(settings, index))
        words = tokenizer.words(caption)
        assert set(words) <= vocabulary, caption
        assert not tokenizer.truncated(caption), caption


def test_same_seed_same_clips_and_clip_i_does_not_depend_on_the_count(tmp_path):
    small = generate_dataset(tmp_path / "a", GeneratorSettings(clips=3, seed=7)).out
    large = generate_dataset(tmp_path / "b", GeneratorSettings(clips=5, seed=7)).out
    other = generate_dataset(tmp_path / "c", GeneratorSettings(clips=3, seed=8)).out
    for index in range(3):
        name = f"clips/clip_{index:06d}.mp4"
        assert (small / name).read_bytes() == (large / name).read_bytes()
        assert (small / name).read_bytes() != (other / name).read_bytes()
    rows_small = list(csv.reader(open(small / "captions.csv")))
    rows_large = list(csv.reader(open(large / "captions.csv")))
    assert rows_small[0] == ["file", "caption"]
    assert rows_small == rows_large[:4]
    record = json.loads((small / "generation.json").read_text())
    assert record["settings"]["seed"] == 7 and "provenance" in record
    assert [clip["caption"] for clip in record["clips"]] == [row[1] for row in rows_small[1:]]


def test_rendering_is_deterministic_and_round_trips_through_mp4_above_30_db(tmp_path):
    settings = GeneratorSettings(clips=4, seed=3)
    out = generate_dataset(tmp_path / "gen", settings).out
    for index in range(4):
        frames = render_scene(sample_scene(settings, index), settings)
        np.testing.assert_array_equal(frames, render_scene(sample_scene(settings, index), settings))
        assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
        decoded = read_frames(out / f"clips/clip_{index:06d}.mp4")
        assert psnr(frames, decoded) >= 30.0


def _centroid(frame: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    distance = np.abs(frame.astype(int) - np.asarray(colour)).sum(axis=-1)
    rows, cols = np.nonzero(distance < 60)
    return np.array([rows.mean(), cols.mean()])


@pytest.mark.parametrize("index", range(40))
def test_single_object_captions_state_what_the_frames_show(index):
    settings = GeneratorSettings(min_objects=1, max_objects=1, seed=11)
    scene = sample_scene(settings, index)
    frames = render_scene(scene, settings)
    (obj,) = scene.objects
    caption = caption_scene(scene)
    assert caption.startswith(f"{obj.size} {obj.colour} {obj.name} moves {obj.direction} {obj.speed}")
    assert caption.endswith("and bounces") == obj.bounces
    # the captioned colour is on screen, and it moves the captioned way until it bounces
    step = np.array(DIRECTIONS[obj.direction])
    previous = _centroid(frames[0], COLOURS[obj.colour])
    moved = 0.0
    for frame in frames[1:]:
        current = _centroid(frame, COLOURS[obj.colour])
        along = float((current - previous) @ step)
        if along < 0:
            break  # bounced
        moved += along
        previous = current
    assert moved >= 1.0
    # a bounce reverses the motion within the clip, and only then
    positions = np.array([obj.rows, obj.cols]).T @ step
    assert obj.bounces == bool(np.any(np.diff(positions) < 0))


def test_occlusion_is_captioned_with_the_object_in_front():
    settings = GeneratorSettings(seed=0)
    scenes = [sample_scene(settings, index) for index in range(200)]
    occluded = [scene for scene in scenes if scene.occlusions]
    assert 0 < len(occluded) < len(scenes)
    for scene in occluded:
        front, back = scene.occlusions[0]
        assert front > back
        assert caption_scene(scene).endswith(f", {scene.objects[front].label()} in front")


def test_glyphs_and_shapes_stay_distinguishable_at_the_small_size():
    height = round(0.34 * 32)  # the small object size at 32x32 pixels
    names = list(DIGITS + LETTERS + SHAPES)
    masks = {}
    for name in names:
        mask = object_mask(name, height)
        assert mask.shape[0] == height and 1 <= mask.shape[1] <= height
        padded = np.zeros((height, height), dtype=np.float32)
        offset = (height - mask.shape[1]) // 2
        padded[:, offset : offset + mask.shape[1]] = mask
        masks[name] = padded
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            difference = np.abs(masks[first] - masks[second]).sum()
            assert difference >= 8.0, (first, second, difference)  # at least 8 pixels' worth of coverage


def test_generate_command_and_gif_writer(tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path / "gen"), "--clips", "2", "--seed", "5", "--size", "16"]) == 0
    assert "wrote 2 clips" in capsys.readouterr().out
    frames = read_frames(tmp_path / "gen" / "clips" / "clip_000001.mp4")
    assert frames.shape == (8, 16, 16, 3)
    gif = write_gif(frames, tmp_path / "clip.gif", fps=8, scale=2)
    from PIL import Image

    with Image.open(gif) as image:
        assert image.size == (32, 32) and image.n_frames == 8


def test_bad_generator_settings_are_rejected(capsys):
    with pytest.raises(ValueError, match="height"):
        GeneratorSettings(height=31)
    with pytest.raises(ValueError, match="min_objects"):
        GeneratorSettings(min_objects=3, max_objects=2)
    assert main(["generate", "--out", "unused", "--clips", "0"]) == 2
    assert "clips must be at least 1" in capsys.readouterr().err


def test_bad_generate_options_and_an_out_that_is_not_an_earlier_generated_folder_exit_2(tmp_path, capsys):
    for options, message in [(["--crf", "99"], "crf must lie in [0, 51], got 99"),
                             (["--fps", "nan"], "fps must be a positive number, got nan"),
                             (["--fps", "inf"], "fps must be a positive number, got inf")]:
        assert main(["generate", "--out", str(tmp_path / "gen"), "--clips", "1", *options]) == 2
        assert f"error: {message}" in capsys.readouterr().err
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    assert main(["generate", "--out", str(notes), "--clips", "1"]) == 2
    assert f"error: refusing to replace {notes}: it is a file" in capsys.readouterr().err
    assert main(["generate", "--out", str(tmp_path / "data" / "gen"), "--clips", "1"]) == 0  # parents are made
    assert main(["generate", "--out", str(notes / "gen"), "--clips", "1"]) == 2
    assert f"error: cannot write {notes / 'gen'}: " in capsys.readouterr().err
    assert notes.read_text() == "precious"
    # a rerun replaces its own earlier output
    assert main(["generate", "--out", str(tmp_path / "data" / "gen"), "--clips", "2", "--size", "16"]) == 0
    assert len(list((tmp_path / "data" / "gen" / "clips").iterdir())) == 2
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["gen"]
