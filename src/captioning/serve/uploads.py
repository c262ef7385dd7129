"""Receiving an image upload: the multipart body streamed into a private folder, with limits.

The body is parsed as it arrives (`python_multipart`, the parser Starlette uses), and only
the bytes of the one file in the field `image` are kept: written to a file with a random
name in the server's private temporary folder (mode 0700, its files 0600), never to a path
the client names. The size limit holds while the body streams: a `Content-Length` over it
is refused before anything is read, and a body without one is refused as soon as its bytes
pass the limit. The client's file name is only ever shown back in messages.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import unicodedata
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header
from python_multipart.exceptions import FormParserError

from captioning.errors import CaptioningError

FIELD = "image"
# Room for the multipart boundaries and part headers around the image, and small fields.
_OVERHEAD_BYTES = 64 * 1024
_NAME_CHARS = 80


class UploadError(CaptioningError):
    """A request the server refuses; `status` is its HTTP status code."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Upload:
    """The received image file: where the server put it, its size, and how to name it."""

    path: Path
    size: int
    name: str


def display_name(filename) -> str:
    """The client's file name made safe to show: its last part only, printable, short."""
    if not filename:
        return "the upload"
    text = filename.decode("utf-8", "replace") if isinstance(filename, bytes) else filename
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(c for c in text if unicodedata.category(c)[0] not in "CZ" or c == " ")
    text = text.strip()[:_NAME_CHARS]
    return text or "the upload"


def too_large(limit: int) -> UploadError:
    return UploadError(f"the upload is larger than the limit of {limit / 2**20:g} MiB "
                       "(--max-upload-mb); send a smaller image", status=413)


async def receive_image(request, folder: Path, limit: int) -> Upload:
    """Streams the request's multipart body; keeps the file of the field `image`.

    Args:
        request: the Starlette `Request`.
        folder: the server's private temporary folder; the file is created in it.
        limit: the most bytes the image may have.

    Returns:
        The `Upload`; the caller deletes `upload.path` when done with it.

    Raises:
        UploadError: not multipart/form-data (415), no boundary, no or two `image` files,
            malformed body (400), or more bytes than `limit` (413). Nothing is left on disk.
    """
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadError("send the image as multipart/form-data, in the field "
                          f"'{FIELD}' (for instance curl -F {FIELD}=@photo.jpg URL)",
                          status=415)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + _OVERHEAD_BYTES:
        raise too_large(limit)
    receiver = _Receiver(folder, limit)
    parser = MultipartParser(params[b"boundary"], receiver.callbacks())
    try:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit + _OVERHEAD_BYTES:
                raise too_large(limit)
            parser.write(chunk)
            receiver.check()
        parser.finalize()
        receiver.check()
        return receiver.result()
    except FormParserError:
        receiver.discard()
        raise UploadError("the multipart/form-data body is malformed; send the image in the "
                          f"field '{FIELD}'") from None
    except BaseException:
        receiver.discard()
        raise


class _Receiver:
    """The parser's callbacks: part headers, and the image's bytes written as they come."""

    def __init__(self, folder: Path, limit: int):
        self.folder, self.limit = Path(folder), limit
        self.path, self.handle, self.size, self.name = None, None, 0, None
        self.header_field, self.header_value, self.headers = b"", b"", {}
        self.in_image = False
        self.finished = False
        self.error = None

    def callbacks(self) -> dict:
        return {"on_part_begin": self._part_begin, "on_part_data": self._part_data,
                "on_part_end": self._part_end, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished}

    def check(self):
        if self.error is not None:
            raise self.error

    def result(self) -> Upload:
        if self.path is None or not self.finished:
            raise UploadError(f"no file in the field '{FIELD}'; send the image as "
                              f"multipart/form-data (for instance curl -F {FIELD}=@photo.jpg "
                              "URL)")
        return Upload(path=self.path, size=self.size, name=self.name)

    def discard(self):
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None

    def _part_begin(self):
        self.headers, self.in_image = {}, False

    def _header_field(self, data, start, end):
        self.header_field += data[start:end]

    def _header_value(self, data, start, end):
        self.header_value += data[start:end]

    def _header_end(self):
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field, self.header_value = b"", b""

    def _headers_finished(self):
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        if options.get(b"name") != FIELD.encode() or self.error is not None:
            return
        if self.path is not None:
            self.error = UploadError(f"send one image per request; the field '{FIELD}' came "
                                     "twice")
            return
        if b"filename" not in options:
            self.error = UploadError(f"the field '{FIELD}' holds text, not a file; send the "
                                     f"image as a file (curl -F {FIELD}=@photo.jpg URL)")
            return
        self.name = display_name(options[b"filename"])
        self.path = self.folder / f"{secrets.token_hex(16)}.upload"
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.handle = os.fdopen(descriptor, "wb")
        self.in_image = True

    def _part_data(self, data, start, end):
        if not self.in_image or self.error is not None:
            return
        self.size += end - start
        if self.size > self.limit:
            self.error = too_large(self.limit)
            self.in_image = False
            return
        self.handle.write(data[start:end])

    def _part_end(self):
        if self.in_image:
            self.handle.close()
            self.handle, self.in_image, self.finished = None, False, True
