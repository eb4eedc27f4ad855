//! The hydration driver (`core/node/hydrate.rs` decides): as a source it builds the page
//! versions a plan lists, as a page read at the plan's read point would; as a target it carries
//! the core's asks to the source over the gossip connection and hands the answers back.

use std::rc::Rc;
use std::time::Duration;

use protocol::{Message, NodeId};

use super::admin::PeerFetch;
use super::page_read::read_page;
use super::shared::Shared;
use crate::core::HydratePlan;
use crate::store::reads::answer_hydrate;

/// How long the target waits before asking the core again when the rate or the pages still
/// waiting to be stored hold the next ask back.
pub const HYDRATE_POLL: Duration = Duration::from_millis(5);

/// Source side: builds every page of `plan` and answers with them, or with the first error.
pub async fn answer(shared: Rc<Shared>, plan: HydratePlan) -> Message {
    let node = shared.with_core(|core| core.node());
    answer_hydrate(plan, node, |read| read_page(&shared, read)).await
}

/// Target side: asks `peer` for pages while the core hydrates a segment from it.
pub async fn run_from(
    shared: &Shared,
    connection: &quinn::Connection,
    peer: NodeId,
    timeout: Duration,
) -> Result<(), String> {
    while shared.with_core(|core| core.hydrating_from(peer)) {
        let now = shared.now_ms();
        let Some(fetch) = shared.with_core(|core| core.poll_hydrate(peer, now)) else {
            tokio::time::sleep(HYDRATE_POLL).await;
            continue;
        };
        let pg = fetch.pg;
        let ask = Message::HydrateFetch(fetch);
        match tokio::time::timeout(timeout, transport::framed::request(connection, &ask)).await {
            Ok(Ok(Message::HydratePages(pages))) => {
                let bytes = pages.pages.iter().map(|page| page.bytes.len()).sum();
                shared.metrics.fetched(PeerFetch::HydratePages, bytes);
                shared.with_core(|core| core.handle_hydrate_pages(pages, shared.now_ms()));
                shared.journal_wake.notify_one();
                shared.coalesce_wake.notify_one();
            }
            Ok(Ok(other)) => {
                tracing::info!(%peer, ?pg, ?other, "hydration source refused");
                shared.with_core(|core| core.handle_hydrate_failed(pg, peer));
                return Ok(());
            }
            Ok(Err(error)) => {
                shared.with_core(|core| core.handle_hydrate_unanswered(pg, peer, shared.now_ms()));
                return Err(error.to_string());
            }
            Err(_) => {
                shared.with_core(|core| core.handle_hydrate_unanswered(pg, peer, shared.now_ms()));
                return Err(format!("no hydration answer within {timeout:?}"));
            }
        }
    }
    Ok(())
}
