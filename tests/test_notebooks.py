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
import pandas as pd
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
    # The badge and REPO_URL are placeholders for the user's copy: the top cell says how.
    assert "`REPO_URL`" in first.source and "your own copy" in first.source
    assert "replace `your-github-user`" in first.source
    setup = nb.cells[1]
    assert setup.cell_type == "code"
    assert '"google.colab" in sys.modules' in setup.source
    # Drive first (its sign-in prompt), then the clone, then the install through the package,
    # which pulls an existing clone and shows pip's errors.
    steps = ["drive.mount(", '"clone"', "install_project(REPO_DIR)", "os.chdir("]
    assert all(step in setup.source for step in steps)
    assert [setup.source.index(step) for step in steps] == sorted(
        setup.source.index(step) for step in steps)
    assert '"pip"' not in setup.source  # pip runs in install_project, its errors shown
    # Outside Colab the setup cell must not install or mount anything.
    body = ast.parse(setup.source).body
    outside = [node for node in body if not isinstance(node, ast.If)]
    assert all(isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign)) for node in outside)
    assert _tagged(nb, "parameters")[0] > 1, "the parameters cell comes after the setup cell"


def test_the_setup_cells_are_the_same():
    assert len({_read(name).cells[1].source for name in NAMES}) == 1


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


def _work(workdir):
    return workdir / "work"


def _default_cache(workdir):
    return (_work(workdir) / "synthetic-40" /
            f"{CACHE_SETTINGS['encoder']}-{CACHE_SETTINGS['image_size']}px-none-grid-float16" /
            "cache")


_CACHE_PARAMETERS = {"DATASET": "synthetic", "N_IMAGES": 40, "ENCODER": CACHE_SETTINGS["encoder"],
                     "WEIGHTS": "none", "IMAGE_SIZE": CACHE_SETTINGS["image_size"],
                     "FEATURES": "grid", "BATCH_SIZE": 16}


@pytest.fixture(scope="module")
def cached(workdir):
    # No CACHE_DIR: the default folder of this dataset and encoder setting under WORK_DIR.
    parameters = {**_CACHE_PARAMETERS, "DATA_DIR": str(workdir / "data")}
    return _execute("01_cache_features", parameters, workdir,
                    extra=f"WORK_DIR = {str(_work(workdir))!r}")


@pytest.fixture(scope="module")
def trained(workdir, cached):
    # No CACHE_DIR, no RUN_DIR: the cache 01 used last, and a run folder beside it.
    parameters = {
        "CELL": "gru", "CONDITIONING": "attention", "EPOCHS": 2, "SCST_EPOCHS": 1, "UNITS": 16,
        "EMBEDDING_DIM": 8, "BATCH_SIZE": 16, "SETTINGS": {"attention_units": 16, "val_images": 8, "max_length": 12,
                     "max_decode_length": 8},
    }
    return _execute("02_train", parameters, workdir, extra=f"WORK_DIR = {str(_work(workdir))!r}")


def _run_dir(workdir):
    runs = list(_default_cache(workdir).parent.glob("run-gru-attention-*"))
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.slow
def test_01_cache_features_runs(workdir, cached):
    cache = _default_cache(workdir)
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["complete"] and manifest["n_images"] == 40
    assert manifest["features"] == "grid" and len(manifest["feature_shape"]) == 2
    assert (workdir / "data" / "captions.csv").exists()
    text = _text(cached)
    assert "MiB to write" in text and "40 images" in text
    assert f"cache folder: {cache}" in text
    assert re.search(r"^40 images in [\d.]+ s \([\d.]+ images/s\)", text, re.M)
    assert _outputs(cached, "image/png"), "no figure of images and captions"


@pytest.mark.slow
def test_01_run_again_shows_no_speed_of_an_earlier_run(workdir, cached):
    parameters = {**_CACHE_PARAMETERS, "DATA_DIR": str(workdir / "data")}
    nb = _execute("01_cache_features", parameters, workdir,
                  extra=f"WORK_DIR = {str(_work(workdir))!r}")
    text = _text(nb)
    assert "cache already complete (40 images)" in text
    assert "images/s" not in text


@pytest.mark.slow
def test_02_train_runs(workdir, trained):
    run = _run_dir(workdir)
    for name in ("Encoder.hdf5", "Decoder.hdf5", "tokenizer.pickle", "manifest.json",
                 "history.csv", "history.png", "test_captions.csv"):
        assert (run / name).is_file(), name
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["conditioning"] == "attention"
    assert manifest["config"]["encoder"] == CACHE_SETTINGS["encoder"]
    assert manifest["dataset"] == "synthetic"  # not the cache folder's name
    phases = pd.read_csv(run / "history.csv")["phase"].tolist()
    assert phases == ["frozen"] * (len(phases) - 1) + ["scst"]  # SCST_EPOCHS: 1
    assert f"cache: {_default_cache(workdir)}\nrun:   {run}" in _text(trained)
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
    # No RELEASE: the one 02 wrote, said so.
    nb = _execute("03_predict", {"IMAGE_PATH": str(folder), "BEAM": 2, "SHOW": 2}, workdir,
                  extra=f"WORK_DIR = {str(_work(workdir))!r}")
    text = _text(nb)
    assert f"Captioning with the release in {_run_dir(workdir)} (trained on synthetic" in text
    assert "4 images to caption" in text
    table = " ".join(output["data"]["text/html"] for output in _outputs(nb, "text/html"))
    assert "broken.jpg" in table and "error" in table
    # The captions grid, then one attention figure per shown good image.
    assert len(_outputs(nb, "image/png")) == 1 + 2


# The real datasets' branch of 01, offline: in the kernel, a local HTTP server serves small
# archives laid out like the real ones (tests/data/layouts.py) and the registry's URLs point
# at it, with those archives' sizes and sha256, so the notebook's download, checks, unpack and
# file finding (`download_dataset`) run for real up to the cache folder.
_LOCAL_SERVER = f"""
import sys as _sys

_sys.path.insert(0, {str(NOTEBOOKS_DIR.parent)!r})
import pytest as _pytest

from tests.data.layouts import ArchiveServer as _Server, point_registry as _point

_server = _Server(ARCHIVES_DIR)
_point(_pytest.MonkeyPatch(), DATASET, _server.url, ARCHIVES_DIR)
"""


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["flickr8k", "coco"])
def test_01_downloads_and_reads_real_datasets(dataset, tmp_path):
    from tests.data.layouts import ARCHIVES, write_archives

    n_images = write_archives(dataset, tmp_path / "archives", n_images=20)
    data, work = tmp_path / "data", tmp_path / "work"
    parameters = {"DATASET": dataset, "DATA_DIR": str(data), "ENCODER": CACHE_SETTINGS["encoder"],
                  "IMAGE_SIZE": CACHE_SETTINGS["image_size"],
                  "ARCHIVES_DIR": str(tmp_path / "archives")}
    nb = _execute("01_cache_features", parameters, tmp_path,
                  extra=f"WORK_DIR = {str(work)!r}\n" + _LOCAL_SERVER,
                  stop_after="cache_folder(")
    text = _text(nb)
    # Every archive was fetched once (the package's INFO lines, shown), checked, unpacked
    # into DATA_DIR, marked complete and removed.
    fetched = re.findall(r"^Downloading (\S+) into ", text, re.M)
    assert sorted(url.rsplit("/", 1)[-1] for url in fetched) == sorted(ARCHIVES[dataset])
    assert not list(data.glob("*.zip")) and not list(data.glob("*.part"))
    assert sorted(p.name for p in data.glob(".*.complete")) == sorted(
        f".{name}.complete" for name in ARCHIVES[dataset])
    assert f"{n_images} images with {5 * n_images} captions; 0 listed images are missing" in text
    table = next(o["text"] if "text" in o else o["data"]["text/plain"]
                 for cell in nb.cells for o in cell.get("outputs", [])
                 if "Name: images" in o.get("text", o.get("data", {}).get("text/plain", "")))
    assert re.findall(r"^(test|train|val) ", table, re.M) == ["test", "train", "val"]
    # Its own cache folder, named after the dataset and the encoder setting.
    setting = (f"{CACHE_SETTINGS['encoder']}-{CACHE_SETTINGS['image_size']}px-imagenet-"
               "pooled-float16")
    assert f"cache folder: {work / f'{dataset}-{n_images}' / setting / 'cache'}" in text
    if dataset == "coco":
        assert "restval" not in text  # folded into train
        assert (data / "train2014").is_dir() and (data / "val2014").is_dir()
        assert (data / "annotations" / "captions_val2014.json").is_file()
    else:
        assert (data / "Flicker8k_Dataset").is_dir() and (data / "Flickr8k.token.txt").is_file()
        assert not (data / "__MACOSX").exists()


def _own_csv_without_split(folder: Path) -> dict:
    from captioning.data.synthetic import make_dataset

    make_dataset(folder, n_images=30, seed=5, image_size=32, format="csv")
    lines = (folder / "captions.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[-1] == "split"
    (folder / "mine.csv").write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    return {"CAPTIONS_FILE": str(folder / "mine.csv"), "CAPTIONS_FORMAT": "csv",
            "IMAGES_DIR": str(folder / "images")}


def _own_coco_val2014(folder: Path) -> dict:
    # A COCO captions file named as the official one, its images in val2014/ itself.
    from captioning.data.synthetic import make_dataset

    make_dataset(folder / "src", n_images=30, seed=5, image_size=32, format="csv")
    records = json.loads((folder / "src" / "metadata.json").read_text())["images"]
    (folder / "val2014").mkdir()
    for record in records:
        shutil.copyfile(folder / "src" / "images" / record["file_name"],
                        folder / "val2014" / record["file_name"])
    (folder / "captions_val2014.json").write_text(json.dumps({
        "images": [{"id": r["id"], "file_name": r["file_name"]} for r in records],
        "annotations": [{"id": 10 * r["id"] + n, "image_id": r["id"], "caption": c}
                        for r in records for n, c in enumerate(r["captions"])]}))
    return {"CAPTIONS_FILE": str(folder / "captions_val2014.json"), "CAPTIONS_FORMAT": "coco",
            "IMAGES_DIR": str(folder / "val2014")}


@pytest.mark.slow
@pytest.mark.parametrize("own", [_own_csv_without_split, _own_coco_val2014],
                         ids=["csv-without-split", "coco-in-val2014"])
def test_01_reads_own_data_as_the_cli_does(own, tmp_path):
    parameters = {"DATASET": "own", **own(tmp_path / "own")}
    nb = _execute("01_cache_features", parameters, tmp_path, stop_after="read_dataset(")
    text = _text(nb)
    assert "30 images with 150 captions; 0 listed images are missing" in text
    table = next(o["data"]["text/plain"] for cell in nb.cells for o in cell.get("outputs", [])
                 if "Name: images" in o.get("data", {}).get("text/plain", ""))
    splits = dict(re.findall(r"^(test|train|val) +(\d+)", table, re.M))
    if own is _own_csv_without_split:
        assert splits == {"train": "24", "val": "3", "test": "3"}  # 80/10/10
        assert "gives no train/val/test split: assigned its 30 images" in text
    else:
        assert splits == {"val": "30"}


@pytest.mark.slow
def test_01_imagenet_weights_offline_names_the_notebook_parameter(tmp_path):
    # In the kernel, Keras' download fails as it does offline.
    offline = """
from keras.src.utils import file_utils as _file_utils

def _offline(*args, **kwargs):
    raise Exception("URL fetch failure on https://storage.googleapis.com/tensorflow/"
                    "keras-applications/inception_v3/" + "x" * 150 + ".h5: None -- "
                    "[Errno -2] Name or service not known")

_file_utils.get_file = _offline
"""
    parameters = {**_CACHE_PARAMETERS, "N_IMAGES": 10, "WEIGHTS": "imagenet",
                  "ENCODER": "inception_v3", "DATA_DIR": str(tmp_path / "data")}
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError) as caught:
        _execute("01_cache_features", parameters, tmp_path,
                 extra=f"WORK_DIR = {str(tmp_path / 'work')!r}\n{offline}")
    message = str(caught.value)
    assert "Name or service not known" in message  # the cause, whole
    assert 'WEIGHTS = "none"' in message and "--weights" not in message
