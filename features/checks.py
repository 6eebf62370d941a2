"""Startup checks of declarations against the running system: stores hold what views declare, engines
take what signatures declare. Each failure names the declaration's file and key path and both sides."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from features.declarations import ViewDecl
from features.errors import DeclarationError, nearest
from features.registry import FeatureRegistry
from features.signature import ModelSignature
from kvstore.base import EmbeddingStore
from kvstore.errors import StoreError, TableNotFound


async def check_views(
    registry: FeatureRegistry, stores: Mapping[str, EmbeddingStore], views: Iterable[ViewDecl] | None = None
) -> None:
    """Every view (default: all declared) has a table with a current version in its store, of the
    declared dtype and width. Raises DeclarationError listing every problem."""
    problems: dict[str, list[tuple[str, str]]] = {}
    for view in registry.views.values() if views is None else views:
        where = registry.where("view", view.name)

        def fail(key: str, message: str, where: object = where) -> None:
            problems.setdefault(where.source, []).append((f"{where.path}.{key}", message))  # type: ignore[attr-defined]

        store = stores.get(view.store)
        if store is None:
            fail("store", f"no store named {view.store!r} is configured{nearest(view.store, stores)}")
            continue
        try:
            info = await store.info(view.table)
        except TableNotFound as error:
            fail("table", f"view {view.name!r}: store {store.name!r} has no table {view.table!r} ({error})")
            continue
        except StoreError as error:
            fail("table", f"view {view.name!r}: cannot read table {view.table!r} from store {store.name!r}: {error}")
            continue
        if info.dtype != view.dtype and not (view.dtype == "float32" and info.dtype == "float16"):
            fail(
                "dtype",
                f"view {view.name!r} declares {view.dtype}, table {view.table!r}@{info.version} holds {info.dtype}",
            )
        if info.dim != view.width:
            fail(
                "features",
                f"view {view.name!r} declares {view.width} values per row, table {view.table!r}@{info.version} "
                f"holds {info.dim}",
            )
    if problems:
        source = next(iter(problems))
        raise DeclarationError(source, [issue for issues in problems.values() for issue in issues])


def check_signature_widths(signature: ModelSignature, engine_inputs: Mapping[str, Mapping[str, object]]) -> None:
    """`engine_inputs`: target label -> {input name: shape (tuple, -1 for any)} from each engine's metadata.
    The declared width of each input must equal every engine's last dimension (when it is fixed)."""
    issues = []
    for target, inputs in engine_inputs.items():
        for i, tensor in enumerate(signature.inputs):
            shape = inputs.get(tensor.name)
            if shape is None:
                issues.append(
                    (f"inputs[{i}].name", f"engine {target} has no input {tensor.name!r} (inputs: {sorted(inputs)})")
                )
                continue
            dims = tuple(shape) if isinstance(shape, tuple | list) else ()
            if len(dims) >= 2 and isinstance(dims[-1], int) and dims[-1] >= 0 and dims[-1] != tensor.width:
                issues.append(
                    (
                        f"inputs[{i}].features",
                        f"model {signature.model!r} input {tensor.name!r} declares {tensor.width} values per row, "
                        f"engine {target} takes {dims[-1]}",
                    )
                )
    if issues:
        raise DeclarationError(signature.source, issues)
