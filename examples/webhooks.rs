//! Webhooks: a checkout's events, POSTed as they are committed to a receiver in this example.
//!
//! The receiver is a thread answering 200 on a free loopback port; the webhook is read from
//! `examples/webhooks.json` (its URL pointed at the receiver), so only the session's moves
//! are sent. The example runs one checkout on the sample data in a memory store, waits for
//! the deliveries, and prints what arrived: each event's ID, whether its signature checks out,
//! and its body's main fields.
//!
//! Run it with `cargo run --example webhooks`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use cartflow::flow::{self, Drive, Waiting};
use cartflow::integrations::sign;
use cartflow::webhooks::{DeliveryOptions, WebhookDeliverer, Webhooks};
use cartflow::{Engine, MemoryStore, Store, sample};
use serde_json::Value;

/// One request as the receiver read it: its headers (names lower-cased) and body.
struct Request {
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Reads one HTTP/1.1 request (headers, then `Content-Length` bytes of body).
fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut request = Request {
        headers,
        body: String::new(),
    };
    let length: usize = request.header("content-length").parse().ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    request.body = String::from_utf8(body).ok()?;
    Some(request)
}

/// A receiver on a free port: each request it reads is answered 200 and sent on the channel.
fn receiver() -> (String, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/cartflow-events", listener.local_addr().unwrap());
    let (arrived, arrivals) = mpsc::channel();
    thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let Some(request) = read_request(&mut BufReader::new(&stream)) else {
                continue;
            };
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if arrived.send(request).is_err() {
                return;
            }
        }
    });
    (url, arrivals)
}

fn main() {
    let (url, arrivals) = receiver();
    let file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/webhooks.json"
    ))
    .unwrap();
    let mut file: Value = serde_json::from_str(&file).unwrap();
    file["webhooks"][0]["url"] = Value::from(url);
    let hooks = Webhooks::from_json(&file.to_string()).unwrap();
    let hook = hooks.hooks()[0].clone();

    let data = sample::dataset();
    let integrations = sample::integrations(&data);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::from_dataset(data).unwrap());
    let engine = Engine::new(Arc::clone(&store)).with_integrations(integrations);
    // Record the hook's start before the checkout, so that its moves are the hook's.
    let options = DeliveryOptions::default();
    WebhookDeliverer::new(Arc::clone(&store), hook.clone(), options)
        .start()
        .unwrap();
    let delivery = WebhookDeliverer::spawn(Arc::clone(&store), &hooks, options).unwrap();

    let cart = sample::SampleCart::InStock.id();
    let buyer = sample::buyer_id().to_string();
    let drive = flow::drive(
        &engine,
        &buyer,
        &cart,
        &sample::buyer_input(),
        Waiting::RunInline,
    );
    let Ok(Drive::Complete { order_id, .. }) = drive else {
        panic!("the checkout did not complete: {drive:?}");
    };
    println!("checkout complete: order {order_id}");

    let wanted = store
        .history(&cart)
        .unwrap()
        .iter()
        .filter(|entry| hook.machines.contains(&entry.machine))
        .count();
    for _ in 0..wanted {
        let request = arrivals.recv_timeout(Duration::from_secs(30)).unwrap();
        let timestamp = request.header("x-cartflow-timestamp");
        let valid =
            sign(&hook.secret, timestamp, &request.body) == request.header("x-cartflow-signature");
        let body: Value = serde_json::from_str(&request.body).unwrap();
        println!(
            "event {:>5}  signature {}  {:<10} {} -> {}  ({})",
            request.header("x-cartflow-event-id"),
            if valid { "ok " } else { "BAD" },
            body["Machine"].as_str().unwrap_or_default(),
            body["From"].as_str().unwrap_or_default(),
            body["To"].as_str().unwrap_or_default(),
            body["Event"],
        );
    }
    delivery.stop();
    for attempt in store.deliveries(&hook.name, 3).unwrap() {
        println!(
            "logged: {} attempt {} {:?}",
            attempt.position, attempt.attempt, attempt.outcome
        );
    }
}
