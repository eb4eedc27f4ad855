//! The gateway's `/metrics` (Prometheus text, through the `prometheus-client` crate): requests,
//! errors, bytes and latency by NBD command, requests in flight, connections, and how far VDL
//! trails what the gateway appended. Served on its own thread (`tiny_http`); the serving loop
//! only updates atomics.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Latency buckets: 50 µs doubling 18 times (to about 6.5 s).
const LATENCY_BUCKET_FIRST_S: f64 = 0.000_05;
const LATENCY_BUCKETS: u16 = 18;

/// The kind of a node's refusal (`ErrorCode::name`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// The NBD command a figure is about.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    pub command: &'static str,
}

type HistogramFamily = Family<CommandLabel, Histogram, fn() -> Histogram>;

/// Every figure the gateway keeps.
#[derive(Debug)]
pub struct GatewayMetrics {
    pub requests: Family<CommandLabel, Counter>,
    pub errors: Family<CommandLabel, Counter>,
    pub bytes: Family<CommandLabel, Counter>,
    pub latency: HistogramFamily,
    pub in_flight: Gauge,
    pub connections: Gauge,
    pub vdl: Gauge,
    pub pending_records: Gauge,
    pub overlay_bytes: Gauge,
    pub writer_refusals: Family<KindLabel, Counter>,
    /// The writer's refusal totals the counters were last brought up to.
    refusals_seen: Mutex<client::Refusals>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(LATENCY_BUCKET_FIRST_S, 2.0, LATENCY_BUCKETS))
}

impl GatewayMetrics {
    /// The figures, registered under `borealis_nbd_*`.
    pub fn new() -> (Arc<GatewayMetrics>, Registry) {
        let metrics = GatewayMetrics {
            requests: Family::default(),
            errors: Family::default(),
            bytes: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            in_flight: Gauge::default(),
            connections: Gauge::default(),
            vdl: Gauge::default(),
            pending_records: Gauge::default(),
            overlay_bytes: Gauge::default(),
            writer_refusals: Family::default(),
            refusals_seen: Mutex::default(),
        };
        let mut registry = Registry::with_prefix("borealis_nbd");
        registry.register("requests", "NBD requests served, by command", metrics.requests.clone());
        registry.register(
            "errors",
            "NBD requests answered with an error, by command",
            metrics.errors.clone(),
        );
        registry.register("bytes", "Bytes read or written, by command", metrics.bytes.clone());
        registry.register(
            "request_seconds",
            "Time from a request's arrival to its reply, by command",
            metrics.latency.clone(),
        );
        registry.register("requests_in_flight", "Requests being served", metrics.in_flight.clone());
        registry.register("connections", "Open NBD connections", metrics.connections.clone());
        registry.register("vdl", "The volume's VDL as the gateway's writer knows it", metrics.vdl.clone());
        registry.register(
            "pending_records",
            "Records appended and not yet covered by VDL (how far VDL trails the gateway)",
            metrics.pending_records.clone(),
        );
        registry.register(
            "overlay_bytes",
            "Bytes of writes answered and not yet durable, kept so reads see them",
            metrics.overlay_bytes.clone(),
        );
        // Every kind listed from the start, at zero, so a rate over it never starts from nothing.
        client::Refusals::default().by_kind().for_each(|(kind, _)| {
            metrics.writer_refusals.get_or_create(&KindLabel { kind }).inc_by(0);
        });
        registry.register(
            "writer_refusals",
            "Requests of the gateway's writer the storage nodes refused, by kind (the writer's errors)",
            metrics.writer_refusals.clone(),
        );
        (Arc::new(metrics), registry)
    }

    /// Brings the refusal counters up to the writer's totals (called after every request:
    /// nothing to do unless a refusal came since).
    pub fn set_refusals(&self, refusals: &client::Refusals) {
        let mut seen = self.refusals_seen.lock().expect("never poisoned");
        if *seen == *refusals {
            return;
        }
        for ((kind, total), (_, before)) in refusals.by_kind().zip(seen.by_kind()) {
            self.writer_refusals.get_or_create(&KindLabel { kind }).inc_by(total.saturating_sub(before));
        }
        *seen = *refusals;
    }
}

/// Why `/metrics` could not be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics address {addr}: {source}")]
    Bind { addr: SocketAddr, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("metrics thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Serves `GET /metrics` on `addr` from a thread of its own.
pub fn serve(addr: SocketAddr, registry: Registry) -> Result<(), MetricsError> {
    let server = tiny_http::Server::http(addr).map_err(|source| MetricsError::Bind { addr, source })?;
    let registry = Mutex::new(registry);
    std::thread::Builder::new().name("nbd-metrics".into()).spawn(move || {
        for request in server.incoming_requests() {
            let (status, body) = if request.url() == "/metrics" {
                let mut text = String::new();
                let encoded =
                    prometheus_client::encoding::text::encode(&mut text, &registry.lock().expect("registry"));
                match encoded {
                    Ok(()) => (200, text),
                    Err(error) => (500, format!("encoding the metrics: {error}\n")),
                }
            } else {
                (404, "not found: GET /metrics\n".to_string())
            };
            let _ = request.respond(tiny_http::Response::from_string(body).with_status_code(status));
        }
    })?;
    Ok(())
}
