"""Keras models: encoder specs, registered layers, encoders, decoders and the compiled search."""

