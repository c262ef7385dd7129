"""The notebooks: committed clean, and run end to end on a tiny configuration.

The slow tests execute 01 -> 02 -> 03 with nbclient, each with a cell of tiny parameters
injected after its `parameters` cell (as papermill does): 40 synthetic images, a random-weight
encoder on grid features, 2 epochs of an attention GRU with 16 units, everything in a
temporary folder. The executed notebooks are kept there (`executed_*.ipynb`) to read when a
test fails.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from tests.helpers import CACHE_SETTINGS

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("01_cache_features", "02_train", "03_predict")
COLAB_LINK = re.compile(
    r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
    r"\(https://colab\.research\.google\.com/github/[^/\s]+/captioning/blob/main/"
    r"notebooks/(?P<name>[\w.-]+)\.ipynb\)")


def _read(name):
    return nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)


def _tagged(nb, tag):
    return [i for i, cell in enumerate(nb.cells) if tag in cell.get("metadata", {}).get("tags", [])]


def _python(source):
    """A code cell's source without IPython magics and shell escapes."""
    return "\n".join(line for line in source.splitlines()
                     if not line.lstrip().startswith(("%", "!")))


# ---------------------------------------------------------------------------- fast checks

def test_all_notebooks_are_there():
    assert sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_clean(name):
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: a cell has outputs; strip them"
            assert cell.execution_count is None, f"{name}: a cell has an execution count"
        assert "attachments" not in cell or not cell.attachments


@pytest.mark.parametrize("name", NAMES)
def test_notebook_has_one_parameters_cell_of_plain_assignments(name):
    nb = _read(name)
    tagged = _tagged(nb, "parameters")
    assert len(tagged) == 1, f"{name}: {len(tagged)} cells tagged 'parameters'"
    cell = nb.cells[tagged[0]]
    assert cell.cell_type == "code"
    tree = ast.parse(cell.source)
    assert tree.body and all(isinstance(node, ast.Assign) for node in tree.body)
    names = {target.id for node in tree.body for target in node.targets}
    expected = {
        "01_cache_features": {"DATASET", "DATA_DIR", "ENCODER", "WEIGHTS", "IMAGE_SIZE",
                              "FEATURES", "CACHE_DIR", "N_IMAGES"},
        "02_train": {"CACHE_DIR", "RUN_DIR", "CELL", "CONDITIONING", "EPOCHS", "UNITS",
                     "EMBEDDING_DIM", "BATCH_SIZE"},
        "03_predict": {"RELEASE", "IMAGE_PATH", "BEAM"},
    }[name]
    assert expected <= names


@pytest.mark.parametrize("name", NAMES)
def test_notebook_has_colab_badge_and_setup(name):
    nb = _read(name)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    match = COLAB_LINK.search(first.source)
    assert match and match.group("name") == name
    setup = nb.cells[1]
    assert setup.cell_type == "code"
    assert '"google.colab" in sys.modules' in setup.source
    for step in ("git", "clone", "requirements.txt", '"-e"', "drive.mount"):
        assert step in setup.source
    # Outside Colab the setup cell must not install or mount anything.
    body = ast.parse(setup.source).body
    outside = [node for node in body if not isinstance(node, ast.If)]
    assert all(isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign)) for node in outside)
    assert _tagged(nb, "parameters")[0] > 1, "the parameters cell comes after the setup cell"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_cells_only_call_the_package(name):
    nb = _read(name)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(_python(cell.source))
        for node in ast.walk(tree):
            assert not isinstance(node, ast.ClassDef), f"{name}: a class in a notebook cell"
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)), (
                f"{name}: a function in a notebook cell; put it in the package")
        assert len(cell.source.splitlines()) <= 40


def test_01_gets_the_real_datasets_from_the_package():
    # The download registry and its logic live in `captioning.data.downloads`.
    source = "\n".join(cell.source for cell in _read("01_cache_features").cells
                       if cell.cell_type == "code")
    assert "download_dataset(" in source
    urls = re.findall(r"https?://\S+", source)
    assert all(url.startswith("https://github.com/your-github-user/") for url in urls), urls
    assert "unpack_archive" not in source and "get_file" not in source


@pytest.mark.parametrize("name", NAMES)
def test_notebook_shows_the_package_log_lines(name):
    source = "\n".join(cell.source for cell in _read(name).cells if cell.cell_type == "code")
    assert "show_logs()" in source


# ----------------------------------------------------------------------- end to end runs

def _execute(name, parameters, workdir: Path, *, extra="", stop_after=None):
    """Runs a notebook with a cell of `parameters` injected after its parameters cell.

    `extra` is more code for the injected cell; `stop_after` a text: the notebook runs up to
    the first code cell holding it.
    """
    from nbclient import NotebookClient

    nb = _read(name)
    index = _tagged(nb, "parameters")[0]
    source = "# Parameters\n" + "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(
        source + "\n" + extra, metadata={"tags": ["injected-parameters"]}))
    if stop_after is not None:
        last = next(i for i, cell in enumerate(nb.cells)
                    if cell.cell_type == "code" and stop_after in cell.source)
        nb.cells = nb.cells[:last + 1]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1",
               PYTHONWARNINGS="ignore")
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute(env=env)
    finally:
        nbformat.write(nb, workdir / f"executed_{name}.ipynb")
    return nb


def _outputs(nb, kind):
    return [output for cell in nb.cells if cell.cell_type == "code"
            for output in cell.outputs if kind in output.get("data", {})]


def _text(nb):
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("notebooks")


@pytest.fixture(scope="module")
def cached(workdir):
    parameters = {
        "DATASET": "synthetic", "DATA_DIR": str(workdir / "data"), "N_IMAGES": 40,
        "ENCODER": CACHE_SETTINGS["encoder"], "WEIGHTS": "none",
        "IMAGE_SIZE": CACHE_SETTINGS["image_size"], "FEATURES": "grid",
        "CACHE_DIR": str(workdir / "cache"), "BATCH_SIZE": 16,
    }
    return _execute("01_cache_features", parameters, workdir)


@pytest.fixture(scope="module")
def trained(workdir, cached):
    parameters = {
        "CACHE_DIR": str(workdir / "cache"), "RUN_DIR": str(workdir / "run"), "CELL": "gru",
        "CONDITIONING": "attention", "EPOCHS": 2, "UNITS": 16, "EMBEDDING_DIM": 8,
        "BATCH_SIZE": 16, "SETTINGS": {"attention_units": 16, "val_images": 8, "max_length": 12,
                     "max_decode_length": 8},
    }
    return _execute("02_train", parameters, workdir)


@pytest.mark.slow
def test_01_cache_features_runs(workdir, cached):
    manifest = json.loads((workdir / "cache" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["n_images"] == 40
    assert manifest["features"] == "grid" and len(manifest["feature_shape"]) == 2
    assert (workdir / "data" / "captions.csv").exists()
    text = _text(cached)
    assert "MiB to write" in text and "40 images" in text
    assert _outputs(cached, "image/png"), "no figure of images and captions"


@pytest.mark.slow
def test_02_train_runs(workdir, trained):
    run = workdir / "run"
    for name in ("Encoder.hdf5", "Decoder.hdf5", "tokenizer.pickle", "manifest.json",
                 "history.csv", "history.png", "test_captions.csv"):
        assert (run / name).is_file(), name
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["conditioning"] == "attention"
    assert manifest["config"]["encoder"] == CACHE_SETTINGS["encoder"]
    assert len(_outputs(trained, "image/png")) == 1, "the training curves"
    tables = _outputs(trained, "text/html")
    assert any("Bleu_4" in output["data"]["text/html"] for output in tables)


@pytest.mark.slow
def test_03_predict_runs(workdir, trained):
    folder = workdir / "to_caption"
    folder.mkdir()
    for image in sorted((workdir / "data" / "images").glob("*.jpg"))[:3]:
        shutil.copyfile(image, folder / image.name)
    (folder / "broken.jpg").write_text("not a picture")
    nb = _execute("03_predict", {"RELEASE": str(workdir / "run"), "IMAGE_PATH": str(folder),
                                 "BEAM": 2, "SHOW": 2}, workdir)
    assert "4 images to caption" in _text(nb)
    table = " ".join(output["data"]["text/html"] for output in _outputs(nb, "text/html"))
    assert "broken.jpg" in table and "error" in table
    # The captions grid, then one attention figure per shown good image.
    assert len(_outputs(nb, "image/png")) == 1 + 2


# The real datasets' branch of 01, offline: in the kernel, a local HTTP server serves small
# archives laid out like the real ones and the registry's URLs point at it, so the notebook's
# download, unpack and file finding (`download_dataset`) run for real up to the captions table.
ARCHIVES = {"flickr8k": ["Flickr8k_Dataset.zip", "Flickr8k_text.zip"],
            "coco": ["train2014.zip", "val2014.zip", "caption_datasets.zip"]}

_LOCAL_SERVER = """
import dataclasses as _dataclasses
import functools as _functools
import http.server as _http
import threading as _threading

from captioning.data import downloads as _downloads

_server = _http.ThreadingHTTPServer(("127.0.0.1", 0), _functools.partial(
    _http.SimpleHTTPRequestHandler, directory=ARCHIVES_DIR))
_threading.Thread(target=_server.serve_forever, daemon=True).start()
_base = f"http://127.0.0.1:{_server.server_address[1]}/"
for _name, _spec in list(_downloads.DOWNLOADS.items()):
    _downloads.DOWNLOADS[_name] = _dataclasses.replace(_spec, archives=tuple(
        _dataclasses.replace(a, url=_base + a.file_name) for a in _spec.archives))
"""


def _zip(path: Path, members: dict):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _fake_archives(dataset, folder: Path) -> int:
    """Writes `ARCHIVES[dataset]` into `folder`, laid out as the real ones; returns the
    number of images."""
    from captioning.data.synthetic import make_dataset

    source = folder / "synthetic"
    make_dataset(source, n_images=20, seed=3, image_size=32, format="flickr8k")
    records = json.loads((source / "metadata.json").read_text())["images"]
    pixels = {r["file_name"]: (source / "images" / r["file_name"]).read_bytes() for r in records}
    if dataset == "flickr8k":
        _zip(folder / "Flickr8k_Dataset.zip", {
            **{f"Flicker8k_Dataset/{name}": data for name, data in pixels.items()},
            **{f"__MACOSX/Flicker8k_Dataset/._{name}": b"\0" for name in pixels}})
        _zip(folder / "Flickr8k_text.zip", {
            name: (source / name).read_bytes()
            for name in ("Flickr8k.token.txt", "Flickr_8k.trainImages.txt",
                         "Flickr_8k.devImages.txt", "Flickr_8k.testImages.txt")})
    else:
        where = {r["file_name"]: "train2014" if r["split"] == "train" else "val2014"
                 for r in records}
        karpathy = {"dataset": "coco", "images": [
            {"filepath": where[r["file_name"]], "filename": r["file_name"],
             "split": "restval" if r["id"] % 5 == 0 else r["split"],
             "sentences": [{"raw": c, "tokens": c.split()} for c in r["captions"]]}
            for r in records]}
        for part in ("train2014", "val2014"):
            _zip(folder / f"{part}.zip", {f"{part}/{name}": data
                                          for name, data in pixels.items() if where[name] == part})
        _zip(folder / "caption_datasets.zip", {"dataset_coco.json": json.dumps(karpathy)})
    return len(records)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["flickr8k", "coco"])
def test_01_downloads_and_reads_real_datasets(dataset, tmp_path):
    n_images = _fake_archives(dataset, tmp_path / "archives")
    data = tmp_path / "data"
    parameters = {"DATASET": dataset, "DATA_DIR": str(data), "CACHE_DIR": str(tmp_path / "c"),
                  "ARCHIVES_DIR": str(tmp_path / "archives")}
    nb = _execute("01_cache_features", parameters, tmp_path, extra=_LOCAL_SERVER,
                  stop_after="read_captions(")
    text = _text(nb)
    # Every archive was fetched once (the package's INFO lines, shown), unpacked into
    # DATA_DIR, and removed.
    fetched = re.findall(r"^Downloading (\S+) into ", text, re.M)
    assert sorted(url.rsplit("/", 1)[-1] for url in fetched) == sorted(ARCHIVES[dataset])
    assert not list(data.glob("*.zip"))
    assert f"{n_images} images with {5 * n_images} captions; 0 listed images are missing" in text
    table = next(o["text"] if "text" in o else o["data"]["text/plain"]
                 for cell in nb.cells for o in cell.get("outputs", [])
                 if "Name: images" in o.get("text", o.get("data", {}).get("text/plain", "")))
    assert re.findall(r"^(test|train|val) ", table, re.M) == ["test", "train", "val"]
    if dataset == "coco":
        assert "restval" not in text  # folded into train
        assert (data / "train2014").is_dir() and (data / "val2014").is_dir()
    else:
        assert (data / "Flicker8k_Dataset").is_dir() and (data / "Flickr8k.token.txt").is_file()
