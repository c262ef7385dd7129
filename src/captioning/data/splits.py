"""Train/val/test splits for a source that gives none (an own CSV, Flickr30k's token file)."""

import hashlib

from captioning.data.table import SPLITS, check_columns
from captioning.errors import ConfigError
from captioning.utils.checks import check_int, is_number

__all__ = ["DEFAULT_SPLIT_FRACTIONS", "assign_splits"]

DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


def assign_splits(table, fractions=DEFAULT_SPLIT_FRACTIONS, seed=0):
    """Gives a train/val/test split to the images whose captions have none.

    All captions of an image go to the same split. The images without one are
    ordered by a SHA-256 hash of `seed` and their name, and the first
    `fractions[0]` of them go to `"train"`, the next `fractions[1]` to `"val"`,
    the rest to `"test"` (counts rounded, so they add up). The outcome depends
    only on the set of image names and `seed`: the same file splits the same
    way in every run and on every machine. Images that already have a split,
    on any of their rows, keep it, and so do their rows without one.

    Args:
        table: A table from `read_captions` (`image` and `split` columns).
        fractions: The `(train, val, test)` fractions, each >= 0, adding up to
            1.
        seed: Another seed gives another split.

    Returns:
        A copy of `table` with the empty splits filled. Its
        `attrs["splits_assigned"]` holds `{"images": {split: count},
        "fractions": [...], "seed": seed}` for the images it assigned.

    Raises:
        ConfigError: `fractions` or `seed` has a value that cannot work, or
            `table` lacks the `image` or `split` column.
    """
    fractions = check_fractions(fractions)
    check_int("seed", seed)
    check_columns(table, ("image", "split"), "assign_splits")
    split = table["split"].fillna("").astype(str)
    empty = split.eq("")
    known = dict(zip(table.loc[~empty, "image"], split[~empty]))
    todo = sorted(set(table.loc[empty, "image"]) - set(known),
                  key=lambda name: (_stable_hash(seed, name), name))
    bounds = [0]
    total = 0.0
    for fraction in fractions:
        total += fraction
        bounds.append(int(total * len(todo) + 0.5))
    bounds[-1] = len(todo)
    assigned = {}
    for name, start, stop in zip(SPLITS, bounds, bounds[1:]):
        assigned.update((image, name) for image in todo[start:stop])
    filled = table.copy()
    filled.attrs = dict(table.attrs)
    filled.loc[empty, "split"] = table.loc[empty, "image"].map({**assigned, **known})
    filled.attrs["splits_assigned"] = {
        "images": {name: stop - start for name, start, stop in zip(SPLITS, bounds, bounds[1:])},
        "fractions": list(fractions),
        "seed": int(seed),
    }
    return filled


def check_fractions(fractions):
    """The `(train, val, test)` fractions as floats, or a `ConfigError` showing them."""
    try:
        values = tuple(fractions)
    except TypeError:
        values = ()
    if (
        len(values) != 3
        or not all(is_number(v) for v in values)
        or min(values) < 0
        or abs(sum(values) - 1.0) > 1e-6
    ):
        raise ConfigError(
            "split fractions must be three numbers >= 0 for train, val and test that add up "
            f"to 1, like (0.8, 0.1, 0.1); got {fractions!r}."
        )
    return tuple(float(v) for v in values)


def _stable_hash(seed, name):
    return hashlib.sha256(f"{seed}:{name}".encode("utf-8", "surrogatepass")).digest()
