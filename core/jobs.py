"""The job queue and the one worker thread that owns the device.

Every browser session submits to the same FIFO queue, stored in SQLite so that queued jobs
survive a restart. The worker runs one job at a time and reports progress by writing to the
job's row; pages poll that row and never wait on GPU work themselves.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.db import Database
from core.device import is_out_of_memory

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


class StudioError(Exception):
    """A failure with a message written for the musician; the cause stays in the log."""


class JobCancelled(Exception):
    pass


@dataclass
class Job:
    id: str
    kind: str
    status: str
    payload: dict[str, Any]
    created: float
    started: float | None = None
    finished: float | None = None
    phase: str = ""
    step: int = 0
    total_steps: int = 0
    phase_started: float | None = None
    message: str = ""
    partial_text: str = ""
    plan: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    cancel_requested: bool = False
    position: int | None = None

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def fraction(self) -> float:
        if self.status == DONE:
            return 1.0
        return self.step / self.total_steps if self.total_steps else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left in the current phase, from its pace so far."""
        if self.status != RUNNING or not self.step or not self.phase_started:
            return None
        per_step = (time.time() - self.phase_started) / self.step
        return per_step * max(self.total_steps - self.step, 0)

    @property
    def elapsed(self) -> float:
        if not self.started:
            return 0.0
        return (self.finished or time.time()) - self.started


class JobContext:
    """What a running job may do: report progress, stream text, and notice a cancel."""

    def __init__(self, queue: JobQueue, job: Job):
        self.queue = queue
        self.job = job
        self.job_id = job.id
        self._phase = ""

    def progress(self, phase: str, step: int, total: int) -> None:
        now = time.time()
        if phase != self._phase:
            self._phase = phase
            self.queue._update(self.job_id, phase=phase, phase_started=now)
        self.queue._update(self.job_id, step=step, total_steps=total)
        self.check_cancelled()

    def note(self, message: str) -> None:
        self.queue._update(self.job_id, message=message)

    def stream_text(self, text: str) -> None:
        self.queue._update(self.job_id, partial_text=text)
        self.check_cancelled()

    def set_plan(self, plan: dict[str, Any]) -> None:
        self.queue._update(self.job_id, plan_json=json.dumps(plan, ensure_ascii=False))

    def record_timing(self, name: str, seconds: float) -> None:
        self.job.timings[name] = round(self.job.timings.get(name, 0.0) + seconds, 3)
        self.queue._update(self.job_id, timings_json=json.dumps(self.job.timings))

    @property
    def cancel_requested(self) -> bool:
        return self.queue.cancel_requested(self.job_id)

    def check_cancelled(self) -> None:
        if self.cancel_requested:
            raise JobCancelled


Handler = Callable[[JobContext, dict[str, Any]], dict[str, Any]]


class JobQueue:
    def __init__(self, db: Database):
        self.db = db
        self._wakeup = threading.Event()
        self._recover()

    def submit(self, kind: str, payload: dict[str, Any]) -> Job:
        job_id = uuid.uuid4().hex[:12]
        with self.db.transaction() as conn:
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            conn.execute(
                "INSERT INTO jobs (id, seq, kind, status, payload_json, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, seq, kind, QUEUED, json.dumps(payload, ensure_ascii=False), time.time()),
            )
        self._wakeup.set()
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        rows = self.db.query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            return None
        job = _job(rows[0])
        if job.status == QUEUED:
            job.position = self.position(job)
        return job

    def position(self, job: Job) -> int:
        """1 for the next job to run; the running job is not counted."""
        row = self.db.query(
            "SELECT COUNT(*) FROM jobs WHERE status = ? AND seq <= (SELECT seq FROM jobs WHERE id = ?)",
            (QUEUED, job.id),
        )
        return int(row[0][0])

    def recent(self, limit: int = 20, kinds: tuple[str, ...] | None = None) -> list[Job]:
        if kinds:
            marks = ",".join("?" for _ in kinds)
            rows = self.db.query(
                f"SELECT * FROM jobs WHERE kind IN ({marks}) ORDER BY seq DESC LIMIT ?",
                (*kinds, limit),
            )
        else:
            rows = self.db.query("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        return [_job(row) for row in rows]

    def active(self) -> list[Job]:
        rows = self.db.query(
            "SELECT * FROM jobs WHERE status IN (?, ?) ORDER BY seq", (RUNNING, QUEUED)
        )
        return [_job(row) for row in rows]

    def cancel(self, job_id: str) -> bool:
        """A queued job is cancelled at once; a running one stops at its next step."""
        if self.db.execute(
            "UPDATE jobs SET status = ?, finished = ? WHERE id = ? AND status = ?",
            (CANCELLED, time.time(), job_id, QUEUED),
        ):
            return True
        return bool(
            self.db.execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = ?",
                (job_id, RUNNING),
            )
        )

    def cancel_requested(self, job_id: str) -> bool:
        rows = self.db.query("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
        return bool(rows and rows[0][0])

    def claim_next(self) -> Job | None:
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT id FROM jobs WHERE status = ? ORDER BY seq LIMIT 1", (QUEUED,)
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET status = ?, started = ? WHERE id = ?",
                (RUNNING, time.time(), row["id"]),
            )
        return self.get(row["id"])

    def wait_for_work(self, timeout: float) -> None:
        self._wakeup.wait(timeout)
        self._wakeup.clear()

    def wake(self) -> None:
        self._wakeup.set()

    def finish(
        self, job_id: str, status: str, *, result: Any = None, error: str | None = None
    ) -> None:
        self._update(
            job_id,
            status=status,
            finished=time.time(),
            result_json=json.dumps(result, ensure_ascii=False) if result is not None else None,
            error=error,
        )

    def _update(self, job_id: str, **columns: Any) -> None:
        assignments = ", ".join(f"{name} = ?" for name in columns)
        self.db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*columns.values(), job_id))

    def _recover(self) -> None:
        """A job that was running when the Studio stopped cannot resume mid-step."""
        self.db.execute(
            "UPDATE jobs SET status = ?, finished = ?, error = ? WHERE status = ?",
            (
                FAILED,
                time.time(),
                "The Studio restarted while this job was running. Press Retry to run it again.",
                RUNNING,
            ),
        )


def _job(row: Any) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        status=row["status"],
        payload=json.loads(row["payload_json"]),
        created=row["created"],
        started=row["started"],
        finished=row["finished"],
        phase=row["phase"],
        step=row["step"],
        total_steps=row["total_steps"],
        phase_started=row["phase_started"],
        message=row["message"],
        partial_text=row["partial_text"],
        plan=json.loads(row["plan_json"]) if row["plan_json"] else None,
        result=json.loads(row["result_json"]) if row["result_json"] else None,
        error=row["error"],
        timings=json.loads(row["timings_json"] or "{}"),
        cancel_requested=bool(row["cancel_requested"]),
    )


def describe_error(error: BaseException, device: str = "cuda") -> str:
    """The message a musician sees for a failed job."""
    from core.models import ModelError

    if isinstance(error, (StudioError, ModelError)):
        return str(error)
    if is_out_of_memory(error):
        where = "GPU" if device in ("cuda", "mps") else "machine"
        return (
            f"The {where} ran out of memory. Try a shorter song or fewer takes, or start the "
            "Studio with ACE_STUDIO_OFFLOAD=model. Nothing was lost; the next job will run."
        )
    return f"The job failed: {type(error).__name__}: {error}"


class Worker(threading.Thread):
    """Runs queued jobs one at a time, forever; a failing job never stops it."""

    def __init__(
        self,
        queue: JobQueue,
        handlers: dict[str, Handler],
        *,
        device: str = "cpu",
        on_idle: Callable[[], None] | None = None,
        on_error: Callable[[], None] | None = None,
    ):
        super().__init__(name="studio-worker", daemon=True)
        self.queue = queue
        self.handlers = handlers
        self.device = device
        self.on_idle = on_idle
        self.on_error = on_error
        self._stop_event = threading.Event()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop_event.set()
        self.queue.wake()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        if self.on_idle is not None:
            self._safely(self.on_idle)
        while not self._stop_event.is_set():
            job = self.queue.claim_next()
            if job is None:
                self.queue.wait_for_work(0.5)
                continue
            self.run_job(job)

    def run_job(self, job: Job) -> None:
        handler = self.handlers.get(job.kind)
        context = JobContext(self.queue, job)
        try:
            if handler is None:
                raise StudioError(f"This Studio cannot run {job.kind!r} jobs.")
            result = handler(context, job.payload)
        except JobCancelled:
            self.queue.finish(job.id, CANCELLED)
        except BaseException as error:
            log.error("job %s (%s) failed:\n%s", job.id, job.kind, traceback.format_exc())
            self.queue.finish(job.id, FAILED, error=describe_error(error, self.device))
            if self.on_error is not None:
                self._safely(self.on_error)
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            self.queue.finish(job.id, DONE, result=result)

    def _safely(self, hook: Callable[[], None]) -> None:
        try:
            hook()
        except Exception:
            log.exception("worker hook failed")
