"""usearch, imported after XGBoost's native library when XGBoost is installed.

Measured here (usearch 2.26.6, xgboost 3.2.0): once usearch's compiled module is loaded, an XGBoost
library loaded AFTER it fails to parse its own JSON parameters ("Invalid Parameter format for nthread
expect int but value='2'") — every DMatrix, so every XGBoost prediction, fails. Loaded in the other order
both work. A gateway serves both an ANN source and XGBoost models in one process, so the order is fixed
here, in the one place usearch is imported, rather than left to whichever import happens first.
"""

from __future__ import annotations

import contextlib

with contextlib.suppress(ImportError):  # XGBoost is optional for a process that only searches
    import xgboost  # noqa: F401

import usearch
from usearch.compiled import MetricKind
from usearch.index import BatchMatches, Index

__all__ = ["BatchMatches", "Index", "MetricKind", "usearch"]
