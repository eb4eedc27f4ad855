//! Restart: walk the journal in group order and hand every readable entry to the core.
//!
//! Decisions, as a table (each case has a test in `replay_tests`):
//!
//! | what is at the next position                          | decision                                      |
//! |--------------------------------------------------------|-----------------------------------------------|
//! | a valid group, the expected sequence number            | replay its entries; a bad entry is skipped    |
//! |                                                        | and its records count as missing              |
//! | a valid group whose body checksum fails, nothing valid | torn tail: cut here (never acknowledged)      |
//! | after it                                               |                                               |
//! | a valid group whose body checksum fails, a later group | mid-log damage: keep its good entries         |
//! | follows                                                |                                               |
//! | no valid group, a later valid group follows            | mid-log damage: the groups between are        |
//! |                                                        | missing; resume at the later group            |
//! | no valid group, nothing valid after it                 | end of the log (clean end or torn tail)       |
//!
//! Missing records are never invented or served: the segment's SCL stops before the first
//! hole, so the node does not claim them and a peer can supply them. A mid-log checksum error
//! never truncates the log.
//!
//! An entry of a volume dropped here (`Keyring::is_dropped`: its tombstone is stored, its keys
//! destroyed) is skipped before it is opened, whatever its kind, and counted apart
//! (`dropped_entries`): it cannot be opened any more, and that is no damage.

use protocol::PgRef;

use super::files::{list_files, log_path, JournalPosition};
use super::format::{EntryAt, EntryKind, GroupHeader, GROUP_ALIGN, GROUP_HEADER_BYTES};
use super::group::{find_entries, image_page, open_entry};
use crate::core::{EntryBody, Location};
use crate::keyring::Keyring;
use crate::storage::Storage;

/// What replay found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub groups: u64,
    pub entries: u64,
    /// Entries skipped because they failed their checksum, tag or decoding.
    pub corrupt_entries: u64,
    /// Whole groups missing between two readable ones.
    pub missing_groups: u64,
    /// True if a torn last group was cut.
    pub torn_tail_cut: bool,
    pub bytes_scanned: u64,
    /// Entries of volumes dropped here, skipped unopened (not damage).
    pub dropped_entries: u64,
}

/// Where writing resumes, and what replay saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayOutcome {
    pub next_group_seq: u64,
    /// The file and offset the next group goes to.
    pub tail_file: u64,
    pub tail_offset: u64,
    pub files: Vec<u64>,
    pub report: ReplayReport,
}

/// Replays the log with `prefix` from `start` (a checkpoint's position; `None`: from the
/// first file), calling `visit` for each readable entry in order.
pub async fn replay<S: Storage>(
    storage: &S,
    prefix: &'static str,
    keyring: &Keyring<S>,
    start: Option<JournalPosition>,
    mut visit: impl FnMut(PgRef, &EntryBody, Location),
) -> std::io::Result<ReplayOutcome> {
    let files = list_files(storage, prefix)?;
    let last_seq = start.map_or(0, |p| p.next_group_seq.saturating_sub(1));
    let mut walk = Walk { storage, prefix, files: files.clone(), report: ReplayReport::default(), last_seq };
    let mut step = match start {
        Some(p) if files.contains(&p.file) => Step::Next(p.file, p.offset),
        Some(p) => Step::End(p.file, p.offset),
        None => files.first().map_or(Step::End(1, 0), |first| Step::Next(*first, 0)),
    };
    loop {
        match step {
            Step::Next(file, offset) => {
                step = walk.walk_file(file, offset as usize, keyring, &mut visit).await?
            }
            Step::End(file, offset) => return Ok(walk.outcome(file, offset)),
        }
    }
}

struct Walk<'s, S> {
    storage: &'s S,
    prefix: &'static str,
    files: Vec<u64>,
    report: ReplayReport,
    last_seq: u64,
}

/// Where the walk goes next: on at (file, offset), or the log ends at (file, offset).
enum Step {
    Next(u64, u64),
    End(u64, u64),
}

impl<S: Storage> Walk<'_, S> {
    fn outcome(self, tail_file: u64, tail_offset: u64) -> ReplayOutcome {
        ReplayOutcome {
            next_group_seq: self.last_seq + 1,
            tail_file,
            tail_offset,
            files: self.files,
            report: self.report,
        }
    }

    /// Replays one file from `offset`; says where to go next.
    async fn walk_file(
        &mut self,
        file: u64,
        mut offset: usize,
        keyring: &Keyring<S>,
        visit: &mut impl FnMut(PgRef, &EntryBody, Location),
    ) -> std::io::Result<Step> {
        let bytes = &self.storage.read_all(&log_path(self.prefix, file)).await?[..];
        self.report.bytes_scanned += bytes.len().saturating_sub(offset) as u64;
        while offset + GROUP_HEADER_BYTES <= bytes.len() {
            let header = self.expected_group(file, &bytes[offset..]);
            let Some(header) = header else {
                return self.after_gap(file, offset).await;
            };
            let group = &bytes[offset..(offset + header.group_len()).min(bytes.len())];
            let (found, body_ok) = find_entries(group, &header, offset as u64);
            if !body_ok && self.later_group(file, offset + GROUP_ALIGN, header.group_seq).await?.is_none() {
                self.report.torn_tail_cut = true;
                return Ok(Step::End(file, offset as u64));
            }
            self.replay_group(file, offset, group, &found, keyring, visit);
            self.last_seq = header.group_seq;
            self.report.groups += 1;
            offset += header.group_len();
        }
        let next = self.files.iter().find(|f| **f > file).copied();
        Ok(next.map_or(Step::End(file + 1, 0), |f| Step::Next(f, 0)))
    }

    /// The group at the start of `bytes` if it is valid, belongs to `file` and continues the
    /// sequence (any sequence number is accepted for the very first group).
    fn expected_group(&self, file: u64, bytes: &[u8]) -> Option<GroupHeader> {
        let header = GroupHeader::decode(bytes.first_chunk()?).ok()?;
        let continues = self.last_seq == 0 || header.group_seq == self.last_seq + 1;
        (header.file == file && continues).then_some(header)
    }

    /// Nothing valid at `offset`: resume at a later group if one exists, else the log ends here.
    async fn after_gap(&mut self, file: u64, offset: usize) -> std::io::Result<Step> {
        match self.later_group(file, offset + GROUP_ALIGN, self.last_seq).await? {
            Some((f, o, seq)) => {
                self.report.missing_groups += seq - self.last_seq - 1;
                self.last_seq = seq - 1;
                Ok(Step::Next(f, o))
            }
            None => Ok(Step::End(file, offset as u64)),
        }
    }

    /// The first valid group after (`file`, `offset`) with a sequence number above `after_seq`.
    async fn later_group(
        &self,
        file: u64,
        offset: usize,
        after_seq: u64,
    ) -> std::io::Result<Option<(u64, u64, u64)>> {
        for f in self.files.iter().copied().filter(|f| *f >= file) {
            let bytes = self.storage.read_all(&log_path(self.prefix, f)).await?;
            let start = if f == file { offset } else { 0 };
            for at in (start..bytes.len().saturating_sub(GROUP_HEADER_BYTES - 1)).step_by(GROUP_ALIGN) {
                let header = bytes[at..].first_chunk().and_then(|h| GroupHeader::decode(h).ok());
                if let Some(h) = header.filter(|h| h.file == f && h.group_seq > after_seq) {
                    return Ok(Some((f, at as u64, h.group_seq)));
                }
            }
        }
        Ok(None)
    }

    fn replay_group(
        &mut self,
        file: u64,
        group_offset: usize,
        group: &[u8],
        found: &[super::group::FoundEntry],
        keyring: &Keyring<S>,
        visit: &mut impl FnMut(PgRef, &EntryBody, Location),
    ) {
        for entry in found {
            if entry.header.as_ref().is_ok_and(|h| keyring.is_dropped(h.pg.volume_id)) {
                self.report.dropped_entries += 1;
                continue;
            }
            let opened = entry.header.clone().and_then(|header| {
                if header.kind == EntryKind::Image {
                    // Images are opened when read; the group CRC vouched for the sealed bytes.
                    let body = EntryBody::Image {
                        page_id: image_page(&header),
                        version_lsn: header.first_lsn,
                        page: bytes::Bytes::new(),
                    };
                    return Ok((header, body));
                }
                let bytes = &group[entry.offset..entry.offset + header.entry_len as usize];
                let at = EntryAt { file, offset: (group_offset + entry.offset) as u64 };
                let opened = keyring.with_keys(|keys| {
                    open_entry(bytes, &header, at, keys.opening(header.pg.volume_id, header.key_version))
                });
                opened.map(|body| (header, body))
            });
            match opened {
                Ok((header, body)) => {
                    let location = Location {
                        file,
                        offset: (group_offset + entry.offset) as u64,
                        len: header.entry_len,
                    };
                    visit(header.pg, &body, location);
                    self.report.entries += 1;
                }
                Err(_) => self.report.corrupt_entries += 1,
            }
        }
    }
}
