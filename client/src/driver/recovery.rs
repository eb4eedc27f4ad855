//! Writer recovery over the network: the sans-IO `core::takeover::Takeover` (DESIGN §3) driven
//! over QUIC, one round of requests at a time.

use std::time::Duration;

use protocol::{Message, NodeId};

use super::error::OpenError;
use super::links::{Connections, Dialer};
use crate::core::takeover::{Takeover, TakeoverError};
use crate::core::writer::WriterStart;
use crate::core::VolumeGeometry;

/// One request with a timeout; `None` if the node is unreachable or slow.
pub async fn ask(
    connections: &Connections,
    node: NodeId,
    message: &Message,
    timeout: Duration,
) -> Option<Message> {
    let connection = connections.get(node)?;
    match tokio::time::timeout(timeout, transport::request(&connection, message)).await {
        Ok(Ok(reply)) => Some(reply),
        Ok(Err(error)) => {
            tracing::debug!(%node, %error, "request failed");
            None
        }
        Err(_) => None,
    }
}

/// Runs the `Takeover` state machine over the connections: each round's requests go out at
/// once, each bounded by `timeout`; an unanswered request counts as failed.
pub async fn recover(
    dialer: &Dialer,
    connections: &Connections,
    geometry: VolumeGeometry,
    lal: u64,
    timeout: Duration,
) -> Result<WriterStart, OpenError> {
    let mut takeover = Takeover::new(geometry, dialer.cluster.clone(), lal);
    loop {
        if let Some(outcome) = takeover.outcome() {
            if let (Ok(_), Some(plan)) = (outcome, takeover.plan()) {
                tracing::info!(vdl = %plan.vdl, vcl = %plan.vcl, truncation = ?plan.truncation, epoch = %takeover.epochs().volume, "recovered");
            }
            return outcome.clone().map_err(|e| match e {
                TakeoverError::Unavailable { pg, answered, needed } => {
                    OpenError::Unavailable { pg, answered, needed }
                }
                other => OpenError::Recovery(other.to_string()),
            });
        }
        let requests: Vec<(NodeId, Message)> = std::iter::from_fn(|| takeover.poll_request()).collect();
        let asks = requests
            .iter()
            .map(|(node, message)| async move { (*node, ask(connections, *node, message, timeout).await) });
        for (node, answer) in futures::future::join_all(asks).await {
            if let Some(reply) = answer {
                takeover.handle_reply(node, reply);
            }
        }
        // Every request sent so far has been answered or has failed (each ask carries its own
        // timeout): with nothing new to send, what is still awaited never will be.
        if !takeover.has_requests() && takeover.is_waiting() {
            takeover.handle_timeout();
        }
    }
}
