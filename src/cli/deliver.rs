//! `cartflow deliver`: a process that POSTs the store's events to the webhooks of a file
//! until it is told to stop (SIGTERM, SIGINT); `cartflow webhooks log`: a hook's delivery
//! log; and the `--webhooks FILE` flag with which `serve` and `worker` deliver beside their
//! work. See `docs/webhooks.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cartflow::Store;
use cartflow::events::Delivery;
use cartflow::webhooks::{
    DEFAULT_MAX_BACKOFF, DeliveryHandle, DeliveryOptions, WebhookDeliverer, Webhooks,
};

use crate::cli::datadir;

/// Exit status for a usage or data error.
const USAGE: u8 = 2;

/// The `--webhooks` flag of `serve` and `worker`.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhooksFlag {
    /// Also deliver the store's events to the webhooks of this file (JSON,
    /// docs/webhooks.md), one thread per hook. Run one deliverer per hook: two would both
    /// deliver each event.
    #[arg(long, value_name = "FILE")]
    pub webhooks: Option<PathBuf>,
}

/// The arguments of `cartflow deliver`.
#[derive(Debug, Clone, clap::Args)]
pub struct DeliverArgs {
    /// A data directory (cartflow.db, seeded from cartflow.json), sqlite:<path>, or a
    /// postgres:// URL.
    #[arg(long, value_name = "DIR|URL")]
    pub data: String,
    /// The webhooks file (JSON, docs/webhooks.md).
    #[arg(long, value_name = "FILE")]
    pub webhooks: PathBuf,
    /// The longest wait between two attempts at one event (the waits start at 100 ms and
    /// double, each drawn at random below its bound).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..),
          default_value_t = millis(DEFAULT_MAX_BACKOFF))]
    pub max_backoff_ms: u64,
}

/// The subcommands of `cartflow webhooks`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum WebhooksCommand {
    /// Print a hook's delivery log, the latest attempt first.
    ///
    /// One line per attempt: its time, the event's position, the attempt's number, its
    /// outcome, and the status or why it failed.
    #[command(after_help = "\
Examples:
  cartflow webhooks log --data /tmp/cart --hook crm
  cartflow webhooks log --data postgres://cartflow@db/cartflow --hook crm --limit 200

Each line is tab-separated: time (RFC 3339), position, attempt N, Delivered or Failed, and
HTTP <status> or what went wrong. Exit status 0, or 2 for a usage or data error.")]
    Log(LogArgs),
}

/// The arguments of `cartflow webhooks log`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// A data directory (cartflow.db, seeded from cartflow.json), sqlite:<path>, or a
    /// postgres:// URL.
    #[arg(long, value_name = "DIR|URL")]
    pub data: String,
    /// The hook's name, as its webhooks file gives it.
    #[arg(long, value_name = "NAME")]
    pub hook: String,
    /// How many attempts to print, the latest first.
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub limit: u64,
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().try_into().unwrap_or(u64::MAX)
}

/// Reads the webhooks file at `path`, its errors prefixed with the file's name.
pub fn load(path: &Path) -> Result<Webhooks, String> {
    Webhooks::load(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Starts delivering `hooks` from `store` beside the work of `command` (`serve`, `worker`),
/// saying so on stderr.
pub fn start_beside(
    command: &str,
    store: &Arc<dyn Store>,
    hooks: &Webhooks,
) -> Result<DeliveryHandle, String> {
    let handle = WebhookDeliverer::spawn(Arc::clone(store), hooks, DeliveryOptions::default())
        .map_err(|e| e.to_string())?;
    errln!(
        "cartflow {command}: delivering events to {} webhook(s)",
        handle.hooks()
    );
    Ok(handle)
}

/// Delivers until stopped; exit status 0 after a clean stop.
pub fn run(args: &DeliverArgs) -> ExitCode {
    match deliver(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            errln!("cartflow deliver: {message}");
            ExitCode::from(USAGE)
        }
    }
}

fn deliver(args: &DeliverArgs) -> Result<(), String> {
    let hooks = load(&args.webhooks)?;
    if hooks.is_empty() {
        return Err(format!("{}: names no webhook", args.webhooks.display()));
    }
    let opened = datadir::open_store(&args.data).map_err(|e| e.to_string())?;
    let options = DeliveryOptions {
        max_backoff: Duration::from_millis(args.max_backoff_ms),
        ..DeliveryOptions::default()
    };
    let stopped = super::stop_channel()?;
    let handle = WebhookDeliverer::spawn(Arc::clone(&opened.store), &hooks, options)
        .map_err(|e| e.to_string())?;
    errln!(
        "cartflow deliver: delivering events of {} to {} webhook(s); stop with SIGTERM or Ctrl-C",
        opened.location,
        handle.hooks()
    );
    // The sender lives in the handler for the life of the process, so this waits for a signal.
    let _ = stopped.recv();
    errln!("cartflow deliver: stopping after the attempts in hand");
    handle.stop();
    errln!("cartflow deliver: stopped");
    Ok(())
}

/// Runs a `cartflow webhooks` subcommand.
pub fn run_webhooks(command: &WebhooksCommand) -> ExitCode {
    match command {
        WebhooksCommand::Log(args) => match log(args) {
            Ok(text) => crate::cli::print_stdout(&text),
            Err(message) => {
                errln!("cartflow webhooks log: {message}");
                ExitCode::from(USAGE)
            }
        },
    }
}

fn log(args: &LogArgs) -> Result<String, String> {
    let opened = datadir::open_store(&args.data).map_err(|e| e.to_string())?;
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let deliveries = opened
        .store
        .deliveries(&args.hook, limit)
        .map_err(|e| format!("{}: {e}", opened.location))?;
    if deliveries.is_empty() {
        errln!(
            "cartflow webhooks log: no attempt recorded for hook {:?} in {}",
            args.hook,
            opened.location
        );
    }
    Ok(deliveries.iter().map(log_line).collect())
}

/// One attempt as `webhooks log` prints it, its line end included.
pub fn log_line(delivery: &Delivery) -> String {
    let (outcome, detail) = (delivery.outcome.label(), delivery.outcome.detail());
    format!(
        "{}\t{}\tattempt {}\t{outcome}\t{detail}\n",
        delivery
            .at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        delivery.position,
        delivery.attempt
    )
}
