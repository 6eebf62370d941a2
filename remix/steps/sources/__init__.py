"""First-pass candidate sources: each retrieves item ids from the corpus and scores them with a first-pass model."""

from remix.steps.sources._base import Source, SourceParams
from remix.steps.sources.hashtags import HASHTAGS, HashtagsParams, HashtagsSource
from remix.steps.sources.jobs import JOBS, JobsParams, JobsSource
from remix.steps.sources.network import NETWORK, NetworkParams, NetworkSource
from remix.steps.sources.trending import TRENDING, TrendingParams, TrendingSource

__all__ = [
    "HASHTAGS",
    "JOBS",
    "NETWORK",
    "TRENDING",
    "HashtagsParams",
    "HashtagsSource",
    "JobsParams",
    "JobsSource",
    "NetworkParams",
    "NetworkSource",
    "Source",
    "SourceParams",
    "TrendingParams",
    "TrendingSource",
]
