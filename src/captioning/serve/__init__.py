"""Serving a release over HTTP: a JSON captioning API and a web page.

- `settings`: `ServeSettings`, the limits and batching settings;
- `uploads`: the multipart body streamed into a private folder, with the size limit;
- `decode`: an upload into the model's pixels by the toolkit's one image loader;
- `batching`: `BatchQueue`, concurrent requests captioned together on one worker thread;
- `app`: `create_app`, the Starlette app (`POST /caption`, `GET /health`, `GET /`);
- `server`: `add_arguments` and `run`, the `serve` command over uvicorn.

Importing this package imports neither Keras nor TensorFlow; `run` loads the release.
"""

from captioning.serve.settings import DEFAULT_HOST, DEFAULT_PORT, ServeSettings  # noqa: F401
from captioning.serve.batching import BatchQueue, QueueFull  # noqa: F401
from captioning.serve.app import caption_json, create_app  # noqa: F401
from captioning.serve.server import add_arguments, run  # noqa: F401


__all__ = ["BatchQueue", "DEFAULT_HOST", "DEFAULT_PORT", "QueueFull", "ServeSettings",
           "add_arguments", "caption_json", "create_app", "run"]
