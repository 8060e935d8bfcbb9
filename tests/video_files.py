"""Small video files for the data-stage tests: any codec PyAV encodes, a display rotation, an unknown codec."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: PyAV's container format for each file extension used in the tests.
CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
#: Encoder options that keep the test files small and fast to write.
FAST_OPTIONS = {
    "libx264": {"crf": "0", "threads": "1"},
    "libsvtav1": {"preset": "12", "crf": "20"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "0"},
}


def asymmetric_clip(frames: int = 12, height: int = 64, width: int = 128) -> np.ndarray:
    """uint8 ``(frames, height, width, 3)``: a bright top-left quadrant, a blue band along the top, grey elsewhere.

    No rotation or mirror leaves it unchanged; the grey level rises by 4 per frame, so frames differ.
    """
    clip = np.zeros((frames, height, width, 3), dtype=np.uint8)
    for index in range(frames):
        clip[index] = 40 + 4 * index
    clip[:, : height // 2, : width // 2] = 230
    clip[:, : height // 8, :, 2] = 250
    return clip


def textured_clip(frames: int = 40, height: int = 72, width: int = 96, seed: int = 0) -> np.ndarray:
    """uint8 ``(frames, height, width, 3)``: moving colour gradients, a checkerboard and a noise patch."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width]
    clip = np.zeros((frames, height, width, 3), dtype=np.uint8)
    for index in range(frames):
        clip[index, ..., 0] = (columns * 255 // (width - 1) + 6 * index) % 256
        clip[index, ..., 1] = rows * 255 // (height - 1)
        clip[index, ..., 2] = ((columns // 8 + rows // 8 + index) % 2) * 180 + 40
        clip[index, height // 4 : height // 2, width // 4 : width // 2] = rng.integers(
            0, 256, (height // 2 - height // 4, width // 2 - width // 4, 3)
        )
    return clip


def write_video(
    path: Path,
    frames: np.ndarray,
    codec: str = "libx264",
    pixel_format: str = "yuv420p",
    clockwise_degrees: int = 0,
    mirrored: bool = False,
    keyframe_interval: int | None = None,
) -> Path:
    """Encode RGB ``frames`` with PyAV at 8 frames per second; the container follows the file's extension.

    With ``clockwise_degrees`` or ``mirrored`` the stream carries a display matrix saying the frames
    are shown rotated that many degrees clockwise, then mirrored left to right.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    with av.open(str(path), mode="w", format=CONTAINERS[path.suffix]) as container:
        stream = container.add_stream(codec, rate=Fraction(8))
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        stream.options = dict(FAST_OPTIONS.get(codec, {}))
        if keyframe_interval:
            stream.codec_context.gop_size = keyframe_interval
        if clockwise_degrees or mirrored:
            stream.set_display_rotation(-clockwise_degrees, hflip=mirrored)  # PyAV takes counter-clockwise degrees
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=pixel_format)
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_unknown_codec(path: Path, frames: np.ndarray) -> Path:
    """An MP4 whose H.264 track is labelled with a sample-entry code no decoder knows (``zzzz``)."""
    write_video(path, frames)
    data = path.read_bytes()
    entry = data.index(b"avc1", data.index(b"stsd"))
    path.write_bytes(data[:entry] + b"zzzz" + data[entry + 4 :])
    return path
