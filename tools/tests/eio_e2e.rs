//! A node whose disk fails reads, on real processes: node 6's data directory is on a FUSE
//! passthrough (`faulty_fs`) that, once switched, answers every read of its journal and page
//! store files with EIO while writes, fsyncs and metadata keep working. The node keeps taking
//! writes and keeps claiming every record (its SCL does not drop, nothing is given up: an I/O
//! error says nothing about the bytes), readers are answered from its peers' copies, and its
//! admin `/metrics` counts the failed reads. Once the disk reads again, the node serves every
//! page itself.

mod faulty_fs;
mod heal;

use std::time::Duration;

use faulty_fs::FaultyMount;
use heal::{expected, metric, metrics, open_writer, read_all, segments, wait_for, write_rounds, PAGE_BYTES};
use protocol::messages::{ErrorCode, ReadPage, ReadRecords, SegmentStatus};
use protocol::{LsnRange, Message, PageId, PgId, PgRef, VolumeId};
use tools::local::{map::NodesPerAz, stop_all, LocalCluster};

const VOLUME: VolumeId = VolumeId(0xe10);
const PAGES: u64 = 16;
/// Rounds written before the disk fails, and in all (the rest while it fails). Fewer than the
/// default `--apply-max`: no image is folded, so a page version is built from journal records.
const ROUNDS_BEFORE: u64 = 3;
const ROUNDS: u64 = 5;
/// On the faulty file system. A reader asks the complete members with the highest SCL, and
/// among equals the highest node id, first: with every SCL equal, this node is asked first.
const FAULTY: u32 = 6;
const STORED_READ_ERRORS: &str = "borealis_stored_read_errors_total";

/// Asks `node` one request over a fresh connection.
async fn ask(cluster: &LocalCluster, node: u32, message: &Message) -> Message {
    let info = cluster.node(node).unwrap();
    let endpoint = heal::endpoint(cluster, node);
    let connection =
        transport::connect(&endpoint, info.addr, &info.name, Duration::from_secs(2)).await.unwrap();
    transport::request(&connection, message).await.unwrap()
}

/// Waits until every node's segment of PG 0 holds the same records (the writer is idle, so
/// the last acks and gossip settle), and returns one of them.
fn converged(runtime: &tokio::runtime::Runtime, cluster: &LocalCluster) -> SegmentStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let all: Vec<SegmentStatus> = cluster
            .nodes()
            .iter()
            .filter_map(|n| runtime.block_on(segments(cluster, n.id, VOLUME)).into_iter().next())
            .collect();
        let held = |s: &SegmentStatus| (s.scl, s.highest_lsn);
        if all.len() == cluster.nodes().len() && all.iter().all(|s| held(s) == held(&all[0])) {
            return all[0];
        }
        assert!(std::time::Instant::now() < deadline, "the nodes never settled: {all:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_node_whose_disk_fails_reads_keeps_its_records_and_readers_get_peers_copies() {
    let _serial = heal::one_at_a_time();
    let started = std::time::Instant::now();
    let root = tempfile::tempdir().unwrap();
    // The cluster's map first, to know where node 6's data directory goes; the mount is
    // dropped (lazily unmounted) after the nodes, declared later, are killed.
    let layout = LocalCluster::load_or_create_with(root.path(), Some(NodesPerAz::new(2).unwrap())).unwrap();
    let data_dir = layout.node(FAULTY).unwrap().data_dir.clone();
    let mount = FaultyMount::mount(&root.path().join("node-6-backing"), &data_dir).unwrap();
    // A fast scrub: it re-reads the failing node's entries while reads fail, too. No entry
    // cache: every record made durable would stay in memory and no read would reach the disk.
    let args = ["--scrub-bytes-per-s", "4194304", "--entry-cache-bytes", "0"];
    let (cluster, mut nodes) = heal::start_cluster(root.path(), &args);
    let admin = cluster.node(FAULTY).unwrap().admin;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let writer = runtime.block_on(async {
        let writer = open_writer(&cluster, VOLUME).await;
        write_rounds(&writer, PAGES, ROUNDS_BEFORE).await;
        writer
    });
    let scl_before = converged(&runtime, &cluster).scl;
    // Its reads reach the mount (scrub re-reads the journal), not the kernel's page cache.
    wait_for("node 6's scrub to read through the mount", Duration::from_secs(20), || {
        mount.reads_passed() > 0
    });
    assert_eq!(metric(&metrics(admin), STORED_READ_ERRORS), 0, "no read failed yet");

    mount.fail_reads(true);
    // Writes still work: the node takes them (the rest of the rounds is durable, and every
    // node, this one too, settles at the same SCL). None of these records was ever read by
    // it and its entry cache is off, so no cache of the node holds them or a page version
    // built from them.
    runtime.block_on(async {
        for round in ROUNDS_BEFORE..ROUNDS {
            writer.append(heal::writes(PAGES, round)).await.unwrap().durable().await.unwrap();
        }
    });
    let settled = converged(&runtime, &cluster);
    assert!(settled.scl > scl_before, "{settled:?}");

    // Reads through the client: the failing node is asked first, fails, and a peer answers.
    let failed_before = mount.reads_failed();
    runtime.block_on(async {
        let vdl = writer.vdl();
        for (page, bytes) in expected(PAGES, ROUNDS) {
            let read = writer.read_page(PageId(page), vdl).await.unwrap();
            assert_eq!(read.bytes.to_vec(), bytes, "page {page} through the client at VDL {vdl}");
        }
    });
    assert!(
        mount.reads_failed() > failed_before,
        "the client's reads went to the failing node first ({} reads failed before, {} after)",
        failed_before,
        mount.reads_failed()
    );

    // Asked directly, the node answers errors, never a wrong page or a short list of records.
    let pg = PgRef { volume_id: VOLUME, pg_id: PgId(0) };
    let mine = runtime.block_on(segments(&cluster, FAULTY, VOLUME))[0];
    for page in 0..PAGES {
        let read = ReadPage {
            pg,
            epochs: mine.epochs,
            page_id: PageId(page),
            read_lsn: mine.scl,
            pg_newest_lsn: mine.scl,
            page_bytes: PAGE_BYTES,
        };
        match runtime.block_on(ask(&cluster, FAULTY, &Message::ReadPage(read))) {
            Message::Error(e) => assert_eq!(e.code, ErrorCode::ChecksumMismatch, "page {page}: {e:?}"),
            other => panic!("page {page} from the failing node: {other:?}"),
        }
    }
    let range = LsnRange::new(scl_before, mine.scl).unwrap();
    let records = ReadRecords { pg, epochs: mine.epochs, range, bytes_max: 1 << 20 };
    match runtime.block_on(ask(&cluster, FAULTY, &Message::ReadRecords(records))) {
        Message::Error(e) => assert_eq!(e.code, ErrorCode::Internal, "{e:?}"),
        other => panic!("records from the failing node: {other:?}"),
    }

    // The fault shows in /metrics (refreshed twice a second), scrub met it too and concluded
    // nothing, and the node still serves.
    wait_for("the failed reads in /metrics", Duration::from_secs(10), || {
        let text = metrics(admin);
        metric(&text, STORED_READ_ERRORS) >= PAGES && metric(&text, "borealis_scrub_read_errors_total") > 0
    });
    let text = metrics(admin);
    eprintln!(
        "{} reads failed at the mount; the node counted {} ({} by scrub)",
        mount.reads_failed(),
        metric(&text, STORED_READ_ERRORS),
        metric(&text, "borealis_scrub_read_errors_total")
    );
    assert_eq!(
        metric(&text, "borealis_scrub_faults_found_total"),
        0,
        "an I/O error is no corruption:\n{text}"
    );
    let az = cluster.node(FAULTY).unwrap().az;
    assert!(text.contains(&format!("node=\"{FAULTY}\",az=\"{az}\",state=\"serving\"")), "{text}");

    // Every record is still claimed: the SCL and the newest LSN held did not move, and
    // `cluster status` counts the node's copy.
    let now = runtime.block_on(segments(&cluster, FAULTY, VOLUME))[0];
    assert_eq!(
        (now.scl, now.highest_lsn),
        (settled.scl, settled.highest_lsn),
        "{now:?} against what every node held once the writes settled: {settled:?}"
    );
    let scl_metric = format!("borealis_segment_scl{{volume=\"{:x}\",pg=\"0\"}} {}", VOLUME.0, settled.scl.0);
    assert!(text.contains(&scl_metric), "{scl_metric} in\n{text}");
    let (code, status) = heal::cluster_status(root.path());
    assert_eq!(code, Some(0), "{status}");
    assert!(status.contains("HEALTH_OK"), "{status}");
    assert!(status.contains(&format!("{FAULTY}:serving:{}", settled.scl.0)), "{status}");

    // The disk reads again: the node serves every page itself, byte for byte.
    mount.fail_reads(false);
    assert_eq!(
        runtime.block_on(read_all(&cluster, FAULTY, VOLUME, PAGES)),
        expected(PAGES, ROUNDS),
        "every page from the node once its disk reads again"
    );
    runtime.block_on(writer.close());
    stop_all(&mut nodes);
    drop(mount);
    eprintln!("took {:?}", started.elapsed());
}
