//! Helpers for tests that run the `cartflow` binary as a server or worker process, and talk
//! to a server over HTTP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::Duration;

/// An HTTP client that answers every status as a response (not an error), and gives up on
/// a request after `timeout`.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .new_agent()
}

/// The lines `child` writes on its (piped) stderr, read on a thread of their own so that the
/// child never blocks on a full pipe.
pub fn stderr_lines(child: &mut Child) -> Receiver<String> {
    let stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
    let (lines, received) = mpsc::channel();
    thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    received
}

/// Reads `lines` until `found` picks a value out of one, keeping every line read (that one
/// last) in `seen`. An error when no line comes within `bound`, or the writer has gone.
pub fn read_until<T>(
    lines: &Receiver<String>,
    bound: Duration,
    seen: &mut Vec<String>,
    mut found: impl FnMut(&str) -> Option<T>,
) -> Result<T, RecvTimeoutError> {
    loop {
        let line = lines.recv_timeout(bound)?;
        let value = found(&line);
        seen.push(line);
        if let Some(value) = value {
            return Ok(value);
        }
    }
}

/// The address of a server's "listening on http://ADDR" line (`host:port`).
pub fn listening_address(line: &str) -> Option<String> {
    line.split("listening on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
}

/// A server process that has said where it listens.
pub struct Listening {
    /// The process.
    pub child: Child,
    /// Its stderr lines not read yet.
    pub lines: Receiver<String>,
    /// Its stderr lines read so far, the listening line last.
    pub seen: Vec<String>,
    /// Where it listens (`host:port`).
    pub address: String,
}

/// Starts `command` (a `cartflow serve`; stdout to null, stderr read here) and waits for its
/// "listening on http://ADDR" line, each line within `bound`. Kills it and panics with what it
/// wrote when no such line comes.
pub fn start_listening(command: &mut Command, bound: Duration) -> Listening {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let mut seen = Vec::new();
    match read_until(&lines, bound, &mut seen, listening_address) {
        Ok(address) => Listening {
            child,
            lines,
            seen,
            address,
        },
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no listening line ({e}); stderr: {seen:?}");
        }
    }
}

/// Sends SIGTERM to `child`; whether the signal was sent.
pub fn sigterm(child: &Child) -> bool {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .is_ok_and(|status| status.success())
}
