"""Dynamic micro-batching: one inference thread per model scores queued images in batches.

Requests put images on a bounded queue and wait on futures. The model's thread takes up to
`max_batch` images as soon as that many are queued, or `max_wait` seconds after the oldest came
(or after the thread's own last batch ended, if later), and scores them in one call, so under
load the model sees full batches (throughput close to `oddspot predict`'s) and an idle service
answers one image after `max_wait`. A score never
depends on its batch (models pad batches to a fixed shape), so batching changes no result.

The queue is bounded in images and in decoded pixels: a submission that does not fit raises
`QueueFull` at once (the service answers 503 with Retry-After) instead of holding memory.
A job whose request gave up (timeout) is cancelled and skipped if it has not started.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oddspot.errors import OddspotError


class QueueFull(OddspotError):
    """The queue cannot take the images now; `retry_after` is a suggested wait in whole seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Job:
    """One image waiting for its batch; `future` gets `(result, timing)` or the exception."""

    image: np.ndarray
    maps: bool
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class Timing:
    """Where one image's time went, in seconds, and how many images shared its model call."""

    queue: float
    inference: float
    batch_size: int


class MicroBatcher:
    """A bounded queue and one thread that scores it with `infer(images, maps) -> list of per-image results`.

    `infer` must return one result per image, in order, and may raise; a failed batch of several
    images is retried one image at a time, so one bad image fails only its own request.
    `warmup`, when given, runs on the thread before the first batch; `ready` is set after it.
    `on_batch(size, seconds)` and `on_depth(depth)` report to metrics.
    """

    def __init__(self, infer: Callable[[list[np.ndarray], bool], Sequence[Any]], max_batch: int = 16,
                 max_wait: float = 0.005, capacity: int = 256, max_pixels: int | None = None,
                 warmup: Callable[[], None] | None = None, name: str = "model",
                 on_batch: Callable[[int, float], None] | None = None,
                 on_depth: Callable[[int], None] | None = None) -> None:
        if max_batch < 1 or capacity < 1 or max_wait < 0:
            raise OddspotError(f"micro-batcher: max_batch {max_batch} and capacity {capacity} must be >= 1, "
                               f"max_wait {max_wait} >= 0")
        self.infer, self.max_batch, self.max_wait, self.capacity = infer, max_batch, max_wait, capacity
        self.max_pixels = max_pixels
        self.name = name
        self._warmup = warmup
        self._on_batch = on_batch or (lambda size, seconds: None)
        self._on_depth = on_depth or (lambda depth: None)
        self._queue: deque[Job] = deque()
        self._pixels = 0
        self._cond = threading.Condition()
        self._running = True
        self._seconds_per_image = 0.0  # running estimate, for Retry-After
        self._free_since = 0.0  # when the last batch's results were handed back
        self.ready = threading.Event()
        self.failed: str | None = None
        self._thread = threading.Thread(target=self._loop, name=f"oddspot-infer-{name}", daemon=True)
        self._thread.start()

    # the request side -------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Images waiting (not yet taken into a batch)."""
        return len(self._queue)

    def retry_after(self, extra: int = 0) -> int:
        """Whole seconds after which the queue has likely drained enough for `extra` more images (>= 1)."""
        return max(1, math.ceil((len(self._queue) + extra) * self._seconds_per_image))

    def full(self) -> bool:
        """True when the queue holds `capacity` images already (the service sheds before reading a body)."""
        return len(self._queue) >= self.capacity

    def submit(self, images: Sequence[np.ndarray], maps: bool) -> list[Future]:
        """Queue all of `images` or none: `QueueFull` when they do not fit, an error once stopped."""
        pixels = sum(int(im.shape[0]) * int(im.shape[1]) for im in images)
        jobs = [Job(im, maps) for im in images]
        with self._cond:
            if not self._running:
                raise OddspotError(f"model {self.name}: the service is shutting down")
            if len(self._queue) + len(jobs) > self.capacity or (
                    self.max_pixels is not None and self._queue and self._pixels + pixels > self.max_pixels):
                raise QueueFull(f"model {self.name}: the queue is full ({len(self._queue)} images waiting); "
                                "retry later", self.retry_after(len(jobs)))
            self._queue.extend(jobs)
            self._pixels += pixels
            depth = len(self._queue)
            self._cond.notify()
        self._on_depth(depth)
        return [j.future for j in jobs]

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking work, fail what is still queued, and join the thread."""
        with self._cond:
            self._running = False
            left = list(self._queue)
            self._queue.clear()
            self._pixels = 0
            self._cond.notify_all()
        for job in left:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(OddspotError(f"model {self.name}: the service is shutting down"))
        self._on_depth(0)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # the model's thread ------------------------------------------------------------------------
    def _take(self) -> list[Job] | None:
        """The next batch: up to max_batch jobs once that many wait or the oldest waited max_wait; None once stopped."""
        with self._cond:
            while self._running and not self._queue:
                self._cond.wait()
            if not self._running:
                return None
            # Wait for a fuller batch until max_wait after the oldest image came, or after this thread came
            # back from its last batch: the clients just answered then get to send their next images into
            # this batch, instead of settling into half-full batches that alternate.
            deadline = max(self._queue[0].queued_at, self._free_since) + self.max_wait
            while self._running and len(self._queue) < self.max_batch:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            if not self._running:
                return None
            taken = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            self._pixels -= sum(int(j.image.shape[0]) * int(j.image.shape[1]) for j in taken)
            depth = len(self._queue)
        self._on_depth(depth)
        return [j for j in taken if j.future.set_running_or_notify_cancel()]

    def _run(self, jobs: list[Job]) -> None:
        started = time.perf_counter()
        try:
            results = list(self.infer([j.image for j in jobs], any(j.maps for j in jobs)))
            if len(results) != len(jobs):
                raise OddspotError(f"model {self.name} returned {len(results)} results for {len(jobs)} images")
        except Exception as exc:  # every failure goes back to its requests
            if len(jobs) > 1:
                for job in jobs:  # isolate the image that fails
                    self._run([job])
                return
            if not isinstance(exc, OddspotError):
                traceback.print_exception(exc, file=sys.stderr)
            jobs[0].future.set_exception(exc)
            return
        seconds = time.perf_counter() - started
        per_image = seconds / len(jobs)
        self._seconds_per_image = 0.8 * self._seconds_per_image + 0.2 * per_image if self._seconds_per_image else per_image
        self._on_batch(len(jobs), seconds)
        for job, result in zip(jobs, results):
            job.future.set_result((result, Timing(started - job.queued_at, seconds, len(jobs))))
        self._free_since = time.perf_counter()

    def _loop(self) -> None:
        try:
            if self._warmup is not None:
                self._warmup()
        except Exception as exc:  # reported by /readyz and at startup
            self.failed = f"warm-up failed: {exc}"
            traceback.print_exception(exc, file=sys.stderr)
        self.ready.set()
        while True:
            jobs = self._take()
            if jobs is None:
                return
            if jobs:
                self._run(jobs)
