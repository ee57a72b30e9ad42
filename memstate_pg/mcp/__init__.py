"""memstate-pg as an MCP server (the official `mcp` SDK, extra `mcp`): `build_server(store,
namespace=...)` and `run(...)` over stdio or streamable HTTP; `memstate-pg mcp` on the shell.
See server.py for the tools and resources."""

from __future__ import annotations

from typing import Any

__all__ = ["build_server", "run", "serve_http", "serve_stdio"]


def __getattr__(name: str) -> Any:  # the SDK is imported only when the server is used
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(name)
