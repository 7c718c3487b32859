//! Faults around the engine: log lines that cannot be written (stderr on a full disk, or a
//! pipe whose reader has gone) never stop a request or a worker, a worker thread that panics
//! is restarted and counted, and `cartflow serve` starts with no arguments and on a host
//! name. The process tests run the real binary on a copy of `examples/data`.

#![cfg(all(unix, feature = "http"))]

mod support;

use std::fs::{self, File};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use cartflow::ids::SequentialIds;
use cartflow::model::{OperationStatus, SfId};
use cartflow::sample::{self, SampleCart};
use cartflow::store::ClaimFn;
use cartflow::{Engine, MemoryStore, Store, StoreError};
use serde_json::Value;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_cartflow");
/// The buyer of the example data and the token the tests give her.
const BUYER_ID: &str = "0050000000000G9";
const TOKEN: &str = "bea-token";
/// The example data's cart whose session waits at the Inventory step.
const CART: &str = "0a60000000000G9";
const SESSION: &str = "2z90000000000G9";
/// The longest a step may take before a test gives up (a bound against hangs, not a measure).
const BOUND: Duration = Duration::from_secs(60);

/// A copy of `examples/data` with a token file for the buyer.
fn example_data() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    for entry in fs::read_dir(examples).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    fs::write(
        dir.path().join("tokens.json"),
        format!(r#"{{"{TOKEN}": "{BUYER_ID}"}}"#),
    )
    .unwrap();
    dir
}

fn agent() -> ureq::Agent {
    support::server::agent(BOUND)
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `cartflow serve` process, killed when dropped.
struct Served {
    child: Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cartflow serve` with `args` on a free port of 127.0.0.1 (stderr and the
/// environment set by `configure`) and waits until it accepts connections. Since stderr may
/// be unreadable, the port is chosen here; a start that loses the port to another process
/// is retried on another.
fn serve(args: &[&str], configure: impl Fn(&mut Command)) -> Served {
    for _ in 0..5 {
        let port = free_port();
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .args(args)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        configure(&mut command);
        let mut served = Served {
            child: command.spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}/services/data"),
        };
        if wait_until_listening(&mut served.child, "127.0.0.1", port) {
            return served;
        }
    }
    panic!("cartflow serve never listened");
}

/// True once the server accepts a connection on `host:port`; false when it exited first.
fn wait_until_listening(child: &mut Child, host: &str, port: u16) -> bool {
    let deadline = Instant::now() + BOUND;
    while Instant::now() < deadline {
        if TcpStream::connect((host, port)).is_ok() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("cartflow serve did not listen within {BOUND:?}");
}

/// A request's status and JSON body; panics when the connection is dropped unanswered.
fn answer(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let response = response.expect("the server answers the request");
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body)
}

fn post(served: &Served, action: &str, input: &str) -> (u16, Value) {
    let url = format!("{}/v64.0/actions/standard/{action}", served.base);
    answer(
        agent()
            .post(url)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .header("Content-Type", "application/json")
            .send(format!(r#"{{"inputs": [{input}]}}"#)),
    )
}

fn get(served: &Served, path: &str) -> (u16, Value) {
    let url = format!("{}{path}", served.base);
    answer(
        agent()
            .get(url)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call(),
    )
}

/// Drives the example session through an inventory check over HTTP: every request must be
/// answered, and the in-process worker must run the operation (the session stops processing
/// and moves on to Confirm Price).
fn inventory_check_completes(served: &Served) {
    let (status, versions) = get(served, "/");
    assert_eq!(status, 200, "{versions}");
    let lock = format!(
        r#"{{"checkoutSessionId": "{SESSION}", "expCurrentState": "Inventory",
            "nextState": "Confirm Price"}}"#
    );
    let (status, locked) = post(served, "updateCheckoutSessionStateAction", &lock);
    assert_eq!(status, 200, "{locked}");
    let (status, started) = post(
        served,
        "checkCartInventoryAction",
        &format!(r#"{{"cartId": "{CART}"}}"#),
    );
    assert_eq!(status, 200, "{started}");
    assert!(
        started[0]["outputValues"]["backgroundOperationId"].is_string(),
        "{started}"
    );
    let deadline = Instant::now() + BOUND;
    loop {
        let (status, session) = get(
            served,
            &format!("/v64.0/sobjects/CartCheckoutSession/{SESSION}"),
        );
        assert_eq!(status, 200, "{session}");
        if session["IsProcessing"] == false {
            assert_eq!(session["State"], "Confirm Price", "{session}");
            assert_eq!(session["IsError"], false, "{session}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the operation never ran: {session}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn dev_full() -> File {
    File::options().write(true).open("/dev/full").unwrap()
}

#[test]
fn serve_with_stderr_on_a_full_disk_answers_every_request_and_runs_operations() {
    for level in ["cartflow=debug", "trace"] {
        let data = example_data();
        let served = serve(&["--data", data.path().to_str().unwrap()], |command| {
            command.env("RUST_LOG", level).stderr(dev_full());
        });
        inventory_check_completes(&served);
    }
}

#[test]
fn serve_with_stderr_a_pipe_without_reader_answers_every_request_and_runs_operations() {
    for level in ["cartflow=debug", "trace"] {
        let data = example_data();
        let mut served = serve(&["--data", data.path().to_str().unwrap()], |command| {
            command.env("RUST_LOG", level).stderr(Stdio::piped());
        });
        // Every later write to stderr fails with EPIPE.
        drop(served.child.stderr.take());
        inventory_check_completes(&served);
    }
}

#[test]
fn serve_logs_one_json_object_per_line_with_log_format_json() {
    let data = example_data();
    let log = tempfile::NamedTempFile::new().unwrap();
    let file = log.reopen().unwrap();
    let served = serve(
        &[
            "--data",
            data.path().to_str().unwrap(),
            "--log-format",
            "json",
        ],
        |command| {
            command
                .env("RUST_LOG", "cartflow=debug")
                .stderr(file.try_clone().unwrap());
        },
    );
    inventory_check_completes(&served);
    drop(served);
    let text = fs::read_to_string(log.path()).unwrap();
    // The CLI's own messages are plain lines; every log event is a JSON object.
    let events: Vec<Value> = text
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["level"] == "DEBUG" && e["fields"].is_object()),
        "{text}"
    );
}

#[test]
fn worker_with_stderr_on_a_full_disk_drains_the_queue_and_exits_0() {
    let data = example_data();
    let dir = data.path().to_str().unwrap();
    let invoke = |action: &str, input: String| {
        let out = Command::new(BIN)
            .args([
                "invoke", action, "--as", BUYER_ID, "--data", dir, "--input", &input,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    invoke(
        "updateCheckoutSessionStateAction",
        format!(
            r#"{{"checkoutSessionId": "{SESSION}", "expCurrentState": "Inventory",
                "nextState": "Confirm Price"}}"#
        ),
    );
    invoke(
        "checkCartInventoryAction",
        format!(r#"{{"cartId": "{CART}"}}"#),
    );
    let mut child = Command::new(BIN)
        .args(["worker", "--data", dir, "--exit-when-idle"])
        .env("RUST_LOG", "cartflow=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(dev_full())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the worker did not exit within {BOUND:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    assert_eq!(status.code(), Some(0), "stdout: {stdout}");
    let reports: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(reports.len(), 1, "{stdout}");
    assert_eq!(reports[0]["status"], "Complete", "{stdout}");
    assert_eq!(reports[0]["cartId"], "0a60000000000G9AAI", "{stdout}");
    assert_eq!(reports[0]["name"], "checkCartInventoryAction", "{stdout}");
}

#[test]
fn serve_without_data_serves_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(&[], |command| {
        command.current_dir(dir.path());
    });
    let (status, versions) = get(&served, "/");
    assert_eq!(status, 200, "{versions}");
    assert!(
        versions.as_array().is_some_and(|v| !v.is_empty()),
        "{versions}"
    );
    drop(served);
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn serve_listens_on_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new(BIN)
            .args(["serve", "--addr", &format!("localhost:{port}"), "--data"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // localhost may resolve to ::1 or 127.0.0.1: connecting by name tries both.
        if !wait_until_listening(&mut child, "localhost", port) {
            // Lost the port to another process: try another.
            continue;
        }
        let served = Served {
            child,
            base: format!("http://localhost:{port}/services/data"),
        };
        let (status, versions) = get(&served, "/");
        assert_eq!(status, 200, "{versions}");
        return;
    }
    panic!("cartflow serve --addr localhost:PORT never listened");
}

#[test]
fn serve_refuses_an_address_that_names_no_host_with_a_clear_error() {
    for addr in ["no-such-host.invalid:8080", "127.0.0.1", "localhost:http"] {
        let out = Command::new(BIN)
            .args(["serve", "--addr", addr])
            .current_dir(tempfile::tempdir().unwrap().path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{addr}: {stderr}");
        assert!(
            stderr.contains(&format!("--addr {addr}: cannot resolve it")),
            "{addr}: {stderr}"
        );
    }
}

/// A memory store whose first `claim_next` panics, as a bug deep in a worker's loop would.
struct PanicsOnFirstClaim {
    inner: MemoryStore,
    panicked: AtomicBool,
}

impl Store for PanicsOnFirstClaim {
    fn claim_next(&self, claim: &mut ClaimFn<'_>) -> Result<Option<SfId>, StoreError> {
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("the first claim panics");
        }
        self.inner.claim_next(claim)
    }
    delegate_store!(inner => user, load, commit, claimable_operations, expired_operations,
        cart, carts_after, cart_items, cart_item, validation_output, session, sessions_of, operation,
        operations_of, order, validation_outputs, history, events_after, last_event, webhook_cursor, advance_webhook, deliveries, begin_keyed, keep_answer, release_key,
        operation_counts, web_stores, owner_of);
}

/// Waits (within [`BOUND`]) until the operation is no longer New or Running.
fn wait_until_finished(store: &dyn Store, op: &SfId) -> OperationStatus {
    let deadline = Instant::now() + BOUND;
    loop {
        let status = store.operation(op).unwrap().unwrap().status;
        if !status.is_active() {
            return status;
        }
        assert!(Instant::now() < deadline, "operation {op} never finished");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_worker_thread_that_panics_is_restarted_counted_and_runs_later_operations() {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let data = sample::dataset();
    let store = Arc::new(PanicsOnFirstClaim {
        inner: MemoryStore::from_dataset(data.clone()).unwrap(),
        panicked: AtomicBool::new(false),
    });
    let engine = Engine::new(store.clone())
        .with_ids(Arc::new(SequentialIds::starting_at(1)))
        .with_integrations(sample::integrations(&data));
    // Waiting before the pool starts: the first claim of its only thread panics.
    let first = support::queue::start_inventory_check(&engine, SampleCart::InStock.id());
    let pool = engine.start_workers(1);
    assert_eq!(
        wait_until_finished(store.as_ref(), &first),
        OperationStatus::Complete
    );
    assert!(store.panicked.load(Ordering::SeqCst));
    // And after the restart, a later operation runs too.
    let later = support::queue::start_inventory_check(&engine, SampleCart::Reorder.id());
    assert_eq!(
        wait_until_finished(store.as_ref(), &later),
        OperationStatus::Complete
    );
    assert_eq!(pool.restarts(), 1);
    pool.stop();
    let exported = metrics.render();
    assert!(
        exported
            .lines()
            .any(|line| line == "cartflow_worker_restarts_total 1"),
        "{exported}"
    );
}
