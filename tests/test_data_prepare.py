"""Preparation of video folders: round trip, clip cutting, captions, splits, and every kind of bad input.

This module does not import torch at the top: worker processes import it to find ``decode_or_crash``.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from dit.data.__main__ import main
from dit.data.decode import ClipSettings, decode_clip
from dit.data.prepare import PreparationError, PreparationSettings, prepare_dataset
from dit.data.shards import read_manifest
from dit.data.sources import caption_from_folder_name, find_video_files, split_of
from dit.data.synthetic import GeneratorSettings, generate_dataset, render_scene, sample_scene
from dit.data.video_io import psnr, write_mp4
from dit.data.workers import DecodePool
from dit.provenance import PROJECT_ROOT
from video_files import write_unknown_codec

FAST = dict(workers=1, decode_timeout_s=60)


def _levels_video(path, frames=20, height=48, width=64, container="mp4", codec="libx264"):
    """A video whose frame t is grey level 10*t (with a red square in the centre), written with PyAV."""
    import av

    data = np.zeros((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        data[t] = 10 * t
        data[t, height // 2 - 6 : height // 2 + 6, width // 2 - 6 : width // 2 + 6] = (255, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=Fraction(8))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "0", "threads": "1"}
        else:
            stream.options = {"qscale": "1"}
        for image in data:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return data


def _write_stream(path, codec, frames, size=64, container_options=None):
    import av

    with av.open(str(path), mode="w", format="mp4", options=container_options or {}) as output:
        stream = output.add_stream(codec, rate=Fraction(8))
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)


def _audio_only(path):
    import av

    with av.open(str(path), mode="w", format="mp4") as output:
        stream = output.add_stream("aac", rate=44100)
        for _ in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 44100
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)


def test_round_trip_rendered_frames_to_shards_keeps_the_content(tmp_path):
    from dit.data.loader import ShardDataset

    settings = GeneratorSettings(clips=8, seed=21)
    source = generate_dataset(tmp_path / "gen", settings).out
    prepare_dataset(source, tmp_path / "prepared", PreparationSettings(validation_fraction=0.5, **FAST))
    seen = 0
    for split in ("train", "validation"):
        dataset = ShardDataset(tmp_path / "prepared", split)
        dataset.verify()
        batch = dataset.get(np.arange(len(dataset)))
        for row, source_file in enumerate(dataset.sources):
            index = int(Path(source_file).stem.split("_")[1])
            rendered = render_scene(sample_scene(settings, index), settings)
            assert psnr(rendered, batch["video"][row].numpy()) >= 30.0
            seen += 1
    assert seen == 8
    # the content does not depend on how many processes decode it
    prepare_dataset(source, tmp_path / "in_process", PreparationSettings(validation_fraction=0.5, workers=0))
    shards = [read_manifest(tmp_path / name)["splits"] for name in ("prepared", "in_process")]
    assert shards[0] == shards[1]


def test_clip_cutting_stride_start_resize_and_folder_captions(tmp_path):
    from dit.data.loader import ShardDataset

    source = tmp_path / "ucf"
    levels = _levels_video(source / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi", container="avi", codec="mpeg4")
    _levels_video(source / "Yo_Yo" / "clip.mkv", container="matroska")
    _levels_video(source / "Yo_Yo" / "CLIP2.MOV", container="mov")
    settings = PreparationSettings(frames=4, stride=3, height=32, width=32, validation_fraction=0.0, workers=0)
    summary = prepare_dataset(source, tmp_path / "prepared", settings)
    assert summary.usable == 3 and not summary.skipped
    dataset = ShardDataset(tmp_path / "prepared", "train")
    assert dataset.sources == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "Yo_Yo/CLIP2.MOV", "Yo_Yo/clip.mkv"]
    assert dataset.captions == ["apply eye makeup", "yo yo", "yo yo"]
    video = dataset.get([0, 1, 2])["video"].numpy()
    assert video.shape == (3, 4, 32, 32, 3)
    # centred start: 20 frames, span 10 -> start 5, frames 5, 8, 11, 14 (grey 50, 80, 110, 140)
    corner = video[:, :, :4, :4].astype(float).mean(axis=(2, 3, 4))
    np.testing.assert_allclose(corner, np.tile([50, 80, 110, 140], (3, 1)), atol=4)
    # the centred red square survives resize (48x64 -> 32x43) and centre crop (-> 32x32)
    assert video[0, 0, 16, 16, 0] > 200 and video[0, 0, 16, 16, 1] < 60
    assert levels.shape == (20, 48, 64, 3)
    manifest = read_manifest(tmp_path / "prepared")
    assert {entry["start_frame"] for entry in manifest["sources"]} == {5}
    random_start = ClipSettings(frames=4, stride=3, start="random", seed=4)
    clip = decode_clip(str(source / "Yo_Yo" / "clip.mkv"), "Yo_Yo/clip.mkv", random_start)
    again = decode_clip(str(source / "Yo_Yo" / "clip.mkv"), "Yo_Yo/clip.mkv", random_start)
    assert 0 <= clip.start_frame <= 10 and clip.start_frame == again.start_frame
    expected = 10 * (clip.start_frame + 3 * np.arange(4))
    np.testing.assert_allclose(clip.frames[:, :4, :4].astype(float).mean(axis=(1, 2, 3)), expected, atol=4)


def test_widths_decord_cannot_copy_are_decoded_with_pyav(tmp_path):
    settings = GeneratorSettings(clips=3, seed=9, height=16, width=16)
    source = generate_dataset(tmp_path / "gen", settings).out
    prepare = PreparationSettings(height=16, width=16, validation_fraction=0.0, workers=0)
    prepare_dataset(source, tmp_path / "prepared", prepare)
    manifest = read_manifest(tmp_path / "prepared")
    assert [entry["decoder"] for entry in manifest["sources"]] == ["pyav"] * 3
    frames = np.load(tmp_path / "prepared" / "train-00000.frames.npy")
    for row, entry in enumerate(manifest["sources"]):
        index = int(Path(entry["path"]).stem.split("_")[1])
        assert psnr(render_scene(sample_scene(settings, index), settings), frames[row]) >= 30.0


def test_folder_names_become_captions():
    assert caption_from_folder_name("ApplyEyeMakeup") == "apply eye makeup"
    assert caption_from_folder_name("YoYo") == "yo yo"
    assert caption_from_folder_name("playing_guitar") == "playing guitar"
    assert caption_from_folder_name("Jump-Rope") == "jump rope"


def test_split_is_a_stable_function_of_the_path_alone(tmp_path):
    names = [f"class_{i % 7}/video_{i}.mp4" for i in range(4000)]
    splits = {name: split_of(name, 0.05) for name in names}
    share = sum(split == "validation" for split in splits.values()) / len(names)
    assert 0.04 < share < 0.06
    # adding files (or changing the list) never moves an existing file
    assert all(split_of(name, 0.05) == splits[name] for name in reversed(names))
    settings = GeneratorSettings(clips=6, seed=2)
    source = generate_dataset(tmp_path / "gen", settings).out
    prepare_dataset(source, tmp_path / "first", PreparationSettings(validation_fraction=0.4, workers=0))
    write_mp4(render_scene(sample_scene(settings, 0), settings), source / "clips" / "extra_clip.mp4")
    with open(source / "captions.csv", "a") as handle:
        handle.write("clips/extra_clip.mp4,an extra clip\n")
    prepare_dataset(source, tmp_path / "second", PreparationSettings(validation_fraction=0.4, workers=0))
    first = {entry["path"]: entry["split"] for entry in read_manifest(tmp_path / "first")["sources"]}
    second = {entry["path"]: entry["split"] for entry in read_manifest(tmp_path / "second")["sources"]}
    assert set(second) == set(first) | {"clips/extra_clip.mp4"}
    assert all(second[path] == split for path, split in first.items())


def _bad_input_folder(root: Path) -> dict[str, str]:
    """A folder with good files and one file of every bad kind; returns {relative path: expected reason}."""
    settings = GeneratorSettings(clips=4, seed=1)
    captions = {}
    for index in range(4):
        name = f"good/clip_{index}.mp4"
        write_mp4(render_scene(sample_scene(settings, index), settings), root / name)
        captions[name] = f"good clip {index}"
    expected = {}
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (24, 64, 64, 3), dtype=np.uint8)
    bad = root / "bad"
    bad.mkdir()
    # truncated: moov at the end is cut off; and with the index first, the frame data is cut off
    whole = (root / "good/clip_0.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    expected["bad/truncated.mp4"] = "corrupt"
    _write_stream(bad / "index_first.mp4", "libx264", noise, container_options={"movflags": "faststart"})
    data = (bad / "index_first.mp4").read_bytes()
    (bad / "index_first.mp4").write_bytes(data[: int(len(data) * 0.8)])
    expected["bad/index_first.mp4"] = "corrupt"
    (bad / "empty.mp4").write_bytes(b"")
    expected["bad/empty.mp4"] = "empty_file"
    (bad / "notes.mkv").write_text("this is a text file, not a video\n" * 20)
    expected["bad/notes.mkv"] = "not_video"
    write_mp4(render_scene(sample_scene(settings, 0), settings)[:5], bad / "short.mp4")
    expected["bad/short.mp4"] = "too_short"
    write_unknown_codec(bad / "unknown_codec.mp4", noise[:10])
    expected["bad/unknown_codec.mp4"] = "unsupported_codec"
    _audio_only(bad / "audio.mp4")
    expected["bad/audio.mp4"] = "no_video_stream"
    write_mp4(render_scene(sample_scene(settings, 1), settings), bad / "uncaptioned.mp4")
    expected["bad/uncaptioned.mp4"] = "missing_caption"
    os.symlink(root / "nowhere" / "gone.mp4", bad / "broken_link.mp4")
    expected["bad/broken_link.mp4"] = "unreadable"
    (bad / "folder.webm").mkdir()
    expected["bad/folder.webm"] = "unreadable"
    (root / "README.txt").write_text("not a video")
    for name in expected:
        if name != "bad/uncaptioned.mp4":
            captions[name] = "a caption"
    captions["bad/never_written.mp4"] = "a caption without a file"
    lines = ["file,caption"] + [f"{name},{caption}" for name, caption in captions.items()]
    (root / "captions.csv").write_text("\n".join(lines) + "\n")
    return expected


def test_every_kind_of_bad_input_is_listed_with_its_reason(tmp_path):
    expected = _bad_input_folder(tmp_path / "source")
    settings = PreparationSettings(max_skipped_fraction=1.0, validation_fraction=0.0, workers=2)
    summary = prepare_dataset(tmp_path / "source", tmp_path / "prepared", settings)
    manifest = read_manifest(tmp_path / "prepared")
    reasons = {entry["path"]: entry["reason"] for entry in manifest["skipped"]}
    assert reasons == expected
    for entry in manifest["skipped"]:
        assert entry["message"] and entry["split"] == "train"
    assert summary.usable == 4 and manifest["counts"]["clips"] == 4
    assert manifest["counts"]["skipped"] == len(expected) == len(summary.skipped)
    assert manifest["counts"]["skipped_by_reason"]["unreadable"] == 2
    assert manifest["ignored_files"] == ["README.txt"]
    assert manifest["captions_without_video"] == ["bad/never_written.mp4"]
    messages = {entry["path"]: entry["message"] for entry in manifest["skipped"]}
    assert "neither decord nor PyAV" in messages["bad/unknown_codec.mp4"]
    assert "5 frames" in messages["bad/short.mp4"]
    assert "folder" in messages["bad/folder.webm"] and "symbolic link" in messages["bad/broken_link.mp4"]
    text = "\n".join(summary.lines())
    assert f"skipped {len(expected)} files" in text and "too_short 1" in text and "corrupt 2" in text


def test_too_many_skipped_files_fail_and_leave_no_output(tmp_path):
    source = generate_dataset(tmp_path / "gen", GeneratorSettings(clips=5, seed=3)).out
    (source / "clips" / "empty.mp4").write_bytes(b"")
    with open(source / "captions.csv", "a") as handle:
        handle.write("clips/empty.mp4,nothing\n")
    out = tmp_path / "prepared"
    command = [sys.executable, "-m", "dit.data", "prepare", "--source", str(source), "--out", str(out)]
    result = subprocess.run(
        command + ["--workers", "1", "--validation-fraction", "0.5"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert result.returncode == 1
    assert "1 of 6 video files skipped (16.67% > limit 5.00%)" in result.stderr
    assert "empty_file: clips/empty.mp4: file has zero bytes" in result.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".prepared")] == []
    # a higher limit accepts the same folder
    accepting = PreparationSettings(validation_fraction=0.5, max_skipped_fraction=0.2, workers=0)
    summary = prepare_dataset(source, out, accepting)
    assert summary.usable == 5 and (out / "manifest.json").is_file()
    # an existing complete output survives a failed run untouched; a run that succeeds replaces it as a whole
    (out / "marker").write_text("old")
    listing = sorted(p.name for p in out.iterdir())
    with pytest.raises(PreparationError, match="skipped"):
        prepare_dataset(source, out, PreparationSettings(validation_fraction=0.5, workers=0))
    assert sorted(p.name for p in out.iterdir()) == listing
    assert prepare_dataset(source, out, accepting).usable == 5
    assert (out / "manifest.json").is_file() and not (out / "marker").exists()


def test_nothing_usable_fails_with_a_clear_message(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no videos here")
    assert main(["prepare", "--source", str(empty), "--out", str(tmp_path / "o1"), "--workers", "0"]) == 1
    assert "no video files (.mp4, .avi, .mkv, .webm, .mov) found" in capsys.readouterr().err
    broken = tmp_path / "broken"
    (broken / "Walking").mkdir(parents=True)
    (broken / "Walking" / "a.mp4").write_bytes(b"")
    with pytest.raises(PreparationError, match="no usable clip"):
        prepare_dataset(broken, tmp_path / "o2", PreparationSettings(workers=0, max_skipped_fraction=1.0))
    with pytest.raises(PreparationError, match="would replace the source"):
        prepare_dataset(broken / "Walking", broken, PreparationSettings(workers=0))
    with pytest.raises(PreparationError, match="does not exist"):
        prepare_dataset(tmp_path / "missing", tmp_path / "o3", PreparationSettings(workers=0))
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3"))


def test_captions_csv_errors_name_the_problem(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "captions.csv").write_text("path,text\na.mp4,hello\n")
    with pytest.raises(PreparationError, match="lacks column.*file, caption.*has: path, text"):
        prepare_dataset(source, tmp_path / "out", PreparationSettings(workers=0))
    (source / "captions.csv").write_text("file,caption\na.mp4,hello\n./a.mp4,again\n")
    with pytest.raises(PreparationError, match="'a.mp4' appears twice"):
        prepare_dataset(source, tmp_path / "out", PreparationSettings(workers=0))


def test_video_extensions_are_found_in_any_case_and_folders_are_followed(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.MP4", "a/b/y.webm", "a/b/z.txt", "w.Mov"):
        (tmp_path / name).write_bytes(b"x")
    os.symlink(tmp_path / "a", tmp_path / "link_to_a")  # followed once, not forever
    videos, others = find_video_files(tmp_path)
    assert videos == ["a/b/y.webm", "a/x.MP4", "w.Mov"]
    assert "a/b/z.txt" in others


# Decode functions sent to worker processes by name (they must live at module level).
def decode_or_crash(path, relative, settings):
    if "crash" in relative:
        os.kill(os.getpid(), signal.SIGSEGV)
    if "hang" in relative:
        time.sleep(60)
    return decode_clip(path, relative, settings)


def test_a_decoder_that_crashes_or_hangs_costs_one_file(tmp_path):
    settings = GeneratorSettings(clips=1)
    good = write_mp4(render_scene(sample_scene(settings, 0), settings), tmp_path / "good.mp4")
    names = ["good", "crash", "good", "hang", "good", "good"]
    tasks = [(i, str(good), f"{name}_{i}.mp4") for i, name in enumerate(names)]
    pool = DecodePool(ClipSettings(), workers=2, timeout_s=2.0, decode=decode_or_crash)
    results = list(pool.run(tasks))
    assert [index for index, _, _ in results] == list(range(len(names)))
    statuses = [status if status == "ok" else payload[0] for _, status, payload in results]
    assert statuses == ["ok", "decoder_crash", "ok", "decode_timeout", "ok", "ok"]
    assert "SIGSEGV" in results[1][2][1]
    np.testing.assert_array_equal(results[0][2].frames, results[5][2].frames)


def _captioned_folder(root: Path) -> Path:
    """Three short videos in two folders (UCF-101 style) and a captions.csv of its own for each."""
    for relative in ("Walking/a.mp4", "Walking/b.mp4", "Jumping/c.mp4"):
        _levels_video(root / relative, frames=8, height=16, width=16)
    (root / "captions.csv").write_text("file,caption\nWalking/a.mp4,a from the csv\nWalking/b.mp4,b from the csv\n"
                                       "Jumping/c.mp4,c from the csv\n")
    return root


def _prepare(source: Path, out: Path, *options: str) -> int:
    return main(["prepare", "--source", str(source), "--out", str(out), "--frames", "4", "--height", "16", "--width", "16",
                 "--validation-fraction", "0", "--workers", "0", *options])


def _captions_of(prepared: Path) -> dict[str, str]:
    from dit.data.loader import ShardDataset

    dataset = ShardDataset(prepared, "train")
    return dict(zip(dataset.sources, dataset.captions))


def test_prepare_command_takes_captions_from_the_folder_csv_another_csv_or_folder_names(tmp_path, capsys):
    source = _captioned_folder(tmp_path / "source")
    assert _prepare(source, tmp_path / "default") == 0
    assert _captions_of(tmp_path / "default") == {
        "Jumping/c.mp4": "c from the csv", "Walking/a.mp4": "a from the csv", "Walking/b.mp4": "b from the csv"}

    assert _prepare(source, tmp_path / "folders", "--folder-captions") == 0
    assert _captions_of(tmp_path / "folders") == {"Jumping/c.mp4": "jumping", "Walking/a.mp4": "walking", "Walking/b.mp4": "walking"}
    assert read_manifest(tmp_path / "folders")["provenance"]["config"]["captions_from"] == "folder names"

    other = tmp_path / "elsewhere.csv"  # outside the source folder, one absolute path inside it
    other.write_text(f"file,caption\n{source / 'Walking' / 'a.mp4'},walking slowly\nWalking/b.mp4,walking fast\n"
                     "./Jumping/c.mp4,  jumping high  \nRunning/gone.mp4,no such file\n")
    assert _prepare(source, tmp_path / "other", "--captions", str(other)) == 0
    assert _captions_of(tmp_path / "other") == {
        "Jumping/c.mp4": "jumping high", "Walking/a.mp4": "walking slowly", "Walking/b.mp4": "walking fast"}
    manifest = read_manifest(tmp_path / "other")
    recorded = manifest["provenance"]["config"]
    assert recorded["captions_from"] == "csv" and recorded["captions_csv"] == str(other.resolve())
    assert manifest["captions_without_video"] == ["Running/gone.mp4"]
    capsys.readouterr()


@pytest.mark.parametrize(
    "rows, message",
    [
        ("Walking/a.mp4,one\n,a row without a file\n", "row 3: empty file name"),
        ("{outside},a file outside\n", "row 2: file '{outside}' lies outside the source folder"),
        ("Walking/a.mp4,one\n./Walking/a.mp4,again\n", "file 'Walking/a.mp4' appears twice (rows 2 and 3)"),
        ("Walking/a.mp4,one\nWalking/b.mp4,a red ball, then a blue cube\n",
         "row 3: 3 fields where the header has 2; put a caption that contains commas in double quotes"),
    ],
    ids=["empty-file-name", "outside-the-source", "listed-twice", "unquoted-comma"],
)
def test_bad_csv_rows_stop_the_preparation_naming_the_row(tmp_path, capsys, rows, message):
    source = _captioned_folder(tmp_path / "source")
    outside = tmp_path / "other" / "x.mp4"
    captions = tmp_path / "captions.csv"
    captions.write_text("file,caption\n" + rows.format(outside=outside))
    assert _prepare(source, tmp_path / "out", "--captions", str(captions)) == 1
    error = capsys.readouterr().err
    assert f"error: preparation failed: captions CSV {captions}" in error and message.format(outside=outside) in error
    assert f"nothing was written to {tmp_path / 'out'}" in error and not (tmp_path / "out").exists()


def test_a_file_with_an_empty_caption_or_no_row_is_skipped_with_the_reason(tmp_path):
    source = _captioned_folder(tmp_path / "source")
    captions = tmp_path / "captions.csv"
    captions.write_text("file,caption\nWalking/a.mp4,a walk\nWalking/b.mp4,   \n")
    assert _prepare(source, tmp_path / "out", "--captions", str(captions), "--max-skipped-fraction", "1") == 0
    assert _captions_of(tmp_path / "out") == {"Walking/a.mp4": "a walk"}
    skipped = {entry["path"]: entry for entry in read_manifest(tmp_path / "out")["skipped"]}
    assert set(skipped) == {"Walking/b.mp4", "Jumping/c.mp4"}
    assert {entry["reason"] for entry in skipped.values()} == {"missing_caption"}
    assert f"empty caption in {captions}" in skipped["Walking/b.mp4"]["message"]
    assert f"no row for this file in {captions}" in skipped["Jumping/c.mp4"]["message"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("file,caption\nWalking/a.mp4,café\n".encode("latin-1"), "is not UTF-8 (line 2: byte 0xe9); save it as UTF-8"),
        ("file,caption\nWalking/a.mp4,café\n".encode("utf-16"), "is UTF-16 (it starts with a UTF-16 byte-order mark); "
         "save it as UTF-8"),
        ("file,caption\nWalking/a.mp4,cafe\n".encode("utf-16-le"), "line 1 holds NUL bytes: UTF-16 or not text; "
         "save it as UTF-8"),
        (b"file,caption\nWalking/a.mp4,one\nWalking/b.mp4," + b"x" * 200_000 + b"\n",
         "row 3: field larger than field limit (131072) (a caption that long, or an unmatched double quote)"),
    ],
    ids=["latin-1", "utf-16", "utf-16-without-bom", "huge-field"],
)
def test_a_captions_csv_in_another_encoding_or_with_a_huge_field_stops_the_preparation(tmp_path, capsys, content, message):
    source = _captioned_folder(tmp_path / "source")
    captions = tmp_path / "captions.csv"
    captions.write_bytes(content)
    assert _prepare(source, tmp_path / "out", "--captions", str(captions)) == 1
    error = capsys.readouterr().err
    assert f"error: preparation failed: captions CSV {captions}" in error and message in error
    assert not (tmp_path / "out").exists()


def test_a_file_name_that_is_not_utf8_is_skipped_with_the_reason(tmp_path, capsys):
    source = _captioned_folder(tmp_path / "source")
    (source / "captions.csv").unlink()
    try:
        shutil.copy(source / "Walking" / "a.mp4", os.fsencode(source / "Walking") + b"/caf\xe9.mp4")
    except OSError:
        pytest.skip("this file system takes UTF-8 file names only")
    assert _prepare(source, tmp_path / "strict") == 1  # 1 of 4 files skipped: over the 5% limit
    assert "unreadable: Walking/caf\\xe9.mp4: file name is not valid UTF-8; rename the file" in capsys.readouterr().err
    assert _prepare(source, tmp_path / "out", "--max-skipped-fraction", "0.5") == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_bytes().decode("utf-8"))
    assert manifest["skipped"] == [{"path": "Walking/caf\\xe9.mp4", "split": split_of("Walking/caf\\xe9.mp4", 0.0),
                                    "reason": "unreadable", "message": "file name is not valid UTF-8; rename the file"}]
    assert manifest["counts"]["clips"] == 3


def test_an_out_that_is_not_an_earlier_prepared_folder_is_refused_and_kept(tmp_path, capsys):
    source = _captioned_folder(tmp_path / "source")
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    mine = tmp_path / "mywork"
    mine.mkdir()
    (mine / "thesis.tex").write_text("thesis")
    generated = generate_dataset(tmp_path / "generated", GeneratorSettings(clips=1)).out  # another command's output
    for out, there in [(notes, "it is a file"), (mine, "it is a folder holding thesis.tex"),
                       (generated, "it is a folder holding captions.csv, clips, generation.json")]:
        assert _prepare(source, out) == 2
        assert f"error: refusing to replace {out}: {there}, not an earlier prepared data folder" in capsys.readouterr().err
    assert notes.read_text() == "precious" and [p.name for p in mine.iterdir()] == ["thesis.tex"]
    assert sorted(p.name for p in generated.iterdir()) == ["captions.csv", "clips", "generation.json"]
    # an empty folder is filled; through a symbolic link the data goes where it points, and the link stays
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    assert _prepare(source, prepared) == 0
    (tmp_path / "link").symlink_to(prepared)
    assert _prepare(source, tmp_path / "link", "--folder-captions") == 0
    assert (tmp_path / "link").is_symlink() and _captions_of(prepared)["Walking/a.mp4"] == "walking"
    # a captions CSV kept in the output folder is not deleted by preparing into that folder again
    kept = prepared / "mine.csv"
    shutil.copy(source / "captions.csv", kept)
    assert _prepare(source, prepared, "--captions", str(kept)) == 1
    assert f"output folder {prepared} would replace the captions CSV {kept}" in capsys.readouterr().err
    assert kept.read_bytes() == (source / "captions.csv").read_bytes()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith((".tmp", ".old"))]


@pytest.mark.parametrize(
    "options, message",
    [
        (["--decode-timeout", "0"], "error: decode_timeout_s must be a positive number of seconds, got 0.0"),
        (["--shard-megabytes", "inf"], "error: shard_megabytes must be a positive number, got inf"),
        (["--shard-megabytes", "nan"], "error: shard_megabytes must be a positive number, got nan"),
        (["--out", "{tmp}/afile/sub"], "error: cannot write {tmp}/afile/sub: [Errno 17] File exists"),
        (["--out", "/proc/x"], "error: cannot write /proc/x: "),
    ],
    ids=["timeout-0", "shard-inf", "shard-nan", "under-a-file", "proc"],
)
def test_bad_option_values_and_unwritable_outputs_exit_2_with_a_message(tmp_path, capsys, options, message):
    if "/proc/x" in options and not os.path.isdir("/proc"):
        pytest.skip("no /proc")
    source = _captioned_folder(tmp_path / "source")
    (tmp_path / "afile").write_text("a file")
    assert _prepare(source, tmp_path / "out", *[option.format(tmp=tmp_path) for option in options]) == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "a file" and not (tmp_path / "out").exists()


#: ``python -m dit.data`` whose decoding sleeps 60 s on files named ``hang*`` (``decode_or_crash``).
_HANGING_PREPARE = """
import functools, sys
import dit.data.prepare as prepare
from dit.data.__main__ import main
from dit.data.workers import DecodePool
from test_data_prepare import decode_or_crash
prepare.DecodePool = functools.partial(DecodePool, decode=decode_or_crash)
sys.exit(main(sys.argv[1:]))
"""


def _interrupted_prepare(source: Path, out: Path, workers: int, signal_number: int, ready) -> subprocess.CompletedProcess:
    """Run a prepare that hangs on a file, send ``signal_number`` once ``ready(temporary folder)``, return its outcome."""
    command = [sys.executable, "-c", _HANGING_PREPARE, "prepare", "--source", str(source), "--out", str(out),
               "--frames", "4", "--height", "16", "--width", "16", "--validation-fraction", "0",
               "--workers", str(workers)]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(Path(__file__).parent)])}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=environment)
    deadline = time.monotonic() + 120
    while not [path for path in out.parent.glob(f".{out.name}.*.tmp") if ready(path)]:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the preparation did not start decoding"
        time.sleep(0.05)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(command, process.returncode, "", stderr)


def test_an_interrupted_preparation_leaves_no_temporary_folder_behind(tmp_path):
    source = _captioned_folder(tmp_path / "source")
    shutil.copy(source / "Walking" / "a.mp4", source / "Walking" / "hang.mp4")
    with open(source / "captions.csv", "a") as handle:
        handle.write("Walking/hang.mp4,a walk that hangs\n")
    out = tmp_path / "prepared"
    assert _prepare(source, out, "--folder-captions") == 0
    before = (out / "manifest.json").read_bytes()
    temporaries = lambda: sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".prepared."))  # noqa: E731

    # SIGTERM (a cancelled SLURM or Snakemake job), while workers decode: their log folder lies in the temporary one
    result = _interrupted_prepare(source, out, 1, signal.SIGTERM, lambda tmp: any(tmp.glob("dit-decode-logs-*")))
    assert result.returncode == 128 + signal.SIGTERM
    assert f"error: terminated by SIGTERM; nothing was written to {out}" in result.stderr
    assert temporaries() == [] and (out / "manifest.json").read_bytes() == before

    # SIGKILL leaves the temporary folder; the next run into the same output removes it
    result = _interrupted_prepare(source, out, 0, signal.SIGKILL, lambda tmp: True)
    assert result.returncode == -signal.SIGKILL
    assert len(temporaries()) == 1 and (out / "manifest.json").read_bytes() == before
    assert _prepare(source, out) == 0
    assert temporaries() == [] and _captions_of(out)["Walking/hang.mp4"] == "a walk that hangs"


def test_the_source_fingerprint_changes_with_any_file_below_the_folder(tmp_path):
    """What the pipeline passes to prepare_data so that your own folder is prepared again when a file below it is
    added, removed, replaced or edited in place (the folder's own time does not change then)."""
    import os

    from dit.data.sources import source_fingerprint

    source = tmp_path / "videos"
    (source / "Walking").mkdir(parents=True)
    (source / "Walking" / "a.mp4").write_bytes(b"0" * 10)
    (source / "captions.csv").write_text("file,caption\nWalking/a.mp4,a walk\n")
    seen = [source_fingerprint(source)]
    assert source_fingerprint(source) == seen[0] and len(seen[0]) == 64
    os.utime(source / "Walking" / "a.mp4", ns=(1, 1))  # replaced by a file of the same size: another time
    seen.append(source_fingerprint(source))
    (source / "Walking" / "b.mp4").write_bytes(b"1" * 10)  # added in a subfolder
    seen.append(source_fingerprint(source))
    (source / "captions.csv").write_text("file,caption\nWalking/a.mp4,a slow walk\n")  # a caption edited
    seen.append(source_fingerprint(source))
    (source / "Walking" / "b.mp4").unlink()
    seen.append(source_fingerprint(source))
    assert len(set(seen)) == len(seen)
    assert source_fingerprint(tmp_path / "nowhere") == ""
