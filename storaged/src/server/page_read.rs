//! A page read as the network asks it (`store::reads::read_page` reads): waits a while for the
//! segment to become complete through the read's `pg_newest_lsn`. Clients' reads (`streams`)
//! and hydration answers (`hydrate`) both go through it, and so do readers' `ReadPageAsOf`
//! once the segment can tell the newest LSN they need.

use protocol::messages::{ErrorCode, ReadPage, ReadPageAsOf};
use protocol::Message;

use super::shared::{error_reply, Shared};
use crate::store::reads::{self, PageRead};

/// How long a page read waits for the segment to become complete before answering `NotYet`.
pub const READ_PAGE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Answers a `ReadPage` (`store::reads::read_page`), waiting at most `READ_PAGE_WAIT` for the
/// segment to become complete through the read's `pg_newest_lsn`.
pub(super) async fn read_page(shared: &Shared, read: ReadPage) -> Message {
    let deadline = tokio::time::Instant::now() + READ_PAGE_WAIT;
    let mut faults = 0;
    loop {
        let durable = shared.durable.notified();
        match reads::read_page(&shared.store, shared, &read, &mut faults).await {
            PageRead::Answer(message) => return message,
            PageRead::NotYet => {
                if tokio::time::timeout_at(deadline, durable).await.is_err() {
                    let message = format!(
                        "segment not yet complete through {} after {READ_PAGE_WAIT:?}",
                        read.pg_newest_lsn
                    );
                    return error_reply(ErrorCode::NotYet, &message);
                }
            }
        }
    }
}

/// Answers a reader's `ReadPageAsOf`: waits at most `READ_PAGE_WAIT` for the segment to learn
/// the PG's newest LSN at or below the read point (`NodeCore::resolve_read_as_of`), then reads
/// as for `ReadPage`.
pub(super) async fn read_page_as_of(shared: &Shared, read: ReadPageAsOf) -> Message {
    let deadline = tokio::time::Instant::now() + READ_PAGE_WAIT;
    loop {
        let durable = shared.durable.notified();
        match shared.with_core(|core| core.resolve_read_as_of(&read)) {
            Ok(Some(resolved)) => return read_page(shared, resolved).await,
            Ok(None) => {}
            Err(refusal) => return Message::Error(refusal),
        }
        if tokio::time::timeout_at(deadline, durable).await.is_err() {
            // A heartbeat tells a VDL without writing to the journal, so no wake-up says so:
            // look once more before giving up.
            if let Ok(Some(resolved)) = shared.with_core(|core| core.resolve_read_as_of(&read)) {
                return read_page(shared, resolved).await;
            }
            let message = format!(
                "segment cannot yet tell its newest record at or below {} after {READ_PAGE_WAIT:?}",
                read.read_lsn
            );
            return error_reply(ErrorCode::NotYet, &message);
        }
    }
}
