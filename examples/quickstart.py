import os

from pydantic import BaseModel

from memstate_pg import Constraint, Fact, MemoryStore


class Profile(BaseModel):
    field: str
    value: str


dsn = os.environ.get("MEMSTATE_DSN")  # e.g. postgresql://app:secret@localhost:5432/app
mem = MemoryStore(dsn) if dsn else MemoryStore.embedded()  # embedded: the [embedded] extra
# search by meaning with a real model (the default HashingEmbedder matches words, and says so):
# mem = MemoryStore(dsn, embedder=SentenceTransformerEmbedder("all-MiniLM-L6-v2"))
mem.migrate()  # idempotent: creates or upgrades schema memstate
mem.register_schema(
    "profile", Profile, constraint=Constraint(singleton_key="field"), text_field="value"
)

city = {"field": "city", "value": "lives in Berlin"}
fid = mem.commit(Fact(type="profile", payload=city), namespace="user-42")
moved = {"field": "city", "value": "lives in Paris"}
mem.commit(Fact(type="profile", payload=moved), namespace="user-42")
fact = mem.get(fid)
print(fact.payload["value"], fact.version)  # lives in Paris 2: same singleton key, an update

for hit in mem.search("where the user lives", k=5, namespace="user-42"):
    print(hit.fact.payload, round(hit.score, 3))  # higher score is closer
print(mem.query("profile", filters={"field": "city"}, namespace="user-42")[0].payload)

with mem.transaction(namespace="user-42") as tx:  # many changes, one commit seq
    tx.commit(Fact(type="profile", payload={"field": "job", "value": "chef"}))
    tx.commit(Fact(type="profile", payload={"field": "pet", "value": "a cat"}))
    tx.connection.execute("SELECT 1")  # your own SQL here joins the same transaction

mem.rollback(1, namespace="user-42")  # undo the last commit (job and pet), as a new commit
print([v.op for v in mem.history(fid)])  # every version of the city fact: ['put', 'update']
print([f.payload for f in mem.as_of(fact.commit_seq, namespace="user-42")])  # right after it
mem.close()
