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
    // Every later migration ran too (schema 6 adds the webhooks' tables).
    assert_eq!(version, 6);
    let table: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'history'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!table.contains("AUTOINCREMENT"), "{table}");
}
