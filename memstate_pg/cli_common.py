"""What every CLI command shares: where the database is."""

from __future__ import annotations

import argparse
import os

from .store import MemoryStore


def add_dsn_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        default=os.environ.get("MEMSTATE_DSN"),
        help="PostgreSQL DSN (default: $MEMSTATE_DSN, else the embedded server)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="data dir of the embedded server (default: $MEMSTATE_DATA_DIR or the user data dir)",
    )


def store_from_args(args: argparse.Namespace, **kwargs) -> MemoryStore:
    """A migrated store on --dsn, or on the embedded server under --data-dir."""
    if args.dsn:
        store = MemoryStore(args.dsn, **kwargs)
        store.migrate()
        return store
    return MemoryStore.embedded(args.data_dir, **kwargs)
