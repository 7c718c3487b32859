//! The inspector: its JSON views against what the store holds, its permission, and the page
//! itself driven by headless Chromium (`--dump-dom` and `--screenshot`).
//!
//! The browser test needs Chromium (`/usr/bin/chromium`, Debian's `chromium` package, or
//! `CARTFLOW_CHROMIUM`). Without it the test says so and passes, unless
//! `CARTFLOW_REQUIRE_CHROMIUM=1` (as `.ci/run` sets), when it fails.
//! `CARTFLOW_INSPECTOR_SCREENSHOT=<path>` keeps the screenshot it takes (`docs/inspector.png`
//! is made so).

#![cfg(feature = "http")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cartflow::Engine;
use cartflow::flow::{self, BuyerInput, Drive, Waiting};
use cartflow::http::{Server, ServerConfig, Tokens};
use cartflow::model::{KeyPrefix, Permission, SfId, User};
use cartflow::sample::{self, SampleCart};
use cartflow::store::{Durability, SqliteStore};
use serde_json::Value;
use tempfile::TempDir;

#[path = "support/mod.rs"]
mod support;

const INSPECTOR: &str = "inspector-token";
const BUYER: &str = "buyer-token";
const COMPLETED: usize = 3;
/// The standard template's terminal State.
const TERMINAL: &str = "Complete";

/// A server over a SQLite store where three checkouts completed, one failed its inventory
/// check and one waits at Shipping Address; an engine on the same store to read it.
struct World {
    server: Option<Server>,
    engine: Engine,
    base: String,
    completed: Vec<SfId>,
    failed: SfId,
    _dir: TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

fn inspector_id() -> SfId {
    SfId::from_number(KeyPrefix::User, 90)
}

fn world() -> World {
    let mut data = sample::dataset();
    data.users.push(User {
        id: inspector_id(),
        name: "Ines Inspector".into(),
        account_id: None,
        permissions: [Permission::CheckoutInspector].into(),
    });
    let copies = sample::add_in_stock_copies(&mut data, 500, COMPLETED as u64);
    let integrations = sample::integrations(&data);
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("cartflow.db"), Durability::Normal).unwrap();
    store.import(&data).unwrap();
    let engine = Engine::new(Arc::new(store)).with_integrations(integrations);
    let buyer = sample::buyer_id().to_string();
    let input = sample::buyer_input();
    let mut completed = Vec::new();
    for cart in &copies {
        match flow::drive(&engine, &buyer, cart, &input, Waiting::RunInline).unwrap() {
            Drive::Complete { session_id, .. } => completed.push(session_id),
            other => panic!("the in-stock copy did not complete: {other:?}"),
        }
    }
    let failed = match flow::drive(
        &engine,
        &buyer,
        &SampleCart::ShortStock.id(),
        &input,
        Waiting::RunInline,
    )
    .unwrap()
    {
        Drive::Failed { session_id, .. } => session_id,
        other => panic!("the short cart did not fail: {other:?}"),
    };
    let no_address = BuyerInput::default();
    let waiting = flow::drive(
        &engine,
        &buyer,
        &SampleCart::InStock.id(),
        &no_address,
        Waiting::RunInline,
    )
    .unwrap();
    assert!(
        matches!(waiting, Drive::NeedsInput { .. }),
        "the in-stock cart should wait for an address: {waiting:?}"
    );
    let tokens = Tokens::new()
        .with(INSPECTOR, inspector_id())
        .with(BUYER, sample::buyer_id());
    let config = ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        workers: 0,
        ..ServerConfig::default()
    };
    let server = Server::start(engine.clone(), tokens, &config).unwrap();
    World {
        base: format!("http://{}", server.local_addr()),
        server: Some(server),
        engine,
        completed,
        failed,
        _dir: dir,
    }
}

impl World {
    fn get(&self, token: Option<&str>, path: &str) -> (u16, Value) {
        let agent = support::server::agent(Duration::from_secs(60));
        let mut request = agent.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let response = request.call().expect("the server answers");
        let status = response.status().as_u16();
        let text = response.into_body().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn view(&self, path: &str) -> Value {
        let (status, body) = self.get(Some(INSPECTOR), path);
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// The counts, read straight from the store: sessions by State or Archived, carts by
    /// status, operations by status.
    fn stored_counts(&self) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        let store = self.engine.store();
        let mut sessions = BTreeMap::new();
        let mut operations = BTreeMap::new();
        for cart in store.carts_after(None, 10_000).unwrap() {
            for s in store.sessions_of(&cart.id).unwrap() {
                let key = match (s.is_archived, s.state) {
                    (true, Some(state)) if Some(state) == self.engine.table().terminal() => {
                        state.as_str().to_owned()
                    }
                    (true, _) => "Archived".to_owned(),
                    (false, state) => {
                        state.map_or_else(|| "(empty State)".to_owned(), |s| s.as_str().to_owned())
                    }
                };
                *sessions.entry(key).or_default() += 1;
            }
            for op in store.operations_of(&cart.id).unwrap() {
                *operations.entry(op.status.as_str().to_owned()).or_default() += 1;
            }
        }
        (sessions, operations)
    }
}

/// The count the counts view gives the node drawn with `label` in cluster `key`.
fn count_of(table: &Value, counts: &Value, key: &str, label: &str) -> u64 {
    let cluster = table["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == key)
        .unwrap_or_else(|| panic!("no cluster {key}"));
    let node = cluster["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["label"] == label)
        .unwrap_or_else(|| panic!("no node {label} in {key}"));
    counts["counts"][node["id"].as_str().unwrap()]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn the_views_need_a_token_and_the_inspector_permission() {
    let w = world();
    let (status, body) = w.get(None, "/inspector/api/counts");
    assert_eq!(
        (status, body[0]["errorCode"].as_str()),
        (401, Some("INVALID_SESSION_ID"))
    );
    let (status, body) = w.get(Some(BUYER), "/inspector/api/counts");
    assert_eq!(
        (status, body[0]["errorCode"].as_str()),
        (403, Some("INSUFFICIENT_ACCESS"))
    );
    let (status, _) = w.get(Some(BUYER), "/inspector/api/sessions/2z9000000000001");
    assert_eq!(status, 403);
    // The page holds no data and needs no token; its script and styles are its own.
    let agent = support::server::agent(Duration::from_secs(60));
    for (path, kind) in [
        ("/inspector", "text/html"),
        ("/inspector/inspector.js", "text/javascript"),
        ("/inspector/inspector.css", "text/css"),
    ] {
        let response = agent.get(format!("{}{path}", w.base)).call().unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let headers = response.headers();
        let content_type = headers["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("default-src 'none'"), "{policy}");
    }
}

#[test]
fn the_counts_on_the_nodes_match_the_store() {
    let w = world();
    let table = w.view("/inspector/api/table");
    let counts = w.view("/inspector/api/counts");
    let (sessions, operations) = w.stored_counts();
    assert_eq!(sessions[TERMINAL], COMPLETED as u64, "{sessions:?}");
    for (state, n) in &sessions {
        assert_eq!(
            count_of(&table, &counts, "session", state),
            *n,
            "session {state}"
        );
    }
    for (status, n) in &operations {
        assert_eq!(
            count_of(&table, &counts, "operation", status),
            *n,
            "operation {status}"
        );
    }
    assert_eq!(
        count_of(&table, &counts, "cart", "Closed"),
        COMPLETED as u64 + 1
    );
    let carts = w.engine.store().carts_after(None, 10_000).unwrap().len();
    assert_eq!(counts["carts"], carts);
    assert_eq!(counts["truncated"], false);
}

#[test]
fn a_failed_inventory_check_is_among_the_failed_operations() {
    let w = world();
    let failed = w.view("/inspector/api/operations?kind=failed");
    let ops = failed["operations"].as_array().unwrap();
    assert_eq!(ops.len(), 1, "{failed}");
    let op = &ops[0];
    assert_eq!(op["name"], "checkCartInventoryAction");
    assert_eq!(op["sessionId"], w.failed.to_string());
    assert_eq!(op["status"], "Error");
    assert!(op["attempt"].as_u64().unwrap() >= 1);
    let outputs = op["validationOutputs"].as_array().unwrap();
    assert!(!outputs.is_empty(), "the short lines are named: {op}");
    assert!(outputs.iter().all(|o| o["Level"] == "Error"), "{op}");
    // Nothing runs: nothing is stuck, however short the wait.
    let stuck = w.view("/inspector/api/operations?kind=stuck&older_than=0");
    assert_eq!(stuck["matched"], 0, "{stuck}");
    // The failed session is listed by the failed filter, and only it.
    let sessions = w.view("/inspector/api/sessions?failed=true");
    let ids: Vec<&str> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [w.failed.to_string()]);
}

#[test]
fn sessions_filter_by_state_store_and_processing() {
    let w = world();
    let at = |query: &str| w.view(&format!("/inspector/api/sessions?{query}"))["matched"].clone();
    assert_eq!(at("state=Complete"), COMPLETED);
    assert_eq!(at("state=Shipping%20Address"), 1);
    assert_eq!(at(&format!("store={}", sample::store_id())), COMPLETED + 2);
    assert_eq!(at(&format!("store={}", sample::other_store_id())), 0);
    assert_eq!(at("processing_over=0"), 0);
    assert_eq!(at("limit=1"), COMPLETED + 2);
    let one = w.view("/inspector/api/sessions?limit=1");
    assert_eq!(one["sessions"].as_array().unwrap().len(), 1);
    let (status, body) = w.get(Some(INSPECTOR), "/inspector/api/sessions?failed=maybe");
    assert_eq!(status, 400, "{body}");
    let (status, _) = w.get(Some(INSPECTOR), "/inspector/api/sessions/not-an-id");
    assert_eq!(status, 400);
    let (status, _) = w.get(Some(INSPECTOR), "/inspector/api/sessions/2z9000000000999");
    assert_eq!(status, 404);
}

#[test]
fn carts_filter_by_status_and_store_with_their_latest_session() {
    let w = world();
    let all = w.engine.store().carts_after(None, 10_000).unwrap();
    let closed = all.iter().filter(|c| c.status.as_str() == "Closed").count();
    let view = w.view("/inspector/api/carts?status=Closed");
    assert_eq!(view["matched"], closed);
    let rows = view["carts"].as_array().unwrap();
    assert!(rows.iter().all(|c| c["status"] == "Closed"), "{view}");
    let completed: Vec<String> = w.completed.iter().map(SfId::to_string).collect();
    let latest: Vec<&str> = rows
        .iter()
        .filter_map(|c| c["latestSession"]["id"].as_str())
        .collect();
    for id in &completed {
        assert!(
            latest.contains(&id.as_str()),
            "{id} is not a closed cart's latest session"
        );
    }
    assert_eq!(w.view("/inspector/api/carts")["matched"], all.len());
    let other = format!("/inspector/api/carts?store={}", sample::other_store_id());
    let in_other = all
        .iter()
        .filter(|c| c.web_store_id == sample::other_store_id())
        .count();
    assert_eq!(w.view(&other)["matched"], in_other);
    let (status, _) = w.get(Some(INSPECTOR), "/inspector/api/carts?store=nope");
    assert_eq!(status, 400);
}

#[test]
fn a_sessions_timeline_lists_its_moves_in_commit_order() {
    let w = world();
    let id = w.completed[0];
    let view = w.view(&format!("/inspector/api/sessions/{id}"));
    assert_eq!(view["session"]["Id"], id.to_string());
    assert_eq!(view["node"], TERMINAL);
    let stored: Vec<(String, String)> = w
        .engine
        .store()
        .history(&view["cart"]["Id"].as_str().unwrap().parse().unwrap())
        .unwrap()
        .into_iter()
        .filter(|e| e.record == id)
        .map(|e| (e.from, e.to))
        .collect();
    let shown: Vec<(String, String)> = view["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["record"] == id.to_string())
        .map(|m| {
            (
                m["from"].as_str().unwrap().to_owned(),
                m["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(stored.len() > 10, "{stored:?}");
    assert_eq!(shown, stored);
    assert_eq!(shown.first().map(|m| m.0.as_str()), Some("no session"));
    assert_eq!(shown.last().map(|m| m.1.as_str()), Some(TERMINAL));
    let times: Vec<&str> = view["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // The operations it ran, the order it made.
    assert!(view["operations"].as_array().unwrap().len() >= 5);
    assert_eq!(view["order"]["Status"], "Activated");
}

// ---- the page in a browser ----

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CARTFLOW_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CARTFLOW_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
        "CARTFLOW_REQUIRE_CHROMIUM=1 but there is no Chromium at {}",
        path.display()
    );
    eprintln!(
        "no Chromium at {}: the browser test is skipped",
        path.display()
    );
    None
}

/// Runs headless Chromium on `url` with `extra` arguments, in a profile of its own, and lets
/// the page's script run for `budget_ms` of virtual time. Its stdout.
fn run_chromium(chromium: &Path, profile: &Path, url: &str, extra: &[&str]) -> String {
    let output = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,1900",
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("Chromium starts");
    assert!(
        output.status.success(),
        "Chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every `name="value"` attribute of the elements whose opening tag contains `marker`, in
/// document order.
fn attributes<'a>(dom: &'a str, marker: &str, name: &str) -> Vec<&'a str> {
    let key = format!(" {name}=\"");
    dom.split('<')
        .filter(|tag| tag.contains(marker))
        .filter_map(|tag| {
            let start = tag.find(&key)? + key.len();
            let end = tag[start..].find('"')? + start;
            Some(&tag[start..end])
        })
        .collect()
}

/// The `data-count` of every drawn node, by its `data-node`.
fn node_counts(dom: &str) -> BTreeMap<String, u64> {
    dom.split('<')
        .filter(|tag| tag.starts_with("div class=\"node"))
        .filter_map(|tag| {
            let node = attributes(&format!("<{tag}"), "data-node", "data-node")
                .first()?
                .to_string();
            let count = attributes(&format!("<{tag}"), "data-count", "data-count")
                .first()?
                .parse()
                .ok()?;
            Some((node, count))
        })
        .collect()
}

#[test]
fn the_page_in_headless_chromium_shows_counts_failures_and_a_timeline() {
    let Some(chromium) = chromium() else {
        return;
    };
    let w = world();
    let session = w.completed[0];
    let url = format!("{}/inspector#token={INSPECTOR}&session={session}", w.base);
    let profile = tempfile::tempdir().unwrap();
    let dom = run_chromium(&chromium, profile.path(), &url, &["--dump-dom"]);
    if let Some(keep) = std::env::var_os("CARTFLOW_INSPECTOR_DOM") {
        std::fs::write(keep, &dom).unwrap();
    }
    assert!(
        dom.contains("data-state=\"live\""),
        "the page did not connect:\n{dom}"
    );

    // Every drawn node shows the count the store has.
    let counts = w.view("/inspector/api/counts");
    let shown = node_counts(&dom);
    let table = w.view("/inspector/api/table");
    let drawn: usize = table["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["nodes"].as_array().unwrap())
        .filter(|n| n["point"] == false)
        .count();
    assert_eq!(shown.len(), drawn, "every node has a count");
    for (node, n) in &shown {
        let expected = counts["counts"][node.as_str()].as_u64().unwrap_or(0);
        assert_eq!(*n, expected, "node {node}");
    }
    let (sessions, _) = w.stored_counts();
    let completed = attributes(&dom, "data-node=\"session_complete\"", "data-count");
    assert_eq!(completed, [sessions[TERMINAL].to_string()]);

    // The failed inventory check is listed.
    let failed = w.view("/inspector/api/operations?kind=failed");
    let op = failed["operations"][0]["id"].as_str().unwrap();
    let listed = attributes(
        &dom,
        "data-name=\"checkCartInventoryAction\"",
        "data-operation",
    );
    assert_eq!(listed, [op]);

    // The carts table lists every cart (fewer than a page of them).
    let carts = w.view("/inspector/api/carts");
    let listed: Vec<&str> = attributes(&dom, "data-cart=", "data-cart");
    let expected: Vec<&str> = carts["carts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, expected);

    // The session's timeline lists its moves in order.
    let view = w.view(&format!("/inspector/api/sessions/{session}"));
    let expected: Vec<String> = view["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["to"].as_str().unwrap().to_owned())
        .collect();
    let to = attributes(&dom, "data-index=", "data-to");
    assert!(expected.len() > 10);
    assert_eq!(to, expected);

    // A screenshot of the same page.
    let shot = profile.path().join("inspector.png");
    run_chromium(
        &chromium,
        profile.path(),
        &url,
        &[&format!("--screenshot={}", shot.display())],
    );
    let png = std::fs::read(&shot).expect("Chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    if let Some(keep) = std::env::var_os("CARTFLOW_INSPECTOR_SCREENSHOT") {
        std::fs::write(keep, &png).unwrap();
    }
}
