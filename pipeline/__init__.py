"""kotae: pipeline."""
