//! The node-wide journal: preallocated files of 4 KiB-aligned groups, each group one write and
//! one flush (group commit), with records sealed at rest. `format` draws the bytes, `group`
//! builds and parses group images (pure), `commit` seals and writes a group, `writer` places
//! groups in files over any `Storage`, `replay` rebuilds state at restart, and `files` names
//! the files and positions they share.

pub(crate) mod buf;
pub mod commit;
pub mod files;
pub mod format;
pub mod group;
pub mod replay;
#[cfg(test)]
mod replay_tests;
pub mod writer;
