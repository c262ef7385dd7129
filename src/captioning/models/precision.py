"""Mixed precision: the same model computing in bfloat16 or float16, its variables float32.

`PRECISIONS` names the choices: `"none"` (float32), `"bfloat16"` (GPUs since Ampere, TPUs)
and `"float16"` (older GPUs; Keras scales the loss). `policy_scope` builds models under a
mixed Keras policy; `with_precision` copies a built model (nested models included) into
another precision with the same weights. Files stay float32: the cache's encoder and the
release are saved from float32 models, so a release captions the same on any device.
"""

from __future__ import annotations

import contextlib

import keras

from captioning.config import PRECISIONS
from captioning.utils.checks import check_choice

_POLICIES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def policy_name(precision: str) -> str:
    """The Keras dtype policy of a precision (`"none"` -> `"float32"`)."""
    check_choice("mixed_precision", precision, PRECISIONS)
    return _POLICIES[precision]


@contextlib.contextmanager
def policy_scope(precision: str):
    """Layers created inside compute in `precision` (`"none"`: no change)."""
    name = policy_name(precision)
    if name == "float32":
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def with_precision(model: keras.Model, precision: str) -> keras.Model:
    """A copy of `model` whose every layer computes in `precision`, with its weights.

    Inputs keep their dtypes. Returns `model` itself when it already computes that way.
    """
    name = policy_name(precision)
    config = model.get_config()
    old = _policies(config) & set(_POLICIES.values()) - {name}
    if not old:
        return model
    copy = model.__class__.from_config(_retyped(config, old, name))
    copy.set_weights(model.get_weights())
    return copy


def _policies(value) -> set:
    """The names of the dtype policies in a model config."""
    if isinstance(value, list):
        return set().union(*map(_policies, value)) if value else set()
    if not isinstance(value, dict):
        return set()
    if value.get("class_name") == "DTypePolicy":
        return {value.get("config", {}).get("name")}
    return set().union(*map(_policies, value.values())) if value else set()


def _retyped(value, old: set, new: str):
    """`value` (a model config) with every layer policy named in `old` renamed `new`."""
    if isinstance(value, list):
        return [_retyped(item, old, new) for item in value]
    if not isinstance(value, dict):
        return value
    if value.get("class_name") == "DTypePolicy" and value.get("config", {}).get("name") in old:
        return {**value, "config": {**value["config"], "name": new}}
    return {key: _retyped(item, old, new) for key, item in value.items()}
