"""Progress of a cache build: a bar on a terminal, log lines elsewhere."""

from __future__ import annotations

import logging
import time

from captioning.errors import ConfigError

logger = logging.getLogger(__name__)

_SECONDS = 30.0


def check_progress(progress) -> None:
    """Refuses a `progress` argument other than True, False, None, `"bar"` or `"log"`."""
    if not (progress is None or isinstance(progress, bool)
            or (isinstance(progress, str) and progress in ("bar", "log"))):
        raise ConfigError(f"progress must be True, False, 'bar' or 'log', got {progress!r}")


class Progress:
    """Counts images done and shows it.

    Args:
        total: the images to do.
        mode: `True` or `"bar"` for a tqdm bar; `"log"` for an INFO line every 10% or 30 s
            (for logs and `nohup` runs); `False` or None for nothing.
        desc: what is done, the bar's label and the lines' prefix.
    """

    def __init__(self, total: int, mode, desc: str = "caching"):
        self.total, self.done, self.desc = total, 0, desc
        self.mode = "bar" if mode is True else (mode or None)
        self.started = self.last = time.monotonic()
        self.next_mark = 0.1
        self.bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="img", desc=desc, smoothing=0.1)

    def update(self, n: int) -> None:
        """Counts `n` more images done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.mode == "log" and self.total:
            now = time.monotonic()
            if (self.done / self.total >= self.next_mark or now - self.last >= _SECONDS
                    or self.done == self.total):
                while self.done / self.total >= self.next_mark:
                    self.next_mark += 0.1
                self.last = now
                self._log(now)

    def _log(self, now: float) -> None:
        rate = self.done / max(now - self.started, 1e-9)
        left = (self.total - self.done) / max(rate, 1e-9)
        logger.info("%s: %d/%d images (%.0f%%), %.1f images/s, %s left", self.desc,
                    self.done, self.total, 100 * self.done / self.total, rate,
                    duration(left))

    def close(self) -> None:
        """Closes the bar, if there is one."""
        if self.bar is not None:
            self.bar.close()


def duration(seconds: float) -> str:
    """A duration for people: `"42s"`, `"3m 05s"`, `"2h 07m"`."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"
