"""Atomic output: complete files or nothing, with the usual permissions."""

import json
import os
import stat

import pytest

from dit.atomic import atomic_directory, atomic_path, atomic_write_json, atomic_write_text


def test_written_file_has_umask_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "out.txt", "hello")
    finally:
        os.umask(previous)
    assert (tmp_path / "out.txt").read_text() == "hello"
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o644


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    atomic_write_json(tmp_path / "out.json", {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert (tmp_path / "out.json").read_text().strip().startswith("{")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_directory_replaces_as_a_whole(tmp_path):
    target = tmp_path / "folder"
    with atomic_directory(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError):
        with atomic_directory(target) as tmp:
            (tmp / "b").write_text("2")
            raise ValueError("failed half-way")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_atomic_write_json_can_put_number_lists_on_one_line(tmp_path):
    """``flat_number_lists``: each list of numbers and nulls on one line; the parsed document is the same, and a
    string that looks like a list, or a list holding other things, is left as it was."""
    document = {"draws": [0.5, -1e-05, None, 3], "nested": {"rows": [[1, 2], [3.25, None]]}, "note": "[1,\n2]",
                "mixed": [1, "a", None], "empty": []}
    atomic_write_json(tmp_path / "flat.json", document, flat_number_lists=True)
    text = (tmp_path / "flat.json").read_text()
    assert json.loads(text) == document
    assert '"draws": [0.5, -1e-05, null, 3]' in text and "[3.25, null]" in text
    assert '"mixed": [\n' in text  # not all numbers: spread as json.dumps writes it
    atomic_write_json(tmp_path / "spread.json", document)
    assert json.loads((tmp_path / "spread.json").read_text()) == document and '"draws": [\n' in (tmp_path / "spread.json").read_text()
