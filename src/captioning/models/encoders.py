"""`build_encoder`: raw RGB pixels -> image features, as one Functional Keras model.

The model takes `(batch, size, size, 3)` float32 pixels in 0..255, applies its family's
preprocessing inside the graph (`ImagePreprocessing`, a registered layer), runs the CNN and
returns either one vector per image (`pooled`) or the spatial map flattened to regions
(`grid`). This is exactly what `Encoder.hdf5` holds in a release.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import keras
from keras import layers

from captioning.config import FEATURES
from captioning.errors import CaptioningError, ConfigError
from captioning.models.layers import ImagePreprocessing
from captioning.utils.checks import check_choice


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """What one CNN family needs: its constructor, input size and preprocessing."""

    name: str
    application: str  # the keras.applications constructor
    default_size: int
    min_size: int
    preprocessing: str  # ImagePreprocessing mode
    pooled_layer: str | None = None  # a named layer giving the pooled vector (VGG16's fc2)
    cut_layer: str | None = None  # keep the CNN only up to this layer (a smaller encoder)
    kwargs: tuple = ()


ENCODER_SPECS = {
    "inception_v3": EncoderSpec("inception_v3", "InceptionV3", 299, 75, "tf"),
    "vgg16": EncoderSpec("vgg16", "VGG16", 224, 32, "caffe", pooled_layer="fc2"),
    "resnet50": EncoderSpec("resnet50", "ResNet50", 224, 32, "caffe"),
    "mobilenet_v2": EncoderSpec("mobilenet_v2", "MobileNetV2", 224, 32, "tf"),
    # The demo's small encoder: InceptionV3's stem and first three Inception blocks (1M
    # parameters, 4 MB; ImageNet weights are the full model's, truncated). Random-weight
    # MobileNets do not tell the synthetic shapes apart (benchmarks/README.md), and Keras 3
    # cannot reload MobileNetV3 from .hdf5 (its hard-swish is a functional `x + 3.0` op).
    "inception_v3_mixed2": EncoderSpec("inception_v3_mixed2", "InceptionV3", 299, 75, "tf",
                                       cut_layer="mixed2"),
}

OFFLINE_HINT = (
    "Downloading the ImageNet weights needs internet access. Pass a local weights file "
    "instead (--weights PATH, an .h5 file as Keras publishes them, e.g. copied from "
    "~/.keras/models on a machine that has them), or --weights none for random weights."
)
NOTEBOOK_OFFLINE_HINT = (
    "Downloading the ImageNet weights needs internet access. In the parameters cell, set "
    'WEIGHTS = "/path/to/weights.h5" (a local .h5 file as Keras publishes them, e.g. copied '
    'from ~/.keras/models on a machine that has them), or WEIGHTS = "none" for random '
    "weights."
)
# Words of a transfer that started and stopped (rather than one that could not start).
_DROPPED = ("retrieval incomplete", "incomplete or corrupted file", "incompleteread",
            "connection reset", "connection aborted", "connection broken", "timed out",
            "timeout", "remotedisconnected", "truncated")


def encoder_spec(name: str) -> EncoderSpec:
    """The `EncoderSpec` of a family name, or a ConfigError listing the known ones."""
    check_choice("encoder", name, sorted(ENCODER_SPECS))
    return ENCODER_SPECS[name]


def build_encoder(
    encoder: str = "inception_v3",
    weights: str | None = "imagenet",
    image_size: int | None = None,
    features: str = "pooled",
) -> keras.Model:
    """Builds the image encoder.

    Args:
        encoder: CNN family, a key of `ENCODER_SPECS`.
        weights: `"imagenet"` (downloaded by Keras), `"none"`/`None` (random), or the path
            of a local `.h5` weights file.
        image_size: input side in pixels; None takes the family's default.
        features: `"pooled"` -> `(batch, dim)`; `"grid"` -> `(batch, regions, dim)`.

    Returns:
        A Functional model named `encoder`, input `image`, output layer `features`.

    Example:
    >>> model = build_encoder("inception_v3", weights="none", image_size=75)
    >>> model.output.shape
    (None, 2048)
    """
    spec = encoder_spec(encoder)
    check_choice("features", features, FEATURES)
    size = image_size or spec.default_size
    if size < spec.min_size:
        raise ConfigError(f"{encoder} needs images of at least {spec.min_size} px, got {size}")
    use_top = features == "pooled" and spec.pooled_layer is not None
    if use_top and size != spec.default_size:
        raise ConfigError(
            f"{encoder} pooled features come from its {spec.pooled_layer} layer, which needs "
            f"{spec.default_size} px images, got {size}; use --image-size {spec.default_size} "
            "or --features grid"
        )
    backbone = _backbone(spec, _keras_weights(weights), size, include_top=use_top)

    image = keras.Input((size, size, 3), dtype="float32", name="image")
    x = ImagePreprocessing(spec.preprocessing, name="preprocessing")(image)
    if use_top:
        x = keras.Model(backbone.input, backbone.get_layer(spec.pooled_layer).output,
                        name=backbone.name)(x)
    else:
        x = backbone(x)
        if features == "pooled":
            x = layers.GlobalAveragePooling2D(name="pool")(x)
        else:
            height, width, dim = x.shape[1:]
            x = layers.Reshape((height * width, dim), name="regions")(x)
    output = layers.Identity(name="features")(x)
    return keras.Model(image, output, name="encoder")


def _keras_weights(weights):
    if weights is None or str(weights).lower() == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(
            f"weights must be 'imagenet', 'none' or a weights file; {weights!r} is not a file"
        )
    return str(path)


def _backbone(spec, weights, size, include_top):
    model = _application(spec, weights, size, include_top)
    if spec.cut_layer is None:
        return model
    return keras.Model(model.input, model.get_layer(spec.cut_layer).output, name=spec.name)


def _application(spec, weights, size, include_top):
    constructor = getattr(keras.applications, spec.application)
    try:
        return constructor(
            include_top=include_top,
            weights=weights,
            input_shape=(size, size, 3),
            **dict(spec.kwargs),
        )
    except Exception as error:
        if weights == "imagenet" and (_dropped(error) or _looks_offline(error)):
            raise CaptioningError(_download_failure(spec.name, error)) from None
        if weights not in (None, "imagenet"):
            raise CaptioningError(
                f"{weights}: cannot load it as {spec.name} weights "
                f"({str(error).splitlines()[0][:200]}). Use the .h5 file Keras publishes for "
                f"{spec.application} (the 'notop' one unless you use VGG16 pooled features)."
            ) from None
        raise


def _download_failure(name: str, error: Exception) -> str:
    """The whole cause of a failed ImageNet weights download, and what to do, in the words
    of the interface the user has: a notebook's parameters, or the CLI's flags."""
    cause = f"{error.__class__.__name__}: {' '.join(str(error).split())}"
    if error.__cause__ is not None and str(error.__cause__) not in str(error):
        cause += f" ({' '.join(str(error.__cause__).split())})"
    hint = NOTEBOOK_OFFLINE_HINT if _in_notebook() else OFFLINE_HINT
    if _dropped(error):
        instead = hint.split(". ", 1)[1]
        return (f"The download of the ImageNet weights of {name} stopped part way ({cause}). "
                "Run it again: Keras downloads the file afresh. If it keeps stopping, "
                f"{instead[0].lower()}{instead[1:]}")
    return f"Cannot download the ImageNet weights of {name} ({cause}). {hint}"


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter or Colab kernel (its user sets notebook parameters)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _dropped(error: Exception) -> bool:
    text = f"{error.__class__.__name__} {error} {error.__cause__ or ''}".lower()
    return any(word in text for word in _DROPPED)


def _looks_offline(error: Exception) -> bool:
    text = f"{error.__class__.__name__} {error}".lower()
    return any(word in text for word in ("url", "fetch", "connection", "resolve", "network",
                                         "http", "timed out", "unreachable"))
