//! `borealis-bench nbd`: the NBD gateway next to qemu-nbd, printed as a table (and JSON).

use std::path::PathBuf;

use bench::nbd::JOBS;

pub(crate) fn nbd_bench(
    size: u64,
    seconds: u64,
    dir: Option<PathBuf>,
    json: Option<PathBuf>,
) -> Result<(), String> {
    let temp = bench::scratch_dir(dir)?;
    eprintln!("borealis-bench: qemu-nbd on a raw file ({size} bytes), fio's nbd engine, {seconds} s per job");
    let qemu = bench::nbd::qemu_nbd(temp.path(), size, seconds)?;
    eprintln!("borealis-bench: borealis nbd on a local six-node cluster");
    let borealis = bench::nbd::borealis(temp.path(), size, seconds)?;
    println!("nbd: fio's nbd engine; qemu-nbd --cache=none --aio=io_uring on a raw file vs borealis nbd (6 nodes, 4 of 6, flushed, encrypted)");
    println!(
        "{:<20} | {:>10} {:>8} {:>8} {:>8} | {:>10} {:>8} {:>8} {:>8} | {:>6}",
        "job", "qemu IOPS", "MB/s", "p50 us", "p99 us", "borealis", "MB/s", "p50 us", "p99 us", "ratio"
    );
    let mut figures = Vec::new();
    for ((job, q), b) in JOBS.iter().zip(&qemu).zip(&borealis) {
        let ratio = b.iops / q.iops;
        println!(
            "{:<20} | {:>10.0} {:>8.1} {:>8.0} {:>8.0} | {:>10.0} {:>8.1} {:>8.0} {:>8.0} | {:>5.2}x",
            job.name, q.iops, q.mb_per_s, q.p50_us, q.p99_us, b.iops, b.mb_per_s, b.p50_us, b.p99_us, ratio
        );
        for (side, m) in [("qemu_nbd", q), ("borealis", b)] {
            figures.push((format!("nbd_{}_{side}_iops", job.name), "IOPS", m.iops));
            figures.push((format!("nbd_{}_{side}_mb_per_s", job.name), "MB/s", m.mb_per_s));
            figures.push((format!("nbd_{}_{side}_p50", job.name), "us", m.p50_us));
            figures.push((format!("nbd_{}_{side}_p99", job.name), "us", m.p99_us));
        }
        figures.push((format!("nbd_{}_ratio", job.name), "x", ratio));
    }
    if let Some(path) = json {
        let parameters = serde_json::json!({ "command": "nbd", "size_bytes": size, "seconds": seconds });
        bench::write_json(&path, parameters, &figures)?;
    }
    Ok(())
}
