"""Importers: bring memory kept by other tools into memstate-pg.

`memstate_pg.importers.memstate` imports a MemState (PyPI `memstate` 0.5.1) database, a
SQLite file or a PostgreSQL database as MemState writes them; `memstate_pg.importers.cli`
is its `memstate-pg import-memstate` subcommand.
"""
