"""The one batch source of both phases: cached features or decoded images, same batching."""

import logging

import keras
import numpy as np
import pytest

from captioning.cache import FeatureCache
from captioning.training.batches import (
    CachedFeatures,
    CaptionBatches,
    DecodedImages,
    encode_images,
    usable_validation,
)


def _tokens(count, length=6):
    # Caption i is i+1 repeated: each batch says which captions it holds.
    return np.repeat(np.arange(1, count + 1, dtype=np.int32)[:, None], length, axis=1)


@pytest.fixture
def names(dataset):
    return sorted(p.name for p in (dataset / "images").glob("*.jpg"))[:5]


def test_cached_batches_pair_each_caption_with_its_features(cache):
    features = FeatureCache(cache)
    rows = np.array([3, 0, 2, 1, 4])
    batches = CaptionBatches.from_cache(features, rows, _tokens(5), 2, shuffle=False)
    assert len(batches) == 3
    (inputs, tokens_in), tokens_out = batches[0]
    np.testing.assert_array_equal(inputs, features.gather(rows[:2]))
    assert tokens_in.shape == (2, 5) and tokens_out.shape == (2, 5)
    np.testing.assert_array_equal(tokens_in[:, 0], [1, 2])
    (inputs, _), _ = batches[2]
    assert len(inputs) == 1  # the partial batch is kept without drop_remainder


def test_image_batches_with_static_shapes_drop_the_partial_batch(dataset, names):
    with CaptionBatches.from_images(dataset / "images", names, _tokens(5), 2, 75,
                                    shuffle=False, drop_remainder=True) as batches:
        assert len(batches) == 2
        (pixels, tokens_in), tokens_out = batches[1]
        assert pixels.shape == (2, 75, 75, 3) and pixels.dtype == np.float32
        assert tokens_in.shape == (2, 5)
        np.testing.assert_array_equal(tokens_in[:, 0], [3, 4])
    small = CaptionBatches.from_images(dataset / "images", names, _tokens(5), 8, 75,
                                       drop_remainder=True)
    assert len(small) == 0 and usable_validation(small, "fine-tuning") is None


def test_closing_image_batches_shuts_their_threads_down(dataset, names):
    batches = CaptionBatches.from_images(dataset / "images", names, _tokens(5), 2, 75)
    batches[0]
    batches.close()
    with pytest.raises(RuntimeError, match="shutdown"):
        batches[0]
    with DecodedImages(dataset / "images", names, 75, workers=2) as images:
        assert images(np.array([0, 4])).shape == (2, 75, 75, 3)
    with pytest.raises(RuntimeError, match="shutdown"):
        images.pixels(names[:1])


def test_both_fetchers_feed_the_same_batching(cache, dataset, names):
    # The order and the captions of a batch do not depend on what the inputs are.
    features = CachedFeatures(FeatureCache(cache), np.arange(5))
    with DecodedImages(dataset / "images", names, 75) as images:
        orders = [[batch[0][1][:, 0].tolist()
                   for batch in CaptionBatches(fetch, _tokens(5), 2, seed=3, epoch=1)]
                  for fetch in (features, images)]
    assert orders[0] == orders[1]


def test_the_order_depends_on_the_seed_the_epoch_and_the_stream(cache):
    features = FeatureCache(cache)
    rows = np.arange(20)

    def order(**kwargs):
        batches = CaptionBatches.from_cache(features, rows, _tokens(20), 20, **kwargs)
        return batches[0][0][1][:, 0].tolist()

    assert order(seed=1) == order(seed=1)
    assert order(seed=1) != order(seed=2)
    assert order(seed=1, epoch=1) != order(seed=1)
    assert order(seed=1, stream=1000) != order(seed=1)
    assert order(shuffle=False) == list(range(1, 21))
    # A resumed run (epoch 1) sees the batches of an uninterrupted run's second epoch.
    going = CaptionBatches.from_cache(features, rows, _tokens(20), 20, seed=1)
    going.on_epoch_end()
    assert going[0][0][1][:, 0].tolist() == order(seed=1, epoch=1)


def test_bad_arguments_are_refused_with_their_value(cache):
    from captioning.errors import ConfigError

    features = FeatureCache(cache)
    with pytest.raises(ConfigError, match="batch_size .* got 0"):
        CaptionBatches.from_cache(features, np.arange(3), _tokens(3), 0)
    with pytest.raises(ValueError, match="2 inputs for 3 captions"):
        CaptionBatches.from_cache(features, np.arange(2), _tokens(3), 1)


def test_usable_validation_keeps_batches_that_hold_one(cache, caplog):
    batches = CaptionBatches.from_cache(FeatureCache(cache), np.arange(4), _tokens(4), 4,
                                        drop_remainder=True)
    with caplog.at_level(logging.WARNING, logger="captioning"):
        assert usable_validation(batches, "training") is batches
        assert usable_validation(None, "training") is None
    assert caplog.text == ""


def test_encode_images_calls_the_encoder_on_small_batches_in_order():
    encoder = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.GlobalAveragePooling2D()])
    names = [f"{i}.jpg" for i in range(70)]
    asked = []

    def pixels_of(part):
        asked.append(len(part))
        return np.stack([np.full((4, 4, 3), int(name[:-4]), "float16") for name in part])

    features = encode_images(encoder, names, pixels_of, batch_size=32)
    assert asked == [32, 32, 6]
    assert features.dtype == np.float32 and features.shape == (70, 3)
    np.testing.assert_array_equal(features[:, 0], np.arange(70))
    with pytest.raises(ValueError, match="batch_size.*0"):
        encode_images(encoder, names, pixels_of, batch_size=0)
