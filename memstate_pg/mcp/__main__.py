"""`python -m memstate_pg.mcp [--namespace NS] [--http --port N] [--dsn ...]`."""

from __future__ import annotations

import argparse
import logging
import sys

from .cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m memstate_pg.mcp", description="serve memstate-pg over MCP"
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("psycopg", "uvicorn.error", "mcp"):  # their retries: the cause comes once
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
