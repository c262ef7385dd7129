"""Keras models: encoder specs, registered layers, encoders, decoders and the compiled search.

Every path of the Python API that builds, loads or runs a model imports this package first,
so a backend this package does not run on (PyTorch) is refused here with one line, before
Keras starts, as the command line refuses it.
"""

from captioning.utils.backends import check_backend

check_backend()
