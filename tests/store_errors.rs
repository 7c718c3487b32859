//! What the engine does with each kind of store failure: a lost race is decided again, a
//! malformed commit or a broken database is answered at once, and a driver's error stays
//! reachable as the failure's source.

mod support;

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use cartflow::machine::Command;
use cartflow::sample::{self, SampleCart};
use cartflow::store::{Commit, Durability, PostgresStore, SqliteStore};
use cartflow::{CheckoutError, Engine, EngineConfig, MemoryStore, Store, StoreError};

/// A store whose every commit fails with `error`, counting the commits tried.
struct Failing {
    inner: Arc<MemoryStore>,
    error: StoreError,
    commits: AtomicU32,
}

impl Store for Failing {
    fn commit(&self, _commit: &Commit) -> Result<(), StoreError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        Err(self.error.clone())
    }

    delegate_store!(inner =>
        user, load, claimable_operations, expired_operations, cart, carts_after, cart_items, cart_item,
        validation_output, session, sessions_of, operation, operations_of, order,
        validation_outputs, history, events_after, last_event, webhook_cursor, advance_webhook, deliveries, begin_keyed, keep_answer, release_key, owner_of,
        operation_counts, web_stores
    );
}

const ATTEMPTS: u32 = 5;

/// Starts checkout on a store whose commits fail with `error`: the answer, and how many
/// commits the engine tried.
fn start_on_failing(error: StoreError) -> (Result<(), CheckoutError>, u32) {
    let store = Arc::new(Failing {
        inner: Arc::new(MemoryStore::from_dataset(sample::dataset()).unwrap()),
        error,
        commits: AtomicU32::new(0),
    });
    let engine = Engine::new(store.clone() as Arc<dyn Store>).with_config(EngineConfig {
        max_attempts: ATTEMPTS,
        ..EngineConfig::default()
    });
    let result = engine.execute(
        &sample::buyer_id().to_string(),
        Command::StartSession {
            cart_id: SampleCart::InStock.id().to_string(),
            initial_state: None,
        },
    );
    (result.map(drop), store.commits.load(Ordering::SeqCst))
}

#[test]
fn a_lost_race_is_decided_again_until_the_attempts_run_out() {
    let (result, commits) = start_on_failing(StoreError::Conflict("a rival won".into()));
    assert_eq!(result, Err(CheckoutError::Contention(ATTEMPTS)));
    assert_eq!(commits, ATTEMPTS);
    assert_eq!(CheckoutError::Contention(ATTEMPTS).http_status(), 503);
}

#[test]
fn a_malformed_commit_is_answered_at_once_and_never_retried() {
    let bug = StoreError::Invariant("line 0a9 belongs to a cart other than 0a6".into());
    let (result, commits) = start_on_failing(bug.clone());
    assert_eq!(result, Err(CheckoutError::Store(bug)));
    assert_eq!(commits, 1);
    assert_eq!(result.unwrap_err().http_status(), 500);
}

#[test]
fn a_broken_database_is_answered_at_once() {
    let (result, commits) = start_on_failing(StoreError::Io("disk I/O error".into()));
    assert!(
        matches!(result, Err(CheckoutError::Store(StoreError::Io(_)))),
        "{result:?}"
    );
    assert_eq!(commits, 1);
}

#[test]
fn a_sqlite_failure_keeps_the_drivers_error_as_its_source() {
    let dir = tempfile::tempdir().unwrap();
    // A database file inside a directory that does not exist cannot be opened.
    let path = dir.path().join("missing").join("cartflow.db");
    let err = SqliteStore::open(&path, Durability::Normal).err().unwrap();
    assert!(matches!(err, StoreError::Io(_)), "{err:?}");
    let cause = err.source().and_then(Error::source);
    assert!(
        cause.is_some_and(|c| c.downcast_ref::<rusqlite::Error>().is_some()),
        "{err:?}"
    );
    assert!(err.to_string().contains("cannot open"), "{err}");
}

#[test]
fn a_postgres_failure_keeps_the_drivers_error_as_its_source() {
    // Port 1 on the loopback refuses at once: no server listens there.
    let err = PostgresStore::connect("postgres://cartflow@127.0.0.1:1/cartflow?connect_timeout=2")
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Io(_)), "{err:?}");
    let cause = err.source().and_then(Error::source);
    assert!(
        cause.is_some_and(|c| c.downcast_ref::<postgres::Error>().is_some()),
        "{err:?}"
    );
    assert!(err.to_string().contains("cannot connect"), "{err}");
}
