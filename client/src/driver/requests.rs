//! Operators' requests to a running writer, as files in a directory (`ClientConfig::
//! requests_dir`): `replace-node-ID` asks the writer to replace node ID in every PG it serves
//! (`WriterCore::replace_node`). The writer answers in `replace-node-ID.done` (the PGs whose
//! change started, one per line) and deletes the request. A request left when no writer runs
//! is carried out by the next writer that watches the directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::NodeId;
use tokio::sync::{mpsc, oneshot};

use super::task::Command;

/// How often the directory is looked at.
pub const REQUESTS_POLL: Duration = Duration::from_secs(1);
/// The prefix of a replacement request's file name.
pub const REPLACE_PREFIX: &str = "replace-node-";
/// The suffix of its answer.
pub const DONE_SUFFIX: &str = ".done";

/// The request file asking to replace `node` in `dir`.
pub fn replace_request(dir: &Path, node: NodeId) -> PathBuf {
    dir.join(format!("{REPLACE_PREFIX}{}", node.0))
}

/// The answer file to a replacement request.
pub fn replace_answer(dir: &Path, node: NodeId) -> PathBuf {
    dir.join(format!("{REPLACE_PREFIX}{}{DONE_SUFFIX}", node.0))
}

/// Polls `dir` until the writer closes. It holds the command channel weakly: a writer's
/// `close` ends its driver by dropping the last sender.
pub(super) async fn watch(dir: PathBuf, commands: mpsc::WeakSender<Command>) {
    let mut poll = tokio::time::interval(REQUESTS_POLL);
    loop {
        poll.tick().await;
        let Some(commands) = commands.upgrade() else { return };
        for node in pending(&dir) {
            let (reply, answer) = oneshot::channel();
            if commands.send(Command::ReplaceNode { node, reply }).await.is_err() {
                return;
            }
            let Ok(pgs) = answer.await else { return };
            tracing::info!(%node, pgs = pgs.len(), "operator's replacement request taken");
            let text: String = pgs.iter().map(|pg| format!("{}\n", pg.0)).collect();
            let written = std::fs::write(replace_answer(&dir, node), text)
                .and_then(|()| std::fs::remove_file(replace_request(&dir, node)));
            if let Err(error) = written {
                tracing::warn!(%node, %error, dir = %dir.display(), "could not answer a replacement request");
            }
        }
    }
}

/// The nodes named by request files in `dir` (none if it cannot be read).
fn pending(dir: &Path) -> Vec<NodeId> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix(REPLACE_PREFIX)).map(String::from))
        .filter_map(|rest| rest.parse::<u32>().ok())
        .map(NodeId)
        .collect()
}
