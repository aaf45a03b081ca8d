"""Labelled datasets from a crawler db: price labels, cleaning, sampling, splits and exports.

Entry points: :func:`kofinsent.dataset.build.build_dataset` and the ``kofinsent dataset`` commands. Submodules import
pandas/numpy at their top, so import them where they are used (this package's ``__init__`` stays empty on purpose:
``kofinsent --help`` must not pay for pandas).
"""
