"""Any Keras backend: the pipeline on JAX without TensorFlow, releases that caption the same
on both backends, and one-line errors for what needs TensorFlow.

"Without TensorFlow" is made real in a subprocess where an import finder refuses TensorFlow
(every `import tensorflow` fails, as where it is not installed). CI also runs the `pipeline`
tests in a virtual environment that has no TensorFlow at all (`.ci/run`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import pytest

from tests.helpers import CACHE_SETTINGS, REPO_ROOT, tiny_config

BACKEND = keras.backend.backend()
OTHER = {"tensorflow": "jax", "jax": "tensorflow"}.get(BACKEND)
WITHOUT_TENSORFLOW = """
import sys
class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("tensorflow", "tf_keras"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NoTensorFlow())
"""

needs_the_other_backend = pytest.mark.skipif(
    OTHER is None or importlib.util.find_spec(OTHER or "tensorflow") is None,
    reason=f"the other Keras backend ({OTHER}) is not installed")

# Captions of every image of a release, greedy and beam 3, as JSON on stdout.
CAPTION_SCRIPT = """
import json, sys
from captioning.inference.captioner import Captioner
captioner = Captioner.load(sys.argv[1])
images = sys.argv[2:]
print(json.dumps({"greedy": [c.caption for c in captioner.caption(images)],
                  "beam": [c.caption for c in captioner.caption(images, beam=3)]}))
"""


def _python(code, *args, backend=BACKEND, tensorflow=True, env=None, timeout=600):
    """Runs `python -c CODE ARGS` on a Keras backend (without TensorFlow when `tensorflow`
    is False); returns the finished process."""
    environ = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
               "PYTHONWARNINGS": "ignore", **(env or {})}
    prelude = "" if tensorflow else WITHOUT_TENSORFLOW
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code),
                           *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT,
                          env=environ, timeout=timeout)


def _ok(done):
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _captions(captioner, images) -> dict:
    return {"greedy": [c.caption for c in captioner.caption(images)],
            "beam": [c.caption for c in captioner.caption(images, beam=3)]}


def _images(dataset, count=12):
    return sorted(str(p) for p in (dataset / "images").iterdir())[:count]


@pytest.mark.pipeline
@pytest.mark.slow
def test_the_python_api_runs_on_jax_without_tensorflow(dataset, tmp_path):
    # A grid cache, an attention LSTM trained on it, fine-tuning from images, the release
    # and beam-search captions, all on JAX with TensorFlow out of reach.
    script = """
        import json, sys
        from captioning.cache import build_cache
        from captioning.config import CaptionConfig
        from captioning.data.captions import read_captions
        from captioning.inference.captioner import Captioner
        from captioning.training.train import train
        dataset, out = sys.argv[1], sys.argv[2]
        table = read_captions(dataset + "/captions.csv", format=sys.argv[3])
        grid = build_cache(table, dataset + "/images", out + "/grid", progress=False,
                           features="grid", **json.loads(sys.argv[4]))
        config = CaptionConfig.from_dict(json.loads(sys.argv[5]))
        result = train(grid, out + "/run", config, progress=False)
        captions = Captioner.load(out + "/run").caption(sys.argv[6:], beam=2)
        print(json.dumps({"tensorflow": "tensorflow" in sys.modules,
                          "phases": list(result.history["phase"]),
                          "captions": [c.caption for c in captions]}))
    """
    config = tiny_config(epochs=1, conditioning="attention", cell="lstm", fine_tune=2,
                         fine_tune_epochs=1)
    images = _images(dataset, 4)
    done = _python(script, dataset, tmp_path, "csv", json.dumps(CACHE_SETTINGS),
                   json.dumps(config.to_dict()), *images, backend="jax", tensorflow=False)
    result = json.loads(_ok(done).splitlines()[-1])
    assert result["tensorflow"] is False
    assert result["phases"] == ["frozen", "fine_tune"]
    assert len(result["captions"]) == 4 and all(isinstance(c, str) for c in result["captions"])
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["versions"]["keras_backend"] == "jax"
    assert manifest["versions"]["tensorflow"] is None


@pytest.mark.pipeline
def test_tensorflow_only_features_name_the_fix_without_tensorflow():
    script = """
        import json
        from captioning.errors import CaptioningError
        from captioning.release.legacy import import_tf_keras
        from captioning.training.strategies import make_strategy
        lines = {"none": make_strategy("none").num_replicas_in_sync}
        for name in ("mirrored", "multi_worker", "tpu"):
            try:
                make_strategy(name)
            except CaptioningError as error:
                lines[name] = str(error)
        try:
            import_tf_keras()
        except CaptioningError as error:
            lines["legacy"] = str(error)
        print(json.dumps(lines))
    """
    lines = json.loads(_ok(_python(script, backend="jax", tensorflow=False)))
    assert lines["none"] == 1
    for name in ("mirrored", "multi_worker", "tpu"):
        assert lines[name].startswith(f"--strategy {name} needs TensorFlow, which is not "
                                      "installed: pip install tensorflow")
        assert "\n" not in lines[name]
    assert "pip install tensorflow tf-keras" in lines["legacy"]


@pytest.mark.pipeline
@pytest.mark.parametrize("backend, tensorflow, message", [
    ("torch", True, "error: Keras' torch backend is not supported"),
    ("tensorflow", False, "error: Keras runs on tensorflow, which is not installed: pip "
                          "install tensorflow, or set KERAS_BACKEND=jax"),
])
def test_a_backend_that_cannot_run_is_one_line(backend, tensorflow, message, dataset,
                                               tmp_path):
    script = "import sys\nfrom captioning.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    done = _python(script, "cache", "--format", "csv", "--captions",
                   dataset / "captions.csv", "--images", dataset / "images", "--out",
                   tmp_path / "cache", backend=backend, tensorflow=tensorflow)
    assert done.returncode == 2
    assert done.stderr.startswith(message) and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "cache").exists()


@pytest.mark.pipeline
@pytest.mark.slow
@needs_the_other_backend
def test_a_release_captions_identically_on_the_other_backend(run, captioner, dataset):
    images = _images(dataset)
    here = _captions(captioner, images)
    there = json.loads(_ok(_python(CAPTION_SCRIPT, run, *images, backend=OTHER)).splitlines()[-1])
    assert there == here
    assert sum(bool(c) for c in here["greedy"]) >= len(images) // 2


@pytest.mark.pipeline
@pytest.mark.slow
@needs_the_other_backend
def test_an_attention_release_of_the_other_backend_captions_identically_here(
        dataset, table, tmp_path):
    from captioning.cache import build_cache
    from captioning.inference.captioner import Captioner

    grid = build_cache(table, dataset / "images", tmp_path / "grid", progress=False,
                       features="grid", **CACHE_SETTINGS)
    config = tiny_config(epochs=2, conditioning="attention")
    script = textwrap.dedent("""
        import json, sys
        from captioning.config import CaptionConfig
        from captioning.training.train import train
        train(sys.argv[1], sys.argv[2], CaptionConfig.from_dict(json.loads(sys.argv[3])),
              progress=False)
    """) + CAPTION_SCRIPT.replace("sys.argv[1]", "sys.argv[2]").replace("sys.argv[2:]",
                                                                       "sys.argv[4:]")
    images = _images(dataset)
    there = json.loads(_ok(_python(script, grid, tmp_path / "run", json.dumps(config.to_dict()),
                                   *images, backend=OTHER)).splitlines()[-1])
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["versions"]["keras_backend"] == OTHER
    assert _captions(Captioner.load(tmp_path / "run"), images) == there


@pytest.mark.pipeline
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None
                    or importlib.util.find_spec("jax") is None,
                    reason="needs TensorFlow and JAX both installed")
def test_the_cli_on_jax_leaves_an_installed_tensorflow_unimported():
    # Keras' .hdf5 reader would import TensorFlow (seconds, and its C++ log lines on stderr)
    # to decode TF 2 shapes our files do not hold; `caption` and `--help` leave it alone.
    script = """
        import json, runpy, sys
        sys.argv = ["captioning", *sys.argv[1:]]
        code = 0
        try:
            runpy.run_module("captioning", run_name="__main__", alter_sys=True)
        except SystemExit as exit:
            code = exit.code
        print(json.dumps({"code": code, "tensorflow": "tensorflow" in sys.modules}))
    """
    for args in (["--help"], ["caption", "examples/small_white_square.jpg"]):
        done = _python(script, *args, backend="jax")
        result = json.loads(_ok(done).splitlines()[-1])
        assert result == {"code": 0, "tensorflow": False}, (args, done.stderr[-2000:])
    assert "a little white square" in done.stdout


def test_the_python_api_refuses_the_torch_backend_in_one_line():
    """The Python API says what the CLI says under KERAS_BACKEND=torch, before Keras starts."""
    script = """
    import json, sys
    import captioning
    from captioning.errors import CaptioningError
    try:
        captioning.Captioner
    except CaptioningError as error:
        print(json.dumps({"error": str(error), "keras": "keras" in sys.modules}))
    """
    out = json.loads(_ok(_python(script, backend="torch")).splitlines()[-1])
    assert out["error"].startswith("Keras' torch backend is not supported")
    assert "KERAS_BACKEND=jax" in out["error"] and not out["keras"]
