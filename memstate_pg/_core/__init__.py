"""The sans-IO core of memstate-pg (private: the public names live in memstate_pg).

- protocol.py: the request vocabulary (Embed, Begin, Exec, ExecMany, Attempt) and Op[T];
- ops.py: every operation of the stores, incl. the mirror registry and backfill;
- runner.py: the sync and the async runner, side by side;
- checks.py: input validation shared by the operations.
"""
