//! Webhook delivery against a receiver written here (a `TcpListener` and a small HTTP/1.1
//! reader): every event reaches a receiver that failed at first, once and in order, each
//! signature checks out, filters hold back what a hook does not want, and a `cartflow
//! deliver` process killed mid-batch loses nothing once restarted. Assertions are about what
//! arrived and what the store recorded, never about timing: the deadlines only bound a hang.

#![cfg(all(unix, feature = "http"))]

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cartflow::events::{DeliveryOutcome, EventPosition, PublishedEvent};
use cartflow::flow::{self, Drive, Waiting};
use cartflow::machine::Machine;
use cartflow::sample::{self, SampleCart};
use cartflow::store::{DataSet, Durability, SqliteStore};
use cartflow::webhooks::{
    DeliveryOptions, EVENT_ID_HEADER, Step, WebhookConfig, WebhookDeliverer, Webhooks,
};
use cartflow::{Engine, Store};
use hmac::{KeyInit, Mac};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cartflow");

/// How long anything may take before the test gives up (a hang, not a measurement).
const DEADLINE: Duration = Duration::from_secs(60);

const SECRET: &str = "a-webhook-secret";

/// One request the receiver read, and the status it answered (`None`: never answered).
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: String,
    answered: Option<u16>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map_or("", String::as_str)
    }

    fn event_id(&self) -> EventPosition {
        self.header(EVENT_ID_HEADER).parse().unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// What the receiver does with the next requests.
#[derive(Default)]
struct Behaviour {
    /// The status answered.
    status: AtomicU16,
    /// Hold the request numbered this (1 for the first), unanswered, and say so on `held`.
    hold: Mutex<Option<(usize, mpsc::Sender<()>)>>,
    /// Set to let a held request go.
    release: AtomicBool,
}

/// An HTTP endpoint on a loopback port that records every request.
struct Receiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Behaviour>,
}

impl Receiver {
    /// A receiver on a free port answering `status`.
    fn start(status: u16) -> Receiver {
        Receiver::on(TcpListener::bind("127.0.0.1:0").unwrap(), status)
    }

    fn on(listener: TcpListener, status: u16) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Behaviour::default());
        behaviour.status.store(status, Ordering::SeqCst);
        let (kept, shared) = (Arc::clone(&requests), Arc::clone(&behaviour));
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (kept, shared) = (Arc::clone(&kept), Arc::clone(&shared));
                thread::spawn(move || serve(stream, &kept, &shared));
            }
        });
        Receiver {
            addr,
            requests,
            behaviour,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn answer(&self, status: u16) {
        self.behaviour.status.store(status, Ordering::SeqCst);
    }

    fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the requests read so far.
    fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) {
        let started = Instant::now();
        while !done(&self.requests()) {
            assert!(
                started.elapsed() < DEADLINE,
                "no {what} within {DEADLINE:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Reads one request from `stream`, records it and answers it (one request a connection).
fn serve(stream: TcpStream, kept: &Mutex<Vec<Received>>, behaviour: &Behaviour) {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let Some(mut received) = read_request(&stream) else {
        return;
    };
    let number = {
        let mut requests = kept.lock().unwrap();
        requests.push(received.clone());
        requests.len()
    };
    let held = behaviour
        .hold
        .lock()
        .unwrap()
        .take_if(|(n, _)| *n == number);
    if let Some((_, held)) = held {
        let _ = held.send(());
        while !behaviour.release.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(5));
        }
        return;
    }
    let status = behaviour.status.load(Ordering::SeqCst);
    received.answered = Some(status);
    kept.lock().unwrap()[number - 1] = received;
    let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    let mut stream = stream;
    let _ = stream.write_all(answer.as_bytes());
}

/// The request line, headers (names lower-cased) and `Content-Length` bytes of body.
fn read_request(stream: &TcpStream) -> Option<Received> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?, parts.next()?.to_owned());
    assert_eq!(method, "POST");
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        path,
        headers,
        body: String::from_utf8(body).ok()?,
        answered: None,
    })
}

/// Checks the request's signature as a receiver would: HMAC-SHA256 of `timestamp.body`.
fn assert_signed(request: &Received, secret: &str) {
    let timestamp = request.header("X-Cartflow-Timestamp");
    assert!(timestamp.parse::<i64>().is_ok(), "timestamp {timestamp:?}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{}", request.body).as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        request.header("X-Cartflow-Signature"),
        format!("sha256={expected}")
    );
}

/// The body a hook sends for `event` of a cart in `store`.
fn expected_body(hook: &str, event: &PublishedEvent, store: &dyn Store) -> Value {
    let mut value = serde_json::to_value(event).unwrap();
    let web_store = store
        .cart(&event.entry.cart_id)
        .unwrap()
        .map(|c| c.web_store_id.to_string());
    let fields = value.as_object_mut().unwrap();
    fields.insert("Hook".into(), Value::from(hook));
    fields.insert("StoreId".into(), Value::from(web_store));
    value
}

fn hook(name: &str, url: String) -> WebhookConfig {
    WebhookConfig {
        name: name.into(),
        url,
        secret: SECRET.into(),
        events: Vec::new(),
        machines: Vec::new(),
        store: None,
        timeout_ms: 10_000,
    }
}

/// Quick retries, so that a test does not sit out a long backoff.
fn quick() -> DeliveryOptions {
    DeliveryOptions {
        max_backoff: Duration::from_millis(100),
        poll: Duration::from_millis(10),
        batch: 7,
    }
}

fn engine(store: &Arc<dyn Store>, data: &DataSet) -> Engine {
    Engine::new(Arc::clone(store)).with_integrations(sample::integrations(data))
}

/// Drives the in-stock cart's checkout to its end.
fn complete_checkout(engine: &Engine) {
    let buyer = sample::buyer_id().to_string();
    let input = sample::buyer_input();
    let cart = SampleCart::InStock.id();
    let drive = flow::drive(engine, &buyer, &cart, &input, Waiting::RunInline).unwrap();
    assert!(matches!(drive, Drive::Complete { .. }), "{drive:?}");
}

/// Drives the in-stock cart's checkout up to the payment screen, whose input is not given.
fn start_checkout(engine: &Engine) {
    let buyer = sample::buyer_id().to_string();
    let input = flow::BuyerInput {
        payment_token: None,
        ..sample::buyer_input()
    };
    let cart = SampleCart::InStock.id();
    let drive = flow::drive(engine, &buyer, &cart, &input, Waiting::RunInline).unwrap();
    assert!(matches!(drive, Drive::NeedsInput { .. }), "{drive:?}");
}

/// How many moves the in-stock cart's history holds.
fn history_len(store: &dyn Store) -> usize {
    store.history(&SampleCart::InStock.id()).unwrap().len()
}

/// The events after `after`, once the log shows the `count` moves committed since (on
/// PostgreSQL a transaction's events show once every older transaction has ended).
fn events_after(store: &dyn Store, after: EventPosition, count: usize) -> Vec<PublishedEvent> {
    let started = Instant::now();
    loop {
        let events = store.events_after(Some(&after), 1_000).unwrap();
        if events.len() >= count {
            return events;
        }
        assert!(started.elapsed() < DEADLINE, "{count} events never showed");
        thread::sleep(Duration::from_millis(10));
    }
}

/// How the endpoint is unavailable during the first part of the checkout.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// It answers 503.
    Unavailable,
    /// Nothing listens on its port.
    NotListening,
}

/// Starts the endpoint as `outage` has it; the listener to open later for `NotListening`.
fn down_endpoint(outage: Outage) -> (Option<Receiver>, SocketAddr) {
    match outage {
        Outage::Unavailable => {
            let receiver = Receiver::start(503);
            let addr = receiver.addr;
            (Some(receiver), addr)
        }
        Outage::NotListening => {
            let addr = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            (None, addr)
        }
    }
}

/// The endpoint is down for the first part of a checkout and up afterwards: it receives
/// every event once, in order, signed, and the log shows the failures then the deliveries.
fn a_failing_endpoint_gets_every_event_once_in_order(open: support::stores::Open, outage: Outage) {
    let data = sample::dataset();
    let (store, _guard) = open(data.clone());
    let engine = engine(&store, &data);
    let (receiver, addr) = down_endpoint(outage);
    let config = hook("crm", format!("http://{addr}/events"));
    let start = WebhookDeliverer::new(Arc::clone(&store), config.clone(), quick())
        .start()
        .unwrap();
    let before = history_len(store.as_ref());
    let hooks = Webhooks::new(vec![config]).unwrap();
    let handle = WebhookDeliverer::spawn(Arc::clone(&store), &hooks, quick()).unwrap();

    start_checkout(&engine);
    let failures = |store: &dyn Store| store.deliveries("crm", 100).unwrap().len();
    let started = Instant::now();
    while failures(store.as_ref()) < 3 {
        assert!(
            started.elapsed() < DEADLINE,
            "no retries within {DEADLINE:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let receiver = match receiver {
        Some(receiver) => {
            receiver.answer(200);
            receiver
        }
        None => Receiver::on(TcpListener::bind(addr).unwrap(), 200),
    };
    complete_checkout(&engine);

    let moves = history_len(store.as_ref()) - before;
    let expected = events_after(store.as_ref(), start, moves);
    let last = expected.last().unwrap().position;
    receiver.wait_for("delivery of every event", |requests| {
        requests
            .iter()
            .any(|r| r.answered == Some(200) && r.event_id() == last)
    });
    handle.stop();

    let requests = receiver.requests();
    for request in &requests {
        assert_signed(request, SECRET);
        assert_eq!(request.path, "/events");
        assert_eq!(request.header("Content-Type"), "application/json");
    }
    let delivered: Vec<&Received> = requests
        .iter()
        .filter(|r| r.answered == Some(200))
        .collect();
    assert_eq!(delivered.len(), expected.len(), "each event once");
    for (request, event) in delivered.iter().zip(&expected) {
        assert_eq!(request.event_id(), event.position);
        assert_eq!(request.json(), expected_body("crm", event, store.as_ref()));
    }
    assert_failures_then_deliveries(store.as_ref(), &expected, outage);
    assert_eq!(store.webhook_cursor("crm").unwrap(), Some(last));
}

/// The delivery log, oldest first: failed attempts 1, 2, ... at the first event, then one
/// delivery of each event in order, the first at the attempt after the last failure.
fn assert_failures_then_deliveries(store: &dyn Store, expected: &[PublishedEvent], outage: Outage) {
    let mut log = store.deliveries("crm", 10_000).unwrap();
    log.reverse();
    let failed = log.iter().take_while(|d| !d.delivered()).count();
    assert!(failed >= 3, "{log:#?}");
    for (n, attempt) in (1..).zip(&log[..failed]) {
        assert_eq!(attempt.position, expected[0].position);
        assert_eq!(attempt.attempt, n);
        let DeliveryOutcome::Failed { status, reason } = &attempt.outcome else {
            unreachable!()
        };
        match outage {
            Outage::Unavailable => assert_eq!(*status, Some(503), "{reason}"),
            Outage::NotListening => assert_eq!(*status, None, "{reason}"),
        }
    }
    let deliveries = &log[failed..];
    assert!(deliveries.iter().all(|d| d.delivered()), "{deliveries:#?}");
    let positions: Vec<EventPosition> = deliveries.iter().map(|d| d.position).collect();
    let wanted: Vec<EventPosition> = expected.iter().map(|e| e.position).collect();
    assert_eq!(positions, wanted);
    assert_eq!(deliveries[0].attempt, u32::try_from(failed).unwrap() + 1);
    assert!(deliveries[1..].iter().all(|d| d.attempt == 1));
}

#[test]
fn an_endpoint_that_answers_503_at_first_gets_every_event_once_in_order_on_every_store() {
    for (name, open) in support::stores::all() {
        eprintln!("store: {name}");
        a_failing_endpoint_gets_every_event_once_in_order(open, Outage::Unavailable);
    }
}

#[test]
fn an_endpoint_that_is_not_listening_at_first_gets_every_event_once_in_order() {
    for (name, open) in [
        ("memory", support::stores::memory as support::stores::Open),
        ("sqlite", support::stores::sqlite),
    ] {
        eprintln!("store: {name}");
        a_failing_endpoint_gets_every_event_once_in_order(open, Outage::NotListening);
    }
}

/// Steps `deliverer` until it is idle.
fn drain(deliverer: &mut WebhookDeliverer) {
    for _ in 0..10_000 {
        match deliverer.step().unwrap() {
            Step::Idle => return,
            Step::Failed(delivery) => panic!("{delivery:?}"),
            Step::Skipped(_) | Step::Delivered(_) => {}
        }
    }
    panic!("the deliverer never caught up");
}

#[test]
fn filtered_out_events_are_not_sent_and_the_cursor_moves_past_them() {
    for (name, open) in support::stores::all() {
        eprintln!("store: {name}");
        let data = sample::dataset();
        let (store, _guard) = open(data.clone());
        let engine = engine(&store, &data);
        let receiver = Receiver::start(200);
        let sessions = WebhookConfig {
            machines: vec![Machine::Session],
            ..hook("sessions", receiver.url("/sessions"))
        };
        let inventory = WebhookConfig {
            events: vec!["checkCartInventoryAction".into()],
            store: Some(sample::store_id()),
            ..hook("inventory", receiver.url("/inventory"))
        };
        let elsewhere = WebhookConfig {
            store: Some(sample::other_store_id()),
            ..hook("elsewhere", receiver.url("/elsewhere"))
        };
        let mut deliverers: Vec<WebhookDeliverer> = [sessions, inventory, elsewhere]
            .into_iter()
            .map(|hook| WebhookDeliverer::new(Arc::clone(&store), hook, quick()))
            .collect();
        let start = deliverers[0].start().unwrap();
        for deliverer in &mut deliverers[1..] {
            assert_eq!(deliverer.start().unwrap(), start);
        }
        let before = history_len(store.as_ref());
        complete_checkout(&engine);
        let moves = history_len(store.as_ref()) - before;
        let events = events_after(store.as_ref(), start, moves);
        for deliverer in &mut deliverers {
            drain(deliverer);
        }

        let last = events.last().unwrap().position;
        let sent_to = |path: &str| -> Vec<EventPosition> {
            let requests = receiver.requests();
            requests
                .iter()
                .filter(|r| r.path == path)
                .map(Received::event_id)
                .collect()
        };
        let wanted = |keep: &dyn Fn(&PublishedEvent) -> bool| -> Vec<EventPosition> {
            events
                .iter()
                .filter(|e| keep(e))
                .map(|e| e.position)
                .collect()
        };
        let session_events = wanted(&|e| e.entry.machine == Machine::Session);
        let inventory_events = wanted(&|e| e.entry.event.to_string() == "checkCartInventoryAction");
        assert!(!session_events.is_empty() && session_events.len() < events.len());
        assert!(!inventory_events.is_empty());
        assert_eq!(sent_to("/sessions"), session_events);
        assert_eq!(sent_to("/inventory"), inventory_events);
        assert_eq!(sent_to("/elsewhere"), Vec::<EventPosition>::new());
        for deliverer in &deliverers {
            let name = &deliverer.hook().name;
            assert_eq!(deliverer.cursor(), Some(last), "{name}");
            assert_eq!(store.webhook_cursor(name).unwrap(), Some(last), "{name}");
        }
        assert!(store.deliveries("elsewhere", 10).unwrap().is_empty());
    }
}

#[test]
fn a_new_hook_starts_after_the_last_event_and_an_empty_log_from_its_beginning() {
    let data = sample::dataset();
    let (store, _guard) = support::stores::memory(data.clone());
    let receiver = Receiver::start(200);
    // An empty log: the hook starts before its first event.
    let mut early = WebhookDeliverer::new(
        Arc::clone(&store),
        hook("early", receiver.url("/e")),
        quick(),
    );
    assert_eq!(early.start().unwrap(), EventPosition::default());
    complete_checkout(&engine(&store, &data));
    let mut late = WebhookDeliverer::new(
        Arc::clone(&store),
        hook("late", receiver.url("/l")),
        quick(),
    );
    assert_eq!(late.start().unwrap(), store.last_event().unwrap().unwrap());
    drain(&mut late);
    drain(&mut early);
    let requests = receiver.requests();
    assert!(requests.iter().all(|r| r.path == "/e"));
    let all = events_after(
        store.as_ref(),
        EventPosition::default(),
        history_len(store.as_ref()),
    );
    assert_eq!(requests.len(), all.len());
}

/// A SQLite data directory holding the sample data, as `cartflow deliver --data` reads it.
fn sqlite_directory(dir: &Path) -> Arc<dyn Store> {
    let store = SqliteStore::open(dir.join("cartflow.db"), Durability::Normal).unwrap();
    store.import(&sample::dataset()).unwrap();
    Arc::new(store)
}

fn webhooks_file(dir: &Path, url: &str) -> std::path::PathBuf {
    let file = dir.join("webhooks.json");
    let json = serde_json::json!({"webhooks": [{"name": "crm", "url": url, "secret": SECRET}]});
    std::fs::write(&file, json.to_string()).unwrap();
    file
}

fn deliver_process(dir: &Path, file: &Path, run: u32) -> Child {
    let stderr = std::fs::File::create(dir.join(format!("deliver-{run}.log"))).unwrap();
    Command::new(BIN)
        .arg("deliver")
        .arg("--data")
        .arg(dir)
        .arg("--webhooks")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// A SQLite data directory in `dir` with a webhooks file for `receiver`, the hook's start
/// recorded before a whole checkout (so the checkout's events are the hook's): the store,
/// the file, and the positions of the checkout's events.
fn checkout_for_a_hook(
    dir: &Path,
    receiver: &Receiver,
) -> (Arc<dyn Store>, std::path::PathBuf, Vec<EventPosition>) {
    let store = sqlite_directory(dir);
    let file = webhooks_file(dir, &receiver.url("/hook"));
    let hooks = Webhooks::load(&file).unwrap();
    let start = WebhookDeliverer::new(Arc::clone(&store), hooks.hooks()[0].clone(), quick())
        .start()
        .unwrap();
    let before = history_len(store.as_ref());
    complete_checkout(&engine(&store, &sample::dataset()));
    let moves = history_len(store.as_ref()) - before;
    let expected = events_after(store.as_ref(), start, moves)
        .iter()
        .map(|e| e.position)
        .collect();
    (store, file, expected)
}

#[test]
fn a_sigkilled_deliver_process_loses_no_event_and_its_restart_sends_the_rest_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let receiver = Receiver::start(200);
    let (store, file, expected) = checkout_for_a_hook(dir, &receiver);
    assert!(expected.len() > 10, "{expected:?}");

    // The fifth request is held unanswered while the process is killed.
    let (held, on_hold) = mpsc::channel();
    *receiver.behaviour.hold.lock().unwrap() = Some((5, held));
    let mut first = deliver_process(dir, &file, 1);
    on_hold.recv_timeout(DEADLINE).expect("the fifth request");
    first.kill().unwrap();
    first.wait().unwrap();
    receiver.behaviour.release.store(true, Ordering::SeqCst);
    let before_restart = receiver.requests().len();
    assert_eq!(before_restart, 5);

    let mut second = deliver_process(dir, &file, 2);
    let last = *expected.last().unwrap();
    receiver.wait_for("the last event", |requests| {
        requests
            .iter()
            .any(|r| r.answered == Some(200) && r.event_id() == last)
    });
    assert!(support::server::sigterm(&second));
    assert!(second.wait().unwrap().success());

    let requests = receiver.requests();
    requests.iter().for_each(|r| assert_signed(r, SECRET));
    let mut seen = Vec::new();
    for request in &requests {
        if !seen.contains(&request.event_id()) {
            seen.push(request.event_id());
        }
    }
    assert_eq!(
        seen, expected,
        "every event, in order, once duplicates are dropped"
    );
    let held_event = requests[4].event_id();
    let copies = requests
        .iter()
        .filter(|r| r.event_id() == held_event)
        .count();
    assert_eq!(
        copies, 2,
        "the unanswered event is sent again after the restart"
    );
    assert_eq!(store.webhook_cursor("crm").unwrap(), Some(last));
    assert_log_command(dir, &expected);
}

/// `cartflow webhooks log` prints one line per attempt, the latest first.
fn assert_log_command(dir: &Path, expected: &[EventPosition]) {
    let output = Command::new(BIN)
        .args([
            "webhooks", "log", "--hook", "crm", "--limit", "1000", "--data",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), expected.len(), "{text}");
    for (fields, position) in lines.iter().zip(expected.iter().rev()) {
        assert_eq!(fields[1], position.to_string(), "{text}");
        assert_eq!(fields[2], "attempt 1");
        assert_eq!(fields[3], "Delivered");
        assert_eq!(fields[4], "HTTP 200");
    }
}

#[test]
fn deliver_refuses_a_bad_webhooks_file_naming_the_hook() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    sqlite_directory(dir);
    let file = dir.join("webhooks.json");
    for (json, expected) in [
        (
            r#"{"webhooks": [{"name": "crm", "url": "ftp://x", "secret": "s"}]}"#,
            "webhook \"crm\": the url",
        ),
        (
            r#"{"webhooks": [{"name": "crm", "url": "http://x", "secret": " "}]}"#,
            "webhook \"crm\" has a blank secret",
        ),
        (
            r#"{"webhooks": [{"name": "crm", "url": "http://x", "secret": "s", "machines": ["Order"]}]}"#,
            "unknown machine \"Order\"",
        ),
        (r#"{"webhooks": []}"#, "names no webhook"),
    ] {
        std::fs::write(&file, json).unwrap();
        let output = Command::new(BIN)
            .arg("deliver")
            .arg("--data")
            .arg(dir)
            .arg("--webhooks")
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
    // `serve` and `worker` check the file before they start anything.
    std::fs::write(
        &file,
        r#"{"webhooks": [{"name": "crm", "url": "http://x", "secret": ""}]}"#,
    )
    .unwrap();
    for command in [
        &["worker", "--exit-when-idle"][..],
        &["serve", "--addr", "127.0.0.1:0"][..],
    ] {
        let output = Command::new(BIN)
            .args(command)
            .arg("--data")
            .arg(dir)
            .arg("--webhooks")
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{command:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("webhook \"crm\" has a blank secret"),
            "{stderr}"
        );
    }
}

#[test]
fn serve_and_worker_deliver_the_hooks_of_their_webhooks_flag() {
    for command in [
        &["serve", "--addr", "127.0.0.1:0", "--workers", "0"][..],
        &["worker"][..],
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let receiver = Receiver::start(200);
        let (_store, file, expected) = checkout_for_a_hook(dir, &receiver);

        let mut child = Command::new(BIN)
            .args(command)
            .arg("--data")
            .arg(dir)
            .arg("--webhooks")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let last = *expected.last().unwrap();
        receiver.wait_for("the last event", |requests| {
            requests
                .iter()
                .any(|r| r.answered == Some(200) && r.event_id() == last)
        });
        assert!(support::server::sigterm(&child));
        assert!(child.wait().unwrap().success(), "{command:?}");
        let sent: Vec<EventPosition> = receiver.requests().iter().map(Received::event_id).collect();
        assert_eq!(sent, expected, "{command:?}");
    }
}
