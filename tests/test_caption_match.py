"""The caption-following check: its reader recovers the known colours and directions of generated clips."""

from __future__ import annotations

import numpy as np
from scipy import stats

from dit.caption_match import CHANCE, NAMES, check_scenes, colour_labels, main_colours, read_object, score, wilson
from dit.data.decode import resize_and_crop
from dit.data.synthetic import COLOURS, DIRECTIONS, GeneratorSettings, render_scene


def test_the_reader_recovers_colour_and_direction_of_generated_clips_at_the_prepared_size():
    settings = GeneratorSettings(clips=40, seed=5)
    scenes = check_scenes(40, settings)
    assert all(not obj.bounces for scene in scenes for obj in scene.objects)
    clips = np.stack([resize_and_crop(render_scene(scene, settings), 16, 16) for scene in scenes])
    counts = score(clips, scenes)
    assert counts["objects"] == 2 * len(scenes)
    assert counts["colour"] >= 0.95 * counts["objects"]
    assert counts["direction_right"] >= 0.9 * counts["colour"]
    # the same clips at 45% brightness, as dim as many samples are, read the same colours
    dim = score((clips * 0.45).astype(np.uint8), scenes)
    assert dim["colour"] >= 0.95 * dim["objects"] and dim["direction_right"] >= 0.9 * dim["colour"]


def test_a_dim_colour_reads_as_its_hue_not_as_the_palette_colour_nearest_in_distance():
    dim_magenta = np.array([[[[115, 25, 115]]]], dtype=np.uint8)  # half of magenta (230, 50, 230)
    distances = ((dim_magenta.astype(float)[..., None, :] - np.array(list(COLOURS.values()), float)) ** 2).sum(-1)
    assert NAMES[int(distances.argmin())] == "red"  # what the nearest colour by RGB distance says
    assert NAMES[int(colour_labels(dim_magenta)[0, 0, 0])] == "magenta"
    assert colour_labels(np.array([[[[50, 10, 50]]]], dtype=np.uint8))[0, 0, 0] == -1  # below the brightness threshold


def test_main_colours_are_the_two_visible_colours_with_the_most_pixels():
    clip = np.zeros((8, 16, 16, 3), dtype=np.uint8)
    clip[:, 0:4, 0:4] = COLOURS["blue"]  # 16 pixels a frame
    clip[:, 8:11, 8:11] = COLOURS["yellow"]  # 9
    clip[:, 14:16, 14:16] = COLOURS["red"]  # 4
    clip[:3, 5:10, 0:5] = COLOURS["white"]  # 25, but in fewer than half of the frames: not visible
    assert main_colours(colour_labels(clip)) == ["blue", "yellow"]
    assert main_colours(colour_labels(np.zeros_like(clip))) == []


def test_clips_that_ignore_their_captions_match_at_most_the_chance_rate():
    """Each scene's captions scored against another scene's frames: the colour rate stays within binomial noise of 2/8."""
    settings = GeneratorSettings(clips=200, seed=7)
    scenes = check_scenes(200, settings)
    clips = np.stack([resize_and_crop(render_scene(scene, settings), 16, 16) for scene in scenes])
    counts = score(np.roll(clips, 1, axis=0), scenes)
    expected = CHANCE["colour"] * counts["objects"]
    assert counts["colour"] <= expected + 3 * np.sqrt(expected * (1 - CHANCE["colour"]))


def test_a_still_or_blank_clip_is_read_as_such():
    blank = np.zeros((8, 16, 16, 3), dtype=np.uint8)
    assert read_object(colour_labels(blank), "red") == {"present": False, "direction": None}
    moving = blank.copy()
    for frame in range(8):  # a red 2x2 square moving down one pixel a frame
        moving[frame, 2 + frame : 4 + frame, 5:7] = COLOURS["red"]
    assert read_object(colour_labels(moving), "red") == {"present": True, "direction": "down"}
    assert read_object(colour_labels(moving), "blue")["present"] is False


def test_wilson_interval_and_chance_rates():
    for hits, trials in ((0, 10), (7, 10), (32, 32), (13, 40)):
        expected = stats.binomtest(hits, trials).proportion_ci(confidence_level=0.9, method="wilson")
        assert np.allclose(wilson(hits, trials, 0.9), [expected.low, expected.high])
    assert CHANCE == {"colour": 2 / len(COLOURS), "direction": 1 / len(DIRECTIONS)}
