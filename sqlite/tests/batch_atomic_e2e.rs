//! SQLite's batch-atomic commit on a Borealis volume, end to end. Debian's SQLite is built
//! without `SQLITE_ENABLE_BATCH_ATOMIC_WRITE`, so it never sends the VFS the
//! `*_ATOMIC_WRITE` file controls; here a small shell (`tests/c/batch_shell.c`) is linked with
//! the SQLite amalgamation that libsqlite3-sys ships, built with that option. The shell puts a
//! counting VFS over `borealis` (plain SQLite API, no production hook), so each transaction
//! shows which path SQLite took: rollback journals opened on the VFS, and the
//! `BEGIN/COMMIT/ROLLBACK_ATOMIC_WRITE` controls sent to the database.
//!
//! Proven: transactions that fit in SQLite's page cache commit through
//! `BEGIN/COMMIT_ATOMIC_WRITE` with no journal; a rollback, a transaction that spills out of the
//! cache (which needs a journal) and a batch beyond the VFS's bound (which SQLite rolls back with
//! `ROLLBACK_ATOMIC_WRITE`) leave the right database; the contents equal the same script's on a
//! local file, in the same and in a new process; and a shell killed with SIGKILL in the middle
//! of batch commits loses no transaction it saw commit and leaves none in part.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::Duration;

use support::*;

/// What `io_counts()` reports for a transaction committed through `BEGIN/COMMIT_ATOMIC_WRITE`,
/// with no rollback journal.
const BATCH: &str = "journals=0 begins=1 commits=1 rollbacks=0";
/// ... for one that went through a rollback journal opened on the VFS (committed by `xSync`).
const JOURNAL: &str = "journals=1 begins=0 commits=0 rollbacks=0";
/// ... for one that reached neither: nothing of it was written to the database file.
const NOTHING: &str = "journals=0 begins=0 commits=0 rollbacks=0";

/// libsqlite3-sys's version in `Cargo.toml`: its crate source carries the amalgamation.
const LIBSQLITE3_SYS: &str = "libsqlite3-sys-0.37.";

/// The SQLite amalgamation (`sqlite3.c`, `sqlite3.h`) in the libsqlite3-sys crate source cargo
/// unpacked into its registry.
fn amalgamation() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").expect("HOME or CARGO_HOME")).join(".cargo"));
    let registry = cargo_home.join("registry/src");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&registry)
        .unwrap_or_else(|e| panic!("{}: {e}", registry.display()))
        .flatten()
        .flat_map(|index| std::fs::read_dir(index.path()).into_iter().flatten().flatten())
        .filter(|krate| krate.file_name().to_string_lossy().starts_with(LIBSQLITE3_SYS))
        .map(|krate| krate.path().join("sqlite3"))
        .filter(|dir| dir.join("sqlite3.c").exists())
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no {LIBSQLITE3_SYS}*/sqlite3/sqlite3.c under {}", registry.display()))
}

/// True if `output` exists and is at least as new as every one of `sources`.
fn fresh(output: &Path, sources: &[&Path]) -> bool {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let Some(built) = modified(output) else { return false };
    sources.iter().all(|source| modified(source).is_some_and(|m| m <= built))
}

/// Runs `cc` with `-o OUTPUT` added, writing to a temporary name first: another test process
/// may be using (or building) the same output.
fn build(output: &Path, cc: &mut Command) {
    let partial = output.with_extension(format!("partial-{}", std::process::id()));
    let built = cc.arg("-o").arg(&partial).output().expect("run cc");
    assert!(built.status.success(), "{cc:?}:\n{}", text(&built));
    std::fs::rename(&partial, output).expect("move the build into place");
}

/// `tests/c/batch_shell.c` linked with the amalgamation built with
/// `SQLITE_ENABLE_BATCH_ATOMIC_WRITE`, under `target/tmp`; each part is rebuilt only when older
/// than its sources (compiling sqlite3.c is the slow part).
fn batch_shell() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let sqlite = amalgamation();
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/batch_shell.c");
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("batch-atomic-sqlite");
            std::fs::create_dir_all(&dir).expect("create the build directory");
            let object = dir.join("sqlite3.o");
            let (sqlite_c, sqlite_h) = (sqlite.join("sqlite3.c"), sqlite.join("sqlite3.h"));
            if !fresh(&object, &[&sqlite_c, &sqlite_h]) {
                // Loading extensions stays on (no SQLITE_OMIT_LOAD_EXTENSION); -O1 keeps the
                // build of the 9 MB file short.
                let mut cc = Command::new("cc");
                build(&object, cc.args(["-O1", "-DSQLITE_ENABLE_BATCH_ATOMIC_WRITE", "-c"]).arg(&sqlite_c));
            }
            let program = dir.join("batch_shell");
            if !fresh(&program, &[&source, &object]) {
                let mut cc = Command::new("cc");
                cc.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
                    .arg(&sqlite)
                    .arg(&source)
                    .arg(&object);
                build(&program, cc.args(["-ldl", "-lpthread", "-lm"]));
            }
            program
        })
        .clone()
}

/// `file:NAME?volume=N`: without `vfs=`, which would override the counting VFS the shell opens
/// it through (that VFS passes the name, parameters and all, on to `borealis`).
fn volume(name: &str, volume: u64) -> String {
    format!("file:{name}?volume={volume}")
}

/// The batch shell on `database`, through the counting VFS over `base` (`borealis` or `unix`).
fn batch_shell_command(cluster: &Cluster, base: &str, database: &str) -> Command {
    let mut command = cluster.command(batch_shell());
    command.arg(extension()).arg(base).arg(database);
    command
}

/// Runs `script` in the batch shell; what it printed on stdout and on stderr.
fn shell(cluster: &Cluster, base: &str, database: &str, script: &str) -> (String, String) {
    let out = run(&mut batch_shell_command(cluster, base, database), Some(script));
    assert!(out.status.success(), "batch_shell {database}:\n{}", text(&out));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Like [`shell`], for a script that must not fail: stdout.
fn quiet_shell(cluster: &Cluster, base: &str, database: &str, script: &str) -> String {
    let (stdout, stderr) = shell(cluster, base, database, script);
    assert!(stderr.is_empty() && !stdout.contains("error: "), "batch_shell {database}:\n{stdout}{stderr}");
    stdout
}

/// Appended to each transaction of a script: its counts on a line of their own.
const IO: &str = "select 'io', io_counts();\n";

/// A script's output split into its `io` lines (the counts only) and the rest.
fn split_io(output: &str) -> (Vec<&str>, String) {
    let mut io = Vec::new();
    let mut rest = String::new();
    for line in output.lines() {
        match line.strip_prefix("io|") {
            Some(counts) => io.push(counts),
            None => rest.extend([line, "\n"]),
        }
    }
    (io, rest)
}

/// `rows` rows of batch `b`, each with a 200-byte pad that depends on the row.
fn insert(b: u32, rows: u32) -> String {
    format!(
        "with recursive n(i) as (select 1 union all select i + 1 from n where i < {rows})\n\
         insert into t (b, pad) select {b}, cast(printf('%.200c', char(65 + (i * {b}) % 26)) as blob) from n;\n"
    )
}

/// The workload: one transaction per step, with what SQLite must ask of a Borealis volume's VFS
/// for it (on a local file every step opens a journal: the unix VFS has no batch atomicity).
fn steps() -> Vec<(String, &'static str)> {
    let mut steps = vec![(
        // SQLite takes the batch path only once the database has a page: the first commit
        // goes through a journal.
        "begin;\ncreate table t (id integer primary key, b integer not null, pad blob not null);\n\
         create index t_b on t (b);\ncommit;\n"
            .to_owned(),
        JOURNAL,
    )];
    // 2,000 rows of 200 bytes: over 100 pages each, well within the default page cache.
    for b in 1..=3 {
        steps.push((format!("begin;\n{}commit;\n", insert(b, 2000)), BATCH));
    }
    steps.push((format!("begin;\n{}rollback;\n", insert(4, 2000)), NOTHING));
    // A 64-page cache: SQLite spills pages to the file before the commit, which needs the
    // journal on the VFS first, and then commits with xSync.
    steps.push((format!("pragma cache_size = 64;\nbegin;\n{}commit;\n", insert(5, 6000)), JOURNAL));
    steps.push(("begin;\nupdate t set pad = zeroblob(300) where b = 5;\nrollback;\n".to_owned(), JOURNAL));
    // A cache large enough again: a transaction touching most pages commits as one batch.
    steps.push((
        "pragma cache_size = 20000;\nbegin;\nupdate t set b = b + 10 where id % 3 = 0;\n\
         delete from t where id % 10 = 7;\ncommit;\n"
            .to_owned(),
        BATCH,
    ));
    steps
}

/// Reads the whole database back.
const CHECK: &str = "
pragma integrity_check;
select count(*), sum(b), sum(length(pad)), min(id), max(id) from t;
select b, count(*) from t indexed by t_b group by b order by b;
select id, b, hex(pad) from t order by id;
";

/// Asserts `output` equals `local`, naming the first line that differs.
fn assert_same(output: &str, local: &str, what: &str) {
    let differs = output.lines().zip(local.lines()).position(|(a, b)| a != b);
    assert!(
        output == local,
        "{what}: {} lines on the volume, {} on the local file; first difference at line {differs:?}: {:?} vs {:?}",
        output.lines().count(),
        local.lines().count(),
        differs.and_then(|n| output.lines().nth(n)),
        differs.and_then(|n| local.lines().nth(n)),
    );
}

#[test]
fn sqlite_commits_through_batch_atomic_writes_without_a_journal_and_reads_back_as_on_a_local_file() {
    let _one = one_at_a_time();
    let cluster = Cluster::up();
    let local = cluster.path().join("local.db");
    let local = local.to_str().expect("a UTF-8 path");
    let db = volume("t.db", 21);
    let steps = steps();
    let script: String =
        steps.iter().map(|(sql, _)| format!("{sql}{IO}")).chain([CHECK.to_owned()]).collect();

    let written = quiet_shell(&cluster, "borealis", &db, &script);
    let written_local = quiet_shell(&cluster, "unix", local, &script);
    let (io, contents) = split_io(&written);
    let (io_local, contents_local) = split_io(&written_local);
    let expected: Vec<&str> = steps.iter().map(|(_, io)| *io).collect();
    assert_eq!(io, expected, "what SQLite asked of the borealis VFS, transaction by transaction");
    assert_eq!(io_local, vec![JOURNAL; steps.len()], "on a local file every transaction opens a journal");
    assert!(contents.starts_with("ok\n10800|"), "{}", &contents[..contents.len().min(200)]);
    assert_same(&contents, &contents_local, "written");

    let read = quiet_shell(&cluster, "borealis", &db, CHECK);
    assert_same(&read, &contents, "read back by a new process");
}

#[test]
fn a_batch_beyond_the_bound_is_rolled_back_whole_and_the_next_batch_commits() {
    let _one = one_at_a_time();
    let cluster = Cluster::up();
    let db = volume("big.db", 22);
    // The 1 GB cache keeps the 37,000 pages of the big transaction in SQLite's memory until
    // its commit, so they reach the VFS as one batch, past the 32,768 pages it may hold.
    let script = format!(
        "create table t (x);\n{IO}insert into t values (1);\n{IO}pragma cache_size = -1000000;\n\
         with recursive n(i) as (select 1 union all select i + 1 from n where i < 1000)\n\
         insert into t select zeroblob(150000) from n;\n{IO}select count(*) from t;\n\
         insert into t values (2);\n{IO}select x from t;\n"
    );
    let (stdout, stderr) = shell(&cluster, "borealis", &db, &script);
    let (io, rest) = split_io(&stdout);
    assert_eq!(io, [JOURNAL, BATCH, "journals=0 begins=1 commits=0 rollbacks=1", BATCH], "{stdout}");
    assert_eq!(rest, "error: database or disk is full\n1\n1\n2\n", "{stdout}{stderr}");
    assert!(stderr.contains("a transaction may write at most 32768 pages"), "{stderr}");

    let read = quiet_shell(&cluster, "borealis", &db, "pragma integrity_check;\nselect x from t;\n");
    assert_eq!(read, "ok\n1\n2\n");
}

/// Rows each transaction of the crash test inserts, all with the transaction's number.
const ROWS: usize = 20;
/// Transactions one run of the crash test may commit before it is killed (it never gets
/// that far).
const TRANSACTIONS: u64 = 5000;
/// How long after its first commit each run is killed.
const KILL_AFTER_MS: [u64; 8] = [0, 20, 60, 150, 300, 500, 800, 1200];

/// Run `round`'s script: transactions `round * TRANSACTIONS + 1...`, each one statement of
/// `ROWS` rows of 100 to 3,100 bytes (up to 16 pages), followed by its number and counts.
fn crash_script(round: u64) -> String {
    let mut script = format!("create table if not exists t (n integer not null, pad blob not null);\n{IO}");
    for n in round * TRANSACTIONS + 1..=(round + 1) * TRANSACTIONS {
        script.push_str(&format!(
            "with recursive k(i) as (select 1 union all select i + 1 from k where i < {ROWS})\n\
             insert into t select {n}, randomblob({}) from k;\nselect 'committed', {n}, io_counts();\n",
            100 + n % 13 * 250
        ));
    }
    script
}

/// The lines `child` prints, whole lines only (a killed process may leave half of one), as
/// they come.
fn lines(child: &mut Child) -> Receiver<String> {
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while stdout.read_line(&mut line).is_ok_and(|n| n > 0) && line.ends_with('\n') {
            if send.send(line.trim_end().to_owned()).is_err() {
                break;
            }
            line.clear();
        }
    });
    receive
}

/// A child killed when dropped, so a failed assertion leaves no shell running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_shell_killed_during_batch_commits_loses_no_committed_transaction_and_leaves_none_in_part() {
    let _one = one_at_a_time();
    let cluster = Cluster::up();
    let db = volume("crash.db", 23);
    let mut printed = std::collections::BTreeSet::new();
    for (round, after) in (0u64..).zip(KILL_AFTER_MS) {
        let mut child = Killed(
            batch_shell_command(&cluster, "borealis", &db)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start the batch shell"),
        );
        let script = crash_script(round);
        let mut stdin = child.0.stdin.take().expect("piped stdin");
        // Fails once the shell is killed (a broken pipe), as it should.
        std::thread::spawn(move || std::io::Write::write_all(&mut stdin, script.as_bytes()));
        let lines = lines(&mut child.0);
        let mut said = Vec::new();
        loop {
            match lines.recv_timeout(COMMAND_TIMEOUT) {
                Ok(line) if line.starts_with("committed|") => {
                    said.push(line);
                    break;
                }
                Ok(line) => said.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("round {round}: no commit within {COMMAND_TIMEOUT:?}")
                }
                Err(RecvTimeoutError::Disconnected) => panic!("round {round}: the shell ended: {said:?}"),
            }
        }
        std::thread::sleep(Duration::from_millis(after));
        child.0.kill().expect("SIGKILL the shell");
        let status = child.0.wait().expect("wait for the shell");
        assert!(status.code().is_none(), "round {round}: the shell ended by itself ({status}): {said:?}");
        said.extend(lines.iter());

        let mut commits = 0;
        for line in &said {
            let Some(rest) = line.strip_prefix("committed|") else { continue };
            let (n, io) = rest.split_once('|').unwrap_or_else(|| panic!("round {round}: {line:?}"));
            assert_eq!(io, BATCH, "round {round}: transaction {n} did not commit as one batch");
            printed.insert(n.parse::<u64>().expect("a transaction number"));
            commits += 1;
        }

        let check = quiet_shell(
            &cluster,
            "borealis",
            &db,
            "pragma integrity_check;\nselect n, count(*) from t group by n;\n",
        );
        let mut check = check.lines();
        assert_eq!(check.next(), Some("ok"), "round {round}: integrity_check");
        let mut present = std::collections::BTreeSet::new();
        for line in check {
            let (n, count) = line.split_once('|').expect("n|count");
            let n: u64 = n.parse().expect("a transaction number");
            assert_eq!(count, ROWS.to_string(), "round {round}: transaction {n} is there in part");
            present.insert(n);
        }
        let missing: Vec<_> = printed.difference(&present).collect();
        assert!(missing.is_empty(), "round {round}: committed transactions missing: {missing:?}");
        // Each killed run may have committed the transaction it was in without printing it.
        let unseen = present.len() - printed.len();
        assert!(unseen <= round as usize + 1, "round {round}: {unseen} transactions nobody saw commit");
        eprintln!("round {round}: killed {after} ms after its first commit, {commits} commits seen");
    }
}
