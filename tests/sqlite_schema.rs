//! SQLite schema migrations applied to a database an earlier cartflow wrote.

use std::sync::Arc;

use cartflow::machine::{Action, Event, Machine};
use cartflow::model::SfId;
use cartflow::sample::{self, SampleCart};
use cartflow::store::{Durability, HistoryEntry, SqliteStore};
use cartflow::{Engine, Store};
use chrono::{TimeZone, Utc};
use serde_json::json;

/// The migrations of schema 3, as a cartflow of that schema applied them.
const SCHEMA_3: [&str; 3] = [
    include_str!("../migrations/sqlite/0001_initial.sql"),
    include_str!("../migrations/sqlite/0002_idempotency_keys.sql"),
    include_str!("../migrations/sqlite/0003_record_owners.sql"),
];

fn entry(cart: SfId, to: &str) -> HistoryEntry {
    HistoryEntry {
        at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        actor: Some(sample::buyer_id()),
        cart_id: cart,
        event: Event::Action(Action::CheckoutSession),
        machine: Machine::Session,
        record: cart,
        from: "no session".into(),
        to: to.into(),
    }
}

#[test]
fn schema_4_keeps_the_history_of_a_schema_3_database_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cartflow.db");
    let cart = SampleCart::InStock.id();
    let old = [entry(cart, "first"), entry(cart, "second")];
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for sql in SCHEMA_3 {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        for e in &old {
            conn.execute(
                "INSERT INTO history (cart_id, body) VALUES (?1, ?2)",
                rusqlite::params![cart.as_str(), serde_json::to_string(e).unwrap()],
            )
            .unwrap();
        }
    }
    let store = SqliteStore::open(&path, Durability::Normal).unwrap();
    store.import(&sample::dataset()).unwrap();
    assert_eq!(store.history(&cart).unwrap(), old);

    let engine = Engine::new(Arc::new(store));
    let started = engine.invoke(
        "checkoutSessionAction",
        &json!({"cartId": cart.to_string()}),
        &sample::buyer_id().to_string(),
    );
    assert!(started.is_success, "{started:?}");
    let history = engine.store().history(&cart).unwrap();
    assert_eq!(history[..2], old);
    assert!(history.len() > 2, "{history:?}");

    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 5);
    let table: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'history'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!table.contains("AUTOINCREMENT"), "{table}");
}

/// The queries each command, claim and sweep runs, with the plan SQLite chose for each: every
/// one finds its rows through an index (a `SEARCH`), none reads a whole table (a `SCAN`) or
/// sorts its rows (a temporary B-tree).
const HOT_QUERIES: [&str; 12] = [
    "SELECT body FROM carts WHERE id = $1",
    "SELECT body FROM cart_items WHERE cart_id = $1 ORDER BY id",
    "SELECT body FROM sessions WHERE cart_id = $1 AND NOT is_archived",
    "SELECT body FROM operations WHERE id = $1",
    "SELECT 1 FROM operations WHERE cart_id = $1 AND status IN ('New', 'Running') LIMIT 1",
    "SELECT 1 FROM validation_outputs WHERE cart_id = $1
       AND body->>'Level' = 'Error' AND NOT (body->'IsDismissed' = 'true') LIMIT 1",
    "SELECT body FROM history WHERE cart_id = $1 ORDER BY seq",
    "SELECT o.id FROM operations o JOIN carts c ON c.id = o.cart_id
     WHERE o.status = 'New' AND c.status != ?1 ORDER BY o.submitted_at, o.id LIMIT ?2",
    "SELECT id FROM operations WHERE status = 'Running' AND expires_at <= ?1
     ORDER BY expires_at, id LIMIT ?2",
    "UPDATE sessions SET version = $1, is_archived = $2, body = $3 WHERE id = $4 AND version = $5",
    "DELETE FROM record_owners WHERE owner_id = $1",
    "SELECT owner_id FROM record_owners WHERE id = ?1",
];

#[test]
fn the_hot_queries_find_their_rows_through_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cartflow.db");
    let store = SqliteStore::open(&path, Durability::Normal).unwrap();
    store.import(&sample::dataset()).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    for sql in HOT_QUERIES {
        let mut plan = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let nulls = vec![rusqlite::types::Null; plan.parameter_count()];
        let steps: Vec<String> = plan
            .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        println!("{sql}\n  -> {steps:?}");
        if sql.contains("NOT is_archived") {
            // The partial index of active sessions holds at most the one row asked for.
            assert!(
                steps
                    .iter()
                    .any(|s| s.contains("one_active_session_per_cart")),
                "{sql}: {steps:?}"
            );
        }
        // The queue's partial indexes hold only New (or Running) operations: reading one in
        // order is reading the queue, not the table.
        let queue = [
            "USING INDEX operations_new",
            "USING INDEX operations_running",
        ];
        let whole_table = |s: &String| {
            s.starts_with("SCAN ")
                && s != "SCAN CONSTANT ROW"
                && !queue.iter().any(|q| s.ends_with(q))
        };
        assert!(
            !steps.iter().any(whole_table),
            "{sql} reads a whole table: {steps:?}"
        );
        assert!(
            !steps.iter().any(|s| s.contains("TEMP B-TREE")),
            "{sql} sorts its rows: {steps:?}"
        );
    }
}
