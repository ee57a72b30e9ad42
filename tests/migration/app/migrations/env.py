"""The application's env.py, written as the memstate-pg README recommends for each recipe.

APP_DATABASE_URL: the app's SQLAlchemy URL (postgresql+psycopg://...).
APP_MEMSTATE: how memstate's schema is migrated from here:
  "none"        - not from here (recipe a: `memstate-pg migrate` runs separately);
  "connection"  - memstate_pg.migrations.upgrade(connection) before the app's migrations;
  "inside"      - the same, inside the app's transaction (one commit for both);
  "engine"      - upgrade(engine);
  "url"         - upgrade(APP_DATABASE_URL).
APP_HOOKS: "1" (default) passes memstate's include_name/include_object to autogenerate.
"""

import os

from alembic import context
from models import metadata
from sqlalchemy import create_engine, pool

from memstate_pg import migrations as memstate_migrations

url = os.environ["APP_DATABASE_URL"]
how = os.environ.get("APP_MEMSTATE", "connection")
hooks = os.environ.get("APP_HOOKS", "1") == "1"


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    if how == "url":
        memstate_migrations.upgrade(url)
    elif how == "engine":
        memstate_migrations.upgrade(engine)
    with engine.connect() as connection:
        if how == "connection":
            memstate_migrations.upgrade(connection)
        options = {}
        if hooks:
            options = {
                "include_name": memstate_migrations.include_name,
                "include_object": memstate_migrations.include_object,
            }
        context.configure(
            connection=connection, target_metadata=metadata, include_schemas=True, **options
        )
        with context.begin_transaction():
            if how == "inside":
                memstate_migrations.upgrade(connection)
            context.run_migrations()


run_migrations_online()
