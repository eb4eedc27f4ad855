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
        "{:<18} | {:>8} {:>7} {:>6} {:>6} {:>6} | {:>8} {:>7} {:>6} {:>6} {:>6} {:>8} | {:>6} {:>6}",
        "job",
        "qemu IOPS",
        "MB/s",
        "p50us",
        "p99us",
        "settle",
        "borealis",
        "MB/s",
        "p50us",
        "p99us",
        "settle",
        "sustain",
        "ratio",
        "sust."
    );
    let mut figures = Vec::new();
    for ((job, q), b) in JOBS.iter().zip(&qemu).zip(&borealis) {
        let ratio = b.iops / q.iops;
        let sustained_ratio = b.sustained_iops / q.sustained_iops;
        println!(
            "{:<18} | {:>9.0} {:>7.1} {:>6.0} {:>6.0} {:>5.1}s | {:>8.0} {:>7.1} {:>6.0} {:>6.0} {:>5.1}s {:>8.0} | {:>5.2}x {:>5.2}x",
            job.name,
            q.iops,
            q.mb_per_s,
            q.p50_us,
            q.p99_us,
            q.settle_s,
            b.iops,
            b.mb_per_s,
            b.p50_us,
            b.p99_us,
            b.settle_s,
            b.sustained_iops,
            ratio,
            sustained_ratio
        );
        for (side, m) in [("qemu_nbd", q), ("borealis", b)] {
            figures.push((format!("nbd_{}_{side}_iops", job.name), "IOPS", m.iops));
            figures.push((format!("nbd_{}_{side}_mb_per_s", job.name), "MB/s", m.mb_per_s));
            figures.push((format!("nbd_{}_{side}_p50", job.name), "us", m.p50_us));
            figures.push((format!("nbd_{}_{side}_p99", job.name), "us", m.p99_us));
            figures.push((format!("nbd_{}_{side}_settle", job.name), "s", m.settle_s));
            figures.push((format!("nbd_{}_{side}_sustained_iops", job.name), "IOPS", m.sustained_iops));
        }
        figures.push((format!("nbd_{}_ratio", job.name), "x", ratio));
        figures.push((format!("nbd_{}_sustained_ratio", job.name), "x", sustained_ratio));
    }
    if let Some(path) = json {
        let parameters = serde_json::json!({ "command": "nbd", "size_bytes": size, "seconds": seconds });
        bench::write_json(&path, parameters, &figures)?;
    }
    Ok(())
}
