"""Tests for `python -m captioning`, run in fresh processes (`run_cli`) where the exit code
and stderr of a real run matter, and through `cli.main` in this process elsewhere.

A fresh interpreter costs seconds (TensorFlow's import), so the module starts all its
subprocess runs at once, two at a time (`runs`), and each test checks the outcome of its own.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess

import pandas as pd
import pytest

from tests.helpers import REPO_ROOT, run_cli
from captioning import cli

PARALLEL = 2  # the CI machines have two cores


@pytest.fixture(scope="module")
def images(dataset):
    return sorted(str(path) for path in (dataset / "images").glob("*.jpg"))[:3]


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    path = tmp_path_factory.mktemp("broken") / "not_a_picture.jpg"
    path.write_text("this is not a JPEG, just some text\n")
    return path


@pytest.fixture(scope="module")
def tampered(run, tmp_path_factory):
    """A copy of the run whose Encoder.hdf5 has one changed byte."""
    copy = tmp_path_factory.mktemp("tampered") / "run"
    shutil.copytree(run, copy)
    encoder = copy / "Encoder.hdf5"
    data = bytearray(encoder.read_bytes())
    data[len(data) // 2] ^= 0x01
    encoder.write_bytes(bytes(data))
    return copy


def _imagenet_offline(args):
    try:
        return run_cli(*args, timeout=90)
    except subprocess.TimeoutExpired:
        return None  # the download hangs rather than fails here


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Where the CLI runs write."""
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def glob_dir(images, tmp_path_factory):
    """A folder holding copies of `images` and a text file that the glob leaves out."""
    folder = tmp_path_factory.mktemp("glob")
    for image in images:
        shutil.copy(image, folder)
    (folder / "notes.txt").write_text("not an image\n")
    return folder


@pytest.fixture(scope="module")
def runs(run, cache, dataset, images, broken, tampered, work, glob_dir):
    """name -> future of (code, stdout, stderr), all started together."""
    jobs = {
        "plain": ("caption", *images, "--release", run),
        "glob top": ("caption", f"{glob_dir}/*.jpg", "--release", run, "--beam", 3, "--top", 2,
                     "--json"),
        "bad plain": ("caption", images[0], broken, images[1], "--release", run),
        "bad json": ("caption", images[0], broken, images[1], "--release", run, "--json"),
        "tampered": ("caption", images[0], "--release", tampered),
    }
    if shutil.which("java"):
        jobs["evaluate"] = ("evaluate", "--release", run, "--cache", cache, "--split", "test",
                            "--json", work / "scores.json", "--predictions",
                            work / "predictions.json", "--per-image", work / "x.csv",
                            "--beam", 2)
    if (REPO_ROOT / "saved_models" / "manifest.json").exists():
        jobs["shipped"] = ("caption", images[0])
    imagenet = ("cache", "--format", "csv", "--captions", dataset / "captions.csv", "--images",
                dataset / "images", "--out", work / "imagenet_cache", "--encoder",
                "inception_v3", "--image-size", 75, "--weights", "imagenet")
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        futures = {name: pool.submit(run_cli, *args) for name, args in jobs.items()}
        futures["imagenet"] = pool.submit(_imagenet_offline, imagenet)
        yield futures
        for future in futures.values():
            future.cancel()


def _no_traceback(stderr):
    assert "Traceback" not in stderr, stderr


def test_caption_plain_output(runs, images):
    code, out, err = runs["plain"].result()
    assert code == 0, err
    _no_traceback(err)
    lines = out.splitlines()
    assert len(lines) == len(images)
    for line, image in zip(lines, images):
        path, caption = line.split("\t")
        assert path == image
        assert not caption.startswith("error")
    assert any(line.split("\t")[1].strip() for line in lines)


def test_caption_with_one_bad_file_exits_1_plain(runs, images, broken):
    code, out, err = runs["bad plain"].result()
    assert code == 1, err
    _no_traceback(err)
    lines = out.splitlines()
    assert len(lines) == 3
    errors = [line for line in lines if "\terror: " in line]
    assert len(errors) == 1 and errors[0].startswith(f"{broken}\terror: ")
    assert broken.name in errors[0].split("\terror: ")[1]
    captioned = {line.split("\t")[0] for line in lines if line not in errors}
    assert captioned == set(images[:2])


def test_caption_with_one_bad_file_exits_1_json(runs, images, broken):
    code, out, err = runs["bad json"].result()
    assert code == 1, err
    _no_traceback(err)
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 3
    by_image = {record["image"]: record for record in records}
    assert set(by_image) == {images[0], images[1], str(broken)}
    assert set(by_image[str(broken)]) == {"image", "error"}
    assert broken.name in by_image[str(broken)]["error"]
    for image in images[:2]:
        assert set(by_image[image]) == {"image", "caption"}
        assert isinstance(by_image[image]["caption"], str)
    # The same captions as the plain output.
    plain = dict(line.split("\t") for line in runs["plain"].result()[1].splitlines())
    assert all(by_image[image]["caption"] == plain[image] for image in images[:2])


def test_caption_with_a_tampered_release_exits_2(runs):
    code, out, err = runs["tampered"].result()
    assert code == 2
    assert "Encoder.hdf5" in err
    _no_traceback(err)
    assert out == ""


def test_caption_with_a_nonexistent_release_exits_2(images, tmp_path, capsys):
    # In this process (`cli.main`): nothing is loaded before the release is refused.
    code = cli.main(["caption", images[0], "--release", str(tmp_path / "no_such_run")])
    assert code == 2
    out, err = capsys.readouterr()
    assert "no_such_run" in err and "--release" in err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert out == ""


def test_evaluate_writes_scores_and_predictions(runs, cache, work):
    if "evaluate" not in runs:
        pytest.skip("the COCO metrics need Java")
    code, out, err = runs["evaluate"].result()
    assert code == 0, err
    scores = json.loads((work / "scores.json").read_text())
    for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr",
                "nltk_bleu_4", "n_images"):
        assert key in scores, key
    for key in ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "nltk_bleu_4"):
        assert isinstance(scores[key], float) and scores[key] >= 0, key
    assert json.loads(out.splitlines()[-1]) == scores  # also printed
    captions = pd.read_csv(cache / "captions.csv")
    n_test = captions.loc[captions["split"] == "test", "image"].nunique()
    assert scores["n_images"] == n_test
    predictions = json.loads((work / "predictions.json").read_text())
    assert isinstance(predictions, list) and len(predictions) == n_test
    for item in predictions:
        assert set(item) == {"image_id", "caption"}
        assert isinstance(item["caption"], str)
    assert scores["beam"] == 2
    per_image = pd.read_csv(work / "x.csv", keep_default_na=False)
    assert sorted(per_image["image"]) == sorted(p["image_id"] for p in predictions)
    by_image = {p["image_id"]: p["caption"] for p in predictions}
    assert all(by_image[row.image] == row.caption for row in per_image.itertuples())
    assert {"references", "Bleu_4", "CIDEr"} <= set(per_image.columns)
    from captioning.evaluation import spice_unavailable

    if spice_unavailable() is not None:  # no CoreNLP here: skipped, said once, scores kept
        assert "SPICE" not in scores
        assert [line for line in err.splitlines() if "SPICE" in line] == [
            f"WARNING: SPICE skipped: {spice_unavailable()}"]


EXPECTED_FILES = {
    "csv": ["captions.csv"],
    "flickr8k": ["Flickr8k.token.txt", "Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt",
                 "Flickr_8k.testImages.txt"],
    "coco": ["annotations/captions_train.json", "annotations/captions_val.json",
             "annotations/captions_test.json"],
}


def _check_synthetic(out_dir, fmt, printed):
    for name in EXPECTED_FILES[fmt] + ["metadata.json"]:
        assert (out_dir / name).is_file(), name
    assert len(list((out_dir / "images").glob("*.jpg"))) == 12
    assert printed.strip() == str(out_dir / EXPECTED_FILES[fmt][0])


@pytest.mark.parametrize("fmt", sorted(EXPECTED_FILES))
def test_synthetic_writes_each_format(tmp_path, fmt, capsys):
    # In this process (`cli.main`) to spare an interpreter start per format; the slow
    # pipeline test runs `synthetic` in fresh processes.
    out_dir = tmp_path / fmt
    code = cli.main(["synthetic", "--out", str(out_dir), "--images", "12", "--format", fmt,
                     "--image-size", "32"])
    assert code == 0
    _check_synthetic(out_dir, fmt, capsys.readouterr().out)


def test_cache_with_imagenet_weights_offline_points_to_weights_none(runs):
    outcome = runs["imagenet"].result()
    if outcome is None:
        pytest.skip("downloading the ImageNet weights does not fail fast here")
    code, out, err = outcome
    if code == 0:
        pytest.skip("the ImageNet weights are available here (cached or online)")
    assert code == 2, err
    assert "--weights none" in err
    _no_traceback(err)


def test_caption_without_release_uses_the_shipped_one(runs, images):
    if "shipped" not in runs:
        pytest.skip("no shipped release in saved_models/ yet")
    code, out, err = runs["shipped"].result()
    assert code == 0, err
    path, caption = out.splitlines()[0].split("\t")
    assert path == images[0] and caption.strip()


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["caption"])
    assert caught.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_train_without_a_validation_split(cache, tmp_path, capsys):
    # In this process: the CLI's summary line after training a cache with no 'val' images.
    no_val = tmp_path / "cache"
    shutil.copytree(cache, no_val)
    captions = pd.read_csv(no_val / "captions.csv")
    captions.loc[captions["split"] == "val", "split"] = "train"
    captions.to_csv(no_val / "captions.csv", index=False)
    args = ["train", "--cache", str(no_val), "--out", str(tmp_path / "run"), "--epochs", "1",
            "--units", "8", "--embedding-dim", "4", "--max-length", "12", "--quiet", "--scst-epochs", "0"]
    assert cli.main(args) == 0
    assert "best epoch 1: no validation split" in capsys.readouterr().out


def test_cache_shard_then_merge(dataset, cache, tmp_path, capsys):
    # In this process: two slices, each on its own (as on two machines), then --merge.
    import numpy as np

    from captioning.cache import load_features
    from tests.helpers import ENCODER, IMAGE_SIZE

    base = ["cache", "--format", "csv", "--captions", str(dataset / "captions.csv"),
            "--images", str(dataset / "images"), "--encoder", ENCODER, "--weights", "none",
            "--image-size", str(IMAGE_SIZE), "--shard-size", "16", "--workers", "2"]
    for index in range(2):
        assert cli.main(base + ["--out", str(tmp_path / f"slice{index}"),
                                "--shard", f"{index}/2"]) == 0
        out, err = capsys.readouterr()
        assert f"Slice {index}/2 done" in err  # an INFO line, on stderr
        assert "images/s" in err  # not a terminal: plain progress lines
        assert out.strip() == str(tmp_path / f"slice{index}")  # stdout: the result only
    merged = tmp_path / "merged"
    assert cli.main(["cache", "--out", str(merged), "--merge", str(tmp_path / "slice0"),
                     str(tmp_path / "slice1")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(merged)
    names, features = load_features(merged)
    reference_names, reference = load_features(cache)
    assert names == reference_names
    # The same seeded random encoder; other batches than the shared cache's, so not bit-equal.
    np.testing.assert_allclose(np.asarray(features), np.asarray(reference), rtol=2e-3,
                               atol=1e-3 * float(np.abs(np.asarray(reference)).max()))


@pytest.mark.parametrize("value", ["3/2", "-1/2", "1-2"])
def test_cache_bad_shard_is_a_usage_error(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["cache", "--out", str(tmp_path / "c"), f"--shard={value}"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--shard" in err and value in err
    assert not (tmp_path / "c").exists()


def test_synthetic_into_an_unwritable_place_is_one_line(tmp_path, capsys):
    # An OSError on a path the user gave is their mistake: one line naming it, exit 2.
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code = cli.main(["synthetic", "--out", str(blocker / "data"), "--images", "10"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: cannot write {blocker / 'data'}") and "Not a directory" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_synthetic_images_must_be_a_positive_int(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["synthetic", "--out", str(tmp_path / "d"), "--images", value])
    assert caught.value.code == 2
    assert "--images" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_a_bad_release_fails_before_tensorflow_starts(tmp_path):
    # A fresh process: the manifest is checked before TensorFlow is imported, so the one
    # line comes at once, with no TensorFlow start-up lines before it.
    import os
    import sys

    (tmp_path / "manifest.json").write_text("[]")
    code = ("import sys; from captioning import cli; rc = cli.main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; "
            "sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "caption", "missing.jpg", "--release",
                           str(tmp_path)], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items()
                               if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1, done.stderr
    assert "manifest.json" in done.stderr


def test_train_text_flags_are_recorded_in_the_release(cache, tmp_path, capsys):
    from captioning.release.load import load_release

    run_dir = tmp_path / "run"
    args = ["train", "--cache", str(cache), "--out", str(run_dir), "--epochs", "1", "--units",
            "8", "--embedding-dim", "4", "--max-length", "12", "--quiet", "--scst-epochs", "0", "--filters", "!?",
            "--no-lower", "--long-captions", "drop", "--num-words", "12"]
    assert cli.main(args) == 0, capsys.readouterr().err
    release = load_release(run_dir)
    config = release.manifest["config"]
    assert (config["filters"], config["lower"], config["long_captions"],
            config["num_words"]) == ("!?", False, "drop", 12)
    tokenizer = release.tokenizer  # what prediction uses applies them
    assert tokenizer.words("A Red, Square?!") == ["A", "Red,", "Square"]
    assert tokenizer.long_captions == "drop"
    assert tokenizer.vocab_size == release.manifest["vocab_size"] == 12


# ---------------------------------------------------------------------------------------------
# caption and evaluate: beams, globs, progress, COCOEvalCap on the written predictions.


def test_caption_glob_with_top_beams_json(runs, glob_dir):
    code, out, err = runs["glob top"].result()
    assert code == 0, err
    _no_traceback(err)
    records = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["image"] for r in records) == sorted(
        str(path) for path in glob_dir.glob("*.jpg"))
    for record in records:
        assert set(record) == {"image", "caption", "top"}
        assert len(record["top"]) == 2
        scores = [entry["score"] for entry in record["top"]]
        assert scores == sorted(scores, reverse=True)
        assert record["top"][0]["caption"] == record["caption"]
        assert record["top"][0]["caption"] != record["top"][1]["caption"]


def test_evaluate_scores_equal_coco_eval_cap_on_the_written_predictions(runs, cache, work):
    if "evaluate" not in runs:
        pytest.skip("the COCO metrics need Java")
    from pycocoevalcap import eval as coco_eval
    from pycocotools.coco import COCO

    from captioning.evaluation.metrics import METRIC_KEYS
    from tests.evaluation.test_metrics import _NoSpice

    code, _, err = runs["evaluate"].result()
    assert code == 0, err
    scores = json.loads((work / "scores.json").read_text())
    captions = pd.read_csv(cache / "captions.csv", keep_default_na=False)
    test = captions[captions["split"] == "test"]
    annotations = work / "coco_annotations.json"
    annotations.write_text(json.dumps({
        "info": {}, "licenses": [], "type": "captions",
        "images": [{"id": image, "file_name": image} for image in sorted(set(test["image"]))],
        "annotations": [{"id": number, "image_id": row.image, "caption": row.caption}
                        for number, row in enumerate(test.itertuples(), start=1)],
    }))
    coco = COCO(str(annotations))
    results = coco.loadRes(str(work / "predictions.json"))
    evaluator = coco_eval.COCOEvalCap(coco, results)
    evaluator.params["image_id"] = results.getImgIds()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(coco_eval, "Spice", _NoSpice)
        evaluator.evaluate()
    for name in METRIC_KEYS:
        assert scores[name] == pytest.approx(evaluator.eval[name], rel=1e-9, abs=1e-12), name


@pytest.mark.parametrize("stderr_tty, stdout_tty, json_lines, count, bar", [
    (True, True, False, 2, True),
    (True, True, True, 2, True),  # --json to the terminal: still a bar
    (True, False, True, 2, False),  # --json into a pipe or file: no bar
    (True, False, False, 2, True),  # plain lines into a file, the bar on the terminal
    (True, True, False, 1, False),  # one image
    (False, True, False, 5, False),  # stderr not a terminal
])
def test_caption_progress_bar_rule(monkeypatch, stderr_tty, stdout_tty, json_lines, count,
                                   bar):
    import argparse
    import io
    import sys

    class Stream(io.StringIO):
        def __init__(self, tty):
            super().__init__()
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.setattr(sys, "stderr", Stream(stderr_tty))
    monkeypatch.setattr(sys, "stdout", Stream(stdout_tty))
    assert cli._show_progress(argparse.Namespace(json=json_lines), count) is bar
    assert cli._show_progress(argparse.Namespace(json=json_lines, quiet_logs=True),
                              count) is False  # --quiet: no bar either


@pytest.mark.parametrize("flags", [
    ["caption", "x.jpg", "--beam", "0"], ["caption", "x.jpg", "--beam", "-2"],
    ["caption", "x.jpg", "--top", "0"], ["caption", "x.jpg", "--batch-size", "0"],
    ["evaluate", "--release", "r", "--cache", "c", "--json", "s.json", "--beam", "0"],
])
def test_beam_top_and_batch_size_must_be_positive(flags, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(flags)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flags[-2]}: must be a positive integer, got {flags[-1]}" in err


def test_train_records_the_cache_encoder_and_the_decoding_flags(cache, tmp_path, capsys):
    from captioning.cache import FeatureCache

    run_dir = tmp_path / "run"
    args = ["train", "--cache", str(cache), "--out", str(run_dir), "--epochs", "1", "--units",
            "8", "--embedding-dim", "4", "--max-length", "12", "--quiet", "--scst-epochs", "0", "--val-images", "3",
            "--max-decode-length", "7", "--attention-units", "16"]
    assert cli.main(args) == 0, capsys.readouterr().err
    assert "on 3 images" in capsys.readouterr().err  # --val-images, in the INFO lines
    config = json.loads((run_dir / "manifest.json").read_text())["config"]
    assert (config["val_images"], config["max_decode_length"], config["attention_units"]) == (
        3, 7, 16)
    settings = FeatureCache(cache).settings
    assert (config["encoder"], config["weights"], config["image_size"], config["features"],
            config["feature_dtype"]) == (settings["encoder"], settings["weights"],
                                         settings["image_size"], settings["features"],
                                         settings["dtype"])


def test_train_config_contradicting_the_cache_is_refused(cache, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"image_size": 99}))
    args = ["train", "--cache", str(cache), "--out", str(tmp_path / "run"), "--config",
            str(config)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "image_size is 99 in the config but 75 in the cache" in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# train's flags come from CaptionConfig's fields; --quiet; the INFO lines on stderr.


def _flag(name):
    return "--" + name.replace("_", "-")


def _changed_config():
    """A config with every setting away from its default (and still valid)."""
    import dataclasses

    from captioning.config import CaptionConfig

    defaults = CaptionConfig()
    values = {}
    for field in dataclasses.fields(CaptionConfig):
        value = getattr(defaults, field.name)
        if "choices" in field.metadata:
            values[field.name] = next(c for c in field.metadata["choices"] if c != value)
        elif isinstance(value, bool):
            values[field.name] = not value
        elif value is None:
            values[field.name] = 64
        elif isinstance(value, int):
            values[field.name] = value + 3
        elif isinstance(value, float):
            values[field.name] = value / 2 if value else 0.25
        else:
            values[field.name] = value + "x"
    values["filters"] = "!?"  # a string of characters, such as a user gives
    config = CaptionConfig(**values)
    assert all(getattr(config, name) != getattr(defaults, name) for name in values)
    return config


def test_every_config_field_has_a_train_flag():
    import dataclasses

    config = _changed_config()
    argv = ["train", "--cache", "c", "--out", "o"]
    for name, value in dataclasses.asdict(config).items():
        if isinstance(value, bool):
            argv.append(_flag(name) if value else "--no-" + _flag(name)[2:])
        else:
            argv += [_flag(name), str(value)]
    assert cli._train_config(cli._parser().parse_args(argv)) == config


def test_train_flags_not_given_keep_the_config_file(tmp_path):
    from captioning.config import CaptionConfig

    path = tmp_path / "config.json"
    CaptionConfig(units=32, lower=False, clipnorm=None, oov_token="<oov>").save(path)
    base = ["train", "--cache", "c", "--out", "o", "--config", str(path)]
    assert cli._train_config(cli._parser().parse_args(base)) == CaptionConfig.load(path)
    changed = cli._train_config(cli._parser().parse_args(
        base + ["--units", "8", "--lower", "--clipnorm", "2.5", "--num-words", "none",
                "--remove-articles", "--scst-baseline", "greedy"]))
    assert (changed.units, changed.lower, changed.clipnorm, changed.num_words,
            changed.remove_articles, changed.scst_baseline, changed.oov_token) == (
        8, True, 2.5, None, True, "greedy", "<oov>")


@pytest.mark.parametrize("flags, shown", [
    (["--units", "many"], "argument --units: must be an integer, got 'many'"),
    (["--dropout", "lots"], "argument --dropout: must be a number, got 'lots'"),
    (["--image-size", "big"], "argument --image-size: must be an integer or none, got 'big'"),
    (["--cell", "rnn"], "argument --cell: invalid choice: 'rnn'"),
])
def test_a_train_flag_of_the_wrong_type_is_a_usage_error(flags, shown, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["train", "--cache", "c", "--out", "o", *flags])
    assert caught.value.code == 2
    assert shown in capsys.readouterr().err


def test_a_train_setting_out_of_range_is_one_line(tmp_path, capsys):
    code = cli.main(["train", "--cache", str(tmp_path), "--out", str(tmp_path / "run"),
                     "--units", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err == "error: units must be a positive integer, got 0\n"


def test_train_help_lists_every_setting_with_its_default(capsys):
    import dataclasses

    from captioning.config import CaptionConfig

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(CaptionConfig):
        assert _flag(field.name) in text, field.name
    assert "--no-lower" in text and "--oov-token TEXT" in text
    assert "words per caption, markers excluded (default 30)" in text


@pytest.fixture
def unsplit(dataset, tmp_path):
    """A CSV without splits of three of `dataset`'s images, and those images."""
    from tests.helpers import read_table

    table = read_table(dataset)
    table = table[table["image"].isin(sorted(set(table["image"]))[:3])].drop(columns="split")
    path = tmp_path / "captions.csv"
    table.to_csv(path, index=False)
    return ["cache", "--format", "csv", "--captions", str(path), "--images",
            str(dataset / "images"), "--out", str(tmp_path / "cache")]


@pytest.mark.parametrize("quiet", [False, True])
def test_info_lines_on_stderr_and_quiet_keeps_the_warnings(unsplit, quiet, monkeypatch,
                                                           capsys):
    # Stops after the captions are read and checked: the encoder is not the point here.
    import logging

    import captioning.cache

    def stop(table, *args, **kwargs):
        raise captioning.errors.CacheError("stopped here")

    monkeypatch.setattr(captioning.cache, "build_cache", stop)
    monkeypatch.setattr(cli, "_import_tensorflow_quietly", lambda: None)
    assert cli.main(["--quiet"] * quiet + unsplit) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("WARNING: ") and "gives no train/val/test split" in lines[0]
    info = [line for line in lines if line.startswith("All 3 images listed in ")]
    assert len(info) == (0 if quiet else 1)
    assert lines[-1] == "error: stopped here"
    assert len(lines) == (2 if quiet else 3)
    # The CLI leaves the logging it found: nothing of it shows after `main` returns.
    assert not logging.getLogger("captioning").handlers


def test_decoding_flags_reach_the_captioner_and_evaluate(monkeypatch, tmp_path, capsys):
    # `caption` and `evaluate` hand --length-penalty and --block-ngram-repeat on; not given,
    # they are None (the release's settings). The models are not the point: stubbed out.
    import types

    import captioning.evaluation
    import captioning.release.manifest
    from captioning.inference.captioner import Captioner

    monkeypatch.setattr(captioning.release.manifest, "read_manifest", lambda path: (path, {}))
    monkeypatch.setattr(cli, "check_backend", lambda: None)
    monkeypatch.setattr(cli, "_import_tensorflow_quietly", lambda: None)
    seen = []

    class Stub:
        def caption(self, files, **kwargs):
            return [types.SimpleNamespace(ok=True, image=f, caption="a red square")
                    for f in files]

    def load(release, **kwargs):
        seen.append(("caption", kwargs["length_penalty"], kwargs["block_ngram_repeat"]))
        return Stub()

    def evaluate(release, cache, **kwargs):
        seen.append(("evaluate", kwargs["length_penalty"], kwargs["block_ngram_repeat"]))
        return {"CIDEr": 1.0}

    monkeypatch.setattr(Captioner, "load", staticmethod(load))
    monkeypatch.setattr(captioning.evaluation, "evaluate_release", evaluate)
    image = tmp_path / "a.jpg"
    image.write_bytes(b"stub")
    common = ["--release", str(tmp_path)]
    assert cli.main(["caption", str(image), *common, "--length-penalty", "1.5",
                     "--block-ngram-repeat", "2"]) == 0
    assert cli.main(["caption", str(image), *common]) == 0
    assert cli.main(["evaluate", *common, "--cache", "c", "--json", str(tmp_path / "s.json"),
                     "--no-spice", "--length-penalty", "0", "--block-ngram-repeat", "3"]) == 0
    assert seen == [("caption", 1.5, 2), ("caption", None, None), ("evaluate", 0.0, 3)]
    capsys.readouterr()
    for flags, shown in ((["--length-penalty", "-1"], "--length-penalty: must be a number"),
                         (["--block-ngram-repeat", "-2"], "--block-ngram-repeat")):
        with pytest.raises(SystemExit) as caught:
            cli.main(["caption", str(image), *common, *flags])
        assert caught.value.code == 2 and shown in capsys.readouterr().err
