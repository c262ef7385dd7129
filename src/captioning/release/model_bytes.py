"""Keras model and weight files made in memory, so that only plain byte writes touch the disk.

HDF5 reports a failed write (a full disk, a file size limit) from inside its C library, and
h5py then crashes the process when it closes the half-written file (a segfault, exit 139, no
message). So the `.hdf5` model files of a release and the `.weights.h5` checkpoints are built
in memory, and their bytes are written with `captioning.utils.files.atomic_write`, where a
full disk is an `OSError` and one line.

The in-memory writers are Keras' own (`keras.src`): `save_model_to_hdf5` for a model file,
`H5IOStore` over an `io.BytesIO` for a weights file, so the bytes are exactly those
`model.save` and `model.save_weights` write. Should a Keras version lack them, the file is
written with the public API into a temporary folder that has room for it (checked first),
and read back.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

from captioning.errors import CaptioningError
from captioning.utils.files import format_size

logger = logging.getLogger(__name__)


def model_file_bytes(model) -> bytes:
    """The `.hdf5` file `model.save("x.hdf5")` writes (without an optimizer), as bytes."""
    try:
        import h5py
        from keras.src.legacy.saving.legacy_h5_format import save_model_to_hdf5
    except ImportError:
        return _through_temporary_file(model, "model.hdf5",
                                       lambda path: model.save(path, include_optimizer=False))
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        save_model_to_hdf5(model, handle, include_optimizer=False)
    return buffer.getvalue()


def weights_file_bytes(model) -> bytes:
    """The `.weights.h5` file `model.save_weights` writes (weights and optimizer), as bytes."""
    try:
        from keras.src.saving import saving_lib

        store_class, save_state = saving_lib.H5IOStore, saving_lib._save_state
    except (ImportError, AttributeError):
        return _through_temporary_file(model, "model.weights.h5", model.save_weights,
                                       optimizer=True)
    buffer = io.BytesIO()
    store = store_class(buffer, mode="w")
    try:
        save_state(model, weights_store=store, assets_store=None, inner_path="",
                   visited_saveables=set())
    finally:
        store.close()
    return buffer.getvalue()


def _through_temporary_file(model, name, save, *, optimizer=False) -> bytes:
    variables = list(model.variables)
    if optimizer and getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    needed = 2 * sum(math.prod(v.shape) * _itemsize(v.dtype) for v in variables) + 2**20
    with tempfile.TemporaryDirectory(prefix="captioning-") as folder:
        free = shutil.disk_usage(folder).free
        if free < needed:
            raise CaptioningError(
                f"{folder}: {format_size(free)} free, but writing {name} needs about "
                f"{format_size(needed)}; free some space (or set TMPDIR to a roomier folder) "
                "and run the same command again")
        path = Path(folder) / name
        save(os.fspath(path))
        return path.read_bytes()


def _itemsize(dtype) -> int:
    import numpy as np

    try:
        return np.dtype(str(dtype)).itemsize
    except TypeError:
        return 4
