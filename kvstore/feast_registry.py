"""Feast feature views as Quasar serves them, read once at startup from a Feast registry.

`load_feast_repo` reads a Feast repository (or a bare registry file) through Feast's registry API into
plain dataclasses: what `kvstore.feast_store.FeastRedisStore` needs to read Feast's Redis layout, and what
`views_from_feast` turns into Quasar's feature declaration document (entities + views). Feast is the
optional `feast` extra, imported inside the functions that read a registry: never on the request path.

Quasar serves a Feast view when it joins on exactly one entity whose join key is an int64, and every
feature is a float32/float64/int32/int64/bool scalar or a fixed-length list of those. A list's length is
`Field(vector_length=N)`, else the field tag `length`. Other views are listed in `FeastRepo.unsupported`
with the reason (their strings, maps, bytes or timestamps have no place in a numeric row).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS: tuple[str, ...] = ("float32", "float64", "int32", "int64", "bool")
"""Element kinds of a servable Feast feature (scalar or fixed-length list)."""

ENTITY_KEY_VERSIONS: tuple[int, ...] = (2, 3)
"""Feast entity key serialization versions this layout reads (Feast's default is 3; 2 is deprecated)."""

_INTEGER_KINDS = frozenset({"int32", "int64", "bool"})
# Feast ValueType name -> (element kind, is a list)
_VALUE_TYPES: dict[str, tuple[str, bool]] = {
    "FLOAT": ("float32", False),
    "DOUBLE": ("float64", False),
    "INT32": ("int32", False),
    "INT64": ("int64", False),
    "BOOL": ("bool", False),
    "FLOAT_LIST": ("float32", True),
    "DOUBLE_LIST": ("float64", True),
    "INT32_LIST": ("int32", True),
    "INT64_LIST": ("int64", True),
    "BOOL_LIST": ("bool", True),
}
_ENTITY_KEYS = ("request", "candidate")
_QUASAR_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")  # names in Quasar's feature declarations


class UnsupportedFeastView(ValueError):
    """A Feast feature view Quasar cannot serve; the message names the view (and feature) and why."""


@dataclass(frozen=True)
class FeastFeature:
    """One feature of a view: a scalar (`length` None) or a list of exactly `length` elements."""

    name: str
    kind: str  # one of KINDS
    length: int | None = None
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return () if self.length is None else (self.length,)

    @property
    def width(self) -> int:
        """Columns this feature takes in the row."""
        return 1 if self.length is None else self.length


@dataclass(frozen=True)
class FeastView:
    """A servable Feast feature view. The row of an entity is its features concatenated in order.

    `online_name` is the name in the online store's hash fields (`<name>_v<N>` when Feast's online
    feature view versioning is on, else `name`). `ttl_s` is None when Feast's ttl is 0 (no limit).
    """

    name: str
    online_name: str
    entity: str
    join_key: str
    features: tuple[FeastFeature, ...]
    ttl_s: float | None = None
    owner: str = ""
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return sum(f.width for f in self.features)

    @property
    def dtype(self) -> str:
        """The row's dtype in Quasar's terms: int64 when every feature is an integer or bool (served
        exactly), else float32 (float64 features narrow to float32, integers beyond 2**24 round)."""
        return "int64" if all(f.kind in _INTEGER_KINDS for f in self.features) else "float32"

    def digest(self, project: str, entity_key_version: int) -> str:
        """12 hex digits naming everything that decides how rows are read (project, names, features,
        types, lengths, ttl, key format): equal across processes for an unchanged definition."""
        spec = {
            "project": project,
            "view": self.name,
            "online_name": self.online_name,
            "join_key": self.join_key,
            "features": [(f.name, f.kind, f.length) for f in self.features],
            "ttl_s": self.ttl_s,
            "entity_key_version": entity_key_version,
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class FeastRepo:
    """What Quasar read from one Feast project's registry.

    `redis_url` is the repository's Redis online store as a redis:// URL; None when the repository names
    none (read from a bare registry) or one Quasar cannot read (`online_store_problem` says why).
    """

    project: str
    views: Mapping[str, FeastView]
    unsupported: Mapping[str, str]  # view name -> why Quasar cannot serve it
    entities: Mapping[str, str]  # entity name -> description
    entity_key_version: int = 3
    redis_url: str | None = None
    online_store_problem: str = ""


def load_feast_repo(
    repo_path: Path | None = None, *, registry_path: Path | None = None, project: str | None = None
) -> FeastRepo:
    """Read the feature views of one Feast project. Blocking (file I/O, Feast's import): startup only.

    Exactly one of `repo_path` (a directory with feature_store.yaml: its registry, project, online store
    and entity key version) or `registry_path` (a registry file; `project` required, key version 3, no
    online store) is given. `project` overrides the repository's. ValueError for a missing registry or
    project, or an entity key serialization version Quasar does not read.
    """
    if (repo_path is None) == (registry_path is None):
        raise ValueError("give exactly one of repo_path (a Feast repository) or registry_path (a registry file)")
    if repo_path is not None:
        from feast import FeatureStore

        if not (repo_path / "feature_store.yaml").is_file():
            raise ValueError(f"{repo_path} is not a Feast repository: it has no feature_store.yaml")
        store = FeatureStore(repo_path=str(repo_path))
        config = store.config
        registry = store.registry
        project = project or config.project
        key_version = int(config.entity_key_serialization_version)
        versioning = bool(getattr(config.registry, "enable_online_feature_view_versioning", False))
        redis_url, problem = _online_store(config.online_store)
    else:
        from feast.infra.registry.registry import Registry
        from feast.repo_config import RegistryConfig

        assert registry_path is not None
        if not project:
            raise ValueError("a Feast project is required to read a bare registry file")
        if not registry_path.is_file():
            raise ValueError(f"no Feast registry file at {registry_path}")
        registry = Registry(project, RegistryConfig(path=str(registry_path)), repo_path=None)
        key_version, versioning = 3, False
        redis_url, problem = None, "a bare registry names no online store: configure the Redis URL"
    if key_version not in ENTITY_KEY_VERSIONS:
        raise ValueError(
            f"Feast entity_key_serialization_version {key_version} is not read by Quasar "
            f"(supported: {list(ENTITY_KEY_VERSIONS)})"
        )
    entities = {entity.name: entity for entity in registry.list_entities(project)}
    feature_views = registry.list_feature_views(project)
    if not feature_views and not entities:
        known = sorted(p.name for p in registry.list_projects())
        raise ValueError(f"Feast project {project!r} has no entities or feature views; projects: {known}")
    views: dict[str, FeastView] = {}
    unsupported: dict[str, str] = {}
    for feature_view in sorted(feature_views, key=lambda fv: str(fv.name)):
        try:
            views[feature_view.name] = _view(feature_view, entities, versioning)
        except UnsupportedFeastView as why:
            unsupported[feature_view.name] = str(why)
    return FeastRepo(
        project=project,
        views=views,
        unsupported=unsupported,
        entities={name: str(entity.description or "") for name, entity in entities.items()},
        entity_key_version=key_version,
        redis_url=redis_url,
        online_store_problem=problem,
    )


def views_from_feast(
    repo_path: Path,
    project: str | None = None,
    *,
    views: Sequence[str] | None = None,
    entity_keys: Mapping[str, str] | None = None,
    store: str | None = None,
) -> dict[str, Any]:
    """Quasar's feature declaration document (`entities`, `views`) for the Feast repository at
    `repo_path`: every feature view, or those named in `views`.

    Each view's `table` is its Feast name (what `FeastRedisStore` serves), features keep Feast's schema
    order with default 0, `max_age_s` is Feast's ttl (absent when 0), tags (of views and features) become
    "key=value" strings ("key" for an empty value), and `store` (when given) names the configured store
    serving them. An entity's `key` is "request" unless `entity_keys` maps it ("request", "candidate" or
    "<view>.<feature>"). Raises `UnsupportedFeastView` naming the view and feature for a view Quasar
    cannot serve or whose names are not Quasar names (lowercase identifiers), ValueError for an unknown
    view name.
    """
    repo = load_feast_repo(repo_path, project=project)
    return declarations(repo, views=views, entity_keys=entity_keys, store=store)


def declarations(
    repo: FeastRepo,
    *,
    views: Sequence[str] | None = None,
    entity_keys: Mapping[str, str] | None = None,
    store: str | None = None,
) -> dict[str, Any]:
    """The declaration document for `repo` (see `views_from_feast`)."""
    names = list(views) if views is not None else sorted([*repo.views, *repo.unsupported])
    for name in names:
        if name in repo.unsupported:
            raise UnsupportedFeastView(repo.unsupported[name])
        if name not in repo.views:
            raise ValueError(
                f"Feast project {repo.project!r} has no feature view {name!r}; views: {sorted(repo.views)}"
            )
    chosen = [repo.views[name] for name in names]
    for view in chosen:
        for kind, name in (("view", view.name), ("entity", view.entity), *(("feature", f.name) for f in view.features)):
            if not _QUASAR_NAME.fullmatch(name):
                raise UnsupportedFeastView(
                    f"Feast view {view.name!r}: {kind} name {name!r} is not a Quasar name ([a-z][a-z0-9_]*, "
                    "at most 64 characters)"
                )
    keys = dict(entity_keys or {})
    for entity, key in keys.items():
        if key not in _ENTITY_KEYS and "." not in key:
            raise ValueError(
                f"entity {entity!r}: key must be 'request', 'candidate' or '<view>.<feature>', got {key!r}"
            )
    used = sorted({view.entity for view in chosen})
    entities = [
        {"name": name, "key": keys.get(name, "request"), "description": repo.entities.get(name, "")} for name in used
    ]
    return {"entities": entities, "views": [_declaration(view, store) for view in chosen]}


def redis_url(connection_string: str) -> str:
    """Feast's Redis `connection_string` ("host:port,db=1,password=…,username=…") as a redis:// URL.
    ValueError for options Quasar's client does not speak (ssl)."""
    from urllib.parse import quote

    address, *options = [part.strip() for part in connection_string.split(",") if part.strip()]
    settings: dict[str, str] = {}
    for option in options:
        name, sep, value = option.partition("=")
        if not sep:
            raise ValueError(f"Feast connection_string option {option!r} is not name=value")
        settings[name.strip().lower()] = value.strip()
    if settings.get("ssl", "false").lower() == "true":
        raise ValueError("Feast's Redis connection uses ssl, which Quasar's Redis client does not speak")
    host, _, port = address.rpartition(":") if ":" in address else (address, "", "6379")
    user = quote(settings.get("username", ""), safe="")
    password = quote(settings.get("password", ""), safe="")
    auth = f"{user}:{password}@" if password else ""
    return f"redis://{auth}{host or 'localhost'}:{port or 6379}/{int(settings.get('db', 0))}"


# -- conversion ------------------------------------------------------------------------------------------


def _online_store(online_store: Any) -> tuple[str | None, str]:
    kind = str(getattr(online_store, "type", "") or "")
    if kind != "redis" and not kind.endswith("RedisOnlineStore"):
        return None, f"the repository's online store is {kind or 'unknown'!r}, not redis"
    redis_type = str(getattr(getattr(online_store, "redis_type", None), "value", "redis"))
    if redis_type != "redis":
        return None, f"the repository's Redis is a {redis_type}; Quasar reads Feast's layout on a single Redis server"
    try:
        return redis_url(str(online_store.connection_string)), ""
    except ValueError as error:
        return None, str(error)


def _view(feature_view: Any, entities: Mapping[str, Any], versioning: bool) -> FeastView:
    name = str(feature_view.name)
    if not getattr(feature_view, "online", True):
        raise UnsupportedFeastView(f"Feast view {name!r} is not online (online=False)")
    entity_names = [e for e in feature_view.entities if e != "__dummy"]
    if len(entity_names) != 1:
        raise UnsupportedFeastView(
            f"Feast view {name!r} joins on {len(entity_names)} entities {entity_names}; Quasar serves views "
            "keyed by exactly one entity"
        )
    entity = entities.get(entity_names[0])
    if entity is None:
        raise UnsupportedFeastView(f"Feast view {name!r} names entity {entity_names[0]!r}, not in the registry")
    join_key = str(entity.join_key)
    key_type = next((_value_type(c.dtype) for c in feature_view.entity_columns if c.name == join_key), None)
    if key_type is None:
        key_type = entity.value_type.name
    if key_type != "INT64":
        raise UnsupportedFeastView(
            f"Feast view {name!r}: join key {join_key!r} is {key_type}; Quasar serves int64 join keys"
        )
    features = tuple(_feature(name, f) for f in feature_view.features)
    if not features:
        raise UnsupportedFeastView(f"Feast view {name!r} has no features")
    ttl = feature_view.ttl.total_seconds() if feature_view.ttl else 0.0
    return FeastView(
        name=name,
        online_name=_online_name(feature_view, versioning),
        entity=str(entity.name),
        join_key=join_key,
        features=features,
        ttl_s=ttl if ttl > 0 else None,
        owner=str(feature_view.owner or ""),
        description=str(feature_view.description or ""),
        tags=dict(feature_view.tags or {}),
    )


def _feature(view: str, feature: Any) -> FeastFeature:
    value_type = _value_type(feature.dtype)
    if value_type not in _VALUE_TYPES:
        raise UnsupportedFeastView(
            f"Feast view {view!r} feature {feature.name!r} is {value_type}; Quasar serves float32, float64, "
            "int32, int64 and bool scalars and fixed-length lists of them"
        )
    kind, is_list = _VALUE_TYPES[value_type]
    length: int | None = None
    if is_list:
        declared = int(getattr(feature, "vector_length", 0) or 0) or (feature.tags or {}).get("length")
        try:
            length = int(declared or 0)
        except ValueError:
            length = 0
        if length < 1:
            raise UnsupportedFeastView(
                f"Feast view {view!r} feature {feature.name!r} is a {value_type} of no declared length: set "
                "Field(vector_length=N) or the field tag length=N"
            )
    return FeastFeature(
        name=str(feature.name),
        kind=kind,
        length=length,
        description=str(feature.description or ""),
        tags=dict(feature.tags or {}),
    )


def _value_type(dtype: Any) -> str:
    try:
        return str(dtype.to_value_type().name)
    except (AttributeError, ValueError, KeyError):
        return str(dtype)


def _online_name(feature_view: Any, versioning: bool) -> str:
    if not versioning:
        return str(feature_view.name)
    # Feast's own rule for the versioned online name, so the hash fields we read are the ones it wrote.
    from feast.infra.online_stores.helpers import compute_versioned_name

    return str(compute_versioned_name(feature_view, versioning))


def _declaration(view: FeastView, store: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": view.name, "entity": view.entity, "table": view.name}
    if store is not None:
        out["store"] = store
    out["dtype"] = view.dtype
    if view.ttl_s is not None:
        out["max_age_s"] = int(view.ttl_s) if float(view.ttl_s).is_integer() else view.ttl_s
    if view.owner:
        out["owner"] = view.owner
    if view.tags:
        out["tags"] = _tags(view.tags)
    out["description"] = view.description
    out["features"] = [_feature_declaration(f, 0 if view.dtype == "int64" else 0.0) for f in view.features]
    return out


def _feature_declaration(feature: FeastFeature, default: float) -> dict[str, Any]:
    out: dict[str, Any] = {"name": feature.name, "shape": list(feature.shape), "default": default}
    if feature.description:
        out["description"] = feature.description
    if feature.tags:
        out["tags"] = _tags(feature.tags)
    return out


def _tags(tags: Mapping[str, str]) -> list[str]:
    return [f"{key}={value}" if value else key for key, value in sorted(tags.items())]
