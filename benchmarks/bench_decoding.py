"""The compiled decoding loop against a per-word `model.predict` loop, per caption.

All sides run the shipped demo release's one-step decoder (`saved_models/Decoder.hdf5`) on
the same batch of 64 encoded images (synthetic shapes at 128 px through the release's
`Encoder.hdf5`):

- `compiled greedy, batch 64`: `captioning.decoding.SequenceDecoder.decode(features)`: the
  whole search, every step and every image, is one `tf.function` call.
- `per-word predict`: the loop of the earlier Keras project: for each image on its own, one
  `decoder.predict` for the initial state, then one `decoder.predict([features, token, h0])`
  per word, argmax, stop at the end token.
- `per-word predict_on_batch`: the same loop with `predict_on_batch` instead of `predict`
  (a stronger baseline than the original: no per-call data-adapter set-up).
- `compiled greedy, batch 1`: `SequenceDecoder.decode` called once per image.
- `compiled beam 3, batch 64`: the same batch with beam width 3.

Compiled functions are warmed up before timing; their first call (tracing and compiling) is
reported separately. Each round times every side (the order rotates between rounds); ratios
are taken within a round, and the median over the rounds is reported.

Usage:
    python benchmarks/bench_decoding.py [--batch 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _features(release, count: int):
    """`count` synthetic shapes images at 128 px, encoded by the release's encoder."""
    import numpy as np

    from captioning.data.images import load_and_resize
    from captioning.data.synthetic import make_dataset

    with tempfile.TemporaryDirectory(prefix="bench_decoding-") as work:
        make_dataset(work, n_images=max(count, 10), seed=7, format="csv", image_size=128)
        images = sorted((Path(work) / "images").glob("*.jpg"))[:count]
        pixels = np.stack([load_and_resize(p, release.image_size) for p in images])
    return np.asarray(release.encoder.predict_on_batch(pixels), np.float32)


def per_word_predict(decoder, features, start_id, end_id, max_length, call="predict"):
    """The earlier Keras project's loop: one `predict` per word, per image.

    `call="predict_on_batch"` runs the same loop with `predict_on_batch`, which skips
    `predict`'s per-call data-adapter set-up (a stronger baseline than the original)."""
    import numpy as np

    if call == "predict":
        step = lambda inputs: decoder.predict(inputs, verbose=0)
    else:
        step = decoder.predict_on_batch

    names = [t.name for t in decoder.inputs]
    outputs = decoder.output_names
    state_names = names[2:]
    log_probs_at = outputs.index("log_probs")
    next_at = [outputs.index(f"next_{n}") for n in state_names]
    initial_at = [outputs.index(f"initial_{n}") for n in state_names]
    captions = []
    for row in features:
        image = row[None]
        zeros = [np.zeros((1, int(decoder.inputs[2 + i].shape[-1])), np.float32)
                 for i in range(len(state_names))]
        token = np.array([[start_id]], np.int32)
        out = step([image, token, *zeros])
        states = [out[i] for i in initial_at]
        words = []
        for _ in range(max_length):
            out = step([image, token, *states])
            word = int(np.argmax(out[log_probs_at][0]))
            words.append(word)
            if word == end_id:
                break
            token = np.array([[word]], np.int32)
            states = [out[i] for i in next_at]
        captions.append(words)
    return captions


def _strip(ids, end_id):
    ids = [int(i) for i in ids if int(i) != 0]
    return ids[:ids.index(end_id) + 1] if end_id in ids else ids


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="encoded images (default 64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    import numpy as np

    from captioning.models.search import SequenceDecoder
    from captioning.release.load import load_release

    release = load_release()
    tokenizer, config = release.tokenizer, release.config
    search = SequenceDecoder(release.decoder, start_id=tokenizer.start_id,
                             end_id=tokenizer.end_id, max_length=config.max_decode_length)
    features = _features(release, args.batch)
    count = len(features)
    print(f"bench_decoding: {os.cpu_count()} CPU cores; shipped demo decoder (GRU 256, "
          f"init_state, vocabulary {search.vocab_size}), {count} encoded images, max_length "
          f"{search.max_length}, {args.repeats} rounds")

    compile_s = {}
    for name, batch, beam in (("greedy, batch 64", features, 1), ("greedy, batch 1", features[:1], 1),
                              ("beam 3, batch 64", features, 3)):
        start = time.perf_counter()
        search.decode(batch, beam=beam)
        compile_s[name] = time.perf_counter() - start
    print("first call (trace + compile + run): " +
          ", ".join(f"{k} {v:.2f} s" for k, v in compile_s.items()))
    start = time.perf_counter()
    release.decoder.predict([features[:1], np.array([[2]], np.int32),
                             np.zeros((1, config.units), np.float32)], verbose=0)
    compile_s["predict first call"] = time.perf_counter() - start

    greedy = search.decode(features)
    compiled_ids = [_strip(ids, tokenizer.end_id) for ids in greedy.ids[:, 0]]
    mean_words = float(np.mean([len(c) for c in compiled_ids]))

    def compiled_batch(beam):
        calls = 20
        start = time.perf_counter()
        for _ in range(calls):
            search.decode(features, beam=beam)
        return (time.perf_counter() - start) / calls / count

    def compiled_single():
        start = time.perf_counter()
        for row in features:
            search.decode(row[None])
        return (time.perf_counter() - start) / count

    per_word_ids = []

    def per_word():
        start = time.perf_counter()
        per_word_ids[:] = per_word_predict(release.decoder, features, tokenizer.start_id,
                                           tokenizer.end_id, search.max_length)
        return (time.perf_counter() - start) / count

    def per_word_on_batch():
        start = time.perf_counter()
        per_word_predict(release.decoder, features, tokenizer.start_id, tokenizer.end_id,
                         search.max_length, call="predict_on_batch")
        return (time.perf_counter() - start) / count

    sides = [("compiled greedy b64", lambda: compiled_batch(1)),
             ("per-word predict", per_word),
             ("per-word predict_on_batch", per_word_on_batch),
             ("compiled greedy b1", compiled_single),
             ("compiled beam3 b64", lambda: compiled_batch(3))]
    rounds = []
    for r in range(args.repeats):
        order = sides[r % len(sides):] + sides[:r % len(sides)]
        seconds = {name: run() for name, run in order}
        ratios = {
            "per-word / compiled b64": seconds["per-word predict"] / seconds["compiled greedy b64"],
            "per-word / compiled b1": seconds["per-word predict"] / seconds["compiled greedy b1"],
            "per-word on_batch / compiled b64": (seconds["per-word predict_on_batch"]
                                                 / seconds["compiled greedy b64"]),
            "per-word on_batch / compiled b1": (seconds["per-word predict_on_batch"]
                                                / seconds["compiled greedy b1"]),
            "beam3 / greedy (b64)": seconds["compiled beam3 b64"] / seconds["compiled greedy b64"],
        }
        rounds.append({"seconds_per_caption": seconds, "ratios": ratios})
        print(f"  round {r + 1}: per caption " +
              ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in seconds.items()) + "; " +
              ", ".join(f"{k} {v:.1f}x" for k, v in ratios.items()))

    agree = sum(a == b for a, b in zip(compiled_ids, per_word_ids))
    medians = {k: statistics.median(r["ratios"][k] for r in rounds) for k in rounds[0]["ratios"]}
    per_caption = {k: statistics.median(r["seconds_per_caption"][k] for r in rounds)
                   for k in rounds[0]["seconds_per_caption"]}
    print(f"median per caption: " +
          ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in per_caption.items()))
    print(f"median ratios: per-word predict / compiled greedy batch 64: "
          f"{medians['per-word / compiled b64']:.1f}x (target >= 5x: "
          f"{'met' if medians['per-word / compiled b64'] >= 5 else 'NOT met'}); per-word "
          f"predict / compiled greedy batch 1: {medians['per-word / compiled b1']:.1f}x; "
          f"beam 3 / greedy on the batch of 64: {medians['beam3 / greedy (b64)']:.2f}x; "
          f"per-word predict_on_batch / compiled greedy batch 64: "
          f"{medians['per-word on_batch / compiled b64']:.1f}x, / batch 1: "
          f"{medians['per-word on_batch / compiled b1']:.1f}x")
    print(f"captions: {mean_words:.1f} tokens on average (end token included); the per-word "
          f"loop and the compiled greedy search agree on {agree}/{count}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"rounds": rounds, "median_ratios": medians, "median_seconds_per_caption": per_caption,
             "first_call_s": compile_s, "agree": agree, "images": count,
             "mean_tokens": mean_words}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
