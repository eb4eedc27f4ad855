//! The client writer against six real storage nodes (3 AZs × 2) on loopback: durability and
//! reads, node failures within and beyond the quorum, and writer recovery with fencing.

use std::time::Duration;

use client::{AppendError, ClientConfig, NewRecord, VolumeGeometry, Writer};
use protocol::messages::Status;
use protocol::placement::{ClusterMap, NodeInfo};
use protocol::{AzId, Lsn, Message, NodeId, PageId, RecordKind, VolumeId};
use tools::cluster::{ensure_key_file, free_udp_port, Launcher, NodeProcess, NodeSpec};
use transport::DevPki;

const VOLUME: VolumeId = VolumeId(0x7e57);

struct Cluster {
    _root: tempfile::TempDir,
    pki: DevPki,
    map: ClusterMap,
    nodes: Vec<NodeProcess>,
}

impl Cluster {
    fn start() -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let names: Vec<String> = (1..=6).map(|i| format!("node-{i}")).chain(["client".to_string()]).collect();
        let pki = transport::ensure_dev_pki(
            &root.path().join("pki"),
            &names.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .unwrap();
        ensure_key_file(&root.path().join("kek")).unwrap();
        let launcher =
            Launcher { exe: env!("CARGO_BIN_EXE_borealis").into(), prefix: vec!["storaged".into()] };
        let mut infos = Vec::new();
        let mut nodes = Vec::new();
        for id in 1..=6u32 {
            let spec = NodeSpec {
                node_id: id,
                az: ((id - 1) / 2) as u16,
                listen: ([127, 0, 0, 1], free_udp_port().unwrap()).into(),
                admin: None,
                data_dir: root.path().join(format!("node-{id}")),
                tls: pki.files_for(&format!("node-{id}")),
                key_file: root.path().join("kek"),
                extra: vec!["--journal-file-bytes".into(), (16u64 << 20).to_string()],
            };
            infos.push(NodeInfo {
                id: NodeId(id),
                az: AzId(spec.az),
                addr: spec.listen,
                name: format!("node-{id}"),
                spare: false,
            });
            nodes.push(
                NodeProcess::start(&launcher, spec, root.path().join(format!("node-{id}.log"))).unwrap(),
            );
        }
        Cluster { _root: root, pki, map: ClusterMap::new(infos).unwrap(), nodes }
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(self.map.clone(), self.pki.files_for("client"));
        config.append_timeout = Duration::from_secs(3);
        config.connect_timeout = Duration::from_secs(1);
        config
    }

    fn node(&mut self, id: u32) -> &mut NodeProcess {
        &mut self.nodes[id as usize - 1]
    }
}

fn geometry() -> VolumeGeometry {
    VolumeGeometry::new(VOLUME, 4096, 64).unwrap()
}

fn payload(seq: u64) -> Vec<u8> {
    format!("row {seq}: the quick brown fox jumps over the lazy dog\n").repeat(8).into_bytes()
}

fn records(seq: u64, count: u64) -> Vec<NewRecord> {
    (seq..seq + count)
        .map(|i| NewRecord {
            page: PageId(i * 7 % 200),
            kind: RecordKind::Marker,
            payload: payload(i).into(),
            cpl: i % 4 == 3,
            lsn: None,
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Appends `batches` groups of 4 records (the last a CPL) and waits for each to be durable.
async fn append_durably(writer: &Writer, start: u64, batches: u64) -> Vec<(Lsn, u64)> {
    let mut written = Vec::new();
    for b in 0..batches {
        let seq = start + b * 4;
        let appended = writer.append(records(seq, 4)).await.unwrap();
        let (first, last) = (appended.first, appended.last);
        let vdl = appended.durable().await.unwrap();
        assert!(vdl >= last);
        written.extend((0..4).map(|i| (Lsn(first.0 + i), seq + i)));
    }
    written
}

async fn verify_reads(writer: &Writer, written: &[(Lsn, u64)]) {
    for (lsn, seq) in written {
        let page = PageId(seq * 7 % 200);
        let got = writer.read_records(page, Lsn(lsn.0 - 1), *lsn).await.unwrap();
        assert_eq!(got.len(), 1, "record {lsn} of page {page}");
        assert_eq!(got[0].payload()[..], payload(*seq)[..], "record {lsn} bytes");
    }
}

async fn status(cluster: &Cluster, node: u32) -> Status {
    let endpoint = transport::client_endpoint(
        transport::any_addr_for(cluster.map.nodes()[0].addr),
        &cluster.pki.files_for("client"),
        &Default::default(),
    )
    .unwrap();
    let info = cluster.map.node(NodeId(node)).unwrap();
    let connection =
        transport::connect(&endpoint, info.addr, &info.name, Duration::from_secs(5)).await.unwrap();
    match transport::request(&connection, &Message::StatusRequest).await.unwrap() {
        Message::Status(status) => status,
        other => panic!("{other:?}"),
    }
}

/// The truncation ranges a segment holds (asked with an epoch bump to its current epochs,
/// which changes nothing).
async fn truncations_of(
    cluster: &Cluster,
    node: u32,
    pg: protocol::PgRef,
    epochs: protocol::Epochs,
) -> Vec<(protocol::Epoch, protocol::LsnRange)> {
    let tls = cluster.pki.files_for("client");
    let endpoint = transport::client_endpoint(
        transport::any_addr_for(cluster.map.nodes()[0].addr),
        &tls,
        &Default::default(),
    )
    .unwrap();
    let info = cluster.map.node(NodeId(node)).unwrap();
    let connection =
        transport::connect(&endpoint, info.addr, &info.name, Duration::from_secs(5)).await.unwrap();
    let bump = Message::EpochBump(protocol::messages::EpochBump { pg, epochs });
    match transport::request(&connection, &bump).await.unwrap() {
        Message::EpochAck(ack) => ack.truncations,
        other => panic!("{other:?}"),
    }
}

#[test]
fn six_nodes_make_records_durable_and_reads_return_the_bytes_written() {
    let cluster = Cluster::start();
    runtime().block_on(async {
        let writer = Writer::open(cluster.config(), geometry()).await.unwrap();
        let written = append_durably(&writer, 0, 60).await;
        assert!(writer.vdl() >= written.last().unwrap().0);
        verify_reads(&writer, &written).await;
        // Bad appends are refused for what is wrong with them, and nothing is lost.
        assert_eq!(writer.append(Vec::new()).await.unwrap_err(), AppendError::Empty);
        let last = written.last().unwrap().0;
        let mut behind = records(9_999, 1);
        behind[0].lsn = Some(last);
        let refused = writer.append(behind).await.unwrap_err();
        assert!(matches!(refused, AppendError::LsnNotIncreasing { lsn, .. } if lsn == last), "{refused:?}");
        verify_reads(&writer, &written).await;
        writer.close().await;
    });
}

#[test]
fn appends_survive_two_lost_nodes_fail_on_a_third_and_resume_when_one_returns() {
    let mut cluster = Cluster::start();
    let rt = runtime();
    let writer = rt.block_on(Writer::open(cluster.config(), geometry())).unwrap();
    let mut written = rt.block_on(append_durably(&writer, 0, 10));
    // A whole AZ (nodes 1 and 2) dies mid-stream.
    cluster.node(1).kill9();
    cluster.node(2).kill9();
    written.extend(rt.block_on(append_durably(&writer, 1000, 20)));
    cluster.node(3).kill9();
    let failed = rt.block_on(async { writer.append(records(5000, 4)).await.unwrap().durable().await });
    assert!(matches!(failed, Err(AppendError::Timeout { .. })), "{failed:?}");
    cluster.node(3).restart().unwrap();
    written.extend(rt.block_on(append_durably(&writer, 6000, 10)));
    rt.block_on(verify_reads(&writer, &written));
    // The dead AZ returns and catches up: every segment reaches the writer's VDL.
    cluster.node(1).restart().unwrap();
    cluster.node(2).restart().unwrap();
    let target = rt.block_on(async {
        let appended = writer.append(records(9000, 4)).await.unwrap();
        appended.durable().await.unwrap()
    });
    let caught_up = rt.block_on(async {
        for _ in 0..100 {
            let mut all = true;
            for node in 1..=6 {
                let status = status(&cluster, node).await;
                let newest_scl = status.segments.iter().map(|s| s.scl).max().unwrap_or(Lsn(0));
                all &= !status.segments.is_empty()
                    && status.segments.iter().all(|s| s.scl >= Lsn(1))
                    && newest_scl >= Lsn(1);
            }
            if all && scls_reach(&cluster, target).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    });
    assert!(caught_up, "every node's segments should catch up to VDL {target}");
    rt.block_on(writer.close());
}

/// True if, on every node, every segment of the volume is complete through the last record
/// of its PG at or below `vdl` (checked through the node's SCL reaching what the other nodes
/// have for that PG).
async fn scls_reach(cluster: &Cluster, vdl: Lsn) -> bool {
    let mut per_pg: std::collections::BTreeMap<u32, Vec<Lsn>> = Default::default();
    for node in 1..=6 {
        for s in status(cluster, node).await.segments.iter().filter(|s| s.pg.volume_id == VOLUME) {
            per_pg.entry(s.pg.pg_id.0).or_default().push(s.scl);
        }
    }
    per_pg.values().all(|scls| {
        let best = scls.iter().copied().filter(|s| *s <= Lsn(vdl.0 + 4)).max().unwrap_or(Lsn(0));
        scls.len() == 6 && scls.iter().all(|s| *s >= best)
    })
}

#[test]
fn a_new_writer_keeps_every_durable_record_truncates_the_rest_and_fences_the_old_one() {
    let cluster = Cluster::start();
    let rt = runtime();
    let old = rt.block_on(Writer::open(cluster.config(), geometry())).unwrap();
    let written = rt.block_on(append_durably(&old, 0, 25));
    let reported = old.vdl();
    // Records the old writer sent but whose durability it never reported (no CPL): lost or
    // kept, they must never be half-visible.
    let _undecided = rt.block_on(old.append(records(100_001, 2))).unwrap();
    let new = rt.block_on(Writer::open(cluster.config(), geometry())).unwrap();
    let recovered_vdl = new.vdl();
    assert!(new.vdl() >= reported, "new VDL {} below the old writer's reported {reported}", new.vdl());
    rt.block_on(verify_reads(&new, &written));
    let fenced = rt.block_on(async { old.append(records(200_000, 4)).await?.durable().await });
    assert_eq!(fenced, Err(AppendError::Fenced));
    let more = rt.block_on(append_durably(&new, 300_000, 5));
    assert!(
        more[0].0 > new.vdl().min(more[0].0) || more[0].0 > reported,
        "the new writer resumes above the truncation range"
    );
    rt.block_on(verify_reads(&new, &more));
    // Every segment of every PG holds the new writer's epoch and its truncation range, which
    // starts at the recovered VDL.
    rt.block_on(async {
        for node in 1..=6 {
            for segment in status(&cluster, node).await.segments {
                assert_eq!(
                    segment.epochs.volume,
                    protocol::Epoch(3),
                    "node {node} {segment:?} missed the new epoch"
                );
                let truncations = truncations_of(&cluster, node, segment.pg, segment.epochs).await;
                let found =
                    truncations.iter().any(|(e, r)| *e == protocol::Epoch(3) && r.after() == recovered_vdl);
                assert!(
                    found,
                    "node {node} {:?} lacks the truncation after {recovered_vdl}: {truncations:?}",
                    segment.pg
                );
            }
        }
    });
    rt.block_on(new.close());
}

/// Page records for the page test: images, patches and zeroings over a few pages.
fn page_record(i: u64) -> NewRecord {
    let page = PageId(i % 5);
    let (kind, payload) = match i % 6 {
        0 => (RecordKind::PageImage, vec![(i % 251) as u8; 4096]),
        5 => (RecordKind::PageZero, Vec::new()),
        _ => {
            let text = format!("edit {i};");
            let edit = protocol::patch::PatchEdit { offset: (i * 37 % 4000) as u32, data: text.as_bytes() };
            (RecordKind::PagePatch, protocol::patch::encode(&[edit]).unwrap().to_vec())
        }
    };
    NewRecord { page, kind, payload: payload.into(), cpl: true, lsn: None }
}

/// The page as the records written up to `at` make it.
fn model_page(written: &[(Lsn, protocol::Record)], page: PageId, at: Lsn) -> (Lsn, Vec<u8>) {
    let mine: Vec<&protocol::Record> =
        written.iter().filter(|(l, r)| *l <= at && r.meta().page_id == page).map(|(_, r)| r).collect();
    let version = mine.last().map_or(Lsn::ZERO, |r| r.lsn());
    (version, protocol::apply::materialize(4096, None, mine).unwrap())
}

#[test]
fn pages_read_back_at_every_lsn_from_the_floor_and_with_a_node_down() {
    let mut cluster = Cluster::start();
    runtime().block_on(async {
        let writer = Writer::open(cluster.config(), geometry()).await.unwrap();
        writer.pin_floor(Some(Lsn::ZERO)).await.unwrap();
        let mut written = Vec::new();
        for i in 0..120 {
            let appended = writer.append(vec![page_record(i)]).await.unwrap();
            appended.durable().await.unwrap();
            // Rebuild the record as the writer sent it, for the model (kind, page, payload).
            let new = page_record(i);
            let meta =
                protocol::RecordMeta::after(Lsn(appended.last.0 - 1), appended.last, new.kind, new.page);
            written.push((appended.last, protocol::Record::new(meta, new.payload).unwrap()));
        }
        let vdl = writer.vdl();
        // Every record's LSN, the LSN just before it, and VDL.
        let points = written.iter().flat_map(|(l, _)| [l.0 - 1, l.0]).chain([vdl.0]);
        for at in points {
            for page in 0..6 {
                let got = writer.read_page(PageId(page), Lsn(at)).await.unwrap();
                let (version, bytes) = model_page(&written, PageId(page), Lsn(at));
                assert_eq!(got.lsn, version, "version of page {page} at {at}");
                assert!(got.bytes[..] == bytes[..], "bytes of page {page} at {at}");
            }
        }
        // Reads stay available with a node down (one complete segment is enough).
        cluster.node(1).kill9();
        for page in 0..5 {
            let got = writer.read_page(PageId(page), vdl).await.unwrap();
            assert!(got.bytes[..] == model_page(&written, PageId(page), vdl).1[..]);
        }
        // Unpinned, the floor follows VDL: an old read point is refused, not served wrong.
        writer.pin_floor(None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let old = writer.read_page(PageId(0), Lsn(1)).await;
        assert!(matches!(old, Err(client::ReadError::TooOld { .. })), "{old:?}");
        writer.close().await;
    });
}

/// One atomic group writing `counter` to a page in PG 0 and one in PG 1 (the CPL last).
fn pair(counter: u64) -> Vec<NewRecord> {
    let image = |page: u64, cpl: bool| {
        let mut bytes = vec![0u8; 4096];
        bytes[..8].copy_from_slice(&counter.to_le_bytes());
        NewRecord { page: PageId(page), kind: RecordKind::PageImage, payload: bytes.into(), cpl, lsn: None }
    };
    vec![image(0, false), image(100, true)]
}

/// The counters of both pages of `pair` at the reader's newest read point.
async fn read_pair(reader: &client::Reader) -> (Lsn, u64, u64) {
    let snapshot = reader.snapshot();
    let counter = |bytes: &[u8]| u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let a = reader.read_page(PageId(0), &snapshot).await.unwrap();
    let b = reader.read_page(PageId(100), &snapshot).await.unwrap();
    (snapshot.lsn(), counter(&a.bytes), counter(&b.bytes))
}

#[test]
fn a_reader_beside_the_writer_sees_whole_groups_across_pgs_and_never_fences_it() {
    let mut cluster = Cluster::start();
    let rt = runtime();
    let writer = rt.block_on(Writer::open(cluster.config(), geometry())).unwrap();
    rt.block_on(async {
        for counter in 1..=20 {
            writer.append(pair(counter)).await.unwrap().durable().await.unwrap();
        }
    });
    let reader = rt.block_on(client::Reader::open(cluster.config(), geometry())).unwrap();
    assert!(reader.read_point() > Lsn::ZERO);
    let (_, first, _) = rt.block_on(read_pair(&reader));
    assert!(first >= 1, "the reader starts at a VDL the writer declared");
    // The writer goes on while the reader reads: every snapshot shows both pages of one group,
    // counters never go back, and the reader sees them move. No append fails.
    // The writer runs for three reader ticks (the read point moves once a tick), paced so the
    // machine's speed does not decide how many groups that is.
    let (final_counter, (seen, last)) = rt.block_on(async {
        let writing = async {
            let until = tokio::time::Instant::now() + 3 * client::READER_TICK;
            let mut counter = 21;
            while tokio::time::Instant::now() < until {
                writer.append(pair(counter)).await.unwrap().durable().await.unwrap();
                counter += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            counter - 1
        };
        let reading = async {
            let (mut seen, mut last) = (std::collections::BTreeSet::new(), 0);
            let deadline = tokio::time::Instant::now() + 4 * client::READER_TICK;
            while tokio::time::Instant::now() < deadline {
                let (at, a, b) = read_pair(&reader).await;
                assert_eq!(a, b, "both pages of one atomic group at {at}");
                assert!(a >= last, "counter went back from {last} to {a} at {at}");
                (last, _) = (a, seen.insert(a));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (seen, last)
        };
        tokio::join!(writing, reading)
    });
    assert!(seen.len() >= 3, "the read point moved with the writer: saw {seen:?}");
    assert!(last <= final_counter);
    // The reader catches up with the writer's last VDL, also with a node down, and keeps
    // reading once the writer is gone.
    cluster.node(1).kill9();
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (at, a, b) = read_pair(&reader).await;
            assert_eq!(a, b, "at {at}");
            if a == final_counter {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the reader stayed at {a} ({at})");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        writer.close().await;
        assert_eq!(read_pair(&reader).await.1, final_counter, "read without a writer");
    });
    reader.close();
}
