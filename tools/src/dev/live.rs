//! Live progress of the `borealis dev` workload on stderr: elapsed time, records durable, the
//! current records/s and MB/s, and VDL.
//!
//! Why two styles: on a terminal one line is redrawn in place every [`REDRAW_EVERY`]; in a log
//! or a pipe, redrawing would leave control characters and a wall of updates, so a plain line is
//! printed every [`LINE_EVERY`] instead. Rates are over the last interval, so a stall shows at
//! once; the summary gives the averages.
//!
//! Invariant: this module only formats and writes to stderr (stdout stays the summary's), and
//! [`LiveLine::finish`] leaves the cursor at the start of a clean line.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use protocol::Lsn;

/// How often the terminal line is redrawn.
pub const REDRAW_EVERY: Duration = Duration::from_millis(500);
/// How often a plain progress line is printed when stderr is not a terminal.
pub const LINE_EVERY: Duration = Duration::from_secs(1);
/// Bytes in the megabyte of MB/s (decimal, as throughput is usually quoted).
pub const BYTES_PER_MB: f64 = 1_000_000.0;

/// Totals at one moment of the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub records: u64,
    pub payload_bytes: u64,
    pub vdl: Lsn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    Redraw,
    Lines,
}

/// The progress display.
#[derive(Debug)]
pub struct LiveLine {
    style: Style,
    started: Instant,
    /// When and at what totals the last line was shown.
    last: (Instant, Snapshot),
    drawn: bool,
}

impl LiveLine {
    /// A display on stderr, in the style its kind of output calls for, started now.
    pub fn on_stderr() -> LiveLine {
        let style = if std::io::stderr().is_terminal() { Style::Redraw } else { Style::Lines };
        let now = Instant::now();
        LiveLine { style, started: now, last: (now, Snapshot::default()), drawn: false }
    }

    /// Shows `now` if the display is due.
    pub fn tick(&mut self, now: Snapshot) {
        let at = Instant::now();
        let every = match self.style {
            Style::Redraw => REDRAW_EVERY,
            Style::Lines => LINE_EVERY,
        };
        if at.duration_since(self.last.0) < every {
            return;
        }
        let line = render(at.duration_since(self.started), &self.last, (at, now));
        let mut stderr = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not end the run.
        let _ = match self.style {
            Style::Redraw => write!(stderr, "\r\x1b[2K{line}"),
            Style::Lines => writeln!(stderr, "{line}"),
        };
        let _ = stderr.flush();
        self.last = (at, now);
        self.drawn = true;
    }

    /// Ends the display: the redrawn line is erased, so the summary starts on a clean line.
    pub fn finish(&mut self) {
        if self.style == Style::Redraw && self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
        self.drawn = false;
    }
}

/// One progress line, rates over the interval since `before`.
fn render(elapsed: Duration, before: &(Instant, Snapshot), now: (Instant, Snapshot)) -> String {
    let seconds = now.0.duration_since(before.0).as_secs_f64().max(f64::EPSILON);
    let records_per_s = (now.1.records - before.1.records) as f64 / seconds;
    let mb_per_s = (now.1.payload_bytes - before.1.payload_bytes) as f64 / seconds / BYTES_PER_MB;
    format!(
        "borealis dev: {:>5.1}s  {:>11} records durable  {:>9} records/s  {mb_per_s:>6.2} MB/s  VDL {}",
        elapsed.as_secs_f64(),
        thousands(now.1.records),
        thousands(records_per_s.round() as u64),
        now.1.vdl.get()
    )
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn a_line_shows_interval_rates() {
        let start = Instant::now();
        let before = (start, Snapshot { records: 1000, payload_bytes: 0, vdl: Lsn(1000) });
        let now = (
            start + Duration::from_secs(2),
            Snapshot { records: 21_000, payload_bytes: 4_000_000, vdl: Lsn(21_003) },
        );
        let line = render(Duration::from_millis(3500), &before, now);
        assert!(line.contains("3.5s"), "{line}");
        assert!(line.contains("21,000 records durable"), "{line}");
        assert!(line.contains("10,000 records/s"), "{line}");
        assert!(line.contains("2.00 MB/s"), "{line}");
        assert!(line.ends_with("VDL 21003"), "{line}");
    }
}
