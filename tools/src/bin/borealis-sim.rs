//! `borealis-sim`: runs the real storage and writer cores under the deterministic simulator.
//! `--seed S` replays one seed and prints its trace hash (the same seed always gives the same
//! hash); `--seeds N` runs N seeds from `--first` and prints every failing one with the command
//! that replays it, then the scrub, hydration and membership-change counters summed over the
//! run. `--plant NAME` plants a deliberate bug in every node's core or in the writer's
//! (test-only) to show the checkers catch it. `--nodes-per-az 2|3` fixes the cluster's size
//! (by default each seed picks six or nine nodes; nine have spares, so nodes lost for good are
//! replaced by membership changes). Seeds run on `--jobs` threads (one per core by default);
//! each seed is deterministic whichever thread runs it, and results print in seed order.
//! Exit status 1 if any seed failed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::Parser;
use tools::sim::{run, Outcome, Plant, SimConfig};

/// A progress line goes to stderr after every this many seeds of a long run.
const PROGRESS_EVERY: usize = 1000;

#[derive(Debug, Parser)]
#[command(
    name = "borealis-sim",
    version,
    about = "Run Borealis's cores under seeded network, disk and crash faults."
)]
struct Cli {
    /// Replay exactly this seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed of `--seeds`.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Virtual milliseconds of faults per seed (then the network heals and nodes restart).
    #[arg(long, default_value_t = 200)]
    faulty_ms: u64,
    /// Exceed the fault budget on purpose: up to four nodes unavailable at once and no healing.
    /// A seed then passes if it never gives a wrong answer; one that cannot make its records
    /// durable counts as a clean "unavailable" stop.
    #[arg(long)]
    over_budget: bool,
    /// Plant a deliberate bug (hydrate-claims-early, scrub-serves-failed: in every node's core;
    /// change-counts-new-set-only: in the writer's, on nine nodes); the checkers must then fail
    /// seeds.
    #[arg(long, value_parser = parse_planted)]
    plant: Option<Plant>,
    /// Nodes in each of the 3 AZs: 2 (no spare) or 3 (a spare per PG in each AZ). By default
    /// each seed picks one.
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=3))]
    nodes_per_az: Option<u32>,
    /// Threads to run seeds on [default: one per core].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    jobs: Option<u32>,
}

fn parse_planted(name: &str) -> Result<Plant, String> {
    Plant::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Plant::all().iter().map(|(n, _)| *n).collect();
        format!("unknown bug {name:?}; one of {}", names.join(", "))
    })
}

/// Runs `seeds` on `jobs` threads, each taking the next seed not yet taken; the outcomes come
/// back in seed order.
fn run_all(seeds: &[u64], config: &SimConfig, jobs: usize) -> Vec<Outcome> {
    let (next, done) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let outcomes: Mutex<Vec<Option<Outcome>>> = Mutex::new(seeds.iter().map(|_| None).collect());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, seeds.len().max(1)) {
            scope.spawn(|| loop {
                let at = next.fetch_add(1, Ordering::Relaxed);
                let Some(seed) = seeds.get(at) else { break };
                let outcome = run(*seed, config);
                outcomes.lock().expect("a seed thread panicked")[at] = Some(outcome);
                let done = done.fetch_add(1, Ordering::Relaxed) + 1;
                if seeds.len() >= PROGRESS_EVERY && done % PROGRESS_EVERY == 0 {
                    eprintln!(
                        "{done} of {} seeds run, {:.0} s",
                        seeds.len(),
                        started.elapsed().as_secs_f64()
                    );
                }
            });
        }
    });
    let outcomes = outcomes.into_inner().expect("a seed thread panicked");
    outcomes.into_iter().map(|o| o.expect("every seed ran")).collect()
}

fn main() {
    let cli = Cli::parse();
    let config = SimConfig {
        faulty_us: cli.faulty_ms * 1000,
        over_budget: cli.over_budget,
        planted: cli.plant,
        nodes_per_az: cli.nodes_per_az,
        ..SimConfig::default()
    };
    let seeds: Vec<u64> = match cli.seed {
        Some(seed) => vec![seed],
        None => (cli.first..cli.first + cli.seeds).collect(),
    };
    let (mut failed, mut unavailable, mut heal) = (0, 0, tools::sim::node::HealCounts::default());
    let (mut changes, mut nine) = (tools::sim::ChangeCounts::default(), 0);
    let (mut disk, mut recycled) = (storaged::storage::sim::DiskStats::default(), 0);
    let (mut reads, mut reader_reads) = (0, 0);
    let jobs =
        cli.jobs.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |n| n as usize);
    for (seed, outcome) in seeds.iter().zip(run_all(&seeds, &config, jobs)) {
        unavailable += u64::from(outcome.unavailable);
        reads += outcome.reads_checked;
        reader_reads += outcome.as_of_reads_checked;
        heal.add(outcome.heal);
        changes.add(outcome.changes);
        disk.add(outcome.disk);
        recycled += outcome.files_recycled;
        nine += u64::from(outcome.nodes > 6);
        if cli.seed.is_some() {
            println!(
                "seed {seed}: trace {:08x}, {} events, {} records, VDL {}, {} page reads checked ({} by a reader), {} nodes, {:?}",
                outcome.trace_hash,
                outcome.events,
                outcome.records_appended,
                outcome.vdl,
                outcome.reads_checked,
                outcome.as_of_reads_checked,
                outcome.nodes,
                outcome.changes,
            );
        }
        if !outcome.failures.is_empty() {
            failed += 1;
            println!("FAILED seed {seed}: {}", outcome.failures.join("; "));
            let over = if cli.over_budget { " --over-budget" } else { "" };
            let plant = cli.plant.map_or(String::new(), |bug| format!(" --plant {}", bug.name()));
            let layout = cli.nodes_per_az.map_or(String::new(), |n| format!(" --nodes-per-az {n}"));
            println!(
                "  replay: borealis-sim --seed {seed} --faulty-ms {}{over}{plant}{layout}",
                cli.faulty_ms
            );
        }
    }
    let stopped = if cli.over_budget {
        format!(" ({unavailable} stopped unavailable, cleanly)")
    } else {
        String::new()
    };
    println!("{} passed, {failed} failed{stopped}", seeds.len() - failed);
    println!("pages checked: {reads}, of which {reader_reads} read by a reader at a declared VDL");
    println!(
        "scrub: {} passes, {} faults found, {} repaired; hydration: {} started, {} completed, {} abandoned",
        heal.scrub_passes,
        heal.scrub_faults_found,
        heal.scrub_faults_repaired,
        heal.hydrations_started,
        heal.hydrations_completed,
        heal.hydrations_abandoned
    );
    println!(
        "membership: {nine} seeds on nine nodes ({} grew: spares published mid-run), {} nodes lost, {} changes \
         started, {} completed, {} reversed",
        changes.grown, changes.lost_nodes, changes.started, changes.completed, changes.reversed
    );
    println!(
        "disks: {} writes, {} syncs, {} torn and {} lost at crashes, {} misdirected, {} sectors rotted, {} reads failed; {recycled} files recycled",
        disk.writes,
        disk.syncs,
        disk.torn_writes,
        disk.lost_writes,
        disk.misdirected_writes,
        disk.rotten_sectors,
        disk.failed_reads
    );
    std::process::exit(i32::from(failed > 0));
}
