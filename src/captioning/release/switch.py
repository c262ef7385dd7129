"""Replacing a release's files all at once: staged files, a journal, a roll-forward.

A release is four files, and a reader must never see some of a new release beside some of
the old one. So a new release is written in three steps:

1. every file that changes is written whole (tmp + fsync + rename) beside its target, as
   `.<name>.staged` (`stage`); a kill here leaves the old release as it was;
2. the journal `manifest.json.switch` is written (atomically), listing the moves; from then
   on the new release is the release;
3. each staged file is renamed over its target, `manifest.json` last, and the journal is
   removed (`finish_switch`).

Whoever finds a journal next (loading the release, the next export, the next `train`) does
step 3 again, so a kill between any two renames is rolled forward, never left half done.
Files that did not change are not staged, so re-exporting an identical release rewrites
nothing. Importing this module imports neither Keras nor TensorFlow.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from captioning.errors import ReleaseError
from captioning.utils.files import (
    JsonLimitError,
    atomic_write,
    atomic_write_json,
    describe_os_error,
    display_path,
    parse_json_limited,
    read_limited,
)

JOURNAL_FORMAT = "captioning.release-switch"
RELEASE_NAMES = frozenset({"Encoder.hdf5", "Decoder.hdf5", "tokenizer.pickle", "manifest.json"})
"""The only file names a journal may move (a journal comes with the release: it must not be
able to move anything else)."""
_MAX_JOURNAL_BYTES = 64 * 1024


def journal_path(manifest_path) -> Path:
    """The journal of the release whose manifest is `manifest_path`."""
    manifest_path = Path(manifest_path)
    return manifest_path.with_name(manifest_path.name + ".switch")


def staged_path(target) -> Path:
    """Where the new version of `target` waits for the switch: `.<name>.staged` beside it."""
    target = Path(target)
    return target.with_name(f".{target.name}.staged")


def stage(target, write) -> Path:
    """Writes the new version of `target` whole beside it (`write(tmp_path)`), fsynced.

    Raises:
        ReleaseError: the file cannot be written (a full disk: the message says so); the
            release in place is untouched.
    """
    return atomic_write(staged_path(target), write, error=ReleaseError,
                        again="export the release again")


def discard_staged(targets) -> None:
    """Removes the staged files (and their temporary files) that no journal names: what a
    kill before the switch left."""
    for target in targets:
        staged = staged_path(target)
        for path in staged.parent.glob(glob.escape(staged.name) + "*"):
            try:
                path.unlink()
            except OSError:
                pass


def switch(manifest_path, targets) -> None:
    """Moves the staged versions of `targets` over them, `manifest_path` last, through the
    journal (see the module docstring); a target without a staged version is left alone.

    Raises:
        ReleaseError: the journal cannot be written (nothing changed) or a move failed (the
            next reader completes it).
    """
    manifest_path = Path(manifest_path)
    journal = journal_path(manifest_path)
    ordered = sorted({Path(t) for t in targets}, key=lambda t: t.name == manifest_path.name)
    moves = [os.path.relpath(t, journal.parent).replace(os.sep, "/") for t in ordered
             if staged_path(t).exists()]
    if not moves:
        return
    atomic_write_json(journal, {"format": JOURNAL_FORMAT, "targets": moves},
                      error=ReleaseError, again="export the release again")
    finish_switch(manifest_path)


def finish_switch(manifest_path) -> bool:
    """Completes an interrupted switch of the release at `manifest_path`, if there is one.

    Returns:
        Whether a journal was found (and completed).

    Raises:
        ReleaseError: the journal is damaged, or the moves cannot be made (a read-only
            folder); the message names the folder and what to do.
    """
    journal = journal_path(manifest_path)
    if not os.path.lexists(journal):
        return False
    folder = journal.parent
    targets = _journal_targets(journal)
    try:
        for relative in targets:
            target = folder / relative
            staged = staged_path(target)
            if os.path.lexists(staged):
                os.replace(staged, target)
        _fsync_folders({(folder / t).parent for t in targets} | {folder})
        journal.unlink()
    except OSError as failure:
        raise ReleaseError(
            f"{display_path(folder)}: the release there was being replaced when its writing "
            f"stopped, and it cannot be completed now ({describe_os_error(failure)}); make "
            "the folder writable and load it again, or run the export again") from None
    return True


def _journal_targets(journal) -> list[str]:
    def refuse(why):
        raise ReleaseError(f"{display_path(journal)}: {why}; this is not a journal written by "
                           "captioning: delete it (and any .*.staged file beside it)")

    data = read_limited(journal, _MAX_JOURNAL_BYTES, what="release journal",
                        error=ReleaseError)
    try:
        content = parse_json_limited(data, max_depth=4, max_string=1024)
    except JsonLimitError as error:
        refuse(f"not readable ({error})")
    if not isinstance(content, dict) or content.get("format") != JOURNAL_FORMAT:
        refuse("its format is not " + JOURNAL_FORMAT)
    targets = content.get("targets")
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        refuse("'targets' is not a list of paths")
    for target in targets:
        if Path(target).name not in RELEASE_NAMES or os.path.isabs(target) or "\0" in target:
            refuse(f"it names {target[:80]!r}, which is not a release file")
    return targets


def _fsync_folders(folders) -> None:
    """Makes the renames durable (a folder's entries are data too); skipped where a folder
    cannot be opened (Windows)."""
    for folder in folders:
        try:
            descriptor = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(descriptor)
        except OSError:
            pass
        finally:
            os.close(descriptor)
