//! `cartflow worker`: a process that runs background operations from a shared database until
//! it is told to stop (SIGTERM, SIGINT) or, with `--exit-when-idle`, until no operation is
//! New or Running. Any number of worker processes may share one database: claims are leased
//! and fenced by attempt, and each worker sweeps the expired claims of workers that died.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cartflow::engine::{OperationReport, run_restarting};
use cartflow::ids::RandomIds;
use cartflow::machine::StepOutcome;
use cartflow::{Engine, EngineConfig, Store};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;

use crate::cli::{datadir, deliver, template};

/// How to run, as the command line gave it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The data directory or database URL (see [`datadir::open_store`]).
    pub data: String,
    /// Worker threads in this process.
    pub threads: usize,
    /// How long a claim lasts without a heartbeat.
    pub lease_ms: u64,
    /// How often a claim is renewed while a provider works.
    pub heartbeat_ms: u64,
    /// Stop once no operation is New or Running.
    pub exit_when_idle: bool,
    /// Show a running count on stderr.
    pub progress: bool,
    /// The integrations file (`--integrations`); see [`datadir::provider_file`].
    pub integrations: Option<PathBuf>,
    /// The template file (`--template`); see [`template::table`].
    pub template: Option<PathBuf>,
    /// The webhooks file (`--webhooks`) whose hooks are delivered beside the work.
    pub webhooks: Option<PathBuf>,
}

/// What the worker threads of this process have done, for the progress display.
#[derive(Debug, Default)]
struct Tally {
    complete: AtomicU64,
    error: AtomicU64,
    discarded: AtomicU64,
}

impl Tally {
    fn record(&self, report: &OperationReport) {
        let counter = match (&report.outcome, report.applied) {
            (_, false) => &self.discarded,
            (StepOutcome::Passed, true) => &self.complete,
            (_, true) => &self.error,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn line(&self, started: Instant) -> String {
        let (complete, error, discarded) = (
            self.complete.load(Ordering::Relaxed),
            self.error.load(Ordering::Relaxed),
            self.discarded.load(Ordering::Relaxed),
        );
        let ran = complete + error + discarded;
        let seconds = started.elapsed().as_secs_f64().max(0.001);
        format!(
            "cartflow worker: {ran} operation(s) run: {complete} Complete, {error} Error, \
             {discarded} discarded; {:.1}/s",
            ran as f64 / seconds
        )
    }
}

/// Prints the tally until stopped: in place on a terminal, a line every 10 s otherwise.
fn show_progress(tally: &Tally, stop: &Stop) {
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(10)
    };
    let started = Instant::now();
    while !stop.is_requested() {
        stop.wait(every);
        let line = tally.line(started);
        if terminal {
            err_inline!("\r{line}");
        } else {
            errln!("{line}");
        }
    }
    if terminal {
        errln!();
    }
}

/// How long an idle worker waits before it looks for work again.
const POLL: Duration = Duration::from_millis(50);

/// Exit status for a usage or data error.
const USAGE: u8 = 2;

/// Runs workers until stopped; exit status 0 after a clean stop.
pub fn run(request: &Request) -> ExitCode {
    match serve(request) {
        Ok(code) => code,
        Err(message) => {
            errln!("cartflow worker: {message}");
            ExitCode::from(USAGE)
        }
    }
}

fn serve(request: &Request) -> Result<ExitCode, String> {
    if request.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    if request.heartbeat_ms == 0 || request.heartbeat_ms >= request.lease_ms {
        return Err(format!(
            "--heartbeat-ms ({}) must be above 0 and below --lease-ms ({}), or claims lapse while \
             their workers are alive",
            request.heartbeat_ms, request.lease_ms
        ));
    }
    let providers = datadir::provider_file(&request.data, request.integrations.as_deref())
        .map_err(|e| e.to_string())?;
    let table = template::table(Some(&request.data), request.template.as_deref())
        .map_err(|e| e.to_string())?;
    let hooks = request.webhooks.as_deref().map(deliver::load).transpose()?;
    let opened = datadir::open_store(&request.data).map_err(|e| e.to_string())?;
    let integrations = opened
        .integrations(providers.as_ref())
        .map_err(|e| e.to_string())?;
    opened.check_template(&integrations, table.template())?;
    let engine = Engine::new(Arc::clone(&opened.store))
        .with_table(table)
        .with_ids(Arc::new(RandomIds))
        .with_integrations(integrations)
        .with_config(EngineConfig {
            lease_ms: request.lease_ms,
            heartbeat_ms: request.heartbeat_ms,
            ..EngineConfig::default()
        });
    datadir::warn_missing_providers("worker", &engine);

    let stop = stop_on_signal()?;

    errln!(
        "cartflow worker: {} thread(s) on {}, lease {} ms, heartbeat {} ms; {}",
        request.threads,
        opened.location,
        request.lease_ms,
        request.heartbeat_ms,
        if request.exit_when_idle {
            "exits when no operation is New or Running"
        } else {
            "stop with SIGTERM or Ctrl-C"
        }
    );
    let delivery = hooks
        .map(|hooks| deliver::start_beside("worker", &opened.store, &hooks))
        .transpose()?;
    let tally = Arc::new(Tally::default());
    let restarts = Arc::new(AtomicU64::new(0));
    let handles = start_workers(request, &engine, &stop, &tally, &restarts)?;
    let progress = request.progress.then(|| {
        let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
        thread::spawn(move || show_progress(&tally, &stop))
    });
    // Join every thread (no short cut): each finishes the operation in hand.
    let panicked = handles
        .into_iter()
        .map(|handle| handle.join().is_err())
        .filter(|&panicked| panicked)
        .count()
        > 0;
    // The workers have stopped (idle, or a signal): so does the display.
    stop.request();
    if let Some(display) = progress {
        let _ = display.join();
    }
    // Then the webhooks: what is left undelivered is sent by the next run.
    if let Some(delivery) = delivery {
        delivery.stop();
    }
    Ok(stopped(panicked, restarts.load(Ordering::Relaxed)))
}

/// Says how the workers stopped: exit status 1 when one panicked for good, else 0.
fn stopped(panicked: bool, restarts: u64) -> ExitCode {
    if panicked {
        errln!("cartflow worker: a worker thread panicked");
        return ExitCode::FAILURE;
    }
    match restarts {
        0 => errln!("cartflow worker: stopped"),
        n => errln!("cartflow worker: stopped; worker threads panicked and restarted {n} time(s)"),
    }
    ExitCode::SUCCESS
}

/// A stop requested by the first SIGTERM or SIGINT; a second one exits at once.
fn stop_on_signal() -> Result<Arc<Stop>, String> {
    let stop = Arc::new(Stop::default());
    let on_signal = Arc::clone(&stop);
    ctrlc::set_handler(move || {
        if on_signal.is_requested() {
            // A second signal: leave now; the claims held are swept once their lease ends.
            std::process::exit(130);
        }
        errln!("cartflow worker: stopping after the operations in hand");
        on_signal.request();
    })
    .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    Ok(stop)
}

/// Starts the worker threads of `request`, each restarted after a panic until `stop`.
fn start_workers(
    request: &Request,
    engine: &Engine,
    stop: &Arc<Stop>,
    tally: &Arc<Tally>,
    restarts: &Arc<AtomicU64>,
) -> Result<Vec<thread::JoinHandle<()>>, String> {
    let settings = (request.lease_ms, request.exit_when_idle);
    (0..request.threads)
        .map(|n| {
            let engine = engine.clone();
            let stop = Arc::clone(stop);
            let tally = Arc::clone(tally);
            let restarts = Arc::clone(restarts);
            thread::Builder::new()
                .name(format!("cartflow-worker-{n}"))
                .spawn(move || {
                    run_restarting(
                        &|| stop.is_requested(),
                        &restarts,
                        &|pause| stop.wait(pause),
                        &mut || work(&engine, &stop, &tally, settings),
                    );
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot start a worker thread: {e}"))
}

/// One worker thread's loop (restarted after a panic): claim and run, sweep expired claims
/// when idle (and at least every half lease when busy, so a dead worker's operation is not
/// left behind a stream of new work).
fn work(engine: &Engine, stop: &Stop, tally: &Tally, (lease_ms, exit_when_idle): (u64, bool)) {
    let sweep_every = Duration::from_millis(lease_ms / 2);
    let mut last_sweep: Option<Instant> = None;
    let mut idle_once = false;
    while !stop.is_requested() {
        let ran = match engine.run_next_operations() {
            Ok(outcomes) => {
                let ran = !outcomes.is_empty();
                for outcome in outcomes {
                    match outcome {
                        Ok(report) => {
                            print_report(&report);
                            tally.record(&report);
                        }
                        Err(e) => tracing::warn!(error = %e, "a worker step failed"),
                    }
                }
                ran
            }
            Err(e) => {
                tracing::warn!(error = %e, "a worker step failed");
                false
            }
        };
        if !ran || last_sweep.is_none_or(|at| at.elapsed() >= sweep_every) {
            if let Err(e) = engine.sweep_expired() {
                tracing::warn!(error = %e, "sweeping expired claims failed");
            }
            last_sweep = Some(Instant::now());
        }
        if ran {
            idle_once = false;
            continue;
        }
        if exit_when_idle {
            match is_idle(engine.store().as_ref()) {
                // Idle twice in a row, a poll apart: a claim or requeue by another process
                // between the two reads of one check cannot end the run early.
                Ok(true) if idle_once => {
                    stop.request();
                    break;
                }
                Ok(idle) => idle_once = idle,
                Err(e) => tracing::warn!(error = %e, "cannot tell whether work is left"),
            }
        }
        stop.wait(POLL);
    }
}

/// No operation is New (claimable) or Running (under any lease).
fn is_idle(store: &dyn Store) -> Result<bool, cartflow::StoreError> {
    // Every lease ends before the year 9999, so "expired by then" is "every Running one".
    let end_of_time: DateTime<Utc> = Utc
        .with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    // New first: a requeue (Running -> New) between the reads is rare; a claim is not.
    Ok(store.claimable_operations(1)?.is_empty()
        && store.expired_operations(end_of_time, 1)?.is_empty())
}

/// One JSON line per operation run, on stdout, written once its result is committed.
fn print_report(report: &OperationReport) {
    let (outcome, messages): (&str, Vec<&str>) = match &report.outcome {
        StepOutcome::Passed => ("passed", Vec::new()),
        StepOutcome::Failed(messages) => (
            "failed",
            messages.iter().map(|m| m.message.as_str()).collect(),
        ),
        StepOutcome::SystemFailure(reason) => ("system failure", vec![reason.as_str()]),
    };
    let status = if report.applied {
        Some(match report.outcome {
            StepOutcome::Passed => "Complete",
            _ => "Error",
        })
    } else {
        None
    };
    let line = json!({
        "operationId": report.operation_id.to_string(),
        "name": report.name,
        "cartId": report.cart_id.to_string(),
        "attempt": report.attempt,
        "outcome": outcome,
        "messages": messages,
        "applied": report.applied,
        "status": status,
    });
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop the work: the database is the record.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// A stop request that idle workers can wait on.
#[derive(Default)]
struct Stop {
    requested: Mutex<bool>,
    changed: Condvar,
}

impl Stop {
    fn request(&self) {
        *self.requested.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_all();
    }

    fn is_requested(&self) -> bool {
        *self.requested.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait(&self, timeout: Duration) {
        let requested = self.requested.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .changed
            .wait_timeout_while(requested, timeout, |requested| !*requested);
    }
}
