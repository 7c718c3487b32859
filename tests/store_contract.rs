//! The contract every `Store` keeps, run against each implementation.

use std::sync::Arc;

use cartflow::ids::SequentialIds;
use cartflow::integrations::Integrations;
use cartflow::machine::{Changes, Command};
use cartflow::model::{
    BackgroundOperation, CartCheckoutSession, CartStatus, KeyPrefix, OperationStatus, ProviderKind,
    SessionState, SfId,
};
use cartflow::sample::{self, SampleCart};
use cartflow::store::{Commit, DataSet, LoadKey};
use cartflow::{Engine, MemoryStore, Store, StoreError};
use chrono::{TimeZone, Utc};
use serde_json::json;

type Open = fn(DataSet) -> (Arc<dyn Store>, Option<tempfile::TempDir>);

fn memory(data: DataSet) -> (Arc<dyn Store>, Option<tempfile::TempDir>) {
    (Arc::new(MemoryStore::from_dataset(data).unwrap()), None)
}

fn sqlite(data: DataSet) -> (Arc<dyn Store>, Option<tempfile::TempDir>) {
    use cartflow::store::{Durability, SqliteStore};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("cartflow.db"), Durability::Normal).unwrap();
    store.import(&data).unwrap();
    (Arc::new(store), Some(dir))
}

fn stores() -> Vec<(&'static str, Open)> {
    vec![("memory", memory), ("sqlite", sqlite)]
}

fn id(kind: KeyPrefix, n: u64) -> SfId {
    SfId::from_number(kind, 90_000 + n)
}

fn session(n: u64, cart: SfId, archived: bool) -> CartCheckoutSession {
    CartCheckoutSession {
        id: id(KeyPrefix::CartCheckoutSession, n),
        web_cart_id: cart,
        state: Some(SessionState::Start),
        next_state: None,
        is_processing: false,
        is_error: false,
        is_archived: archived,
        background_operation_id: None,
        order_id: None,
        version: 1,
    }
}

fn operation(
    n: u64,
    cart: SfId,
    session: SfId,
    status: OperationStatus,
    minute: u32,
) -> BackgroundOperation {
    BackgroundOperation {
        id: id(KeyPrefix::BackgroundOperation, n),
        name: "checkCartInventoryAction".into(),
        cart_id: cart,
        checkout_session_id: session,
        provider_kind: ProviderKind::Inventory,
        status,
        error: None,
        submitted_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, minute, 0).unwrap(),
        started_at: None,
        finished_at: None,
        expires_at: None,
        attempt: 0,
        retry_limit: 2,
        timeout_ms: 1_000,
        version: 1,
    }
}

fn commit(changes: Changes) -> Commit {
    Commit {
        changes,
        history: Vec::new(),
    }
}

#[test]
fn a_commit_applies_every_record_or_none() {
    for (name, open) in stores() {
        let (store, _dir) = open(sample::dataset());
        let cart_id = SampleCart::InStock.id();
        let mut cart = store.cart(&cart_id).unwrap().unwrap();
        cart.status = CartStatus::Checkout;
        cart.version += 1;
        let mut stale = session(1, cart_id, false);
        stale.version = 5; // claims to update a version that was never stored
        let result = store.commit(&commit(Changes {
            carts: vec![cart.clone()],
            sessions: vec![stale],
            ..Changes::default()
        }));
        assert!(
            matches!(result, Err(StoreError::Conflict(_))),
            "{name}: {result:?}"
        );
        assert_eq!(
            store.cart(&cart_id).unwrap().unwrap().status,
            CartStatus::Active,
            "{name}"
        );

        store
            .commit(&commit(Changes {
                carts: vec![cart.clone()],
                ..Changes::default()
            }))
            .unwrap();
        // The same version again lost the compare-and-set.
        let again = store.commit(&commit(Changes {
            carts: vec![cart],
            ..Changes::default()
        }));
        assert!(
            matches!(again, Err(StoreError::Conflict(_))),
            "{name}: {again:?}"
        );
    }
}

#[test]
fn the_store_refuses_a_second_active_session_or_operation() {
    for (name, open) in stores() {
        let (store, _dir) = open(sample::dataset());
        let cart = SampleCart::InStock.id();
        let first = session(1, cart, false);
        store
            .commit(&commit(Changes {
                sessions: vec![first.clone()],
                ..Changes::default()
            }))
            .unwrap();
        let second = store.commit(&commit(Changes {
            sessions: vec![session(2, cart, false)],
            ..Changes::default()
        }));
        assert!(
            matches!(second, Err(StoreError::Invariant(_))),
            "{name}: {second:?}"
        );

        // Archiving the first and opening a new one in one commit is fine.
        let mut archived = first.clone();
        archived.is_archived = true;
        archived.version = 2;
        let fresh = session(3, cart, false);
        store
            .commit(&commit(Changes {
                sessions: vec![fresh.clone(), archived],
                ..Changes::default()
            }))
            .unwrap();
        assert_eq!(
            store.load(LoadKey::Cart(cart)).unwrap().session.unwrap().id,
            fresh.id,
            "{name}"
        );
        assert_eq!(store.sessions_of(&cart).unwrap().len(), 2, "{name}");

        store
            .commit(&commit(Changes {
                operations: vec![operation(1, cart, fresh.id, OperationStatus::New, 1)],
                ..Changes::default()
            }))
            .unwrap();
        let twice = store.commit(&commit(Changes {
            operations: vec![operation(2, cart, fresh.id, OperationStatus::Running, 2)],
            ..Changes::default()
        }));
        assert!(
            matches!(twice, Err(StoreError::Invariant(_))),
            "{name}: {twice:?}"
        );
        assert!(
            store
                .load(LoadKey::Cart(cart))
                .unwrap()
                .cart_has_active_operation,
            "{name}"
        );
    }
}

#[test]
fn claimable_operations_are_new_oldest_first_and_never_of_closed_carts() {
    for (name, open) in stores() {
        let mut data = sample::dataset();
        let open_cart = SampleCart::InStock.id();
        let other_cart = SampleCart::ShortStock.id();
        let closed = SampleCart::Closed.id();
        data.sessions = vec![
            session(1, open_cart, false),
            session(2, other_cart, false),
            session(3, closed, false),
        ];
        data.operations = vec![
            operation(1, open_cart, data.sessions[0].id, OperationStatus::New, 30),
            operation(2, other_cart, data.sessions[1].id, OperationStatus::New, 10),
            operation(3, closed, data.sessions[2].id, OperationStatus::New, 5),
            operation(
                4,
                open_cart,
                data.sessions[0].id,
                OperationStatus::Complete,
                1,
            ),
        ];
        let expected = vec![data.operations[1].id, data.operations[0].id];
        let (store, _dir) = open(data);
        assert_eq!(store.claimable_operations(10).unwrap(), expected, "{name}");
        assert_eq!(
            store.claimable_operations(1).unwrap(),
            expected[..1],
            "{name}"
        );
        let snap = store.load(LoadKey::Operation(expected[0])).unwrap();
        assert_eq!(snap.operation.unwrap().id, expected[0], "{name}");
        assert_eq!(snap.cart.unwrap().id, other_cart, "{name}");
    }
}

#[test]
fn a_checkout_runs_the_same_on_every_store() {
    for (name, open) in stores() {
        let data = sample::dataset();
        let integrations = Integrations::with_stock_tables(&data.stock);
        let (store, _dir) = open(data);
        let engine = Engine::new(store)
            .with_ids(Arc::new(SequentialIds::default()))
            .with_integrations(integrations);
        let buyer = sample::buyer_id().to_string();
        let mut last_state = Vec::new();
        for cart in [SampleCart::InStock, SampleCart::ShortStock] {
            let cart_id = cart.id().to_string();
            let r = engine.invoke("checkoutSessionAction", &json!({"cartId": cart_id}), &buyer);
            let session = r.output_values.unwrap()["requestId"]
                .as_str()
                .unwrap()
                .to_owned();
            for (from, to) in [
                ("Start", "Shipping Address"),
                ("Shipping Address", "Inventory"),
            ] {
                engine
                    .execute(
                        &buyer,
                        Command::Advance {
                            session_id: session.clone(),
                            state: to.into(),
                            exp_current_state: Some(from.into()),
                        },
                    )
                    .unwrap();
            }
            let lock = json!({"checkoutSessionId": session, "nextState": "Confirm Price", "expCurrentState": "Inventory"});
            assert!(
                engine
                    .invoke("updateCheckoutSessionStateAction", &lock, &buyer)
                    .is_success,
                "{name}"
            );
            assert!(
                engine
                    .invoke(
                        "checkCartInventoryAction",
                        &json!({"cartId": cart_id}),
                        &buyer
                    )
                    .is_success
            );
            let twice = engine.invoke(
                "checkCartInventoryAction",
                &json!({"cartId": cart_id}),
                &buyer,
            );
            assert_eq!(
                twice.errors.unwrap()[0].status_code,
                "ALREADY_IN_PROCESS",
                "{name}"
            );
            assert_eq!(engine.run_until_idle().unwrap(), 1, "{name}");
            let s = engine
                .store()
                .session(&session.parse().unwrap())
                .unwrap()
                .unwrap();
            last_state.push(s.state);
            let history = engine.store().history(&cart.id()).unwrap();
            assert!(
                history.iter().any(|h| h.to == "Inventory (running)"),
                "{name}: {history:?}"
            );
        }
        assert_eq!(
            last_state,
            [Some(SessionState::ConfirmPrice), Some(SessionState::Error)],
            "{name}"
        );
        assert_eq!(
            engine
                .store()
                .validation_outputs(&SampleCart::ShortStock.id())
                .unwrap()
                .len(),
            2,
            "{name}"
        );
    }
}

mod sqlite_only {
    use super::*;
    use cartflow::store::{Durability, SqliteStore};

    #[test]
    fn a_reopened_database_keeps_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cartflow.db");
        {
            let store = SqliteStore::open(&path, Durability::Full).unwrap();
            store.import(&sample::dataset()).unwrap();
            let engine = Engine::new(Arc::new(store));
            let r = engine.invoke(
                "checkoutSessionAction",
                &json!({"cartId": SampleCart::InStock.id().to_string()}),
                &sample::buyer_id().to_string(),
            );
            assert!(r.is_success);
        }
        let store = SqliteStore::open(&path, Durability::Normal).unwrap();
        assert_eq!(
            store
                .cart(&SampleCart::InStock.id())
                .unwrap()
                .unwrap()
                .status,
            CartStatus::Checkout
        );
        assert_eq!(
            store.sessions_of(&SampleCart::InStock.id()).unwrap().len(),
            1
        );
        assert!(!store.is_empty().unwrap());
        assert_eq!(store.stock().unwrap().len(), sample::dataset().stock.len());
        store.integrity_check().unwrap();
    }

    #[test]
    fn a_database_from_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cartflow.db");
        drop(SqliteStore::open(&path, Durability::Normal).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        drop(conn);
        let err = SqliteStore::open(&path, Durability::Normal).err().unwrap();
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
