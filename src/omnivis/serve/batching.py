"""Dynamic micro-batching: concurrent requests to one model become one model call.

Each model has one queue and one worker thread. The worker takes the oldest waiting request, waits
up to ``max_wait_ms`` for more (or until ``max_batch`` are there), runs them as one batch off the
event loop, and hands each request its own result. The queue is bounded: a full queue answers 503
at once instead of letting latency grow without limit. A request whose client has gone, or that
timed out, is cancelled and skipped before it reaches the model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from omnivis.serve.api_errors import ApiError


@dataclass
class Job:
    """One request's work: what the model runs, and where its answer goes."""

    item: Any
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    started: float | None = None
    finished: float | None = None


@dataclass
class BatchPolicy:
    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_queue: int = 64


class MicroBatcher:
    """Collects jobs for one model and runs them in batches with ``run_batch(items) -> results``.

    ``run_batch`` runs in the model's own thread and returns one result per item; a result that is
    an exception is raised to that request only. ``observe(batch_size, queue_s, model_s)`` and
    ``dropped(reason)`` report to the metrics.
    """

    def __init__(self, name: str, run_batch: Callable[[list], list], policy: BatchPolicy,
                 observe: Callable[[int, list[float], float], None] | None = None,
                 dropped: Callable[[str], None] | None = None) -> None:
        self.name, self.run_batch, self.policy = name, run_batch, policy
        self.observe, self.dropped = observe, dropped
        self.waiting: deque[Job] = deque()
        self.running = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"omnivis-{name}")

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for job in self.waiting:
            if not job.future.done():
                job.future.set_exception(ApiError(503, "the server is shutting down", headers={"Retry-After": "1"}))
        self.waiting.clear()
        self._executor.shutdown(wait=True)

    def check_room(self) -> None:
        """A 503 with Retry-After when the model is not running or its queue is full; routes call it
        before decoding an upload, so a full queue costs no work."""
        if self._task is None or self._task.done():
            raise ApiError(503, f"model '{self.name}' is not running", headers={"Retry-After": "1"})
        if len(self.waiting) >= self.policy.max_queue:
            if self.dropped:
                self.dropped("queue_full")
            raise ApiError(503, f"model '{self.name}' is busy: {len(self.waiting)} requests are waiting; try again",
                           headers={"Retry-After": "1"})

    def submit(self, item: Any) -> Job:
        """Queue ``item``; a full queue is a 503 with Retry-After, answered before any work is done."""
        self.check_room()
        job = Job(item, asyncio.get_running_loop().create_future())
        self.waiting.append(job)
        self._wake.set()
        return job

    def withdraw(self, job: Job, reason: str) -> None:
        """Cancel ``job`` (timed out, or its client left) and free its place in the queue at once."""
        job.future.cancel()
        try:
            self.waiting.remove(job)
        except ValueError:  # already taken into a batch: its answer is dropped when it comes
            return
        if self.dropped:
            self.dropped(reason)

    def _take(self) -> list[Job]:
        batch = []
        while self.waiting and len(batch) < self.policy.max_batch:
            job = self.waiting.popleft()
            if job.future.done():  # cancelled: its client went away or it timed out while waiting
                if self.dropped:
                    self.dropped("cancelled")
                continue
            batch.append(job)
        return batch

    async def _loop(self) -> None:
        while True:
            try:
                await self._next_batch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never expected; the worker must outlive it, or the model hangs
                logging.getLogger("omnivis.serve").exception("model '%s': batch loop error: %s", self.name, exc)

    async def _next_batch(self) -> None:
        """Wait for work, gather a batch, run it in the model's thread, hand out the answers."""
        if not self.waiting:
            self._wake.clear()
            await self._wake.wait()
            return
        deadline = self.waiting[0].enqueued + self.policy.max_wait_ms / 1000.0
        while len(self.waiting) < self.policy.max_batch and (left := deadline - time.perf_counter()) > 0:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=left)
            except asyncio.TimeoutError:
                break
        batch = self._take()
        if not batch:
            return
        start = time.perf_counter()
        for job in batch:
            job.started = start
        self.running = len(batch)
        try:
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self._executor, self.run_batch, [job.item for job in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"the model answered {len(results)} of {len(batch)} requests")
        except Exception as exc:  # the whole batch failed: every request in it gets the error
            results = [exc] * len(batch)
        finally:
            self.running = 0
        end = time.perf_counter()
        for job, result in zip(batch, results):
            job.finished = end
            if job.future.done():  # withdrawn while its batch ran
                continue
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)
        if self.observe:
            self.observe(len(batch), [start - job.enqueued for job in batch], end - start)
