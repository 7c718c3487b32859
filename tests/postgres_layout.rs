//! The README's multi-process layout on PostgreSQL, with the real binary: `cartflow import`
//! seeds an empty database from the example data, `cartflow serve --workers 0` answers HTTP,
//! two `cartflow worker` processes run every background operation, all three given the
//! example `integrations.json` with `--integrations`. An HTTP client drives one checkout to an
//! activated order and a closed cart. Skipped (with a line saying so) when no PostgreSQL can
//! be had. Deadlines only keep a broken build from hanging; nothing asserts on timing.

#![cfg(all(unix, feature = "http"))]

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use cartflow::sample;
use serde_json::{Value, json};

#[path = "support/mod.rs"]
mod support;

const BIN: &str = env!("CARGO_BIN_EXE_cartflow");
const V: &str = "v64.0";
const TOKEN: &str = "bea-token";
/// The example data's buyer, and its fresh cart (Active, no session yet).
const BUYER: &str = "0050000000000G9";
const CART: &str = "0a60000000000GE";
/// How long any one wait may last before the test gives up (a hang, not a measurement).
const BOUND: Duration = Duration::from_secs(90);

fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/data")
        .join(file)
}

/// A `cartflow` process, stopped with SIGTERM when dropped (a failed assertion included).
struct Process {
    child: Option<Child>,
    stderr: mpsc::Receiver<String>,
}

impl Process {
    fn start(args: &[&str]) -> Process {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Process {
            stderr: support::server::stderr_lines(&mut child),
            child: Some(child),
        }
    }

    /// Stderr lines until one contains `marker`; returns them all, that one last.
    fn stderr_until(&self, marker: &str) -> Vec<String> {
        let mut seen = Vec::new();
        match support::server::read_until(&self.stderr, BOUND, &mut seen, |line| {
            line.contains(marker).then_some(())
        }) {
            Ok(()) => seen,
            Err(e) => panic!("no line with {marker:?} ({e}); stderr: {seen:?}"),
        }
    }

    /// Sends SIGTERM and waits: the exit code and everything the process wrote on stdout.
    fn stop(&mut self) -> (Option<i32>, String) {
        let mut child = self.child.take().expect("running");
        assert!(support::server::sigterm(&child));
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        (child.wait().unwrap().code(), stdout)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP client of the server at `base` (`http://host:port/services/data/v64.0`).
struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {TOKEN}");
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("POST", Some(body)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(body.to_string()),
            ("PATCH", Some(body)) => self
                .agent
                .patch(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(body.to_string()),
            _ => unreachable!("{method}"),
        };
        let response = response.expect("the server answers");
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, value)
    }

    fn record(&self, object: &str, id: &str) -> Value {
        let (status, body) = self.send("GET", &format!("/sobjects/{object}/{id}"), None);
        assert_eq!(status, 200, "{object} {id}: {body}");
        body
    }

    /// A successful action call with one input; its only output value.
    fn succeed(&self, action: &str, input: Value) -> String {
        let path = format!("/actions/standard/{action}");
        let (status, body) = self.send("POST", &path, Some(&json!({ "inputs": [input] })));
        assert_eq!(status, 200, "{action}: {body}");
        assert_eq!(body[0]["isSuccess"], true, "{action}: {body}");
        body[0]["outputValues"]
            .as_object()
            .and_then(|values| values.values().next())
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    fn patch(&self, object: &str, id: &str, fields: Value) {
        let (status, body) = self.send("PATCH", &format!("/sobjects/{object}/{id}"), Some(&fields));
        assert_eq!((status, &body), (204, &Value::Null), "{object} {fields}");
    }

    /// Locks the session's step, invokes its action, and waits for a worker to run it.
    fn async_step(&self, session: &str, from: &str, to: &str, action: &str) -> String {
        self.succeed(
            "updateCheckoutSessionStateAction",
            json!({"checkoutSessionId": session, "expCurrentState": from, "nextState": to}),
        );
        let mut input = json!({ "cartId": CART });
        if action == "activateOrderAction" {
            input["orderStatus"] = json!("Activated");
        }
        let operation = self.succeed(action, input);
        let started = Instant::now();
        let settled = loop {
            let record = self.record("CartCheckoutSession", session);
            if record["IsProcessing"] == false {
                break record;
            }
            assert!(
                started.elapsed() < BOUND,
                "{action} still running: {record}"
            );
            thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(settled["State"], to, "{action}: {settled}");
        let record = self.record("BackgroundOperation", &operation);
        assert_eq!(record["Status"], "Complete", "{action}: {record}");
        operation
    }
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn import_serve_without_workers_and_two_worker_processes_take_an_order_on_postgres() {
    let Some(db) = support::postgres() else {
        return;
    };
    let url = db.cli_url();
    let integrations = example("integrations.json");
    let integrations = integrations.to_str().unwrap();
    let seed = example("cartflow.json");
    let imported = run(&["import", "--data", &url, "--file", seed.to_str().unwrap()]);
    assert_eq!(
        imported.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let tmp = tempfile::tempdir().unwrap();
    let tokens = tmp.path().join("tokens.json");
    std::fs::write(&tokens, json!({ TOKEN: BUYER }).to_string()).unwrap();

    let mut serve = Process::start(&[
        "serve",
        "--data",
        &url,
        "--addr",
        "127.0.0.1:0",
        "--workers",
        "0",
        "--tokens",
        tokens.to_str().unwrap(),
        "--integrations",
        integrations,
    ]);
    let started = serve.stderr_until("listening on http://");
    // The example's second store has no payment gateway: it is named, the first is not.
    let warnings: Vec<&String> = started
        .iter()
        .filter(|l| l.contains("no payment provider"))
        .collect();
    assert_eq!(warnings.len(), 1, "{started:?}");
    assert!(warnings[0].contains("0ZE0000000000GAGAY"), "{started:?}");
    let address = started
        .last()
        .and_then(|l| support::server::listening_address(l))
        .unwrap();
    let mut workers: Vec<Process> = (0..2)
        .map(|_| Process::start(&["worker", "--data", &url, "--integrations", integrations]))
        .collect();
    for worker in &workers {
        worker.stderr_until("stop with SIGTERM");
    }

    let client = Client {
        agent: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(BOUND))
            .build()
            .new_agent(),
        base: format!("http://{address}/services/data/{V}"),
    };
    let session = client.succeed(
        "checkoutSessionAction",
        json!({"cartId": CART, "initialState": "Start"}),
    );
    client.patch(
        "CartCheckoutSession",
        &session,
        json!({"State": "Shipping Address"}),
    );
    client.patch("WebCart", CART, json!({ "DeliverTo": sample::denver() }));
    client.patch(
        "CartCheckoutSession",
        &session,
        json!({"State": "Inventory"}),
    );
    let mut operations = BTreeSet::new();
    for (from, to, action) in [
        ("Inventory", "Confirm Price", "checkCartInventoryAction"),
        ("Confirm Price", "Calculate Promotions", "priceCart"),
        (
            "Calculate Promotions",
            "Shipping Cost",
            "calcCartPromotionsAction",
        ),
        ("Shipping Cost", "Delivery Method", "calcCartShipmentAction"),
    ] {
        operations.insert(client.async_step(&session, from, to, action));
    }
    // The shipment step offered the example's rates: the buyer takes the first.
    let offered = client.record("WebCart", CART)["DeliveryOptions"].clone();
    let method = offered[0]["DeliveryMethodId"].clone();
    assert!(method.is_string(), "no delivery option offered: {offered}");
    client.patch("WebCart", CART, json!({ "DeliveryMethodId": method }));
    client.patch("CartCheckoutSession", &session, json!({"State": "Taxes"}));
    operations.insert(client.async_step(
        &session,
        "Taxes",
        "Payment And Billing Address",
        "calcCartTaxesAction",
    ));
    client.patch(
        "WebCart",
        CART,
        json!({ "PaymentToken": sample::GOOD_TOKEN }),
    );
    client.patch(
        "CartCheckoutSession",
        &session,
        json!({"State": "Checkout Summary"}),
    );
    client.patch(
        "CartCheckoutSession",
        &session,
        json!({"State": "Cart To Order"}),
    );
    for (from, to, action) in [
        ("Cart To Order", "Authorize Payment", "cartToOrderAction"),
        ("Authorize Payment", "Activate Order", "authorizePayment"),
        (
            "Activate Order",
            "Order Confirmation",
            "activateOrderAction",
        ),
    ] {
        operations.insert(client.async_step(&session, from, to, action));
    }
    client.patch(
        "CartCheckoutSession",
        &session,
        json!({"State": "Complete"}),
    );

    let done = client.record("CartCheckoutSession", &session);
    assert_eq!(done["State"], "Complete");
    let order = client.record("Order", done["OrderId"].as_str().expect("an order"));
    assert_eq!(order["Status"], "Activated", "{order}");
    assert_eq!(order["DeliveryMethodId"], method);
    assert!(order["PaymentAuthorizationId"].is_string(), "{order}");
    assert_eq!(client.record("WebCart", CART)["Status"], "Closed");

    // Every operation was run by one of the worker processes (the server has none), once.
    let mut reported = Vec::new();
    for worker in &mut workers {
        let (code, stdout) = worker.stop();
        assert_eq!(code, Some(0), "a worker's exit");
        for line in stdout.lines() {
            let report: Value = serde_json::from_str(line).unwrap();
            assert_eq!(report["applied"], true, "{report}");
            assert_eq!(report["status"], "Complete", "{report}");
            reported.push(report["operationId"].as_str().unwrap().to_owned());
        }
    }
    let ran: BTreeSet<String> = reported.iter().cloned().collect();
    assert_eq!(
        ran.len(),
        reported.len(),
        "an operation ran twice: {reported:?}"
    );
    assert_eq!(ran, operations);
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0), "the server's exit");
}
