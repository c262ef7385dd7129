"""`create_app`: the Starlette app of `python -m captioning serve`.

Routes:
- `POST /caption`: one image in the multipart field `image`, optional `beam` and `top`
  query parameters; answers the caption as JSON (`caption_json`).
- `GET /health`: the release and the server's settings, and what the queue has done.
- `GET /`: the web page (`static/`), plain HTML and JavaScript.

Every error is JSON `{"error": "..."}` with a 4xx status that says what was wrong (5xx for
a bug or a full queue); one bad request never stops the server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from captioning.errors import CaptioningError
from captioning.serve.batching import BatchQueue, QueueClosed, QueueFull
from captioning.serve.decode import pixel_limit, upload_pixels
from captioning.serve.settings import ServeSettings
from captioning.serve.uploads import UploadError, receive_image
from captioning.utils.checks import check_int

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' blob: data:; connect-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def create_app(captioner, settings: ServeSettings | None = None) -> Starlette:
    """The server's app around a loaded captioner.

    While the app runs (its lifespan), it holds a private temporary folder for uploads,
    the `BatchQueue` whose worker thread alone calls `captioner`, a pool of
    `settings.decode_workers` threads decoding uploads, and `PIL.Image.MAX_IMAGE_PIXELS`
    set to `settings.max_pixels`; all of them are undone when it stops. Call
    `warm_up(captioner)` before serving it, so that the first requests do not trace the
    search.

    Args:
        captioner: a loaded `captioning.inference.Captioner` (or any `CaptionModel`).
        settings: the limits and batching settings; default `ServeSettings()`.
    """
    settings = settings or ServeSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        folder = Path(tempfile.mkdtemp(prefix="captioning-serve-"))
        decoders = concurrent.futures.ThreadPoolExecutor(settings.decode_workers,
                                                         thread_name_prefix="decode-upload")
        batches = BatchQueue(captioner, max_batch=settings.max_batch,
                             max_wait_ms=settings.max_wait_ms, max_queue=settings.max_queue)
        app.state.folder, app.state.decoders, app.state.batches = folder, decoders, batches
        try:
            with pixel_limit(settings.max_pixels):
                yield
        finally:
            batches.close()
            decoders.shutdown(wait=True, cancel_futures=True)
            shutil.rmtree(folder, ignore_errors=True)

    async def caption(request):
        beam, top = _beam_and_top(request.query_params, settings.max_beam)
        state = request.app.state
        with state.batches.expecting():
            upload = await receive_image(request, state.folder, settings.max_upload_bytes)
            try:
                loop = asyncio.get_running_loop()
                pixels = await loop.run_in_executor(state.decoders, upload_pixels, upload,
                                                    captioner.image_size)
            finally:
                upload.path.unlink(missing_ok=True)
            future = state.batches.submit(pixels, beam, top)
        return JSONResponse(caption_json(await asyncio.wrap_future(future)))

    async def health(request):
        stats = request.app.state.batches.stats()
        return JSONResponse({"status": "ok", **release_info(captioner),
                             "settings": settings.to_dict(),
                             "queue": {"waiting": stats.waiting, "batches": stats.batches,
                                       "images": stats.images,
                                       "largest_batch": stats.largest_batch}})

    async def page(request):
        return FileResponse(STATIC / "index.html")

    routes = [Route("/", page), Route("/health", health),
              Route("/caption", caption, methods=["POST"]),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    handlers = {UploadError: _refused, CaptioningError: _refused, HTTPException: _http_error,
                QueueFull: _busy, QueueClosed: _busy, Exception: _server_error}
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers,
                     middleware=[Middleware(SecurityHeaders)])


def caption_json(result) -> dict:
    """The JSON answer for one `Caption`: caption, score, alternatives (best first, with
    their scores), words, and for attention models each word's attention over the regions
    (`attention`, one row per word) and the regions' grid (`attention_grid`, rows x cols)."""
    attention = grid = None
    if result.attention is not None:
        weights = np.asarray(result.attention, dtype=np.float64)
        attention = np.round(weights, 5).tolist()
        side = math.isqrt(weights.shape[-1])
        grid = [side, side] if side * side == weights.shape[-1] else [1, weights.shape[-1]]
    return {"caption": result.caption, "score": float(result.score),
            "alternatives": [{"caption": text, "score": float(score)}
                             for text, score in (result.alternatives or [])],
            "words": list(result.words or []), "attention": attention,
            "attention_grid": grid}


def release_info(captioner) -> dict:
    """What `/health` says about the release: its folder name, dataset and model settings."""
    release = getattr(captioner, "release", None)
    if release is None:
        return {"release": None, "image_size": captioner.image_size}
    manifest, config = release.manifest, release.config
    return {"release": Path(release.path).parent.name,
            "created": manifest.get("created"), "dataset": manifest.get("dataset"),
            "image_size": captioner.image_size,
            "model": {"encoder": config.encoder, "features": config.features,
                      "cell": config.cell, "conditioning": config.conditioning,
                      "attention": config.conditioning == "attention",
                      "vocab_size": manifest.get("vocab_size"),
                      "max_decode_length": config.max_decode_length,
                      "length_penalty": getattr(captioner, "length_penalty",
                                                config.length_penalty),
                      "block_ngram_repeat": getattr(captioner, "block_ngram_repeat",
                                                    config.block_ngram_repeat)}}


def _beam_and_top(query, max_beam: int):
    """`beam` and `top` from the query (default 1); the beam is widened to `top`, as the
    CLI's `caption --top` does."""
    values = {}
    for name in ("beam", "top"):
        text = query.get(name, "1")
        try:
            value = int(text)
        except ValueError:
            value = text
        try:
            check_int(name, value, 1, max_beam)
        except CaptioningError as error:
            raise UploadError(f"{error} (--max-beam is {max_beam})") from None
        values[name] = value
    return max(values["beam"], values["top"]), values["top"]


def warm_up(captioner, beams=(1,)) -> None:
    """Traces the encoder and the search of each beam width in `beams` for a batch of one
    and for batches of any size, so that the first requests do not wait for it (the server
    calls it before it listens)."""
    size = captioner.image_size
    side = (size, size) if isinstance(size, int) else tuple(size)
    for count in (1, 2):
        features = captioner.encode(np.zeros((count, *side, 3), np.float32))
        for beam in beams:
            captioner.captions(features, beam=beam)


class SecurityHeaders:
    """ASGI middleware: `SECURITY_HEADERS` on every response (the page may run only its own
    script and style, talk only to this server, and not be framed)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def _error(message: str, status: int, headers=None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status,
                        headers=headers)


async def _refused(request, error):
    return _error(str(error), getattr(error, "status", 400))


async def _busy(request, error):
    return _error(str(error), 503, {"retry-after": "1"})


async def _http_error(request, error):
    return _error(error.detail, error.status_code, getattr(error, "headers", None))


async def _server_error(request, error):
    logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return _error(f"internal error ({type(error).__name__}); the server logged it", 500)
