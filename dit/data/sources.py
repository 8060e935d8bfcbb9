"""What a source folder of videos holds: its video files, their captions and the split of each.

A file's split is fixed by a hash of its path relative to the source folder alone, so adding files
never moves existing ones between ``train`` and ``validation``. Captions come from a CSV with
columns ``file,caption`` or from each file's parent folder name (UCF-101 layout).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from pathlib import Path

from dit.data.decode import SkipReason

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")
#: Default name of the captions CSV looked for in the source folder.
DEFAULT_CAPTIONS_NAME = "captions.csv"


class CaptionsCsvError(ValueError):
    """A captions CSV that cannot be read or is malformed; the message names the file (and row)."""


def split_of(relative_path: str, validation_fraction: float) -> str:
    """``"validation"`` or ``"train"``, from a hash of the relative path alone (stable as files are added)."""
    digest = hashlib.sha256(("split\0" + relative_path).encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "little") / 2.0**64
    return "validation" if position < validation_fraction else "train"


def caption_from_folder_name(name: str) -> str:
    """``"ApplyEyeMakeup"`` -> ``"apply eye makeup"``; underscores and hyphens become spaces."""
    spaced = re.sub(r"[_\-]+", " ", name)
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", spaced)
    return " ".join(spaced.lower().split())


def source_fingerprint(source: str | os.PathLike) -> str:
    """A sha256 of every file under ``source`` (relative path, size, modification time in ns): it changes when a
    video or caption file is added, removed, replaced or edited in place. The pipeline passes it to the data
    preparation as a parameter, so that such a change prepares the folder again (a folder's own time does not
    change when a file below it is edited). ``""`` for a folder that does not exist."""
    root = Path(source)
    if not root.is_dir():
        return ""
    digest = hashlib.sha256()
    videos, others = find_video_files(root)
    for relative in sorted(videos + others):
        try:
            status = (root / relative).stat()
        except OSError:
            continue
        digest.update(f"{relative}\0{status.st_size}\0{status.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def find_video_files(source: Path) -> tuple[list[str], list[str]]:
    """Relative paths (POSIX, sorted) of entries with a video extension, and of the other files.

    Folders whose name has a video extension are listed as video entries too (they are skipped as
    unreadable later, and searched like any folder). Symbolic links to folders are followed once.
    """
    videos, others = [], []
    seen_folders = set()
    for folder, folder_names, file_names in os.walk(source, followlinks=True):
        folder_names.sort()  # a fixed walk order, so a folder reached twice is always named the same way
        real = os.path.realpath(folder)
        if real in seen_folders:
            folder_names[:] = []
            continue
        seen_folders.add(real)
        relative_folder = os.path.relpath(folder, source)
        for name in folder_names + file_names:
            relative = name if relative_folder == "." else f"{relative_folder}/{name}"
            relative = relative.replace(os.sep, "/")
            if name.lower().endswith(VIDEO_EXTENSIONS):
                videos.append(relative)
            elif name in file_names:
                others.append(relative)
    return sorted(videos), sorted(others)


def _normalize_relative(path: str) -> str:
    path = path.strip().replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def read_captions_csv(path: Path, source: Path) -> dict[str, str]:
    """``{relative path: caption}`` from a CSV with columns ``file`` and ``caption``, encoded as UTF-8.

    ``file`` is relative to ``source`` (an absolute path inside ``source`` is accepted). A missing
    column, a path outside the source folder, a file listed twice, another encoding, a row with
    more fields than the header (an unquoted comma in a caption) or a field over ``csv``'s size
    limit raises ``CaptionsCsvError``.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise CaptionsCsvError(f"cannot read captions CSV {path}: {error.strerror or error}") from None
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise CaptionsCsvError(f"captions CSV {path} is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    if b"\0" in data:  # UTF-16 without a byte-order mark has a NUL byte beside every ASCII character
        line = data[: data.index(b"\0")].count(b"\n") + 1
        raise CaptionsCsvError(f"captions CSV {path} line {line} holds NUL bytes: UTF-16 or not text; save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise CaptionsCsvError(
            f"captions CSV {path} is not UTF-8 (line {line}: byte 0x{data[error.start]:02x}); save it as UTF-8"
        ) from None
    captions: dict[str, str] = {}
    rows: dict[str, int] = {}
    reader = csv.DictReader(io.StringIO(text, newline=""))
    row_number = 0  # the last row read (1: the header)
    try:
        columns = reader.fieldnames or []
        row_number = 1
        missing = [column for column in ("file", "caption") if column not in columns]
        if missing:
            raise CaptionsCsvError(
                f"captions CSV {path} lacks column(s) {', '.join(missing)}; it has: {', '.join(columns) or 'none'}"
            )
        source_resolved = source.resolve()
        for row_number, row in enumerate(reader, start=2):
            if any((field or "").strip() for field in row.get(None, [])):  # DictReader puts extra fields under None
                raise CaptionsCsvError(
                    f"captions CSV {path} row {row_number}: {len(columns) + len(row[None])} fields where the header "
                    f"has {len(columns)}; put a caption that contains commas in double quotes (\"a, b\")"
                )
            name = row["file"] or ""
            if os.path.isabs(name):
                try:
                    name = Path(name).resolve().relative_to(source_resolved).as_posix()
                except ValueError:
                    raise CaptionsCsvError(
                        f"captions CSV {path} row {row_number}: file {row['file']!r} lies outside the source folder {source}"
                    ) from None
            name = _normalize_relative(name)
            if not name:
                raise CaptionsCsvError(f"captions CSV {path} row {row_number}: empty file name")
            if name in captions:
                raise CaptionsCsvError(
                    f"captions CSV {path}: file {name!r} appears twice (rows {rows[name]} and {row_number})"
                )
            captions[name] = (row["caption"] or "").strip()
            rows[name] = row_number
    except csv.Error as error:  # in the row after the last one read: a field over the size limit, a NUL byte
        hint = " (a caption that long, or an unmatched double quote)" if "field limit" in str(error) else ""
        raise CaptionsCsvError(f"captions CSV {path} row {row_number + 1}: {error}{hint}") from None
    return captions


def printable_path(relative: str) -> str:
    """``relative`` as valid Unicode: the bytes of a file name that are not UTF-8 (which ``os`` hands over as
    lone surrogates) written as ``\\xNN``, so that the name can go into JSON and be hashed."""
    return relative.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_utf8_path(relative: str) -> bool:
    """Whether the file name ``relative`` (as ``os`` decodes it) was valid UTF-8."""
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def caption_for(relative: str, captions: dict[str, str] | None, csv_path: Path | None) -> str:
    """The caption of one video file: its CSV row, or its parent folder's name; ``SkipReason`` when it has none."""
    if captions is not None:
        caption = captions.get(relative)
        if caption is None:
            raise SkipReason("missing_caption", f"no row for this file in {csv_path}")
        if not caption:
            raise SkipReason("missing_caption", f"empty caption in {csv_path}")
        return caption
    parent = Path(relative).parent
    if parent == Path("."):
        raise SkipReason(
            "missing_caption", "file lies directly in the source folder: no folder name to caption it and no captions CSV"
        )
    return caption_from_folder_name(parent.name)
