"""The ``local`` executor: jobs run in child processes of one runner on this machine.

The API side (``LocalExecutor``, in every gunicorn worker) records a job and pokes the
runner through a named pipe in the jobs folder. The runner (``LocalRunner``, one process
next to gunicorn) keeps a pool of warm job processes, as many as jobs may run at once
(TensorFlow imported and every code path walked), hands each QUEUED job to a warm one and
starts a fresh one in its place, so no job waits for TensorFlow. Once the whole pool is warm
it writes its pid into ``.runner-ready`` (``pool_warm``, for ``/readyz``).

One loop waits on the poke pipe, the children's pidfds, the signal pipe and the nearest
time limit. Coordination is local only: an ``flock`` makes one runner per store the active
one (another waits as a standby), state changes take the job book's local lock, and a child
dies with the runner (``PR_SET_PDEATHSIG``): the store must be on this machine's disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, cast

from filelock import FileLock, Timeout

from squarenet.store import local_lock
from trainer_service.lifecycle import EndReason, RunState
from trainer_service.params import TrainingParams
from trainer_service.runner import fence
from trainer_service.runner.book import (
    CANCELLED,
    MAX_RESUMES,
    TIME_LIMIT,
    Ending,
    Job,
    JobBook,
)

_log = logging.getLogger("trainer_service.runner")
WAKE_FIFO = ".wake"
RUNNER_LOCK = ".runner.lock"
READY_FILE = ".runner-ready"
_IDLE_SECONDS = 5.0  # a look at the store now and then, in case a poke was missed
_STANDBY_SECONDS = 1.0


def pool_warm(book: JobBook, alive: Callable[[int], bool]) -> bool:
    """True once the store's active runner (alive by ``alive(pid)``) has had its whole pool of
    job processes warm; a standby runner's replica is ready by the active one's pool."""
    try:
        pid = int((book.files.root / READY_FILE).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return False
    return alive(pid)


def poke(book: JobBook) -> None:
    """Wake the runner on this machine (if none listens, it finds the job when it starts)."""
    try:
        fd = os.open(book.files.root / WAKE_FIFO, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # no runner listening (ENXIO), or no pipe yet (ENOENT)
        return
    try:
        with contextlib.suppress(BlockingIOError):  # a pipe full of pokes: it is awake anyway
            os.write(fd, b"\n")
    finally:
        os.close(fd)


class LocalExecutor:
    """The API's side of the ``local`` executor."""

    def __init__(self, book: JobBook) -> None:
        self.book = book

    def submit(
        self, params: TrainingParams, *, job_id: str | None = None, sweep_id: str | None = None
    ) -> Job:
        job = self.book.submit(params, job_id=job_id, sweep_id=sweep_id)
        poke(self.book)
        return job

    def cancel(self, job_id: str) -> Job:
        """A QUEUED job ends CANCELLED here; a RUNNING one when the runner, poked now, has
        killed it: the job as it is is returned without waiting for that."""
        self.book.request_cancel(job_id)
        job = self.book.finish(job_id, CANCELLED, only_if=RunState.QUEUED)
        if job is not None:
            return job
        poke(self.book)
        return self.book.cancelled_or_running(job_id)


@dataclass
class WarmProcess:
    """The runner's side of one job process: started warm, assigned one job, then reaped."""

    process: subprocess.Popen[bytes]
    stdin: IO[bytes]  # the assignment pipe
    pidfd: int
    ready_fd: int = -1  # readable once the process is warm (or gone)
    ready: bool = False
    deadline: float = field(default=float("inf"))
    ending: Ending | None = None  # set once the runner has stopped it

    @classmethod
    def start(cls, book: JobBook) -> WarmProcess:
        """A new job process that imports TensorFlow now and waits for its job."""
        ready_read, ready_write = os.pipe()
        command = [
            sys.executable,
            *("-m", "trainer_service.runner.job_process", "--warm", "--ready-fd", str(ready_write)),
            *("--model-store", str(book.store.root), "--parent-pid", str(os.getpid())),
        ]
        try:
            process = subprocess.Popen(  # noqa: S603 - our own module, no shell
                command, stdin=subprocess.PIPE, start_new_session=True, pass_fds=(ready_write,)
            )
        finally:
            os.close(ready_write)
        os.set_blocking(ready_read, False)
        stdin = cast("IO[bytes]", process.stdin)  # never None: stdin=PIPE
        return cls(process, stdin, os.pidfd_open(process.pid), ready_read)

    def check_ready(self) -> bool:
        """Whether the process has said it is warm (read without blocking)."""
        if self.ready_fd >= 0:
            try:
                said = os.read(self.ready_fd, 16)
            except BlockingIOError:
                return False
            os.close(self.ready_fd)
            self.ready_fd = -1
            self.ready = bool(said)  # end of file without a word: it died warming up
        return self.ready

    def assign(self, job: Job) -> None:
        """Hand the process its job; its time limit starts now."""
        self.deadline = time.monotonic() + job.params.max_train_seconds
        line = json.dumps({"job_id": job.id, "params": job.params.model_dump(mode="json")})
        try:
            self.stdin.write(line.encode() + b"\n")
            self.stdin.flush()
        except BrokenPipeError:
            pass  # it died while warming up: its exit is noticed and the job fails with it

    def exited(self) -> bool:
        return self.process.poll() is not None

    def stop(self) -> int:
        """SIGKILL the process (if alive), reap it, and return its exit status (idempotent)."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        code = self.process.wait()
        if self.pidfd >= 0:
            with contextlib.suppress(OSError):
                self.stdin.close()
            os.close(self.pidfd)
            self.pidfd = -1
        if self.ready_fd >= 0:
            os.close(self.ready_fd)
            self.ready_fd = -1
        return code


def describe_exit(returncode: int) -> str:
    """Why a job process ended without reporting a result."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if returncode == -signal.SIGKILL else ""
        return f"training process killed by {name}{hint}"
    return f"training process exited with status {returncode} without a result"


class LocalRunner:
    """Runs QUEUED jobs, at most ``max_concurrent`` at once, each in its own process."""

    def __init__(
        self, book: JobBook, max_concurrent: int, sweeps: Callable[[], None] | None = None
    ) -> None:
        self.book = book
        self.max_concurrent = max_concurrent
        self.sweeps = sweeps  # the sweep controller's periodic pass, before QUEUED jobs start
        self.running: dict[str, WarmProcess] = {}
        self.spares: list[WarmProcess] = []  # the pool: max_concurrent processes, warm or warming
        self.announced_warm = False
        self.stopping = False
        self.parent_pid = os.getppid()

    def run(self) -> int:
        """Run until SIGTERM / SIGINT (or the launcher is gone); return 0."""
        signal_read, signal_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(signal_write, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        root = self.book.files.root
        root.mkdir(parents=True, exist_ok=True)
        runner_lock = local_lock(root / RUNNER_LOCK)
        if not self._become_active(runner_lock, signal_read):
            return 0
        with contextlib.suppress(FileExistsError):
            os.mkfifo(root / WAKE_FIFO, 0o660)
        wake = os.open(root / WAKE_FIFO, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        _log.info("local runner %d active on %s", os.getpid(), self.book.store.root)
        try:
            self._recover()
            while not self.stopping:
                self._tick()
                self._wait([wake, signal_read])
        finally:
            self._shutdown()
            runner_lock.release()
        _log.info("local runner stopped")
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _become_active(self, runner_lock: FileLock, signal_read: int) -> bool:
        """Hold the store's runner lock; wait as a standby while another runner has it."""
        announced = False
        while not self.stopping:
            try:
                runner_lock.acquire(blocking=False)
                return True
            except Timeout:
                if not announced:
                    _log.info("local runner %d: standby, another runner has the store", os.getpid())
                    announced = True
                self._wait([signal_read], _STANDBY_SECONDS)
        return False

    def _recover(self) -> None:
        """Jobs RUNNING under a runner that is gone go back to the queue and resume from
        their checkpoints; one lost ``MAX_RESUMES`` times already fails (it may be what
        brings the trainer down)."""
        for job in self.book.unfinished():
            if job.state is RunState.RUNNING and job.resumes < MAX_RESUMES:
                self.book.requeue(job.id, "its job runner was lost")
            elif job.state is RunState.RUNNING:
                reason = (
                    "trainer process lost: the job runner stopped while the job was training "
                    f"(it had resumed {job.resumes} times)"
                )
                self.book.finish(job.id, Ending("failed", reason, EndReason.LOST))
        # no job process of ours exists yet: a requeued job's stale staging folder goes too
        fence.sweep(self.book.store, running=set())

    def _wait(self, fds: list[int], timeout: float | None = None) -> None:
        """Sleep until a poke, a signal, a child's exit, or the nearest time limit."""
        if timeout is None:
            deadlines = [child.deadline for child in self.running.values()]
            timeout = max(
                0.0, min([time.monotonic() + _IDLE_SECONDS, *deadlines]) - time.monotonic()
            )
        children = [child.pidfd for child in [*self.running.values(), *self.spares]]
        children += [spare.ready_fd for spare in self.spares]
        with contextlib.suppress(InterruptedError):
            watched = [*fds, *(fd for fd in children if fd >= 0)]
            readable, _, _ = select.select(watched, [], [], timeout)
            for fd in set(readable) & set(fds):
                with contextlib.suppress(BlockingIOError):
                    os.read(fd, 4096)

    def _tick(self) -> None:
        if os.getppid() != self.parent_pid:
            _log.warning("local runner: the trainer that started it is gone, stopping")
            self.stopping = True
            return
        try:
            unfinished, cancelled = self._unfinished()
            self._check_running(cancelled)  # the one place the cancel path reads
            if self.sweeps is not None:
                self.sweeps()  # may release trials or cancel some: read the book again
                unfinished, cancelled = self._unfinished()
            self._start_queued(unfinished, cancelled)
        except OSError as exc:  # the store may be briefly unavailable: keep going
            _log.error("local runner: store error, retrying: %s", exc)
        self._keep_pool()

    def _keep_pool(self) -> None:
        """Replace spares that died, top the pool up, and say so once all of it is warm."""
        for spare in [spare for spare in self.spares if spare.exited()]:
            _log.warning("local runner: warm job process %d exited; starting another",
                         spare.process.pid)  # fmt: skip
            spare.stop()
            self.spares.remove(spare)
        while len(self.spares) < self.max_concurrent and not self.stopping:
            self.spares.append(WarmProcess.start(self.book))
        warm = sum(spare.check_ready() for spare in self.spares)
        if not self.announced_warm and warm == self.max_concurrent:
            path = self.book.files.root / READY_FILE
            temporary = path.with_suffix(".tmp")
            temporary.write_text(str(os.getpid()), encoding="ascii")
            temporary.replace(path)
            self.announced_warm = True
            _log.info("local runner: %d warm job processes ready", warm)

    def _take_spare(self) -> WarmProcess:
        """A warm spare if there is one, else the one warming longest, else a new process."""
        for spare in self.spares:
            if spare.check_ready():
                self.spares.remove(spare)
                return spare
        return self.spares.pop(0) if self.spares else WarmProcess.start(self.book)

    def _unfinished(self) -> tuple[list[Job], set[str]]:
        """The book's QUEUED and RUNNING jobs, and which of them a cancel was asked for."""
        unfinished = self.book.unfinished()
        return unfinished, {job.id for job in unfinished if self.book.cancel_requested(job.id)}

    def _check_running(self, cancelled: set[str]) -> None:
        """End jobs whose process exited, that were cancelled, or that ran out of time."""
        now = time.monotonic()
        for job_id, child in list(self.running.items()):
            if child.exited() or child.ending is not None:
                self._end(job_id, None)
            elif job_id in cancelled:
                self._end(job_id, CANCELLED)
            elif now >= child.deadline:
                self._end(job_id, TIME_LIMIT)

    def _start_queued(self, unfinished: list[Job], cancelled: set[str]) -> None:
        for job in unfinished:
            if job.state is not RunState.QUEUED:
                continue
            if job.id in cancelled:
                self.book.finish(job.id, CANCELLED, only_if=RunState.QUEUED)
                continue
            if len(self.running) >= self.max_concurrent or self.stopping:
                return
            started = self.book.start(job.id)
            if started is None:
                continue  # cancelled meanwhile
            child = self._take_spare()
            child.assign(started)
            self.running[job.id] = child
            _log.info("job %s assigned to process %d", job.id, child.process.pid)

    def _end(self, job_id: str, ending: Ending | None) -> None:
        """Stop the job's process (it can no longer publish once reaped) and settle the job.

        Should the store fail while settling, the job stays here and the next tick retries.
        """
        child = self.running[job_id]
        code = child.stop()
        child.ending = child.ending or ending or Ending("exited", describe_exit(code))
        self.book.finish(job_id, child.ending)
        del self.running[job_id]

    def _shutdown(self) -> None:
        """Stop every process; a job that was training goes back to the queue and resumes
        from its checkpoint when a runner starts again (a trainer restart loses at most
        ``SAVE_SECONDS`` of its training)."""
        for job_id, child in list(self.running.items()):
            _log.info("job %s: interrupted by shutdown", job_id)
            try:
                child.stop()
                if self.book.files.read_report(job_id).result is not None:
                    self._end(job_id, None)  # it ended by itself meanwhile: settle it
                    continue
                del self.running[job_id]
                self.book.requeue(job_id, "the trainer is shutting down")  # unless settled
            except OSError as exc:  # the next runner requeues it as lost
                _log.error("job %s: could not record the interruption: %s", job_id, exc)
        for spare in self.spares:
            spare.stop()
        self.spares = []
        if self.announced_warm:
            with contextlib.suppress(OSError):
                (self.book.files.root / READY_FILE).unlink()
