"""The first code of every gateway process (`quasar`, `python -m gateway`, and the workers they spawn,
which inherit the environment): settings grpc core reads once, when grpc is first imported, go into the
environment before anything imports grpc. Nothing else belongs here; the CLI proper is `quasar.cli`."""

from __future__ import annotations

import os
import sys

from gateway.backlog import enable_shedding_experiment


def main(argv: list[str] | None = None, prog_name: str | None = None) -> None:
    if "grpc" not in sys.modules:  # already imported (embedded use): too late to change core, leave it be
        enable_shedding_experiment(os.environ)
    from quasar.cli import main as cli

    cli(argv, prog_name=prog_name)
