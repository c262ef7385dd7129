"""BatchQueue with a stand-in model: requests that wait together are captioned together."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from captioning.errors import ConfigError
from captioning.inference import Caption
from captioning.serve.batching import BatchQueue, QueueClosed, QueueFull


class FakeModel:
    """Encodes to the pixels' mean; its caption is that number. `gate` holds each encoder
    call until the test opens it, so requests pile up meanwhile."""

    def __init__(self, fail_on=None):
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.encoded, self.searched, self.threads = [], [], set()
        self.fail_on = fail_on

    def encode(self, pixels):
        self.threads.add(threading.current_thread().name)
        self.started.set()
        self.gate.wait(30)
        self.encoded.append(len(pixels))
        return pixels.reshape(len(pixels), -1).mean(axis=1, keepdims=True)

    def captions(self, features, beam=1, top=1):
        self.searched.append((len(features), beam))
        if self.fail_on is not None and np.any(features == self.fail_on):
            raise RuntimeError("the model broke")
        return [Caption(image="", caption=f"{value:g}", score=-1.0,
                        alternatives=[(f"{value:g} #{k}", -1.0 - k) for k in range(top)],
                        words=[f"{value:g}"]) for value in features[:, 0]]


def _pixels(value):
    return np.full((2, 2, 3), value, np.float32)


def _held(model, batches):
    """Blocks the worker in an encoder call on a first request; returns its future."""
    model.gate.clear()
    first = batches.submit(_pixels(0))
    assert model.started.wait(30)
    return first


def test_requests_waiting_together_are_one_batch():
    model = FakeModel()
    with BatchQueue(model, max_batch=8, max_wait_ms=0) as batches:
        first = _held(model, batches)
        futures = [batches.submit(_pixels(value)) for value in range(1, 6)]
        model.gate.set()
        assert first.result(30).caption == "0"
        assert [future.result(30).caption for future in futures] == ["1", "2", "3", "4", "5"]
    assert model.encoded == [1, 5]
    assert model.threads == {"caption-batches"}


def test_a_lone_request_does_not_wait_for_company():
    model = FakeModel()
    with BatchQueue(model, max_wait_ms=600_000) as batches:  # ten minutes, if it waited
        assert batches.submit(_pixels(1)).result(60).caption == "1"


def test_a_batch_waits_for_the_requests_on_their_way():
    model = FakeModel()
    with BatchQueue(model, max_batch=8, max_wait_ms=600_000) as batches:
        with batches.expecting(), batches.expecting():
            first = batches.submit(_pixels(1))
            second = batches.submit(_pixels(2))
        assert [f.result(60).caption for f in (first, second)] == ["1", "2"]
        with batches.expecting():  # a request that will fail before it reaches the queue
            with batches.expecting():
                third = batches.submit(_pixels(3))
        assert third.result(60).caption == "3"  # not ten minutes later
    assert model.encoded == [2, 1]


def test_a_batch_holds_max_batch_requests_at_most():
    model = FakeModel()
    with BatchQueue(model, max_batch=4, max_wait_ms=0) as batches:
        _held(model, batches)
        futures = [batches.submit(_pixels(value)) for value in range(10)]
        model.gate.set()
        for future in futures:
            future.result(30)
        stats = batches.stats()
    assert model.encoded == [1, 4, 4, 2]
    assert (stats.batches, stats.images, stats.largest_batch) == (4, 11, 4)


def test_beams_share_the_encoder_call_and_each_top_is_kept():
    model = FakeModel()
    with BatchQueue(model, max_batch=8, max_wait_ms=0) as batches:
        _held(model, batches)
        greedy = batches.submit(_pixels(1), beam=1, top=1)
        wide = batches.submit(_pixels(2), beam=3, top=3)
        narrow = batches.submit(_pixels(3), beam=3, top=1)
        model.gate.set()
        assert len(greedy.result(30).alternatives) == 1
        assert [text for text, _ in wide.result(30).alternatives] == ["2 #0", "2 #1", "2 #2"]
        assert [text for text, _ in narrow.result(30).alternatives] == ["3 #0"]
    assert model.encoded == [1, 3]
    assert sorted(model.searched) == [(1, 1), (1, 1), (2, 3)]


def test_a_failing_batch_fails_its_requests_and_the_worker_goes_on():
    model = FakeModel(fail_on=7)
    with BatchQueue(model, max_batch=8, max_wait_ms=0) as batches:
        _held(model, batches)
        doomed = [batches.submit(_pixels(7)), batches.submit(_pixels(8))]
        model.gate.set()
        for future in doomed:
            with pytest.raises(RuntimeError, match="the model broke"):
                future.result(30)
        assert batches.submit(_pixels(9)).result(30).caption == "9"


def test_a_full_queue_refuses_at_once():
    model = FakeModel()
    with BatchQueue(model, max_batch=2, max_wait_ms=0, max_queue=3) as batches:
        _held(model, batches)
        waiting = [batches.submit(_pixels(1)) for _ in range(3)]
        with pytest.raises(QueueFull, match="3 requests waiting"):
            batches.submit(_pixels(2))
        model.gate.set()
        for future in waiting:
            future.result(30)


def test_a_closed_queue_finishes_what_it_has_and_refuses_more():
    model = FakeModel()
    batches = BatchQueue(model, max_batch=2, max_wait_ms=0)
    first = _held(model, batches)
    queued = batches.submit(_pixels(4))
    closing = threading.Thread(target=batches.close)
    closing.start()
    model.gate.set()
    closing.join(30)
    assert first.result(30).caption == "0" and queued.result(30).caption == "4"
    with pytest.raises(QueueClosed):
        batches.submit(_pixels(5))


def test_a_request_cancelled_while_waiting_is_skipped():
    model = FakeModel()
    with BatchQueue(model, max_batch=8, max_wait_ms=0) as batches:
        _held(model, batches)
        gone, kept = batches.submit(_pixels(1)), batches.submit(_pixels(2))
        assert gone.cancel()
        model.gate.set()
        assert kept.result(30).caption == "2"
    assert model.encoded == [1, 1]


@pytest.mark.parametrize("settings, shown", [
    (dict(max_batch=0), "max_batch must be a positive integer, got 0"),
    (dict(max_wait_ms=-1), "max_wait_ms must be a number >= 0, got -1"),
    (dict(max_queue=1.5), "max_queue must be a positive integer, got 1.5"),
])
def test_bad_settings_are_refused(settings, shown):
    with pytest.raises(ConfigError, match=shown):
        BatchQueue(FakeModel(), **settings)
