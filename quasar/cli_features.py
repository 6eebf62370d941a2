"""`quasar features list|show|search`: the feature registry of a deployment, as tables."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from features import DeclarationError, FeatureRegistry, load_registry
from features.registry import DerivedFeature, ViewFeature

_DIR = click.option(
    "--features-dir",
    type=click.Path(path_type=Path),
    default=Path("var/world/features"),
    show_default=True,
    help="directory of feature declaration YAML files",
)


def _load(directory: Path) -> FeatureRegistry:
    if not directory.is_dir():
        click.echo(f"error: {directory} is not a directory of feature declarations", err=True)
        sys.exit(2)
    try:
        return load_registry(directory)
    except DeclarationError as error:
        for line in str(error).splitlines():
            click.echo(f"error: {line}", err=True)
        sys.exit(2)


def _rows(registry: FeatureRegistry) -> list[dict[str, str]]:
    rows = []
    for name in registry.names():
        feature = registry.feature(name)
        if isinstance(feature, ViewFeature):
            view = feature.view
            rows.append(
                {
                    "name": name,
                    "entity": view.entity,
                    "kind": "ids" if feature.is_ids else "stored",
                    "shape": str(list(feature.decl.shape)),
                    "table": f"{view.store}:{view.table}",
                    "owner": view.owner,
                    "tags": ", ".join([*view.tags, *feature.decl.tags]),
                    "description": feature.decl.description or view.description,
                }
            )
        elif isinstance(feature, DerivedFeature):
            decl = feature.decl
            rows.append(
                {
                    "name": name,
                    "entity": "derived",
                    "kind": decl.transform,
                    "shape": str([feature.width]),
                    "table": "(" + ", ".join(decl.inputs) + ")",
                    "owner": decl.owner,
                    "tags": ", ".join(decl.tags),
                    "description": decl.description,
                }
            )
    return rows


def _print(rows: list[dict[str, str]], title: str) -> None:
    table = Table(title=title, show_lines=False)
    for column in ("name", "entity", "kind", "shape", "table", "owner", "tags", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row.values())
    Console(width=200).print(table)


@click.group()
def features() -> None:
    """The declared features: list, show one, search by name, entity, tag or owner."""


@features.command("list")
@_DIR
def list_features(features_dir: Path) -> None:
    """Every stored and derived feature."""
    rows = _rows(_load(features_dir))
    _print(rows, f"{len(rows)} features in {features_dir}")


@features.command("show")
@_DIR
@click.argument("name")
def show_feature(features_dir: Path, name: str) -> None:
    """One feature (or every feature of a view when NAME is a view)."""
    registry = _load(features_dir)
    rows = [r for r in _rows(registry) if r["name"] == name or r["name"].startswith(f"{name}.")]
    if not rows:
        try:
            registry.feature(name)
        except KeyError as error:
            click.echo(f"error: {error.args[0]}", err=True)
            sys.exit(2)
    _print(rows, name)


@features.command("search")
@_DIR
@click.argument("text", required=False, default="")
@click.option("--entity", help="only features of this entity ('derived' for derived ones)")
@click.option("--tag", help="only features carrying this tag (view tags count)")
@click.option("--owner", help="only features owned by this owner")
def search_features(features_dir: Path, text: str, entity: str | None, tag: str | None, owner: str | None) -> None:
    """Features whose name or description contains TEXT (case-insensitive), filtered by entity/tag/owner."""
    needle = text.lower()
    rows = [
        r
        for r in _rows(_load(features_dir))
        if (needle in r["name"].lower() or needle in r["description"].lower())
        and (entity is None or r["entity"] == entity)
        and (tag is None or tag in [t.strip() for t in r["tags"].split(",")])
        and (owner is None or r["owner"] == owner)
    ]
    if not rows:
        click.echo("no feature matches", err=True)
        sys.exit(1)
    _print(rows, f"{len(rows)} matching")


@features.command("import-feast")
@click.option("--repo", "repo_path", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--project", default=None, help="the Feast project (default: the repository's)")
@click.option("--store", default="feast", show_default=True, help="the store name the gateway serves them from")
@click.option("--view", "views", multiple=True, help="only these feature views (default: every servable one)")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="the YAML to write")
def import_feast(repo_path: Path, project: str | None, store: str, views: tuple[str, ...], out: Path) -> None:
    """Declare a Feast repository's feature views (read from its registry) for Quasar to serve from Feast's
    online store: entities and views in Quasar's format, each view naming STORE."""
    import yaml

    try:
        from kvstore.feast_registry import views_from_feast
    except ImportError as error:  # the optional extra is not installed
        click.echo(f"error: Feast interop needs the `feast` extra ({error})", err=True)
        sys.exit(2)
    try:
        document = views_from_feast(repo_path, project, views=list(views) or None, store=store)
    except (ValueError, OSError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Imported from the Feast repository {repo_path} by `quasar features import-feast`.\n"
    out.write_text(header + yaml.safe_dump(document, sort_keys=False, width=120))
    click.echo(f"wrote {len(document.get('views', []))} views to {out}")
