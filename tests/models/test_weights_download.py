"""The ImageNet weights download failing: the whole cause, "run it again" for a dropped
transfer, and the fix in the words of the interface used (CLI flag or notebook parameter).

Keras' own `get_file` runs, with its URL pointed at a local HTTP server on 127.0.0.1.
"""

import http.server
import socket
import threading

import pytest

from captioning.errors import CaptioningError
from captioning.models import encoders
from captioning.models.encoders import build_encoder


class _CutShort(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "5000")
        self.end_headers()
        self.wfile.write(b"\x89HDF" + bytes(96))  # 100 of the 5000 bytes, then the drop
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def cut_short():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CutShort)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/inception_v3_notop.h5"
    server.shutdown()
    server.server_close()


def _keras_fetches_from(monkeypatch, tmp_path, url):
    from keras.src.utils import file_utils

    real_get_file = file_utils.get_file

    def get_file(fname=None, origin=None, **kwargs):
        return real_get_file(fname, url, **{**kwargs, "cache_dir": str(tmp_path)})

    monkeypatch.setattr(file_utils, "get_file", get_file)


def _error(**kwargs) -> str:
    with pytest.raises(CaptioningError) as caught:
        build_encoder("inception_v3", weights="imagenet", image_size=75, **kwargs)
    return str(caught.value)


def test_a_dropped_download_says_run_it_again(monkeypatch, tmp_path, cut_short):
    _keras_fetches_from(monkeypatch, tmp_path, cut_short)
    message = _error()
    assert message.startswith("The download of the ImageNet weights of inception_v3 stopped "
                              "part way (")
    assert "retrieval incomplete: got only 100 out of 5000 bytes" in message
    assert "Run it again: Keras downloads the file afresh." in message
    assert "needs internet access" not in message
    assert "--weights none" in message and "\n" not in message


def test_offline_shows_the_whole_cause_after_a_long_url(monkeypatch):
    from keras.src.utils import file_utils

    origin = "https://storage.googleapis.com/tensorflow/keras-applications/" + "x" * 200
    reason = "[Errno -2] Name or service not known"

    def offline(*args, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- {reason}")

    monkeypatch.setattr(file_utils, "get_file", offline)
    message = _error()
    assert f"URL fetch failure on {origin}: None -- {reason}" in message
    assert encoders.OFFLINE_HINT in message


def test_a_refused_connection_counts_as_offline(monkeypatch, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _keras_fetches_from(monkeypatch, tmp_path, f"http://127.0.0.1:{port}/w.h5")
    message = _error()
    assert message.startswith("Cannot download the ImageNet weights of inception_v3 (")
    assert "Connection refused" in message and "needs internet access" in message


def test_in_a_notebook_the_hint_names_the_weights_parameter(monkeypatch, tmp_path, cut_short):
    monkeypatch.setattr(encoders, "_in_notebook", lambda: True)
    _keras_fetches_from(monkeypatch, tmp_path, cut_short)
    message = _error()
    assert 'WEIGHTS = "none"' in message and "--weights" not in message
    assert "Run it again" in message


def test_outside_a_kernel_it_is_not_a_notebook():
    assert encoders._in_notebook() is False
