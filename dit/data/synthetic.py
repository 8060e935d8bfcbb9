"""The embedded default data set: seeded, captioned clips of moving glyphs and shapes.

Each clip shows ``min_objects`` to ``max_objects`` objects on a black background. An object is a
digit or capital letter (DejaVu Sans Bold, the font that ships with matplotlib) or a simple shape,
in one of eight colours (distinct within a clip), small or big, moving left, right, up or down,
slowly or quickly, bouncing off the frame's edges. Objects are drawn in order, so a later one
hides an earlier one where they overlap. The caption states exactly what the clip shows, e.g.
``"big red 7 moves left quickly and bounces while small blue square moves up slowly, blue square in front"``:

* per object: ``{size} {colour} {name} moves {direction} {speed}``, plus ``and bounces`` when it
  hits an edge during the clip (the direction is the one it starts with; where the frame leaves
  room, it keeps that direction for at least half of the clip before bouncing);
* objects joined by ``while``;
* for every pair that overlaps in some frame: ``, {colour} {name} in front`` (two objects) or
  ``, {colour} {name} in front of {colour} {name}`` (more than two).

Two-object captions are at most 22 words, so they fit the tokenizer's default 24 tokens (begin
token included). No articles are used, so no caption word is also a glyph; every caption word has
its own id under the hashed tokenizer at the default vocabulary of 4096 (``tests/test_data_synthetic.py``).

Clip ``i`` depends only on ``(seed, i)``: generating more clips leaves the first ones unchanged.
Glyph bitmaps are rendered once per (glyph, height) and frames are composed in numpy.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from dit.atomic import atomic_directory, atomic_write_json, atomic_write_text
from dit.data.prepare import publish_permissions
from dit.data.video_io import DEFAULT_CRF, DEFAULT_PIXEL_FORMAT, write_mp4
from dit.provenance import provenance

#: Colour name -> RGB. Saturated and far apart so that each stays recognizable at 32x32 pixels.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (235, 40, 40),
    "green": (40, 200, 60),
    "blue": (60, 100, 255),
    "yellow": (245, 225, 40),
    "cyan": (40, 225, 235),
    "magenta": (230, 50, 230),
    "white": (250, 250, 250),
    "orange": (255, 140, 0),
}
DIGITS = tuple("0123456789")
#: Capital letters that do not look like a digit or another letter at 11 pixels (no A/I/O/S/Z/B/G/D/Q/C/J).
LETTERS = tuple("EFHKLMNPRTUVWXY")
SHAPES = ("square", "circle", "triangle", "diamond", "cross")
#: Direction word -> unit (dy, dx) in pixels per frame (rows grow downwards).
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
SIZES = ("small", "big")
SPEEDS = ("slowly", "quickly")
#: Object height as a fraction of the shorter frame side: 11 and 16 pixels at 32x32.
SIZE_FRACTION = {"small": 0.34, "big": 0.5}
#: Speed in frame-side fractions per frame: 1 and 2.5 pixels per frame at 32x32.
SPEED_FRACTION = {"slowly": 1 / 32, "quickly": 2.5 / 32}
#: Words that join the object phrases.
CONNECTIVES = ("moves", "and", "bounces", "while", "in", "front", "of", ",")
BACKGROUND = (0, 0, 0)
FONT_FAMILY = "DejaVu Sans"
FONT_WEIGHT = "bold"


@dataclass(frozen=True)
class GeneratorSettings:
    """Size and look of a generated data set.

    Attributes:
        clips: number of clips.
        frames: frames per clip.
        height, width: frame size in pixels (even, at least 16).
        fps: frames per second written into the video files.
        seed: clip ``i`` is drawn from ``(seed, i)`` alone.
        min_objects, max_objects: objects per clip, drawn uniformly in this range (at most 8).
        crf: x264 constant rate factor of the MP4 files.
        pixel_format: encoder pixel format (``yuv444p`` keeps full colour resolution).
    """

    clips: int = 4096
    frames: int = 8
    height: int = 32
    width: int = 32
    fps: float = 8
    seed: int = 0
    min_objects: int = 2
    max_objects: int = 2
    crf: int = DEFAULT_CRF
    pixel_format: str = DEFAULT_PIXEL_FORMAT

    def __post_init__(self) -> None:
        if self.clips < 1:
            raise ValueError(f"clips must be at least 1, got {self.clips}")
        if self.frames < 1:
            raise ValueError(f"frames must be at least 1, got {self.frames}")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value < 16 or value % 2:
                raise ValueError(f"{name} must be an even number of pixels >= 16, got {value}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive number, got {self.fps}")
        if not 0 <= self.crf <= 51:  # x264's range, as write_mp4 checks
            raise ValueError(f"crf must lie in [0, 51], got {self.crf}")
        if not 1 <= self.min_objects <= self.max_objects <= len(COLOURS):
            raise ValueError(
                f"need 1 <= min_objects <= max_objects <= {len(COLOURS)}, got {self.min_objects}, {self.max_objects}"
            )


@dataclass(frozen=True)
class SceneObject:
    """One moving object. Positions are the top-left corner of its box, in pixels, per frame."""

    name: str  # glyph ("7", "K") or shape name ("square")
    colour: str
    size: str
    speed: str
    direction: str
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    bounces: bool

    def label(self) -> str:
        """``"{colour} {name}"``, unique within a clip because colours are."""
        return f"{self.colour} {self.name}"


@dataclass(frozen=True)
class Scene:
    """Everything a clip shows; objects listed back to front."""

    index: int
    objects: tuple[SceneObject, ...]
    occlusions: tuple[tuple[int, int], ...] = field(default=())  # (front, back) object indices that overlap


def caption_vocabulary() -> list[str]:
    """Every word a caption can contain, as the tokenizer normalizes it."""
    words = list(SIZES) + list(COLOURS) + [g.lower() for g in DIGITS + LETTERS] + list(SHAPES)
    return words + list(DIRECTIONS) + list(SPEEDS) + list(CONNECTIVES)


def caption_contrast_words() -> dict:
    """The words of ``python -m dit.evaluate captions``'s contrasts for this set: ``swap``, the pairs of opposite
    directions (reversing every stated motion), and ``exchange``, the colour words (the two objects trade colours)."""
    pairs = sorted(tuple(sorted((a, b))) for a, (dy, dx) in DIRECTIONS.items() for b, move in DIRECTIONS.items()
                   if move == (-dy, -dx) and a < b)
    return {"swap": [list(pair) for pair in pairs], "exchange": list(COLOURS)}


@lru_cache(maxsize=None)
def _font_path() -> str:
    from matplotlib import font_manager  # deferred: its import loads, or first builds, matplotlib's font cache

    return font_manager.findfont(
        font_manager.FontProperties(family=FONT_FAMILY, weight=FONT_WEIGHT), fallback_to_default=True
    )


@lru_cache(maxsize=None)
def object_mask(name: str, height: int) -> np.ndarray:
    """Coverage mask (float32 in [0, 1], shape ``(height, w)``) of a glyph or shape ``height`` pixels tall."""
    if name in SHAPES:
        return _shape_mask(name, height)
    return _glyph_mask(name, height)


def _glyph_mask(glyph: str, height: int) -> np.ndarray:
    from matplotlib import ft2font  # deferred with font_manager (above): only glyph rendering needs matplotlib

    font = ft2font.FT2Font(_font_path())
    font.set_size(128, 72)
    font.set_text(glyph, 0.0)
    font.draw_glyphs_to_bitmap(antialiased=True)
    image = np.asarray(font.get_image())
    rows, cols = np.nonzero(image)
    if rows.size == 0:
        raise ValueError(f"font {_font_path()} renders nothing for glyph {glyph!r}")
    crop = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    width = max(1, min(height, round(crop.shape[1] * height / crop.shape[0])))
    small = Image.fromarray(crop).resize((width, height), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _shape_mask(shape: str, height: int, supersample: int = 8) -> np.ndarray:
    n = height * supersample
    centres = (np.arange(n) + 0.5) / n * 2.0 - 1.0  # [-1, 1]
    y, x = np.meshgrid(centres, centres, indexing="ij")
    if shape == "square":
        inside = (np.abs(x) <= 0.9) & (np.abs(y) <= 0.9)
    elif shape == "circle":
        inside = x * x + y * y <= 1.0
    elif shape == "triangle":  # apex up, base at the bottom
        inside = (y <= 1.0) & (np.abs(x) <= (y + 1.0) / 2.0)
    elif shape == "diamond":
        inside = np.abs(x) + np.abs(y) <= 1.0
    elif shape == "cross":
        inside = ((np.abs(x) <= 0.3) | (np.abs(y) <= 0.3)) & (np.abs(x) <= 1.0) & (np.abs(y) <= 1.0)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    coverage = inside.astype(np.float32).reshape(height, supersample, height, supersample).mean(axis=(1, 3))
    return coverage


def _trajectory(start: float, velocity: float, limit: float, frames: int) -> tuple[list[int], bool]:
    """Positions (rounded pixels) of a point moving at ``velocity`` that reflects at 0 and ``limit``.

    Also returns whether the drawn positions visibly turn back (a reflection in the last step
    that rounds to the edge pixel is not a visible bounce).
    """
    positions, position, initial = [], start, velocity
    for frame in range(frames):
        if frame > 0:
            position += velocity
            if position < 0 or position > limit:
                velocity = -velocity
                position = -position if position < 0 else 2 * limit - position
                position = min(max(position, 0.0), limit)
        positions.append(int(round(position)))
    bounced = bool(np.any(np.diff(positions) * np.sign(initial) < 0))
    return positions, bounced


def _start_position(rng: np.random.Generator, velocity: float, limit: float, frames: int) -> float:
    """A start in ``[0, limit]`` from which the object keeps its stated direction for half the clip, where room allows."""
    lead = abs(velocity) * ((frames - 1 + 1) // 2)
    if velocity < 0:
        return rng.uniform(min(limit, lead), limit)
    if velocity > 0:
        return rng.uniform(0.0, max(0.0, limit - lead))
    return rng.uniform(0.0, limit)


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of clip ``index``: depends on ``(seed, index)`` only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 0x5EED]))


def sample_scene(settings: GeneratorSettings, index: int) -> Scene:
    """Draw the objects and motions of clip ``index``."""
    rng = clip_rng(settings.seed, index)
    count = int(rng.integers(settings.min_objects, settings.max_objects + 1))
    colours = rng.choice(list(COLOURS), size=count, replace=False)
    side = min(settings.height, settings.width)
    objects = []
    for colour in colours:
        if rng.random() < 0.5:
            name = str(rng.choice(DIGITS if rng.random() < 0.5 else LETTERS))
        else:
            name = str(rng.choice(SHAPES))
        size = str(rng.choice(SIZES))
        speed = str(rng.choice(SPEEDS))
        direction = str(rng.choice(list(DIRECTIONS)))
        box_h, box_w = object_mask(name, round(SIZE_FRACTION[size] * side)).shape
        limit_row, limit_col = settings.height - box_h, settings.width - box_w
        step = SPEED_FRACTION[speed] * side
        d_row, d_col = DIRECTIONS[direction]
        start_row = _start_position(rng, d_row * step, limit_row, settings.frames)
        start_col = _start_position(rng, d_col * step, limit_col, settings.frames)
        rows, bounced_rows = _trajectory(start_row, d_row * step, limit_row, settings.frames)
        cols, bounced_cols = _trajectory(start_col, d_col * step, limit_col, settings.frames)
        objects.append(
            SceneObject(
                name=name,
                colour=str(colour),
                size=size,
                speed=speed,
                direction=direction,
                rows=tuple(rows),
                cols=tuple(cols),
                bounces=bounced_rows or bounced_cols,
            )
        )
    scene = Scene(index=index, objects=tuple(objects))
    return Scene(index=index, objects=scene.objects, occlusions=_occlusions(scene, settings))


def _object_coverage(obj: SceneObject, settings: GeneratorSettings, frame: int) -> tuple[np.ndarray, int, int]:
    mask = object_mask(obj.name, round(SIZE_FRACTION[obj.size] * min(settings.height, settings.width)))
    return mask, obj.rows[frame], obj.cols[frame]


def _occlusions(scene: Scene, settings: GeneratorSettings) -> tuple[tuple[int, int], ...]:
    """Pairs (front, back) whose visible parts overlap (both > half covered) in at least one frame."""
    pairs = []
    for back in range(len(scene.objects)):
        for front in range(back + 1, len(scene.objects)):
            for frame in range(settings.frames):
                canvas = np.zeros((2, settings.height, settings.width), dtype=np.float32)
                for slot, which in enumerate((back, front)):
                    mask, row, col = _object_coverage(scene.objects[which], settings, frame)
                    canvas[slot, row : row + mask.shape[0], col : col + mask.shape[1]] = mask
                if np.any((canvas[0] > 0.5) & (canvas[1] > 0.5)):
                    pairs.append((front, back))
                    break
    return tuple(pairs)


def render_scene(scene: Scene, settings: GeneratorSettings) -> np.ndarray:
    """The clip's frames, uint8 ``(frames, height, width, 3)``, RGB."""
    canvas = np.empty((settings.frames, settings.height, settings.width, 3), dtype=np.float32)
    canvas[:] = np.asarray(BACKGROUND, dtype=np.float32)
    for obj in scene.objects:
        colour = np.asarray(COLOURS[obj.colour], dtype=np.float32)
        for frame in range(settings.frames):
            mask, row, col = _object_coverage(obj, settings, frame)
            alpha = mask[:, :, None]
            region = canvas[frame, row : row + mask.shape[0], col : col + mask.shape[1]]
            region *= 1.0 - alpha
            region += alpha * colour
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def caption_scene(scene: Scene) -> str:
    """The caption of a scene (see the module docstring for its grammar)."""
    phrases = []
    for obj in scene.objects:
        phrase = f"{obj.size} {obj.colour} {obj.name} moves {obj.direction} {obj.speed}"
        if obj.bounces:
            phrase += " and bounces"
        phrases.append(phrase)
    caption = " while ".join(phrases)
    for front, back in scene.occlusions:
        caption += f", {scene.objects[front].label()} in front"
        if len(scene.objects) > 2:
            caption += f" of {scene.objects[back].label()}"
    return caption


def clip_file_name(index: int) -> str:
    """Relative path of clip ``index`` inside a generated folder."""
    return f"clips/clip_{index:06d}.mp4"


@dataclass(frozen=True)
class GenerationSummary:
    out: Path
    clips: int
    seconds: float

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else float("inf")


def generate_dataset(out: str | Path, settings: GeneratorSettings) -> GenerationSummary:
    """Write ``settings.clips`` MP4 files and ``captions.csv`` (columns ``file,caption``) into ``out``.

    Also writes ``generation.json`` (settings, every clip's objects, provenance). The folder is
    built aside and appears complete or not at all. An existing ``out`` is replaced only when it is
    empty or a folder this function wrote (``dit.atomic.OutputPathError`` otherwise).
    """
    started = time.perf_counter()
    out = Path(out)
    rows, scenes = [], []
    kind = "generated data folder (with a generation.json)"
    with atomic_directory(out, replaces=is_generated_folder, kind=kind) as tmp:
        (tmp / "clips").mkdir()
        for index in range(settings.clips):
            scene = sample_scene(settings, index)
            frames = render_scene(scene, settings)
            name = clip_file_name(index)
            write_mp4(frames, tmp / name, fps=settings.fps, crf=settings.crf, pixel_format=settings.pixel_format)
            caption = caption_scene(scene)
            rows.append((name, caption))
            scenes.append({"file": name, "caption": caption, "objects": [_object_record(o) for o in scene.objects]})
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["file", "caption"])
        writer.writerows(rows)
        atomic_write_text(tmp / "captions.csv", buffer.getvalue())
        config = {
            "generator": asdict(settings),
            "font": {"family": FONT_FAMILY, "weight": FONT_WEIGHT, "file": Path(_font_path()).name},
        }
        atomic_write_json(
            tmp / "generation.json",
            {"settings": asdict(settings), "clips": scenes, "provenance": provenance(config)},
        )
        publish_permissions(tmp)
    return GenerationSummary(out=out, clips=settings.clips, seconds=time.perf_counter() - started)


def is_generated_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds the ``generation.json`` that ``generate_dataset`` writes."""
    try:
        with open(Path(folder) / "generation.json", encoding="utf-8") as handle:
            record = json.load(handle)
        return isinstance(record["settings"], dict) and "generator" in record["provenance"]["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _object_record(obj: SceneObject) -> dict:
    record = asdict(obj)
    record["rows"] = list(obj.rows)
    record["cols"] = list(obj.cols)
    return record
