"""One Triton peer and one TF Serving conformance peer per pytest session, whichever suite asks first.

Session fixtures in different directories (tests/contract, tests/integration/federation) are separate
fixture definitions to pytest, so each would start its own servers; these helpers keep the single
instance in the session's `config.stash` and stop it when the session ends (`config.add_cleanup`),
whatever the outcome.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.peers.tfserving_peer import MODEL, TFServingPeer, export_ranker_versions, start_tfserving_peer
from tests.peers.triton_server import TritonPeer, new_access_token, start_triton_peer

# The TF peer's faulty twins of the ranker: served name -> behaviour (see tfserving_conformance_peer.py).
TF_SLOW = f"{MODEL}_slow"
TF_FIELDS = f"{MODEL}_fields"  # answers with float_val, not tensor_content
TF_MALFORMED = {kind: f"{MODEL}_bad_{kind}" for kind in ("shape", "dtype", "size", "missing", "nan")}
TF_LABELS = {"stable": 1, "canary": 2}
TF_SLOW_S = 1.0

_TRITON = pytest.StashKey[TritonPeer]()
_TFSERVING = pytest.StashKey[TFServingPeer]()
_TF_MODELS = pytest.StashKey[Path]()


def session_tf_models(config: pytest.Config, world_dir: Path, tmp_root: Path) -> Path:
    """The ranker exported as SavedModel versions 1 and 2 (TF Serving layout), once per session."""
    if _TF_MODELS not in config.stash:
        config.stash[_TF_MODELS] = export_ranker_versions(world_dir, tmp_root / "tf_models" / MODEL)
    return config.stash[_TF_MODELS]


def session_tfserving_peer(config: pytest.Config, world_dir: Path, tmp_root: Path) -> TFServingPeer:
    """The conformance peer serving `feed_ranker` (labels stable=1, canary=2) and its faulty twins."""
    if _TFSERVING not in config.stash:
        base = session_tf_models(config, world_dir, tmp_root)
        stack = ExitStack()
        config.add_cleanup(stack.close)
        behaviours = {TF_SLOW: f"slow:{TF_SLOW_S}", TF_FIELDS: "reply:fields"} | {
            name: f"malformed:{kind}" for kind, name in TF_MALFORMED.items()
        }
        config.stash[_TFSERVING] = stack.enter_context(
            start_tfserving_peer(
                {MODEL: base, **dict.fromkeys(behaviours, base)},
                labels={MODEL: TF_LABELS},
                behaviours=behaviours,
            )
        )
    return config.stash[_TFSERVING]


def session_triton_peer(config: pytest.Config, world_dir: Path) -> TritonPeer:
    """The Triton server (PyTriton) serving `feed_ranker`, `feed_ranker_slow`, `feed_ranker_malformed`,
    with PyTriton's protected endpoints behind an access token the tests know."""
    if _TRITON not in config.stash:
        stack = ExitStack()
        config.add_cleanup(stack.close)
        config.stash[_TRITON] = stack.enter_context(start_triton_peer(world_dir, access_token=new_access_token()))
    return config.stash[_TRITON]
