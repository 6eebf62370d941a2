"""`quasar ray ...`: XGBoost models on Ray Serve, for `kind: ray` engines to call."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def ray() -> None:
    """XGBoost models on Ray Serve (the engines of `kind: ray`)."""


@ray.command("deploy")
@click.option(
    "--model", "model_path", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True,
    help="booster file (JSON or UBJSON)",
)  # fmt: skip
@click.option("--name", required=True, help="model name callers use, e.g. first_pass")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--address", default="auto", show_default=True,
    help='"auto" (the cluster on this machine), "ray://host:10001" (Ray Client) or "local" (start one)',
)  # fmt: skip
@click.option("--app-name", default="quasar-xgboost", show_default=True, help="Serve application name")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--batch-wait-timeout-s", type=click.FloatRange(min=0.0), default=0.002, show_default=True)
@click.option("--replica-cpus", type=click.FloatRange(min=0.0), default=1.0, show_default=True)
def deploy(
    model_path: Path,
    name: str,
    replicas: int,
    address: str,
    app_name: str,
    max_batch_size: int,
    batch_wait_timeout_s: float,
    replica_cpus: float,
) -> None:
    """Deploy (or redeploy in place) a booster as a batched Ray Serve application, then print the
    engine config that calls it."""
    from engines.config import RayServeEngineConfig
    from engines.ray_serve import connect, deploy

    config = RayServeEngineConfig(
        address=address,
        app_name=app_name,
        models={name: model_path},
        num_replicas=replicas,
        replica_num_cpus=replica_cpus,
        max_batch_size=max_batch_size,
        batch_wait_timeout_s=batch_wait_timeout_s,
    )
    connect(address)
    deployed = deploy(config)
    for model, signature in sorted(deployed.models.items()):
        click.echo(
            f"deployed {model} (version {signature.version}, {signature.inputs[0].shape[1]} features) as Ray "
            f"Serve app {deployed.app_name!r}, deployment {deployed.deployment!r}, {deployed.num_replicas} replicas"
        )
    click.echo("engine config for the gateway (settings `engines.engines`):")
    click.echo(f"  ray_xgboost: {{kind: ray, address: {address!r}, app_name: {app_name!r}}}")
