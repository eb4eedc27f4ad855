"""A bank on SQLite through the borealis VFS, for the end-to-end tests (run with Debian's
/usr/bin/python3: its sqlite3 module can load extensions).

    bank.py EXT URI init ACCOUNTS
    bank.py EXT URI run SEED COUNT [FIRST]  COUNT transfers (0: until killed), ids from FIRST on
    bank.py EXT URI check ACCOUNTS [IDS]    verify; IDS: a file of "committed N" / "rolledback N" lines
    bank.py EXT URI hold                    one transfer, then wait for a line on stdin, then another
    bank.py EXT URI locks                   two connections of one process take turns
    bank.py EXT URI watch ACCOUNTS SECONDS  read-only (mode=ro) beside a running writer

`run` prints "committed N" once the commit of transfer N returned, and "rolledback N" once a
transfer was rolled back on purpose; `check` proves that every committed one is there, no rolled
back one is, every balance equals what the transfer log says (so each transfer is all or
nothing), the money is all there, and PRAGMA integrity_check is ok.
"""

import random
import sqlite3
import sys

INITIAL = 1000


def connect(ext, uri):
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(ext)  # registers the VFS for the whole process
    loader.close()
    db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10)
    return db


def init(db, accounts):
    have = db.execute("select count(*) from sqlite_master where name = 'accounts'").fetchone()[0]
    if have:
        return
    # Full auto-vacuum: deleting memos shrinks the file, so commits also truncate.
    db.execute("pragma auto_vacuum = full")
    db.execute("begin")
    db.execute("create table accounts (id integer primary key, balance integer not null)")
    db.execute(
        "create table transfers (id integer primary key, src integer not null, dst integer not null,"
        " amount integer not null)"
    )
    db.execute("create table memos (id integer primary key, transfer integer not null, body blob)")
    db.executemany("insert into accounts values (?, ?)", [(i, INITIAL) for i in range(accounts)])
    db.execute("commit")


def transfer(db, rng, accounts, tid, commit=True):
    src, dst = rng.sample(range(accounts), 2)
    amount = rng.randint(1, 100)
    db.execute("begin")
    db.execute("update accounts set balance = balance - ? where id = ?", (amount, src))
    db.execute("update accounts set balance = balance + ? where id = ?", (amount, dst))
    db.execute("insert into transfers values (?, ?, ?, ?)", (tid, src, dst, amount))
    if rng.random() < 0.1:
        # A multi-page transaction that grows the file.
        db.execute("insert into memos (transfer, body) values (?, randomblob(?))", (tid, rng.randint(3000, 40000)))
    if rng.random() < 0.05:
        # One that frees pages (and, with auto-vacuum, shrinks the file).
        db.execute("delete from memos where id in (select id from memos order by id limit 5)")
    db.execute("commit" if commit else "rollback")


def run(db, seed, count, first=1):
    rng = random.Random(seed)
    accounts = db.execute("select count(*) from accounts").fetchone()[0]
    # A small page cache: big transactions spill pages to the file before they commit.
    db.execute("pragma cache_size = 16")
    # Ids above every id an earlier run printed: a run killed after rolling back its last
    # transfers leaves their ids unused, and reusing them would make "rolled back" ambiguous.
    tid = max((db.execute("select max(id) from transfers").fetchone()[0] or 0) + 1, first)
    print("ready", flush=True)
    done = 0
    while count == 0 or done < count:
        if rng.random() < 0.07:
            transfer(db, rng, accounts, tid, commit=False)
            print(f"rolledback {tid}", flush=True)
        else:
            transfer(db, rng, accounts, tid)
            print(f"committed {tid}", flush=True)
        tid += 1
        done += 1


def check(db, accounts, ids_path):
    problems = []
    integrity = db.execute("pragma integrity_check").fetchall()
    if integrity != [("ok",)]:
        problems.append(f"integrity_check: {integrity[:5]}")
    n, total = db.execute("select count(*), sum(balance) from accounts").fetchone()
    if n != accounts or total != accounts * INITIAL:
        problems.append(f"{n} accounts holding {total}, not {accounts} holding {accounts * INITIAL}")
    replayed = {i: INITIAL for i in range(accounts)}
    for src, dst, amount in db.execute("select src, dst, amount from transfers"):
        replayed[src] -= amount
        replayed[dst] += amount
    for account, balance in db.execute("select id, balance from accounts"):
        if replayed.get(account) != balance:
            problems.append(f"account {account} holds {balance}, its transfers say {replayed.get(account)}")
            break
    present = {row[0] for row in db.execute("select id from transfers")}
    committed, rolledback = set(), set()
    if ids_path:
        with open(ids_path) as f:
            for line in f:
                word, _, number = line.strip().partition(" ")
                if word == "committed":
                    committed.add(int(number))
                elif word == "rolledback":
                    rolledback.add(int(number))
    missing = sorted(committed - present)
    if missing:
        problems.append(f"{len(missing)} committed transfers missing, first {missing[:10]}")
    back = sorted(rolledback & present)
    if back:
        problems.append(f"rolled-back transfers present: {back[:10]}")
    memos = db.execute("select count(*) from memos").fetchone()[0]
    pages = db.execute("pragma page_count").fetchone()[0]
    print(f"transfers {len(present)} committed-seen {len(committed)} memos {memos} pages {pages}")
    for p in problems:
        print("PROBLEM", p)
    print("ok" if not problems else "FAILED", flush=True)
    return not problems


def hold(db):
    rng = random.Random(1)
    accounts = db.execute("select count(*) from accounts").fetchone()[0]
    tid = (db.execute("select max(id) from transfers").fetchone()[0] or 0) + 1
    transfer(db, rng, accounts, tid)
    print(f"committed {tid}", flush=True)
    sys.stdin.readline()
    try:
        transfer(db, rng, accounts, tid + 1)
        print(f"committed {tid + 1}", flush=True)
    except sqlite3.Error as e:
        print(f"error {type(e).__name__}: {e}", flush=True)


def locks(ext, uri):
    a = connect(ext, uri)
    b = connect(ext, uri)
    b.execute("pragma busy_timeout = 0")
    a.execute("begin immediate")
    a.execute("update accounts set balance = balance - 1 where id = 0")
    try:
        b.execute("begin immediate")
        print("b got a write lock while a held one", flush=True)
        return False
    except sqlite3.OperationalError as e:
        print(f"b busy: {e}", flush=True)
    # A reader still reads (the last committed state) while a holds RESERVED.
    before = b.execute("select balance from accounts where id = 0").fetchall()[0][0]
    a.execute("update accounts set balance = balance + 1 where id = 1")
    a.execute("commit")
    after = b.execute("select balance from accounts where id = 0").fetchall()[0][0]
    print(f"b read {before} then {after}", flush=True)
    b.execute("begin immediate")
    b.execute("update accounts set balance = balance + 1 where id = 0")
    b.execute("update accounts set balance = balance - 1 where id = 1")
    b.execute("commit")
    ok = after == before - 1
    print("ok" if ok else "FAILED", flush=True)
    return ok


def watch(ext, uri, accounts, seconds):
    """Opens the volume read-only while a writer runs: each read transaction must see one
    committed state (the money all there, balances equal to the transfer log), transfers never
    go back, the view moves with the writer, and a write is refused."""
    import time

    db = connect(ext, uri + "&mode=ro")
    problems, seen, last = [], set(), 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        db.execute("begin")
        total = db.execute("select sum(balance) from accounts").fetchone()[0]
        replayed = {i: INITIAL for i in range(accounts)}
        count = 0
        for src, dst, amount in db.execute("select src, dst, amount from transfers"):
            replayed[src] -= amount
            replayed[dst] += amount
            count += 1
        balances = dict(db.execute("select id, balance from accounts").fetchall())
        db.execute("commit")
        if total != accounts * INITIAL:
            problems.append(f"sum {total} after {count} transfers")
        if balances != replayed:
            problems.append(f"balances differ from the transfer log after {count} transfers")
        if count < last:
            problems.append(f"transfers went back from {last} to {count}")
        last = max(last, count)
        seen.add(count)
        time.sleep(0.05)
    integrity = db.execute("pragma integrity_check").fetchall()
    if integrity != [("ok",)]:
        problems.append(f"integrity_check: {integrity[:5]}")
    try:
        db.execute("update accounts set balance = 0")
        problems.append("a write through mode=ro succeeded")
    except sqlite3.OperationalError as e:
        print(f"write refused: {e}", flush=True)
    print(f"snapshots {len(seen)} transfers {min(seen)}..{max(seen)}", flush=True)
    for p in problems[:10]:
        print("PROBLEM", p)
    print("ok" if not problems else "FAILED", flush=True)
    return not problems


def main():
    ext, uri, command, *args = sys.argv[1:]
    if command == "locks":
        sys.exit(0 if locks(ext, uri) else 1)
    if command == "watch":
        sys.exit(0 if watch(ext, uri, int(args[0]), float(args[1])) else 1)
    db = connect(ext, uri)
    if command == "init":
        init(db, int(args[0]))
    elif command == "run":
        run(db, int(args[0]), int(args[1]), int(args[2]) if len(args) > 2 else 1)
    elif command == "check":
        sys.exit(0 if check(db, int(args[0]), args[1] if len(args) > 1 else None) else 1)
    elif command == "hold":
        hold(db)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
