"""The error of a replay that cannot run as asked, shared by the replay modules.

`ReplayError` lives apart from `health.replay` so that the modules replay is built from
(`health.perturbation`, `health.comparison`) can raise it without importing replay itself; `health.replay`
re-exports it.
"""

from __future__ import annotations


class ReplayError(ValueError):
    """A replay that cannot run as asked: an unknown model, feature, source or table (with the nearest
    names), or a scorer answer that does not fit the model's signature."""
