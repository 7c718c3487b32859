//! The SQLite store: the embedded default. WAL journal, `BEGIN IMMEDIATE` for writes, and
//! the invariants enforced by the schema itself (partial unique indexes).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior, params,
};
use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::events::{Delivery, EventPosition, PublishedEvent};
use crate::machine::Snapshot;
use crate::model::{
    BackgroundOperation, CartCheckoutSession, CartItem, CartStatus, CartValidationOutput, Order,
    SfId, User, WebCart, WebStore,
};
use crate::store::sql::{self, SqlTx, Table, Value};
use crate::store::{
    Commit, DataSet, DecideFn, HistoryEntry, KeptAnswer, KeyState, KeyedRequest, LoadKey, Reads,
    StockLevel, Store, key_state,
};

/// Prepared statements kept per connection: more than the store has (about 40).
const STATEMENT_CACHE: usize = 128;

/// The schema migrations, in order; schema version N is the first N applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_initial.sql"),
    include_str!("../../migrations/sqlite/0002_idempotency_keys.sql"),
    include_str!("../../migrations/sqlite/0003_record_owners.sql"),
    include_str!("../../migrations/sqlite/0004_hot_paths.sql"),
    include_str!("../../migrations/sqlite/0005_shared_sql.sql"),
    include_str!("../../migrations/sqlite/0006_events.sql"),
];

/// How durable a commit is (SQLite's `synchronous` setting in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL`: a commit survives a process crash; a power loss may lose the
    /// last commits, never corrupt the file.
    #[default]
    Normal,
    /// `synchronous=FULL`: a commit survives a power loss too.
    Full,
}

/// A SQLite database file holding one cartflow store.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    durability: Durability,
    idle: Mutex<Vec<Connection>>,
}

fn io<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::caused(e.to_string(), e)
}

/// Maps a write error: a broken unique index is a lost race, any other broken constraint
/// an invariant the commit itself would break.
fn write_error(e: rusqlite::Error) -> StoreError {
    const SQLITE_CONSTRAINT_PRIMARYKEY: std::ffi::c_int = 1555;
    const SQLITE_CONSTRAINT_UNIQUE: std::ffi::c_int = 2067;
    match &e {
        // A second insert of one ID, a cart's second active session or operation: a
        // concurrent commit won.
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == SQLITE_CONSTRAINT_UNIQUE =>
        {
            StoreError::Conflict(e.to_string())
        }
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => {
            StoreError::Invariant(e.to_string())
        }
        _ => io(e),
    }
}

/// A transaction as the shared SQL path runs it.
struct Sqlite<'a>(&'a Transaction<'a>);

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Value::Id(id) => ToSqlOutput::Borrowed(ValueRef::Text(id.as_str().as_bytes())),
            Value::Ids(_) | Value::JsonList(_) => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    "SQLite has no arrays: a list is bound one by one".into(),
                ));
            }
            Value::Int(n) => ToSqlOutput::Owned(SqlValue::Integer(*n)),
            Value::Bool(flag) => ToSqlOutput::Owned(SqlValue::Integer(i64::from(*flag))),
            Value::Json(raw) => ToSqlOutput::Borrowed(ValueRef::Text(raw.get().as_bytes())),
            Value::Time(Some(t)) => ToSqlOutput::Owned(SqlValue::Text(time(t))),
            Value::Time(None) => ToSqlOutput::Owned(SqlValue::Null),
        })
    }
}

impl SqlTx for Sqlite<'_> {
    fn execute(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<u64, StoreError> {
        let written = run(self.0, sql, rusqlite::params_from_iter(params)).map_err(write_error)?;
        Ok(written as u64)
    }

    fn records<T: DeserializeOwned>(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(io)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(io)?;
        let mut records = Vec::new();
        while let Some(row) = rows.next().map_err(io)? {
            let text = row.get_ref(0).map_err(io)?.as_str().map_err(io)?;
            records.push(from_json(text)?);
        }
        Ok(records)
    }

    fn first_row(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> Result<Option<Vec<Option<String>>>, StoreError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(io)?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(io)?;
        let Some(row) = rows.next().map_err(io)? else {
            return Ok(None);
        };
        let mut columns = Vec::with_capacity(width);
        for i in 0..width {
            columns.push(match row.get_ref(i).map_err(io)? {
                ValueRef::Null => None,
                ValueRef::Integer(n) => Some(n.to_string()),
                ValueRef::Real(x) => Some(x.to_string()),
                ValueRef::Text(text) | ValueRef::Blob(text) => {
                    Some(String::from_utf8(text.to_vec()).map_err(io)?)
                }
            });
        }
        Ok(Some(columns))
    }

    fn exists(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<bool, StoreError> {
        let mut stmt = self.0.prepare_cached(sql).map_err(io)?;
        stmt.exists(rusqlite::params_from_iter(params)).map_err(io)
    }
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::caused(format!("a stored record is unreadable: {e}"), e))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    /// A database written by a newer schema is refused.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<SqliteStore, StoreError> {
        let store = SqliteStore {
            path: path.as_ref().to_owned(),
            durability,
            idle: Mutex::new(Vec::new()),
        };
        let mut conn = store.connect()?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(io)?;
        migrate(&mut conn)?;
        store.release(conn);
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open(&self.path).map_err(|e| {
            StoreError::caused(format!("cannot open {}: {e}", self.path.display()), e)
        })?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(io)?;
        // Room for every statement the store runs, so none is compiled twice.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let sync = match self.durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.pragma_update(None, "synchronous", sync).map_err(io)?;
        Ok(conn)
    }

    fn take(&self) -> Result<Connection, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self.connect(),
        }
    }

    fn release(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < 16 {
            idle.push(conn);
        }
    }

    /// Runs `f` in a transaction of `behavior` on a pooled connection.
    fn in_tx<T>(
        &self,
        behavior: TransactionBehavior,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.take()?;
        let result = (|| {
            let tx = conn.transaction_with_behavior(behavior).map_err(io)?;
            let value = f(&tx)?;
            tx.commit().map_err(io)?;
            Ok(value)
        })();
        self.release(conn);
        result
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.in_tx(TransactionBehavior::Deferred, f)
    }

    /// Adds every record of a data set in one transaction (for seeding a new database).
    pub fn import(&self, data: &DataSet) -> Result<(), StoreError> {
        self.in_tx(TransactionBehavior::Immediate, |tx| {
            sql::import(&mut Sqlite(tx), data)?;
            for s in &data.stock {
                run(
                    tx,
                    "INSERT INTO stock (store_id, sku, quantity) VALUES (?1, ?2, ?3)",
                    params![s.store_id.as_str(), s.sku, s.quantity.to_string()],
                )
                .map_err(write_error)?;
            }
            Ok(())
        })
    }

    /// Whether the database holds no store yet.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        self.read(|tx| {
            let count: i64 =
                one_row(tx, "SELECT COUNT(*) FROM stores", [], |r| r.get(0)).map_err(io)?;
            Ok(count == 0)
        })
    }

    /// Every stock level, for the built-in stock-table provider.
    pub fn stock(&self) -> Result<Vec<StockLevel>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx
                .prepare("SELECT store_id, sku, quantity FROM stock ORDER BY store_id, sku")
                .map_err(io)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(io)?;
            let mut levels = Vec::new();
            for row in rows {
                let (store, sku, quantity) = row.map_err(io)?;
                levels.push(StockLevel {
                    store_id: SfId::parse(&store).map_err(io)?,
                    sku,
                    quantity: quantity.parse().map_err(io)?,
                });
            }
            Ok(levels)
        })
    }

    /// Every record read back as a [`DataSet`] (the records in one consistent view; stock is
    /// written only by [`import`](Self::import)). Records are sorted by ID (the stored
    /// 18-character text sorts as [`SfId`] does), stock by store and SKU, history by time and
    /// cart with each cart's entries in commit order: the order of `MemoryStore::to_dataset`.
    pub fn export(&self) -> Result<DataSet, StoreError> {
        fn all<T: DeserializeOwned>(
            tx: &Transaction<'_>,
            table: &str,
        ) -> Result<Vec<T>, StoreError> {
            let mut stmt = tx
                .prepare(&format!("SELECT body FROM {table} ORDER BY id"))
                .map_err(io)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(io)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(from_json(&row.map_err(io)?)?);
            }
            Ok(out)
        }
        let mut data = self.read(|tx| {
            let mut history: Vec<HistoryEntry> = Vec::new();
            let mut stmt = tx
                .prepare("SELECT body FROM history ORDER BY seq")
                .map_err(io)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(io)?;
            for row in rows {
                history.push(from_json(&row.map_err(io)?)?);
            }
            Ok(DataSet {
                stores: all(tx, "stores")?,
                accounts: all(tx, "accounts")?,
                users: all(tx, "users")?,
                carts: all(tx, "carts")?,
                items: all(tx, "cart_items")?,
                stock: Vec::new(),
                sessions: all(tx, "sessions")?,
                operations: all(tx, "operations")?,
                validation_outputs: all(tx, "validation_outputs")?,
                orders: all(tx, "orders")?,
                history,
            })
        })?;
        // A stable sort: entries of one cart at one instant keep their commit order.
        data.history.sort_by_key(|h| (h.at, h.cart_id));
        data.stock = self.stock()?;
        Ok(data)
    }

    /// Runs `PRAGMA integrity_check`; `Ok(())` when SQLite answers `ok`.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        self.read(|tx| {
            let answer: String =
                one_row(tx, "PRAGMA integrity_check", [], |r| r.get(0)).map_err(io)?;
            if answer == "ok" {
                Ok(())
            } else {
                Err(StoreError::Io(format!("integrity_check: {answer}").into()))
            }
        })
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(io)?;
    let latest = MIGRATIONS.len() as i64;
    if current > latest {
        return Err(StoreError::Io(
            format!(
                "the database has schema version {current}, newer than this cartflow's {latest}: upgrade cartflow"
            )
            .into(),
        ));
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(io)?;
    // Re-read under the write lock: another process may have migrated meanwhile.
    let current: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(io)?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        tx.execute_batch(sql)
            .map_err(|e| StoreError::caused(format!("migration {}: {e}", index + 1), e))?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)
            .map_err(io)?;
    }
    tx.commit().map_err(io)
}

/// Runs one statement from the connection's prepared-statement cache: SQL is compiled once
/// per connection, not once per call.
fn run(tx: &Transaction<'_>, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    tx.prepare_cached(sql)?.execute(params)
}

/// Reads one row with a statement from the connection's prepared-statement cache.
fn one_row<T>(
    tx: &Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
    row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    tx.prepare_cached(sql)?.query_row(params, row)
}

impl Store for SqliteStore {
    fn user(&self, id: &SfId) -> Result<Option<User>, StoreError> {
        self.read(|tx| sql::by_id(&mut Sqlite(tx), Table::Users, id))
    }

    fn load(&self, key: LoadKey) -> Result<Snapshot, StoreError> {
        self.read(|tx| sql::snapshot(&mut Sqlite(tx), key))
    }

    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        self.in_tx(TransactionBehavior::Immediate, |tx| {
            sql::apply(&mut Sqlite(tx), commit)
        })
    }

    /// One `BEGIN IMMEDIATE` for the reads, the decision and the writes: the database's
    /// write lock is held from the first read, so no commit of any process comes in between.
    fn transact(&self, reads: &Reads, decide: &mut DecideFn<'_>) -> Result<(), StoreError> {
        self.in_tx(TransactionBehavior::Immediate, |tx| {
            sql::transact(&mut Sqlite(tx), reads, decide)
        })
    }

    fn claimable_operations(&self, limit: usize) -> Result<Vec<SfId>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT o.id FROM operations o JOIN carts c ON c.id = o.cart_id
                     WHERE o.status = 'New' AND c.status != ?1
                     ORDER BY o.submitted_at, o.id LIMIT ?2",
                )
                .map_err(io)?;
            let rows = stmt
                .query_map(params![CartStatus::Closed.as_str(), limit as i64], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(io)?;
            let mut ids = Vec::new();
            for row in rows {
                ids.push(SfId::parse(&row.map_err(io)?).map_err(io)?);
            }
            Ok(ids)
        })
    }

    fn expired_operations(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<SfId>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id FROM operations WHERE status = 'Running' AND expires_at <= ?1
                     ORDER BY expires_at, id LIMIT ?2",
                )
                .map_err(io)?;
            let rows = stmt
                .query_map(params![time(&now), limit as i64], |r| r.get::<_, String>(0))
                .map_err(io)?;
            let mut ids = Vec::new();
            for row in rows {
                ids.push(SfId::parse(&row.map_err(io)?).map_err(io)?);
            }
            Ok(ids)
        })
    }

    fn cart(&self, id: &SfId) -> Result<Option<WebCart>, StoreError> {
        self.read(|tx| sql::by_id(&mut Sqlite(tx), Table::Carts, id))
    }

    fn carts_after(&self, after: Option<&SfId>, limit: usize) -> Result<Vec<WebCart>, StoreError> {
        self.read(|tx| sql::carts_after(&mut Sqlite(tx), after, limit))
    }

    fn cart_items(&self, cart_id: &SfId) -> Result<Vec<CartItem>, StoreError> {
        self.read(|tx| {
            sql::listed(
                &mut Sqlite(tx),
                "SELECT body FROM cart_items WHERE cart_id = $1 ORDER BY id",
                cart_id,
            )
        })
    }

    fn cart_item(&self, id: &SfId) -> Result<Option<CartItem>, StoreError> {
        self.read(|tx| sql::by_id(&mut Sqlite(tx), Table::CartItems, id))
    }

    fn validation_output(&self, id: &SfId) -> Result<Option<CartValidationOutput>, StoreError> {
        self.read(|tx| sql::by_id(&mut Sqlite(tx), Table::Outputs, id))
    }

    fn session(&self, id: &SfId) -> Result<Option<CartCheckoutSession>, StoreError> {
        self.read(|tx| sql::by_id(&mut Sqlite(tx), Table::Sessions, id))
    }

    fn sessions_of(&self, cart_id: &SfId) -> Result<Vec<CartCheckoutSession>, StoreError> {
        self.read(|tx| {
            sql::listed(
                &mut Sqlite(tx),
                "SELECT body FROM sessions WHERE cart_id = $1 ORDER BY rowid",
                cart_id,
            )
        })
    }

    fn operation(&self, id: &SfId) -> Result<Option<BackgroundOperation>, StoreError> {
        self.read(|tx| sql::by_id(&mut Sqlite(tx), Table::Operations, id))
    }

    fn operations_of(&self, cart_id: &SfId) -> Result<Vec<BackgroundOperation>, StoreError> {
        self.read(|tx| {
            sql::listed(
                &mut Sqlite(tx),
                "SELECT body FROM operations WHERE cart_id = $1 ORDER BY submitted_at, rowid",
                cart_id,
            )
        })
    }

    fn order(&self, id: &SfId) -> Result<Option<Order>, StoreError> {
        self.read(|tx| sql::by_id(&mut Sqlite(tx), Table::Orders, id))
    }

    fn validation_outputs(&self, cart_id: &SfId) -> Result<Vec<CartValidationOutput>, StoreError> {
        self.read(|tx| {
            sql::listed(
                &mut Sqlite(tx),
                "SELECT body FROM validation_outputs WHERE cart_id = $1 ORDER BY rowid",
                cart_id,
            )
        })
    }

    fn history(&self, cart_id: &SfId) -> Result<Vec<HistoryEntry>, StoreError> {
        self.read(|tx| {
            sql::listed(
                &mut Sqlite(tx),
                "SELECT body FROM history WHERE cart_id = $1 ORDER BY seq",
                cart_id,
            )
        })
    }

    fn events_after(
        &self,
        after: Option<&EventPosition>,
        limit: usize,
    ) -> Result<Vec<PublishedEvent>, StoreError> {
        let Some(sequence) = EventPosition::sequence_after(after) else {
            return Ok(Vec::new());
        };
        self.read(|tx| {
            Sqlite(tx).records(
                "SELECT json_set(body, '$.Position', '0-' || seq) FROM history
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[sql::int(sequence), sql::int(limit as u64)],
            )
        })
    }

    fn last_event(&self) -> Result<Option<EventPosition>, StoreError> {
        self.read(|tx| sql::last_event(&mut Sqlite(tx), "SELECT 0, max(seq) FROM history"))
    }

    fn webhook_cursor(&self, hook: &str) -> Result<Option<EventPosition>, StoreError> {
        self.read(|tx| sql::webhook_cursor(&mut Sqlite(tx), hook))
    }

    fn advance_webhook(
        &self,
        hook: &str,
        to: Option<&EventPosition>,
        delivery: Option<&Delivery>,
    ) -> Result<(), StoreError> {
        self.in_tx(TransactionBehavior::Immediate, |tx| {
            sql::advance_webhook(&mut Sqlite(tx), hook, to, delivery)
        })
    }

    fn deliveries(&self, hook: &str, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.read(|tx| sql::deliveries(&mut Sqlite(tx), hook, limit))
    }

    fn begin_keyed(
        &self,
        request: &KeyedRequest,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<KeyState, StoreError> {
        self.in_tx(TransactionBehavior::Immediate, |tx| {
            run(
                tx,
                "DELETE FROM idempotency_keys WHERE expires_at <= ?1",
                params![now.timestamp_millis()],
            )
            .map_err(io)?;
            let found = one_row(
                tx,
                "SELECT fingerprint, status, body FROM idempotency_keys
                     WHERE user_id = ?1 AND key = ?2",
                params![request.user.as_str(), request.key],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, Option<Vec<u8>>>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(io)?;
            if let Some((fingerprint, status, body)) = found {
                return key_state(&fingerprint, &request.fingerprint, status, body);
            }
            run(
                tx,
                "INSERT INTO idempotency_keys (user_id, key, fingerprint, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    request.user.as_str(),
                    request.key,
                    request.fingerprint,
                    expires_at.timestamp_millis()
                ],
            )
            .map_err(io)?;
            Ok(KeyState::Reserved)
        })
    }

    fn keep_answer(&self, request: &KeyedRequest, answer: &KeptAnswer) -> Result<(), StoreError> {
        self.in_tx(TransactionBehavior::Immediate, |tx| {
            run(
                tx,
                "UPDATE idempotency_keys SET status = ?1, body = ?2
                 WHERE user_id = ?3 AND key = ?4 AND fingerprint = ?5",
                params![
                    i64::from(answer.status),
                    answer.body,
                    request.user.as_str(),
                    request.key,
                    request.fingerprint
                ],
            )
            .map_err(io)?;
            Ok(())
        })
    }

    fn release_key(&self, request: &KeyedRequest) -> Result<(), StoreError> {
        self.in_tx(TransactionBehavior::Immediate, |tx| {
            run(
                tx,
                "DELETE FROM idempotency_keys
                 WHERE user_id = ?1 AND key = ?2 AND fingerprint = ?3 AND status IS NULL",
                params![request.user.as_str(), request.key, request.fingerprint],
            )
            .map_err(io)?;
            Ok(())
        })
    }

    fn owner_of(&self, id: &SfId) -> Result<Option<SfId>, StoreError> {
        self.read(|tx| {
            let owner: Option<String> = tx
                .prepare_cached("SELECT owner_id FROM record_owners WHERE id = ?1")
                .map_err(io)?
                .query_row(params![id.as_str()], |r| r.get(0))
                .optional()
                .map_err(io)?;
            owner.map(|text| SfId::parse(&text).map_err(io)).transpose()
        })
    }

    fn web_stores(&self) -> Result<Vec<WebStore>, StoreError> {
        self.read(|tx| {
            let mut stmt = tx
                .prepare("SELECT body FROM stores ORDER BY id")
                .map_err(io)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(io)?;
            let mut stores = Vec::new();
            for row in rows {
                stores.push(from_json(&row.map_err(io)?)?);
            }
            Ok(stores)
        })
    }

    fn operation_counts(&self) -> Result<super::OperationCounts, StoreError> {
        self.read(|tx| {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT status, count(*) FROM operations
                     WHERE status IN ('New', 'Running') GROUP BY status",
                )
                .map_err(io)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(io)?;
            let mut counts = super::OperationCounts::default();
            for row in rows {
                let (status, count) = row.map_err(io)?;
                counts.add(&status, count.max(0) as u64);
            }
            Ok(counts)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite numbers `$n` placeholders in the order they first appear and binds by that
    /// number: the shared statements must name `$1`, `$2`, ... in that order.
    #[test]
    fn every_shared_statement_names_its_placeholders_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("cartflow.db"), Durability::Normal).unwrap();
        let conn = store.take().unwrap();
        for statement in sql::STATEMENTS {
            let prepared = conn.prepare(statement).unwrap();
            assert!(prepared.parameter_count() > 0, "{statement}");
            for n in 1..=prepared.parameter_count() {
                assert_eq!(
                    prepared.parameter_name(n),
                    Some(format!("${n}").as_str()),
                    "{statement}"
                );
            }
        }
    }

    /// The hot queries SQLite runs beside the shared statements: a cart's history, the
    /// claimable and the expired operations, a held record's holder.
    const SQLITE_QUERIES: [&str; 4] = [
        "SELECT body FROM history WHERE cart_id = ?1 ORDER BY seq",
        "SELECT o.id FROM operations o JOIN carts c ON c.id = o.cart_id
         WHERE o.status = 'New' AND c.status != ?1 ORDER BY o.submitted_at, o.id LIMIT ?2",
        "SELECT id FROM operations WHERE status = 'Running' AND expires_at <= ?1
         ORDER BY expires_at, id LIMIT ?2",
        "SELECT owner_id FROM record_owners WHERE id = ?1",
    ];

    /// Every statement of a command, a claim or a sweep finds its rows through an index (a
    /// `SEARCH`): none reads a whole table (a `SCAN`) or sorts its rows (a temporary
    /// B-tree). The claim's scan reads the queue's partial index, which holds only the queue.
    #[test]
    fn every_statement_finds_its_rows_through_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("cartflow.db"), Durability::Normal).unwrap();
        let conn = store.take().unwrap();
        for statement in sql::STATEMENTS.iter().chain(&SQLITE_QUERIES) {
            let mut plan = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {statement}"))
                .unwrap();
            let nulls = vec![rusqlite::types::Null; plan.parameter_count()];
            let steps: Vec<String> = plan
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            println!("{statement}\n  -> {steps:?}");
            for step in &steps {
                let scan = step.starts_with("SCAN ")
                    && step != "SCAN CONSTANT ROW"
                    && !step.ends_with("USING INDEX operations_new");
                assert!(
                    !scan && !step.contains("TEMP B-TREE"),
                    "{statement}: {steps:?}"
                );
            }
        }
    }
}
