"""Quick start: facts and embeddings in one Postgres transaction.

python examples/quickstart.py                 # the embedded server
python examples/quickstart.py --dsn postgresql://user@host/db
"""

from __future__ import annotations

import argparse

from pydantic import BaseModel

from memstate_pg import Constraint, Fact, MemoryStore


class Profile(BaseModel):
    field: str
    value: str


def main(dsn: str | None = None) -> None:
    mem = MemoryStore(dsn) if dsn else MemoryStore.embedded()
    mem.migrate()
    mem.register_schema(
        "profile", Profile, constraint=Constraint(singleton_key="field"), text_field="value"
    )

    fid = mem.commit(
        Fact(type="profile", payload={"field": "city", "value": "lives in Berlin"}),
        namespace="user-42",
    )
    mem.commit(
        Fact(type="profile", payload={"field": "city", "value": "lives in Paris"}),
        namespace="user-42",
    )
    print(mem.get(fid).payload, "version", mem.get(fid).version)  # singleton: an update, version 2
    print(
        [
            (h.fact.payload["value"], round(h.score, 3))
            for h in mem.search("where does the user live", namespace="user-42")
        ]
    )
    mem.rollback(1, namespace="user-42")  # undo, as a new commit
    print(mem.get(fid).payload, [v.op for v in mem.history(fid)])
    mem.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn")
    main(ap.parse_args().dsn)
