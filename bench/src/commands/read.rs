//! `borealis-bench read`: `read_page` on one storage node started here, hot and cold, next to
//! a plain pread of the same size, and the admin-port helpers it waits with.

use std::path::PathBuf;
use std::time::Duration;

use bench::page_reads::{ReadLoad, Reader};
use tools::cluster::{ensure_key_file, free_tcp_port, free_udp_port, Launcher, NodeProcess, NodeSpec};

pub(crate) fn read_bench(load: ReadLoad, dir: Option<PathBuf>) -> Result<(), String> {
    let temp = bench::scratch_dir(dir)?;
    let root = temp.path();
    let pki =
        transport::ensure_dev_pki(&root.join("pki"), &["node-1", "client"]).map_err(|e| e.to_string())?;
    ensure_key_file(&root.join("kek")).map_err(|e| e.to_string())?;
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], free_tcp_port().map_err(|e| e.to_string())?).into();
    let spec = NodeSpec {
        node_id: 1,
        az: 0,
        listen: ([127, 0, 0, 1], free_udp_port().map_err(|e| e.to_string())?).into(),
        admin: Some(admin),
        data_dir: root.join("node"),
        tls: pki.files_for("node-1"),
        key_file: root.join("kek"),
        // A small page cache, so the cold run misses it.
        extra: vec!["--memory-bytes-max".into(), (64u64 << 20).to_string()],
    };
    let launcher = Launcher::this_exe("storaged").map_err(|e| e.to_string())?;
    let mut node =
        NodeProcess::start(&launcher, spec.clone(), root.join("node.log")).map_err(|e| e.to_string())?;
    let runtime = bench::current_thread()?;
    let data_bytes = load.pages * u64::from(load.page_bytes);
    let pread_file = root.join("pread.bin");
    bench::page_reads::make_pread_file(&pread_file, data_bytes)?;
    let results = runtime.block_on(async {
        let mut reader = Reader::connect(spec.listen, "node-1", &pki.files_for("client"), load).await?;
        eprintln!(
            "borealis-bench: writing {} pages of {} bytes and {} patches each",
            load.pages, load.page_bytes, load.patches
        );
        reader.load().await?;
        eprintln!("borealis-bench: waiting for the coalescer to fold the log into page images");
        wait_for_folding(admin, Duration::from_secs(120)).await?;
        let round_trips = reader.run_round_trips().await?;
        let hot = reader.run(u64::MAX, |i| i % load.hot_pages).await?;
        let page_len = load.page_bytes as usize;
        let pread_hot = bench::page_reads::pread_run(&pread_file, page_len, load.duration, load.hot_pages)?;
        let dropped = bench::page_reads::drop_kernel_caches();
        let cold = reader.run(load.pages, |i| bench::page_reads::scatter(i, load.pages)).await?;
        bench::page_reads::drop_kernel_caches();
        let pread_cold = bench::page_reads::pread_run(&pread_file, page_len, load.duration, 0)?;
        Ok::<_, String>((round_trips, hot, pread_hot, cold, pread_cold, dropped))
    });
    node.stop();
    let (round_trips, hot, pread_hot, cold, pread_cold, dropped) = results?;
    println!(
        "read_page vs pread, {} bytes, QD1, {} pages ({} MiB) on {}",
        load.page_bytes,
        load.pages,
        data_bytes >> 20,
        root.display()
    );
    println!(
        "{:>6} | {:>10} {:>8} {:>8} | {:>10} {:>8} {:>8} | {:>12}",
        "", "pages/s", "p50 us", "p99 us", "pread/s", "p50 us", "p99 us", "pages/pread"
    );
    for (name, ours, theirs) in [("hot", &hot, &pread_hot), ("cold", &cold, &pread_cold)] {
        println!(
            "{name:>6} | {:>10.0} {:>8} {:>8} | {:>10.0} {:>8} {:>8} | {:>12.3}",
            ours.per_s(),
            ours.p(0.5),
            ours.p(0.99),
            theirs.per_s(),
            theirs.p(0.5),
            theirs.p(0.99),
            ours.per_s() / theirs.per_s()
        );
    }
    println!(
        "   rpc | {:>10.0} {:>8} {:>8} |  (a status request: the QUIC round trip every read pays)",
        round_trips.per_s(),
        round_trips.p(0.5),
        round_trips.p(0.99)
    );
    if !dropped {
        println!("note: could not drop the kernel's page cache (needs root): cold reads may hit it");
    }
    Ok(())
}

/// Waits until the node's journal holds only its head file (everything else folded and
/// recycled), reading its admin metrics.
async fn wait_for_folding(admin: std::net::SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let metrics = http_get(admin, "/metrics").unwrap_or_default();
        let value =
            |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
        if value("borealis_journal_files ") == Some(1) && value("borealis_records_held_for_floor ") == Some(0)
        {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("the coalescer did not fold the log within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}
