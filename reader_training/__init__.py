"""kotae: reader_training."""
