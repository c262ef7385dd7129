"""`ServeSettings`: what the server accepts and how it batches, checked in one place."""

from __future__ import annotations

import dataclasses

from captioning.errors import ConfigError
from captioning.utils.checks import check_int, check_number

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """The server's limits and batching settings.

    Attributes:
        max_upload_mb: the largest image upload in MiB; a bigger one is refused with 413 as
            soon as its bytes pass the limit (or at once from its `Content-Length`).
        max_pixels: the most pixels an image may have (width x height); a bigger one,
            a decompression bomb among them, is refused before it is decoded.
        max_batch: images captioned together in one encoder call and one search.
        max_wait_ms: how long the first request of a batch waits for others to join it.
        max_queue: requests waiting for the model at most; more are answered 503.
        max_beam: the widest beam a request may ask for (each width is compiled once).
        decode_workers: threads decoding uploads (each holds one decoded image at a time).
        warm_beams: beam widths whose search is traced before the server listens; another
            width is traced by its first requests (a few seconds each, twice).
    """

    max_upload_mb: float = 20.0
    max_pixels: int = 50_000_000
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_beam: int = 8
    decode_workers: int = 2
    warm_beams: tuple = (1, 3)

    def __post_init__(self):
        check_number("max_upload_mb", self.max_upload_mb, 0, exclusive_minimum=True)
        check_int("max_pixels", self.max_pixels, 1)
        check_int("max_batch", self.max_batch, 1)
        check_number("max_wait_ms", self.max_wait_ms, 0, 10_000)
        check_int("max_queue", self.max_queue, 1)
        check_int("max_beam", self.max_beam, 1)
        check_int("decode_workers", self.decode_workers, 1)
        if not isinstance(self.warm_beams, (tuple, list)):
            raise ConfigError(f"warm_beams must be a tuple of beam widths, got "
                              f"{self.warm_beams!r}")
        for beam in self.warm_beams:
            check_int("each of warm_beams", beam, 1, self.max_beam)
        object.__setattr__(self, "warm_beams", tuple(int(b) for b in self.warm_beams))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
