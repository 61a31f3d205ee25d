"""Copies the finished executions of an Orchestrator SQLite database (with
their pipelines and steps) until it holds COUNT more, older than the originals: a large
history for measuring the console. Usage: seed.py DATABASE COUNT"""
import sqlite3
import sys
import uuid

database, count = sys.argv[1], int(sys.argv[2])
con = sqlite3.connect(database, timeout=30)
execution_columns = [r[1] for r in con.execute("PRAGMA table_info(executions)")]
step_columns = [r[1] for r in con.execute("PRAGMA table_info(steps)")]
originals = con.execute(
    "SELECT id, MIN(created_at) OVER () FROM executions "
    "WHERE status IN ('succeeded', 'failed', 'cancelled') ORDER BY created_at"
).fetchall()
if not originals:
    sys.exit("no finished execution to copy")
oldest = originals[0][1]
replace = {"id": "?", "created_at": "?", "idempotency_key": "NULL", "request_hash": "NULL"}
copy_execution = "INSERT INTO executions ({}) SELECT {} FROM executions WHERE id = ?".format(
    ", ".join(execution_columns), ", ".join(replace.get(c, c) for c in execution_columns)
)
copy_source = (
    "INSERT INTO execution_sources (execution_id, source, plan) "
    "SELECT ?, source, plan FROM execution_sources WHERE execution_id = ?"
)
copy_steps = "INSERT INTO steps ({}) SELECT {} FROM steps WHERE execution_id = ?".format(
    ", ".join(step_columns), ", ".join("?" if c == "execution_id" else c for c in step_columns)
)
with con:
    for i in range(count):
        source = originals[i % len(originals)][0]
        new = str(uuid.uuid4())
        created = oldest - (count - i) * 1000
        con.execute(copy_execution, (new, created, source))
        con.execute(copy_source, (new, source))
        con.execute(copy_steps, (new, source))
print(con.execute("SELECT COUNT(*) FROM executions").fetchone()[0])
