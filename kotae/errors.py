"""Errors meant for people: one line naming the bad input and what to do next."""


class KotaeError(Exception):
    """A failure the user can fix. The CLI prints ``str(error)`` as one line and exits 2; no traceback."""


class IndexUnavailable(KotaeError):
    """The index cannot be read right now (its file is damaged or gone); ``kotae serve`` answers 503."""
