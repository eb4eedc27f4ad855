//! Where an entry's bytes live in a log (the journal or the page store). A leaf: the segment
//! index and the page versions both point into the logs with it.

/// An entry of a log: the journal entry that holds a record, or the page store entry that
/// holds an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// Log file number.
    pub file: u64,
    /// Byte offset of the entry in that file.
    pub offset: u64,
    /// Length of the entry in bytes.
    pub len: u32,
}
