"""The release contract: manifest, export and verified loading of the three files."""

from captioning.release.load import (  # noqa: F401
    RELEASE_FORMAT,
    DEFAULT_RELEASE,
    export_release,
    write_manifest,
    record_scores,
    copy_release,
    Release,
    read_manifest,
    verify_release,
    load_release,
)

__all__ = [
    "DEFAULT_RELEASE",
    "RELEASE_FORMAT",
    "Release",
    "copy_release",
    "export_release",
    "load_release",
    "read_manifest",
    "record_scores",
    "verify_release",
    "write_manifest",
]
