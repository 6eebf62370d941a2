"""`quasar candidates`: run the reference candidate service (quasar.v1.CandidateService) or call one."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click

from engines.errors import EngineError

_DEFAULT_PORT = 50061


def _source_tables(pairs: tuple[str, ...]) -> dict[str, str]:
    tables = {}
    for pair in pairs:
        source, sep, table = pair.partition("=")
        if not sep or not source or not table:
            raise click.BadParameter(f"expected SOURCE=TABLE, got {pair!r}", param_hint="'--source-table'")
        tables[source] = table
    return tables


@click.group("candidates")
def candidates() -> None:
    """Run or call a candidate service (quasar.v1.CandidateService)."""


@candidates.command("serve")
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
    help="embedded store root holding the list tables",
)
@click.option("--table", default=None, help="int64 list table read by sources without their own --source-table")
@click.option(
    "--source-table", "source_tables", multiple=True, metavar="SOURCE=TABLE", help="a source's own table (repeatable)"
)
@click.option("--host", default="127.0.0.1", show_default=True, help="bind address")
@click.option("--port", type=click.IntRange(0, 65535), default=_DEFAULT_PORT, show_default=True, help="0 picks one")
@click.option("--max-limit", type=click.IntRange(min=1), default=10_000, show_default=True, help="largest limit served")
@click.option("--grace-s", type=click.FloatRange(min=0.0), default=5.0, show_default=True, help="drain time on stop")
def serve(
    root: Path,
    table: str | None,
    source_tables: tuple[str, ...],
    host: str,
    port: int,
    max_limit: int,
    grace_s: float,
) -> None:
    """Serve per-member lists (int64 rows padded with -1) from an embedded store until SIGTERM or SIGINT,
    then let calls in flight finish. Prints `listening on HOST:PORT` once it accepts calls."""
    from kvstore.embedded import EmbeddedStore
    from kvstore.errors import StoreError
    from quasar.candidate_server import CandidateServer, StoreCandidateLists

    tables = _source_tables(source_tables)
    if table is None and not tables:
        raise click.UsageError("give --table or at least one --source-table")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        store = EmbeddedStore(root)
        await store.start()
        lists = StoreCandidateLists(store, default_table=table, tables=tables)
        for source_table in {*tables.values(), *([table] if table else [])}:
            lists_info = await store.info(source_table)  # fails now, not on the first call, for a missing table
            if lists_info.dtype != "int64":
                raise click.UsageError(f"table {source_table!r} holds {lists_info.dtype} rows, not int64 item ids")
        server = CandidateServer(lists, host=host, port=port, max_limit=max_limit)
        bound = await server.start()
        click.echo(f"listening on {host}:{bound}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await server.stop(grace_s)
        await store.close()

    try:
        asyncio.run(main())
    except (OSError, RuntimeError, StoreError) as error:  # cannot bind, cannot read the store or a table
        raise click.ClickException(str(error)) from None


@candidates.command("retrieve")
@click.option("--target", default=f"127.0.0.1:{_DEFAULT_PORT}", show_default=True, metavar="HOST:PORT")
@click.option("--member", "member_id", type=int, required=True, help="member id")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="most ids wanted")
@click.option("--source", default="", help="the calling source's name")
@click.option("--timeout-s", type=click.FloatRange(min=0.0, min_open=True), default=2.0, show_default=True)
def retrieve(target: str, member_id: int, limit: int, source: str, timeout_s: float) -> None:
    """Call a candidate service once and print the ids (and scores) it answers, checked against the
    contract. A refused call or a bad answer prints `error: ...` and exits 2."""
    from engines.candidate_client import GrpcCandidateClient

    async def main() -> None:
        client = GrpcCandidateClient("cli", target, max_ids=max(limit, 1), connect_wait_s=0.0)
        await client.start()
        try:
            ids, scores = await client.retrieve(
                member_id, limit=limit, context={}, source=source, request_id="cli", timeout_s=timeout_s
            )
        finally:
            await client.close()
        for rank, item_id in enumerate(ids.tolist()):
            score = "" if scores is None else f"\t{float(scores[rank]):.6g}"
            click.echo(f"{rank + 1}\t{item_id}{score}")
        click.echo(f"{len(ids)} ids", err=True)

    try:
        asyncio.run(main())
    except EngineError as error:
        click.echo(f"error: {error}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":  # `python -m quasar.cli_candidates` until `quasar candidates` is registered
    candidates()
