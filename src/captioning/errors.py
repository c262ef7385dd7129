"""The exceptions raised for mistakes a user can make.

Every error that a user can cause (a bad path, a bad image, a bad file, a mismatched
release) is a `CaptioningError`. The CLI prints its message on one line and exits
non-zero; anything else is a bug and keeps its traceback.
"""


class CaptioningError(Exception):
    """Base of every error caused by the user's input rather than by a bug."""


class ConfigError(CaptioningError, ValueError):
    """A setting has a value that cannot work."""


class DatasetError(CaptioningError):
    """A captions file is missing, malformed or does not match its images."""


class ImageError(CaptioningError):
    """An image file cannot be read as a picture."""


class UnsafeFileError(CaptioningError):
    """A file would run code or name something it must not when loaded."""


class CacheError(CaptioningError):
    """A feature cache is missing, incomplete or was made differently."""


class ReleaseError(CaptioningError):
    """A release (Encoder.hdf5, Decoder.hdf5, tokenizer.pickle, manifest.json) is
    missing, tampered with, or its files do not fit together."""


class MetricsError(CaptioningError):
    """The caption metrics cannot run: Java is missing, or a Java scorer (the PTB tokenizer,
    METEOR) failed."""
