"""The whole pipeline from the shell, in a temporary folder:
synthetic -> cache -> train -> evaluate -> export -> caption."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import ENCODER, IMAGE_SIZE, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.pipeline]  # CI runs these under JAX too

MAIN_FILE = {"csv": "captions.csv", "flickr8k": "Flickr8k.token.txt"}


def _ok(outcome):
    code, out, err = outcome
    assert code == 0, f"exit {code}\n{err[-3000:]}"
    assert "Traceback" not in err
    return out


@pytest.mark.parametrize("fmt", ["csv", "flickr8k"])
def test_the_whole_cli_pipeline(tmp_path, fmt):
    data, cache, run = tmp_path / "data", tmp_path / "cache", tmp_path / "run"

    out = _ok(run_cli("synthetic", "--out", data, "--images", 40, "--seed", 1, "--format", fmt,
                      "--image-size", 64))
    assert out.strip() == str(data / MAIN_FILE[fmt])

    cache_args = ("cache", "--format", fmt, "--captions", data / MAIN_FILE[fmt], "--images",
                  data / "images", "--out", cache, "--encoder", ENCODER, "--weights", "none",
                  "--image-size", IMAGE_SIZE)
    outcome = run_cli(*cache_args)
    out, err = _ok(outcome), outcome[2]
    assert out.strip().splitlines() == [str(cache)]  # stdout: the result
    assert "images/s" in err  # stderr: the package's INFO lines
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["complete"] and manifest["n_images"] == 40 and manifest["n_failed"] == 0
    outcome = run_cli("--quiet", *cache_args)  # done already: an INFO line says so
    assert _ok(outcome).strip() == str(cache) and "already complete" not in outcome[2]

    out = _ok(run_cli("train", "--cache", cache, "--out", run, "--epochs", 2, "--units", 16,
                      "--embedding-dim", 8, "--batch-size", 16, "--max-length", 12, "--quiet",
                      "--scst-epochs", 0))
    assert "best epoch" in out and str(run) in out
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and [h.split(",")[0] for h in history[1:]] == ["1", "2"]
    # The release says which captions it learnt from, not the cache folder's name.
    assert json.loads((run / "manifest.json").read_text())["dataset"] == \
        f"{fmt}: {MAIN_FILE[fmt]}"

    scores_path = tmp_path / "scores.json"
    if shutil.which("java"):
        _ok(run_cli("evaluate", "--release", run, "--cache", cache, "--json", scores_path,
                    "--predictions", tmp_path / "predictions.json"))
        scores = json.loads(scores_path.read_text())
        assert {"Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "nltk_bleu_4"} <= set(scores)
        assert scores["n_images"] == len(json.loads((tmp_path / "predictions.json").read_text()))

    models, tokenizer = tmp_path / "saved_models", tmp_path / "tokenizer"
    _ok(run_cli("export", "--release", run, "--models-dir", models, "--tokenizer-dir",
                tokenizer))
    assert (models / "manifest.json").is_file() and (tokenizer / "tokenizer.pickle").is_file()

    out = _ok(run_cli("caption", data / "images", "--release", models, "--json"))
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 40
    assert all(set(r) == {"image", "caption"} and isinstance(r["caption"], str)
               for r in records)
    # A 2-epoch model may end the odd caption at once; most have words.
    assert sum(bool(r["caption"].strip()) for r in records) >= len(records) // 2
