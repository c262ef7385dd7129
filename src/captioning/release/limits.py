"""The sizes a genuine release stays within, checked before anything is allocated.

A release is data a user may have downloaded from anyone, and its hashes only prove that the
files are the ones its manifest lists. So every size a file declares is checked against
these limits (and against the file's own size) before memory is allocated for it, and a
file beyond one is refused with one line naming the file and the value. Each limit is far
above what a release of this project holds; `SECURITY.md` lists the hostile files tried.
"""

from __future__ import annotations

MAX_MANIFEST_BYTES = 4 * 2**20
"""`manifest.json`: the config, hashes, versions and scores (a genuine one: ~3 KB)."""

MAX_MODEL_BYTES = 2**30
"""`Encoder.hdf5` / `Decoder.hdf5` (InceptionV3 with its weights: ~90 MB)."""

MAX_MODEL_CONFIG_BYTES = 16 * 2**20
"""A model file's JSON `model_config` (InceptionV3's: ~0.3 MB)."""

MAX_JSON_DEPTH = 64
"""How deep a manifest or a model config nests (a genuine one: under 20 levels)."""

MAX_JSON_INT_DIGITS = 20
"""The longest integer in a manifest or a model config (a 64-bit integer has 20 digits)."""

MAX_STRING_LENGTH = 4096
"""The longest string in a manifest or a model config."""

MAX_NAME_LENGTH = 256
"""The longest model or layer name: names end up in the name of every operation traced, so
a long one is copied thousands of times when captioning."""

MAX_IMAGE_SIDE = 2048
"""The largest encoder input side in pixels (InceptionV3: 299)."""

MAX_TENSOR_ELEMENTS = 2**24
"""The most numbers one image's tensor may hold at any layer (64 MiB of float32);
InceptionV3 at 1024 px peaks at 16.5 million."""

MAX_DECODE_LENGTH = 1000
"""The most words generated per caption (`max_decode_length`; the search sizes its buffers
up front)."""

MAX_VOCAB_SIZE = 10_000_000
"""The largest vocabulary a manifest may record."""

MAX_FEATURE_ELEMENTS = 2**22
"""The most numbers of one image's features (InceptionV3's grid: 64 x 2048)."""

MAX_STATE_UNITS = 65536
"""The most units of one recurrent state."""
