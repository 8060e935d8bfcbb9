"""Decoding files in worker processes, so that a decoder crash or hang costs one file, not the run.

Each worker is a process (started from a ``forkserver`` that has imported decord and PyAV once)
that takes one file at a time over a pipe. A worker that dies while decoding a file (a segmentation
fault in a decoder library) or that runs past the per-file time limit is replaced, and that file is
reported as ``decoder_crash`` or ``decode_timeout``. The decoders' own log output (FFmpeg warnings)
goes to a per-worker log file; the tail written while a file was decoded is quoted when its
worker dies.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from dit.data.decode import ClipSettings, SkipReason, decode_clip

#: A decode task: (task index, absolute path, path relative to the source folder).
Task = tuple[int, str, str]
#: A result: (task index, "ok", DecodedClip) or (task index, "skip", (code, message)).
Result = tuple[int, str, Any]

_PRELOAD = ["dit.data.decode", "decord", "av", "numpy"]


def decode_task(task: Task, settings: ClipSettings, decode: Callable = decode_clip) -> Result:
    """Run one task in this process; every failure becomes a ``("skip", (code, message))`` result."""
    index, path, relative = task
    try:
        return index, "ok", decode(path, relative, settings)
    except SkipReason as reason:
        return index, "skip", (reason.code, reason.message)
    except Exception as error:  # a decoder error none of the checks anticipated
        return index, "skip", ("decode_error", f"{type(error).__name__}: {error}"[:300])


def _worker_main(connection: Connection, settings: dict, log_path: str, decode: Callable) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(log, 2)
    clip_settings = ClipSettings(**settings)
    connection.send("ready")
    while True:
        try:
            task = connection.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        connection.send(decode_task(task, clip_settings, decode))


class _Worker:
    def __init__(self, context, settings: ClipSettings, log_path: str, decode: Callable):
        self.log_path = log_path
        parent, child = context.Pipe(duplex=True)
        self.connection = parent
        self.process = context.Process(
            target=_worker_main, args=(child, asdict(settings), log_path, decode), daemon=True
        )
        self.process.start()
        child.close()
        self.task: Task | None = None
        self.started = 0.0
        self.log_offset = 0
        self.ready = False
        self.created = time.monotonic()

    def check_ready(self, startup_timeout_s: float) -> bool:
        """Whether the worker has started; raise ``RuntimeError`` if it died or took too long starting."""
        if self.ready:
            return True
        try:
            if self.connection.poll():
                message = self.connection.recv()
                if message != "ready":
                    raise RuntimeError(f"decoding worker sent {message!r} before 'ready'")
                self.ready = True
                return True
        except (EOFError, OSError):
            pass
        if not self.process.is_alive():
            self.process.join(timeout=1)
            tail = self.log_tail()
            raise RuntimeError(
                f"a decoding worker process failed to start (exit code {self.process.exitcode})"
                + (f": {tail}" if tail else "")
            )
        if time.monotonic() - self.created > startup_timeout_s:
            raise RuntimeError(f"a decoding worker process did not start within {startup_timeout_s:g} s")
        return False

    def assign(self, task: Task) -> None:
        self.task = task
        self.started = time.monotonic()
        self.log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        self.connection.send(task)

    def log_tail(self, limit: int = 300) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self.log_offset)
                text = handle.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""
        text = " | ".join(line.strip() for line in text.splitlines() if line.strip())
        return text[-limit:]

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.connection.send(None)
            except (OSError, BrokenPipeError):
                pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.connection.close()


class DecodePool:
    """Decode tasks in ``workers`` processes; ``workers=0`` decodes in this process (no crash protection).

    Args:
        settings: what to cut from each file.
        workers: number of worker processes.
        timeout_s: seconds one file may take before its worker is killed (worker start-up not included).
        decode: the function run per file, ``decode(path, relative_path, settings) -> DecodedClip``
            (must be importable by name, as it is sent to the workers).
        log_parent: folder in which the workers' log folder is made (default: the system's temporary folder);
            ``dit.data.prepare`` passes the output folder being built, so a killed run leaves no log folder behind.
    """

    def __init__(
        self,
        settings: ClipSettings,
        workers: int,
        timeout_s: float = 120.0,
        decode: Callable = decode_clip,
        log_parent: str | os.PathLike | None = None,
    ):
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.settings = settings
        self.workers = workers
        self.timeout_s = timeout_s
        self.decode = decode
        self.log_parent = log_parent
        self.startup_timeout_s = 300.0

    def run(self, tasks: Iterable[Task], window: int | None = None) -> Iterator[Result]:
        """Yield one result per task, in the order of ``tasks``.

        At most ``window`` tasks (default ``64 * workers``) are decoded ahead of the oldest
        unfinished one, which bounds the memory held by finished, not yet yielded results.
        """
        if self.workers == 0:
            for task in tasks:
                yield decode_task(task, self.settings, self.decode)
            return
        yield from self._run_in_workers(list(tasks), window or 64 * self.workers)

    def _run_in_workers(self, tasks: list[Task], window: int) -> Iterator[Result]:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        log_folder = Path(tempfile.mkdtemp(prefix="dit-decode-logs-", dir=self.log_parent))
        workers: list[_Worker] = []
        order = [task[0] for task in tasks]
        finished: dict[int, Result] = {}
        next_task = 0  # position in tasks of the next one to dispatch
        next_yield = 0  # position in order of the next result to yield
        try:
            for number in range(min(self.workers, len(tasks))):
                workers.append(_Worker(context, self.settings, str(log_folder / f"worker-{number}.log"), self.decode))
            while next_yield < len(order):
                for position, worker in enumerate(workers):
                    if worker.task is None and next_task < len(tasks) and next_task < next_yield + window:
                        if worker.ready and not worker.process.is_alive():  # died while idle: replace it
                            worker.stop(kill=True)
                            worker = workers[position] = _Worker(
                                context, self.settings, worker.log_path, self.decode
                            )
                        if worker.check_ready(self.startup_timeout_s):
                            worker.assign(tasks[next_task])
                            next_task += 1
                busy = [worker for worker in workers if worker.task is not None]
                starting = [worker for worker in workers if not worker.ready]
                if busy or starting:
                    deadlines = [w.started + self.timeout_s for w in busy] + [time.monotonic() + 1.0 for _ in starting]
                    waitables = [w.connection for w in busy + starting] + [w.process.sentinel for w in busy + starting]
                    wait(waitables, timeout=max(0.0, min(deadlines) - time.monotonic()))
                for position, worker in enumerate(workers):
                    if worker.task is None:
                        continue
                    result = self._collect(worker)
                    if result is None:
                        continue
                    finished[result[0]] = result
                    if result[1] == "skip" and result[2][0] in ("decoder_crash", "decode_timeout"):
                        worker.stop(kill=True)
                        workers[position] = _Worker(context, self.settings, worker.log_path, self.decode)
                    else:
                        worker.task = None
                while next_yield < len(order) and order[next_yield] in finished:
                    yield finished.pop(order[next_yield])
                    next_yield += 1
        finally:
            for worker in workers:
                worker.stop(kill=worker.task is not None)
            for log in log_folder.glob("*"):
                log.unlink()
            log_folder.rmdir()

    def _collect(self, worker: _Worker) -> Result | None:
        """The worker's result if it has one, a crash/timeout result if it failed, else None."""
        task = worker.task
        assert task is not None
        try:
            if worker.connection.poll():
                return worker.connection.recv()
        except (EOFError, OSError):
            pass  # the worker died; reported below
        if not worker.process.is_alive():
            worker.process.join(timeout=1)
            code = worker.process.exitcode
            if code is not None and code < 0:
                how = f"signal {signal.Signals(-code).name}"
            else:
                how = f"exit code {code}"
            tail = worker.log_tail()
            message = f"decoding process died ({how})" + (f"; decoder log: {tail}" if tail else "")
            return task[0], "skip", ("decoder_crash", message)
        if time.monotonic() - worker.started > self.timeout_s:
            return task[0], "skip", ("decode_timeout", f"no result after {self.timeout_s:g} s")
        return None
