"""borealis-bench sqlite's workload: commits/s and commit latency of SQLite transactions.

Run by `borealis-bench sqlite` with Debian's /usr/bin/python3 (its sqlite3 module can load
extensions). Prints one JSON object on stdout. Standard library only.

    sqlite_bench.py --db URI --workload insert|bank --connections N --seconds S
                    [--extension PATH] [--journal-mode MODE] [--synchronous LEVEL]
"""

import argparse
import json
import random
import sqlite3
import threading
import time

ACCOUNTS = 1000
BALANCE = 1000


def connect(args):
    if args.extension:
        # Loading registers the `borealis` VFS for the whole process; the connection that loads
        # it is only the vehicle.
        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(args.extension)
        loader.close()
        args.extension = None
    conn = sqlite3.connect(args.db, uri=True, timeout=60, isolation_level=None, check_same_thread=False)
    if args.journal_mode:
        mode = conn.execute(f"PRAGMA journal_mode={args.journal_mode}").fetchone()[0]
        if mode.lower() != args.journal_mode.lower():
            raise SystemExit(f"journal_mode {args.journal_mode} refused (got {mode})")
    conn.execute(f"PRAGMA synchronous={args.synchronous}")
    return conn


def setup(conn, workload):
    conn.execute("BEGIN IMMEDIATE")
    if workload == "insert":
        conn.execute("CREATE TABLE IF NOT EXISTS rows(id INTEGER PRIMARY KEY, worker INTEGER, body TEXT)")
    else:
        conn.execute("CREATE TABLE IF NOT EXISTS accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS transfers(id INTEGER PRIMARY KEY, src INTEGER, dst INTEGER, amount INTEGER)")
        if conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == 0:
            conn.executemany("INSERT INTO accounts VALUES (?, ?)", ((i, BALANCE) for i in range(ACCOUNTS)))
    conn.execute("COMMIT")


def worker(args, conn, index, deadline, latencies, errors):
    rng = random.Random(index)
    body = "x" * 100
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            conn.execute("BEGIN IMMEDIATE")
            if args.workload == "insert":
                conn.execute("INSERT INTO rows(worker, body) VALUES (?, ?)", (index, body))
            else:
                src, dst = rng.sample(range(ACCOUNTS), 2)
                amount = rng.randint(1, 10)
                conn.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, src))
                conn.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, dst))
                conn.execute("INSERT INTO transfers(src, dst, amount) VALUES (?, ?, ?)", (src, dst, amount))
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            errors.append(str(error))
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            continue
        latencies.append(time.monotonic() - started)


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(p / 100.0 * len(sorted_values)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--workload", choices=["insert", "bank"], required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--extension")
    parser.add_argument("--journal-mode")
    parser.add_argument("--synchronous", default="FULL")
    args = parser.parse_args()

    conns = [connect(args) for _ in range(args.connections)]
    setup(conns[0], args.workload)
    latencies = [[] for _ in conns]
    errors = []
    deadline = time.monotonic() + args.seconds
    started = time.monotonic()
    threads = [
        threading.Thread(target=worker, args=(args, conn, i, deadline, latencies[i], errors))
        for i, conn in enumerate(conns)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    every = sorted(x for per in latencies for x in per)
    if args.workload == "bank":
        total = conns[0].execute("SELECT sum(balance) FROM accounts").fetchone()[0]
        if total != ACCOUNTS * BALANCE:
            raise SystemExit(f"the balances sum to {total}, not {ACCOUNTS * BALANCE}")
    check = conns[0].execute("PRAGMA integrity_check").fetchone()[0]
    for conn in conns:
        conn.close()
    print(json.dumps({
        "commits": len(every),
        "commits_per_s": len(every) / elapsed,
        "p50_ms": percentile(every, 50) * 1000,
        "p99_ms": percentile(every, 99) * 1000,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "integrity": check,
    }))


if __name__ == "__main__":
    main()
