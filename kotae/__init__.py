"""kotae: kotae."""
