import sys, time, contextlib, statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from benchmarks.sync import *
from memstate_pg import embedded
from memstate_pg.sync import outbox
from memstate_pg.sync.apply import changes_for, read_states, write_changes

class Prefetch(SyncWorker):
    def _claim(self, name, limit):
        stack = contextlib.ExitStack()
        try:
            conn = stack.enter_context(self._connection()); stack.enter_context(conn.transaction())
            config = self._config(conn, name)
            rows = outbox.claim(conn, name, limit)
            mine = [r for r in rows if r.locked]
            ids = list(dict.fromkeys(r.fact_id for r in mine))
            ch = changes_for(config, ids, read_states(conn, ids))
            return stack, conn, mine, ch, len(rows) >= limit
        except BaseException:
            stack.__exit__(*sys.exc_info()); raise
    def pump(self, name):
        m = self.mirrors[name]; limit = self._limit(m)
        with ThreadPoolExecutor(1) as ex:
            nxt = self._claim(name, limit)
            while nxt and nxt[2]:
                stack, conn, mine, ch, full = nxt
                fut = ex.submit(self._claim, name, limit) if full else None
                out = write_changes(m, ch)
                outbox.ack(conn, name, [r.id for r in mine if str(r.fact_id) in out.ok])
                stack.close()
                nxt = fut.result() if fut else None

admin = embedded.start("/tmp/scratch/pg")
dsn = fresh_database(admin, "prefetch")
kind = sys.argv[1]
store = new_store(dsn)
res = {"seq": [], "pre": []}
for run in range(6):
    mode = "pre" if run % 2 else "seq"
    ns = f"p{run}"; name = f"prof{run}"
    m = make_mirror(kind, Path("/tmp/scratch/bench"), 500); m.count()
    store.add_mirror(m, name, namespaces=[ns], backfill=False)
    commit_facts(store, 3000, ns)
    w = Prefetch(store, {name: m}, batch_size=500); w.pending()
    t=time.perf_counter()
    if mode == "pre": w.pump(name)
    else: w.drain(600)
    dt = time.perf_counter()-t
    assert m.count() == 3000
    res[mode].append(3000/dt); w.close()
print(kind, {k: [round(x) for x in v] for k, v in res.items()}, {k: round(statistics.median(v)) for k, v in res.items()})
