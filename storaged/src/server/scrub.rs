//! The scrub driver: reads and verifies the entries the core's scrubber hands out
//! (`core/node/scrub.rs`), at the pace the core sets, and reports each outcome
//! (`store::reads::verify`). It decides nothing: which entries, how fast, and what a failure
//! means are the core's.

use std::rc::Rc;
use std::time::Duration;

use super::shared::Shared;
use crate::core::{NodeState, ScrubOutcome};
use crate::store::reads::verify;

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
        for (log, location) in job.entries {
            // Foreground work runs first.
            tokio::task::yield_now().await;
            outcomes.push(((log, location), verify(&shared.store, log, location).await));
        }
        let faults = outcomes.iter().filter(|(_, o)| *o == ScrubOutcome::Corrupt).count();
        shared.with_core(|core| core.handle_scrubbed(&outcomes));
        if faults > 0 {
            tracing::warn!(faults, "scrub found stored entries that fail verification; fetching them again");
        }
    }
}
