"""Moved to `captioning.training.finetune` in 0.2; this alias warns once and goes away in 0.3."""

from captioning.utils.deprecation import moved

__getattr__ = moved(__name__, ('captioning.training.finetune', 'captioning.training.batches'))
