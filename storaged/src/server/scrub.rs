//! The scrub driver: reads and verifies the entries the core's scrubber hands out
//! (`core/node/scrub.rs`), at the pace the core sets, and reports each outcome. It decides
//! nothing: which entries, how fast, and what a failure means are the core's.

use std::rc::Rc;
use std::time::Duration;

use super::pages::read_verified;
use super::shared::Shared;
use crate::core::{EntryBody, Location, NodeState, ScrubOutcome, Store};

/// Runs until the node stops, its storage fails, or scrubbing is off.
pub async fn run(shared: Rc<Shared>) {
    loop {
        if matches!(shared.with_core(|core| core.state().clone()), NodeState::Failed(_)) {
            return;
        }
        let now = shared.now_ms();
        let Some(job) = shared.with_core(|core| core.poll_scrub(now)) else {
            let Some(at) = shared.with_core(|core| core.poll_scrub_timeout()) else { return };
            tokio::time::sleep(Duration::from_millis(at.saturating_sub(now).max(1))).await;
            continue;
        };
        let mut outcomes = Vec::with_capacity(job.entries.len());
        for (store, location) in job.entries {
            // Foreground work runs first.
            tokio::task::yield_now().await;
            outcomes.push(((store, location), verify(&shared, store, location).await));
        }
        let faults = outcomes.iter().filter(|(_, o)| *o == ScrubOutcome::Corrupt).count();
        shared.with_core(|core| core.handle_scrubbed(&outcomes));
        if faults > 0 {
            tracing::warn!(faults, "scrub found stored entries that fail verification; fetching them again");
        }
    }
}

/// Reads one entry from disk (never from a cache) and checks it is what it should be.
async fn verify(shared: &Shared, store: Store, location: Location) -> ScrubOutcome {
    let reader = match store {
        Store::Journal => &shared.reader,
        Store::Pages => &shared.pages_reader,
    };
    match read_verified(shared, reader, location).await {
        Ok(EntryBody::Records { .. }) if store == Store::Journal => ScrubOutcome::Verified,
        Ok(EntryBody::Image { .. }) if store == Store::Pages => ScrubOutcome::Verified,
        // A misdirected write: the bytes verify but are another entry's kind.
        Ok(_) => ScrubOutcome::Corrupt,
        Err(fault) if fault.is_corruption() => {
            tracing::warn!(?store, ?location, %fault, "stored entry failed verification");
            ScrubOutcome::Corrupt
        }
        Err(fault) => {
            tracing::warn!(?store, ?location, %fault, "scrub read failed; tried again next pass");
            ScrubOutcome::Unreadable
        }
    }
}
