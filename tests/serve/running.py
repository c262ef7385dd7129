"""A real server process for the tests: `python -m captioning.serve` on a free loopback port."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from tests.helpers import REPO_ROOT

_ADDRESS = re.compile(r"Serving .* at (http://127\.0\.0\.1:\d+/)")


class RunningServer:
    """`python -m captioning.serve --port 0 ARGS`, with its own TMPDIR; `url` once it is up.

    Its stderr is read on a thread (kept in `lines`), so the process never blocks on it.
    """

    def __init__(self, *args, tmpdir: Path, startup_s: float = 240.0):
        self.tmpdir = Path(tmpdir)
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, TMPDIR=str(self.tmpdir), TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONWARNINGS="ignore")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "captioning.serve", "--host", "127.0.0.1", "--port", "0",
             *map(str, args)],
            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        self.lines = []
        found = queue.Queue()
        threading.Thread(target=self._read, args=(found,), daemon=True).start()
        try:
            self.url = found.get(timeout=startup_s)
        except queue.Empty:
            self.url = None
        if self.url is None:
            self.stop()
            raise RuntimeError("the server did not start:\n" + "".join(self.lines[-30:]))
        self._wait_for_health(startup_s)

    def _read(self, found):
        for line in self.process.stderr:
            self.lines.append(line)
            match = _ADDRESS.search(line)
            if match:
                found.put(match.group(1))
        found.put(None)

    def _wait_for_health(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(self.url + "health", timeout=5).ok:
                    return
            except requests.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
            time.sleep(0.2)

    def upload_folders(self):
        """The server's private upload folders under its TMPDIR."""
        return sorted(self.tmpdir.glob("captioning-serve-*"))

    def stop(self) -> int:
        """Ctrl+C, as a person would stop it; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def post_image(url, data: bytes, name="image.jpg", params=None, field="image", **kwargs):
    """POSTs `data` as the file of `field` to `url`caption; returns the response."""
    return requests.post(url + "caption", params=params, files={field: (name, data)},
                         timeout=120, **kwargs)
