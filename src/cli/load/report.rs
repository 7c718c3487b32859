//! What a load run measured: checkouts per second, latency percentiles per call and per whole
//! checkout, and failures by error code; as JSON for scripts or as a table for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::buyer::Checkout;

/// The percentiles every latency is summarised by, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// How many samples.
    pub count: usize,
    /// The median.
    pub p50_ms: f64,
    /// The 95th percentile.
    pub p95_ms: f64,
    /// The 99th percentile.
    pub p99_ms: f64,
    /// The slowest.
    pub max_ms: f64,
}

impl Latency {
    /// The percentiles of `samples` by nearest rank; `None` when there are none.
    pub fn of(mut samples: Vec<Duration>) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |percent: usize| {
            // Nearest rank: the smallest sample with at least `percent` % at or below it.
            let rank = (samples.len() * percent).div_ceil(100).max(1);
            millis(samples[rank - 1])
        };
        Some(Latency {
            count: samples.len(),
            p50_ms: at(50),
            p95_ms: at(95),
            p99_ms: at(99),
            max_ms: millis(samples[samples.len() - 1]),
        })
    }
}

fn millis(duration: Duration) -> f64 {
    // Microsecond resolution is all a millisecond figure needs.
    (duration.as_micros() as f64) / 1000.0
}

/// The summary a run prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The checkouts asked for.
    pub requested: usize,
    /// Those that ended with an activated order and a closed cart.
    pub completed: usize,
    /// Those that stopped on an error.
    pub failed: usize,
    /// Those not started before the time bound.
    pub not_started: usize,
    /// Concurrent buyers.
    pub concurrency: usize,
    /// From the first checkout's start to the last one's end.
    pub seconds: f64,
    /// Completed checkouts per second of the run.
    pub checkouts_per_s: f64,
    /// The 99th percentile of a whole completed checkout, in milliseconds (also in
    /// `checkout`).
    pub p99_ms: Option<f64>,
    /// Whole completed checkouts.
    pub checkout: Option<Latency>,
    /// Each kind of call, by its label (`POST priceCart`, `PATCH WebCart`, ...), over every
    /// checkout, failed ones included.
    pub calls: BTreeMap<String, Latency>,
    /// Failed checkouts by error code.
    pub failures: BTreeMap<String, usize>,
    /// For each error code, the call that first got it.
    pub failed_during: BTreeMap<String, String>,
}

impl Summary {
    /// Summarises `checkouts`, run by `concurrency` buyers over `elapsed`, of `requested`.
    pub fn of(
        checkouts: &[Checkout],
        requested: usize,
        concurrency: usize,
        elapsed: Duration,
    ) -> Summary {
        let completed: Vec<&Checkout> = checkouts.iter().filter(|c| c.outcome.is_ok()).collect();
        let checkout = Latency::of(completed.iter().map(|c| c.took).collect());
        let mut failures = BTreeMap::new();
        let mut failed_during = BTreeMap::new();
        for failure in checkouts.iter().filter_map(|c| c.outcome.as_ref().err()) {
            *failures.entry(failure.code.clone()).or_insert(0) += 1;
            failed_during
                .entry(failure.code.clone())
                .or_insert_with(|| failure.during.clone());
        }
        let seconds = elapsed.as_secs_f64();
        Summary {
            requested,
            completed: completed.len(),
            failed: checkouts.len() - completed.len(),
            not_started: requested.saturating_sub(checkouts.len()),
            concurrency,
            seconds,
            checkouts_per_s: if seconds > 0.0 {
                completed.len() as f64 / seconds
            } else {
                0.0
            },
            p99_ms: checkout.map(|l| l.p99_ms),
            checkout,
            calls: calls_by_label(checkouts),
            failures,
            failed_during,
        }
    }

    /// The summary as a table.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} of {} checkouts completed ({} failed, {} not started) by {} buyers in {:.2} s: \
             {:.1} checkouts/s",
            self.completed,
            self.requested,
            self.failed,
            self.not_started,
            self.concurrency,
            self.seconds,
            self.checkouts_per_s
        );
        let _ = writeln!(
            out,
            "\n{:<42} {:>7} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "count", "p50", "p95", "p99", "max"
        );
        if let Some(checkout) = self.checkout {
            row(&mut out, "whole checkout", &checkout);
        }
        for (label, latency) in &self.calls {
            row(&mut out, label, latency);
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "\nfailures");
            for (code, count) in &self.failures {
                let during = self.failed_during.get(code).map_or("", String::as_str);
                let _ = writeln!(out, "  {code:<30} {count:>7}  (first during {during})");
            }
        }
        out
    }
}

fn row(out: &mut String, label: &str, latency: &Latency) {
    let _ = writeln!(
        out,
        "{label:<42} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        latency.count, latency.p50_ms, latency.p95_ms, latency.p99_ms, latency.max_ms
    );
}

fn calls_by_label(checkouts: &[Checkout]) -> BTreeMap<String, Latency> {
    let mut samples: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for call in checkouts.iter().flat_map(|c| &c.calls) {
        samples
            .entry(call.label.clone())
            .or_default()
            .push(call.took);
    }
    samples
        .into_iter()
        .filter_map(|(label, samples)| Some((label, Latency::of(samples)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::load::buyer::{Call, Failure};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_are_nearest_ranks() {
        let latency = Latency::of((1..=200).rev().map(ms).collect()).unwrap();
        assert_eq!(latency.count, 200);
        assert_eq!(latency.p50_ms, 100.0);
        assert_eq!(latency.p95_ms, 190.0);
        assert_eq!(latency.p99_ms, 198.0);
        assert_eq!(latency.max_ms, 200.0);
        let one = Latency::of(vec![ms(7)]).unwrap();
        assert_eq!((one.p50_ms, one.p99_ms, one.max_ms), (7.0, 7.0, 7.0));
        assert_eq!(Latency::of(Vec::new()), None);
    }

    fn checkout(took: u64, outcome: Result<(), &str>) -> Checkout {
        Checkout {
            calls: vec![Call {
                label: "POST priceCart".into(),
                took: ms(took / 2),
            }],
            took: ms(took),
            outcome: outcome.map_err(|code| Failure {
                code: code.into(),
                during: "POST priceCart".into(),
            }),
        }
    }

    #[test]
    fn a_summary_counts_completed_failed_and_unstarted_checkouts() {
        let checkouts = [
            checkout(10, Ok(())),
            checkout(30, Ok(())),
            checkout(20, Err("INVALID_OPERATION")),
            checkout(40, Err("INVALID_OPERATION")),
        ];
        let summary = Summary::of(&checkouts, 6, 2, Duration::from_secs(2));
        assert_eq!(
            (summary.completed, summary.failed, summary.not_started),
            (2, 2, 2)
        );
        assert_eq!(summary.checkouts_per_s, 1.0);
        // Only completed checkouts make the whole-checkout latency; every call counts.
        assert_eq!(summary.p99_ms, Some(30.0));
        assert_eq!(summary.checkout.unwrap().count, 2);
        assert_eq!(summary.calls["POST priceCart"].count, 4);
        assert_eq!(summary.failures["INVALID_OPERATION"], 2);
        assert!(
            summary.text().contains("INVALID_OPERATION"),
            "{}",
            summary.text()
        );
    }
}
