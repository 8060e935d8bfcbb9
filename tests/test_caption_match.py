"""The caption-following check: its reader recovers the known colours and directions of generated clips."""

from __future__ import annotations

import numpy as np
from scipy import stats

from dit.caption_match import CHANCE, check_scenes, colour_labels, read_object, score, wilson
from dit.data.decode import resize_and_crop
from dit.data.synthetic import COLOURS, DIRECTIONS, GeneratorSettings, render_scene


def test_the_reader_recovers_colour_and_direction_of_generated_clips_at_the_prepared_size():
    settings = GeneratorSettings(clips=40, seed=5)
    scenes = check_scenes(40, settings)
    assert all(not obj.bounces for scene in scenes for obj in scene.objects)
    clips = np.stack([resize_and_crop(render_scene(scene, settings), 16, 16) for scene in scenes])
    counts = score(clips, scenes)
    assert counts["objects"] == 2 * len(scenes)
    assert counts["colour_present"] >= 0.95 * counts["objects"]
    assert counts["direction_right"] >= 0.9 * counts["colour_present"]


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
    assert CHANCE == {"colour_present": 2 / len(COLOURS), "direction": 1 / len(DIRECTIONS)}
