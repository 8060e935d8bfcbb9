"""Decoding one video file into one clip, and naming why a file cannot be used.

``decode_clip`` reads ``frames`` frames ``stride`` apart, turns them upright as the file's display
matrix says (``dit.data.video_io.Orientation``: the rotation of phone videos, and mirroring),
resizes them (shorter side first, antialiased) and centre-crops them to ``height x width`` with
torchvision, and returns uint8 ``(frames, height, width, 3)`` RGB. The manifest records per file
the decoder, the codec and the rotation applied.

Which decoder reads a file:

* **decord** (its own FFmpeg 4.1) where it decodes the file and shows it upright: files without a
  display matrix, and pure rotations in MP4/MOV, which decord 0.6.0 applies itself.
* **PyAV** (FFmpeg 8) for everything else it decodes: codecs decord lacks (AV1), files decord
  fails on, widths that decord 0.6.0 cannot copy (``dit.data.video_io.DECORD_ROW_SIZE_BUG``: 8,
  12, 16, 24, 48, 72 pixels, ...), rotations in Matroska/WebM (decord's FFmpeg does not read
  them) and mirrored display matrices (decord ignores the mirror). The rotation is then applied
  here.

Where both decode a file they give the same 8-bit clip (``tests/test_video_formats.py``). Preparation
runs this in worker processes (``dit.data.prepare``), so a decoder that crashes or hangs costs one
file, not the run.

Reason codes (``SkipReason``) and what they mean:

=================  ==========================================================================
``unreadable``     the path cannot be opened as a file (permissions, broken link, a folder)
``empty_file``     the file has zero bytes
``not_video``      the content is no video container (text, an image, random bytes)
``corrupt``        a video container that is truncated or damaged
``no_video_stream`` a container without any video stream (audio only)
``unsupported_codec`` a video stream whose codec neither decord nor PyAV decodes
``unsupported_rotation`` a display matrix that is no quarter turn (with or without a mirror)
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
from dataclasses import dataclass, replace

import av
import numpy as np

from dit.data.video_io import Orientation, index_frames, read_frames_pyav

REASONS = {
    "unreadable": "path cannot be read as a file",
    "empty_file": "file has zero bytes",
    "not_video": "content is not a video container",
    "corrupt": "video container is truncated or damaged",
    "no_video_stream": "container has no video stream",
    "unsupported_codec": "neither decord nor PyAV decodes this codec",
    "unsupported_rotation": "display matrix is no quarter turn",
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
    """A decoded clip and where in its source it came from.

    ``source_height`` and ``source_width`` are the size as displayed, after the rotation.
    """

    frames: np.ndarray  # uint8 (F, H, W, 3)
    source_frames: int
    start_frame: int
    source_fps: float
    source_height: int
    source_width: int
    decoder: str = "decord"  # or "pyav" (see the module docstring)
    codec: str = ""  # as PyAV names it ("h264", "av1"); "" when PyAV cannot read the stream
    rotation_degrees: int = 0  # clockwise rotation applied for display: 0, 90, 180 or 270
    mirrored: bool = False  # mirrored left to right after the rotation


@dataclass(frozen=True)
class VideoFacts:
    """What PyAV reads about a file's first video stream before its clip is decoded.

    Attributes:
        container: PyAV's name of the container format (``"mov,mp4,m4a,3gp,3g2,mj2"``, ``"matroska,webm"``).
        codec: the codec (``"h264"``, ``"av1"``); ``""`` when PyAV has no decoder for it.
        declared_frames: frame count in the container's header, 0 when unknown.
        fps: average frame rate in frames per second, 0.0 when unknown.
        height, width: stored frame size in pixels (before rotation).
        orientation: how frames are turned upright; None when the display matrix is no quarter turn.
        orientation_problem: why ``orientation`` is None.
    """

    container: str
    codec: str
    declared_frames: int
    fps: float
    height: int
    width: int
    orientation: Orientation | None = Orientation()
    orientation_problem: str = ""


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


#: Values of ``decode_clip``'s ``decoder``: decord where it shows the file upright, else PyAV; or PyAV alone.
DECODER_CHOICES = ("auto", "pyav")


def decode_clip(path: str, relative_path: str, settings: ClipSettings, decoder: str = "auto") -> DecodedClip:
    """Decode one clip of ``path``, upright; raise ``SkipReason`` if the file cannot give one.

    ``decoder`` is one of ``DECODER_CHOICES``: ``"auto"`` chooses as the module docstring says,
    ``"pyav"`` reads every file with PyAV (to compare the two decoders).
    """
    if decoder not in DECODER_CHOICES:
        raise ValueError(f"decoder must be one of {', '.join(DECODER_CHOICES)}; got {decoder!r}")
    check_readable(path)
    facts = probe_video(path)
    if facts is not None and facts.orientation is None:
        raise SkipReason("unsupported_rotation", facts.orientation_problem)
    if decoder == "pyav" or not _decord_shows_upright(facts):
        return _decode_with_pyav(path, relative_path, settings, facts, "")
    import decord  # deferred: slow to import, and loaded before torch it can break CUDA (dmlc/decord#293)

    try:
        reader = decord.VideoReader(path, num_threads=1)
        source_frames = len(reader)
    except Exception as error:  # decord raises DECORDError or RuntimeError
        return _decode_with_pyav(path, relative_path, settings, facts, _first_line(error))
    _check_length(source_frames, facts.declared_frames if facts else 0, settings)
    start = clip_start(source_frames, settings, relative_path)
    indices = list(range(start, start + settings.span_frames, settings.stride))
    try:
        fps = float(reader.get_avg_fps())
        frames = reader.get_batch(indices).asnumpy()
    except Exception as error:  # for example the widths decord cannot copy (DECORD_ROW_SIZE_BUG)
        return _decode_with_pyav(path, relative_path, settings, facts, _first_line(error))
    if facts is not None and facts.orientation.swaps_sides and frames.shape[1:3] != (facts.width, facts.height):
        return _decode_with_pyav(path, relative_path, settings, facts, "decord did not rotate the frames")
    return _decoded(frames, settings, source_frames, start, fps, facts, "decord")


def probe_video(path: str) -> VideoFacts | None:
    """PyAV's ``VideoFacts`` of the first video stream of ``path``; None when PyAV cannot open it or finds none.

    The orientation is read from the first decoded frame (decoders copy the container's display
    matrix onto the frames), so one frame is decoded.
    """
    try:
        container = av.open(path, mode="r")
    except Exception:
        return None
    with container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        context = stream.codec_context
        first_frame = None
        if context is not None:
            context.thread_count = 1  # one frame is decoded: threads would cost more than they save
            try:
                first_frame = next(iter(container.decode(stream)), None)
            except Exception:  # a damaged file: classified when its clip is decoded
                pass
        rate = stream.average_rate
        facts = VideoFacts(
            container=container.format.name,
            codec=_codec_name(stream) if context is not None else "",
            declared_frames=int(stream.frames or 0),
            fps=float(rate) if rate else 0.0,
            height=int(context.height) if context is not None else 0,
            width=int(context.width) if context is not None else 0,
        )
    if first_frame is None:
        return facts
    try:
        return replace(facts, orientation=Orientation.of_frame(first_frame))
    except ValueError as error:
        return replace(facts, orientation=None, orientation_problem=str(error))


def _decord_shows_upright(facts: VideoFacts | None) -> bool:
    """Whether decord 0.6.0 shows the file as its display matrix says (measured in tests/test_video_formats.py).

    decord applies a display rotation itself, but its FFmpeg 4.1 reads one only from MP4/MOV (not
    from Matroska/WebM), and it ignores a mirror.
    """
    if facts is None or facts.orientation.upright:
        return True
    return not facts.orientation.mirrored and facts.container.startswith("mov,mp4")


def _decode_with_pyav(
    path: str, relative_path: str, settings: ClipSettings, facts: VideoFacts | None, decord_says: str
) -> DecodedClip:
    """Decode the clip with PyAV and turn it upright.

    ``decord_says`` is why decord did not read the file ("" when it was not tried), for the messages.
    """
    if facts is None or not _has_container_signature(path):
        raise _classify_failure(path, decord_says or "not tried")
    if not facts.codec and facts.container.startswith("mov,mp4") and not facts.declared_frames:
        # a complete MP4/MOV track declares its frame count; one with neither codec nor count was cut in its index
        raise SkipReason("corrupt", "video track without codec parameters or frame count: the index is truncated")
    if not facts.codec:
        decord_part = f" (decord: {decord_says})" if decord_says else ""
        message = f"neither decord nor PyAV has a decoder for this stream's codec{decord_part}"
        raise SkipReason("unsupported_codec", message)
    try:
        source_frames, timestamps = index_frames(path)
    except Exception as error:
        message = f"container unreadable, likely truncated or damaged ({_first_line(error)})"
        raise SkipReason("corrupt", message) from None
    _check_length(source_frames, facts.declared_frames, settings)
    start = clip_start(source_frames, settings, relative_path)
    indices = list(range(start, start + settings.span_frames, settings.stride))
    try:
        frames = read_frames_pyav(path, indices, timestamps)
    except Exception as error:
        raise SkipReason("corrupt", f"{facts.codec} stream fails to decode ({_first_line(error)})") from None
    return _decoded(facts.orientation.apply(frames), settings, source_frames, start, facts.fps, facts, "pyav")


def _check_length(source_frames: int, declared: int, settings: ClipSettings) -> None:
    """Raise ``SkipReason`` when frames the header declares are missing, or the video is shorter than a clip."""
    if declared and source_frames < declared - max(2, declared // 100):
        raise SkipReason("corrupt", f"truncated: {source_frames} of {declared} declared frames are present")
    if source_frames < settings.span_frames:
        raise SkipReason(
            "too_short",
            f"{source_frames} frames, a clip needs {settings.span_frames} "
            f"({settings.frames} frames at stride {settings.stride})",
        )


def _decoded(
    frames: np.ndarray, settings: ClipSettings, source_frames: int, start: int, fps: float,
    facts: VideoFacts | None, decoder: str,
) -> DecodedClip:
    """The ``DecodedClip`` of upright ``frames`` (uint8 ``(F, h, w, 3)``), resized and cropped."""
    if frames.shape[0] != settings.frames or frames.ndim != 4 or frames.shape[-1] != 3:
        raise SkipReason("corrupt", f"decoder returned frames of shape {tuple(frames.shape)}")
    orientation = facts.orientation if facts is not None else Orientation()
    source_height, source_width = frames.shape[1:3]
    return DecodedClip(
        frames=resize_and_crop(frames, settings.height, settings.width),
        source_frames=source_frames,
        start_frame=start,
        source_fps=fps,
        source_height=int(source_height),
        source_width=int(source_width),
        decoder=decoder,
        codec=facts.codec if facts is not None else "",
        rotation_degrees=orientation.rotation_degrees,
        mirrored=orientation.mirrored,
    )


def resize_and_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 ``(F, h, w, 3)`` so it covers ``height x width`` (antialiased), then centre-crop."""
    source_height, source_width = frames.shape[1:3]
    if (source_height, source_width) == (height, width):
        return np.ascontiguousarray(frames)
    # deferred: torch and torchvision take seconds to import; the data command line starts without them
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


def _classify_failure(path: str, decord_says: str) -> SkipReason:
    """Why PyAV cannot read a video stream of ``path``: no container, a damaged one, or no video stream."""
    if not _has_container_signature(path):
        message = f"content is not an MP4/MOV, AVI or Matroska/WebM container (decord: {decord_says})"
        return SkipReason("not_video", message)
    try:
        container = av.open(path, mode="r")
    except Exception as error:
        return SkipReason("corrupt", f"container unreadable, likely truncated or damaged ({_first_line(error)})")
    with container:
        mp4 = container.format.name.startswith("mov,mp4")
        if not container.streams or (mp4 and not any(stream.frames for stream in container.streams)):
            # a complete MP4/MOV track declares its sample count: a file cut inside its index lists none
            return SkipReason("corrupt", "container lists no stream with any frames: its index is likely truncated")
        if not container.streams.video:
            kinds = sorted({stream.type for stream in container.streams}) or ["none"]
            return SkipReason("no_video_stream", f"no video stream (streams: {', '.join(kinds)})")
    return SkipReason("decode_error", f"the file changed while it was read (decord: {decord_says})")
