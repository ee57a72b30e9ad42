import sys, time
from pathlib import Path
from benchmarks.sync import *
from memstate_pg import embedded
import memstate_pg.sync.worker as W, memstate_pg.sync.outbox as O, memstate_pg.sync.apply as A
T = {}
def timed(mod, name):
    f = getattr(mod, name)
    def g(*a, **k):
        t = time.perf_counter()
        try: return f(*a, **k)
        finally: T[name] = T.get(name, 0) + time.perf_counter() - t
    setattr(mod, name, g)
for n in ("claim", "ack", "fail"): timed(O, n)
for n in ("read_states", "changes_for", "write_changes"): timed(W, n)
admin = embedded.start("/tmp/scratch/pg")
dsn = fresh_database(admin, "phases")
kind = sys.argv[1]
store = new_store(dsn)
for run in range(2):
    T.clear()
    ns = f"p{run}"; name = f"prof{run}"
    m = make_mirror(kind, Path("/tmp/scratch/bench"), 500); m.count()
    store.add_mirror(m, name, namespaces=[ns], backfill=False)
    commit_facts(store, 2000, ns)
    w = SyncWorker(store, {name: m}, batch_size=500); w.pending()
    t=time.perf_counter(); w.drain(600); total = time.perf_counter()-t
    print(f"{kind} drain {total:.3f}s", {k: round(v,3) for k,v in T.items()}, "other", round(total-sum(T.values()),3))
    # adapter vs raw on the same records
    with psycopg.connect(dsn) as c:
        ids=[r[0] for r in c.execute("select fact_id from memstate.facts where namespace=%s",(ns,))]
        cfg = load_config(c, name); st = read_states(c, ids)
    recs = [build_record(cfg, s) for s in st.values()]
    m2 = make_mirror(kind, Path("/tmp/scratch/bench"), 500); m2.count()
    t=time.perf_counter()
    for i in range(0, len(recs), 500): m2.upsert(recs[i:i+500])
    ad = time.perf_counter()-t
    m3 = make_mirror(kind, Path("/tmp/scratch/bench"), 500); m3.count()
    raw = raw_upsert(kind, m3, recs, 500)
    print(f"   adapter upsert {ad:.3f}s  raw {raw:.3f}s")
