"""A bounded local load test: 32 clients at once, 192 requests, on the loopback address."""

from __future__ import annotations

import concurrent.futures
import threading

import requests

from tests.serve.conftest import EXAMPLES
from tests.serve.running import post_image

CLIENTS = 32
REQUESTS = 192


def test_concurrent_clients_get_the_captions_of_one_at_a_time(server):
    images = {path.name: path.read_bytes() for path in EXAMPLES}
    settings = {"greedy": {}, "beam": {"beam": 3, "top": 2}}
    alone = {(name, kind): post_image(server.url, data, name, params=params).json()
             for name, data in images.items() for kind, params in settings.items()}
    before = requests.get(server.url + "health", timeout=30).json()["queue"]

    jobs = [(name, kind) for name in images for kind in settings] * (REQUESTS // 12)
    sessions = {}

    def send(job):
        name, kind = job
        session = sessions.setdefault(threading.get_ident(),
                                      requests.Session())
        response = session.post(server.url + "caption", params=settings[kind],
                                files={"image": (name, images[name])}, timeout=300)
        return job, response.status_code, response.json()

    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(send, jobs))
    for session in sessions.values():
        session.close()

    assert len(answers) == REQUESTS
    for job, status, result in answers:
        assert status == 200, result
        assert result["caption"] == alone[job]["caption"]
        assert [b["caption"] for b in result["alternatives"]] == [
            b["caption"] for b in alone[job]["alternatives"]]
    after = requests.get(server.url + "health", timeout=30).json()["queue"]
    assert after["images"] - before["images"] == REQUESTS
    # Requests that arrived together were captioned together.
    assert after["batches"] - before["batches"] < REQUESTS
    assert after["largest_batch"] > 1
    assert after["waiting"] == 0
