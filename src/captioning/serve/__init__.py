"""Serving a release over HTTP: a JSON captioning API and a web page.

- `settings`: `ServeSettings`, the limits and batching settings;
- `uploads`: the multipart body streamed into a private folder, with the size limit;
- `decode`: an upload into the model's pixels by the toolkit's one image loader;
- `batching`: `BatchQueue`, concurrent requests captioned together on one worker thread;
- `app`: `create_app`, the Starlette app (`POST /caption`, `GET /health`, `GET /`);
- `server`: `add_arguments` and `run`, the `serve` command over uvicorn.

Importing this package is cheap (the CLI builds its `serve` flags from it): the app and
the queue are imported when first named, Keras and TensorFlow when `run` loads the release.
"""

import importlib

from captioning.serve.settings import DEFAULT_HOST, DEFAULT_PORT, ServeSettings  # noqa: F401
from captioning.serve.server import add_arguments, run  # noqa: F401

_LAZY = {"BatchQueue": "batching", "QueueFull": "batching", "caption_json": "app",
         "create_app": "app", "warm_up": "app"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"captioning.serve.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'captioning.serve' has no attribute {name!r}")


__all__ = ["BatchQueue", "DEFAULT_HOST", "DEFAULT_PORT", "QueueFull", "ServeSettings",
           "add_arguments", "caption_json", "create_app", "run", "warm_up"]
