//! The subcommands of the `cartflow` binary.

/// Writes a line to stderr. Unlike `eprintln!`, a failed write (a full disk, a closed pipe) is
/// ignored rather than a panic: a message nobody can read must never stop a server or worker.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// [`errln!`] without the line end (progress shown in place on a terminal).
macro_rules! err_inline {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

pub mod datadir;
#[cfg(feature = "http")]
pub mod deliver;
pub mod demo;
pub mod inspect;
pub mod invoke;
#[cfg(feature = "http")]
pub mod load;
#[cfg(feature = "http")]
pub mod serve;
pub mod template;
pub mod transfer;
pub mod worker;

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::mpsc;

use cartflow::ActionResult;
use serde_json::Value;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line (tracing-subscriber's JSON formatter).
    Json,
}

/// Logs go to stderr, filtered by `RUST_LOG` (warnings and errors by default), so stdout
/// stays machine-readable. A log line that cannot be written (a full disk, a pipe whose reader
/// has gone) is dropped: the subscriber's own report of a failed write would go to the same
/// broken stderr through `eprintln!`, which panics, so it is switched off.
pub fn install_log_subscriber(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LossyStderr)
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Makes a [`LossyStderrLine`] for each log line.
struct LossyStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LossyStderr {
    type Writer = LossyStderrLine;

    fn make_writer(&'a self) -> Self::Writer {
        LossyStderrLine(std::io::stderr().lock())
    }
}

/// Stderr, locked for one log line, that reports every write as done: a line nobody can read
/// is lost, never an error to the logging layer.
struct LossyStderrLine(std::io::StderrLock<'static>);

impl std::io::Write for LossyStderrLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// Writes `text` to stdout; a closed pipe (`cartflow diagram | head`) is not an error.
pub fn print_stdout(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            errln!("cartflow: cannot write to stdout: {e}");
            ExitCode::from(2)
        }
    }
}

/// A result element as the CLI prints it: the Salesforce element plus `httpStatus`, an extra
/// field that Salesforce clients tolerate (they must accept extra fields) and scripts can read.
pub fn element_json(result: &ActionResult) -> Value {
    let mut value = serde_json::to_value(result).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut value {
        fields.insert("httpStatus".into(), Value::from(result.http_status));
    }
    value
}

/// Installs the SIGTERM/SIGINT handler of a long-running command: the first signal is
/// received on the answered channel, and a second one exits at once with 130 (what the
/// command had in hand is taken up again by the next run: a claim after its lease, an
/// undelivered event by the next deliverer).
pub fn stop_channel() -> Result<mpsc::Receiver<()>, String> {
    let (stop, stopped) = mpsc::channel();
    let mut signals = 0u32;
    ctrlc::set_handler(move || {
        signals += 1;
        if signals > 1 {
            std::process::exit(130);
        }
        let _ = stop.send(());
    })
    .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    Ok(stopped)
}
