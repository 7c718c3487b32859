//! The listener against bad clients: thousands of silent sockets, a client that trickles its
//! headers, one that trickles its body, keep-alive connections left idle, and a server whose
//! every connection is busy. An ordinary client is still answered; the bad connections are
//! closed by the server. Assertions are about outcomes; the deadlines only keep a broken
//! build from hanging.

#![cfg(all(feature = "http", unix))]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cartflow::http::{Server, ServerConfig, Tokens};
use cartflow::{Engine, MemoryStore, sample};

/// How long any wait may take before the test gives up (a hang, not a measurement).
const DEADLINE: Duration = Duration::from_secs(60);
/// The idle connections one client holds.
const IDLE_CONNECTIONS: usize = 2_000;
/// The server's cap in these tests: far below what the idle client opens.
const CAP: usize = 64;
const BUYER: &str = "buyer-token";

/// Raises this process's soft descriptor limit to the hard one; fails loudly when even that
/// is too low for the test, rather than passing without having held the connections.
fn raise_descriptor_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_max >= needed,
        "this test needs {needed} file descriptors but the hard limit (ulimit -Hn) is {}: \
         raise it to run the test",
        limit.rlim_max
    );
}

fn config() -> ServerConfig {
    ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        workers: 0,
        header_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(30),
        max_connections: CAP,
        ..ServerConfig::default()
    }
}

fn start(config: &ServerConfig) -> Server {
    let data = sample::dataset();
    let engine = Engine::new(Arc::new(MemoryStore::from_dataset(data).unwrap()));
    let tokens = Tokens::new().with(BUYER, sample::buyer_id());
    Server::start(engine, tokens, config).unwrap()
}

/// `GET /services/data/` on a fresh connection: the status, or `None` when the connection
/// was closed without an answer.
fn ordinary_get(address: SocketAddr) -> Option<u16> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(DEADLINE))
        .build()
        .new_agent();
    let response = agent
        .get(format!("http://{address}/services/data/"))
        .call()
        .ok()?;
    Some(response.status().as_u16())
}

/// Whether the server has closed this connection: end of file, or a reset. Reads and drops
/// whatever answer arrived first.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Waits until the server has closed `stream`; false when the deadline passed first.
fn wait_closed(stream: &mut TcpStream) -> bool {
    let started = Instant::now();
    while started.elapsed() < DEADLINE {
        if closed_by_server(stream) {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Sends `head` then one byte of `trickle` at a time, for as long as the server keeps the
/// connection; returns what the server answered once it closed it, or `None` when it never
/// did within the deadline.
fn trickle(address: SocketAddr, head: &[u8], trickle: u8) -> Option<String> {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.write_all(head).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut answer = Vec::new();
    let started = Instant::now();
    while started.elapsed() < DEADLINE {
        let mut buffer = [0u8; 4096];
        match stream.read(&mut buffer) {
            Ok(0) => return Some(String::from_utf8_lossy(&answer).into_owned()),
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(String::from_utf8_lossy(&answer).into_owned()),
        }
        // A write to a connection the server closed fails once the reset comes back.
        if stream.write_all(&[trickle]).is_err() {
            return Some(String::from_utf8_lossy(&answer).into_owned());
        }
    }
    None
}

const SLOW_HEADERS: &[u8] = b"GET /services/data/ HTTP/1.1\r\nHost: test\r\nX-Slow: ";

fn slow_body_head() -> Vec<u8> {
    format!(
        "POST /services/data/v64.0/actions/standard/checkoutSessionAction HTTP/1.1\r\n\
         Host: test\r\nAuthorization: Bearer {BUYER}\r\nContent-Length: 100000\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn an_ordinary_client_is_answered_while_another_holds_2000_idle_connections_and_slow_clients_trickle()
 {
    raise_descriptor_limit((IDLE_CONNECTIONS + CAP + 256) as u64);
    let server = start(&config());
    let address = server.local_addr();
    let slow_headers = thread::spawn(move || trickle(address, SLOW_HEADERS, b'a'));
    let slow_body = thread::spawn(move || trickle(address, &slow_body_head(), b' '));

    let mut idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS)
        .map(|n| {
            TcpStream::connect(address)
                .unwrap_or_else(|e| panic!("idle connection {n} could not connect: {e}"))
        })
        .collect();
    assert_eq!(
        ordinary_get(address),
        Some(200),
        "an ordinary client is answered while {IDLE_CONNECTIONS} idle connections are held"
    );

    let headers_answer = slow_headers.join().unwrap();
    assert!(
        headers_answer.is_some(),
        "the server closes a client that trickles its headers"
    );
    let body_answer = slow_body.join().unwrap();
    assert!(
        body_answer.is_some(),
        "the server closes a client that trickles its body"
    );
    let still_open = idle
        .iter_mut()
        .map(wait_closed)
        .filter(|closed| !closed)
        .count();
    assert_eq!(
        still_open, 0,
        "every idle connection is closed by the server"
    );
    assert_eq!(
        ordinary_get(address),
        Some(200),
        "and the server still answers"
    );
    server.shutdown();
}

#[test]
fn a_client_that_trickles_its_headers_is_closed_by_the_header_timeout() {
    // No cap pressure here: only the timeout can close it.
    let server = start(&ServerConfig {
        max_connections: 512,
        ..config()
    });
    let answer = trickle(server.local_addr(), SLOW_HEADERS, b'a');
    assert!(answer.is_some(), "closed by the server");
    assert_eq!(ordinary_get(server.local_addr()), Some(200));
}

#[test]
fn a_client_that_trickles_its_body_gets_408_and_its_connection_closed() {
    let server = start(&ServerConfig {
        max_connections: 512,
        ..config()
    });
    let answer = trickle(server.local_addr(), &slow_body_head(), b' ')
        .expect("the server closes the connection");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-request-id:"),
        "{answer}"
    );
}

/// Hyper's header read timeout also runs between the requests of a keep-alive connection.
#[test]
fn a_keep_alive_connection_left_idle_after_a_request_is_closed() {
    let server = start(&ServerConfig {
        max_connections: 512,
        ..config()
    });
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    stream
        .write_all(b"GET /services/data/ HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buffer = [0u8; 512];
    let n = stream.read(&mut buffer).unwrap();
    let head = String::from_utf8_lossy(&buffer[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("connection: close"));
    assert!(
        wait_closed(&mut stream),
        "the idle keep-alive connection is closed"
    );
}

/// At the cap with every connection in the middle of a request, nothing can be evicted: the
/// newcomer is answered 503 at once, and served again once a connection is free.
#[test]
fn when_every_connection_is_busy_a_newcomer_gets_503() {
    let server = start(&ServerConfig {
        max_connections: 2,
        body_timeout: DEADLINE,
        ..config()
    });
    let address = server.local_addr();
    let mut busy: Vec<TcpStream> = Vec::new();
    // A newcomer may arrive before the server has read a busy one's headers: that one is
    // still idle then and is evicted instead. Top up and retry until the refusal shows.
    let started = Instant::now();
    let refusal = loop {
        assert!(started.elapsed() < DEADLINE, "never refused");
        busy.retain_mut(|stream| !closed_by_server(stream));
        while busy.len() < 2 {
            // A request whose body never comes: its connection is busy.
            let mut stream = TcpStream::connect(address).unwrap();
            stream.write_all(&slow_body_head()).unwrap();
            busy.push(stream);
        }
        thread::sleep(Duration::from_millis(20));
        let mut newcomer = TcpStream::connect(address).unwrap();
        newcomer.set_read_timeout(Some(DEADLINE)).unwrap();
        let _ = newcomer
            .write_all(b"GET /services/data/ HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        let mut answer = String::new();
        let _ = newcomer.read_to_string(&mut answer);
        if answer.starts_with("HTTP/1.1 503") {
            break answer;
        }
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    };
    assert!(refusal.contains("SERVER_UNAVAILABLE"), "{refusal}");
    drop(busy);
    let started = Instant::now();
    while ordinary_get(address) != Some(200) {
        assert!(started.elapsed() < DEADLINE, "never served again");
        thread::sleep(Duration::from_millis(20));
    }
}
