"""Users' video files: display rotations (phone videos), codecs decord lacks, and both decoders giving the same clip."""

import numpy as np
import pytest

from dit.data.decode import ClipSettings, SkipReason, decode_clip
from dit.data.prepare import PreparationSettings, prepare_dataset
from dit.data.shards import read_manifest
from dit.data.video_io import Orientation
from video_files import asymmetric_clip, textured_clip, write_unknown_codec, write_video

#: Largest difference (uint8 levels) allowed between decord's and PyAV's clip of one 8-bit file.
#: Measured on these files: 0 (identical), for H.264 4:2:0 and 4:4:4.
DECODER_TOLERANCE = 2


def _upright(stored: np.ndarray, clockwise_degrees: int, mirrored: bool = False) -> np.ndarray:
    """What a viewer shows: ``stored`` (F, H, W, 3) turned clockwise, then mirrored left to right."""
    shown = np.rot90(stored, k=-clockwise_degrees // 90, axes=(1, 2))
    return shown[:, :, ::-1] if mirrored else shown


def _settings_for(shown: np.ndarray, frames: int = 4) -> ClipSettings:
    """Clip settings that keep the displayed size (no resize or crop)."""
    return ClipSettings(frames=frames, height=shown.shape[1], width=shown.shape[2])


def _display_matrix(counter_clockwise_degrees: float) -> list[int]:
    """FFmpeg's av_display_rotation_set(-angle): a matrix that av_display_rotation_get reads as ``angle``."""
    radians = np.radians(counter_clockwise_degrees)
    cos, sin = np.cos(radians), np.sin(radians)
    return [round(v * 65536) for v in (cos, -sin, 0, sin, cos, 0)] + [0, 0, 1 << 30]


def test_display_matrices_give_quarter_turns_as_ffmpeg_reads_them():
    # a phone's portrait video: the QuickTime track matrix (0, 1, -1, 0), shown "rotate=90" by ffprobe
    phone = [0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30]
    assert Orientation.from_display_matrix(phone) == Orientation(90)
    assert Orientation.from_display_matrix(_display_matrix(90)) == Orientation(270)
    assert Orientation.from_display_matrix(_display_matrix(-90)) == Orientation(90)
    assert Orientation.from_display_matrix(_display_matrix(180)) == Orientation(180)
    assert Orientation.from_display_matrix(_display_matrix(1.5)) == Orientation(0)
    mirror = [-65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30]
    assert Orientation.from_display_matrix(mirror) == Orientation(0, mirrored=True)
    with pytest.raises(ValueError, match="not a quarter turn"):
        Orientation.from_display_matrix(_display_matrix(45))
    # turning 90 degrees clockwise brings the top-left corner to the top right
    frame = np.zeros((1, 2, 3, 1), dtype=np.uint8)
    frame[0, 0, 0] = 1
    turned = Orientation(90).apply(frame)
    assert turned.shape == (1, 3, 2, 1) and turned[0, 0, 1, 0] == 1 and turned.sum() == 1


@pytest.mark.parametrize(
    "name, size, clockwise, mirrored, decoder",
    [
        ("phone.mp4", (72, 128), 90, False, "pyav"),  # 72 pixels wide when upright: decord cannot copy that width
        ("turned.mp4", (64, 128), 90, False, "decord"),
        ("turned.mov", (64, 128), 270, False, "decord"),
        ("upside_down.mp4", (64, 128), 180, False, "decord"),
        ("turned.mkv", (64, 128), 90, False, "pyav"),  # decord's FFmpeg ignores Matroska's rotation
        ("upside_down.webm", (64, 128), 180, False, "pyav"),
        ("selfie.mp4", (64, 128), 90, True, "pyav"),  # decord ignores the mirror
    ],
)
def test_rotated_files_are_decoded_upright(tmp_path, name, size, clockwise, mirrored, decoder):
    stored = asymmetric_clip(8, *size)
    codec = "libvpx-vp9" if name.endswith(".webm") else "libx264"
    pixel_format = "yuv420p" if codec == "libvpx-vp9" else "yuv444p"
    path = write_video(tmp_path / name, stored, codec, pixel_format, clockwise_degrees=clockwise, mirrored=mirrored)
    shown = _upright(stored, clockwise, mirrored)
    settings = _settings_for(shown)
    clip = decode_clip(str(path), name, settings)
    assert clip.decoder == decoder and (clip.rotation_degrees, clip.mirrored) == (clockwise, mirrored)
    assert (clip.source_height, clip.source_width) == shown.shape[1:3]
    error = np.abs(clip.frames.astype(float) - shown[2:6]).mean()
    assert error < 3, f"mean error {error:.1f} against the upright source frames"
    # where a viewer sees the stored top-left quadrant (bright) and its opposite corner (grey)
    height, width = shown.shape[1:3]
    top, bottom = slice(0, height // 2), slice(height // 2, None)
    left, right = slice(0, width // 2), slice(width // 2, None)
    bright, opposite = {
        (90, False): ((top, right), (bottom, left)),
        (270, False): ((bottom, left), (top, right)),
        (180, False): ((bottom, right), (top, left)),
        (90, True): ((top, left), (bottom, right)),
    }[(clockwise, mirrored)]
    assert clip.frames[:, bright[0], bright[1]].mean() > 220 and clip.frames[:, opposite[0], opposite[1]].mean() < 80
    # PyAV alone gives the same upright clip
    alone = decode_clip(str(path), name, settings, decoder="pyav")
    assert alone.decoder == "pyav" and np.abs(alone.frames.astype(int) - clip.frames).max() <= DECODER_TOLERANCE


def test_odd_rotation_is_skipped_with_its_reason(tmp_path):
    path = write_video(tmp_path / "tilted.mp4", asymmetric_clip(6), clockwise_degrees=30)
    with pytest.raises(SkipReason, match="unsupported_rotation: display matrix turns the picture 30.0 degrees clockwise"):
        decode_clip(str(path), "tilted.mp4", ClipSettings(frames=4))


@pytest.mark.parametrize(
    "name, codec, decoder",
    [("web.mp4", "libsvtav1", "pyav"), ("web.webm", "libsvtav1", "pyav"), ("web_vp9.webm", "libvpx-vp9", "decord")],
)
def test_codecs_decord_lacks_are_decoded_with_pyav(tmp_path, name, codec, decoder):
    source = textured_clip(16, 64, 96)
    path = write_video(tmp_path / name, source, codec)
    clip = decode_clip(str(path), name, ClipSettings(frames=4, stride=3, height=64, width=96))
    assert clip.decoder == decoder and clip.codec == ("av1" if codec == "libsvtav1" else "vp9")
    assert clip.source_frames == 16 and clip.start_frame == 3 and clip.source_fps == 8.0
    error = np.abs(clip.frames.astype(float) - source[3:13:3]).mean()
    assert error < 12, f"mean error {error:.1f} against the source frames"


def test_a_codec_neither_decoder_reads_is_unsupported(tmp_path):
    path = write_unknown_codec(tmp_path / "unknown.mp4", asymmetric_clip(10))
    with pytest.raises(SkipReason, match="unsupported_codec: neither decord nor PyAV"):
        decode_clip(str(path), "unknown.mp4", ClipSettings(frames=4))


def test_an_mp4_cut_inside_its_index_is_corrupt_not_a_missing_stream_or_codec(tmp_path):
    # an interrupted download: x264's MP4 keeps its 'moov' index at the end, so the cut lands inside it
    data = write_video(tmp_path / "full.mp4", textured_clip(20, 64, 96)).read_bytes()
    moov = data.rfind(b"moov") - 4
    codes = {}
    for cut in [moov + 25, moov + 325, *range(moov, len(data), 40)]:
        path = tmp_path / f"cut_{cut}.mp4"
        path.write_bytes(data[:cut])
        try:
            decode_clip(str(path), path.name, ClipSettings(frames=4, height=64, width=96))
            codes[cut] = "ok"  # cut after all that decoding needs
        except SkipReason as reason:
            codes[cut] = reason.code
    assert codes[moov + 25] == codes[moov + 325] == "corrupt"  # no stream listed; a track without codec parameters
    assert set(codes.values()) <= {"corrupt", "ok"}, codes


@pytest.mark.parametrize("pixel_format", ["yuv420p", "yuv444p"])
@pytest.mark.parametrize("start", ["center", "random"])
def test_decord_and_pyav_give_the_same_clip(tmp_path, pixel_format, start):
    # key frames every 5 frames and x264's B-frames: PyAV seeks and matches frames by timestamp
    path = write_video(tmp_path / "clip.mp4", textured_clip(40), "libx264", pixel_format, keyframe_interval=5)
    settings = ClipSettings(frames=6, stride=3, height=72, width=96, start=start, seed=3)
    by_decord = decode_clip(str(path), "clip.mp4", settings)
    by_pyav = decode_clip(str(path), "clip.mp4", settings, decoder="pyav")
    assert (by_decord.decoder, by_pyav.decoder) == ("decord", "pyav")
    assert by_decord.start_frame == by_pyav.start_frame > 0 and by_decord.source_frames == by_pyav.source_frames == 40
    difference = np.abs(by_decord.frames.astype(int) - by_pyav.frames)
    assert difference.max() <= DECODER_TOLERANCE and difference.mean() <= 0.05, (difference.max(), difference.mean())


def test_manifest_records_decoder_codec_rotation_and_upright_size(tmp_path):
    source = tmp_path / "videos" / "walking"
    write_video(source / "phone.mp4", asymmetric_clip(8, 72, 128), "libx264", "yuv444p", clockwise_degrees=90)
    write_video(source / "web.webm", textured_clip(8, 64, 96), "libsvtav1")
    write_video(source / "plain.mp4", textured_clip(8, 64, 96))
    settings = PreparationSettings(frames=4, height=32, width=32, validation_fraction=0.0, workers=0)
    summary = prepare_dataset(tmp_path / "videos", tmp_path / "prepared", settings)
    assert summary.usable == 3 and not summary.skipped
    entries = {entry["path"]: entry for entry in read_manifest(tmp_path / "prepared")["sources"]}
    fields = ("decoder", "codec", "rotation_degrees", "mirrored", "source_size")
    facts = {path: tuple(entry[field] for field in fields) for path, entry in entries.items()}
    assert facts == {
        "walking/phone.mp4": ("pyav", "h264", 90, False, [128, 72]),
        "walking/plain.mp4": ("decord", "h264", 0, False, [64, 96]),
        "walking/web.webm": ("pyav", "av1", 0, False, [64, 96]),
    }
