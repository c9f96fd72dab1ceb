"""Reader training on a lent GPU machine: pack here, train there, unpack here (see ``DEVICE.md``).

- :mod:`~kotae.reader_training.device.pack` — tokenise, window and label the data with
  ``kotae train``'s own functions and write a bundle small enough to travel.
- :mod:`~kotae.reader_training.device.train` — train from the bundle with torch, transformers and
  numpy only (run from a bare checkout: ``python3 -m kotae.reader_training.device.train``).
- :mod:`~kotae.reader_training.device.unpack` — the returned weights back into a reader folder.
- :mod:`~kotae.reader_training.device.bundle` — the bundle's format, shared by all three.

Maintainer tooling: it is not in the wheel. Sharding and checksums come from
:mod:`kotae.weight_files`, windowing from :func:`kotae.reader_training.train.training_windows`.
"""
