"""The release contract: manifest, export and verified loading of the three files.

- `manifest`: the format, versions, file hashes; reading and checking it (no Keras import);
- `export`: writing a release after training, copying it into the repository layout;
- `load`: `Release`, `verify_release`, `load_release` and the checks that the files fit;
- `legacy`: the earlier Keras project's `.hdf5` files, checked against allow-lists and
  loaded with tf-keras;
- `limits`: the sizes a genuine release stays within (`SECURITY.md`);
- `model_file`: a model file's declared sizes, classes, names and activations, checked
  before Keras allocates anything for it;
- `model_bytes`: model and weight files made in memory (a full disk is then one line);
- `switch`: replacing a release's files all at once (staged files, a journal, a roll-forward).

Importing this package imports neither Keras nor TensorFlow.
"""

from captioning.release.export import copy_release, export_release  # noqa: F401
from captioning.release.legacy import (  # noqa: F401
    ALLOWED_ACTIVATIONS,
    ALLOWED_LAYERS,
    ALLOWED_MODULES,
    ALLOWED_OBJECTS,
    ALLOWED_TF_FUNCTIONS,
    ALLOWED_TF_OPS,
    TF_KERAS_MISSING,
    check_legacy_model,
    is_legacy_model,
    load_legacy_model,
)
from captioning.release.load import (  # noqa: F401
    Release,
    check_fit,
    load_model_file,
    load_release,
    verify_release,
)
from captioning.release.manifest import (  # noqa: F401
    DECODER_FILE,
    DEFAULT_RELEASE,
    ENCODER_FILE,
    MANIFEST_FILE,
    RELEASE_FORMAT,
    RELEASE_VERSION,
    TOKENIZER_FILE,
    read_manifest,
    record_scores,
    write_manifest,
)

__all__ = [
    "ALLOWED_ACTIVATIONS",
    "ALLOWED_LAYERS",
    "ALLOWED_MODULES",
    "ALLOWED_OBJECTS",
    "ALLOWED_TF_FUNCTIONS",
    "ALLOWED_TF_OPS",
    "DECODER_FILE",
    "DEFAULT_RELEASE",
    "ENCODER_FILE",
    "MANIFEST_FILE",
    "RELEASE_FORMAT",
    "RELEASE_VERSION",
    "Release",
    "TF_KERAS_MISSING",
    "TOKENIZER_FILE",
    "check_fit",
    "check_legacy_model",
    "copy_release",
    "export_release",
    "is_legacy_model",
    "load_legacy_model",
    "load_model_file",
    "load_release",
    "read_manifest",
    "record_scores",
    "verify_release",
    "write_manifest",
]
