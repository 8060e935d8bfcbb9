"""Writing clips as video files (H.264 MP4 through PyAV, animated GIF through Pillow) and reading them back.

Clips are uint8 arrays of shape ``(frames, height, width, 3)``, RGB. The default encoding is
H.264 (libx264) in 4:4:4 chroma (``yuv444p``) at CRF 12: at 32x32 pixels the usual 4:2:0
chroma subsampling alone limits the round trip to about 24-31 dB PSNR on saturated glyph edges,
while 4:4:4 at CRF 12 round-trips the synthetic clips at 40 dB or more (about 44 dB on average)
and decord decodes it.

Encoding is byte-for-byte reproducible: the same frames give the same file in every process.
Two things are needed for that, both measured (``tests/test_data_synthetic.py``):

* **The colour conversion is ours.** RGB becomes Y'CbCr (BT.601, limited range, the matrix
  decoders assume for untagged SD video) in integer numpy arithmetic (``rgb_to_yuv_planes``), so
  no SIMD path of swscale chosen at run time takes part.
* **x264 runs its C code paths** (``asm=0``) on one thread. With its assembly, the macroblock-tree
  rate control (``mbtree``) of the default preset gave different bytes for about 2% of the
  embedded clips between processes (up to 6/255 in decoded pixels); with ``asm=0`` 12 processes
  encoding the same 400 clips gave identical bytes. The C paths cost about 1 ms per 32x32 clip.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from dit.atomic import atomic_path

#: x264 constant rate factor used by default (0 = lossless, 51 = worst).
DEFAULT_CRF = 12
#: Pixel format used by default; ``yuv444p`` keeps full chroma resolution.
DEFAULT_PIXEL_FORMAT = "yuv444p"
#: x264 preset used by default.
DEFAULT_PRESET = "medium"
#: Pixel formats ``write_mp4`` converts to itself: name -> (chroma rows, chroma columns) subsampling.
PIXEL_FORMATS = {"yuv444p": (1, 1), "yuv420p": (2, 2)}
#: x264 settings that make its output a function of the input alone (see the module docstring).
X264_REPRODUCIBLE_PARAMS = "asm=0:threads=1:lookahead-threads=1"


def check_clip(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    """Validate a uint8 ``(F, H, W, 3)`` clip and return it as a C-contiguous array."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (frames, height, width, 3), got {frames.shape}")
    if frames.shape[0] < 1:
        raise ValueError(f"{name} has no frames")
    return np.ascontiguousarray(frames)


def rgb_to_yuv_planes(frame: np.ndarray, pixel_format: str = DEFAULT_PIXEL_FORMAT) -> np.ndarray:
    """One RGB frame (uint8 ``(H, W, 3)``) as the planes of ``pixel_format``, laid out as PyAV takes them.

    BT.601 limited range in integer arithmetic (the classic 8-bit form, within 1 code value of
    swscale's): Y' in [16, 235], Cb and Cr in [16, 240]. For ``yuv420p`` each chroma sample is the
    rounded mean of its 2x2 block. Returns uint8 ``(3, H, W)`` for ``yuv444p`` and
    ``(3 H / 2, W)`` (Y' then Cb then Cr, each flattened) for ``yuv420p``.
    """
    if pixel_format not in PIXEL_FORMATS:
        raise ValueError(f"pixel_format must be one of {', '.join(PIXEL_FORMATS)}; got {pixel_format!r}")
    red, green, blue = (frame[..., channel].astype(np.int32) for channel in range(3))
    luma = ((66 * red + 129 * green + 25 * blue + 128) >> 8) + 16
    blue_difference = ((-38 * red - 74 * green + 112 * blue + 128) >> 8) + 128
    red_difference = ((112 * red - 94 * green - 18 * blue + 128) >> 8) + 128
    if pixel_format == "yuv444p":
        return np.stack([luma, blue_difference, red_difference]).astype(np.uint8)
    height, width = luma.shape

    def subsample(plane: np.ndarray) -> np.ndarray:
        blocks = plane.reshape(height // 2, 2, width // 2, 2).sum(axis=(1, 3))
        return ((blocks + 2) >> 2).ravel()

    planes = np.concatenate([luma.ravel(), subsample(blue_difference), subsample(red_difference)])
    return planes.reshape(-1, width).astype(np.uint8)


def write_mp4(
    frames: np.ndarray,
    path: str | os.PathLike,
    fps: float = 8,
    crf: int = DEFAULT_CRF,
    pixel_format: str = DEFAULT_PIXEL_FORMAT,
    preset: str = DEFAULT_PRESET,
) -> Path:
    """Encode ``frames`` (uint8 ``(F, H, W, 3)``, RGB) as an H.264 MP4 at ``fps`` frames per second.

    Height and width must be even (a requirement of the 4:2:0 format; kept for all formats so that
    the files play everywhere). ``pixel_format`` is one of ``PIXEL_FORMATS``. The same frames give
    the same bytes in every process (see the module docstring). The file is written atomically.
    Returns the path.
    """
    frames = check_clip(frames)
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 needs even height and width, got {height}x{width}")
    if pixel_format not in PIXEL_FORMATS:
        raise ValueError(f"pixel_format must be one of {', '.join(PIXEL_FORMATS)}; got {pixel_format!r}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must lie in [0, 51], got {crf}")
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    final = Path(path)
    with atomic_path(final, suffix=final.suffix or ".mp4") as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width = width
            stream.height = height
            stream.pix_fmt = pixel_format
            time_base = 1 / rate
            stream.time_base = time_base
            stream.codec_context.thread_count = 1
            stream.codec_context.thread_type = "NONE"
            stream.options = {
                "crf": str(crf), "preset": preset, "threads": "1", "x264-params": X264_REPRODUCIBLE_PARAMS,
            }
            for index, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(rgb_to_yuv_planes(image, pixel_format), format=pixel_format)
                frame.pts = index
                frame.time_base = time_base
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return final


def enlarge(frames: np.ndarray, factor: int) -> np.ndarray:
    """Frames ``(..., H, W, C)`` with each pixel repeated ``factor`` times along H and W (nearest neighbour)."""
    if factor == 1:
        return frames
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2)


def write_gif(frames: np.ndarray, path: str | os.PathLike, fps: float = 8, scale: int = 1) -> Path:
    """Write ``frames`` (uint8 ``(F, H, W, 3)``) as a looping animated GIF, each pixel enlarged ``scale`` times."""
    frames = check_clip(frames)
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    frames = enlarge(frames, scale)
    images = [Image.fromarray(frame) for frame in frames]
    duration_ms = max(20, round(1000 / fps))
    final = Path(path)
    with atomic_path(final, suffix=".gif") as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return final


#: Largest departure from a quarter turn (degrees) of a display matrix that is taken for that quarter turn.
ROTATION_TOLERANCE_DEGREES = 2.0


@dataclass(frozen=True)
class Orientation:
    """How stored frames are turned upright for display, from the stream's display matrix.

    The display matrix is FFmpeg's (``libavutil/display.h``): with ``(a, b, c, d)`` its entries 0,
    1, 3 and 4 (16.16 fixed point), a stored pixel at column ``x``, row ``y`` (``y`` downward) is
    shown at ``x' = a x + c y``, ``y' = b x + d y``. FFmpeg's ``av_display_rotation_get`` reads
    that as a counter-clockwise angle, so ``rotation_degrees`` here is minus that angle: a phone's
    portrait video (a landscape sensor image tagged ``rotate=90``, ``av_display_rotation_get`` =
    -90) is turned 90 degrees clockwise. A matrix with negative determinant is a rotation followed
    by a left-right mirror (how ``av_display_matrix_flip`` writes one). This is what the ``ffmpeg``
    tool's autorotate shows, and what decord 0.6.0 applies to the MP4/MOV rotations it reads.

    Attributes:
        rotation_degrees: clockwise rotation for display: 0, 90, 180 or 270 degrees.
        mirrored: after the rotation, the image is mirrored left to right.
    """

    rotation_degrees: int = 0
    mirrored: bool = False

    def __post_init__(self) -> None:
        if self.rotation_degrees not in (0, 90, 180, 270):
            raise ValueError(f"rotation_degrees must be 0, 90, 180 or 270, got {self.rotation_degrees}")

    @property
    def upright(self) -> bool:
        """True when the stored frames are shown as they are."""
        return self.rotation_degrees == 0 and not self.mirrored

    @property
    def swaps_sides(self) -> bool:
        """True when the displayed height is the stored width (a quarter turn)."""
        return self.rotation_degrees in (90, 270)

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """Frames ``(F, H, W, C)`` as displayed: rotated clockwise, then mirrored when ``mirrored``."""
        turned = np.rot90(frames, k=-self.rotation_degrees // 90, axes=(1, 2))
        if self.mirrored:
            turned = turned[:, :, ::-1]
        return np.ascontiguousarray(turned)

    @classmethod
    def from_display_matrix(cls, matrix) -> "Orientation":
        """The orientation of a 9-entry display matrix; ``ValueError`` unless it is a quarter turn (and mirror)."""
        a, b, c, d = (float(matrix[i]) / 65536 for i in (0, 1, 3, 4))
        determinant = a * d - b * c
        if determinant == 0:
            raise ValueError("display matrix is singular")
        mirrored = determinant < 0
        angle = math.degrees(math.atan2(b, -a if mirrored else a))
        quarter = round(angle / 90)
        if abs(angle - 90 * quarter) > ROTATION_TOLERANCE_DEGREES:
            raise ValueError(f"display matrix turns the picture {angle:.1f} degrees clockwise, not a quarter turn")
        return cls(rotation_degrees=(90 * quarter) % 360, mirrored=mirrored)

    @classmethod
    def of_frame(cls, frame) -> "Orientation":
        """The orientation of a decoded ``av.VideoFrame`` (its ``DISPLAYMATRIX`` side data; upright without one)."""
        for side_data in frame.side_data:
            if side_data.type.name == "DISPLAYMATRIX":
                return cls.from_display_matrix(np.frombuffer(bytes(side_data), dtype=np.int32))
        return cls()


#: decord 0.6.0 fails to copy frames of some widths (8, 12, 16, 24, 48, 72 pixels, ...) with this message.
DECORD_ROW_SIZE_BUG = "The size must exactly match"


def read_frames(path: str | os.PathLike, indices: list[int] | None = None) -> np.ndarray:
    """Frames ``indices`` (default all) of a video file, uint8 ``(F, H, W, 3)`` RGB, decoded by decord.

    Widths that trip decord's frame-copy bug (``DECORD_ROW_SIZE_BUG``) are decoded with PyAV instead.
    """
    import decord  # deferred: slow to import, and loaded before torch it can break CUDA (dmlc/decord#293)

    reader = decord.VideoReader(os.fspath(path), num_threads=1)
    indices = list(range(len(reader))) if indices is None else list(indices)
    try:
        return reader.get_batch(indices).asnumpy()
    except decord.DECORDError as error:
        if DECORD_ROW_SIZE_BUG not in str(error):
            raise
    return read_frames_pyav(path, indices)


def read_frames_pyav(
    path: str | os.PathLike, indices: list[int], timestamps: list[int] | None = None
) -> np.ndarray:
    """Frames ``indices`` (presentation order, 0-based) of a video file, decoded by PyAV, uint8 ``(F, H, W, 3)``.

    Frames come as stored (no display rotation applied). With ``timestamps`` (from ``index_frames``
    of the file) the reader seeks to the key frame before the first wanted frame and tells frames
    apart by their timestamps, so a clip late in a long video costs about what one near the start
    does; without them, or when a timestamp does not match, it decodes from the first frame.
    """
    if timestamps is not None and min(indices) > 0:
        frames = _read_frames_by_timestamp(path, indices, timestamps)
        if frames is not None:
            return frames
    wanted = set(indices)
    last = max(indices)
    found: dict[int, np.ndarray] = {}
    with av.open(os.fspath(path), mode="r") as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # one thread per file, as decord is run; files go in parallel
        for position, frame in enumerate(container.decode(stream)):
            if position in wanted:
                found[position] = frame.to_ndarray(format="rgb24")
            if position >= last:
                break
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"{path}: frames {missing[:5]} not found (the video has fewer frames)")
    return np.stack([found[index] for index in indices])


def index_frames(path: str | os.PathLike) -> tuple[int, list[int] | None]:
    """Frames of the first video stream, counted without decoding, and their timestamps.

    Returns the number of frames (one per packet, as decord counts them) and their presentation
    timestamps in the stream's time base, sorted, so that frame ``i`` is the one with the ``i``-th
    smallest; the timestamps are None when a packet has none.
    """
    count = 0
    timestamps: list[int] | None = []
    with av.open(os.fspath(path), mode="r") as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.pts is None and packet.size == 0:
                continue  # the empty packet PyAV adds at the end to flush the decoder
            count += 1
            if packet.pts is None:
                timestamps = None
            elif timestamps is not None:
                timestamps.append(int(packet.pts))
    return count, sorted(timestamps) if timestamps is not None else None


def _read_frames_by_timestamp(path: str | os.PathLike, indices: list[int], timestamps: list[int]) -> np.ndarray | None:
    """``read_frames_pyav`` after a seek; None when a wanted frame's timestamp was not met."""
    if max(indices) >= len(timestamps):
        raise ValueError(f"{path}: frame {max(indices)} wanted, the video has {len(timestamps)}")
    position = {timestamp: index for index, timestamp in enumerate(timestamps)}
    wanted = set(indices)
    last = max(indices)
    found: dict[int, np.ndarray] = {}
    with av.open(os.fspath(path), mode="r") as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        container.seek(timestamps[min(indices)], stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            index = position.get(frame.pts)
            if index is None:
                return None
            if index in wanted:
                found[index] = frame.to_ndarray(format="rgb24")
            if index >= last:
                break
    if len(found) != len(wanted):
        return None
    return np.stack([found[index] for index in indices])


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 arrays of equal shape (inf if identical)."""
    reference = np.asarray(reference)
    decoded = np.asarray(decoded)
    if reference.shape != decoded.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {decoded.shape}")
    mse = float(np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * np.log10(255.0**2 / mse)
