"""The deterministic demo world: corpus, embedding tables and first- and second-pass models, from a seed.

`build_world` makes one (torch and xgboost are imported only while building); `load_manifest` reads
what a built world holds.
"""

from quasar.demo.build import WorldBuildError, WorldManifest, build_world, load_manifest

__all__ = ["WorldBuildError", "WorldManifest", "build_world", "load_manifest"]
