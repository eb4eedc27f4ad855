//! `borealis-bench repair`: the time a node that lost its data takes to be whole again, next to
//! the disk's ceiling and the foreground commit p99.

use std::path::PathBuf;
use std::time::Duration;

pub(crate) fn repair_bench(
    load: bench::repair::RepairLoad,
    no_fio: bool,
    dir: Option<PathBuf>,
    json: Option<PathBuf>,
) -> Result<(), String> {
    tools::interrupt::install().map_err(|e| e.to_string())?;
    let temp = bench::scratch_dir(dir)?;
    let ceiling = if no_fio {
        None
    } else {
        let fio = bench::fio::flushed_sequential_write(temp.path(), 65536, true, Duration::from_secs(3))?;
        Some(fio.bytes_per_s)
    };
    let r = bench::repair::run(temp.path(), load)?;
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let repair_s = r.repair.as_secs_f64();
    let repair_mb_per_s = mb(load.bytes) / repair_s;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "repair of one node holding {:.0} MB of segment data ({} B pages), 6 local nodes",
        mb(load.bytes),
        load.page_bytes
    );
    println!(
        "  fill: {:.1} s; the node's data directory held {:.0} MB",
        r.fill.as_secs_f64(),
        mb(r.node_bytes)
    );
    println!("  repair: {repair_s:.2} s until every PG had six complete members again");
    println!(
        "  re-replication: {repair_mb_per_s:.0} MB/s ({:.0} MB fetched as page versions)",
        mb(r.hydrated_bytes)
    );
    if let Some(ceiling) = ceiling {
        println!("  disk ceiling (fio 64 KiB write + fdatasync, same run): {:.0} MB/s", ceiling / 1e6);
    }
    println!(
        "  foreground commit p99: {:.2} ms before ({} commits), {:.2} ms during the repair ({} commits)",
        ms(r.p99_before),
        r.commits_before,
        ms(r.p99_during),
        r.commits_during
    );
    if let Some(path) = json {
        let parameters = serde_json::json!({
            "command": "repair", "bytes": load.bytes, "page_bytes": load.page_bytes,
            "before_seconds": load.before.as_secs(),
        });
        let mut figures = vec![
            ("repair_seconds".to_string(), "s", repair_s),
            ("repair_mb_per_s".to_string(), "MB/s", repair_mb_per_s),
            ("hydrated_mb".to_string(), "MB", mb(r.hydrated_bytes)),
            ("fill_seconds".to_string(), "s", r.fill.as_secs_f64()),
            ("p99_before_ms".to_string(), "ms", ms(r.p99_before)),
            ("p99_during_ms".to_string(), "ms", ms(r.p99_during)),
        ];
        if let Some(ceiling) = ceiling {
            figures.push(("disk_ceiling_mb_per_s".to_string(), "MB/s", ceiling / 1e6));
        }
        bench::write_json(&path, parameters, &figures)?;
    }
    Ok(())
}
