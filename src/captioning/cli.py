"""`python -m captioning <command>`: the pipeline from a shell.

Commands: `synthetic`, `download`, `cache`, `train`, `evaluate`, `caption`, `export`. Results
go to stdout; progress, INFO lines and warnings to stderr (`-q` before the command keeps
warnings only). A mistake the user can fix (bad path, bad image, bad file, mismatched
release) prints one line and exits 2 (`caption` exits 1 when only some images failed);
nothing prints a traceback for those. `train`'s flags are made from `CaptionConfig`'s
fields, one each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from captioning.errors import CaptioningError, ConfigError
from captioning.utils.backends import check_backend
from captioning.utils.flags import add_field_flags, int_at_least

EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR = 0, 1, 2
# The keys of `captioning.data.downloads.DOWNLOADS` (a test keeps them equal), written here
# so that parsing the arguments does not import the data package.
DOWNLOADABLE = ("flickr8k", "coco", "karpathy")


def _quiet_backends():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass


def _parser() -> argparse.ArgumentParser:
    from captioning.config import (CAPTION_FORMATS, DTYPES, PRECISIONS, SYNTHETIC_FORMATS,
                                   CaptionConfig)

    parser = argparse.ArgumentParser(prog="python -m captioning",
                                     description="Image captioning on TensorFlow/Keras 3.")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("-v", "--verbose", action="store_true",
                       help="log more: debug lines, and TensorFlow's start-up lines")
    shown.add_argument("-q", "--quiet", dest="quiet_logs", action="store_true",
                       help="show warnings and errors only, not the progress and info lines")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("synthetic", help="write the synthetic shapes dataset")
    p.add_argument("--out", required=True, help="folder to write images/ and captions into")
    p.add_argument("--images", type=int_at_least(1), default=2000, help="number of images")
    p.add_argument("--seed", type=int_at_least(0), default=7)
    p.add_argument("--format", choices=SYNTHETIC_FORMATS, default="csv")
    p.add_argument("--image-size", type=int_at_least(32), default=128)
    p.add_argument("--shapes", type=int, default=1, choices=(1, 2, 3),
                   help="shapes per image; 2 or 3 name relative positions (for attention)")

    p = commands.add_parser("download", help="download and unpack Flickr8k, COCO 2014 or the "
                            "Karpathy split files (resumable; safe to run again)")
    p.add_argument("dataset", choices=DOWNLOADABLE,
                   help="flickr8k (~1 GB), coco (~20 GB: train2014, val2014, the official "
                   "captions and the Karpathy splits) or karpathy (the split files alone)")
    p.add_argument("--out", required=True, help="data folder to unpack into")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds without a byte before a connection counts as dropped")

    p = commands.add_parser("cache", help="run the encoder over every image once")
    p.add_argument("--format", choices=CAPTION_FORMATS)
    p.add_argument("--captions", nargs="+", help="captions file(s) (several COCO files at once)")
    p.add_argument("--images", help="folder holding the images")
    p.add_argument("--out", required=True, help="cache folder")
    add_field_flags(p, CaptionConfig, ("encoder", "weights", "image_size", "features"),
                    defaults_kept=True)
    p.add_argument("--dtype", choices=DTYPES, default="float16",
                   help="dtype of the cached features (default float16)")
    p.add_argument("--batch-size", type=int_at_least(1), default=32)
    p.add_argument("--mixed-precision", choices=PRECISIONS, default="none",
                   help="run the encoder in bfloat16 or float16 (faster on GPUs; the features "
                   "move by about 1%%, benchmarks/README.md); its saved file stays float32")
    p.add_argument("--strict", action="store_true",
                   help="stop when an image listed in the captions is missing or unreadable")
    p.add_argument("--no-restval", action="store_true",
                   help="karpathy: keep restval apart instead of folding it into train")
    p.add_argument("--shard-size", type=int_at_least(1),
                   help="images per shard file (default ~256 MiB)")
    p.add_argument("--shard", metavar="I/N", type=_shard_arg,
                   help="compute only slice I of N (another machine or session); then --merge")
    p.add_argument("--workers", type=int_at_least(1), default=None,
                   help="threads decoding images (default: the CPU count, at most 8)")
    p.add_argument("--merge", nargs="+", metavar="SLICE",
                   help="join finished slice folders into the --out cache")

    p = commands.add_parser("train", help="train a decoder on a cache and write a release",
                            usage="%(prog)s --cache CACHE --out OUT [--config CONFIG] "
                            "[--images IMAGES] [--quiet] [setting flags, see --help]")
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True, help="run folder (resumed if it holds this run)")
    p.add_argument("--config", help="a JSON file of CaptionConfig settings; the flags below "
                   "change some of them")
    p.add_argument("--images", help="images folder for --fine-tune (default: the cache's)")
    p.add_argument("--quiet", action="store_true", help="one line per epoch")
    group = p.add_argument_group(
        "settings", "CaptionConfig's fields, each as a flag; the encoder's are the cache's "
        "(a value that contradicts the cache is refused)")
    add_field_flags(group, CaptionConfig)

    p = commands.add_parser("evaluate", help="COCO metrics of a release on a cached split")
    p.add_argument("--release", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--json", required=True, help="file to write the scores to")
    p.add_argument("--predictions", help="write the captions as COCO results JSON")
    p.add_argument("--per-image", help="write each image's caption and references as CSV")
    p.add_argument("--beam", type=int_at_least(1), default=1, help="beam width (1: greedy)")
    p.add_argument("--images", help="caption the split from this folder of the cache's images "
                   "with the release's encoder, not from the cached features (for a release "
                   "whose encoder was fine-tuned)")
    _add_decoding_flags(p)
    spice = p.add_mutually_exclusive_group()
    spice.add_argument("--spice", dest="spice", action="store_true", default=True,
                       help="SPICE when it can run (the default; needs Stanford CoreNLP)")
    spice.add_argument("--no-spice", dest="spice", action="store_false",
                       help="leave SPICE out, without the message that it was skipped")
    p.add_argument("--record", action="store_true",
                   help="also record the scores in the release's manifest.json")

    p = commands.add_parser("caption", help="caption image files, folders and globs")
    p.add_argument("paths", nargs="+")
    p.add_argument("--release", help="run folder or manifest.json; default: the shipped demo")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--beam", type=int_at_least(1), default=1, help="beam width (1: greedy)")
    p.add_argument("--top", type=int_at_least(1), default=1,
                   help="print the K best beams with scores (beam search of width >= K)")
    _add_decoding_flags(p)
    p.add_argument("--batch-size", type=int_at_least(1), default=32)
    p.add_argument("--encoder", help="an Encoder.hdf5 (with --decoder and --tokenizer): this "
                   "project's files or the earlier Keras project's (needs tf-keras)")
    p.add_argument("--decoder", help="a Decoder.hdf5 (with --encoder and --tokenizer)")
    p.add_argument("--tokenizer", help="a tokenizer.pickle (with --encoder and --decoder)")

    p = commands.add_parser("serve", help="serve a release over HTTP: a JSON API and a web page")
    from captioning.serve import add_arguments as add_serve_arguments

    add_serve_arguments(p)

    p = commands.add_parser("export", help="copy a release into saved_models/ + tokenizer/")
    p.add_argument("--release", required=True)
    p.add_argument("--models-dir", default="saved_models")
    p.add_argument("--tokenizer-dir", default="tokenizer")
    return parser


def _add_decoding_flags(parser) -> None:
    """`--length-penalty` and `--block-ngram-repeat`; None (not given): the release's."""
    parser.add_argument("--length-penalty", type=_non_negative_number, metavar="ALPHA",
                        help="beam search ranks finished captions by log_prob / length ** "
                        "ALPHA (GNMT; 0: by log-probability; larger: longer captions); "
                        "default: the release's (0.7 unless trained otherwise)")
    parser.add_argument("--block-ngram-repeat", type=int_at_least(0), metavar="N",
                        help="no N consecutive words twice in a caption (greedy and beam); "
                        "0 allows repeats; default: the release's (0 unless trained otherwise)")


def _non_negative_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


# Commands that run TensorFlow, imported with its C++ start-up lines kept off stderr.
_TF_COMMANDS = ("cache", "train", "evaluate", "caption", "export", "serve")
# Flags naming what a command writes: an OSError on a path under one "cannot write" it.
_OUTPUT_FLAGS = ("out", "json", "predictions", "per_image", "models_dir", "tokenizer_dir")


def main(argv=None) -> int:
    """Runs the CLI; returns the exit code.

    The package's progress and INFO lines go to stderr (`-q` keeps warnings and errors only,
    `-v` adds debug lines); results go to stdout. The arguments and the release manifest are
    checked before TensorFlow is imported, so a mistake there fails at once, on one line. A
    user error (`CaptioningError`, or an
    `OSError` on a named file such as an output folder that cannot be made) prints one line
    and returns 2; anything else is a bug and keeps its traceback.
    """
    from captioning.utils.logs import show_logs

    _quiet_backends()
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s")  # other libraries' lines
    try:
        with show_logs(logging.DEBUG if args.verbose else logging.INFO, quiet=args.quiet_logs):
            _check_release_first(args)
            if args.command in _TF_COMMANDS:
                check_backend()
                if not args.verbose:
                    _import_tensorflow_quietly()
            return COMMANDS[args.command](args)
    except CaptioningError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        if error.filename is None:
            raise
        print(_os_error_line(args, error), file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _check_release_first(args):
    """Refuses a missing or malformed release manifest before anything heavy loads."""
    if args.command == "evaluate" or (args.command == "caption" and not any(
            (args.encoder, args.decoder, args.tokenizer))):
        from captioning.release.manifest import read_manifest

        read_manifest(args.release)


def _import_tensorflow_quietly():
    """Imports Keras and its backend (TensorFlow or JAX), and lets the backend look for its
    devices, with their C++ start-up lines (oneDNN notes, CUDA probes, `failed call to cuInit` on a machine without
    a GPU) off stderr: they are written before logging is set up, whatever
    `TF_CPP_MIN_LOG_LEVEL` the process sets for itself. They are shown when this fails;
    `python -m captioning -v ...` shows them always."""
    if "tensorflow" in sys.modules or "keras" in sys.modules:
        return
    import tempfile

    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to redirect
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras

            if keras.backend.backend() == "tensorflow":
                import tensorflow

                tensorflow.config.list_physical_devices()
            elif keras.backend.backend() == "jax":
                import jax

                jax.devices()
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _os_error_line(args, error: OSError) -> str:
    name = os.fsdecode(error.filename)
    outputs = [Path(value).resolve() for value in (getattr(args, flag, None)
                                                   for flag in _OUTPUT_FLAGS)
               if isinstance(value, str)]
    target = Path(name).resolve()
    writing = any(target == out or out in target.parents for out in outputs)
    other = f" -> {os.fsdecode(error.filename2)}" if error.filename2 else ""
    reason = error.strerror or str(error)
    fix = "pick a folder you can write to" if writing else "check the path and its permissions"
    return f"error: cannot {'write' if writing else 'read'} {name}{other}: {reason}; {fix}"


def _synthetic(args) -> int:
    from captioning.data.synthetic import make_dataset

    path = make_dataset(args.out, n_images=args.images, seed=args.seed, format=args.format,
                        image_size=args.image_size, shapes_per_image=args.shapes)
    print(path)
    return EXIT_OK


def _read_table(args):
    from captioning.data.dataset import read_dataset

    # As notebook 01 reads it: 80/10/10 for a source without splits, COCO folders.
    table, _ = read_dataset(args.captions, args.format, args.images, strict=args.strict,
                            fold_restval=not args.no_restval)
    return table


def _download(args) -> int:
    from captioning.data.downloads import download_dataset

    progress = sys.stderr.isatty() and not args.quiet_logs
    found = download_dataset(args.dataset, args.out, timeout=args.timeout, progress=progress)
    for key, value in zip(found._fields, found):
        print(f"{key}\t{value}")
    logging.getLogger("captioning.cli").info(
        "Next: python -m captioning cache --format %s --captions %s --images %s --out CACHE",
        found.format, found.captions_file, found.images_dir)
    return EXIT_OK


def _shard_arg(text: str) -> tuple:
    """`--shard I/N`: slice I of N, 0 <= I < N."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must look like I/N (e.g. 0/4), got {text!r}"
                                         ) from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"I/N needs 0 <= I < N (slices 0/{max(count, 1)} to "
                                         f"{max(count, 1) - 1}/{max(count, 1)}), got {text!r}")
    return index, count


def _cache(args) -> int:
    from captioning.cache import build_cache, merge_caches

    if args.merge:
        print(merge_caches(args.merge, args.out))
        return EXIT_OK
    missing = [flag for flag in ("format", "captions", "images") if not getattr(args, flag)]
    if missing:
        raise ConfigError(f"cache needs --{', --'.join(missing)} (or --merge SLICE...)")
    table = _read_table(args)
    out = build_cache(table, args.images, args.out, encoder=args.encoder, weights=args.weights,
                      image_size=args.image_size, features=args.features, dtype=args.dtype,
                      batch_size=args.batch_size, shard_size=args.shard_size,
                      workers=args.workers, shard=args.shard, strict=args.strict,
                      progress=_cache_progress(args), mixed_precision=args.mixed_precision,
                      dataset=f"{args.format}: "
                              + ", ".join(Path(path).name for path in args.captions))
    print(out)
    return EXIT_OK


def _train_config(args):
    """The `--config` file's settings (else the defaults) with the flags given changing them."""
    from captioning.config import CaptionConfig

    config = CaptionConfig.load(args.config) if args.config else CaptionConfig()
    names = [field.name for field in dataclasses.fields(CaptionConfig)]
    return config.replace(**{name: getattr(args, name) for name in names if hasattr(args, name)})


def _train(args) -> int:
    import pandas as pd

    from captioning.training.train import train

    config = _train_config(args)
    result = train(args.cache, args.out, config, progress=not (args.quiet or args.quiet_logs),
                   images_dir=args.images)
    row = result.history[result.history["epoch"] == result.best_epoch].iloc[0]
    scores = ", ".join(f"{name} {row[name]:.4f}"
                       for name in ("val_loss", "val_bleu_4", "val_cider")
                       if pd.notna(row.get(name)))
    print(f"best epoch {result.best_epoch}: {scores or 'no validation split'}; "
          f"release in {result.run_dir}")
    return EXIT_OK


def _evaluate(args) -> int:
    from captioning.evaluation import evaluate_release

    scores = evaluate_release(args.release, args.cache, split=args.split, beam=args.beam,
                              predictions_path=args.predictions, per_image_path=args.per_image,
                              spice=args.spice, length_penalty=args.length_penalty,
                              block_ngram_repeat=args.block_ngram_repeat,
                              images_dir=args.images,
                              progress=sys.stderr.isatty() and not args.quiet_logs)
    Path(args.json).write_text(json.dumps(scores, indent=2, ensure_ascii=False) + "\n",
                               encoding="utf-8")
    if args.record:
        from captioning.release.manifest import record_scores

        record_scores(args.release, args.split, scores)
    print(json.dumps(scores, ensure_ascii=False))
    return EXIT_OK


def _caption(args) -> int:
    from captioning.inference.captioner import Captioner
    from captioning.data.images import find_images

    files, errors = find_images(args.paths)
    failed = 0
    for path, message in errors:
        _print_result(args, path, error=message)
        failed += 1
    files_given = [args.encoder, args.decoder, args.tokenizer]
    if any(files_given) and not all(files_given):
        raise ConfigError("--encoder, --decoder and --tokenizer go together; give all three")
    if any(files_given) and args.release:
        raise ConfigError("give either --release or --encoder/--decoder/--tokenizer, not both")
    if any(files_given) and (args.length_penalty is not None
                             or args.block_ngram_repeat is not None):
        raise ConfigError("--length-penalty and --block-ngram-repeat need a release "
                          "(--release); with --encoder/--decoder/--tokenizer leave them out")
    if files:
        progress = _show_progress(args, len(files))
        if all(files_given):
            from captioning.inference.legacy import caption_with_files

            results = caption_with_files(files, args.encoder, args.decoder, args.tokenizer,
                                         beam=max(args.beam, args.top), top=args.top,
                                         batch_size=args.batch_size, progress=progress)
        else:
            captioner = Captioner.load(args.release, batch_size=args.batch_size,
                                       length_penalty=args.length_penalty,
                                       block_ngram_repeat=args.block_ngram_repeat)
            results = captioner.caption(files, beam=max(args.beam, args.top), top=args.top,
                                        progress=progress)
        for result in results:
            if result.ok:
                _print_result(args, result.image, caption=result.caption,
                              alternatives=result.alternatives if args.top > 1 else None)
            else:
                _print_result(args, result.image, error=result.error)
                failed += 1
    if not files and not errors:
        print("error: no images given", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _cache_progress(args):
    """A bar on a terminal, else INFO lines; nothing with `--quiet`."""
    if args.quiet_logs:
        return False
    return "bar" if sys.stderr.isatty() else "log"


def _show_progress(args, count: int) -> bool:
    """A progress bar on stderr: for more than one image, when stderr is a terminal, not
    with `--quiet`, and not when `--json` lines go to a file or a pipe (another program reads
    them)."""
    piped_json = args.json and not sys.stdout.isatty()
    quiet = getattr(args, "quiet_logs", False)
    return sys.stderr.isatty() and count > 1 and not piped_json and not quiet


def _print_result(args, image, caption=None, error=None, alternatives=None):
    if args.json:
        record = {"image": image}
        if error is None:
            record["caption"] = caption
            if alternatives:
                record["top"] = [{"caption": c, "score": s} for c, s in alternatives]
        else:
            record["error"] = error
        print(json.dumps(record, ensure_ascii=False), flush=True)
    elif error is not None:
        print(f"{image}\terror: {' '.join(error.split())}", flush=True)
    elif alternatives:
        for text, score in alternatives:
            print(f"{image}\t{text}\t{score:.4f}", flush=True)
    else:
        print(f"{image}\t{caption}", flush=True)


def _export(args) -> int:
    from captioning.release import copy_release, load_release

    path = copy_release(args.release, args.models_dir, args.tokenizer_dir)
    load_release(path)
    print(path)
    return EXIT_OK


def _serve(args) -> int:
    from captioning.serve import run

    return run(args)


COMMANDS = {"synthetic": _synthetic, "download": _download, "cache": _cache, "train": _train,
            "evaluate": _evaluate, "caption": _caption, "export": _export,
            "serve": _serve}
