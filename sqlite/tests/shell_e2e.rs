//! Debian's unmodified `sqlite3` shell with the extension `.load`ed: a database of 100,000 rows
//! with an index (about 13 MiB), updated, deleted from and VACUUMed on a Borealis volume, then
//! read back by a new shell process, gives exactly what the same scripts give on a local file. Also: what the
//! VFS refuses (WAL, another page size, a URI without a volume, a transaction beyond its bound)
//! is refused with its reason, and leaves the database as it was.

mod support;

use support::*;

/// Builds the database: 100,000 rows, an index, an update, a delete, a VACUUM.
const WRITE: &str = "
create table t (id integer primary key, k text not null, v integer not null, pad blob);
with recursive n(i) as (select 1 union all select i + 1 from n where i < 100000)
insert into t (k, v, pad) select printf('key-%06d', (i * 7919) % 100000), (i * 31337) % 1000003, zeroblob(i % 200) from n;
create index t_k on t (k);
update t set v = v + 1 where id % 3 = 0;
delete from t where id % 10 = 7;
vacuum;
select 'written', count(*) from t;
";

/// Reads it back in a new process.
const READ: &str = "
pragma integrity_check;
select count(*), sum(v), min(k), max(k), sum(length(pad)) from t;
select id, k, v from t where id % 9973 = 1 order by id;
select k, v from t where k between 'key-050000' and 'key-050020' order by k;
select count(*) from t indexed by t_k where k like 'key-09%';
pragma page_size;
pragma page_count;
pragma freelist_count;
";

fn shell(cluster: &Cluster, open: &str, script: &str) -> String {
    let input = format!(".load {}\n.open {open}\n{script}", extension().display());
    let out = run(cluster.command(SQLITE3).arg("-batch").arg("-bail"), Some(&input));
    assert!(out.status.success() && out.stderr.is_empty(), "sqlite3 {open}:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_sqlite3_shell_reads_back_100000_rows_with_an_index_after_vacuum_as_on_a_local_file() {
    let _one = one_at_a_time();
    let cluster = Cluster::up();
    let local = cluster.path().join("local.db");
    let local = local.to_str().expect("a UTF-8 path");

    let written_local = shell(&cluster, local, WRITE);
    let written = shell(&cluster, &cluster.uri("t.db", 3), WRITE);
    assert_eq!(written, written_local);
    assert_eq!(written.trim(), "written|90000");

    let read_local = shell(&cluster, local, READ);
    let read = shell(&cluster, &cluster.uri("t.db", 3), READ);
    assert!(read.starts_with("ok\n90000|"), "{read}");
    assert_eq!(read, read_local);
}

#[test]
fn the_shell_is_told_why_wal_another_page_size_or_a_missing_volume_is_refused() {
    let _one = one_at_a_time();
    let cluster = Cluster::up();
    let input = format!(
        ".load {}\n.open {}\ncreate table t (x);\npragma journal_mode = wal;\npragma page_size = 8192;\npragma journal_mode;\npragma page_size;\n",
        extension().display(),
        cluster.uri("t.db", 4)
    );
    let out = run(cluster.command(SQLITE3).arg("-batch"), Some(&input));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not support WAL"), "{}", text(&out));
    assert!(stderr.contains("page_size must be 4096, not 8192"), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "delete\n4096\n", "{}", text(&out));

    let input = format!(".load {}\n.open file:t.db?vfs=borealis\nselect 1;\n", extension().display());
    let out = run(cluster.command(SQLITE3).arg("-batch"), Some(&input));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no volume: open `file:NAME?vfs=borealis&volume=N`"), "{}", text(&out));
    assert!(stderr.contains("unable to open database"), "{}", text(&out));
}

#[test]
fn a_transaction_beyond_the_bound_fails_as_disk_full_and_leaves_the_database_as_it_was() {
    let _one = one_at_a_time();
    let cluster = Cluster::up();
    let load = format!(".load {}\n.open {}\n", extension().display(), cluster.uri("big.db", 5));
    // 1,000 rows of 150,000 bytes: 37,000 pages, above the 32,768 one transaction may write.
    let big = "create table t (x);\ninsert into t values (1);\n\
               with recursive n(i) as (select 1 union all select i + 1 from n where i < 1000)\n\
               insert into t select zeroblob(150000) from n;\n\
               select count(*) from t;\n";
    let out = run(cluster.command(SQLITE3).arg("-batch"), Some(&format!("{load}{big}")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a transaction may write at most 32768 pages"), "{}", text(&out));
    assert!(stderr.contains("database or disk is full"), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n", "{}", text(&out));

    let after =
        shell(&cluster, &cluster.uri("big.db", 5), "pragma integrity_check;\nselect count(*) from t;\n");
    assert_eq!(after, "ok\n1\n");
}
