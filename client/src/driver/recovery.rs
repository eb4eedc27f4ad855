//! Writer recovery over the network (DESIGN §3): fence the old writer, gather what a read
//! quorum of every PG holds, decide with `core::recovery::plan`, truncate, re-replicate, and
//! hand the writer core its starting point.

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::messages::{AppendBatch, EpochBump, ReadRecords, Records, Truncate, BATCH_RECORDS_MAX};
use protocol::quorum::{Membership, READ_QUORUM, WRITE_QUORUM};
use protocol::{Epochs, Lsn, LsnRange, Message, NodeId, PgId, Record};

use super::error::OpenError;
use super::links::{Connections, Dialer};
use crate::core::recovery::{fetch_after, plan, PgEvidence};
use crate::core::writer::WriterStart;
use crate::core::VolumeGeometry;

/// Record bytes asked for per read while gathering evidence.
const RECOVERY_READ_BYTES_MAX: u32 = 4 * 1024 * 1024;

/// One request with a timeout; `None` if the node is unreachable or slow.
pub async fn ask(
    connections: &Connections,
    node: NodeId,
    message: &Message,
    timeout: Duration,
) -> Option<Message> {
    let connection = connections.get(node)?;
    match tokio::time::timeout(timeout, transport::request(&connection, message)).await {
        Ok(Ok(reply)) => Some(reply),
        Ok(Err(error)) => {
            tracing::debug!(%node, %error, "request failed");
            None
        }
        Err(_) => None,
    }
}

/// Asks every node in `nodes` at once; returns the replies that came.
async fn ask_all(
    connections: &Connections,
    nodes: &[NodeId],
    message: &Message,
    timeout: Duration,
) -> Vec<(NodeId, Message)> {
    let asks = nodes.iter().map(|n| async move { (*n, ask(connections, *n, message, timeout).await) });
    futures::future::join_all(asks).await.into_iter().filter_map(|(n, r)| r.map(|r| (n, r))).collect()
}

/// Finds the volume's PGs and epochs, fences the old writer and prepares the new one.
pub async fn recover(
    dialer: &Dialer,
    connections: &Connections,
    geometry: VolumeGeometry,
    lal: u64,
    timeout: Duration,
) -> Result<WriterStart, OpenError> {
    let (pg_count, seen, answered) = survey(dialer, connections, geometry, timeout).await;
    let Some(seen) = seen else {
        require_quorum(dialer, geometry, PgId(0), &answered, READ_QUORUM)?;
        return Ok(WriterStart::fresh());
    };
    // PGs are created in order: the one after the last seen must be absent at a read quorum.
    require_quorum(dialer, geometry, PgId(pg_count), &answered, READ_QUORUM)?;
    let epochs = Epochs { volume: seen.volume.next(), ..seen };
    let mut evidence = BTreeMap::new();
    let mut responders = BTreeMap::new();
    for pg in (0..pg_count).map(PgId) {
        let (nodes, pg_evidence) = bump(dialer, connections, geometry, pg, epochs, timeout).await?;
        evidence.insert(pg, pg_evidence);
        responders.insert(pg, nodes);
    }
    let after = fetch_after(&evidence, lal);
    for (pg, nodes) in &responders {
        let records = gather(connections, geometry, *pg, epochs, nodes, after, timeout).await;
        evidence.get_mut(pg).expect("inserted above").records = records;
    }
    let plan = plan(&evidence, lal).map_err(|e| OpenError::Recovery(e.to_string()))?;
    tracing::info!(vdl = %plan.vdl, vcl = %plan.vcl, truncation = ?plan.truncation, %epochs.volume, "recovered");
    for pg in (0..pg_count).map(PgId) {
        let truncate =
            Message::Truncate(Truncate { pg: geometry.pg_ref(pg), epochs, range: plan.truncation });
        write_quorum(dialer, connections, geometry, pg, &truncate, timeout).await?;
    }
    for (pg, records) in &plan.refill {
        refill(dialer, connections, geometry, *pg, epochs, plan.vdl, records, timeout).await?;
    }
    Ok(WriterStart {
        epochs,
        vdl: plan.vdl,
        next_lsn: plan.next_lsn,
        truncation: Some(plan.truncation),
        pgs: plan.pg_newest,
    })
}

/// Asks every node for its segments: returns the number of PGs of the volume, the newest
/// epochs seen (None if no node holds any segment of it) and who answered.
async fn survey(
    dialer: &Dialer,
    connections: &Connections,
    geometry: VolumeGeometry,
    timeout: Duration,
) -> (u32, Option<Epochs>, Vec<NodeId>) {
    let nodes: Vec<NodeId> = dialer.cluster.nodes().iter().map(|n| n.id).collect();
    let mut pg_count = 0;
    let mut seen: Option<Epochs> = None;
    let mut answered = Vec::new();
    for (node, reply) in ask_all(connections, &nodes, &Message::StatusRequest, timeout).await {
        let Message::Status(status) = reply else { continue };
        answered.push(node);
        for segment in status.segments.iter().filter(|s| s.pg.volume_id == geometry.volume) {
            pg_count = pg_count.max(segment.pg.pg_id.0 + 1);
            let e = seen.get_or_insert(segment.epochs);
            e.volume = e.volume.max(segment.epochs.volume);
            e.membership = e.membership.max(segment.epochs.membership);
            e.geometry = e.geometry.max(segment.epochs.geometry);
        }
    }
    (pg_count, seen, answered)
}

fn require_quorum(
    dialer: &Dialer,
    geometry: VolumeGeometry,
    pg: PgId,
    answered: &[NodeId],
    needed: usize,
) -> Result<(), OpenError> {
    let members = dialer.cluster.place(geometry.volume, pg);
    let count = members.count_in(answered);
    if count < needed {
        return Err(OpenError::Unavailable { pg, answered: count, needed });
    }
    Ok(())
}

/// Raises the volume epoch on every member of `pg`; needs a read quorum, which fences the old
/// writer. Returns who answered, and the highest LSN and truncation ranges each holds.
async fn bump(
    dialer: &Dialer,
    connections: &Connections,
    geometry: VolumeGeometry,
    pg: PgId,
    epochs: Epochs,
    timeout: Duration,
) -> Result<(Vec<NodeId>, PgEvidence), OpenError> {
    let members = dialer.cluster.place(geometry.volume, pg);
    let bump = Message::EpochBump(EpochBump { pg: geometry.pg_ref(pg), epochs });
    let mut nodes = Vec::new();
    let mut evidence = PgEvidence::default();
    for (node, reply) in ask_all(connections, members.members(), &bump, timeout).await {
        if let Message::EpochAck(ack) = reply {
            nodes.push(node);
            evidence.highest.push(ack.highest_lsn);
            evidence.truncations.extend(ack.truncations);
            evidence.vdl_hints.push(ack.vdl_hint);
        }
    }
    if !Membership::stable(epochs.membership, members).fenced_by(&nodes) {
        return Err(OpenError::Unavailable { pg, answered: nodes.len(), needed: READ_QUORUM });
    }
    Ok((nodes, evidence))
}

/// Every record the responders of `pg` hold after `after`.
async fn gather(
    connections: &Connections,
    geometry: VolumeGeometry,
    pg: PgId,
    epochs: Epochs,
    nodes: &[NodeId],
    after: Lsn,
    timeout: Duration,
) -> Vec<Record> {
    let mut records = Vec::new();
    for node in nodes {
        let mut from = after;
        while let Ok(range) = LsnRange::new(from, Lsn::MAX) {
            let read = Message::ReadRecords(ReadRecords {
                pg: geometry.pg_ref(pg),
                epochs,
                range,
                bytes_max: RECOVERY_READ_BYTES_MAX,
            });
            let Some(Message::Records(Records { records: got, more, .. })) =
                ask(connections, *node, &read, timeout).await
            else {
                break;
            };
            from = got.last().map_or(from, Record::lsn);
            records.extend(got);
            if !more {
                break;
            }
        }
    }
    records
}

/// Sends `message` to every member of `pg` and requires a write quorum of positive replies.
async fn write_quorum(
    dialer: &Dialer,
    connections: &Connections,
    geometry: VolumeGeometry,
    pg: PgId,
    message: &Message,
    timeout: Duration,
) -> Result<(), OpenError> {
    let members = dialer.cluster.place(geometry.volume, pg);
    let acked: Vec<NodeId> = ask_all(connections, members.members(), message, timeout)
        .await
        .into_iter()
        .filter(|(_, reply)| !matches!(reply, Message::Error(_)))
        .map(|(node, _)| node)
        .collect();
    if !Membership::stable(protocol::Epoch::INITIAL, members).write_quorum_met(&acked) {
        return Err(OpenError::Unavailable { pg, answered: acked.len(), needed: WRITE_QUORUM });
    }
    Ok(())
}

/// Re-replicates recovered records to a write quorum of their PG, in chained batches.
#[allow(clippy::too_many_arguments)]
async fn refill(
    dialer: &Dialer,
    connections: &Connections,
    geometry: VolumeGeometry,
    pg: PgId,
    epochs: Epochs,
    vdl: Lsn,
    records: &[Record],
    timeout: Duration,
) -> Result<(), OpenError> {
    for chunk in records.chunks(BATCH_RECORDS_MAX.min(256)) {
        let pg_vdl_lsn = chunk.last().map_or(Lsn::ZERO, Record::lsn);
        let batch = AppendBatch { pg: geometry.pg_ref(pg), epochs, vdl, pg_vdl_lsn, records: chunk.to_vec() };
        write_quorum(dialer, connections, geometry, pg, &Message::AppendBatch(batch), timeout).await?;
    }
    Ok(())
}

/// How long recovery waits for each request.
pub const RECOVERY_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
