"""Decoding one video file into one clip, and naming why a file cannot be used.

``decode_clip`` reads ``frames`` frames ``stride`` apart with decord, resizes (shorter side first,
antialiased) and centre-crops them to ``height x width`` with torchvision, and returns uint8
``(frames, height, width, 3)`` RGB. When decord fails, the file is examined with PyAV to tell a
damaged file from a codec that decord cannot decode. Widths that decord 0.6.0 cannot copy
(``dit.data.video_io.DECORD_ROW_SIZE_BUG``: 8, 12, 16, 24, 48, 72 pixels, ...) are decoded with
PyAV instead, and the manifest says so per file. Preparation runs this in worker processes
(``dit.data.prepare``), so a decoder that crashes or hangs costs one file, not the run.

Reason codes (``SkipReason``) and what they mean:

=================  ==========================================================================
``unreadable``     the path cannot be opened as a file (permissions, broken link, a folder)
``empty_file``     the file has zero bytes
``not_video``      the content is no video container (text, an image, random bytes)
``corrupt``        a video container that is truncated or damaged
``no_video_stream`` a container without any video stream (audio only)
``unsupported_codec`` a video stream whose codec decord cannot decode
``too_short``      fewer frames than ``(frames - 1) * stride + 1``
``missing_caption`` no caption for the file (not in the CSV, or no folder to name it)
``decode_error``   the decoder raised an error not covered above
``decoder_crash``  the decoding process died (for example a segmentation fault)
``decode_timeout`` decoding took longer than the per-file limit
=================  ==========================================================================
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass

import numpy as np

from dit.data.video_io import DECORD_ROW_SIZE_BUG, read_frames_pyav

REASONS = {
    "unreadable": "path cannot be read as a file",
    "empty_file": "file has zero bytes",
    "not_video": "content is not a video container",
    "corrupt": "video container is truncated or damaged",
    "no_video_stream": "container has no video stream",
    "unsupported_codec": "decord cannot decode this codec",
    "too_short": "video has fewer frames than one clip needs",
    "missing_caption": "no caption for this file",
    "decode_error": "decoder raised an unexpected error",
    "decoder_crash": "decoding process died",
    "decode_timeout": "decoding exceeded the time limit",
}

#: Leading bytes of the containers the preparation accepts (offset, signature).
_CONTAINER_SIGNATURES = (
    (4, b"ftyp"),  # MP4 / MOV (ISO base media)
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"wide"),
    (4, b"free"),
    (4, b"skip"),
    (4, b"pnot"),
    (0, b"RIFF"),  # AVI
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM (EBML)
)


_DECORD_PREFIX = re.compile(r"(\[\d\d:\d\d:\d\d\] \S+:\d+: )+")


class SkipReason(Exception):
    """A file cannot be used; ``code`` is one of ``REASONS``, ``message`` says why in words."""

    def __init__(self, code: str, message: str):
        if code not in REASONS:
            raise ValueError(f"unknown skip reason {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ClipSettings:
    """What to cut from each file.

    Attributes:
        frames: frames per clip.
        stride: take every ``stride``-th source frame.
        height, width: output size in pixels (after resize of the shorter side and centre crop).
        start: ``"center"`` (clip centred in the video) or ``"random"`` (seeded per file).
        seed: seed of the random start (mixed with the file's relative path).
    """

    frames: int = 8
    stride: int = 1
    height: int = 32
    width: int = 32
    start: str = "center"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("frames", "stride", "height", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.start not in ("center", "random"):
            raise ValueError(f"start must be 'center' or 'random', got {self.start!r}")

    @property
    def span_frames(self) -> int:
        """Source frames one clip covers."""
        return (self.frames - 1) * self.stride + 1


@dataclass
class DecodedClip:
    """A decoded clip and where in its source it came from."""

    frames: np.ndarray  # uint8 (F, H, W, 3)
    source_frames: int
    start_frame: int
    source_fps: float
    source_height: int
    source_width: int
    decoder: str = "decord"  # "pyav" where decord 0.6.0 cannot copy frames of this width


def check_readable(path: str) -> int:
    """Raise ``SkipReason`` unless ``path`` is a regular, non-empty, readable file; return its size in bytes."""
    try:
        info = os.stat(path)  # follows symbolic links
    except FileNotFoundError:
        if os.path.islink(path):
            raise SkipReason("unreadable", f"broken symbolic link to {os.readlink(path)!r}") from None
        raise SkipReason("unreadable", "file disappeared") from None
    except OSError as error:
        raise SkipReason("unreadable", f"cannot stat: {error.strerror or error}") from None
    if stat.S_ISDIR(info.st_mode):
        raise SkipReason("unreadable", "is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise SkipReason("unreadable", "is not a regular file")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as error:
        raise SkipReason("unreadable", f"cannot open: {error.strerror or error}") from None
    if info.st_size == 0:
        raise SkipReason("empty_file", "file has zero bytes")
    return info.st_size


def clip_start(source_frames: int, settings: ClipSettings, relative_path: str) -> int:
    """First source frame of the clip: centred, or drawn from ``(seed, relative_path)``."""
    room = source_frames - settings.span_frames
    if room < 0:
        raise ValueError("video shorter than the clip")
    if settings.start == "center":
        return room // 2
    digest = hashlib.sha256(f"{settings.seed}\0{relative_path}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") % (room + 1)


def decode_clip(path: str, relative_path: str, settings: ClipSettings) -> DecodedClip:
    """Decode one clip of ``path``; raise ``SkipReason`` if the file cannot give one."""
    check_readable(path)
    import decord

    try:
        reader = decord.VideoReader(path, num_threads=1)
        source_frames = len(reader)
    except Exception as error:  # decord raises DECORDError or RuntimeError
        raise _classify_failure(path, error) from None
    declared = declared_frames(path)
    if declared and source_frames < declared - max(2, declared // 100):
        raise SkipReason("corrupt", f"truncated: {source_frames} of {declared} declared frames are present")
    if source_frames < settings.span_frames:
        raise SkipReason(
            "too_short",
            f"{source_frames} frames, a clip needs {settings.span_frames} "
            f"({settings.frames} frames at stride {settings.stride})",
        )
    start = clip_start(source_frames, settings, relative_path)
    indices = list(range(start, start + settings.span_frames, settings.stride))
    decoder = "decord"
    try:
        fps = float(reader.get_avg_fps())
        frames = reader.get_batch(indices).asnumpy()
    except Exception as error:
        if DECORD_ROW_SIZE_BUG not in str(error):
            raise _classify_failure(path, error) from None
        decoder = "pyav"  # decord cannot copy frames of this width
        try:
            frames = read_frames_pyav(path, indices)
        except Exception as pyav_error:
            raise _classify_failure(path, pyav_error) from None
    if frames.shape[0] != settings.frames or frames.ndim != 4 or frames.shape[-1] != 3:
        raise SkipReason("corrupt", f"decoder returned frames of shape {tuple(frames.shape)}")
    source_height, source_width = frames.shape[1:3]
    return DecodedClip(
        frames=resize_and_crop(frames, settings.height, settings.width),
        source_frames=source_frames,
        start_frame=start,
        source_fps=fps,
        source_height=int(source_height),
        source_width=int(source_width),
        decoder=decoder,
    )


def declared_frames(path: str) -> int:
    """Frame count the container's header declares for its first video stream (0 when unknown)."""
    import av

    try:
        with av.open(path, mode="r") as container:
            streams = container.streams.video
            return int(streams[0].frames or 0) if streams else 0
    except Exception:
        return 0


def resize_and_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 ``(F, h, w, 3)`` so it covers ``height x width`` (antialiased), then centre-crop."""
    source_height, source_width = frames.shape[1:3]
    if (source_height, source_width) == (height, width):
        return np.ascontiguousarray(frames)
    import torch
    from torchvision.transforms.v2 import functional as F

    scale = max(height / source_height, width / source_width)
    size = [max(height, round(source_height * scale)), max(width, round(source_width * scale))]
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    if size != [source_height, source_width]:
        tensor = F.resize(tensor, size, antialias=True)
    tensor = F.center_crop(tensor, [height, width])
    return tensor.permute(0, 2, 3, 1).contiguous().numpy()


def _has_container_signature(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _CONTAINER_SIGNATURES)


def _codec_name(stream) -> str:
    """The stream's codec as the container names it (``h264``, ``av1``), else the decoder's name."""
    try:
        return str(stream.codec_context.codec.canonical_name)
    except Exception:
        context = stream.codec_context
        return context.name if context is not None else "unknown"


def _first_line(error: BaseException, limit: int = 160) -> str:
    """The gist of an error message: decord's log prefixes (time, source file and line) removed."""
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    line = _DECORD_PREFIX.sub("", line).strip() or type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _classify_failure(path: str, decord_error: BaseException, max_frames: int = 100_000) -> SkipReason:
    """Tell why decord failed, by examining the file with PyAV."""
    import av

    decord_says = _first_line(decord_error)
    if not _has_container_signature(path):
        return SkipReason("not_video", f"content is not an MP4/MOV, AVI or Matroska/WebM container ({decord_says})")
    try:
        container = av.open(path, mode="r")
    except Exception as error:
        return SkipReason("corrupt", f"container unreadable, likely truncated or damaged ({_first_line(error)})")
    try:
        streams = list(container.streams.video)
        if not streams:
            kinds = sorted({stream.type for stream in container.streams}) or ["none"]
            return SkipReason("no_video_stream", f"no video stream (streams: {', '.join(kinds)})")
        stream = streams[0]
        codec = _codec_name(stream)
        declared = int(stream.frames or 0)
        decoded = 0
        try:
            for _ in container.decode(stream):
                decoded += 1
                if decoded >= max_frames:
                    break
        except Exception as error:
            if isinstance(error, getattr(av, "DecoderNotFoundError", ())):
                return SkipReason("unsupported_codec", f"codec {codec!r} cannot be decoded (decord: {decord_says})")
            return SkipReason("corrupt", f"{codec} stream fails to decode after {decoded} frames ({_first_line(error)})")
        if decoded == 0:
            return SkipReason("corrupt", f"{codec} stream holds no decodable frame")
        if decoded < min(declared, max_frames):
            return SkipReason("corrupt", f"truncated: {decoded} of {declared} declared frames decode")
        return SkipReason("unsupported_codec", f"decord cannot decode codec {codec!r} ({decord_says})")
    finally:
        container.close()
