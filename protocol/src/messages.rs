//! The framed messages nodes, clients and peers exchange (DESIGN §3), and their body codecs.
//!
//! Every body is a fixed sequence of [`Wire`] fields and `u32`-counted lists. [`Message::check`]
//! holds the format rules a body must meet beyond its bytes (list bounds, ordered LSNs, a batch's
//! `prev_pg_lsn` chain); encoding and decoding both apply it, so nothing can be sent that a peer
//! would reject as malformed.

use bytes::{BufMut, Bytes};

use crate::apply::check_page_bytes;
use crate::codec::{expect_at_most, expect_crc, expect_zero, put_count, Reader};
use crate::error::{FormatError, FormatResult};
use crate::ids::{AzId, Epoch, Epochs, Lsn, NodeId, PageId, VolumeId};
use crate::quorum::Membership;
use crate::record::{
    Record, RecordFlags, RecordKind, RecordMeta, PAGE_BYTES_MAX, RECORD_HEADER_BYTES,
    RECORD_PAYLOAD_BYTES_MAX,
};
use crate::wire::{get_list, put_list, LsnRange, PgRef, Wire};

/// Most records in one append batch or one records response.
pub const BATCH_RECORDS_MAX: usize = 4096;
/// Most LSN ranges in a gossip summary's hole list or a gossip fetch.
pub const GOSSIP_RANGES_MAX: usize = 256;
/// Most segments listed in one status response.
pub const STATUS_SEGMENTS_MAX: usize = 4096;
/// Longest error message, in UTF-8 bytes.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 1024;
/// Most truncation ranges an epoch ack reports.
pub const TRUNCATIONS_REPORTED_MAX: usize = 64;
/// Layout of a `Status` body's segment entries, written in its header: 1 = entries carrying a
/// [`SegmentState`]; 2 = and the segment's stored membership. A body of another layout is
/// refused (`UnsupportedVersion`), never misread.
pub const STATUS_LAYOUT: u16 = 2;
/// Most page versions in one hydration answer.
pub const HYDRATE_PAGES_MAX: usize = 2048;
/// Most page bytes one hydration answer carries (at least one page is always sent): well
/// inside the frame body bound.
pub const HYDRATE_BYTES_MAX: u32 = 4 * 1024 * 1024;

/// Records for one PG, sent to each of its segments; also the idle heartbeat (no records) that
/// keeps nodes informed of VDL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendBatch {
    pub pg: PgRef,
    pub epochs: Epochs,
    /// The writer's VDL when the batch was sent.
    pub vdl: Lsn,
    /// The newest LSN of this PG at or below `vdl`.
    pub pg_vdl_lsn: Lsn,
    /// The volume's page size: fixed per volume, so a segment learns it from its first batch.
    pub page_bytes: u32,
    /// Strictly increasing LSNs, each record's `prev_pg_lsn` the previous record's LSN.
    pub records: Vec<Record>,
}

/// A node's acknowledgement that a batch is on stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendAck {
    pub pg: PgRef,
    pub node: NodeId,
    /// The epochs the node holds for the segment.
    pub epochs: Epochs,
    /// LSNs of the first and last record of the acknowledged batch (both zero for a heartbeat).
    pub first_lsn: Lsn,
    pub last_lsn: Lsn,
    /// The segment's complete LSN after this batch.
    pub scl: Lsn,
    /// Bytes of further records the node will take from this writer now (backpressure).
    pub credit_bytes: u32,
}

/// Asks for a segment's records in an LSN range (recovery, repair).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRecords {
    pub pg: PgRef,
    pub epochs: Epochs,
    pub range: LsnRange,
    /// Stop after this many record bytes; the response says if more remain.
    pub bytes_max: u32,
}

/// Records a segment holds, answering `ReadRecords` or `GossipFetch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Records {
    pub pg: PgRef,
    pub node: NodeId,
    pub scl: Lsn,
    /// True if the request's byte limit cut the answer short.
    pub more: bool,
    /// Strictly increasing LSNs; holes allowed.
    pub records: Vec<Record>,
}

/// Asks for the headers of a segment's records in an LSN range, without their payloads: a
/// recovering writer decides from links, flags and epochs, and from which segments hold each
/// record, and then fetches only the payloads it must re-replicate (`ReadRecords`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRecordHeaders {
    pub pg: PgRef,
    pub epochs: Epochs,
    pub range: LsnRange,
    /// Stop after reading this many record bytes (payloads included, as the node reads them);
    /// the answer says if more remain. It holds at most `BATCH_RECORDS_MAX` headers.
    pub bytes_max: u32,
}

impl ReadRecordHeaders {
    /// The records read a node carries out to answer it.
    pub fn as_read(&self) -> ReadRecords {
        ReadRecords { pg: self.pg, epochs: self.epochs, range: self.range, bytes_max: self.bytes_max }
    }
}

/// One record's header as a segment holds it, without the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub meta: RecordMeta,
    pub payload_bytes: u32,
}

impl RecordHeader {
    pub fn of(record: &Record) -> RecordHeader {
        RecordHeader { meta: *record.meta(), payload_bytes: record.payload().len() as u32 }
    }

    /// The record's bytes on the wire (header and payload).
    pub fn record_bytes(&self) -> usize {
        RECORD_HEADER_BYTES + self.payload_bytes as usize
    }
}

impl Wire for RecordHeader {
    const BYTES: usize = 8 + 6 * 8;
    fn put(&self, out: &mut impl BufMut) {
        let m = &self.meta;
        out.put_u8(m.kind as u8);
        out.put_u8(0);
        out.put_u16_le(m.flags.bits());
        out.put_u32_le(self.payload_bytes);
        (m.lsn, m.prev_volume_lsn, m.prev_pg_lsn, m.prev_page_lsn, m.page_id, m.epoch).put(out);
    }
    fn read(reader: &mut Reader) -> FormatResult<Self> {
        let kind = RecordKind::from_u8(reader.u8("record kind")?)?;
        expect_zero(u64::from(reader.u8("record header reserved")?), "record header reserved")?;
        let flags = RecordFlags::from_bits(reader.u16("record flags")?)?;
        let payload_bytes = reader.u32("record payload bytes")?;
        let (lsn, prev_volume_lsn, prev_pg_lsn, prev_page_lsn, page_id, epoch) = Wire::read(reader)?;
        let meta =
            RecordMeta { kind, flags, lsn, prev_volume_lsn, prev_pg_lsn, prev_page_lsn, page_id, epoch };
        Ok(RecordHeader { meta, payload_bytes })
    }
}

/// The headers a segment holds in the range asked (echoed, so several reads of one PG may be
/// in flight), answering `ReadRecordHeaders`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordHeaders {
    pub pg: PgRef,
    pub node: NodeId,
    pub scl: Lsn,
    pub range: LsnRange,
    /// True if the read's limits cut the answer short: ask again after the last header.
    pub more: bool,
    /// Strictly increasing LSNs inside `range`; holes allowed.
    pub headers: Vec<RecordHeader>,
}

impl RecordHeaders {
    /// A node's answer to `read`, from its answer to `read.as_read()`: `Records` become their
    /// headers; anything else (a refusal) is passed on.
    pub fn answer(read: &ReadRecordHeaders, answer: Message) -> Message {
        match answer {
            Message::Records(r) => Message::RecordHeaders(RecordHeaders {
                pg: r.pg,
                node: r.node,
                scl: r.scl,
                range: read.range,
                more: r.more,
                headers: r.records.iter().map(RecordHeader::of).collect(),
            }),
            other => other,
        }
    }
}

/// Asks for a page as of `read_lsn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadPage {
    pub pg: PgRef,
    pub epochs: Epochs,
    pub page_id: PageId,
    pub read_lsn: Lsn,
    /// The PG's newest LSN at or below `read_lsn`: the segment must be complete through it.
    pub pg_newest_lsn: Lsn,
    /// The volume's page size (a page no record touched reads as this many zeros).
    pub page_bytes: u32,
}

/// Asks for a page as of `read_lsn` from a reader that is not the writer, so does not know
/// the PG's newest LSN at or below it: the segment works that out itself, and answers
/// `NotYet` while it cannot prove it. `read_lsn` must be a VDL some writer declared (a reader
/// picks one a `FloorAck` reported), so that it never falls inside an atomic group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadPageAsOf {
    pub pg: PgRef,
    pub page_id: PageId,
    pub read_lsn: Lsn,
    /// The volume's page size (a page no record touched reads as this many zeros).
    pub page_bytes: u32,
}

/// An operator asks a node to have `node` replaced by the volumes' writers (`docs/membership.md`):
/// the node passes it on in its floor acks for a minute. Only a cluster administrator's
/// certificate may ask (`storaged::core::access`); the node answers with the request itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplaceNodeAsk {
    pub node: NodeId,
}

/// A volume's admin grants or revokes a role (`AclChange::ROLE_*`) on it for `identity`: the
/// node checks the caller holds `admin` on the volume (`storaged::core::access`), changes the
/// ACL in etcd as the node, and answers with the request itself. So a volume's admin needs no
/// etcd credentials of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclChange {
    pub volume: VolumeId,
    /// `ROLE_READ`, `ROLE_WRITE` or `ROLE_ADMIN`.
    pub role: u8,
    /// True to grant, false to revoke.
    pub grant: bool,
    /// At most `IDENTITY_BYTES_MAX` bytes of UTF-8, e.g. `borealis://client/bob`.
    pub identity: String,
}

impl AclChange {
    pub const ROLE_READ: u8 = 1;
    pub const ROLE_WRITE: u8 = 2;
    pub const ROLE_ADMIN: u8 = 3;
}

/// A volume's admin deletes it for good (`borealis volume delete`): the node checks the caller
/// holds `admin` on the volume, writes its tombstone in etcd, and answers with the request
/// itself; every node then drops the volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteVolume {
    pub volume: VolumeId,
}

/// The longest identity an `AclChange` names.
pub const IDENTITY_BYTES_MAX: usize = 256;

/// A page version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub pg: PgRef,
    pub page_id: PageId,
    pub read_lsn: Lsn,
    /// LSN of the newest record applied to this version (zero if none: the page is zeros).
    pub version_lsn: Lsn,
    /// The page bytes; a power of two between `PAGE_BYTES_MIN` and `PAGE_BYTES_MAX`.
    pub bytes: Bytes,
}

/// A client's oldest read point for one PG (the writer and every reader send one per PG,
/// renewed before `lease_ms` runs out). A node keeps every page version a read at or above the
/// minimum live report may need; its floor never goes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloorReport {
    pub pg: PgRef,
    /// The reporting client, chosen at random when it starts; a new report replaces its last.
    pub client: u64,
    pub floor: Lsn,
    /// How long the report holds if not renewed.
    pub lease_ms: u32,
}

/// The segment's floor after a report: reads below it are refused as too old.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloorAck {
    pub pg: PgRef,
    pub node: NodeId,
    pub floor: Lsn,
    pub scl: Lsn,
    /// The highest VDL a writer told the segment (zero if none since the node started): a
    /// reader without the writer picks its read point among these (`ReadPageAsOf`).
    pub vdl: Lsn,
    /// A node an operator asked this node to have replaced
    /// (`ReplaceNodeAsk`); the writer that reads it replaces that node.
    pub replace: Option<NodeId>,
}

/// A segment's state and holes, exchanged between the PG's segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipSummary {
    pub pg: PgRef,
    pub node: NodeId,
    pub epochs: Epochs,
    pub scl: Lsn,
    pub highest_lsn: Lsn,
    /// The newest LSN of a record the segment folded into images and no longer holds: a peer
    /// below it cannot catch up from this segment by records, only by hydration.
    pub folded_through: Lsn,
    /// The segment's floor: no read below it is served there. A peer repairing an image
    /// reads at or above it (its own floor may lag: floor reports reach live members only).
    pub floor: Lsn,
    /// True if the segment is open at its volume epoch (a writer's truncation opened it): only
    /// then does it answer hydration asks, so only then does a peer start one from it.
    pub open: bool,
    /// Ranges above `scl` the segment is missing records in.
    pub holes: Vec<LsnRange>,
}

/// Asks a peer segment for its page versions as of one read point, to rebuild a segment that
/// is new or lost records the peer has folded (hydration). The first ask has `read_lsn` zero:
/// the peer chooses (its floor) and holds it while the hydration goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HydrateFetch {
    pub pg: PgRef,
    pub epochs: Epochs,
    pub read_lsn: Lsn,
    /// The first page wanted (pages are sent in id order).
    pub from_page: PageId,
    pub bytes_max: u32,
}

/// One page version in a hydration answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HydratedPage {
    pub page_id: PageId,
    /// LSN of the newest record applied (zero: the page is zeros).
    pub version_lsn: Lsn,
    pub bytes: Bytes,
}

/// A peer's page versions as of `read_lsn`, in page order: every page of the PG with a version
/// at or below it, from the asked page on; `more` says whether pages from `next_page` remain.
/// It carries what the new segment must store before it may claim anything: the epochs and
/// truncation ranges, and the PG's newest LSN at or below `read_lsn` (the SCL it may claim once
/// every page is stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HydratePages {
    pub pg: PgRef,
    pub node: NodeId,
    pub epochs: Epochs,
    pub read_lsn: Lsn,
    pub pg_newest_lsn: Lsn,
    pub page_bytes: u32,
    pub more: bool,
    pub next_page: PageId,
    pub truncations: Vec<(Epoch, LsnRange)>,
    pub pages: Vec<HydratedPage>,
}

/// Asks a peer segment for its records in these ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipFetch {
    pub pg: PgRef,
    pub epochs: Epochs,
    pub ranges: Vec<LsnRange>,
    pub bytes_max: u32,
}

/// A new writer raising the segment's volume epoch (fences the old writer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochBump {
    pub pg: PgRef,
    pub epochs: Epochs,
}

/// The writer moving a PG to new quorum sets (a step of a membership change, `docs/membership.md`):
/// every node of `membership` stores it durably (creating an empty segment if it has none, to
/// be hydrated) and answers with an `EpochAck`. A node that holds a newer membership refuses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipChange {
    pub pg: PgRef,
    pub epochs: Epochs,
    pub membership: Membership,
}

/// A node's answer to `MembershipChange`: it durably holds the membership of `epoch` (or a
/// newer one) for `pg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipAck {
    pub pg: PgRef,
    pub node: NodeId,
    pub epochs: Epochs,
    /// The epoch of the membership the segment stores.
    pub membership_epoch: Epoch,
    pub scl: Lsn,
}

/// The segment's state after an epoch bump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochAck {
    pub pg: PgRef,
    pub node: NodeId,
    pub epochs: Epochs,
    pub scl: Lsn,
    pub highest_lsn: Lsn,
    /// The highest VDL a writer told this segment (piggybacked on batches): every record at or
    /// below it is durable. A lower bound; zero if unknown (e.g. after the node restarted).
    pub vdl_hint: Lsn,
    /// The newest truncation ranges the segment holds, with the epoch that declared each (at
    /// most `TRUNCATIONS_REPORTED_MAX`): a recovering writer discards records inside them even
    /// where a segment missed one.
    pub truncations: Vec<(Epoch, LsnRange)>,
}

/// Records inside `range` are to be discarded, now and when they arrive late.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncate {
    pub pg: PgRef,
    pub epochs: Epochs,
    pub range: LsnRange,
}

/// The truncation range is durable on the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TruncateAck {
    pub pg: PgRef,
    pub node: NodeId,
    pub epochs: Epochs,
    pub range: LsnRange,
}

/// What a segment is doing, as its node reports it in a status response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentState {
    /// A full replica: it takes writes and serves reads up to its SCL.
    Serving,
    /// Being rebuilt from a peer (a new member, or one that lost records its peers folded).
    Hydrating,
    /// Scrub found entries that fail verification; they are being fetched from a peer again.
    ScrubRepairing,
    /// Left out of its PG's stored membership (the node it replaced came back, or it was
    /// replaced): no longer written, read or gossiped; kept until deleted.
    Retired,
    /// A state this build does not know (a newer node); kept so it re-encodes unchanged.
    Unknown(u16),
}

const SEGMENT_STATES: [SegmentState; 4] =
    [SegmentState::Serving, SegmentState::Hydrating, SegmentState::ScrubRepairing, SegmentState::Retired];

impl SegmentState {
    pub fn to_u16(self) -> u16 {
        match self {
            SegmentState::Unknown(code) => code,
            known => SEGMENT_STATES.iter().position(|s| *s == known).map_or(0, |i| i as u16 + 1),
        }
    }
    pub fn from_u16(code: u16) -> SegmentState {
        let known = usize::from(code).checked_sub(1).and_then(|i| SEGMENT_STATES.get(i));
        known.copied().unwrap_or(SegmentState::Unknown(code))
    }
}

/// One segment's durable points and state, in a status response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentStatus {
    pub pg: PgRef,
    pub epochs: Epochs,
    pub scl: Lsn,
    pub highest_lsn: Lsn,
    /// The GC floor: reads below it are refused.
    pub floor: Lsn,
    pub state: SegmentState,
    /// The PG's quorum sets as this segment stores them (`None`: its placement, never changed).
    pub membership: Option<Membership>,
}

impl Wire for SegmentStatus {
    const BYTES: usize = PgRef::BYTES + Epochs::BYTES + 3 * Lsn::BYTES + 4 + <Option<Membership>>::BYTES;
    fn put(&self, out: &mut impl BufMut) {
        self.pg.put(out);
        self.epochs.put(out);
        self.scl.put(out);
        self.highest_lsn.put(out);
        self.floor.put(out);
        out.put_u16_le(self.state.to_u16());
        out.put_u16_le(0);
        self.membership.put(out);
    }
    fn read(reader: &mut Reader) -> FormatResult<Self> {
        let (pg, epochs, scl, highest_lsn, floor) = Wire::read(reader)?;
        let state = SegmentState::from_u16(reader.u16("segment state")?);
        expect_zero(u64::from(reader.u16("segment reserved")?), "segment reserved")?;
        let membership = Wire::read(reader)?;
        Ok(SegmentStatus { pg, epochs, scl, highest_lsn, floor, state, membership })
    }
}

/// A node's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub node: NodeId,
    pub az: AzId,
    pub segments: Vec<SegmentStatus>,
}

/// Why a request failed. Codes this build does not know decode as `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    /// The request's epoch is older than the node's: the sender is fenced or out of date.
    StaleEpoch,
    ChecksumMismatch,
    /// The node has no space for new records; reads still work.
    DiskFull,
    /// The node latched an I/O error and refuses writes.
    NodeFailed,
    /// The read point is above what the segment holds (after a bounded wait).
    NotYet,
    /// The read point is below the GC floor.
    TooOld,
    Unauthorized,
    Overloaded,
    Internal,
    /// The request's volume epoch is newer than the segment's, or the segment has not yet stored
    /// the truncation range that opens that epoch for writing: send `EpochBump` and `Truncate`.
    EpochNotOpen,
    /// The volume was deleted for good (`borealis volume delete`): nothing naming it is served.
    VolumeDeleted,
    Unknown(u16),
}

const ERROR_CODES: [ErrorCode; 12] = [
    ErrorCode::BadRequest,
    ErrorCode::StaleEpoch,
    ErrorCode::ChecksumMismatch,
    ErrorCode::DiskFull,
    ErrorCode::NodeFailed,
    ErrorCode::NotYet,
    ErrorCode::TooOld,
    ErrorCode::Unauthorized,
    ErrorCode::Overloaded,
    ErrorCode::Internal,
    ErrorCode::EpochNotOpen,
    ErrorCode::VolumeDeleted,
];

/// Counters kept per error code (`ErrorCode::counter_index`): one per named code, one for the rest.
pub const ERROR_COUNTERS: usize = ERROR_CODES.len() + 1;

impl ErrorCode {
    /// Every code this build names, in wire order (code 1 first).
    pub const KNOWN: [ErrorCode; ERROR_CODES.len()] = ERROR_CODES;

    /// A short snake_case name, for metric labels and logs (`unknown` for a code this build
    /// does not name).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::StaleEpoch => "stale_epoch",
            ErrorCode::ChecksumMismatch => "checksum_mismatch",
            ErrorCode::DiskFull => "disk_full",
            ErrorCode::NodeFailed => "node_failed",
            ErrorCode::NotYet => "not_yet",
            ErrorCode::TooOld => "too_old",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Internal => "internal",
            ErrorCode::EpochNotOpen => "epoch_not_open",
            ErrorCode::VolumeDeleted => "volume_deleted",
            ErrorCode::Unknown(_) => "unknown",
        }
    }

    /// Where this code counts in an array of `ERROR_COUNTERS`: its place in `KNOWN`, or the
    /// last slot for an unknown code.
    pub fn counter_index(self) -> usize {
        match self {
            ErrorCode::Unknown(_) => ERROR_CODES.len(),
            known => usize::from(known.to_u16()) - 1,
        }
    }

    /// The name of the code counted at `index` (`counter_index`'s inverse).
    pub fn counter_name(index: usize) -> &'static str {
        ERROR_CODES.get(index).map_or("unknown", |code| code.name())
    }

    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Unknown(code) => code,
            known => ERROR_CODES.iter().position(|c| *c == known).map_or(0, |i| i as u16 + 1),
        }
    }
    pub fn from_u16(code: u16) -> ErrorCode {
        let known = usize::from(code).checked_sub(1).and_then(|i| ERROR_CODES.get(i));
        known.copied().unwrap_or(ErrorCode::Unknown(code))
    }
}

/// A typed refusal, with the node's epochs for the PG where they matter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub pg: PgRef,
    pub epochs: Epochs,
    /// Human-readable detail, at most `ERROR_MESSAGE_BYTES_MAX` bytes.
    pub message: String,
}

/// Every message, one per frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    AppendBatch(AppendBatch),
    AppendAck(AppendAck),
    ReadRecords(ReadRecords),
    Records(Records),
    ReadPage(ReadPage),
    Page(Page),
    GossipSummary(GossipSummary),
    GossipFetch(GossipFetch),
    EpochBump(EpochBump),
    EpochAck(EpochAck),
    Truncate(Truncate),
    TruncateAck(TruncateAck),
    StatusRequest,
    Status(Status),
    Error(ErrorReply),
    FloorReport(FloorReport),
    FloorAck(FloorAck),
    HydrateFetch(HydrateFetch),
    HydratePages(HydratePages),
    MembershipChange(MembershipChange),
    MembershipAck(MembershipAck),
    ReadRecordHeaders(ReadRecordHeaders),
    RecordHeaders(RecordHeaders),
    ReadPageAsOf(ReadPageAsOf),
    ReplaceNodeAsk(ReplaceNodeAsk),
    AclChange(AclChange),
    DeleteVolume(DeleteVolume),
}

impl Message {
    /// The frame type byte of this message.
    pub fn type_code(&self) -> u8 {
        match self {
            Message::AppendBatch(_) => 1,
            Message::AppendAck(_) => 2,
            Message::ReadRecords(_) => 3,
            Message::Records(_) => 4,
            Message::ReadPage(_) => 5,
            Message::Page(_) => 6,
            Message::GossipSummary(_) => 7,
            Message::GossipFetch(_) => 8,
            Message::EpochBump(_) => 9,
            Message::EpochAck(_) => 10,
            Message::Truncate(_) => 11,
            Message::TruncateAck(_) => 12,
            Message::StatusRequest => 13,
            Message::Status(_) => 14,
            Message::Error(_) => 15,
            Message::FloorReport(_) => 16,
            Message::FloorAck(_) => 17,
            Message::HydrateFetch(_) => 18,
            Message::HydratePages(_) => 19,
            Message::MembershipChange(_) => 20,
            Message::MembershipAck(_) => 21,
            Message::ReadRecordHeaders(_) => 22,
            Message::RecordHeaders(_) => 23,
            Message::ReadPageAsOf(_) => 24,
            Message::ReplaceNodeAsk(_) => 25,
            Message::AclChange(_) => 26,
            Message::DeleteVolume(_) => 27,
        }
    }

    /// The format rules beyond the bytes: list bounds and LSN order.
    pub fn check(&self) -> FormatResult<()> {
        match self {
            Message::AppendBatch(b) => check_batch(b),
            Message::Records(r) => check_records(&r.records, false),
            Message::ReadPage(r) if r.pg_newest_lsn > r.read_lsn => {
                Err(FormatError::Invalid { what: "read page newest lsn" })
            }
            Message::ReadPage(r) => check_page_bytes(r.page_bytes),
            Message::ReadPageAsOf(r) => check_page_bytes(r.page_bytes),
            Message::Page(p) => check_page(p),
            Message::GossipSummary(g) => check_summary(g),
            Message::GossipFetch(f) => {
                expect_at_most(f.ranges.len(), GOSSIP_RANGES_MAX, "gossip fetch ranges")
            }
            Message::Status(s) => expect_at_most(s.segments.len(), STATUS_SEGMENTS_MAX, "status segments"),
            Message::Error(e) => expect_at_most(e.message.len(), ERROR_MESSAGE_BYTES_MAX, "error message"),
            Message::AclChange(c) => {
                expect_at_most(c.identity.len(), IDENTITY_BYTES_MAX, "acl change identity")?;
                match c.role {
                    AclChange::ROLE_READ | AclChange::ROLE_WRITE | AclChange::ROLE_ADMIN => Ok(()),
                    _ => Err(FormatError::Invalid { what: "acl change role" }),
                }
            }
            Message::EpochAck(e) => {
                expect_at_most(e.truncations.len(), TRUNCATIONS_REPORTED_MAX, "epoch ack truncations")
            }
            Message::HydratePages(h) => check_hydrate_pages(h),
            Message::RecordHeaders(h) => check_headers(h),
            _ => Ok(()),
        }
    }

    /// Writes the body (not the frame header). The message must have passed [`Message::check`].
    pub fn encode_body(&self, out: &mut impl BufMut) {
        match self {
            Message::AppendBatch(b) => {
                (b.pg, b.epochs, b.vdl, b.pg_vdl_lsn).put(out);
                out.put_u32_le(b.page_bytes);
                put_records(out, &b.records);
            }
            Message::AppendAck(a) => {
                (a.pg, a.node, a.epochs, a.first_lsn, a.last_lsn, a.scl).put(out);
                out.put_u32_le(a.credit_bytes);
            }
            Message::ReadRecords(r) => {
                (r.pg, r.epochs, r.range).put(out);
                out.put_u32_le(r.bytes_max);
            }
            Message::Records(r) => {
                (r.pg, r.node, r.scl).put(out);
                out.put_u32_le(u32::from(r.more));
                put_records(out, &r.records);
            }
            Message::ReadPage(r) => {
                (r.pg, r.epochs, r.page_id, r.read_lsn, r.pg_newest_lsn).put(out);
                out.put_u32_le(r.page_bytes);
            }
            Message::Page(p) => {
                (p.pg, p.page_id, p.read_lsn, p.version_lsn).put(out);
                out.put_u32_le(crc32c::crc32c(&p.bytes));
                put_count(out, p.bytes.len());
                out.put_slice(&p.bytes);
            }
            Message::GossipSummary(g) => {
                (g.pg, g.node, g.epochs, g.scl, g.highest_lsn, g.folded_through).put(out);
                g.floor.put(out);
                out.put_u32_le(u32::from(g.open));
                put_list(out, &g.holes);
            }
            Message::GossipFetch(f) => {
                (f.pg, f.epochs).put(out);
                out.put_u32_le(f.bytes_max);
                put_list(out, &f.ranges);
            }
            Message::EpochBump(e) => (e.pg, e.epochs).put(out),
            Message::MembershipChange(c) => {
                (c.pg, c.epochs).put(out);
                Some(c.membership).put(out);
            }
            Message::MembershipAck(a) => (a.pg, a.node, a.epochs, a.membership_epoch, a.scl).put(out),
            Message::ReadRecordHeaders(r) => {
                (r.pg, r.epochs, r.range).put(out);
                out.put_u32_le(r.bytes_max);
            }
            Message::RecordHeaders(h) => {
                (h.pg, h.node, h.scl, h.range).put(out);
                out.put_u32_le(u32::from(h.more));
                put_list(out, &h.headers);
            }
            Message::ReadPageAsOf(r) => {
                (r.pg, r.page_id, r.read_lsn).put(out);
                out.put_u32_le(r.page_bytes);
            }
            Message::ReplaceNodeAsk(r) => r.node.put(out),
            Message::DeleteVolume(d) => d.volume.put(out),
            Message::AclChange(c) => {
                c.volume.put(out);
                out.put_u8(c.role);
                out.put_u8(u8::from(c.grant));
                put_count(out, c.identity.len());
                out.put_slice(c.identity.as_bytes());
            }
            Message::EpochAck(e) => {
                (e.pg, e.node, e.epochs, e.scl, e.highest_lsn, e.vdl_hint).put(out);
                put_list(out, &e.truncations);
            }
            Message::Truncate(t) => (t.pg, t.epochs, t.range).put(out),
            Message::TruncateAck(t) => (t.pg, t.node, t.epochs, t.range).put(out),
            Message::StatusRequest => {}
            Message::Status(s) => {
                (s.node, s.az).put(out);
                out.put_u16_le(STATUS_LAYOUT);
                put_list(out, &s.segments);
            }
            Message::Error(e) => {
                out.put_u16_le(e.code.to_u16());
                out.put_u16_le(0);
                (e.pg, e.epochs).put(out);
                put_count(out, e.message.len());
                out.put_slice(e.message.as_bytes());
            }
            Message::FloorReport(f) => {
                (f.pg, f.floor).put(out);
                out.put_u64_le(f.client);
                out.put_u32_le(f.lease_ms);
            }
            Message::FloorAck(f) => {
                (f.pg, f.node, f.floor, f.scl, f.vdl).put(out);
                out.put_u32_le(f.replace.map_or(0, |n| n.0));
            }
            Message::HydrateFetch(h) => {
                (h.pg, h.epochs, h.read_lsn, h.from_page).put(out);
                out.put_u32_le(h.bytes_max);
            }
            Message::HydratePages(h) => {
                (h.pg, h.node, h.epochs, h.read_lsn, h.pg_newest_lsn, h.next_page).put(out);
                out.put_u32_le(h.page_bytes);
                out.put_u32_le(u32::from(h.more));
                put_list(out, &h.truncations);
                put_count(out, h.pages.len());
                for page in &h.pages {
                    (page.page_id, page.version_lsn).put(out);
                    out.put_u32_le(crc32c::crc32c(&page.bytes));
                    put_count(out, page.bytes.len());
                    out.put_slice(&page.bytes);
                }
            }
        }
    }

    /// Decodes a body of the given type: every field, then [`Message::check`], then that no
    /// byte is left over. Payloads and page bytes are slices of `body`.
    pub fn decode_body(type_code: u8, body: Bytes) -> FormatResult<Message> {
        let r = &mut Reader::new(body);
        let message = match type_code {
            1 => {
                let (pg, epochs, vdl, pg_vdl_lsn) = Wire::read(r)?;
                let page_bytes = r.u32("page_bytes")?;
                let records = get_records(r)?;
                Message::AppendBatch(AppendBatch { pg, epochs, vdl, pg_vdl_lsn, page_bytes, records })
            }
            2 => {
                let (pg, node, epochs, first_lsn, last_lsn, scl) = Wire::read(r)?;
                let credit_bytes = r.u32("credit_bytes")?;
                Message::AppendAck(AppendAck { pg, node, epochs, first_lsn, last_lsn, scl, credit_bytes })
            }
            3 => {
                let (pg, epochs, range) = Wire::read(r)?;
                Message::ReadRecords(ReadRecords { pg, epochs, range, bytes_max: r.u32("bytes_max")? })
            }
            4 => {
                let (pg, node, scl) = Wire::read(r)?;
                let more = get_bool(r, "records more")?;
                Message::Records(Records { pg, node, scl, more, records: get_records(r)? })
            }
            5 => {
                let (pg, epochs, page_id, read_lsn, pg_newest_lsn) = Wire::read(r)?;
                let page_bytes = r.u32("page_bytes")?;
                Message::ReadPage(ReadPage { pg, epochs, page_id, read_lsn, pg_newest_lsn, page_bytes })
            }
            6 => Message::Page(get_page(r)?),
            7 => {
                let (pg, node, epochs, scl, highest_lsn, folded_through) = Wire::read(r)?;
                let floor = Wire::read(r)?;
                let open = get_bool(r, "gossip open")?;
                let holes = get_list(r, GOSSIP_RANGES_MAX, "gossip holes")?;
                Message::GossipSummary(GossipSummary {
                    pg,
                    node,
                    epochs,
                    scl,
                    highest_lsn,
                    folded_through,
                    floor,
                    open,
                    holes,
                })
            }
            8 => {
                let (pg, epochs) = Wire::read(r)?;
                let bytes_max = r.u32("bytes_max")?;
                let ranges = get_list(r, GOSSIP_RANGES_MAX, "gossip fetch ranges")?;
                Message::GossipFetch(GossipFetch { pg, epochs, ranges, bytes_max })
            }
            9 => {
                let (pg, epochs) = Wire::read(r)?;
                Message::EpochBump(EpochBump { pg, epochs })
            }
            10 => {
                let (pg, node, epochs, scl, highest_lsn, vdl_hint) = Wire::read(r)?;
                let truncations = get_list(r, TRUNCATIONS_REPORTED_MAX, "epoch ack truncations")?;
                Message::EpochAck(EpochAck { pg, node, epochs, scl, highest_lsn, vdl_hint, truncations })
            }
            11 => {
                let (pg, epochs, range) = Wire::read(r)?;
                Message::Truncate(Truncate { pg, epochs, range })
            }
            12 => {
                let (pg, node, epochs, range) = Wire::read(r)?;
                Message::TruncateAck(TruncateAck { pg, node, epochs, range })
            }
            13 => Message::StatusRequest,
            14 => {
                let (node, az) = Wire::read(r)?;
                let layout = r.u16("status layout")?;
                if layout != STATUS_LAYOUT {
                    let found = u8::try_from(layout).unwrap_or(u8::MAX);
                    return Err(FormatError::UnsupportedVersion { what: "status layout", found });
                }
                Message::Status(Status {
                    node,
                    az,
                    segments: get_list(r, STATUS_SEGMENTS_MAX, "status segments")?,
                })
            }
            15 => Message::Error(get_error(r)?),
            16 => {
                let (pg, floor) = Wire::read(r)?;
                let client = r.u64("floor client")?;
                let lease_ms = r.u32("floor lease")?;
                Message::FloorReport(FloorReport { pg, client, floor, lease_ms })
            }
            17 => {
                let (pg, node, floor, scl, vdl) = Wire::read(r)?;
                let replace = match r.u32("floor ack replace")? {
                    0 => None,
                    id => Some(NodeId(id)),
                };
                Message::FloorAck(FloorAck { pg, node, floor, scl, vdl, replace })
            }
            18 => {
                let (pg, epochs, read_lsn, from_page) = Wire::read(r)?;
                let bytes_max = r.u32("bytes_max")?;
                Message::HydrateFetch(HydrateFetch { pg, epochs, read_lsn, from_page, bytes_max })
            }
            19 => Message::HydratePages(get_hydrate_pages(r)?),
            20 => {
                let (pg, epochs) = Wire::read(r)?;
                let membership: Option<Membership> = Wire::read(r)?;
                let membership =
                    membership.ok_or(FormatError::Invalid { what: "membership change without sets" })?;
                Message::MembershipChange(MembershipChange { pg, epochs, membership })
            }
            21 => {
                let (pg, node, epochs, membership_epoch, scl) = Wire::read(r)?;
                Message::MembershipAck(MembershipAck { pg, node, epochs, membership_epoch, scl })
            }
            22 => {
                let (pg, epochs, range) = Wire::read(r)?;
                let bytes_max = r.u32("bytes_max")?;
                Message::ReadRecordHeaders(ReadRecordHeaders { pg, epochs, range, bytes_max })
            }
            23 => {
                let (pg, node, scl, range) = Wire::read(r)?;
                let more = get_bool(r, "record headers more")?;
                let headers = get_list(r, BATCH_RECORDS_MAX, "record headers")?;
                Message::RecordHeaders(RecordHeaders { pg, node, scl, range, more, headers })
            }
            24 => {
                let (pg, page_id, read_lsn) = Wire::read(r)?;
                let page_bytes = r.u32("page_bytes")?;
                Message::ReadPageAsOf(ReadPageAsOf { pg, page_id, read_lsn, page_bytes })
            }
            25 => Message::ReplaceNodeAsk(ReplaceNodeAsk { node: Wire::read(r)? }),
            26 => {
                let volume = Wire::read(r)?;
                let role = r.u8("acl change role")?;
                let grant = match r.u8("acl change grant")? {
                    0 => false,
                    1 => true,
                    _ => return Err(FormatError::Invalid { what: "acl change grant" }),
                };
                let len = r.count(IDENTITY_BYTES_MAX, 1, "acl change identity")?;
                let text = r.bytes(len, "acl change identity")?;
                let identity = String::from_utf8(text.to_vec())
                    .map_err(|_| FormatError::Invalid { what: "acl change identity utf-8" })?;
                Message::AclChange(AclChange { volume, role, grant, identity })
            }
            27 => Message::DeleteVolume(DeleteVolume { volume: Wire::read(r)? }),
            other => return Err(FormatError::UnknownMessageType(other)),
        };
        message.check()?;
        r.finish("message body")?;
        Ok(message)
    }
}

fn check_batch(batch: &AppendBatch) -> FormatResult<()> {
    if batch.pg_vdl_lsn > batch.vdl {
        return Err(FormatError::Invalid { what: "batch pg_vdl_lsn above vdl" });
    }
    check_page_bytes(batch.page_bytes)?;
    check_records(&batch.records, true)?;
    // A recovering writer re-replicates records of earlier epochs; no record may be newer.
    if batch.records.iter().any(|r| r.meta().epoch > batch.epochs.volume) {
        return Err(FormatError::Invalid { what: "batch record epoch above the batch's" });
    }
    Ok(())
}

/// Header lists: increasing LSNs inside the range asked, each with ordered backlinks and a
/// payload length a record may have.
fn check_headers(h: &RecordHeaders) -> FormatResult<()> {
    expect_at_most(h.headers.len(), BATCH_RECORDS_MAX, "record headers")?;
    if h.headers.windows(2).any(|w| w[1].meta.lsn <= w[0].meta.lsn) {
        return Err(FormatError::Invalid { what: "record header lsns not increasing" });
    }
    for header in &h.headers {
        let m = &header.meta;
        if !h.range.contains(m.lsn) {
            return Err(FormatError::Invalid { what: "record header outside the range asked" });
        }
        if !(m.lsn > m.prev_volume_lsn
            && m.prev_volume_lsn >= m.prev_pg_lsn
            && m.prev_pg_lsn >= m.prev_page_lsn)
        {
            return Err(FormatError::Invalid { what: "record header backlinks" });
        }
        expect_at_most(header.payload_bytes as usize, RECORD_PAYLOAD_BYTES_MAX, "record header payload")?;
    }
    Ok(())
}

/// Record lists: bounded, strictly increasing LSNs, and (for batches) chained by `prev_pg_lsn`.
fn check_records(records: &[Record], chained: bool) -> FormatResult<()> {
    expect_at_most(records.len(), BATCH_RECORDS_MAX, "record count")?;
    for pair in records.windows(2) {
        if pair[1].lsn() <= pair[0].lsn() {
            return Err(FormatError::Invalid { what: "record lsns not increasing" });
        }
        if chained && pair[1].meta().prev_pg_lsn != pair[0].lsn() {
            return Err(FormatError::Invalid { what: "batch prev_pg_lsn chain broken" });
        }
    }
    Ok(())
}

fn check_page(page: &Page) -> FormatResult<()> {
    check_page_bytes(u32::try_from(page.bytes.len()).unwrap_or(u32::MAX))?;
    if page.version_lsn > page.read_lsn {
        return Err(FormatError::Invalid { what: "page version above its read lsn" });
    }
    Ok(())
}

fn check_summary(summary: &GossipSummary) -> FormatResult<()> {
    expect_at_most(summary.holes.len(), GOSSIP_RANGES_MAX, "gossip holes")?;
    if summary.scl > summary.highest_lsn {
        return Err(FormatError::Invalid { what: "gossip scl above highest lsn" });
    }
    if summary.folded_through > summary.scl {
        return Err(FormatError::Invalid { what: "gossip folded_through above scl" });
    }
    Ok(())
}

fn check_hydrate_pages(h: &HydratePages) -> FormatResult<()> {
    check_page_bytes(h.page_bytes)?;
    expect_at_most(h.pages.len(), HYDRATE_PAGES_MAX, "hydrate pages")?;
    expect_at_most(h.truncations.len(), TRUNCATIONS_REPORTED_MAX, "hydrate truncations")?;
    if h.pg_newest_lsn > h.read_lsn {
        return Err(FormatError::Invalid { what: "hydrate newest lsn above its read lsn" });
    }
    if h.pages.windows(2).any(|w| w[1].page_id <= w[0].page_id) {
        return Err(FormatError::Invalid { what: "hydrate pages not in page order" });
    }
    let fits = |p: &HydratedPage| p.bytes.len() == h.page_bytes as usize && p.version_lsn <= h.pg_newest_lsn;
    if !h.pages.iter().all(fits) {
        return Err(FormatError::Invalid { what: "hydrate page of another size or version" });
    }
    Ok(())
}

fn get_hydrate_pages(r: &mut Reader) -> FormatResult<HydratePages> {
    let (pg, node, epochs, read_lsn, pg_newest_lsn, next_page) = Wire::read(r)?;
    let page_bytes = r.u32("page_bytes")?;
    let more = get_bool(r, "hydrate more")?;
    let truncations = get_list(r, TRUNCATIONS_REPORTED_MAX, "hydrate truncations")?;
    let count = r.count(HYDRATE_PAGES_MAX, 24, "hydrate pages")?;
    let mut pages = Vec::with_capacity(count);
    for _ in 0..count {
        let (page_id, version_lsn) = Wire::read(r)?;
        let crc = r.u32("page crc")?;
        let len = r.count(PAGE_BYTES_MAX, 1, "page bytes")?;
        let bytes = r.bytes(len, "page bytes")?;
        expect_crc(crc, crc32c::crc32c(&bytes), "hydrated page")?;
        pages.push(HydratedPage { page_id, version_lsn, bytes });
    }
    Ok(HydratePages {
        pg,
        node,
        epochs,
        read_lsn,
        pg_newest_lsn,
        page_bytes,
        more,
        next_page,
        truncations,
        pages,
    })
}

fn put_records(out: &mut impl BufMut, records: &[Record]) {
    put_count(out, records.len());
    records.iter().for_each(|record| record.encode(out));
}

fn get_records(r: &mut Reader) -> FormatResult<Vec<Record>> {
    let count = r.count(BATCH_RECORDS_MAX, RECORD_HEADER_BYTES, "record count")?;
    (0..count).map(|_| Record::decode(r)).collect()
}

fn get_bool(r: &mut Reader, what: &'static str) -> FormatResult<bool> {
    match r.u32(what)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(FormatError::ReservedNonZero { what }),
    }
}

fn get_page(r: &mut Reader) -> FormatResult<Page> {
    let (pg, page_id, read_lsn, version_lsn) = Wire::read(r)?;
    let crc = r.u32("page crc")?;
    let len = r.count(PAGE_BYTES_MAX, 1, "page bytes")?;
    let bytes = r.bytes(len, "page bytes")?;
    expect_crc(crc, crc32c::crc32c(&bytes), "page")?;
    Ok(Page { pg, page_id, read_lsn, version_lsn, bytes })
}

fn get_error(r: &mut Reader) -> FormatResult<ErrorReply> {
    let code = ErrorCode::from_u16(r.u16("error code")?);
    expect_zero(u64::from(r.u16("error reserved")?), "error reserved")?;
    let (pg, epochs) = Wire::read(r)?;
    let len = r.count(ERROR_MESSAGE_BYTES_MAX, 1, "error message")?;
    let text = r.bytes(len, "error message")?;
    let message =
        String::from_utf8(text.to_vec()).map_err(|_| FormatError::Invalid { what: "error message utf-8" })?;
    Ok(ErrorReply { code, pg, epochs, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{PgId, VolumeId};

    fn status(state: SegmentState) -> Message {
        let segment = SegmentStatus {
            pg: PgRef { volume_id: VolumeId(9), pg_id: PgId(2) },
            epochs: Epochs::INITIAL,
            scl: Lsn(40),
            highest_lsn: Lsn(42),
            floor: Lsn(1),
            state,
            membership: None,
        };
        Message::Status(Status { node: NodeId(3), az: AzId(1), segments: vec![segment] })
    }

    fn body(message: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        message.encode_body(&mut out);
        out
    }

    #[test]
    fn segment_states_round_trip_and_unknown_ones_are_kept() {
        for code in 0..=6u16 {
            assert_eq!(SegmentState::from_u16(code).to_u16(), code);
        }
        assert_eq!(SegmentState::from_u16(1), SegmentState::Serving);
        assert_eq!(SegmentState::from_u16(3), SegmentState::ScrubRepairing);
        assert_eq!(SegmentState::from_u16(4), SegmentState::Retired);
        assert_eq!(SegmentState::from_u16(5), SegmentState::Unknown(5));
        for state in [SegmentState::Serving, SegmentState::Hydrating, SegmentState::Unknown(77)] {
            let message = status(state);
            let decoded = Message::decode_body(14, Bytes::from(body(&message))).unwrap();
            assert_eq!(decoded, message);
        }
    }

    #[test]
    fn record_headers_round_trip_and_one_outside_the_range_asked_is_refused() {
        let pg = PgRef { volume_id: VolumeId(9), pg_id: PgId(2) };
        let range = LsnRange::new(Lsn(10), Lsn(20)).unwrap();
        let read = ReadRecordHeaders { pg, epochs: Epochs::INITIAL, range, bytes_max: 4096 };
        let message = Message::ReadRecordHeaders(read);
        assert_eq!(Message::decode_body(message.type_code(), Bytes::from(body(&message))).unwrap(), message);
        let meta = RecordMeta::after(Lsn(11), Lsn(12), RecordKind::Marker, PageId(3));
        let record = Record::new(meta, Bytes::new()).unwrap();
        let records = Message::Records(Records {
            pg,
            node: NodeId(4),
            scl: Lsn(12),
            more: true,
            records: vec![record],
        });
        let answer = RecordHeaders::answer(&read, records);
        let Message::RecordHeaders(headers) = &answer else { panic!("{answer:?}") };
        assert_eq!((headers.range, headers.more, headers.headers[0].meta), (range, true, meta));
        assert_eq!(Message::decode_body(23, Bytes::from(body(&answer))).unwrap(), answer);
        let mut outside = headers.clone();
        outside.range = LsnRange::new(Lsn(12), Lsn(20)).unwrap();
        assert!(Message::RecordHeaders(outside).check().is_err());
    }

    #[test]
    fn status_bodies_of_another_layout_are_refused() {
        let mut bytes = body(&status(SegmentState::Serving));
        // The layout is after the node id (4 bytes) and the AZ (2 bytes).
        assert_eq!(&bytes[6..8], &STATUS_LAYOUT.to_le_bytes());
        bytes[6..8].copy_from_slice(&0u16.to_le_bytes());
        let refused = Message::decode_body(14, Bytes::from(bytes)).unwrap_err();
        assert!(matches!(refused, FormatError::UnsupportedVersion { what: "status layout", found: 0 }));
        // An earlier build's entry (no state, or no membership) is refused too, whatever the
        // layout says.
        let mut short = body(&status(SegmentState::Serving));
        short.truncate(short.len() - 4);
        assert!(Message::decode_body(14, Bytes::from(short)).is_err());
    }

    #[test]
    fn a_segment_entry_with_reserved_bits_is_refused() {
        let mut bytes = body(&status(SegmentState::Serving));
        // The reserved u16 is just before the membership.
        let reserved = bytes.len() - <Option<Membership> as Wire>::BYTES - 1;
        bytes[reserved] = 1;
        let refused = Message::decode_body(14, Bytes::from(bytes)).unwrap_err();
        assert!(matches!(refused, FormatError::ReservedNonZero { what: "segment reserved" }));
    }
}
