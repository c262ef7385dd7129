"""`python -m captioning serve`: its flags (`add_arguments`) and the server's run (`run`).

`run` checks the flags and the release manifest first, binds the port (`--port 0`: a free
one), loads the release and traces its search, logs the address, and serves with uvicorn
until Ctrl+C or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import socket

from captioning.errors import ConfigError
from captioning.serve.settings import DEFAULT_HOST, DEFAULT_PORT, ServeSettings

logger = logging.getLogger(__name__)

_DEFAULTS = ServeSettings()


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the `serve` flags to `parser` (a subcommand's parser, or a program's)."""
    parser.add_argument("--release", help="run folder or manifest.json; default: the shipped "
                        "demo release")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}: this machine "
                        "only; 0.0.0.0 exposes the server to the network, see docs/serve.md)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on; 0 picks a free one (default {DEFAULT_PORT})")
    parser.add_argument("--max-upload-mb", type=float, default=_DEFAULTS.max_upload_mb,
                        help="largest upload in MiB, refused with 413 while it streams "
                        f"(default {_DEFAULTS.max_upload_mb:g})")
    parser.add_argument("--max-pixels", type=int, default=_DEFAULTS.max_pixels,
                        help="most pixels (width x height) of an image, checked before it is "
                        f"decoded (default {_DEFAULTS.max_pixels})")
    parser.add_argument("--max-batch", type=int, default=_DEFAULTS.max_batch,
                        help="images captioned together at most (default "
                        f"{_DEFAULTS.max_batch})")
    parser.add_argument("--max-wait-ms", type=float, default=_DEFAULTS.max_wait_ms,
                        help="how long a batch waits for more requests (default "
                        f"{_DEFAULTS.max_wait_ms:g})")
    parser.add_argument("--max-queue", type=int, default=_DEFAULTS.max_queue,
                        help="requests waiting for the model at most; more get 503 (default "
                        f"{_DEFAULTS.max_queue})")
    parser.add_argument("--max-beam", type=int, default=_DEFAULTS.max_beam,
                        help=f"widest beam a request may ask for (default {_DEFAULTS.max_beam})")
    parser.add_argument("--decode-workers", type=int, default=_DEFAULTS.decode_workers,
                        help="threads decoding uploads (default "
                        f"{_DEFAULTS.decode_workers})")
    parser.add_argument("--warm-beams", type=_beams, default=_DEFAULTS.warm_beams,
                        metavar="K,K", help="beam widths traced before the server listens; "
                        "others are traced by their first requests (default "
                        f"{','.join(map(str, _DEFAULTS.warm_beams))})")
    parser.add_argument("--access-log", action="store_true",
                        help="log one line per request")
    return parser


def settings_from(args) -> ServeSettings:
    """The `ServeSettings` of parsed flags (a `ConfigError` names the flag and its value)."""
    try:
        return ServeSettings(max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels,
                             max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                             max_queue=args.max_queue, max_beam=args.max_beam,
                             decode_workers=args.decode_workers, warm_beams=args.warm_beams)
    except ConfigError as error:
        message = str(error)
        for name in ("warm_beams", "max_upload_mb", "max_pixels", "max_batch", "max_wait_ms",
                     "max_queue", "max_beam", "decode_workers"):
            message = message.replace(name, "--" + name.replace("_", "-"), 1)
        raise ConfigError(message) from None


def _beams(text: str) -> tuple:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be beam widths like 1,3, got {text!r}") from None


def run(args) -> int:
    """Serves the release of `args` until Ctrl+C; returns the exit code (0).

    Ctrl+C (SIGINT) or SIGTERM stop it gracefully: requests in progress are answered, the
    upload folder is removed.

    Raises:
        CaptioningError: a bad flag, a missing or broken release, a port that cannot be
            bound.
    """
    from captioning.release import read_manifest

    settings = settings_from(args)
    manifest_path, _ = read_manifest(args.release)
    listener = bind(args.host, args.port)
    try:
        import uvicorn

        from captioning.inference import Captioner
        from captioning.serve.app import create_app, warm_up

        captioner = Captioner.load(manifest_path)
        warm_up(captioner, settings.warm_beams)
        app = create_app(captioner, settings)
        config = uvicorn.Config(app, log_config=None, access_log=args.access_log,
                                server_header=False, timeout_graceful_shutdown=10)
        _uvicorn_logs(args.access_log)
        listener.listen(config.backlog)  # connections wait from now on; uvicorn accepts them
        host, port = listener.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        logger.info("Serving %s at http://%s:%d/ (Ctrl+C stops it)", manifest_path.parent,
                    shown, port)
        try:
            uvicorn.Server(config).run(sockets=[listener])
        except KeyboardInterrupt:  # uvicorn stopped cleanly, then passed Ctrl+C on
            logger.info("Stopped.")
    finally:
        listener.close()
    return 0


def _uvicorn_logs(access_log: bool):
    """uvicorn's errors go through the program's logging; its access lines, when asked for,
    go to stderr as they are."""
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.INFO if access_log else logging.WARNING)
    if access_log and not access.handlers:
        access.addHandler(logging.StreamHandler())
        access.propagate = False


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host:port` (port 0: a free one), not listening yet."""
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"--port must be an integer in 0..65535, got {port!r}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        raise ConfigError(f"--host {host!r} is not an address of this machine "
                          f"({error.strerror}); use 127.0.0.1 or 0.0.0.0") from None
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)  # refused until `run` is ready and listens
    except OSError as error:
        listener.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({error.strerror or error}); "
                          "pick another --port, or stop what uses it") from None
    listener.set_inheritable(True)
    return listener
