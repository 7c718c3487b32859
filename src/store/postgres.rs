//! The PostgreSQL store: one database shared by many engine processes. Snapshots are read in
//! one REPEATABLE READ transaction, commits compare-and-set every record's version in one
//! transaction, the invariants are partial unique indexes, and workers claim operations with
//! `FOR UPDATE SKIP LOCKED` so they pass each other's candidates by instead of racing.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::error::{DbError, SqlState};
use postgres::types::{Json, ToSql};
use postgres::{Client, Config, GenericClient, IsolationLevel, NoTls, Row, Statement};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::machine::Snapshot;
use crate::model::{
    BackgroundOperation, CartCheckoutSession, CartItem, CartStatus, CartValidationOutput, Order,
    SfId, User, WebCart, WebStore,
};
use crate::store::{
    ClaimFn, Commit, DataSet, HistoryEntry, KeptAnswer, KeyState, KeyedRequest, LoadKey,
    StockLevel, Store, key_state,
};

/// The schema migrations, in order; schema version N is the first N applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_initial.sql"),
    include_str!("../../migrations/postgres/0002_idempotency_keys.sql"),
    include_str!("../../migrations/postgres/0003_record_owners.sql"),
];

/// The advisory lock that serializes migrations across processes ("cartflow" in ASCII).
const MIGRATION_LOCK: i64 = 0x6361_7274_666c_6f77;

/// Idle connections kept for reuse; more are opened while more threads need one at once.
const MAX_IDLE: usize = 16;

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

/// A pooled client and the statements prepared on it.
struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

/// A client or a transaction, with the statement cache of its connection.
struct Db<'a, C> {
    client: &'a mut C,
    statements: &'a mut HashMap<&'static str, Statement>,
}

impl<C: GenericClient> Db<'_, C> {
    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query(&statement, params)
    }

    fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query_opt(&statement, params)
    }

    fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.execute(&statement, params)
    }
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
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
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => StoreError::Invariant(message),
        Some(code)
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            StoreError::Conflict(message)
        }
        _ => StoreError::Io(message),
    }
}

/// Whether `e` broke the unique constraint `constraint`.
fn violates(e: &postgres::Error, constraint: &str) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
        && e.as_db_error().and_then(DbError::constraint) == Some(constraint)
}

fn conflict(kind: &str, id: &SfId, expected: u64) -> StoreError {
    StoreError::Conflict(format!("{kind} {id} is no longer at version {expected}"))
}

fn exists_already(kind: &str, id: &SfId) -> StoreError {
    StoreError::Conflict(format!("{kind} {id} exists already"))
}

fn version(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn record<T: DeserializeOwned>(row: &Row) -> Result<T, StoreError> {
    row.try_get::<_, Json<T>>(0)
        .map(|Json(value)| value)
        .map_err(|e| StoreError::Io(format!("a stored record is unreadable: {e}")))
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
            StoreError::Io(format!(
                "invalid PostgreSQL connection string: {}",
                with_causes(&e)
            ))
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
        let mut conn = store.open()?;
        migrate(&mut conn.client)?;
        store.release(conn);
        Ok(store)
    }

    fn open(&self) -> Result<Conn, StoreError> {
        let client = self.config.connect(NoTls).map_err(|e| {
            StoreError::Io(format!("cannot connect to PostgreSQL: {}", with_causes(&e)))
        })?;
        Ok(Conn {
            client,
            statements: HashMap::new(),
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
        if conn.client.is_closed() {
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
    fn read<T>(
        &self,
        f: impl FnOnce(&mut Db<'_, Client>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_conn(|conn| {
            f(&mut Db {
                client: &mut conn.client,
                statements: &mut conn.statements,
            })
        })
    }

    /// Runs `f` in one transaction of `isolation` and commits it.
    fn in_tx<T>(
        &self,
        isolation: IsolationLevel,
        read_only: bool,
        f: impl FnOnce(&mut Db<'_, postgres::Transaction<'_>>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_conn(|conn| {
            let mut tx = conn
                .client
                .build_transaction()
                .isolation_level(isolation)
                .read_only(read_only)
                .start()
                .map_err(pg_error)?;
            let value = f(&mut Db {
                client: &mut tx,
                statements: &mut conn.statements,
            })?;
            tx.commit().map_err(pg_error)?;
            Ok(value)
        })
    }

    /// Adds every record of a data set in one transaction (for seeding a new database).
    pub fn import(&self, data: &DataSet) -> Result<(), StoreError> {
        data.validate()
            .map_err(|e| StoreError::Invariant(e.to_string()))?;
        self.in_tx(IsolationLevel::ReadCommitted, false, |db| {
            for r in &data.stores {
                insert_body(db, "INSERT INTO stores (id, body) VALUES ($1, $2)", &r.id, r)?;
            }
            for r in &data.accounts {
                insert_body(db, "INSERT INTO accounts (id, body) VALUES ($1, $2)", &r.id, r)?;
            }
            for r in &data.users {
                insert_body(db, "INSERT INTO users (id, body) VALUES ($1, $2)", &r.id, r)?;
            }
            for r in &data.carts {
                db.execute(
                    "INSERT INTO carts (id, version, status, body) VALUES ($1, $2, $3, $4)",
                    &[&r.id.as_str(), &version(r.version), &r.status.as_str(), &Json(r)],
                )
                .map_err(pg_error)?;
            }
            for r in &data.items {
                db.execute(
                    "INSERT INTO cart_items (id, cart_id, body) VALUES ($1, $2, $3)",
                    &[&r.id.as_str(), &r.cart_id.as_str(), &Json(r)],
                )
                .map_err(pg_error)?;
            }
            for s in &data.stock {
                db.execute(
                    "INSERT INTO stock (store_id, sku, quantity) VALUES ($1, $2, $3::text::numeric)",
                    &[&s.store_id.as_str(), &s.sku, &s.quantity.to_string()],
                )
                .map_err(pg_error)?;
            }
            for r in &data.sessions {
                insert_session(db, r)?;
            }
            for r in &data.operations {
                insert_operation(db, r)?;
            }
            for r in &data.validation_outputs {
                insert_output(db, r)?;
            }
            for o in &data.orders {
                insert_order(db, o)?;
            }
            for h in &data.history {
                insert_history(db, h)?;
            }
            reindex(db, crate::store::held_in_dataset(data))
        })
    }

    /// Every record read back as a [`DataSet`], in one consistent view (a REPEATABLE READ,
    /// read-only transaction), ordered as [`SqliteStore::export`](crate::store::SqliteStore::export)
    /// orders them: records by ID, stock by store and SKU, history by time and cart with each
    /// cart's entries in commit order. Sorting happens here, not in SQL, so the database's
    /// collation cannot reorder IDs.
    pub fn export(&self) -> Result<DataSet, StoreError> {
        fn all<C: GenericClient, T: DeserializeOwned>(
            db: &mut Db<'_, C>,
            sql: &'static str,
            id: impl Fn(&T) -> SfId,
        ) -> Result<Vec<T>, StoreError> {
            let rows = db.query(sql, &[]).map_err(pg_error)?;
            let mut records = rows.iter().map(record).collect::<Result<Vec<T>, _>>()?;
            records.sort_by_key(|r| id(r));
            Ok(records)
        }
        let mut data = self.in_tx(IsolationLevel::RepeatableRead, true, |db| {
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

    /// Every WebStore, by ID.
    pub fn web_stores(&self) -> Result<Vec<WebStore>, StoreError> {
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
fn stock_levels<C: GenericClient>(db: &mut Db<'_, C>) -> Result<Vec<StockLevel>, StoreError> {
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

/// Applies the migrations this build knows and the database lacks, in one transaction under
/// an advisory lock, so processes starting together migrate once.
fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction().map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(pg_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS cartflow_schema (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .map_err(pg_error)?;
    let current: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM cartflow_schema", &[])
        .and_then(|row| row.try_get(0))
        .map_err(pg_error)?;
    let latest = MIGRATIONS.len();
    let current = usize::try_from(current).unwrap_or(0);
    if current > latest {
        return Err(StoreError::Io(format!(
            "the database has schema version {current}, newer than this cartflow's {latest}: upgrade cartflow"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let applied = i32::try_from(index + 1).unwrap_or(i32::MAX);
        tx.batch_execute(sql)
            .map_err(|e| StoreError::Io(format!("migration {applied}: {}", pg_error(e))))?;
        tx.execute(
            "INSERT INTO cartflow_schema (version) VALUES ($1)",
            &[&applied],
        )
        .map_err(pg_error)?;
    }
    tx.commit().map_err(pg_error)
}

fn insert_body<C: GenericClient, T: Serialize + std::fmt::Debug + Sync>(
    db: &mut Db<'_, C>,
    sql: &'static str,
    id: &SfId,
    record: &T,
) -> Result<(), StoreError> {
    db.execute(sql, &[&id.as_str(), &Json(record)])
        .map_err(pg_error)?;
    Ok(())
}

fn insert_session<C: GenericClient>(
    db: &mut Db<'_, C>,
    s: &CartCheckoutSession,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO sessions (id, cart_id, version, is_archived, body) VALUES ($1, $2, $3, $4, $5)",
        &[&s.id.as_str(), &s.web_cart_id.as_str(), &version(s.version), &s.is_archived, &Json(s)],
    )
    .map_err(|e| {
        if violates(&e, "sessions_pkey") {
            exists_already("session", &s.id)
        } else {
            pg_error(e)
        }
    })?;
    Ok(())
}

fn insert_operation<C: GenericClient>(
    db: &mut Db<'_, C>,
    op: &BackgroundOperation,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO operations (id, cart_id, version, status, submitted_at, expires_at, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &op.id.as_str(),
            &op.cart_id.as_str(),
            &version(op.version),
            &op.status.as_str(),
            &op.submitted_at,
            &op.expires_at,
            &Json(op),
        ],
    )
    .map_err(|e| {
        if violates(&e, "operations_pkey") {
            exists_already("operation", &op.id)
        } else {
            pg_error(e)
        }
    })?;
    Ok(())
}

fn insert_output<C: GenericClient>(
    db: &mut Db<'_, C>,
    o: &CartValidationOutput,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO validation_outputs (id, cart_id, body) VALUES ($1, $2, $3)",
        &[&o.id.as_str(), &o.cart_id.as_str(), &Json(o)],
    )
    .map_err(pg_error)?;
    Ok(())
}

fn insert_order<C: GenericClient>(db: &mut Db<'_, C>, o: &Order) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO orders (id, cart_id, version, status, body) VALUES ($1, $2, $3, $4, $5)",
        &[
            &o.id.as_str(),
            &o.cart_id.as_str(),
            &version(o.version),
            &o.status.as_str(),
            &Json(o),
        ],
    )
    .map_err(|e| {
        if violates(&e, "orders_pkey") {
            exists_already("order", &o.id)
        } else {
            pg_error(e)
        }
    })?;
    Ok(())
}

fn insert_history<C: GenericClient>(
    db: &mut Db<'_, C>,
    h: &HistoryEntry,
) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO history (cart_id, body) VALUES ($1, $2)",
        &[&h.cart_id.as_str(), &Json(h)],
    )
    .map_err(pg_error)?;
    Ok(())
}

/// Rewrites which records each holder holds, in two statements whatever the number of holders.
fn reindex<C: GenericClient>(
    db: &mut Db<'_, C>,
    held: Vec<(SfId, Vec<SfId>)>,
) -> Result<(), StoreError> {
    if held.is_empty() {
        return Ok(());
    }
    let holders: Vec<&str> = held.iter().map(|(holder, _)| holder.as_str()).collect();
    db.execute(
        "DELETE FROM record_owners WHERE owner_id = ANY($1)",
        &[&holders],
    )
    .map_err(pg_error)?;
    let pairs = held
        .iter()
        .flat_map(|(holder, children)| children.iter().map(move |child| (child, holder)));
    let (children, owners): (Vec<&str>, Vec<&str>) = pairs
        .map(|(child, holder)| (child.as_str(), holder.as_str()))
        .unzip();
    if children.is_empty() {
        return Ok(());
    }
    db.execute(
        "INSERT INTO record_owners (id, owner_id) SELECT * FROM unnest($1::text[], $2::text[])
         ON CONFLICT (id) DO UPDATE SET owner_id = excluded.owner_id",
        &[&children, &owners],
    )
    .map_err(pg_error)?;
    Ok(())
}

/// Whether `table` holds a record with this ID.
fn exists<C: GenericClient>(
    db: &mut Db<'_, C>,
    table: &'static str,
    id: &SfId,
) -> Result<bool, StoreError> {
    let sql = match table {
        "sessions" => "SELECT 1 FROM sessions WHERE id = $1",
        "operations" => "SELECT 1 FROM operations WHERE id = $1",
        _ => "SELECT 1 FROM orders WHERE id = $1",
    };
    Ok(db
        .query_opt(sql, &[&id.as_str()])
        .map_err(pg_error)?
        .is_some())
}

/// One record by ID; `sql` selects `body` by `id = $1`.
fn body<C: GenericClient, T: DeserializeOwned>(
    db: &mut Db<'_, C>,
    sql: &'static str,
    id: &SfId,
) -> Result<Option<T>, StoreError> {
    db.query_opt(sql, &[&id.as_str()])
        .map_err(pg_error)?
        .map(|row| record(&row))
        .transpose()
}

/// Every record a query keyed by `$1` returns.
fn bodies<C: GenericClient, T: DeserializeOwned>(
    db: &mut Db<'_, C>,
    sql: &'static str,
    key: &SfId,
) -> Result<Vec<T>, StoreError> {
    db.query(sql, &[&key.as_str()])
        .map_err(pg_error)?
        .iter()
        .map(record)
        .collect()
}

const STORE_BY_ID: &str = "SELECT body FROM stores WHERE id = $1";
const ACCOUNT_BY_ID: &str = "SELECT body FROM accounts WHERE id = $1";
const USER_BY_ID: &str = "SELECT body FROM users WHERE id = $1";
const CART_BY_ID: &str = "SELECT body FROM carts WHERE id = $1";
const SESSION_BY_ID: &str = "SELECT body FROM sessions WHERE id = $1";
const OPERATION_BY_ID: &str = "SELECT body FROM operations WHERE id = $1";
const ORDER_BY_ID: &str = "SELECT body FROM orders WHERE id = $1";

fn cart_snapshot<C: GenericClient>(
    db: &mut Db<'_, C>,
    cart_id: &SfId,
) -> Result<Snapshot, StoreError> {
    let Some(cart) = body::<_, WebCart>(db, CART_BY_ID, cart_id)? else {
        return Ok(Snapshot::default());
    };
    let session: Option<CartCheckoutSession> = body(
        db,
        "SELECT body FROM sessions WHERE cart_id = $1 AND NOT is_archived",
        cart_id,
    )?;
    let operation = match session.as_ref().and_then(|s| s.background_operation_id) {
        Some(op) => body(db, OPERATION_BY_ID, &op)?,
        None => None,
    };
    let active = db
        .query_opt(
            "SELECT 1 FROM operations WHERE cart_id = $1 AND status IN ('New', 'Running') LIMIT 1",
            &[&cart_id.as_str()],
        )
        .map_err(pg_error)?
        .is_some();
    let order = match session.as_ref().and_then(|s| s.order_id) {
        Some(id) => body(db, ORDER_BY_ID, &id)?,
        None => None,
    };
    let has_error_outputs = db
        .query_opt(
            "SELECT 1 FROM validation_outputs WHERE cart_id = $1
               AND body->>'Level' = 'Error' AND NOT (body->>'IsDismissed')::boolean LIMIT 1",
            &[&cart_id.as_str()],
        )
        .map_err(pg_error)?
        .is_some();
    Ok(Snapshot {
        user: None,
        store: body(db, STORE_BY_ID, &cart.web_store_id)?,
        account: body(db, ACCOUNT_BY_ID, &cart.account_id)?,
        cart: Some(cart),
        session,
        operation,
        cart_has_active_operation: active,
        order,
        has_error_outputs,
        edited_item: None,
        lines: Vec::new(),
    })
}

fn snapshot<C: GenericClient>(db: &mut Db<'_, C>, key: LoadKey) -> Result<Snapshot, StoreError> {
    match key {
        LoadKey::Cart(cart) => cart_snapshot(db, &cart),
        LoadKey::Session(id) => match body::<_, CartCheckoutSession>(db, SESSION_BY_ID, &id)? {
            None => Ok(Snapshot::default()),
            Some(session) => {
                let mut snap = cart_snapshot(db, &session.web_cart_id)?;
                snap.operation = match session.background_operation_id {
                    Some(op) => body(db, OPERATION_BY_ID, &op)?,
                    None => None,
                };
                snap.session = Some(session);
                Ok(snap)
            }
        },
        LoadKey::Operation(id) => match body::<_, BackgroundOperation>(db, OPERATION_BY_ID, &id)? {
            None => Ok(Snapshot::default()),
            Some(op) => {
                let mut snap = cart_snapshot(db, &op.cart_id)?;
                snap.session = body(db, SESSION_BY_ID, &op.checkout_session_id)?;
                snap.operation = Some(op);
                Ok(snap)
            }
        },
    }
}

/// Writes a commit inside the caller's transaction: every update guarded by the version the
/// decision read, archives and endings before activations so the unique indexes see the
/// commit's end state, never a half-applied one.
fn apply<C: GenericClient>(db: &mut Db<'_, C>, commit: &Commit) -> Result<(), StoreError> {
    let changes = &commit.changes;
    for cart in &changes.carts {
        let updated = db
            .execute(
                "UPDATE carts SET version = $1, status = $2, body = $3 WHERE id = $4 AND version = $5",
                &[
                    &version(cart.version),
                    &cart.status.as_str(),
                    &Json(cart),
                    &cart.id.as_str(),
                    &(version(cart.version) - 1),
                ],
            )
            .map_err(pg_error)?;
        if updated != 1 {
            let exists = db
                .query_opt("SELECT 1 FROM carts WHERE id = $1", &[&cart.id.as_str()])
                .map_err(pg_error)?
                .is_some();
            return Err(if exists {
                conflict("cart", &cart.id, cart.version.saturating_sub(1))
            } else {
                StoreError::Invariant(format!("cart {} does not exist", cart.id))
            });
        }
    }
    let (archiving, others): (Vec<_>, Vec<_>) =
        changes.sessions.iter().partition(|s| s.is_archived);
    for s in archiving.into_iter().chain(others) {
        let updated = db
            .execute(
                "UPDATE sessions SET version = $1, is_archived = $2, body = $3 WHERE id = $4 AND version = $5",
                &[
                    &version(s.version),
                    &s.is_archived,
                    &Json(s),
                    &s.id.as_str(),
                    &(version(s.version) - 1),
                ],
            )
            .map_err(pg_error)?;
        if updated != 1 {
            // Version 1 is a new record (or one imported at version 0, updated above).
            if s.version == 1 && !exists(db, "sessions", &s.id)? {
                insert_session(db, s)?;
                continue;
            }
            return Err(conflict("session", &s.id, s.version.saturating_sub(1)));
        }
    }
    let (ending, others): (Vec<_>, Vec<_>) = changes
        .operations
        .iter()
        .partition(|o| !o.status.is_active());
    for op in ending.into_iter().chain(others) {
        let updated = db
            .execute(
                "UPDATE operations SET version = $1, status = $2, expires_at = $3, body = $4
                 WHERE id = $5 AND version = $6",
                &[
                    &version(op.version),
                    &op.status.as_str(),
                    &op.expires_at,
                    &Json(op),
                    &op.id.as_str(),
                    &(version(op.version) - 1),
                ],
            )
            .map_err(pg_error)?;
        if updated != 1 {
            // Version 1 is a new record (or one imported at version 0, updated above).
            if op.version == 1 && !exists(db, "operations", &op.id)? {
                insert_operation(db, op)?;
                continue;
            }
            return Err(conflict("operation", &op.id, op.version.saturating_sub(1)));
        }
    }
    if let Some(item) = changes
        .items
        .iter()
        .find(|i| !changes.carts.iter().any(|c| c.id == i.cart_id))
    {
        return Err(StoreError::Invariant(format!(
            "line {} is written without its cart {}, whose version guards it",
            item.id, item.cart_id
        )));
    }
    for cart in &changes.carts {
        for removed in &changes.removed_items {
            db.execute(
                "DELETE FROM cart_items WHERE id = $1 AND cart_id = $2",
                &[&removed.as_str(), &cart.id.as_str()],
            )
            .map_err(pg_error)?;
        }
    }
    for item in &changes.items {
        db.execute(
            "INSERT INTO cart_items (id, cart_id, body) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET body = excluded.body
             WHERE cart_items.cart_id = excluded.cart_id",
            &[&item.id.as_str(), &item.cart_id.as_str(), &Json(item)],
        )
        .map_err(pg_error)?;
    }
    for order in &changes.orders {
        let updated = db
            .execute(
                "UPDATE orders SET version = $1, status = $2, body = $3 WHERE id = $4 AND version = $5",
                &[
                    &version(order.version),
                    &order.status.as_str(),
                    &Json(order),
                    &order.id.as_str(),
                    &(version(order.version) - 1),
                ],
            )
            .map_err(pg_error)?;
        if updated != 1 {
            // Version 1 is a new record (or one imported at version 0, updated above).
            if order.version == 1 && !exists(db, "orders", &order.id)? {
                insert_order(db, order)?;
                continue;
            }
            return Err(conflict(
                "order",
                &order.id,
                order.version.saturating_sub(1),
            ));
        }
    }
    if let Some(cart) = changes.clear_outputs_of {
        db.execute(
            "DELETE FROM validation_outputs WHERE cart_id = $1",
            &[&cart.as_str()],
        )
        .map_err(pg_error)?;
    }
    for output in &changes.outputs {
        insert_output(db, output)?;
    }
    for entry in &commit.history {
        insert_history(db, entry)?;
    }
    reindex(db, crate::store::held_records(changes))
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
    passed: &mut Vec<String>,
) -> Result<Round, StoreError> {
    let mut tx = conn
        .client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .map_err(pg_error)?;
    let mut db = Db {
        client: &mut tx,
        statements: &mut conn.statements,
    };
    let claimed = loop {
        if passed.len() >= CLAIM_CANDIDATES {
            return Ok(Round::Empty);
        }
        // The transaction's snapshot is taken here; a row that changed since then makes this
        // a serialization failure (Conflict), and the caller starts a fresh transaction.
        let row = db
            .query_opt(
                "SELECT o.id FROM operations o JOIN carts c ON c.id = o.cart_id
                 WHERE o.status = 'New' AND c.status <> $1 AND o.id <> ALL($2)
                 ORDER BY o.submitted_at, o.id LIMIT 1
                 FOR UPDATE OF o SKIP LOCKED",
                &[&CartStatus::Closed.as_str(), &*passed],
            )
            .map_err(pg_error)?;
        let Some(row) = row else {
            return Ok(Round::Empty);
        };
        let id = id_of(&row)?;
        let Some(commit) = claim(snapshot(&mut db, LoadKey::Operation(id))?)? else {
            passed.push(id.to_string());
            continue;
        };
        match apply(&mut db, &commit) {
            Ok(()) => break id,
            Err(StoreError::Conflict(_) | StoreError::Invariant(_)) => {
                // Dropping the transaction rolls it back; this candidate is passed by.
                passed.push(id.to_string());
                return Ok(Round::Retry);
            }
            Err(e) => return Err(e),
        }
    };
    tx.commit().map_err(pg_error)?;
    Ok(Round::Claimed(claimed))
}

impl Store for PostgresStore {
    fn user(&self, id: &SfId) -> Result<Option<User>, StoreError> {
        self.read(|db| body(db, USER_BY_ID, id))
    }

    fn load(&self, key: LoadKey) -> Result<Snapshot, StoreError> {
        self.in_tx(IsolationLevel::RepeatableRead, true, |db| snapshot(db, key))
    }

    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        // READ COMMITTED suffices: nothing here is read to decide; a version-guarded UPDATE
        // racing another waits for it and then matches zero rows (a Conflict).
        self.in_tx(IsolationLevel::ReadCommitted, false, |db| apply(db, commit))
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

    fn cart(&self, id: &SfId) -> Result<Option<WebCart>, StoreError> {
        self.read(|db| body(db, CART_BY_ID, id))
    }

    fn cart_items(&self, cart_id: &SfId) -> Result<Vec<CartItem>, StoreError> {
        self.read(|db| {
            bodies(
                db,
                "SELECT body FROM cart_items WHERE cart_id = $1 ORDER BY id",
                cart_id,
            )
        })
    }

    fn session(&self, id: &SfId) -> Result<Option<CartCheckoutSession>, StoreError> {
        self.read(|db| body(db, SESSION_BY_ID, id))
    }

    fn sessions_of(&self, cart_id: &SfId) -> Result<Vec<CartCheckoutSession>, StoreError> {
        self.read(|db| {
            bodies(
                db,
                "SELECT body FROM sessions WHERE cart_id = $1 ORDER BY seq",
                cart_id,
            )
        })
    }

    fn operation(&self, id: &SfId) -> Result<Option<BackgroundOperation>, StoreError> {
        self.read(|db| body(db, OPERATION_BY_ID, id))
    }

    fn operations_of(&self, cart_id: &SfId) -> Result<Vec<BackgroundOperation>, StoreError> {
        self.read(|db| {
            bodies(
                db,
                "SELECT body FROM operations WHERE cart_id = $1 ORDER BY submitted_at, seq",
                cart_id,
            )
        })
    }

    fn validation_outputs(&self, cart_id: &SfId) -> Result<Vec<CartValidationOutput>, StoreError> {
        self.read(|db| {
            bodies(
                db,
                "SELECT body FROM validation_outputs WHERE cart_id = $1 ORDER BY seq",
                cart_id,
            )
        })
    }

    fn cart_item(&self, id: &SfId) -> Result<Option<CartItem>, StoreError> {
        self.read(|db| body(db, "SELECT body FROM cart_items WHERE id = $1", id))
    }

    fn validation_output(&self, id: &SfId) -> Result<Option<CartValidationOutput>, StoreError> {
        self.read(|db| body(db, "SELECT body FROM validation_outputs WHERE id = $1", id))
    }

    fn order(&self, id: &SfId) -> Result<Option<Order>, StoreError> {
        self.read(|db| body(db, ORDER_BY_ID, id))
    }

    fn history(&self, cart_id: &SfId) -> Result<Vec<HistoryEntry>, StoreError> {
        self.read(|db| {
            bodies(
                db,
                "SELECT body FROM history WHERE cart_id = $1 ORDER BY seq",
                cart_id,
            )
        })
    }

    fn begin_keyed(
        &self,
        request: &KeyedRequest,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<KeyState, StoreError> {
        // READ COMMITTED: a concurrent reservation of the same key makes the insert wait for
        // it and then do nothing; the select that follows sees it.
        self.in_tx(IsolationLevel::ReadCommitted, false, |db| {
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
                SfId::parse(&text).map_err(|e| StoreError::Io(e.to_string()))
            })
            .transpose()
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
