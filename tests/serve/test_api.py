"""The HTTP API against a running server: captions as the CLI's, and every bad upload refused
with a 4xx JSON error while the server keeps answering."""

from __future__ import annotations

import io
import json
import select
import socket
import struct
import urllib.parse
import zlib

import numpy as np
import pytest
import requests
from PIL import Image

from tests.helpers import run_cli
from tests.serve.conftest import EXAMPLES, MAX_PIXELS, MAX_UPLOAD_MB
from tests.serve.running import post_image


@pytest.fixture(scope="module")
def cli_captions():
    """What `python -m captioning caption --json` prints for the examples: greedy, and the
    three best beams of a beam search of width 3."""
    found = {}
    for key, flags in (("greedy", []), ("beam3", ["--beam", "3", "--top", "3"])):
        code, out, err = run_cli("caption", *EXAMPLES, "--json", *flags)
        assert code == 0, err
        found[key] = {json.loads(line)["image"]: json.loads(line) for line in out.splitlines()}
    return found


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.fixture(scope="session")
def bomb() -> bytes:
    """A real decompression bomb: a 10,000 x 10,000 RGB PNG of zeros (300 MB decoded) in a
    file of about 300 KB."""
    width = height = 10_000
    packer = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * width)
    idat = b"".join(packer.compress(row * 100) for _ in range(height // 100)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def _jpeg(width, height) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_health_names_the_release_and_its_settings(server):
    health = requests.get(server.url + "health", timeout=30).json()
    assert health["status"] == "ok"
    assert health["release"] == "saved_models"
    assert health["dataset"] == "synthetic-shapes-cache"
    assert health["model"]["attention"] is False
    assert health["settings"]["max_upload_mb"] == MAX_UPLOAD_MB
    assert health["settings"]["max_pixels"] == MAX_PIXELS


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_a_greedy_caption_is_the_clis(server, cli_captions, path):
    response = post_image(server.url, path.read_bytes(), path.name)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["caption"] == cli_captions["greedy"][str(path)]["caption"]
    assert result["words"] == result["caption"].split()
    assert result["alternatives"] == [{"caption": result["caption"], "score": result["score"]}]
    assert result["attention"] is None and result["attention_grid"] is None


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_the_top_beams_are_the_clis(server, cli_captions, path):
    response = post_image(server.url, path.read_bytes(), path.name,
                          params={"beam": 3, "top": 3})
    assert response.status_code == 200, response.text
    result = response.json()
    expected = cli_captions["beam3"][str(path)]
    assert result["caption"] == expected["caption"]
    assert [beam["caption"] for beam in result["alternatives"]] == [
        beam["caption"] for beam in expected["top"]]
    np.testing.assert_allclose([beam["score"] for beam in result["alternatives"]],
                               [beam["score"] for beam in expected["top"]], rtol=1e-4)
    assert result["score"] == result["alternatives"][0]["score"]


def test_top_widens_the_beam_as_the_cli_does(server):
    result = post_image(server.url, EXAMPLES[0].read_bytes(), params={"top": 2}).json()
    assert len(result["alternatives"]) == 2
    assert result["alternatives"][0]["caption"] != result["alternatives"][1]["caption"]


def _bad_uploads(bomb):
    example = EXAMPLES[0].read_bytes()
    return {
        "text": (b"just some notes, not a picture\n", 415, "text, not a jpeg"),
        "html": (b"<!DOCTYPE html><html><body>404</body></html>", 415, "html page"),
        "binary": (bytes(range(256)) * 8, 415, "not a jpeg, png"),
        "empty": (b"", 400, "empty"),
        "truncated": (example[:len(example) // 2], 422, "truncated"),
        "too many pixels": (_jpeg(500, 500), 422, "too many pixels"),
        "bomb": (bomb, 422, "decompression bomb"),
    }


@pytest.mark.parametrize("kind", ["text", "html", "binary", "empty", "truncated",
                                  "too many pixels", "bomb"])
def test_a_bad_image_is_a_4xx_json_error_that_says_why(server, bomb, kind):
    data, status, words = _bad_uploads(bomb)[kind]
    response = post_image(server.url, data, "holiday photo.jpg")
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert words in message.lower()
    assert message.startswith("holiday photo.jpg")
    assert server.tmpdir.as_posix() not in message  # the server's own paths stay private


def test_an_upload_over_the_limit_is_413_from_its_length(server):
    response = post_image(server.url, b"\xff" * (MAX_UPLOAD_MB * 2**20 + 1))
    assert response.status_code == 413
    assert f"limit of {MAX_UPLOAD_MB} MiB" in response.json()["error"]


def test_an_endless_upload_is_refused_while_it_streams(server):
    """A chunked body without a length: the 413 comes once the limit is passed, long before
    the client would have sent its 1 GiB (what it sent past the limit sat in socket
    buffers)."""
    url = urllib.parse.urlsplit(server.url)
    sent, limit = 0, 2**30
    frame = lambda data: b"%x\r\n%s\r\n" % (len(data), data)
    with socket.create_connection((url.hostname, url.port), timeout=60) as sock:
        sock.sendall(b"POST /caption HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=B\r\n\r\n"
                     % url.netloc.encode())
        sock.sendall(frame(b'--B\r\nContent-Disposition: form-data; name="image"; '
                           b'filename="endless.jpg"\r\n\r\n'))
        block = frame(b"\xff" * 2**16)
        try:
            while sent < limit and not select.select([sock], [], [], 0)[0]:
                sock.sendall(block)
                sent += 2**16
        except OSError:
            pass  # the server answered and closed while this was still sending
        answer = b""
        while b"}" not in answer:
            got = sock.recv(2**16)
            if not got:
                break
            answer += got
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"--max-upload-mb" in answer
    assert sent < 64 * 2**20


@pytest.mark.parametrize("case, status, words", [
    ("no multipart", 415, "multipart/form-data"),
    ("no image field", 400, "no file in the field 'image'"),
    ("text field", 400, "holds text, not a file"),
    ("two images", 400, "one image per request"),
    ("malformed", 400, "malformed"),
    ("beam 0", 400, "beam must be an integer in 1..8, got 0"),
    ("beam x", 400, "beam must be an integer in 1..8, got 'x'"),
    ("top 9", 400, "top must be an integer in 1..8, got 9"),
])
def test_a_bad_request_is_a_4xx_json_error(server, case, status, words):
    url, image = server.url + "caption", EXAMPLES[0].read_bytes()
    send = {
        "no multipart": lambda: requests.post(url, data=image,
                                              headers={"content-type": "image/jpeg"}),
        "no image field": lambda: requests.post(url, files={"photo": ("a.jpg", image)}),
        "text field": lambda: requests.post(url, files={"image": (None, "a caption")}),
        "two images": lambda: requests.post(url, files=[("image", ("a.jpg", image)),
                                                        ("image", ("b.jpg", image))]),
        "malformed": lambda: requests.post(
            url, data=b"--B\r\nnot a header line at all\r\n\r\n",
            headers={"content-type": "multipart/form-data; boundary=B"}),
        "beam 0": lambda: post_image(server.url, image, params={"beam": 0}),
        "beam x": lambda: post_image(server.url, image, params={"beam": "x"}),
        "top 9": lambda: post_image(server.url, image, params={"top": 9}),
    }[case]
    response = send()
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_unknown_routes_and_methods_answer_json(server):
    missing = requests.get(server.url + "nothing-here", timeout=30)
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    wrong = requests.get(server.url + "caption", timeout=30)
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_client_file_names_never_become_paths(server):
    """A file name that climbs out of the upload folder is only ever shown, as its last
    part; the upload is captioned all the same and nothing is written where it points."""
    escape = server.tmpdir / "escaped.jpg"
    for name in ("../escaped.jpg", "../../" + escape.as_posix(), "..\\..\\escaped.jpg"):
        response = post_image(server.url, EXAMPLES[0].read_bytes(), name)
        assert response.status_code == 200, response.text
        refused = post_image(server.url, b"not an image", name)
        assert refused.json()["error"].startswith("escaped.jpg is text")
    assert not escape.exists()
    assert not list(server.tmpdir.rglob("escaped*"))


def test_uploads_are_deleted_and_the_folder_is_private(server):
    post_image(server.url, EXAMPLES[0].read_bytes())
    post_image(server.url, b"not an image")
    (folder,) = server.upload_folders()
    assert folder.stat().st_mode & 0o777 == 0o700
    assert list(folder.iterdir()) == []


def test_the_server_keeps_answering_after_bad_requests(server, bomb):
    for data, _, _ in _bad_uploads(bomb).values():
        post_image(server.url, data)
    post_image(server.url, b"\xff" * (MAX_UPLOAD_MB * 2**20 + 1))
    response = post_image(server.url, EXAMPLES[0].read_bytes())
    assert response.status_code == 200 and response.json()["caption"]
    assert server.process.poll() is None


def test_the_page_and_its_files_come_with_a_strict_policy(server):
    for path, kind in (("", "text/html"), ("static/page.js", "javascript"),
                       ("static/page.css", "text/css"), ("health", "application/json")):
        response = requests.get(server.url + path, timeout=30)
        assert response.status_code == 200 and kind in response.headers["content-type"]
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
    escape = requests.get(server.url + "static/..%2f..%2f__init__.py", timeout=30)
    assert escape.status_code == 404
