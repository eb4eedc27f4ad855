//! Borealis benchmarks: load generators and the machine's ceilings, reported side by side.
//! `node_ingest` measures one storage node's durable ingest; `fio` measures the disk's flushed
//! sequential writes on the same directory for comparison.

pub mod fio;
pub mod node_ingest;
pub mod page_reads;
pub mod rows;
