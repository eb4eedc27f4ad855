//! Typed errors of the engine API, one enum per operation family.

use protocol::{Lsn, PgId};

/// Why a writer could not open a volume.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The client's endpoint could not be set up (TLS files, a socket).
    #[error("client setup: {0}")]
    Setup(#[from] transport::TransportError),
    #[error("PG {pg}: only {answered} of its segments answered; recovery needs {needed}")]
    Unavailable { pg: PgId, answered: usize, needed: usize },
    /// The segments' records contradict each other: recovery cannot decide (report it).
    #[error("recovery: {0}")]
    Recovery(crate::core::recovery::RecoveryError),
    /// A reader found no VDL a writer declared on every PG it knows of ({pgs} PGs): no writer
    /// has opened the volume since its nodes started, or too few nodes answered.
    #[error("no read point: no declared VDL known on all {pgs} PGs of the volume")]
    NoReadPoint { pgs: usize },
    /// This client's certificate may not open the volume: a node refused it (`node`): the
    /// volume's ACL gives it no `write` (or no `read`, for a reader).
    #[error("unauthorized: {detail} (node {node})")]
    Unauthorized { node: protocol::NodeId, detail: String },
    /// The volume was deleted for good (`borealis volume delete`): `node` refused it so.
    #[error("volume deleted: {detail} (node {node})")]
    VolumeDeleted { node: protocol::NodeId, detail: String },
}

/// Why an append did not become durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    #[error("fenced: a newer writer holds the volume")]
    Fenced,
    /// The nodes refuse this writer's certificate the volume (its `write` was revoked).
    #[error("Unauthorized: the volume's ACL no longer gives this writer write")]
    Unauthorized,
    /// The volume was deleted while this writer had it open.
    #[error("volume deleted: the volume was deleted for good")]
    VolumeDeleted,
    #[error(
        "not durable within the append timeout (VDL {vdl}, waiting for {lsn}); it may still become durable"
    )]
    Timeout { lsn: Lsn, vdl: Lsn },
    #[error("an append needs at least one record")]
    Empty,
    #[error("engine LSN {lsn} is not above the last LSN {last}")]
    LsnNotIncreasing { lsn: Lsn, last: Lsn },
    #[error("record rejected: {0}")]
    Format(protocol::FormatError),
    #[error("the writer is closed")]
    Closed,
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("read LSN {read_lsn} is above VDL {vdl}")]
    NotDurable { read_lsn: Lsn, vdl: Lsn },
    #[error("read LSN {read_lsn} is below the floor {floor}: its versions may be gone")]
    TooOld { read_lsn: Lsn, floor: Lsn },
    /// `code`: the last refusal's, when the last segment asked refused (`TooOld` stays so:
    /// trying again does not help); `None` when it did not answer.
    #[error("no segment of PG {pg} could serve the read: {detail}")]
    Unavailable { pg: PgId, code: Option<protocol::messages::ErrorCode>, detail: String },
    #[error("the writer is closed")]
    Closed,
}

impl OpenError {
    /// What a node's refusal with `code` (`Unauthorized` or `VolumeDeleted`) means for opening.
    pub(crate) fn refused(
        code: protocol::messages::ErrorCode,
        node: protocol::NodeId,
        detail: String,
    ) -> OpenError {
        match code {
            protocol::messages::ErrorCode::VolumeDeleted => OpenError::VolumeDeleted { node, detail },
            _ => OpenError::Unauthorized { node, detail },
        }
    }
}
