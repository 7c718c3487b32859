//! The PostgreSQL store: one database shared by many engine processes. Snapshots are read in
//! one REPEATABLE READ transaction, commits compare-and-set every record's version in one
//! transaction, the invariants are partial unique indexes, and workers claim operations with
//! `FOR UPDATE SKIP LOCKED` so they pass each other's candidates by instead of racing.

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use futures_util::future::{join, join_all};
use postgres::error::{DbError, SqlState};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{IsNull, Json, ToSql, Type};
use postgres::{Client, NoTls, Row, Statement};
use serde::de::DeserializeOwned;
use tokio::runtime::Runtime;
use tokio_postgres::Config;

use crate::error::StoreError;
use crate::events::{Delivery, EventPosition, PublishedEvent};
use crate::machine::Snapshot;
use crate::model::{
    BackgroundOperation, CartCheckoutSession, CartItem, CartStatus, CartValidationOutput, Order,
    SfId, User, WebCart, WebStore,
};
use crate::store::sql::{self, SqlTx, Table, Value, Write};
use crate::store::{
    BatchClaimFn, CartLines, ClaimFn, Commit, DataSet, DecideFn, HistoryEntry, KeptAnswer,
    KeyState, KeyedRequest, LoadKey, Reads, StockLevel, Store, WorkWatch, key_state,
};

/// The schema migrations, in order; schema version N is the first N applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_initial.sql"),
    include_str!("../../migrations/postgres/0002_idempotency_keys.sql"),
    include_str!("../../migrations/postgres/0003_record_owners.sql"),
    include_str!("../../migrations/postgres/0004_events.sql"),
];

/// The advisory lock that serializes migrations across processes ("cartflow" in ASCII).
const MIGRATION_LOCK: i64 = 0x6361_7274_666c_6f77;

/// Idle connections kept for reuse; more are opened while more threads need one at once.
const MAX_IDLE: usize = 16;

/// The channel on which commits that create work notify listening workers.
const ANNOUNCE_WORK: &str = "SELECT pg_notify('cartflow_work', '')";
const LISTEN_FOR_WORK: &str = "LISTEN cartflow_work";

/// The events after a position, in commit order: in (transaction, sequence) order, and only
/// those of transactions older than every one still running, which can no longer be joined
/// by an event ordered before them.
const EVENTS_AFTER: &str = "SELECT body || jsonb_build_object('Position', xid::text || '-' || seq)
     FROM history
     WHERE (xid, seq) > ($1::text::xid8, $2) AND xid < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY xid, seq LIMIT $3";

/// The last event `EVENTS_AFTER` can answer: its transaction and sequence.
const LAST_EVENT: &str = "SELECT xid::text, seq FROM history
     WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY xid DESC, seq DESC LIMIT 1";

/// How often a listener looks up from waiting, to see whether it should stop.
const LISTEN_TICK: Duration = Duration::from_millis(200);

/// How long a listener whose connection broke waits before it connects again.
const LISTEN_RECONNECT: Duration = Duration::from_secs(1);

/// How many candidates one `claim_next` offers before giving up, as the default does.
const CLAIM_CANDIDATES: usize = 8;

/// How many transactions one `claim_next` may start (a serialization failure starts another).
const CLAIM_ROUNDS: usize = 16;

/// A PostgreSQL database holding one cartflow store, shared by any number of processes.
///
/// Connections come from a small pool (idle clients kept in a `Vec`, a new one opened when
/// none is idle), so threads do not serialize on one client and the store is `Send + Sync`.
/// Each pooled client caches its prepared statements. TLS is not supported (`NoTls`).
pub struct PostgresStore {
    config: Config,
    idle: Mutex<Vec<Conn>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Where it connects, never the password.
        f.debug_struct("PostgresStore")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("dbname", &self.config.get_dbname())
            .field("user", &self.config.get_user())
            .finish_non_exhaustive()
    }
}

/// The statement that opens a transaction of each kind this store runs.
const READ_COMMITTED: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
const REPEATABLE_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ";
const REPEATABLE_READ_ONLY: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// A pooled connection: its client, the current-thread runtime that drives it (the
/// connection's task runs while a call waits on the runtime), and the statements prepared on
/// it. Requests sent together are pipelined: one round trip carries them all.
struct Conn {
    runtime: Runtime,
    client: tokio_postgres::Client,
    statements: HashMap<&'static str, Statement>,
    /// Each guarded write's statement in the form that fails unless it writes exactly one
    /// row ([`raising`]), prepared on first use.
    raising: HashMap<&'static str, Statement>,
    /// The `BEGIN` of a transaction not yet sent: it goes with the transaction's first
    /// request, in the same round trip, and a transaction that sends nothing sends no `BEGIN`.
    begin: Option<&'static str>,
    /// The open transaction already ended, with its last writes (a commit's `COMMIT` goes in
    /// their round trip): there is nothing left to commit or roll back.
    ended: bool,
    /// A `ROLLBACK` failed: the connection may still be inside a transaction, so it is never
    /// pooled again.
    broken: bool,
}

impl Conn {
    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.runtime.block_on(self.client.prepare(sql))?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    /// The statement of a write: a guarded one in its [`raising`] form.
    fn write_statement(&mut self, write: &Write<'_>) -> Result<Statement, postgres::Error> {
        if write.guard.is_none() {
            return self.statement(write.sql);
        }
        if let Some(statement) = self.raising.get(write.sql) {
            return Ok(statement.clone());
        }
        let text = raising(write.sql);
        let statement = self.runtime.block_on(self.client.prepare(&text))?;
        self.raising.insert(write.sql, statement.clone());
        Ok(statement)
    }

    /// Opens a transaction: `begin` is sent with its first request.
    fn open_tx(&mut self, begin: &'static str) {
        self.begin = Some(begin);
        self.ended = false;
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        let begin = self.begin.take();
        let answer = self.client.query(&statement, params);
        after_begin(&self.runtime, &self.client, begin, answer)
    }

    fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        let begin = self.begin.take();
        let answer = self.client.query_opt(&statement, params);
        after_begin(&self.runtime, &self.client, begin, answer)
    }

    fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let statement = self.statement(sql)?;
        let begin = self.begin.take();
        let answer = self.client.execute(&statement, params);
        after_begin(&self.runtime, &self.client, begin, answer)
    }

    /// Runs statements without parameters (a migration), unprepared.
    fn batch_execute(&mut self, sql: &str) -> Result<(), postgres::Error> {
        let begin = self.begin.take();
        let answer = self.client.batch_execute(sql);
        after_begin(&self.runtime, &self.client, begin, answer)
    }

    /// Ends the open transaction: commits it, or rolls it back. One that sent nothing has
    /// nothing to end.
    fn end(&mut self, commit: bool) -> Result<(), postgres::Error> {
        if self.begin.take().is_some() || std::mem::take(&mut self.ended) {
            return Ok(());
        }
        let ended = self.runtime.block_on(self.client.batch_execute(if commit {
            "COMMIT"
        } else {
            "ROLLBACK"
        }));
        if ended.is_err() && !commit {
            self.broken = true;
        }
        ended
    }

    /// Runs `f` in a transaction that `begin` opens, committing it when `f` succeeds and
    /// rolling it back when it fails.
    fn in_tx<T>(
        &mut self,
        begin: &'static str,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.open_tx(begin);
        match f(self) {
            Ok(value) => {
                self.end(true).map_err(pg_error)?;
                Ok(value)
            }
            Err(e) => {
                // A rollback that fails marks the connection broken; the error is `f`'s.
                let _ = self.end(false);
                Err(e)
            }
        }
    }
}

/// Waits for `answer`, sent in the same round trip as `begin` when a transaction's `BEGIN`
/// is still to go.
fn after_begin<T>(
    runtime: &Runtime,
    client: &tokio_postgres::Client,
    begin: Option<&'static str>,
    answer: impl Future<Output = Result<T, postgres::Error>>,
) -> Result<T, postgres::Error> {
    runtime.block_on(async {
        let (begun, answer) = join(send_begin(client, begin), answer).await;
        begun?;
        answer
    })
}

/// Sends the transaction's `BEGIN` when it is still to go (first, when polled first).
async fn send_begin(
    client: &tokio_postgres::Client,
    begin: Option<&'static str>,
) -> Result<(), postgres::Error> {
    match begin {
        Some(begin) => client.batch_execute(begin).await,
        None => Ok(()),
    }
}

fn io<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::caused(e.to_string(), e)
}

fn describe(db: &DbError) -> String {
    match db.detail() {
        Some(detail) => format!("{} ({detail})", db.message()),
        None => db.message().to_owned(),
    }
}

/// The error's text with its causes ("error connecting to server: Connection refused (os
/// error 111)"): the client's own text names only the kind of failure.
fn with_causes(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return describe(db);
    }
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    message
}

/// Maps a PostgreSQL error: a broken unique index is an invariant the commit would break; a
/// serialization failure or a deadlock means a concurrent commit won.
fn pg_error(e: postgres::Error) -> StoreError {
    let message = with_causes(&e);
    match e.code() {
        // A unique index is a race's referee: a second insert of one ID, a cart's second
        // active session or operation lost to a concurrent commit.
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(message),
        // Any other integrity rule (a foreign key, a check, a missing value) is broken by
        // the commit itself.
        Some(code) if code.code().starts_with("23") => StoreError::Invariant(message),
        Some(code)
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            StoreError::Conflict(message)
        }
        _ => StoreError::caused(message, e),
    }
}

/// Each column of `row` as text (a number as its digits), or `None` for NULL.
fn columns_as_text(row: &Row) -> Result<Vec<Option<String>>, StoreError> {
    (0..row.len())
        .map(|i| match *row.columns()[i].type_() {
            Type::INT4 => Ok(row
                .try_get::<_, Option<i32>>(i)
                .map_err(io)?
                .map(|n| n.to_string())),
            Type::INT8 => Ok(row
                .try_get::<_, Option<i64>>(i)
                .map_err(io)?
                .map(|n| n.to_string())),
            _ => row.try_get::<_, Option<String>>(i).map_err(io),
        })
        .collect()
}

/// Locks up to `limit` claimable operations but those `passed` and reads their snapshots,
/// oldest first, in the caller's transaction.
fn claimable_snapshots(
    db: &mut Conn,
    passed: &[SfId],
    limit: usize,
) -> Result<Vec<Snapshot>, StoreError> {
    let params = sql::claimable_params(passed, limit);
    let rows = db
        .query(sql::CLAIMABLE_SNAPSHOTS, &bound(&params))
        .map_err(pg_error)?;
    rows.iter()
        .map(|row| sql::claimable_snapshot(db, &columns_as_text(row)?))
        .collect()
}

/// The operation a claimable snapshot offers.
fn offered(snapshot: &Snapshot) -> Result<SfId, StoreError> {
    snapshot.operation.as_ref().map(|op| op.id).ok_or_else(|| {
        StoreError::Invariant("a claimable operation's snapshot holds no operation".into())
    })
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn record<T: DeserializeOwned>(row: &Row) -> Result<T, StoreError> {
    row.try_get::<_, Json<T>>(0)
        .map(|Json(value)| value)
        .map_err(|e| StoreError::caused(format!("a stored record is unreadable: {e}"), e))
}

fn id_of(row: &Row) -> Result<SfId, StoreError> {
    let text: &str = row.try_get(0).map_err(io)?;
    SfId::parse(text).map_err(io)
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgresql://` URL or `key=value` pairs, as
    /// libpq takes them) and brings its schema up to date. Concurrent processes migrate one
    /// at a time under an advisory lock; a database written by a newer schema is refused.
    pub fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let mut config = Config::from_str(url).map_err(|e| {
            StoreError::caused(
                format!("invalid PostgreSQL connection string: {}", with_causes(&e)),
                e,
            )
        })?;
        if config.get_application_name().is_none() {
            config.application_name("cartflow");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let store = PostgresStore {
            config,
            idle: Mutex::new(Vec::new()),
        };
        store.with_conn(migrate)?;
        Ok(store)
    }

    fn open(&self) -> Result<Conn, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::caused(format!("cannot start a PostgreSQL client: {e}"), e))?;
        let (client, connection) = runtime.block_on(self.config.connect(NoTls)).map_err(|e| {
            StoreError::caused(
                format!("cannot connect to PostgreSQL: {}", with_causes(&e)),
                e,
            )
        })?;
        // The connection's task ends when the server closes it or the runtime is dropped; the
        // client then answers every request with an error, and the pool drops it.
        runtime.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %with_causes(&e), "a PostgreSQL connection ended");
            }
        });
        Ok(Conn {
            runtime,
            client,
            statements: HashMap::new(),
            raising: HashMap::new(),
            begin: None,
            ended: false,
            broken: false,
        })
    }

    fn take(&self) -> Result<Conn, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self.open(),
        }
    }

    /// Returns a connection to the pool; a broken one (server restarted, connection
    /// terminated) is dropped, and the next caller opens a fresh one.
    fn release(&self, conn: Conn) {
        if conn.broken || conn.client.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.take()?;
        let result = f(&mut conn);
        self.release(conn);
        result
    }

    /// Runs `f` outside a transaction: for single statements, which see one snapshot anyway.
    fn read<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.with_conn(f)
    }

    /// Runs `f` in one transaction that `begin` opens, and commits it.
    fn in_tx<T>(
        &self,
        begin: &'static str,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_conn(|conn| conn.in_tx(begin, f))
    }

    /// Adds every record of a data set in one transaction (for seeding a new database).
    pub fn import(&self, data: &DataSet) -> Result<(), StoreError> {
        self.in_tx(READ_COMMITTED, |db| {
            sql::import(db, data)?;
            for s in &data.stock {
                db.execute(
                    "INSERT INTO stock (store_id, sku, quantity) VALUES ($1, $2, $3::text::numeric)",
                    &[&s.store_id.as_str(), &s.sku, &s.quantity.to_string()],
                )
                .map_err(pg_error)?;
            }
            Ok(())
        })
    }

    /// Every record read back as a [`DataSet`], in one consistent view (a REPEATABLE READ,
    /// read-only transaction), ordered as [`SqliteStore::export`](crate::store::SqliteStore::export)
    /// orders them: records by ID, stock by store and SKU, history by time and cart with each
    /// cart's entries in commit order. Sorting happens here, not in SQL, so the database's
    /// collation cannot reorder IDs.
    pub fn export(&self) -> Result<DataSet, StoreError> {
        fn all<T: DeserializeOwned>(
            db: &mut Conn,
            sql: &'static str,
            id: impl Fn(&T) -> SfId,
        ) -> Result<Vec<T>, StoreError> {
            let rows = db.query(sql, &[]).map_err(pg_error)?;
            let mut records = rows.iter().map(record).collect::<Result<Vec<T>, _>>()?;
            records.sort_by_key(|r| id(r));
            Ok(records)
        }
        let mut data = self.in_tx(REPEATABLE_READ_ONLY, |db| {
            Ok(DataSet {
                stores: all(db, "SELECT body FROM stores", |r: &WebStore| r.id)?,
                accounts: all(
                    db,
                    "SELECT body FROM accounts",
                    |r: &crate::model::Account| r.id,
                )?,
                users: all(db, "SELECT body FROM users", |r: &User| r.id)?,
                carts: all(db, "SELECT body FROM carts", |r: &WebCart| r.id)?,
                items: all(db, "SELECT body FROM cart_items", |r: &CartItem| r.id)?,
                stock: stock_levels(db)?,
                sessions: all(
                    db,
                    "SELECT body FROM sessions",
                    |r: &CartCheckoutSession| r.id,
                )?,
                operations: all(
                    db,
                    "SELECT body FROM operations",
                    |r: &BackgroundOperation| r.id,
                )?,
                validation_outputs: all(
                    db,
                    "SELECT body FROM validation_outputs",
                    |r: &CartValidationOutput| r.id,
                )?,
                orders: all(db, "SELECT body FROM orders", |r: &Order| r.id)?,
                history: db
                    .query("SELECT body FROM history ORDER BY seq", &[])
                    .map_err(pg_error)?
                    .iter()
                    .map(record)
                    .collect::<Result<_, _>>()?,
            })
        })?;
        // A stable sort: entries of one cart at one instant keep their commit order.
        data.history.sort_by_key(|h| (h.at, h.cart_id));
        Ok(data)
    }

    /// Whether the database holds no store yet.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        self.read(|db| {
            let row = db
                .query_opt("SELECT 1 FROM stores LIMIT 1", &[])
                .map_err(pg_error)?;
            Ok(row.is_none())
        })
    }

    /// Every stock level, for the built-in stock-table provider.
    pub fn stock(&self) -> Result<Vec<StockLevel>, StoreError> {
        self.read(stock_levels)
    }
}

/// Every stock level, by store and SKU (sorted here: the collation may order text otherwise).
fn stock_levels(db: &mut Conn) -> Result<Vec<StockLevel>, StoreError> {
    let rows = db
        .query("SELECT store_id, sku, quantity::text FROM stock", &[])
        .map_err(pg_error)?;
    let mut levels = rows
        .iter()
        .map(|row| {
            let store: &str = row.try_get(0).map_err(io)?;
            let quantity: &str = row.try_get(2).map_err(io)?;
            Ok(StockLevel {
                store_id: SfId::parse(store).map_err(io)?,
                sku: row.try_get(1).map_err(io)?,
                quantity: quantity.parse().map_err(io)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    levels.sort_by(|a, b| (a.store_id, &a.sku).cmp(&(b.store_id, &b.sku)));
    Ok(levels)
}

/// A connection listening on the work channel.
fn listener(config: &Config) -> Result<Client, StoreError> {
    let mut client = postgres::Config::from(config.clone())
        .connect(NoTls)
        .map_err(|e| {
            StoreError::caused(
                format!("cannot connect to PostgreSQL: {}", with_causes(&e)),
                e,
            )
        })?;
    client.batch_execute(LISTEN_FOR_WORK).map_err(pg_error)?;
    Ok(client)
}

/// Calls `wake` for each notification until `stop` is set, connecting again when the
/// connection breaks.
fn listen(mut client: Client, config: &Config, stop: &AtomicBool, wake: &dyn Fn()) {
    while !stop.load(Ordering::Acquire) {
        let next = client.notifications().timeout_iter(LISTEN_TICK).next();
        match next {
            Ok(Some(_)) => wake(),
            Ok(None) if !client.is_closed() => {}
            broken => {
                if let Err(e) = broken {
                    tracing::warn!(error = %with_causes(&e), "listening for work failed");
                }
                let Some(again) = reconnect(config, stop) else {
                    return;
                };
                client = again;
                wake();
            }
        }
    }
}

/// A new listening connection, tried once a second until one opens or `stop` is set.
fn reconnect(config: &Config, stop: &AtomicBool) -> Option<Client> {
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(LISTEN_RECONNECT);
        match listener(config) {
            Ok(client) => return Some(client),
            Err(e) => tracing::warn!(error = %e, "listening for work: reconnecting failed"),
        }
    }
    None
}

/// Applies the migrations this build knows and the database lacks, in one transaction under
/// an advisory lock, so processes starting together migrate once.
fn migrate(conn: &mut Conn) -> Result<(), StoreError> {
    conn.in_tx(READ_COMMITTED, |db| {
        db.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(pg_error)?;
        db.batch_execute(
            "CREATE TABLE IF NOT EXISTS cartflow_schema (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .map_err(pg_error)?;
        let current: i32 = db
            .query_opt("SELECT COALESCE(MAX(version), 0) FROM cartflow_schema", &[])
            .map_err(pg_error)?
            .map_or(Ok(0), |row| row.try_get(0))
            .map_err(pg_error)?;
        let latest = MIGRATIONS.len();
        let current = usize::try_from(current).unwrap_or(0);
        if current > latest {
            return Err(StoreError::Io(
                format!(
                    "the database has schema version {current}, newer than this cartflow's {latest}: upgrade cartflow"
                )
                .into(),
            ));
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            let applied = i32::try_from(index + 1).unwrap_or(i32::MAX);
            db.batch_execute(sql).map_err(|e| {
                StoreError::caused(format!("migration {applied}: {}", with_causes(&e)), e)
            })?;
            db.execute(
                "INSERT INTO cartflow_schema (version) VALUES ($1)",
                &[&applied],
            )
            .map_err(pg_error)?;
        }
        Ok(())
    })
}

impl ToSql for Value<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Text(text) => text.to_sql(ty, out),
            Value::Id(id) => id.as_str().to_sql(ty, out),
            Value::Ids(ids) => texts(ids).to_sql(ty, out),
            Value::Int(n) => n.to_sql(ty, out),
            Value::Bool(flag) => flag.to_sql(ty, out),
            Value::Json(raw) => Json(&**raw).to_sql(ty, out),
            Value::JsonList(raws) => json_list(raws).to_sql(ty, out),
            Value::Time(t) => t.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    /// Checks the type as the value's own kind does.
    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Text(text) => text.to_sql_checked(ty, out),
            Value::Id(id) => id.as_str().to_sql_checked(ty, out),
            Value::Ids(ids) => texts(ids).to_sql_checked(ty, out),
            Value::Int(n) => n.to_sql_checked(ty, out),
            Value::Bool(flag) => flag.to_sql_checked(ty, out),
            Value::Json(raw) => Json(&**raw).to_sql_checked(ty, out),
            Value::JsonList(raws) => json_list(raws).to_sql_checked(ty, out),
            Value::Time(t) => t.to_sql_checked(ty, out),
        }
    }
}

fn json_list(raws: &[Box<serde_json::value::RawValue>]) -> Vec<Json<&serde_json::value::RawValue>> {
    raws.iter().map(|raw| Json(&**raw)).collect()
}

fn texts(ids: &[SfId]) -> Vec<&str> {
    ids.iter().map(SfId::as_str).collect()
}

/// The error type of a value's conversion.
type BoxError = Box<dyn std::error::Error + Sync + Send>;

fn bound<'a>(params: &'a [Value<'_>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl SqlTx for Conn {
    fn execute(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<u64, StoreError> {
        Conn::execute(self, sql, &bound(params)).map_err(pg_error)
    }

    fn records<T: DeserializeOwned>(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> Result<Vec<T>, StoreError> {
        let rows = self.query(sql, &bound(params)).map_err(pg_error)?;
        rows.iter().map(record).collect()
    }

    fn first_row(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> Result<Option<Vec<Option<String>>>, StoreError> {
        let row = self.query_opt(sql, &bound(params)).map_err(pg_error)?;
        row.as_ref().map(columns_as_text).transpose()
    }

    fn exists(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<bool, StoreError> {
        let row = self.query_opt(sql, &bound(params)).map_err(pg_error)?;
        Ok(row.is_some())
    }

    /// Every write and the `COMMIT` in one round trip, with the transaction's `BEGIN` when it
    /// is still to go, after asking whether each cart a write is guarded by exists (the answer
    /// a refusal needs, asked before any write can abort the transaction). A guarded write is
    /// sent in its [`raising`] form, so one that writes no row aborts the transaction and the
    /// `COMMIT` rolls it back. The answers are read in order, so the error is the one the
    /// writes would meet one by one.
    fn finish_with_writes(&mut self, writes: &[Write<'_>]) -> Result<(), StoreError> {
        let statements = writes
            .iter()
            .map(|w| self.write_statement(w))
            .collect::<Result<Vec<_>, _>>()
            .map_err(pg_error)?;
        let exists = self.statement(sql::CART_EXISTS).map_err(pg_error)?;
        let carts: Vec<SfId> = writes.iter().filter_map(guarded_cart).collect();
        let cart_ids = texts(&carts);
        let cart_params: Vec<[&(dyn ToSql + Sync); 1]> =
            cart_ids.iter().map(|id| [id as _]).collect();
        let params: Vec<Vec<&(dyn ToSql + Sync)>> =
            writes.iter().map(|w| bound(&w.params)).collect();
        let begin = self.begin.take();
        let client = &self.client;
        let ((begun, found), (written, committed)) = self.runtime.block_on(join(
            join(
                send_begin(client, begin),
                join_all(cart_params.iter().map(|p| client.query_opt(&exists, p))),
            ),
            join(
                join_all(
                    statements
                        .iter()
                        .zip(&params)
                        .map(|(s, p)| client.execute(s, p)),
                ),
                client.batch_execute("COMMIT"),
            ),
        ));
        // The `COMMIT` was sent: whatever it answers, the transaction is over.
        self.ended = true;
        begun.map_err(pg_error)?;
        let found: Vec<bool> = found
            .into_iter()
            .map(|row| row.map(|row| row.is_some()))
            .collect::<Result<_, _>>()
            .map_err(pg_error)?;
        for (write, written) in writes.iter().zip(written) {
            let Err(e) = written else { continue };
            let Some(guard) = write.guard.filter(|_| refused(&e)) else {
                return Err(pg_error(e));
            };
            return Err(sql::refusal(guard, |cart| {
                let at = carts.iter().position(|c| *c == cart);
                at.map(|at| found[at])
                    .ok_or_else(|| StoreError::Invariant(format!("cart {cart} was not looked up")))
            })?);
        }
        committed.map_err(pg_error)
    }

    fn held_writes(&self, writes: &mut Vec<Write<'_>>, held: Vec<(SfId, Vec<SfId>)>) {
        held_writes(writes, held);
    }

    /// One statement for all of a commit's history, its rows numbered in order.
    fn history_writes<'a>(
        &self,
        writes: &mut Vec<Write<'a>>,
        history: &'a [HistoryEntry],
    ) -> Result<(), StoreError> {
        if history.is_empty() {
            return Ok(());
        }
        let carts = history.iter().map(|h| h.cart_id).collect();
        let bodies = history
            .iter()
            .map(sql::raw_json)
            .collect::<Result<_, _>>()?;
        writes.push(Write::any(
            APPEND_HISTORY,
            vec![Value::Ids(carts), Value::JsonList(bodies)],
        ));
        Ok(())
    }

    fn announce_work(&self, writes: &mut Vec<Write<'_>>) {
        writes.push(Write::any(ANNOUNCE_WORK, Vec::new()));
    }
}

/// The writes that record which records each holder now holds: two statements whatever the
/// number of holders.
fn held_writes(writes: &mut Vec<Write<'_>>, held: Vec<(SfId, Vec<SfId>)>) {
    if held.is_empty() {
        return;
    }
    let holders = held.iter().map(|(holder, _)| *holder).collect();
    writes.push(Write::any(FORGET_HELD, vec![Value::Ids(holders)]));
    let (children, owners): (Vec<SfId>, Vec<SfId>) = held
        .iter()
        .flat_map(|(holder, children)| children.iter().map(move |child| (*child, *holder)))
        .unzip();
    if !children.is_empty() {
        writes.push(Write::any(
            HOLD,
            vec![Value::Ids(children), Value::Ids(owners)],
        ));
    }
}

/// Several carts' lines, each cart's in the order [`Store::cart_items`] gives them.
const ITEMS_OF_CARTS: &str =
    "SELECT body FROM cart_items WHERE cart_id = ANY($1) ORDER BY cart_id, id";
/// A commit's history rows, numbered (`seq`) in the order given.
const APPEND_HISTORY: &str = "INSERT INTO history (cart_id, body)
     SELECT cart_id, body FROM unnest($1::text[], $2::jsonb[]) WITH ORDINALITY
       AS h(cart_id, body, n) ORDER BY n";
const FORGET_HELD: &str = "DELETE FROM record_owners WHERE owner_id = ANY($1)";
const HOLD: &str = "INSERT INTO record_owners (id, owner_id)
     SELECT * FROM unnest($1::text[], $2::text[])
     ON CONFLICT (id) DO UPDATE SET owner_id = excluded.owner_id";

/// `sql`, a write guarded to write one row, as a statement that fails (division by zero,
/// [`refused`]) unless it writes exactly one, so a refusal aborts the transaction it is in.
fn raising(sql: &str) -> String {
    format!("WITH written AS ({sql} RETURNING 1) SELECT 1 / (count(*) = 1)::int FROM written")
}

/// Whether `e` is a [`raising`] write's refusal.
fn refused(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::DIVISION_BY_ZERO)
}

/// The cart whose existence a write's refusal would ask about.
fn guarded_cart(write: &Write<'_>) -> Option<SfId> {
    match write.guard {
        Some(sql::Guard::Cart { id, .. }) => Some(id),
        _ => None,
    }
}

/// How one claim transaction ended.
enum Round {
    Claimed(SfId),
    /// No candidate left (or every one offered was passed by).
    Empty,
    /// The commit lost to a concurrent one: try again in a fresh transaction.
    Retry,
}

/// One claim transaction: lock the oldest New operation nobody else holds, read its snapshot
/// in the same transaction, let `claim` decide, write its commit, commit. The closure only
/// decides; the provider runs after this transaction has ended.
fn claim_round(
    conn: &mut Conn,
    claim: &mut ClaimFn<'_>,
    passed: &mut Vec<SfId>,
) -> Result<Round, StoreError> {
    conn.open_tx(REPEATABLE_READ);
    let round = first_claimable(conn, claim, passed);
    // Only a claim is committed: an empty round, a lost race or an error is rolled back.
    let claimed = matches!(round, Ok(Round::Claimed(_)));
    match conn.end(claimed) {
        Err(e) if claimed => Err(pg_error(e)),
        _ => round,
    }
}

/// Inside the claim transaction: offers candidates to `claim` until one is claimed. Each
/// candidate is locked and read in one statement.
fn first_claimable(
    db: &mut Conn,
    claim: &mut ClaimFn<'_>,
    passed: &mut Vec<SfId>,
) -> Result<Round, StoreError> {
    loop {
        if passed.len() >= CLAIM_CANDIDATES {
            return Ok(Round::Empty);
        }
        // The transaction's snapshot is taken here; a row that changed since then makes this
        // a serialization failure (Conflict), and the caller starts a fresh transaction.
        let Some(snapshot) = claimable_snapshots(db, passed, 1)?.pop() else {
            return Ok(Round::Empty);
        };
        let id = offered(&snapshot)?;
        let Some(commit) = claim(snapshot)? else {
            passed.push(id);
            continue;
        };
        return match sql::apply(db, &commit) {
            Ok(()) => Ok(Round::Claimed(id)),
            Err(StoreError::Conflict(_)) => {
                // The round rolls back; this candidate is passed by.
                passed.push(id);
                Ok(Round::Retry)
            }
            Err(e) => Err(e),
        };
    }
}

/// How one batch claim transaction ended.
enum Batch {
    /// These were claimed, in the order offered.
    Claimed(Vec<SfId>),
    /// No operation is claimable.
    Empty,
    /// Every candidate was passed by.
    Passed,
}

/// One batch claim transaction: lock and read up to `max` candidates in one statement, let
/// `claim` take what it will, write every claim with the `COMMIT` in one round trip.
fn claim_batch_round(
    conn: &mut Conn,
    max: usize,
    claim: &mut BatchClaimFn<'_>,
) -> Result<Batch, StoreError> {
    conn.open_tx(REPEATABLE_READ);
    let batch = take_batch(conn, max, claim);
    let claimed = matches!(batch, Ok(Batch::Claimed(_)));
    match conn.end(claimed) {
        Err(e) if claimed => Err(pg_error(e)),
        _ => batch,
    }
}

/// Inside the batch claim transaction: offers each candidate, then writes the claims taken.
fn take_batch(
    db: &mut Conn,
    max: usize,
    claim: &mut BatchClaimFn<'_>,
) -> Result<Batch, StoreError> {
    let snapshots = claimable_snapshots(db, &[], max)?;
    if snapshots.is_empty() {
        return Ok(Batch::Empty);
    }
    let mut taken = Vec::new();
    for snapshot in snapshots {
        let id = offered(&snapshot)?;
        if let Some(commit) = claim(snapshot, taken.len())? {
            taken.push((id, commit));
        }
    }
    if taken.is_empty() {
        return Ok(Batch::Passed);
    }
    // Every claim's history goes in one statement: a statement's cost is mostly its own.
    let mut claimed = Vec::with_capacity(taken.len());
    let mut history = Vec::new();
    let mut bare = Vec::with_capacity(taken.len());
    for (id, commit) in taken {
        claimed.push(id);
        history.extend(commit.history);
        bare.push(Commit {
            changes: commit.changes,
            history: Vec::new(),
        });
    }
    let mut writes = Vec::new();
    for commit in &bare {
        writes.extend(sql::plan(db, commit)?);
    }
    db.history_writes(&mut writes, &history)?;
    db.finish_with_writes(&writes)?;
    Ok(Batch::Claimed(claimed))
}

impl Store for PostgresStore {
    fn user(&self, id: &SfId) -> Result<Option<User>, StoreError> {
        self.read(|db| sql::by_id(db, Table::Users, id))
    }

    /// One statement, which sees one snapshot without a transaction around it: one round trip.
    fn load(&self, key: LoadKey) -> Result<Snapshot, StoreError> {
        self.read(|db| sql::snapshot(db, key))
    }

    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        // READ COMMITTED suffices: nothing here is read to decide; a version-guarded UPDATE
        // racing another waits for it and then matches zero rows (a Conflict).
        self.in_tx(READ_COMMITTED, |db| sql::apply(db, commit))
    }

    /// One REPEATABLE READ transaction for the reads, the decision and the writes: a row
    /// another commit changed after the reads makes the writes a serialization failure
    /// ([`StoreError::Conflict`]), and the caller decides again.
    fn transact(&self, reads: &Reads, decide: &mut DecideFn<'_>) -> Result<(), StoreError> {
        self.in_tx(REPEATABLE_READ, |db| sql::transact(db, reads, decide))
    }

    /// A thread with a connection of its own `LISTEN`s on the channel every commit that creates
    /// work notifies. A broken connection is opened again (after a second), and the workers are
    /// woken then, for what they may have missed.
    fn watch_for_work(
        &self,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Option<WorkWatch>, StoreError> {
        let client = listener(&self.config)?;
        let config = self.config.clone();
        WorkWatch::spawn("cartflow-listen", move |stop| {
            listen(client, &config, stop, &*wake);
        })
        .map(Some)
        .map_err(|e| StoreError::caused(format!("cannot start listening for work: {e}"), e))
    }

    fn claimable_operations(&self, n: usize) -> Result<Vec<SfId>, StoreError> {
        self.read(|db| {
            db.query(
                "SELECT o.id FROM operations o JOIN carts c ON c.id = o.cart_id
                 WHERE o.status = 'New' AND c.status <> $1
                 ORDER BY o.submitted_at, o.id LIMIT $2",
                &[&CartStatus::Closed.as_str(), &limit(n)],
            )
            .map_err(pg_error)?
            .iter()
            .map(id_of)
            .collect()
        })
    }

    fn expired_operations(&self, now: DateTime<Utc>, n: usize) -> Result<Vec<SfId>, StoreError> {
        self.read(|db| {
            db.query(
                "SELECT id FROM operations WHERE status = 'Running' AND expires_at <= $1
                 ORDER BY expires_at, id LIMIT $2",
                &[&now, &limit(n)],
            )
            .map_err(pg_error)?
            .iter()
            .map(id_of)
            .collect()
        })
    }

    fn claim_next(&self, claim: &mut ClaimFn<'_>) -> Result<Option<SfId>, StoreError> {
        let mut passed = Vec::new();
        for _ in 0..CLAIM_ROUNDS {
            match self.with_conn(|conn| claim_round(conn, claim, &mut passed)) {
                Ok(Round::Claimed(id)) => return Ok(Some(id)),
                Ok(Round::Empty) => return Ok(None),
                // A concurrent commit won (a lost compare-and-set, or a serialization failure
                // or deadlock, which abort the transaction): start a fresh one.
                Ok(Round::Retry) | Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Up to `max` candidates locked and read in one statement, their claims written with the
    /// `COMMIT` in one round trip. A batch whose commit lost a race, or that took nothing,
    /// falls back to one [`Store::claim_next`].
    fn claim_batch(
        &self,
        max: usize,
        claim: &mut BatchClaimFn<'_>,
    ) -> Result<Vec<SfId>, StoreError> {
        match self.with_conn(|conn| claim_batch_round(conn, max.max(1), claim)) {
            Ok(Batch::Claimed(ids)) => return Ok(ids),
            Ok(Batch::Empty) => return Ok(Vec::new()),
            Ok(Batch::Passed) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let one = self.claim_next(&mut |snapshot| claim(snapshot, 0))?;
        Ok(one.into_iter().collect())
    }

    fn cart(&self, id: &SfId) -> Result<Option<WebCart>, StoreError> {
        self.read(|db| sql::by_id(db, Table::Carts, id))
    }

    fn carts_after(&self, after: Option<&SfId>, limit: usize) -> Result<Vec<WebCart>, StoreError> {
        self.read(|db| sql::carts_after(db, after, limit))
    }

    fn cart_items(&self, cart_id: &SfId) -> Result<Vec<CartItem>, StoreError> {
        self.read(|db| {
            sql::listed(
                db,
                "SELECT body FROM cart_items WHERE cart_id = $1 ORDER BY id",
                cart_id,
            )
        })
    }

    /// One statement for every cart's lines.
    fn cart_items_of(&self, carts: &[SfId]) -> Result<CartLines, StoreError> {
        let ids = texts(carts);
        let rows = self.read(|db| db.query(ITEMS_OF_CARTS, &[&ids]).map_err(pg_error))?;
        let mut lines: HashMap<SfId, Vec<CartItem>> =
            carts.iter().map(|cart| (*cart, Vec::new())).collect();
        for row in &rows {
            let item: CartItem = record(row)?;
            lines.entry(item.cart_id).or_default().push(item);
        }
        Ok(lines
            .into_iter()
            .map(|(cart, items)| (cart, Arc::new(items)))
            .collect())
    }

    fn session(&self, id: &SfId) -> Result<Option<CartCheckoutSession>, StoreError> {
        self.read(|db| sql::by_id(db, Table::Sessions, id))
    }

    fn sessions_of(&self, cart_id: &SfId) -> Result<Vec<CartCheckoutSession>, StoreError> {
        self.read(|db| {
            sql::listed(
                db,
                "SELECT body FROM sessions WHERE cart_id = $1 ORDER BY seq",
                cart_id,
            )
        })
    }

    fn operation(&self, id: &SfId) -> Result<Option<BackgroundOperation>, StoreError> {
        self.read(|db| sql::by_id(db, Table::Operations, id))
    }

    fn operations_of(&self, cart_id: &SfId) -> Result<Vec<BackgroundOperation>, StoreError> {
        self.read(|db| {
            sql::listed(
                db,
                "SELECT body FROM operations WHERE cart_id = $1 ORDER BY submitted_at, seq",
                cart_id,
            )
        })
    }

    fn validation_outputs(&self, cart_id: &SfId) -> Result<Vec<CartValidationOutput>, StoreError> {
        self.read(|db| {
            sql::listed(
                db,
                "SELECT body FROM validation_outputs WHERE cart_id = $1 ORDER BY seq",
                cart_id,
            )
        })
    }

    fn cart_item(&self, id: &SfId) -> Result<Option<CartItem>, StoreError> {
        self.read(|db| sql::by_id(db, Table::CartItems, id))
    }

    fn validation_output(&self, id: &SfId) -> Result<Option<CartValidationOutput>, StoreError> {
        self.read(|db| sql::by_id(db, Table::Outputs, id))
    }

    fn order(&self, id: &SfId) -> Result<Option<Order>, StoreError> {
        self.read(|db| sql::by_id(db, Table::Orders, id))
    }

    fn history(&self, cart_id: &SfId) -> Result<Vec<HistoryEntry>, StoreError> {
        self.read(|db| {
            sql::listed(
                db,
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
        let after = after.copied().unwrap_or_default();
        let transaction = after.transaction().to_string();
        self.read(|db| {
            db.records(
                EVENTS_AFTER,
                &[
                    Value::Text(&transaction),
                    sql::int(after.sequence()),
                    sql::int(limit as u64),
                ],
            )
        })
    }

    fn last_event(&self) -> Result<Option<EventPosition>, StoreError> {
        self.read(|db| sql::last_event(db, LAST_EVENT))
    }

    fn webhook_cursor(&self, hook: &str) -> Result<Option<EventPosition>, StoreError> {
        self.read(|db| sql::webhook_cursor(db, hook))
    }

    fn advance_webhook(
        &self,
        hook: &str,
        to: Option<&EventPosition>,
        delivery: Option<&Delivery>,
    ) -> Result<(), StoreError> {
        self.in_tx(READ_COMMITTED, |db| {
            sql::advance_webhook(db, hook, to, delivery)
        })
    }

    fn deliveries(&self, hook: &str, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.read(|db| sql::deliveries(db, hook, limit))
    }

    fn begin_keyed(
        &self,
        request: &KeyedRequest,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<KeyState, StoreError> {
        // READ COMMITTED: a concurrent reservation of the same key makes the insert wait for
        // it and then do nothing; the select that follows sees it.
        self.in_tx(READ_COMMITTED, |db| {
            db.execute(
                "DELETE FROM idempotency_keys WHERE expires_at <= $1",
                &[&now],
            )
            .map_err(pg_error)?;
            let inserted = db
                .execute(
                    "INSERT INTO idempotency_keys (user_id, key, fingerprint, expires_at)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[
                        &request.user.as_str(),
                        &request.key,
                        &request.fingerprint,
                        &expires_at,
                    ],
                )
                .map_err(pg_error)?;
            if inserted == 1 {
                return Ok(KeyState::Reserved);
            }
            let row = db
                .query_opt(
                    "SELECT fingerprint, status, body FROM idempotency_keys
                     WHERE user_id = $1 AND key = $2",
                    &[&request.user.as_str(), &request.key],
                )
                .map_err(pg_error)?
                .ok_or_else(|| StoreError::Conflict("the key was released meanwhile".into()))?;
            let fingerprint: String = row.try_get(0).map_err(io)?;
            let status: Option<i32> = row.try_get(1).map_err(io)?;
            let body: Option<Vec<u8>> = row.try_get(2).map_err(io)?;
            key_state(
                &fingerprint,
                &request.fingerprint,
                status.map(i64::from),
                body,
            )
        })
    }

    fn keep_answer(&self, request: &KeyedRequest, answer: &KeptAnswer) -> Result<(), StoreError> {
        self.read(|db| {
            db.execute(
                "UPDATE idempotency_keys SET status = $1, body = $2
                 WHERE user_id = $3 AND key = $4 AND fingerprint = $5",
                &[
                    &i32::from(answer.status),
                    &answer.body,
                    &request.user.as_str(),
                    &request.key,
                    &request.fingerprint,
                ],
            )
            .map_err(pg_error)?;
            Ok(())
        })
    }

    fn release_key(&self, request: &KeyedRequest) -> Result<(), StoreError> {
        self.read(|db| {
            db.execute(
                "DELETE FROM idempotency_keys
                 WHERE user_id = $1 AND key = $2 AND fingerprint = $3 AND status IS NULL",
                &[&request.user.as_str(), &request.key, &request.fingerprint],
            )
            .map_err(pg_error)?;
            Ok(())
        })
    }

    fn owner_of(&self, id: &SfId) -> Result<Option<SfId>, StoreError> {
        self.read(|db| {
            let row = db
                .query_opt(
                    "SELECT owner_id FROM record_owners WHERE id = $1",
                    &[&id.as_str()],
                )
                .map_err(pg_error)?;
            row.map(|r| {
                let text: String = r.get(0);
                SfId::parse(&text).map_err(io)
            })
            .transpose()
        })
    }

    fn web_stores(&self) -> Result<Vec<WebStore>, StoreError> {
        self.read(|db| {
            let rows = db.query("SELECT body FROM stores", &[]).map_err(pg_error)?;
            let mut stores = rows
                .iter()
                .map(record)
                .collect::<Result<Vec<WebStore>, _>>()?;
            stores.sort_by_key(|s| s.id);
            Ok(stores)
        })
    }

    fn operation_counts(&self) -> Result<super::OperationCounts, StoreError> {
        self.read(|db| {
            let rows = db
                .query(
                    "SELECT status, count(*) FROM operations
                     WHERE status IN ('New', 'Running') GROUP BY status",
                    &[],
                )
                .map_err(pg_error)?;
            let mut counts = super::OperationCounts::default();
            for row in &rows {
                let (status, count): (String, i64) = (row.get(0), row.get(1));
                counts.add(&status, count.max(0) as u64);
            }
            Ok(counts)
        })
    }
}
