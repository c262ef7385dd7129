"""`BatchQueue`: requests that arrive together are captioned together, by one worker thread.

Each request hands over its decoded pixels and gets a `concurrent.futures.Future`. The one
worker thread owns the model: it takes the oldest waiting request and every other one
already waiting (up to `max_batch`), encodes them in one encoder call, and runs one compiled
search per beam width among them. While the model works, new requests queue up and form the
next batch, so under load the batches fill by themselves. Requests announce themselves
(`expecting`) while their upload is still being received and decoded: a batch waits for
those, up to `max_wait_ms`, and a lone request does not wait at all. The queue is bounded:
past `max_queue` waiting requests `submit` raises `QueueFull` at once, rather than holding
memory for them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import queue
import threading
import time

import numpy as np

from captioning.errors import CaptioningError
from captioning.utils.checks import check_int, check_number

logger = logging.getLogger(__name__)

_STOP = object()


class QueueFull(CaptioningError):
    """The server has `max_queue` requests waiting already; the client may retry."""


class QueueClosed(CaptioningError):
    """The queue was closed (the server is shutting down)."""


@dataclasses.dataclass
class _Request:
    pixels: np.ndarray
    beam: int
    top: int
    future: concurrent.futures.Future


@dataclasses.dataclass
class QueueStats:
    """What the queue has done so far: batches run, images captioned, the largest batch."""

    batches: int = 0
    images: int = 0
    largest_batch: int = 0
    waiting: int = 0


class BatchQueue:
    """Captions pixels in batches on one worker thread.

    Args:
        model: a `CaptionModel` (such as `captioning.inference.Captioner`): its `encode`
            and `captions` are only ever called from the worker thread.
        max_batch: images per batch at most.
        max_wait_ms: how long a batch waits for more requests after its first one.
        max_queue: waiting requests at most.

    Example:
    >>> with BatchQueue(captioner, max_batch=16) as batches:               # doctest: +SKIP
    ...     caption = batches.submit(pixels, beam=3, top=2).result()
    """

    def __init__(self, model, *, max_batch: int = 32, max_wait_ms: float = 5.0,
                 max_queue: int = 256):
        check_int("max_batch", max_batch, 1)
        check_number("max_wait_ms", max_wait_ms, 0)
        check_int("max_queue", max_queue, 1)
        self.model = model
        self.max_batch, self.max_wait = int(max_batch), float(max_wait_ms) / 1000.0
        self._queue = queue.Queue(maxsize=int(max_queue))
        self._stats = QueueStats()
        self._lock = threading.Lock()
        self._coming = 0  # requests on their way to `submit`
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="caption-batches",
                                        daemon=True)
        self._thread.start()

    def submit(self, pixels: np.ndarray, beam: int = 1, top: int = 1
               ) -> concurrent.futures.Future:
        """Queues one image's pixels (at the model's input size); returns a Future of its
        `Caption`, or of the exception that stopped its batch.

        Raises:
            QueueFull: `max_queue` requests are waiting already.
            QueueClosed: the queue was closed.
        """
        future = concurrent.futures.Future()
        if self._closed:
            raise QueueClosed("the server is shutting down")
        try:
            self._queue.put_nowait(_Request(pixels, int(beam), int(top), future))
        except queue.Full:
            raise QueueFull(f"the server has {self._queue.maxsize} requests waiting already; "
                            "retry in a moment") from None
        return future

    @contextlib.contextmanager
    def expecting(self):
        """While this is open, a batch being formed waits (up to `max_wait_ms`) for this
        request's `submit`: open it when the request arrives, submit inside it."""
        with self._lock:
            self._coming += 1
        try:
            yield self
        finally:
            with self._lock:
                self._coming -= 1

    def stats(self) -> QueueStats:
        with self._lock:
            return dataclasses.replace(self._stats, waiting=self._queue.qsize())

    def close(self, timeout: float | None = 30.0) -> None:
        """Stops the worker once the requests already queued are done."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _work(self):
        stop = False
        while not stop:
            batch, stop = self._next_batch()
            if batch:
                self._run(batch)
        while True:  # requests that slipped in while closing
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                item.future.set_exception(QueueClosed("the server is shutting down"))

    def _next_batch(self):
        """`(requests, stop)`: the oldest request, those waiting with it, and those expected
        that join it in time."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if self._coming == 0 or left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=min(left, 0.001))
                except queue.Empty:
                    continue
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self, batch):
        """One encoder call for the whole batch, then one search per beam width."""
        live = [request for request in batch if request.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            features = self.model.encode(np.stack([request.pixels for request in live]))
            by_beam = collections.defaultdict(list)
            for index, request in enumerate(live):
                by_beam[request.beam].append(index)
            for beam, rows in by_beam.items():
                top = max(live[i].top for i in rows)
                found = self.model.captions(features[rows], beam=beam, top=top)
                for i, caption in zip(rows, found):
                    caption.alternatives = (caption.alternatives or [])[:live[i].top]
                    live[i].future.set_result(caption)
        except Exception as error:  # the requests get it; the worker keeps serving
            logger.exception("captioning a batch of %d failed", len(live))
            for request in live:
                if not request.future.done():
                    request.future.set_exception(error)
        with self._lock:
            self._stats.batches += 1
            self._stats.images += len(live)
            self._stats.largest_batch = max(self._stats.largest_batch, len(live))
