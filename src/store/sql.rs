//! The one SQL path: how a snapshot is read, a commit written and a data set imported, for
//! SQLite and PostgreSQL alike. Each dialect runs statements through [`SqlTx`]; the
//! statements here are written in the SQL both accept (`$n` placeholders, numbered in the
//! order they first appear, so SQLite binds them by position as PostgreSQL does; `->` and
//! `->>` on JSON bodies; upserts with `ON CONFLICT ... DO UPDATE ... WHERE`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::error::StoreError;
use crate::machine::Snapshot;
use crate::model::{BackgroundOperation, CartCheckoutSession, Order, SfId, WebCart};
use crate::store::{Commit, DataSet, DecideFn, HistoryEntry, LoadKey, Reads};

/// A value bound to a placeholder. Each dialect binds it as its columns hold it (a time is
/// RFC 3339 text on SQLite and a `timestamptz` on PostgreSQL; a record is text or `jsonb`).
#[derive(Debug)]
pub(crate) enum Value<'a> {
    /// Text, such as an ID.
    Text(&'a str),
    /// An integer, such as a version.
    Int(i64),
    /// A flag.
    Bool(bool),
    /// A record, serialized once.
    Json(Box<RawValue>),
    /// An instant, or none.
    Time(Option<DateTime<Utc>>),
}

/// A record as the JSON body its table keeps.
pub(crate) fn json<T: Serialize>(record: &T) -> Result<Value<'static>, StoreError> {
    serde_json::value::to_raw_value(record)
        .map(Value::Json)
        .map_err(|e| StoreError::Io(format!("a record cannot be written: {e}")))
}

/// A record's version as a column holds it (versions past `i64::MAX` do not occur).
pub(crate) fn version(v: u64) -> Value<'static> {
    Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

/// One transaction on one connection of a dialect.
pub(crate) trait SqlTx {
    /// Runs a statement; the number of rows it wrote.
    fn execute(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<u64, StoreError>;
    /// The records in the first column of each row the query returns.
    fn records<T: DeserializeOwned>(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> Result<Vec<T>, StoreError>;
    /// Whether the query returns a row.
    fn exists(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<bool, StoreError>;
    /// Rewrites which records each holder holds: the holders' rows go, their children's come.
    fn reindex(&mut self, held: Vec<(SfId, Vec<SfId>)>) -> Result<(), StoreError> {
        for (holder, children) in &held {
            self.execute(FORGET_HELD, &[Value::Text(holder.as_str())])?;
            for child in children {
                self.execute(
                    HOLD,
                    &[Value::Text(child.as_str()), Value::Text(holder.as_str())],
                )?;
            }
        }
        Ok(())
    }
}

/// The first record a query returns, if any.
fn record<T: DeserializeOwned>(
    tx: &mut impl SqlTx,
    sql: &'static str,
    id: &SfId,
) -> Result<Option<T>, StoreError> {
    Ok(tx
        .records(sql, &[Value::Text(id.as_str())])?
        .into_iter()
        .next())
}

/// The tables records are read from by ID.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Table {
    /// WebStores.
    Stores,
    /// Accounts.
    Accounts,
    /// Users.
    Users,
    /// WebCarts.
    Carts,
    /// Cart lines.
    CartItems,
    /// Checkout sessions.
    Sessions,
    /// Background operations.
    Operations,
    /// CartValidationOutputs.
    Outputs,
    /// Orders.
    Orders,
}

impl Table {
    /// The query that reads one of its records by ID.
    fn by_id(self) -> &'static str {
        match self {
            Table::Stores => "SELECT body FROM stores WHERE id = $1",
            Table::Accounts => "SELECT body FROM accounts WHERE id = $1",
            Table::Users => "SELECT body FROM users WHERE id = $1",
            Table::Carts => "SELECT body FROM carts WHERE id = $1",
            Table::CartItems => "SELECT body FROM cart_items WHERE id = $1",
            Table::Sessions => "SELECT body FROM sessions WHERE id = $1",
            Table::Operations => "SELECT body FROM operations WHERE id = $1",
            Table::Outputs => "SELECT body FROM validation_outputs WHERE id = $1",
            Table::Orders => "SELECT body FROM orders WHERE id = $1",
        }
    }
}

/// One record of `table` by ID.
pub(crate) fn by_id<T: DeserializeOwned>(
    tx: &mut impl SqlTx,
    table: Table,
    id: &SfId,
) -> Result<Option<T>, StoreError> {
    record(tx, table.by_id(), id)
}

/// The records a query keyed by one ID returns, in its order.
pub(crate) fn listed<T: DeserializeOwned>(
    tx: &mut impl SqlTx,
    sql: &'static str,
    key: &SfId,
) -> Result<Vec<T>, StoreError> {
    tx.records(sql, &[Value::Text(key.as_str())])
}

const ACTIVE_SESSION: &str = "SELECT body FROM sessions WHERE cart_id = $1 AND NOT is_archived";
const HAS_ACTIVE_OPERATION: &str =
    "SELECT 1 FROM operations WHERE cart_id = $1 AND status IN ('New', 'Running') LIMIT 1";
const HAS_ERROR_OUTPUTS: &str = "SELECT 1 FROM validation_outputs WHERE cart_id = $1
       AND body->>'Level' = 'Error' AND NOT (body->'IsDismissed' = 'true') LIMIT 1";

/// Reads everything `decide` needs about one cart, inside the caller's transaction.
pub(crate) fn snapshot(tx: &mut impl SqlTx, key: LoadKey) -> Result<Snapshot, StoreError> {
    match key {
        LoadKey::Cart(cart) => cart_snapshot(tx, &cart),
        LoadKey::Session(id) => {
            let Some(session) = by_id::<CartCheckoutSession>(tx, Table::Sessions, &id)? else {
                return Ok(Snapshot::default());
            };
            let mut snap = cart_snapshot(tx, &session.web_cart_id)?;
            snap.operation = match session.background_operation_id {
                Some(op) => by_id(tx, Table::Operations, &op)?,
                None => None,
            };
            snap.session = Some(session);
            Ok(snap)
        }
        LoadKey::Operation(id) => {
            let Some(op) = by_id::<BackgroundOperation>(tx, Table::Operations, &id)? else {
                return Ok(Snapshot::default());
            };
            let mut snap = cart_snapshot(tx, &op.cart_id)?;
            snap.session = by_id(tx, Table::Sessions, &op.checkout_session_id)?;
            snap.operation = Some(op);
            Ok(snap)
        }
    }
}

const CART_LINES: &str = "SELECT body FROM cart_items WHERE cart_id = $1 ORDER BY id";

/// Reads what a command reads, inside the caller's transaction.
fn read(tx: &mut impl SqlTx, reads: &Reads) -> Result<Snapshot, StoreError> {
    let mut snapshot = snapshot(tx, reads.key)?;
    if reads.lines
        && let Some(cart) = &snapshot.cart
    {
        snapshot.lines = listed(tx, CART_LINES, &cart.id)?;
    }
    if let Some(user) = &reads.user {
        snapshot.user = by_id(tx, Table::Users, user)?;
    }
    Ok(snapshot)
}

/// Reads, decides and writes inside the caller's transaction.
pub(crate) fn transact(
    tx: &mut impl SqlTx,
    reads: &Reads,
    decide: &mut DecideFn<'_>,
) -> Result<(), StoreError> {
    match decide(read(tx, reads)?)? {
        Some(commit) => apply(tx, &commit),
        None => Ok(()),
    }
}

fn cart_snapshot(tx: &mut impl SqlTx, cart_id: &SfId) -> Result<Snapshot, StoreError> {
    let Some(cart) = by_id::<WebCart>(tx, Table::Carts, cart_id)? else {
        return Ok(Snapshot::default());
    };
    let key = [Value::Text(cart_id.as_str())];
    let session: Option<CartCheckoutSession> = record(tx, ACTIVE_SESSION, cart_id)?;
    let operation = match session.as_ref().and_then(|s| s.background_operation_id) {
        Some(op) => by_id(tx, Table::Operations, &op)?,
        None => None,
    };
    let order = match session.as_ref().and_then(|s| s.order_id) {
        Some(id) => by_id(tx, Table::Orders, &id)?,
        None => None,
    };
    Ok(Snapshot {
        user: None,
        store: by_id(tx, Table::Stores, &cart.web_store_id)?,
        account: by_id(tx, Table::Accounts, &cart.account_id)?,
        cart: Some(cart),
        session,
        operation,
        cart_has_active_operation: tx.exists(HAS_ACTIVE_OPERATION, &key)?,
        order,
        has_error_outputs: tx.exists(HAS_ERROR_OUTPUTS, &key)?,
        edited_item: None,
        lines: Vec::new(),
    })
}

const UPDATE_CART: &str =
    "UPDATE carts SET version = $1, status = $2, body = $3 WHERE id = $4 AND version = $5";
const REMOVE_ITEM: &str = "DELETE FROM cart_items WHERE id = $1 AND cart_id = $2";
const WRITE_ITEM: &str = "INSERT INTO cart_items (id, cart_id, body) VALUES ($1, $2, $3)
     ON CONFLICT (id) DO UPDATE SET body = excluded.body
     WHERE cart_items.cart_id = excluded.cart_id";
const UPDATE_SESSION: &str =
    "UPDATE sessions SET version = $1, is_archived = $2, body = $3 WHERE id = $4 AND version = $5";
const CREATE_SESSION: &str =
    "INSERT INTO sessions (id, cart_id, version, is_archived, body) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (id) DO UPDATE SET version = excluded.version,
       is_archived = excluded.is_archived, body = excluded.body
     WHERE sessions.version = 0";
const UPDATE_OPERATION: &str =
    "UPDATE operations SET version = $1, status = $2, expires_at = $3, body = $4
     WHERE id = $5 AND version = $6";
const CREATE_OPERATION: &str = "INSERT INTO operations
       (id, cart_id, version, status, submitted_at, expires_at, body)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (id) DO UPDATE SET version = excluded.version, status = excluded.status,
       expires_at = excluded.expires_at, body = excluded.body
     WHERE operations.version = 0";
const UPDATE_ORDER: &str =
    "UPDATE orders SET version = $1, status = $2, body = $3 WHERE id = $4 AND version = $5";
const CREATE_ORDER: &str =
    "INSERT INTO orders (id, cart_id, version, status, body) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (id) DO UPDATE SET version = excluded.version, status = excluded.status,
       body = excluded.body
     WHERE orders.version = 0";
const CLEAR_OUTPUTS: &str = "DELETE FROM validation_outputs WHERE cart_id = $1";
const INSERT_OUTPUT: &str =
    "INSERT INTO validation_outputs (id, cart_id, body) VALUES ($1, $2, $3)";
const INSERT_HISTORY: &str = "INSERT INTO history (cart_id, body) VALUES ($1, $2)";
const FORGET_HELD: &str = "DELETE FROM record_owners WHERE owner_id = $1";
const HOLD: &str = "INSERT INTO record_owners (id, owner_id) VALUES ($1, $2)
     ON CONFLICT (id) DO UPDATE SET owner_id = excluded.owner_id";
const CART_EXISTS: &str = "SELECT 1 FROM carts WHERE id = $1";

/// Every statement of this module, for the dialects' checks of their placeholders and plans.
#[cfg(test)]
pub(crate) const STATEMENTS: &[&str] = &[
    CART_LINES,
    ACTIVE_SESSION,
    HAS_ACTIVE_OPERATION,
    HAS_ERROR_OUTPUTS,
    UPDATE_CART,
    REMOVE_ITEM,
    WRITE_ITEM,
    UPDATE_SESSION,
    CREATE_SESSION,
    UPDATE_OPERATION,
    CREATE_OPERATION,
    UPDATE_ORDER,
    CREATE_ORDER,
    CLEAR_OUTPUTS,
    INSERT_OUTPUT,
    INSERT_HISTORY,
    FORGET_HELD,
    HOLD,
    CART_EXISTS,
    INSERT_STORE,
    INSERT_ACCOUNT,
    INSERT_USER,
    INSERT_CART,
    INSERT_ITEM,
    INSERT_SESSION,
    INSERT_OPERATION,
    INSERT_ORDER,
];

/// The error of a version-guarded write that matched no row: the stored version moved on.
fn conflict(kind: &str, id: &SfId, version: u64) -> StoreError {
    StoreError::Conflict(format!(
        "{kind} {id} is no longer at version {}",
        version.saturating_sub(1)
    ))
}

/// Writes a commit inside the caller's transaction: every update guarded by the version the
/// decision read (a record at version 1 is new, or was imported at version 0), archives and
/// endings before activations so that the unique indexes see the commit's end state. The
/// caller rolls back on any error.
pub(crate) fn apply(tx: &mut impl SqlTx, commit: &Commit) -> Result<(), StoreError> {
    crate::store::check_shape(commit)?;
    let changes = &commit.changes;
    for cart in &changes.carts {
        write_cart(tx, cart)?;
    }
    for cart in &changes.carts {
        for removed in &changes.removed_items {
            let key = [Value::Text(removed.as_str()), Value::Text(cart.id.as_str())];
            tx.execute(REMOVE_ITEM, &key)?;
        }
    }
    for item in &changes.items {
        let params = [
            Value::Text(item.id.as_str()),
            Value::Text(item.cart_id.as_str()),
            json(item)?,
        ];
        if tx.execute(WRITE_ITEM, &params)? != 1 {
            return Err(StoreError::Invariant(format!(
                "line {} belongs to a cart other than {}",
                item.id, item.cart_id
            )));
        }
    }
    let (archiving, others): (Vec<_>, Vec<_>) =
        changes.sessions.iter().partition(|s| s.is_archived);
    for session in archiving.into_iter().chain(others) {
        write_session(tx, session)?;
    }
    let (ending, others): (Vec<_>, Vec<_>) = changes
        .operations
        .iter()
        .partition(|o| !o.status.is_active());
    for op in ending.into_iter().chain(others) {
        write_operation(tx, op)?;
    }
    for order in &changes.orders {
        write_order(tx, order)?;
    }
    if let Some(cart) = changes.clear_outputs_of {
        tx.execute(CLEAR_OUTPUTS, &[Value::Text(cart.as_str())])?;
    }
    write_rest(tx, &changes.outputs, &commit.history)?;
    tx.reindex(crate::store::held_records(changes))
}

fn write_cart(tx: &mut impl SqlTx, cart: &WebCart) -> Result<(), StoreError> {
    let params = [
        version(cart.version),
        Value::Text(cart.status.as_str()),
        json(cart)?,
        Value::Text(cart.id.as_str()),
        version(cart.version.saturating_sub(1)),
    ];
    if tx.execute(UPDATE_CART, &params)? == 1 {
        return Ok(());
    }
    if tx.exists(CART_EXISTS, &[Value::Text(cart.id.as_str())])? {
        Err(conflict("cart", &cart.id, cart.version))
    } else {
        Err(StoreError::Invariant(format!(
            "cart {} does not exist",
            cart.id
        )))
    }
}

/// A version-guarded write wrote its one row, or the stored version moved on.
fn one_written(written: u64, kind: &str, id: &SfId, version: u64) -> Result<(), StoreError> {
    if written == 1 {
        Ok(())
    } else {
        Err(conflict(kind, id, version))
    }
}

fn write_session(tx: &mut impl SqlTx, s: &CartCheckoutSession) -> Result<(), StoreError> {
    let (id, body) = (Value::Text(s.id.as_str()), json(s)?);
    let written = if s.version == 1 {
        let cart = Value::Text(s.web_cart_id.as_str());
        let params = [id, cart, version(1), Value::Bool(s.is_archived), body];
        tx.execute(CREATE_SESSION, &params)?
    } else {
        let at = (version(s.version), version(s.version - 1));
        tx.execute(
            UPDATE_SESSION,
            &[at.0, Value::Bool(s.is_archived), body, id, at.1],
        )?
    };
    one_written(written, "session", &s.id, s.version)
}

fn write_operation(tx: &mut impl SqlTx, op: &BackgroundOperation) -> Result<(), StoreError> {
    let (id, body) = (Value::Text(op.id.as_str()), json(op)?);
    let (status, expires) = (Value::Text(op.status.as_str()), Value::Time(op.expires_at));
    let written = if op.version == 1 {
        let (cart, submitted) = (
            Value::Text(op.cart_id.as_str()),
            Value::Time(Some(op.submitted_at)),
        );
        let params = [id, cart, version(1), status, submitted, expires, body];
        tx.execute(CREATE_OPERATION, &params)?
    } else {
        let at = (version(op.version), version(op.version - 1));
        tx.execute(UPDATE_OPERATION, &[at.0, status, expires, body, id, at.1])?
    };
    one_written(written, "operation", &op.id, op.version)
}

fn write_order(tx: &mut impl SqlTx, o: &Order) -> Result<(), StoreError> {
    let (id, body, status) = (
        Value::Text(o.id.as_str()),
        json(o)?,
        Value::Text(o.status.as_str()),
    );
    let written = if o.version == 1 {
        let cart = Value::Text(o.cart_id.as_str());
        tx.execute(CREATE_ORDER, &[id, cart, version(1), status, body])?
    } else {
        let at = (version(o.version), version(o.version - 1));
        tx.execute(UPDATE_ORDER, &[at.0, status, body, id, at.1])?
    };
    one_written(written, "order", &o.id, o.version)
}

/// Adds validation outputs and history entries.
fn write_rest(
    tx: &mut impl SqlTx,
    outputs: &[crate::model::CartValidationOutput],
    history: &[HistoryEntry],
) -> Result<(), StoreError> {
    for o in outputs {
        let params = [
            Value::Text(o.id.as_str()),
            Value::Text(o.cart_id.as_str()),
            json(o)?,
        ];
        tx.execute(INSERT_OUTPUT, &params)?;
    }
    for h in history {
        tx.execute(INSERT_HISTORY, &[Value::Text(h.cart_id.as_str()), json(h)?])?;
    }
    Ok(())
}

const INSERT_STORE: &str = "INSERT INTO stores (id, body) VALUES ($1, $2)";
const INSERT_ACCOUNT: &str = "INSERT INTO accounts (id, body) VALUES ($1, $2)";
const INSERT_USER: &str = "INSERT INTO users (id, body) VALUES ($1, $2)";
const INSERT_CART: &str = "INSERT INTO carts (id, version, status, body) VALUES ($1, $2, $3, $4)";
const INSERT_ITEM: &str = "INSERT INTO cart_items (id, cart_id, body) VALUES ($1, $2, $3)";

/// Adds every record of a data set (but its stock, whose column types differ by dialect)
/// inside the caller's transaction. A record whose ID is taken is refused, as the store's
/// primary keys refuse it.
pub(crate) fn import(tx: &mut impl SqlTx, data: &DataSet) -> Result<(), StoreError> {
    data.validate()
        .map_err(|e| StoreError::Invariant(e.to_string()))?;
    for r in &data.stores {
        tx.execute(INSERT_STORE, &[Value::Text(r.id.as_str()), json(r)?])?;
    }
    for r in &data.accounts {
        tx.execute(INSERT_ACCOUNT, &[Value::Text(r.id.as_str()), json(r)?])?;
    }
    for r in &data.users {
        tx.execute(INSERT_USER, &[Value::Text(r.id.as_str()), json(r)?])?;
    }
    for r in &data.carts {
        let params = [
            Value::Text(r.id.as_str()),
            version(r.version),
            Value::Text(r.status.as_str()),
            json(r)?,
        ];
        tx.execute(INSERT_CART, &params)?;
    }
    for r in &data.items {
        let params = [
            Value::Text(r.id.as_str()),
            Value::Text(r.cart_id.as_str()),
            json(r)?,
        ];
        tx.execute(INSERT_ITEM, &params)?;
    }
    import_records(tx, data)?;
    write_rest(tx, &data.validation_outputs, &data.history)?;
    tx.reindex(crate::store::held_in_dataset(data))
}

/// Inserts a data set's sessions, operations and orders at the versions they have.
fn import_records(tx: &mut impl SqlTx, data: &DataSet) -> Result<(), StoreError> {
    for s in &data.sessions {
        let params = [
            Value::Text(s.id.as_str()),
            Value::Text(s.web_cart_id.as_str()),
            version(s.version),
            Value::Bool(s.is_archived),
            json(s)?,
        ];
        tx.execute(INSERT_SESSION, &params)?;
    }
    for op in &data.operations {
        let params = [
            Value::Text(op.id.as_str()),
            Value::Text(op.cart_id.as_str()),
            version(op.version),
            Value::Text(op.status.as_str()),
            Value::Time(Some(op.submitted_at)),
            Value::Time(op.expires_at),
            json(op)?,
        ];
        tx.execute(INSERT_OPERATION, &params)?;
    }
    for o in &data.orders {
        let params = [
            Value::Text(o.id.as_str()),
            Value::Text(o.cart_id.as_str()),
            version(o.version),
            Value::Text(o.status.as_str()),
            json(o)?,
        ];
        tx.execute(INSERT_ORDER, &params)?;
    }
    Ok(())
}

const INSERT_SESSION: &str =
    "INSERT INTO sessions (id, cart_id, version, is_archived, body) VALUES ($1, $2, $3, $4, $5)";
const INSERT_OPERATION: &str = "INSERT INTO operations
       (id, cart_id, version, status, submitted_at, expires_at, body)
     VALUES ($1, $2, $3, $4, $5, $6, $7)";
const INSERT_ORDER: &str =
    "INSERT INTO orders (id, cart_id, version, status, body) VALUES ($1, $2, $3, $4, $5)";
