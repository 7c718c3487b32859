//! The contract every `Store` keeps, run against each implementation (PostgreSQL too when
//! the harness in `tests/support` can provide a database).

mod support;

use std::sync::Arc;

use cartflow::ids::SequentialIds;
use cartflow::integrations::Integrations;
use cartflow::machine::{Changes, Command};
use cartflow::model::{
    BackgroundOperation, CartCheckoutSession, CartStatus, KeyPrefix, OperationStatus, ProviderKind,
    SessionState, SfId,
};
use cartflow::sample::{self, SampleCart};
use cartflow::store::{Commit, LoadKey};
use cartflow::{Engine, EngineConfig, MemoryStore, Store, StoreError};
use chrono::{TimeZone, Utc};
use serde_json::json;
use support::stores;

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
        created_date: None,
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
        provider_kind: Some(ProviderKind::Inventory),
        status,
        error: None,
        submitted_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, minute, 0).unwrap(),
        started_at: None,
        finished_at: None,
        expires_at: None,
        attempt: 0,
        retry_limit: 2,
        timeout_ms: 1_000,
        order_life_cycle_type: None,
        version: 1,
    }
}

/// Four of the sample carts, each given a session of its own (the data's only sessions).
fn four_carts_with_a_session_each(data: &mut cartflow::store::DataSet) -> [SfId; 4] {
    let carts = [
        SampleCart::InStock,
        SampleCart::ShortStock,
        SampleCart::Reorder,
        SampleCart::InactiveAccount,
    ]
    .map(SampleCart::id);
    data.sessions = (0..4)
        .map(|k| session(k + 1, carts[k as usize], false))
        .collect();
    carts
}

fn commit(changes: Changes) -> Commit {
    Commit {
        changes,
        history: Vec::new(),
    }
}

/// A tax row of `line` numbered `n`.
fn tax(line: &cartflow::model::CartItem, n: u64) -> cartflow::model::CartTax {
    cartflow::model::CartTax {
        id: SfId::from_number(cartflow::model::KeyPrefix::CartTax, n),
        cart_item_id: line.id,
        amount: rust_decimal::Decimal::ONE,
        tax_rate: None,
        name: "Tax".into(),
        tax_type: cartflow::model::TaxType::Estimated,
        tax_calculation_date: Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap(),
    }
}

#[test]
fn the_index_of_held_records_follows_each_commit_of_their_holder() {
    for (name, open) in stores::all() {
        let (store, _dir) = open(sample::dataset());
        let cart_id = SampleCart::InStock.id();
        let mut cart = store.cart(&cart_id).unwrap().unwrap();
        let mut line = store.cart_items(&cart_id).unwrap().remove(0);
        let mut write = |line: &cartflow::model::CartItem, removed: Vec<SfId>| {
            cart.version += 1;
            store
                .commit(&commit(Changes {
                    carts: vec![cart.clone()],
                    items: if removed.is_empty() {
                        vec![line.clone()]
                    } else {
                        Vec::new()
                    },
                    removed_items: removed,
                    ..Changes::default()
                }))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        };
        line.taxes = vec![tax(&line, 1)];
        write(&line, Vec::new());
        let first = tax(&line, 1).id;
        assert_eq!(store.owner_of(&first).unwrap(), Some(line.id), "{name}");
        // Replaced rows leave the index; the new ones enter it.
        line.taxes = vec![tax(&line, 2), tax(&line, 3)];
        write(&line, Vec::new());
        assert_eq!(store.owner_of(&first).unwrap(), None, "{name}");
        for n in [2, 3] {
            assert_eq!(
                store.owner_of(&tax(&line, n).id).unwrap(),
                Some(line.id),
                "{name}"
            );
        }
        // A removed line holds nothing any more.
        write(&line, vec![line.id]);
        assert_eq!(store.owner_of(&tax(&line, 2).id).unwrap(), None, "{name}");
    }
}

#[test]
fn a_commit_applies_every_record_or_none() {
    for (name, open) in stores::all() {
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

/// The checks every store makes before it writes, alike on each: lines only with their cart
/// (whose version guards them), and never a line that another cart holds. Nothing changes.
#[test]
fn lines_without_their_cart_or_of_another_cart_are_refused_alike_on_every_store() {
    for (name, open) in stores::all() {
        let (store, _dir) = open(sample::dataset());
        let (cart_id, other_id) = (SampleCart::InStock.id(), SampleCart::ShortStock.id());
        let lines = store.cart_items(&cart_id).unwrap();
        let others = store.cart_items(&other_id).unwrap();
        let mut cart = store.cart(&cart_id).unwrap().unwrap();
        cart.version += 1;
        let mut taken = others[0].clone();
        taken.cart_id = cart_id;
        let refused = [
            Changes {
                items: vec![lines[0].clone()],
                ..Changes::default()
            },
            Changes {
                removed_items: vec![lines[0].id],
                ..Changes::default()
            },
            Changes {
                carts: vec![cart.clone()],
                items: vec![taken],
                ..Changes::default()
            },
        ];
        for changes in refused {
            let result = store.commit(&commit(changes));
            assert!(
                matches!(result, Err(StoreError::Invariant(_))),
                "{name}: {result:?}"
            );
            assert_eq!(
                store.cart(&cart_id).unwrap().unwrap().version,
                cart.version - 1
            );
            assert_eq!(store.cart_items(&cart_id).unwrap(), lines, "{name}");
            assert_eq!(store.cart_items(&other_id).unwrap(), others, "{name}");
        }
    }
}

/// A second insert of one Id lost a race with the first: on both SQL stores that is a
/// `Conflict` (the caller decides again), whatever the table, and nothing of the commit is
/// written.
#[test]
fn a_second_insert_of_one_id_is_a_conflict_on_the_sql_stores() {
    for (name, open) in stores::all()
        .into_iter()
        .filter(|(name, _)| *name != "memory")
    {
        let (store, _dir) = open(sample::dataset());
        let cart_id = SampleCart::InStock.id();
        let output = cartflow::model::CartValidationOutput {
            id: id(KeyPrefix::CartValidationOutput, 1),
            cart_id,
            background_operation_id: None,
            level: cartflow::model::Level::Error,
            output_type: cartflow::model::OutputType::Inventory,
            message: "out of stock".into(),
            related_entity_id: None,
            is_dismissed: false,
        };
        let adds = |version: u64| {
            let mut cart = store.cart(&cart_id).unwrap().unwrap();
            cart.version = version + 1;
            commit(Changes {
                carts: vec![cart],
                outputs: vec![output.clone()],
                ..Changes::default()
            })
        };
        let at = store.cart(&cart_id).unwrap().unwrap().version;
        store.commit(&adds(at)).unwrap();
        let again = store.commit(&adds(at + 1));
        assert!(
            matches!(again, Err(StoreError::Conflict(_))),
            "{name}: {again:?}"
        );
        assert_eq!(
            store.cart(&cart_id).unwrap().unwrap().version,
            at + 1,
            "{name}"
        );
        assert_eq!(
            store.validation_outputs(&cart_id).unwrap(),
            vec![output],
            "{name}"
        );
    }
}

/// A record's text reaches the store as data, whatever it holds: quotes, dollar quotes,
/// semicolons and SQL come back byte for byte, and nothing else is written.
#[test]
fn any_text_in_a_record_is_written_and_read_back_as_it_was() {
    let texts = [
        "it's",
        "$q$'); DELETE FROM carts; --",
        "$q$$q1$ $1 $$ \\ \" \u{0001} 🛒",
    ];
    for (name, open) in stores::all() {
        let (store, _dir) = open(sample::dataset());
        let cart_id = SampleCart::InStock.id();
        for text in texts {
            let mut cart = store.cart(&cart_id).unwrap().unwrap();
            cart.version += 1;
            cart.payment_token = Some(text.to_owned());
            store
                .commit(&commit(Changes {
                    carts: vec![cart.clone()],
                    ..Changes::default()
                }))
                .unwrap_or_else(|e| panic!("{name}: {text:?}: {e}"));
            assert_eq!(store.cart(&cart_id).unwrap().unwrap(), cart, "{name}");
        }
        assert_eq!(
            store
                .cart(&SampleCart::ShortStock.id())
                .unwrap()
                .unwrap()
                .version,
            sample::dataset()
                .carts
                .iter()
                .find(|c| c.id == SampleCart::ShortStock.id())
                .unwrap()
                .version,
            "{name}"
        );
    }
}

#[test]
fn the_store_refuses_a_second_active_session_or_operation() {
    for (name, open) in stores::all() {
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
            matches!(second, Err(StoreError::Conflict(_))),
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
            matches!(twice, Err(StoreError::Conflict(_))),
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

/// A commit refused for its first write is refused for that write, whatever its later
/// writes would have met (the PostgreSQL store sends them all in one round trip, so they run
/// after the refused one): a cart that moved on is a `Conflict` about the cart, and a cart
/// that never was is an `Invariant`, though a later session breaks the one-active-session
/// index. Nothing is written.
#[test]
fn the_first_refused_write_decides_a_commit_whatever_follows_it() {
    for (name, open) in stores::all() {
        let (store, _dir) = open(sample::dataset());
        let cart_id = SampleCart::InStock.id();
        store
            .commit(&commit(Changes {
                sessions: vec![session(1, cart_id, false)],
                ..Changes::default()
            }))
            .unwrap();
        let stored = store.cart(&cart_id).unwrap().unwrap();
        let mut moved_on = stored.clone();
        moved_on.version += 5;
        let mut never_was = stored.clone();
        never_was.id = id(KeyPrefix::WebCart, 1);
        never_was.version += 1;
        for (cart, conflict) in [(moved_on, true), (never_was, false)] {
            let result = store.commit(&commit(Changes {
                carts: vec![cart],
                sessions: vec![session(2, cart_id, false)],
                ..Changes::default()
            }));
            match (&result, conflict) {
                (Err(StoreError::Conflict(message)), true) => {
                    assert!(message.starts_with("cart "), "{name}: {message}")
                }
                (Err(StoreError::Invariant(message)), false) => {
                    assert!(message.contains("does not exist"), "{name}: {message}")
                }
                _ => panic!("{name}: {result:?}"),
            }
            assert_eq!(store.cart(&cart_id).unwrap().unwrap(), stored, "{name}");
            assert_eq!(store.sessions_of(&cart_id).unwrap().len(), 1, "{name}");
        }
    }
}

/// A lease has ended at the instant it expires (`expires_at <= now`), as the decision reads it:
/// the sweeper is offered a Running operation from that instant on, never a millisecond
/// before, and never one that is not Running.
#[test]
fn expired_operations_are_running_ones_whose_lease_ended_by_now_earliest_first() {
    let end = Utc.with_ymd_and_hms(2026, 1, 1, 1, 0, 0).unwrap();
    let ms = chrono::Duration::milliseconds;
    for (name, open) in stores::all() {
        let mut data = sample::dataset();
        let carts = four_carts_with_a_session_each(&mut data);
        // Leases that ended a millisecond ago, end now, end in a millisecond; and a New one.
        let running = |n: u64, until: chrono::DateTime<Utc>| BackgroundOperation {
            started_at: Some(end - chrono::Duration::minutes(1)),
            expires_at: Some(until),
            attempt: 1,
            ..operation(
                n,
                carts[n as usize - 1],
                data.sessions[n as usize - 1].id,
                OperationStatus::Running,
                0,
            )
        };
        let (ended, ends_now, runs_on) = (
            running(1, end - ms(1)),
            running(2, end),
            running(3, end + ms(1)),
        );
        let new = operation(4, carts[3], data.sessions[3].id, OperationStatus::New, 0);
        // Listed out of lease order: the store sorts by the lease's end.
        data.operations = vec![runs_on.clone(), ends_now.clone(), ended.clone(), new];
        let (store, _dir) = open(data);
        let expired = |now| store.expired_operations(now, 10).unwrap();
        assert_eq!(expired(end - ms(2)), Vec::<SfId>::new(), "{name}");
        assert_eq!(expired(end - ms(1)), vec![ended.id], "{name}");
        assert_eq!(expired(end), vec![ended.id, ends_now.id], "{name}");
        assert_eq!(
            expired(end + ms(1)),
            vec![ended.id, ends_now.id, runs_on.id],
            "{name}"
        );
        assert_eq!(
            store.expired_operations(end + ms(1), 2).unwrap(),
            vec![ended.id, ends_now.id],
            "{name}"
        );
    }
}

#[test]
fn claimable_operations_are_new_oldest_first_and_never_of_closed_carts() {
    for (name, open) in stores::all() {
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
fn the_lines_of_several_carts_read_at_once_are_each_carts_lines_in_order() {
    for (name, open) in stores::all() {
        let mut data = sample::dataset();
        sample::add_in_stock_copies(&mut data, 5, 3);
        let mut carts: Vec<SfId> = data.carts.iter().map(|c| c.id).collect();
        let (store, _dir) = open(data);
        let lineless = id(KeyPrefix::WebCart, 999_999);
        carts.push(lineless);
        let lines = store.cart_items_of(&carts).unwrap();
        assert_eq!(lines.len(), carts.len(), "{name}: one entry per cart");
        let mut with_lines = 0;
        for cart in &carts {
            let one_by_one = store.cart_items(cart).unwrap();
            with_lines += usize::from(!one_by_one.is_empty());
            assert_eq!(*lines[cart], one_by_one, "{name}: the lines of {cart}");
        }
        assert!(with_lines > 3, "{name}: only {with_lines} carts hold lines");
        assert!(lines[&lineless].is_empty(), "{name}");
        assert!(store.cart_items_of(&[]).unwrap().is_empty(), "{name}");
    }
}

#[test]
fn a_scan_of_carts_pages_through_every_cart_once_in_one_order() {
    for (name, open) in stores::all() {
        let mut data = sample::dataset();
        sample::add_in_stock_copies(&mut data, 100, 7);
        let mut expected: Vec<SfId> = data.carts.iter().map(|c| c.id).collect();
        let (store, _dir) = open(data);
        let mut seen: Vec<SfId> = Vec::new();
        loop {
            let page = store.carts_after(seen.last(), 3).unwrap();
            assert!(page.len() <= 3, "{name}: a page of {}", page.len());
            let done = page.len() < 3;
            seen.extend(page.iter().map(|c| c.id));
            if done {
                break;
            }
        }
        let whole: Vec<SfId> = store
            .carts_after(None, 1_000)
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(
            seen, whole,
            "{name}: the pages are the whole scan, in its order"
        );
        seen.sort();
        expected.sort();
        assert_eq!(seen, expected, "{name}: every cart, once");
        assert!(store.carts_after(None, 0).unwrap().is_empty(), "{name}");
    }
}

#[test]
fn a_checkout_runs_the_same_on_every_store() {
    for (name, open) in stores::all() {
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
            let session = sample::lock_inventory_step(&engine, &buyer, cart.id())
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .to_string();
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

mod postgres_only {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use cartflow::model::CartItem;
    use cartflow::store::{BatchClaimFn, CartLines, DecideFn, Reads};
    use std::sync::{Barrier, Mutex};
    use std::thread;

    use cartflow::machine::{Event, Machine};
    use cartflow::store::PostgresStore;

    /// How many migrations this build ships: the schema version a migrated database records.
    fn shipped_migrations() -> i32 {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "sql")
            })
            .count() as i32
    }

    /// The first column of what `sql` answers, straight from the test database.
    fn column<T: for<'a> postgres::types::FromSql<'a>>(
        db: &support::TestDb,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Vec<T> {
        let rows = db.client().query(sql, params).unwrap();
        rows.iter().map(|row| row.get(0)).collect()
    }

    fn recorded_versions(db: &support::TestDb) -> Vec<i32> {
        column(
            db,
            "SELECT version FROM cartflow_schema ORDER BY version",
            &[],
        )
    }

    /// Work one process commits wakes an idle worker of another at once: with an idle poll of
    /// an hour, the worker can only have started through the store's announcement (`NOTIFY`).
    #[test]
    fn work_committed_by_another_process_wakes_an_idle_worker() {
        let Some(db) = support::postgres() else {
            return;
        };
        let data = sample::dataset();
        let buyers_store = PostgresStore::connect(db.url()).unwrap();
        buyers_store.import(&data).unwrap();
        let integrations = Integrations::with_stock_tables(&data.stock);
        let buyers = Engine::new(Arc::new(buyers_store)).with_integrations(integrations.clone());
        let workers = Engine::new(Arc::new(PostgresStore::connect(db.url()).unwrap()))
            .with_integrations(integrations)
            .with_config(EngineConfig {
                idle_poll_ms: 3_600_000,
                ..EngineConfig::default()
            });
        let pool = workers.start_workers(1);
        let buyer = sample::buyer_id().to_string();
        for cart in [
            SampleCart::InStock,
            SampleCart::Reorder,
            SampleCart::ShortStock,
        ] {
            // Time for the worker to go idle: what follows must wake it.
            thread::sleep(std::time::Duration::from_millis(300));
            sample::lock_inventory_step(&buyers, &buyer, cart.id()).unwrap();
            let body = json!({"cartId": cart.id().to_string()});
            let started = buyers.invoke("checkCartInventoryAction", &body, &buyer);
            let operation: SfId = started.output_values.unwrap()["backgroundOperationId"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while buyers
                .store()
                .operation(&operation)
                .unwrap()
                .unwrap()
                .status
                .is_active()
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{cart:?}: the idle worker was not woken"
                );
                thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        pool.stop();
    }

    #[test]
    fn a_reconnected_store_keeps_every_commit() {
        let Some(db) = support::postgres() else {
            return;
        };
        {
            let store = PostgresStore::connect(db.url()).unwrap();
            assert!(store.is_empty().unwrap());
            store.import(&sample::dataset()).unwrap();
            let engine = Engine::new(Arc::new(store));
            let r = engine.invoke(
                "checkoutSessionAction",
                &json!({"cartId": SampleCart::InStock.id().to_string()}),
                &sample::buyer_id().to_string(),
            );
            assert!(r.is_success);
        }
        let store = PostgresStore::connect(db.url()).unwrap();
        let cart = SampleCart::InStock.id();
        assert_eq!(
            store.cart(&cart).unwrap().unwrap().status,
            CartStatus::Checkout
        );
        assert_eq!(store.sessions_of(&cart).unwrap().len(), 1);
        assert!(!store.is_empty().unwrap());
        assert_eq!(store.stock().unwrap(), {
            let mut stock = sample::dataset().stock;
            stock.sort_by(|a, b| (a.store_id, &a.sku).cmp(&(b.store_id, &b.sku)));
            stock
        });
        let versions = recorded_versions(&db);
        assert_eq!(versions, (1..=shipped_migrations()).collect::<Vec<_>>());
    }

    #[test]
    fn a_database_from_a_newer_schema_is_refused() {
        let Some(db) = support::postgres() else {
            return;
        };
        drop(PostgresStore::connect(db.url()).unwrap());
        let newer = shipped_migrations() + 1;
        db.client()
            .execute(
                "INSERT INTO cartflow_schema (version) VALUES ($1)",
                &[&newer],
            )
            .unwrap();
        let err = PostgresStore::connect(db.url()).err().unwrap();
        let message = err.to_string();
        assert!(matches!(err, StoreError::Io(_)), "{err:?}");
        assert!(
            message.contains("newer") && message.contains(&newer.to_string()),
            "{message}"
        );
        // Nothing was touched: the newer version is still the one recorded.
        assert_eq!(recorded_versions(&db).last(), Some(&newer));
    }

    #[test]
    fn processes_connecting_at_once_migrate_once() {
        let Some(db) = support::postgres() else {
            return;
        };
        let barrier = Barrier::new(8);
        let results: Vec<Result<PostgresStore, StoreError>> = thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        PostgresStore::connect(db.url())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for result in &results {
            assert!(result.is_ok(), "{:?}", result.as_ref().err());
        }
        assert_eq!(
            recorded_versions(&db),
            (1..=shipped_migrations()).collect::<Vec<_>>()
        );
        // Every store works on the one schema.
        results[0]
            .as_ref()
            .unwrap()
            .import(&sample::dataset())
            .unwrap();
        for store in &results {
            let cart = store
                .as_ref()
                .unwrap()
                .cart(&SampleCart::InStock.id())
                .unwrap();
            assert_eq!(cart.unwrap().status, CartStatus::Active);
        }
    }

    #[test]
    fn two_stores_racing_on_one_session_let_exactly_one_win() {
        let Some(db) = support::postgres() else {
            return;
        };
        // Two pools, as two engine processes would have.
        let a = PostgresStore::connect(db.url()).unwrap();
        let b = PostgresStore::connect(db.url()).unwrap();
        a.import(&sample::dataset()).unwrap();
        let cart = SampleCart::InStock.id();
        let first = session(1, cart, false);
        a.commit(&commit(Changes {
            sessions: vec![first.clone()],
            ..Changes::default()
        }))
        .unwrap();
        const ROUNDS: u64 = 25;
        let states = [SessionState::ShippingAddress, SessionState::Inventory];
        let mut winners = BTreeMap::new();
        for round in 0..ROUNDS {
            let read_a = a.session(&first.id).unwrap().unwrap();
            let read_b = b.session(&first.id).unwrap().unwrap();
            assert_eq!(read_a, read_b);
            let barrier = Barrier::new(2);
            let results: Vec<Result<(), StoreError>> = thread::scope(|scope| {
                let handles: Vec<_> = [(&a, read_a, states[0]), (&b, read_b, states[1])]
                    .into_iter()
                    .map(|(store, mut s, state)| {
                        let barrier = &barrier;
                        scope.spawn(move || {
                            s.state = Some(state);
                            s.version += 1;
                            barrier.wait();
                            store.commit(&commit(Changes {
                                sessions: vec![s],
                                ..Changes::default()
                            }))
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let won: Vec<usize> = (0..2).filter(|k| results[*k].is_ok()).collect();
            assert_eq!(won.len(), 1, "round {round}: {results:?}");
            let lost = 1 - won[0];
            assert!(
                matches!(results[lost], Err(StoreError::Conflict(_))),
                "round {round}: {results:?}"
            );
            let stored = a.session(&first.id).unwrap().unwrap();
            assert_eq!(stored.version, 2 + round);
            assert_eq!(stored.state, Some(states[won[0]]), "round {round}");
            *winners.entry(won[0]).or_insert(0) += 1;
        }
        assert_eq!(winners.values().sum::<u64>(), ROUNDS);
    }

    #[test]
    fn a_worker_passes_by_an_operation_another_worker_holds() {
        let Some(db) = support::postgres() else {
            return;
        };
        let mut data = sample::dataset();
        let (older_cart, newer_cart) = (SampleCart::InStock.id(), SampleCart::ShortStock.id());
        data.sessions = vec![session(1, older_cart, false), session(2, newer_cart, false)];
        data.operations = vec![
            operation(1, older_cart, data.sessions[0].id, OperationStatus::New, 1),
            operation(2, newer_cart, data.sessions[1].id, OperationStatus::New, 2),
        ];
        let (older, newer) = (data.operations[0].clone(), data.operations[1].clone());
        let store = PostgresStore::connect(db.url()).unwrap();
        store.import(&data).unwrap();
        // Another process holds the oldest operation's row lock, mid-claim.
        let mut other = db.client();
        let mut held = other.transaction().unwrap();
        held.execute(
            "SELECT id FROM operations WHERE id = $1 FOR UPDATE",
            &[&older.id.as_str()],
        )
        .unwrap();
        let mut running = |snap: cartflow::machine::Snapshot| {
            let mut op = snap.operation.expect("a snapshot of the candidate");
            op.status = OperationStatus::Running;
            op.attempt += 1;
            op.version += 1;
            Ok::<_, StoreError>(Some(commit(Changes {
                operations: vec![op],
                ..Changes::default()
            })))
        };
        let mut offered = Vec::new();
        let claimed = store
            .claim_next(&mut |snap| {
                offered.push(snap.operation.as_ref().unwrap().id);
                running(snap)
            })
            .unwrap();
        assert_eq!(claimed, Some(newer.id));
        assert_eq!(offered, [newer.id], "the held row was offered");
        // Nothing else is free while the lock is held; once released, the older one is.
        assert_eq!(store.claim_next(&mut running).unwrap(), None);
        held.rollback().unwrap();
        assert_eq!(store.claim_next(&mut running).unwrap(), Some(older.id));
        for id in [older.id, newer.id] {
            assert_eq!(
                store.operation(&id).unwrap().unwrap().status,
                OperationStatus::Running
            );
        }
    }

    /// The transaction that last wrote each of `ids`' operation rows.
    fn writers(db: &support::TestDb, ids: &[SfId]) -> Vec<String> {
        let ids: Vec<&str> = ids.iter().map(SfId::as_str).collect();
        let sql = "SELECT xmin::text FROM operations WHERE id = ANY($1) ORDER BY id";
        column(db, sql, &[&ids])
    }

    /// A batch claim offers the free candidates oldest first, told how many it took so far,
    /// and writes every claim it takes in one transaction; one that cannot hold (a stale
    /// version) writes none of the batch, and one candidate is claimed alone instead.
    #[test]
    fn a_batch_claim_writes_its_claims_in_one_transaction_or_none() {
        let Some(db) = support::postgres() else {
            return;
        };
        let mut data = sample::dataset();
        let carts = four_carts_with_a_session_each(&mut data);
        data.operations = (0..4)
            .map(|k| {
                let s = data.sessions[k as usize].id;
                operation(
                    k + 1,
                    carts[k as usize],
                    s,
                    OperationStatus::New,
                    k as u32 + 1,
                )
            })
            .collect();
        let ops: Vec<SfId> = data.operations.iter().map(|o| o.id).collect();
        let store = PostgresStore::connect(db.url()).unwrap();
        store.import(&data).unwrap();
        // Another process holds the second oldest's row lock, mid-claim.
        let mut other = db.client();
        let mut held = other.transaction().unwrap();
        held.execute(
            "SELECT id FROM operations WHERE id = $1 FOR UPDATE",
            &[&ops[1].as_str()],
        )
        .unwrap();
        let running = |snap: &cartflow::machine::Snapshot, stale: bool| {
            let mut op = snap.operation.clone().expect("a snapshot of the candidate");
            op.status = OperationStatus::Running;
            op.attempt += 1;
            op.version += if stale { 2 } else { 1 };
            commit(Changes {
                operations: vec![op],
                ..Changes::default()
            })
        };

        // The third candidate's claim cannot hold: nothing of the batch is written, and the
        // oldest is claimed alone.
        let mut offered = Vec::new();
        let claimed = store
            .claim_batch(3, &mut |snap, taken| {
                let id = snap.operation.as_ref().unwrap().id;
                offered.push((id, taken));
                Ok(Some(running(&snap, id == ops[3])))
            })
            .unwrap();
        assert_eq!(claimed, [ops[0]]);
        assert_eq!(
            offered,
            [(ops[0], 0), (ops[2], 1), (ops[3], 2), (ops[0], 0)],
            "the free candidates, oldest first, then one claimed alone"
        );
        let status = |id: &SfId| store.operation(id).unwrap().unwrap().status;
        assert_eq!(status(&ops[2]), OperationStatus::New);
        assert_eq!(status(&ops[3]), OperationStatus::New);

        // Both free ones now go in one transaction; the held one is not offered.
        let mut offered = Vec::new();
        let claimed = store
            .claim_batch(8, &mut |snap, taken| {
                offered.push((snap.operation.as_ref().unwrap().id, taken));
                Ok(Some(running(&snap, false)))
            })
            .unwrap();
        assert_eq!(claimed, [ops[2], ops[3]]);
        assert_eq!(offered, [(ops[2], 0), (ops[3], 1)]);
        let writers = writers(&db, &[ops[2], ops[3]]);
        assert_eq!(writers[0], writers[1], "one transaction wrote both claims");
        assert_eq!(status(&ops[1]), OperationStatus::New);
        held.rollback().unwrap();
    }

    /// A worker claims quick work (computed in memory) in batches, and slow work alone.
    #[test]
    fn a_worker_batches_quick_work_only() {
        struct Slow;
        impl cartflow::integrations::InventoryProvider for Slow {
            fn check_inventory(
                &self,
                _: &cartflow::integrations::IntegrationRequest,
            ) -> Result<cartflow::integrations::Verdict, cartflow::integrations::ProviderError>
            {
                Ok(cartflow::integrations::Verdict::Passed)
            }
        }
        let data = sample::dataset();
        let carts = [
            SampleCart::InStock,
            SampleCart::Reorder,
            SampleCart::ShortStock,
        ]
        .map(SampleCart::id);
        for quick in [true, false] {
            let Some(db) = support::postgres() else {
                return;
            };
            let store = PostgresStore::connect(db.url()).unwrap();
            store.import(&data).unwrap();
            let mut integrations = Integrations::with_stock_tables(&data.stock);
            if !quick {
                integrations.set_inventory(sample::store_id(), Arc::new(Slow));
            }
            let engine = Engine::new(Arc::new(store)).with_integrations(integrations);
            for cart in carts {
                submit_inventory_check(&engine, cart);
            }
            let per_call: Vec<usize> = std::iter::from_fn(|| {
                let outcomes = engine.run_next_operations().unwrap();
                assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
                (!outcomes.is_empty()).then_some(outcomes.len())
            })
            .collect();
            let expected: &[usize] = if quick { &[3] } else { &[1, 1, 1] };
            assert_eq!(per_call, expected, "quick work: {quick}");
            let left = engine.store().claimable_operations(10).unwrap();
            assert!(left.is_empty(), "operations still New: {left:?}");
        }
    }

    /// A PostgreSQL store that counts how its lines are read: one cart at a time, or many.
    struct CountsLineReads {
        inner: PostgresStore,
        one_cart: AtomicUsize,
        many_carts: AtomicUsize,
    }

    impl Store for CountsLineReads {
        fn cart_items_shared(&self, cart_id: &SfId) -> Result<Arc<Vec<CartItem>>, StoreError> {
            self.one_cart.fetch_add(1, SeqCst);
            self.inner.cart_items_shared(cart_id)
        }

        fn cart_items_of(&self, carts: &[SfId]) -> Result<CartLines, StoreError> {
            self.many_carts.fetch_add(1, SeqCst);
            self.inner.cart_items_of(carts)
        }

        fn claim_batch(
            &self,
            max: usize,
            claim: &mut BatchClaimFn<'_>,
        ) -> Result<Vec<SfId>, StoreError> {
            self.inner.claim_batch(max, claim)
        }

        fn transact(&self, reads: &Reads, decide: &mut DecideFn<'_>) -> Result<(), StoreError> {
            self.inner.transact(reads, decide)
        }

        crate::delegate_store!(inner =>
            user, load, commit, claimable_operations, expired_operations, claim_next, cart,
            carts_after, cart_items, cart_item, validation_output, session, sessions_of,
            operation, operations_of, order, validation_outputs, history, events_after,
            last_event, webhook_cursor, advance_webhook, deliveries, begin_keyed, keep_answer,
            release_key, owner_of, operation_counts, web_stores
        );
    }

    #[test]
    fn a_batch_reads_the_lines_of_all_its_carts_at_once() {
        let Some(db) = support::postgres() else {
            return;
        };
        let data = sample::dataset();
        let inner = PostgresStore::connect(db.url()).unwrap();
        inner.import(&data).unwrap();
        let store = Arc::new(CountsLineReads {
            inner,
            one_cart: AtomicUsize::new(0),
            many_carts: AtomicUsize::new(0),
        });
        let integrations = Integrations::with_stock_tables(&data.stock);
        let engine = Engine::new(store.clone()).with_integrations(integrations);
        let carts = [SampleCart::InStock, SampleCart::Reorder].map(SampleCart::id);
        for cart in carts {
            submit_inventory_check(&engine, cart);
        }
        let (one, many) = (store.one_cart.load(SeqCst), store.many_carts.load(SeqCst));
        let outcomes = engine.run_next_operations().unwrap();
        assert_eq!(outcomes.len(), 2, "{outcomes:?}");
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        let read_one_by_one = store.one_cart.load(SeqCst) - one;
        let read_at_once = store.many_carts.load(SeqCst) - many;
        assert_eq!((read_one_by_one, read_at_once), (0, 1));
        // Alone, a claim reads its cart's lines as it works.
        submit_inventory_check(&engine, SampleCart::ShortStock.id());
        assert_eq!(engine.run_next_operations().unwrap().len(), 1);
        assert_eq!(store.one_cart.load(SeqCst) - one, 1);
        assert_eq!(store.many_carts.load(SeqCst) - many, 1);
        // The batch's history, written in one statement, is each cart's, in order, up to
        // its claim as a claim alone writes it (the short cart's check then fails).
        let moves = |cart: SfId| -> Vec<String> {
            let history = store.history(&cart).unwrap();
            assert!(history.iter().all(|h| h.cart_id == cart));
            history
                .iter()
                .map(|h| format!("{:?} {} {}->{}", h.machine, h.event, h.from, h.to))
                .collect()
        };
        let alone = moves(SampleCart::ShortStock.id());
        let claimed = alone.iter().position(|m| m.starts_with("Operation claim"));
        let through_claim = &alone[..=claimed.expect("the claim is in the history")];
        let [first, second] = carts.map(moves);
        assert_eq!(first, second);
        assert_eq!(&first[..through_claim.len()], through_claim);
    }

    #[test]
    fn candidates_the_closure_passes_by_stay_new() {
        let Some(db) = support::postgres() else {
            return;
        };
        let mut data = sample::dataset();
        let carts = [SampleCart::InStock.id(), SampleCart::ShortStock.id()];
        data.sessions = vec![session(1, carts[0], false), session(2, carts[1], false)];
        data.operations = vec![
            operation(1, carts[0], data.sessions[0].id, OperationStatus::New, 1),
            operation(2, carts[1], data.sessions[1].id, OperationStatus::New, 2),
        ];
        let store = PostgresStore::connect(db.url()).unwrap();
        store.import(&data).unwrap();
        let mut offered = Vec::new();
        let claimed = store
            .claim_next(&mut |snap| {
                offered.push(snap.operation.unwrap().id);
                Ok(None)
            })
            .unwrap();
        assert_eq!(claimed, None);
        let expected: Vec<SfId> = data.operations.iter().map(|o| o.id).collect();
        assert_eq!(offered, expected, "each candidate once, oldest first");
        assert_eq!(store.claimable_operations(10).unwrap(), expected);
    }

    /// Drives `cart` to a locked Inventory step with a New inventory operation.
    fn submit_inventory_check(engine: &Engine, cart: SfId) -> SfId {
        let buyer = sample::buyer_id().to_string();
        let cart_json = json!({"cartId": cart.to_string()});
        let started = engine.invoke("checkoutSessionAction", &cart_json, &buyer);
        let session = started.output_values.unwrap()["requestId"]
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
        let lock = json!({"checkoutSessionId": session, "expCurrentState": "Inventory", "nextState": "Confirm Price"});
        assert!(
            engine
                .invoke("updateCheckoutSessionStateAction", &lock, &buyer)
                .is_success
        );
        let submitted = engine.invoke("checkCartInventoryAction", &cart_json, &buyer);
        assert!(submitted.is_success, "{submitted:?}");
        session.parse().unwrap()
    }

    #[test]
    fn eight_threads_in_two_processes_claim_each_of_200_operations_once() {
        const CARTS: u64 = 200;
        const THREADS: usize = 8;
        let Some(db) = support::postgres() else {
            return;
        };
        // Prepare 200 carts with a New operation each on a memory store, then seed PostgreSQL.
        let mut data = sample::dataset();
        let mut carts = Vec::new();
        for n in 0..CARTS {
            let (cart, items) = sample::bulk_cart(n, 2, 3);
            carts.push(cart.id);
            data.carts.push(cart);
            data.items.extend(items);
        }
        data.stock.extend(sample::bulk_stock(3, 1_000_000));
        let staging = Arc::new(MemoryStore::from_dataset(data).unwrap());
        let engine = Engine::new(staging.clone()).with_ids(Arc::new(SequentialIds::default()));
        for cart in &carts {
            submit_inventory_check(&engine, *cart);
        }
        let seeded = staging.to_dataset();
        let operations: BTreeSet<SfId> = seeded
            .operations
            .iter()
            .filter(|op| op.status == OperationStatus::New)
            .map(|op| op.id)
            .collect();
        assert_eq!(operations.len(), CARTS as usize);

        let first = PostgresStore::connect(db.url()).unwrap();
        first.import(&seeded).unwrap();
        let second = PostgresStore::connect(db.url()).unwrap();
        let engines: Vec<Engine> = [first, second]
            .into_iter()
            .map(|store| {
                Engine::new(Arc::new(store))
                    .with_integrations(Integrations::with_stock_tables(&seeded.stock))
            })
            .collect();
        let ran: Mutex<Vec<SfId>> = Mutex::default();
        let barrier = Barrier::new(THREADS);
        thread::scope(|scope| {
            for k in 0..THREADS {
                let (engine, ran, barrier) = (&engines[k % 2], &ran, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    loop {
                        match engine.run_next_operation().unwrap() {
                            Some(report) => {
                                assert!(report.applied, "{report:?}");
                                ran.lock().unwrap().push(report.operation_id);
                            }
                            // Nothing free: done once nothing is New (others may hold the rest).
                            None => {
                                if engine.store().claimable_operations(1).unwrap().is_empty() {
                                    break;
                                }
                                thread::yield_now();
                            }
                        }
                    }
                });
            }
        });
        let ran = ran.into_inner().unwrap();
        assert_eq!(ran.len(), operations.len(), "operations run");
        assert_eq!(ran.iter().copied().collect::<BTreeSet<_>>(), operations);

        let store = engines[1].store();
        for cart in &carts {
            let ops = store.operations_of(cart).unwrap();
            assert_eq!(ops.len(), 1, "cart {cart}");
            let op = &ops[0];
            assert_eq!(op.status, OperationStatus::Complete, "{op:?}");
            assert_eq!(op.attempt, 1, "operation {} was claimed again", op.id);
            let history = store.history(cart).unwrap();
            let moves = |event| {
                history
                    .iter()
                    .filter(|h| h.machine == Machine::Operation && h.record == op.id)
                    .filter(|h| h.event == event)
                    .count()
            };
            assert_eq!(moves(Event::Claim), 1, "claims of {}", op.id);
            assert_eq!(moves(Event::Succeed), 1, "completions of {}", op.id);
            assert_eq!(moves(Event::Fail), 0, "failures of {}", op.id);
        }
    }
}

#[test]
fn records_imported_at_version_zero_can_be_updated() {
    for (name, open) in stores::all() {
        let mut data = sample::dataset();
        let mut seeded = session(1, SampleCart::InStock.id(), false);
        seeded.version = 0;
        data.sessions.push(seeded.clone());
        let (store, _guard) = open(data);
        let mut next = seeded.clone();
        next.state = Some(SessionState::ShippingAddress);
        next.version = 1;
        store
            .commit(&commit(Changes {
                sessions: vec![next.clone()],
                ..Changes::default()
            }))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(store.session(&next.id).unwrap().unwrap(), next, "{name}");
        // The same version again lost the compare-and-set.
        let again = store.commit(&commit(Changes {
            sessions: vec![next],
            ..Changes::default()
        }));
        assert!(
            matches!(again, Err(StoreError::Conflict(_))),
            "{name}: {again:?}"
        );
    }
}

#[test]
fn cart_edits_and_a_whole_checkout_run_the_same_on_every_store() {
    use cartflow::flow::{BuyerInput, Drive, Waiting, drive};
    use cartflow::machine::CartEdit;
    use cartflow::model::OrderStatus;
    for (name, open) in stores::all() {
        let data = sample::dataset();
        let integrations = sample::integrations(&data);
        let (store, _guard) = open(data);
        let engine = Engine::new(store.clone())
            .with_ids(Arc::new(SequentialIds::default()))
            .with_integrations(integrations);
        let buyer = sample::buyer_id().to_string();
        let cart = SampleCart::InStock.id();
        let lines = store.cart_items(&cart).unwrap();
        for change in [
            CartEdit::RemoveItem {
                item_id: lines[2].id.to_string(),
            },
            CartEdit::SetQuantity {
                item_id: lines[0].id.to_string(),
                quantity: rust_decimal::Decimal::from(3),
            },
        ] {
            engine
                .execute(
                    &buyer,
                    Command::EditCart {
                        cart_id: cart.to_string(),
                        edit: change,
                    },
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert_eq!(store.cart_items(&cart).unwrap().len(), 2, "{name}");
        let input = BuyerInput {
            deliver_to: Some(sample::denver()),
            delivery_method_id: None,
            payment_token: Some(sample::GOOD_TOKEN.into()),
            place_order: true,
        };
        let outcome = drive(&engine, &buyer, &cart, &input, Waiting::RunInline).unwrap();
        let Drive::Complete { order_id, .. } = outcome else {
            panic!("{name}: {outcome:?}");
        };
        let order = store.order(&order_id).unwrap().unwrap();
        assert_eq!(order.status, OrderStatus::Activated, "{name}");
        // Both product lines, and the chosen delivery method's charge line.
        assert_eq!(order.items.len(), 3, "{name}");
        assert_eq!(
            order
                .items
                .iter()
                .filter(|i| i.item_type == cartflow::model::CartItemType::Charge)
                .count(),
            1,
            "{name}"
        );
        let priced = store.cart_items(&cart).unwrap();
        assert!(
            priced.iter().all(|l| l.total_price.is_some()),
            "{name}: lines priced"
        );
        held_records_are_found_by_id(&*store, &order, &priced, name);
    }
}

/// Every record held inside a line, the cart or the order is found through the store's
/// index of holders, and an Id that holds nothing is not.
fn held_records_are_found_by_id(
    store: &dyn Store,
    order: &cartflow::model::Order,
    lines: &[cartflow::model::CartItem],
    name: &str,
) {
    let taxes: Vec<_> = lines.iter().flat_map(|l| l.taxes.iter()).collect();
    assert!(!taxes.is_empty(), "{name}: the lines were taxed");
    for tax in taxes {
        assert_eq!(
            store.owner_of(&tax.id).unwrap(),
            Some(tax.cart_item_id),
            "{name}"
        );
    }
    let held = order.child_ids();
    assert_eq!(
        held.len(),
        order.items.len() + 2,
        "{name}: items, group, authorisation"
    );
    for id in held {
        assert_eq!(store.owner_of(&id).unwrap(), Some(order.id), "{name}");
    }
    let cart = store.cart(&order.cart_id).unwrap().unwrap();
    for id in cart.child_ids() {
        assert_eq!(store.owner_of(&id).unwrap(), Some(cart.id), "{name}");
    }
    assert_eq!(store.owner_of(&order.id).unwrap(), None, "{name}");
}

fn keyed(user: SfId, key: &str, fingerprint: &str) -> cartflow::store::KeyedRequest {
    cartflow::store::KeyedRequest {
        user,
        key: key.into(),
        fingerprint: fingerprint.into(),
    }
}

#[test]
fn idempotency_keys_reserve_keep_release_and_expire_on_every_store() {
    use cartflow::store::{KeptAnswer, KeyState};
    let at = |hour: u32| Utc.with_ymd_and_hms(2026, 3, 1, hour, 0, 0).unwrap();
    for (name, open) in stores::all() {
        let (store, _guard) = open(sample::dataset());
        let buyer = sample::buyer_id();
        let first = keyed(buyer, "k-1", "POST /a sha256:1");
        let expires = at(10);
        assert_eq!(
            store.begin_keyed(&first, at(1), expires).unwrap(),
            KeyState::Reserved,
            "{name}"
        );
        // While the first runs: the same request is in flight, another is a mismatch.
        assert_eq!(
            store.begin_keyed(&first, at(2), expires).unwrap(),
            KeyState::InFlight,
            "{name}"
        );
        let other = keyed(buyer, "k-1", "POST /a sha256:2");
        assert_eq!(
            store.begin_keyed(&other, at(2), expires).unwrap(),
            KeyState::Mismatch,
            "{name}"
        );
        // Keys are per user: another user's same key is new.
        let colleague = keyed(sample::colleague_id(), "k-1", "POST /a sha256:1");
        assert_eq!(
            store.begin_keyed(&colleague, at(2), expires).unwrap(),
            KeyState::Reserved,
            "{name}"
        );
        let answer = KeptAnswer {
            status: 201,
            body: b"[{\"ok\":true}]".to_vec(),
        };
        store.keep_answer(&first, &answer).unwrap();
        assert_eq!(
            store.begin_keyed(&first, at(3), expires).unwrap(),
            KeyState::Answered(answer.clone()),
            "{name}"
        );
        // A kept answer is not released; a released reservation is new again.
        store.release_key(&first).unwrap();
        assert_eq!(
            store.begin_keyed(&first, at(3), expires).unwrap(),
            KeyState::Answered(answer),
            "{name}"
        );
        store.release_key(&colleague).unwrap();
        assert_eq!(
            store.begin_keyed(&colleague, at(3), expires).unwrap(),
            KeyState::Reserved,
            "{name}"
        );
        // Once its time ran out, the key is new again, even for another request.
        assert_eq!(
            store.begin_keyed(&other, expires, at(20)).unwrap(),
            KeyState::Reserved,
            "{name}"
        );
    }
}
