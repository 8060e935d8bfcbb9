"""Atomic output: complete files or nothing, with the usual permissions."""

import json
import os
import signal
import stat
import subprocess
import sys

import pytest

from dit.atomic import OutputPathError, atomic_directory, atomic_path, atomic_write_json, atomic_write_text
from dit.provenance import PROJECT_ROOT


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


def _has_a(folder):
    return (folder / "a").is_file()


def test_atomic_directory_replaces_as_a_whole(tmp_path):
    target = tmp_path / "folder"
    with atomic_directory(target, replaces=_has_a) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError, match="failed half-way"):
        with atomic_directory(target, replaces=_has_a) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("failed half-way")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]
    with atomic_directory(target, replaces=_has_a) as tmp:  # an earlier output of the same writer is replaced
        (tmp / "a").write_text("3")
    assert (target / "a").read_text() == "3" and sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


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


def test_atomic_directory_refuses_what_is_not_an_earlier_output_and_keeps_it(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    with pytest.raises(OutputPathError, match=f"refusing to replace {notes}: it is a file"):
        with atomic_directory(notes, replaces=_has_a) as tmp:
            (tmp / "a").write_text("1")
    mine = tmp_path / "mywork"
    mine.mkdir()
    (mine / "thesis.tex").write_text("thesis")
    with pytest.raises(OutputPathError, match=f"refusing to replace {mine}: it is a folder holding thesis.tex"):
        with atomic_directory(mine, replaces=_has_a) as tmp:
            (tmp / "a").write_text("1")
    assert notes.read_text() == "precious" and [p.name for p in mine.iterdir()] == ["thesis.tex"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_directory(empty, replaces=_has_a) as tmp:
        (tmp / "a").write_text("1")
    assert [p.name for p in empty.iterdir()] == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mywork", "notes.txt"]


def test_atomic_directory_builds_where_a_symbolic_link_points_and_keeps_the_link(tmp_path):
    target = tmp_path / "data" / "prepared"
    with atomic_directory(target, replaces=_has_a) as tmp:
        (tmp / "a").write_text("1")
    link = tmp_path / "prepared"
    link.symlink_to(target)
    with atomic_directory(link, replaces=_has_a) as tmp:
        (tmp / "a").write_text("2")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert (target / "a").read_text() == "2" and sorted(p.name for p in target.parent.iterdir()) == ["prepared"]


_HOLD = """
import sys, time
from dit.atomic import atomic_directory
with atomic_directory(sys.argv[1]) as tmp:
    (tmp / "part").write_text("half")
    print("building", flush=True)
    time.sleep(60)
"""


def _holding(out):
    """A process building ``out`` with ``atomic_directory``, once it has started."""
    process = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert process.stdout.readline() == "building\n"
    return process


def _temporaries(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".old")))


def test_sigterm_removes_the_temporary_folder_and_the_next_run_removes_a_killed_ones(tmp_path):
    out = tmp_path / "out"
    terminated = _holding(out)
    terminated.send_signal(signal.SIGTERM)
    assert terminated.wait(timeout=30) != 0
    assert _temporaries(tmp_path) == [] and not out.exists()

    killed, running = _holding(out), _holding(out)
    killed.kill()
    killed.wait(timeout=30)
    try:
        (dead,) = [name for name in _temporaries(tmp_path) if f"-{killed.pid}." in name]  # .out.HOST-PID.XXXX.tmp
        (live,) = [name for name in _temporaries(tmp_path) if f"-{running.pid}." in name]
        other = tmp_path / dead.replace(".out.", ".out-2.", 1)  # a dead process's folder for another output
        other.mkdir()
        with atomic_directory(out) as tmp:
            (tmp / "a").write_text("1")
        assert _temporaries(tmp_path) == sorted([live, other.name]) and (out / "a").read_text() == "1"
    finally:
        running.send_signal(signal.SIGTERM)
        running.wait(timeout=30)
    assert _temporaries(tmp_path) == [other.name]


def test_output_files_that_cannot_be_written_are_refused_before_any_work(tmp_path):
    """A folder, a path below a file, an input, or one file named twice: each refused with its reason; nothing is
    created or changed."""
    from dit.atomic import check_output_files

    data = tmp_path / "runs.csv"
    data.write_text("kept\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    check_output_files([tmp_path / "new" / "deeper" / "out.json", None], [data, None])
    cases = {
        "is a folder": ([folder], []),
        "is a file, not a folder": ([data / "out.json"], []),
        "is also an input": ([tmp_path / "." / "runs.csv"], [data]),
        "named twice": ([tmp_path / "a.json", tmp_path / "x" / ".." / "a.json"], []),
    }
    for reason, (outputs, inputs) in cases.items():
        with pytest.raises(OutputPathError, match=reason):
            check_output_files(outputs, inputs)
    assert data.read_text() == "kept\n" and sorted(p.name for p in tmp_path.iterdir()) == ["folder", "runs.csv"]
