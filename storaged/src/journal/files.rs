//! The logs' files: their names, paths and the positions in them (shared by the writer,
//! replay and checkpoints).

use crate::storage::Storage;

/// File name prefix of the journal's files.
pub const JOURNAL_PREFIX: &str = "journal";
/// File name prefix of the page store's files (same group layout, image entries).
pub const PAGES_PREFIX: &str = "pages";

/// Name of file number `file` of the log with `prefix` (journal or page store).
pub fn log_file_name(prefix: &str, file: u64) -> String {
    format!("{prefix}-{file:016}.log")
}

/// File numbers of the log with `prefix` (in the subdirectory of that name), ascending.
pub fn list_files(storage: &impl Storage, prefix: &str) -> std::io::Result<Vec<u64>> {
    let mut files = Vec::new();
    for name in storage.list(prefix)? {
        let number =
            name.strip_prefix(prefix).and_then(|n| n.strip_prefix('-')).and_then(|n| n.strip_suffix(".log"));
        files.extend(number.and_then(|n| n.parse::<u64>().ok()));
    }
    files.sort_unstable();
    Ok(files)
}

/// Where the next group goes: what a checkpoint covers and where replay resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalPosition {
    pub file: u64,
    pub offset: u64,
    pub next_group_seq: u64,
}

/// The path of file `file` of the log with `prefix`.
pub fn log_path(prefix: &str, file: u64) -> String {
    format!("{prefix}/{}", log_file_name(prefix, file))
}
