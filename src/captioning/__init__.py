"""captioning: image captioning on TensorFlow/Keras 3 (placeholder, filled in by the lead)."""
