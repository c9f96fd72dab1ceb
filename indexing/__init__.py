"""kotae: indexing."""
