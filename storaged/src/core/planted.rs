//! Bugs planted on purpose, for tests only: a test sets one in `Limits::planted` to prove that
//! its checkers catch that kind of mistake (the simulator's `--plant NAME`). Nothing reads them
//! from a configuration file, a flag of the daemon or the environment, and `Limits::default()`
//! plants none.

/// A deliberate mistake in the core's healing decisions (test-only; see the module docs).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// A hydration installs its pages and claims SCL as soon as the source's first answer
    /// arrives, before every page is durably stored (the pages still in flight are lost).
    HydrateClaimsEarly,
    /// Scrub counts a corrupt records entry as a fault but does not forget its records, so the
    /// segment still claims (and would serve) them.
    ScrubServesFailed,
}

impl PlantedBug {
    /// Every planted bug, with the name `borealis-sim --plant` takes.
    pub const ALL: [(&'static str, PlantedBug); 2] = [
        ("hydrate-claims-early", PlantedBug::HydrateClaimsEarly),
        ("scrub-serves-failed", PlantedBug::ScrubServesFailed),
    ];

    /// The bug named `name` (see `ALL`).
    pub fn from_name(name: &str) -> Option<PlantedBug> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, bug)| *bug)
    }
}
