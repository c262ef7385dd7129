"""Small archives laid out exactly like the real downloads, and a local HTTP server for them.

`write_archives(dataset, folder)` writes the archives of `DOWNLOADS[dataset]` with tiny
synthetic pictures, under their real names and with their real insides:

- Flickr8k: `Flickr8k_Dataset.zip` (`Flicker8k_Dataset/*.jpg` and the `__MACOSX/` junk of the
  real one) and `Flickr8k_text.zip` (the token file, the three split lists, a readme);
- COCO 2014: `train2014.zip` (`train2014/COCO_train2014_*.jpg`), `val2014.zip`,
  `annotations_trainval2014.zip` (`annotations/captions_{train,val}2014.json` and an
  `instances_*` file) and Karpathy's `caption_datasets.zip`;
- Karpathy: `caption_datasets.zip` (`dataset_coco.json`, `dataset_flickr8k.json`,
  `dataset_flickr30k.json`).

`ArchiveServer` serves a folder on 127.0.0.1 with what the tests need of a real host: HTTP
Range requests (or not), redirects, and connections dropped after some bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

FLICKR_TEXT = ("Flickr8k.token.txt", "Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt",
               "Flickr_8k.testImages.txt")
ARCHIVES = {"flickr8k": ["Flickr8k_Dataset.zip", "Flickr8k_text.zip"],
            "coco": ["train2014.zip", "val2014.zip", "annotations_trainval2014.zip",
                     "caption_datasets.zip"],
            "karpathy": ["caption_datasets.zip"]}


def _zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _records(folder: Path, n_images: int, seed: int) -> tuple[Path, list]:
    from captioning.data.synthetic import make_dataset

    source = folder / "synthetic"
    make_dataset(source, n_images=n_images, seed=seed, image_size=32, format="flickr8k")
    return source, json.loads((source / "metadata.json").read_text())["images"]


def write_archives(dataset: str, folder, *, n_images: int = 12, seed: int = 3) -> int:
    """Writes the archives of `dataset` into `folder`; returns the number of images."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source, records = _records(folder, n_images, seed)
    pixels = {r["file_name"]: (source / "images" / r["file_name"]).read_bytes()
              for r in records}
    if dataset == "flickr8k":
        _zip(folder / "Flickr8k_Dataset.zip", {
            **{f"Flicker8k_Dataset/{name}": data for name, data in pixels.items()},
            **{f"__MACOSX/Flicker8k_Dataset/._{name}": b"\0\5\26\7" for name in pixels}})
        _zip(folder / "Flickr8k_text.zip", {
            **{name: (source / name).read_bytes() for name in FLICKR_TEXT},
            "readme.txt": b"Flickr8k text files\n"})
        return len(records)
    where = {r["file_name"]: "train2014" if r["split"] == "train" else "val2014"
             for r in records}
    coco_name = {r["file_name"]: f"COCO_{where[r['file_name']]}_{r['id']:012d}.jpg"
                 for r in records}
    karpathy = {"dataset": "coco", "images": [
        {"filepath": where[r["file_name"]], "filename": coco_name[r["file_name"]],
         "cocoid": r["id"],
         "split": "restval" if r["split"] == "train" and r["id"] % 3 == 0 else r["split"],
         "sentences": [{"raw": c, "tokens": c.lower().split()} for c in r["captions"]]}
        for r in records]}
    others = {"dataset": "flickr8k", "images": []}
    _zip(folder / "caption_datasets.zip", {
        "dataset_coco.json": json.dumps(karpathy),
        "dataset_flickr8k.json": json.dumps(others),
        "dataset_flickr30k.json": json.dumps({**others, "dataset": "flickr30k"})})
    if dataset == "karpathy":
        return len(records)
    for part in ("train2014", "val2014"):
        _zip(folder / f"{part}.zip", {f"{part}/{coco_name[name]}": data
                                      for name, data in pixels.items() if where[name] == part})
    official = {}
    for part in ("train2014", "val2014"):
        mine = [r for r in records if where[r["file_name"]] == part]
        official[f"annotations/captions_{part}.json"] = json.dumps({
            "images": [{"id": r["id"], "file_name": coco_name[r["file_name"]]} for r in mine],
            "annotations": [{"id": 100 * r["id"] + n, "image_id": r["id"], "caption": c}
                            for r in mine for n, c in enumerate(r["captions"])]})
    official["annotations/instances_train2014.json"] = json.dumps({"annotations": []})
    _zip(folder / "annotations_trainval2014.zip", official)
    return len(records)


def point_registry(monkeypatch, dataset: str, base_url: str, folder=None) -> None:
    """Points `DOWNLOADS[dataset]` at `base_url`; with `folder` (the archives), records each
    archive's real size and sha256 there, as the registry does for the published ones."""
    from captioning.data.downloads import DOWNLOADS

    spec = DOWNLOADS[dataset]
    archives = []
    for archive in spec.archives:
        changes = {"url": base_url + archive.file_name, "size": None, "sha256": None,
                   "files": None}
        if folder is not None:
            data = (Path(folder) / archive.file_name).read_bytes()
            changes.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
        archives.append(dataclasses.replace(archive, **changes))
    monkeypatch.setitem(DOWNLOADS, dataset, dataclasses.replace(spec, archives=tuple(archives)))


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        name = self.path.lstrip("/")
        server.requests.append((name, self.headers.get("Range")))
        if name in server.redirects:
            self.send_response(302)
            self.send_header("Location", server.redirects[name])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = server.folder / name
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        wanted = self.headers.get("Range")
        if wanted and server.ranges and wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[len("bytes="):-1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        drops = server.drops.get(name)
        if drops:
            cut = drops.pop(0)  # bytes of the whole file after which the connection drops
            self.wfile.write(body[:max(cut - start, 0)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class ArchiveServer(http.server.ThreadingHTTPServer):
    """Serves the files of `folder` on 127.0.0.1, HTTP/1.0.

    Attributes:
        url: the base URL, ending in `/`.
        requests: `(name, Range header or None)` of every request, in order.
        redirects: name -> URL answered with a 302.
        drops: name -> a list of byte counts: each request of `name` takes the first one
            off, and the connection closes after that many bytes of the file.
        ranges: whether Range requests are honoured (else the whole file, status 200).
    """

    daemon_threads = True

    def __init__(self, folder):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.folder = Path(folder)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/"
        self.requests, self.redirects, self.drops, self.ranges = [], {}, {}, True
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def names(self) -> list:
        """The names requested, in order."""
        return [name for name, _ in self.requests]

    def close(self) -> None:
        self.shutdown()
        self.server_close()
