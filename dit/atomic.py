"""Atomic file output: a killed process never leaves a file that looks complete.

Every writer goes to a temporary file in the destination folder, flushes and fsyncs it, then
``os.replace``s it onto the final name (atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is moved onto ``path``, on error removed.

    ``suffix`` is appended to the temporary name, for writers that infer the format from it
    (``.png``, ``.npy``).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


#: A JSON array of numbers and nulls that ``json.dumps(..., indent=...)`` spread over several lines.
_SPREAD_NUMBERS = re.compile(r"\[\n\s*((?:-?[0-9][0-9.eE+-]*|null)(?:,\n\s*(?:-?[0-9][0-9.eE+-]*|null))*)\n\s*\]")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2, flat_number_lists: bool = False) -> None:
    """Write ``obj`` as JSON (sorted keys, trailing newline) to ``path`` atomically.

    ``flat_number_lists``: lists of numbers (and nulls) on one line each, for files of long resample lists; the
    parsed document is the same.
    """
    text = json.dumps(obj, indent=indent, sort_keys=True, default=_json_default)
    if flat_number_lists and indent is not None:
        text = _SPREAD_NUMBERS.sub(lambda match: "[" + ", ".join(match.group(1).replace(",", " ").split()) + "]", text)
    atomic_write_text(path, text + "\n")


class OutputPathError(ValueError):
    """``atomic_directory`` will not replace what is at its path; the message names the path and what is there."""


def repeated_path(paths: Iterable[str | os.PathLike]) -> tuple[Path, Path] | None:
    """The first of ``paths`` that names the same file or folder as an earlier one (after ``os.path.realpath``), with
    that earlier one; ``None`` when each is named once."""
    seen: dict[str, Path] = {}
    for path in map(Path, paths):
        earlier = seen.setdefault(os.path.realpath(path), path)
        if earlier is not path:
            return path, earlier
    return None


def _existing_ancestor(path: Path) -> Path:
    """The nearest folder above ``path`` (or file in its place) that exists."""
    return next(parent for parent in path.absolute().parents if parent.exists())


def check_output_files(outputs: Iterable[str | os.PathLike | None], inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Raise ``OutputPathError`` before any work when an output file cannot be written where it is asked for.

    Refused: an output that is a folder, one below a file or below a folder this process cannot write,
    one that is also an input (writing it would destroy that input), and one file named twice. ``None``
    entries (options not given) are skipped. A CLI calls this first, so bad paths cost nothing and lose nothing.
    """
    read = {os.path.realpath(path) for path in inputs if path is not None}
    given = [Path(path) for path in outputs if path is not None]
    for final in given:
        if final.is_dir():
            raise OutputPathError(f"output {final} is a folder; give the path of a file")
        ancestor = _existing_ancestor(final)
        if not ancestor.is_dir():
            raise OutputPathError(f"output {final} cannot be written: {ancestor} is a file, not a folder")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise OutputPathError(f"output {final} cannot be written: no permission to write in {ancestor}")
        if os.path.realpath(final) in read:
            raise OutputPathError(f"output {final} is also an input; writing it would destroy that input")
    repeated = repeated_path(given)
    if repeated:
        raise OutputPathError(f"output {repeated[0]} is named twice; give each output its own path")


def check_output_folder(path: str | os.PathLike, option: str = "--out") -> None:
    """``OutputPathError`` when ``path`` cannot be an output folder: something that is not a folder is there
    (a file, such as a config), or it lies below a file."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise OutputPathError(f"{option} {path} is a file, not a run or job folder; give the path of a folder")
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise OutputPathError(f"{option} {path} cannot be a folder: {ancestor} is a file")


class Terminated(BaseException):
    """SIGTERM arrived while an ``atomic_directory`` was being built (raised so that its clean-up runs)."""


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike, replaces: Callable[[Path], bool] = lambda folder: False, kind: str = "output"
) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` as a whole.

    An existing ``path`` is replaced only after the new one is complete, and only when it is an
    empty folder or ``replaces(path)`` recognises it as an earlier output of the same writer (a
    ``kind``, named in the message); anything else raises ``OutputPathError`` and is left alone.
    A symbolic link at ``path`` stays: the folder is built where it points. On error, and on
    SIGTERM (raised as ``Terminated`` in the main thread), the temporary folder is removed and
    ``path`` is left as it was. Temporary folders of ``path`` left by a killed process of this
    host are removed first.
    """
    final = Path(path)
    if final.is_symlink():
        final = Path(os.path.realpath(final))
    check_replaceable(final, replaces, kind)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    with _sigterm_raises():
        tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(final), suffix=".tmp", dir=final.parent))
        try:
            yield tmp
            _fsync_dir(tmp)
            check_replaceable(final, replaces, kind)  # again: something may have been put there meanwhile
            if final.exists():
                old = Path(tempfile.mkdtemp(prefix=_temporary_prefix(final), suffix=".old", dir=final.parent))
                os.replace(final, old / final.name)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def check_replaceable(final: str | os.PathLike, replaces: Callable[[Path], bool], kind: str) -> None:
    """Raise ``OutputPathError`` unless ``final`` is absent, an empty folder or an earlier output (``replaces``): what
    ``atomic_directory`` checks, for a command to call before its work."""
    final = Path(final)
    if not os.path.lexists(final):
        return
    if final.is_symlink() or not final.is_dir():
        what = "a symbolic link" if final.is_symlink() else "a file" if final.is_file() else "not a folder"
        raise OutputPathError(f"refusing to replace {final}: it is {what}, not an earlier {kind}")
    try:
        entries = sorted(os.listdir(final))
    except OSError as error:
        raise OutputPathError(f"cannot read {final}: {error.strerror or error}") from None
    if not entries or replaces(final):
        return
    shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
    raise OutputPathError(
        f"refusing to replace {final}: it is a folder holding {shown}, not an earlier {kind}; "
        "choose another output folder or empty this one"
    )


def _temporary_prefix(final: Path) -> str:
    """``.NAME.HOST-PID.``: temporary folders name their host and process, so a later run can tell stale ones."""
    return f".{final.name}.{_host_tag()}-{os.getpid()}."


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Remove ``.NAME.HOST-PID.*.tmp`` / ``.old`` folders beside ``final`` whose process (on this host) is gone.

    Those of a process still running, or of another host (whose processes cannot be checked), stay.
    Returns the folders removed.
    """
    pattern = re.compile(rf"\.{re.escape(final.name)}\.([0-9a-f]{{8}})-([0-9]+)\.[a-z0-9_]+\.(?:tmp|old)")
    removed = []
    try:
        names = os.listdir(final.parent)
    except OSError:
        return removed
    host = _host_tag()
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or match.group(1) != host or _process_alive(int(match.group(2))):
            continue
        shutil.rmtree(final.parent / name, ignore_errors=True)
        removed.append(final.parent / name)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process
        return True
    return True


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Within this block SIGTERM (as SLURM and Snakemake send on cancel) raises ``Terminated`` in the main thread.

    The previous handler is put back when the block ends, and as soon as the signal arrives (so a
    second SIGTERM during the clean-up acts as it did before).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is None:  # a handler not installed from Python cannot be put back; the default is closest
        previous = signal.SIG_DFL

    def _raise(signum, frame):
        signal.signal(signal.SIGTERM, previous)
        raise Terminated(f"terminated by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _json_default(obj: Any) -> Any:
    """JSON fallback for numpy scalars/arrays and paths."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    for attribute in ("tolist", "item"):
        method = getattr(obj, attribute, None)
        if callable(method):
            return method()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")
