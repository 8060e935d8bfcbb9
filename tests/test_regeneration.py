"""Byte-identical regeneration: the data stage run again, in other processes, writes the same files.

Each command runs in a process of its own (as Snakemake runs it), so nothing a process keeps in
memory, and no address or allocation pattern of one process, can make two runs agree by accident.
Only clock readings (``dit.provenance.VOLATILE_KEYS``: timestamps and durations) may differ.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dit.data.video_io import PIXEL_FORMATS, rgb_to_yuv_planes
from dit.provenance import without_volatile

CLIPS = 200


def _run(*arguments: str) -> None:
    result = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def _checksums(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder`` except the JSON records."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix != ".json"
    }


def _records(folder: Path) -> dict[str, object]:
    """Relative path -> content of every JSON record under ``folder``, clock readings removed."""
    return {
        str(path.relative_to(folder)): without_volatile(json.loads(path.read_text()))
        for path in sorted(folder.rglob("*.json"))
    }


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    """The embedded set (200 clips), its shards and its latent codec, each made twice in separate processes.

    Both runs write into the same folder (``work``, moved aside afterwards), as a rerun does, so the
    paths recorded in the manifests agree too.
    """
    root = tmp_path_factory.mktemp("regeneration")
    work = root / "work"
    for copy in ("a", "b"):
        _run("-m", "dit.data", "generate", "--out", str(work / "source"), "--clips", str(CLIPS), "--seed", "0")
        _run("-m", "dit.data", "prepare", "--source", str(work / "source"), "--out", str(work / "prepared"),
             "--frames", "8", "--height", "16", "--width", "16", "--workers", "2")
        _run("-m", "dit.latent", "fit", "--data", str(work / "prepared"), "--out", str(work / "codec.npz"),
             "--patch", "2", "4", "4", "--channels", "16", "--max-clips", "128", "--seed", "0")
        work.rename(root / copy)
    return root / "a", root / "b"


@pytest.mark.slow  # the data stage twice in separate processes: about 20 s
def test_generated_clips_are_byte_identical_across_processes(regenerated):
    first, second = regenerated
    checksums = _checksums(first / "source")
    assert len([name for name in checksums if name.endswith(".mp4")]) == CLIPS
    assert checksums == _checksums(second / "source")
    assert _records(first / "source") == _records(second / "source")


@pytest.mark.slow  # the data stage twice in separate processes: about 20 s
def test_prepared_shards_and_latent_codec_are_byte_identical_across_processes(regenerated):
    first, second = regenerated
    checksums = _checksums(first / "prepared")
    assert any(name.endswith(".frames.npy") for name in checksums)
    assert checksums == _checksums(second / "prepared")
    assert _records(first / "prepared") == _records(second / "prepared")
    with np.load(first / "codec.npz", allow_pickle=False) as a, np.load(second / "codec.npz", allow_pickle=False) as b:
        assert a["basis"].tobytes() == b["basis"].tobytes() and a["mean"].tobytes() == b["mean"].tobytes()
        header_a, header_b = (json.loads(arrays["header"].tobytes().decode()) for arrays in (a, b))
    assert without_volatile(header_a) == without_volatile(header_b)


def test_colour_conversion_matches_bt601_and_the_encoder_input_layout():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    red, green, blue = (frame[..., channel].astype(np.float64) for channel in range(3))
    # BT.601 limited range from its defining coefficients (Kr = 0.299, Kb = 0.114), in floating point
    luma = 16 + (219 / 255) * (0.299 * red + 0.587 * green + 0.114 * blue)
    blue_difference = 128 + (224 / 255) * (blue - (0.299 * red + 0.587 * green + 0.114 * blue)) / 1.772
    red_difference = 128 + (224 / 255) * (red - (0.299 * red + 0.587 * green + 0.114 * blue)) / 1.402
    planes = rgb_to_yuv_planes(frame, "yuv444p").astype(np.float64)
    assert planes.shape == (3, 6, 8)
    for plane, exact in zip(planes, (luma, blue_difference, red_difference), strict=True):
        assert np.abs(plane - exact).max() <= 1.0  # the 8-bit integer form is within one code value
    subsampled = rgb_to_yuv_planes(frame, "yuv420p")
    assert subsampled.shape == (9, 8)  # Y' (6 x 8), then Cb and Cr (3 x 4 each) flattened
    np.testing.assert_array_equal(subsampled[:6], planes[0])
    chroma = subsampled[6:].ravel()
    expected_cb = planes[1].reshape(3, 2, 4, 2).mean(axis=(1, 3)).ravel()
    assert np.abs(chroma[:12] - expected_cb).max() <= 0.5
    with pytest.raises(ValueError, match="pixel_format must be one of"):
        rgb_to_yuv_planes(frame, "rgb24")
    assert set(PIXEL_FORMATS) == {"yuv444p", "yuv420p"}


def test_provenance_records_every_pinned_runtime_package():
    """Each package pyproject.toml pins for running the suite (its ``dependencies``) has its version in provenance:
    pyarrow reads the runs tables, tabulate writes the Markdown tables, jinja2 renders the reports."""
    import importlib.metadata
    import re
    import tomllib

    from dit.provenance import provenance

    pinned = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[=<>!~ ;\[]", requirement, maxsplit=1)[0].lower() for requirement in pinned]
    packages = provenance({})["packages"]
    for name in names:
        assert name in packages, f"{name} is pinned but not recorded"
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        assert packages[name] == installed or (installed is None and packages[name] is None)


def test_provenance_names_the_cpu_and_the_math_libraries():
    import platform

    import torch

    from dit.provenance import provenance

    record = provenance({"a": 1})
    cpu, libraries = record["cpu"], record["math_libraries"]
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        flags = next(line for line in lines if line.startswith("flags")).split(":", 1)[1].split()
        assert cpu["model"] == next(line for line in lines if line.startswith("model name")).split(":", 1)[1].strip()
        assert cpu["cpu_flags_sha256"] == hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()
        assert set(cpu["simd_flags"]) <= set(flags) and ("avx2" in flags) == ("avx2" in cpu["simd_flags"])
    assert cpu["machine"] == platform.machine()
    assert libraries["numpy_blas"]
    assert libraries["torch_threads"] == torch.get_num_threads()
    capability = [line for line in libraries["torch_build"] if line.startswith("CPU capability")]
    assert capability and capability[0] in torch.__config__.show()


def test_code_version_is_dirty_for_changed_code_not_for_regenerated_results(tmp_path, monkeypatch):
    """A rerun of the pipeline rewrites the committed results/ (and results-seed-1/): that alone must not mark
    the code version dirty; a changed tracked source file must; an untracked file does not."""
    from dit.provenance import _code_version

    monkeypatch.delenv("DIT_CODE_VERSION", raising=False)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                              check=True, capture_output=True, text=True).stdout.strip()

    for name in ("dit/model.py", "results/runs.csv", "results-seed-1/laws.json", "config/config.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("committed\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "start")
    head = git("rev-parse", "HEAD")
    assert _code_version(tmp_path) == {"commit": head, "dirty": False, "source": "git"}
    (tmp_path / "results/runs.csv").write_text("regenerated\n")
    (tmp_path / "results-seed-1/laws.json").write_text("regenerated\n")
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert _code_version(tmp_path)["dirty"] is False
    for name in ("dit/model.py", "config/config.yaml"):
        (tmp_path / name).write_text("changed\n")
        assert _code_version(tmp_path) == {"commit": head, "dirty": True, "source": "git"}
        git("checkout", "--", name)
    monkeypatch.setenv("DIT_CODE_VERSION", "v1")
    assert _code_version(tmp_path) == {"commit": "v1", "dirty": None, "source": "DIT_CODE_VERSION"}
