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
use crate::events::{Delivery, EventPosition};
use crate::machine::Snapshot;
use crate::model::{BackgroundOperation, CartCheckoutSession, Order, SfId, WebCart};
use crate::store::{Commit, DataSet, DecideFn, HistoryEntry, LoadKey, Reads};

/// A value bound to a placeholder. Each dialect binds it as its columns hold it (a time is
/// RFC 3339 text on SQLite and a `timestamptz` on PostgreSQL; a record is text or `jsonb`).
#[derive(Debug)]
pub(crate) enum Value<'a> {
    /// Text, such as an ID.
    Text(&'a str),
    /// An ID held by value.
    Id(SfId),
    /// A list of IDs (PostgreSQL's `text[]`; SQLite has no arrays).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Ids(Vec<SfId>),
    /// An integer, such as a version.
    Int(i64),
    /// A flag.
    Bool(bool),
    /// A record, serialized once.
    Json(Box<RawValue>),
    /// Records, each serialized once (PostgreSQL's `jsonb[]`; SQLite has no arrays).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    JsonList(Vec<Box<RawValue>>),
    /// An instant, or none.
    Time(Option<DateTime<Utc>>),
}

/// A record as the JSON body its table keeps.
pub(crate) fn json<T: Serialize>(record: &T) -> Result<Value<'static>, StoreError> {
    raw_json(record).map(Value::Json)
}

/// A record serialized as its table keeps it.
pub(crate) fn raw_json<T: Serialize>(record: &T) -> Result<Box<RawValue>, StoreError> {
    serde_json::value::to_raw_value(record)
        .map_err(|e| StoreError::caused(format!("a record cannot be written: {e}"), e))
}

/// A version, count or position as a column holds it (values past `i64::MAX` do not occur).
pub(crate) fn int(n: u64) -> Value<'static> {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
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
    /// The first row the query returns: each column as text (a number as its digits), or
    /// `None` for NULL.
    fn first_row(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> Result<Option<Vec<Option<String>>>, StoreError>;
    /// Whether the query returns a row.
    fn exists(&mut self, sql: &'static str, params: &[Value<'_>]) -> Result<bool, StoreError>;
    /// Runs a commit's writes, the transaction's last statements, as [`run`] does. A dialect
    /// that can send them all in one round trip does so, and may commit with them (the
    /// caller's commit then has nothing left to do), with the same outcome: the first failing
    /// write's error, and nothing written.
    fn finish_with_writes(&mut self, writes: &[Write<'_>]) -> Result<(), StoreError>
    where
        Self: Sized,
    {
        run(self, writes)
    }
    /// Adds the write that tells other processes the commit creates work, where the dialect
    /// can (PostgreSQL's `NOTIFY`, delivered when the transaction commits).
    fn announce_work(&self, writes: &mut Vec<Write<'_>>) {
        let _ = writes;
    }
    /// Adds the writes that append `history` to its table, in order: a row each.
    fn history_writes<'a>(
        &self,
        writes: &mut Vec<Write<'a>>,
        history: &'a [HistoryEntry],
    ) -> Result<(), StoreError> {
        for h in history {
            let params = vec![Value::Text(h.cart_id.as_str()), json(h)?];
            writes.push(Write::any(INSERT_HISTORY, params));
        }
        Ok(())
    }
    /// Adds the writes that record which records each holder now holds: the holders' rows
    /// go, their children's come.
    fn held_writes(&self, writes: &mut Vec<Write<'_>>, held: Vec<(SfId, Vec<SfId>)>) {
        for (holder, children) in held {
            writes.push(Write::any(FORGET_HELD, vec![Value::Id(holder)]));
            for child in children {
                writes.push(Write::any(HOLD, vec![Value::Id(child), Value::Id(holder)]));
            }
        }
    }
}

/// The tables records are read from by ID.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Table {
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
    let records = tx.records(table.by_id(), &[Value::Text(id.as_str())])?;
    Ok(records.into_iter().next())
}

/// Up to `limit` carts in order of ID, each after `after` (every cart when it is `None`).
pub(crate) fn carts_after(
    tx: &mut impl SqlTx,
    after: Option<&SfId>,
    limit: usize,
) -> Result<Vec<WebCart>, StoreError> {
    tx.records(
        "SELECT body FROM carts WHERE id > $1 ORDER BY id LIMIT $2",
        &[
            Value::Text(after.map_or("", SfId::as_str)),
            Value::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
        ],
    )
}

/// The records a query keyed by one ID returns, in its order.
pub(crate) fn listed<T: DeserializeOwned>(
    tx: &mut impl SqlTx,
    sql: &'static str,
    key: &SfId,
) -> Result<Vec<T>, StoreError> {
    tx.records(sql, &[Value::Text(key.as_str())])
}

/// The columns of a snapshot, each record's JSON as text: the cart, the session, the
/// operation, the active session's order, the store, the account, whether the cart has a New
/// or Running operation, whether it has an undismissed Error output, and the user `$1` (the
/// record is `$2`: placeholders are numbered in the order they appear).
macro_rules! snapshot_query {
    ($from:literal, $joins:literal, $key:literal) => {
        concat!(
            "SELECT CAST(c.body AS TEXT), CAST(s.body AS TEXT), CAST(o.body AS TEXT),
               CAST(ord.body AS TEXT), CAST(st.body AS TEXT), CAST(a.body AS TEXT),
               CAST(EXISTS (SELECT 1 FROM operations x
                            WHERE x.cart_id = c.id AND x.status IN ('New', 'Running'))
                    AS INTEGER),
               CAST(EXISTS (SELECT 1 FROM validation_outputs v WHERE v.cart_id = c.id
                              AND v.body->>'Level' = 'Error'
                              AND NOT (v.body->'IsDismissed' = 'true'))
                    AS INTEGER),
               (SELECT CAST(u.body AS TEXT) FROM users u WHERE u.id = $1)
             FROM ",
            $from,
            "
             LEFT JOIN sessions act ON act.cart_id = c.id AND NOT act.is_archived
             LEFT JOIN orders ord ON ord.id = act.body->>'OrderId'
             LEFT JOIN stores st ON st.id = c.body->>'WebStoreId'
             LEFT JOIN accounts a ON a.id = c.body->>'AccountId'
             ",
            $joins,
            " WHERE ",
            $key
        )
    };
}

/// A cart's snapshot: its active session and that session's operation.
const CART_SNAPSHOT: &str = snapshot_query!(
    "carts c",
    "LEFT JOIN sessions s ON s.id = act.id
     LEFT JOIN operations o ON o.id = s.body->>'BackgroundOperationId'",
    "c.id = $2"
);
/// A session's snapshot (archived or not): its cart, and its own operation.
const SESSION_SNAPSHOT: &str = snapshot_query!(
    "sessions s LEFT JOIN carts c ON c.id = s.cart_id",
    "LEFT JOIN operations o ON o.id = s.body->>'BackgroundOperationId'",
    "s.id = $2"
);
/// An operation's snapshot: its session and its cart.
const OPERATION_SNAPSHOT: &str = snapshot_query!(
    "operations o LEFT JOIN carts c ON c.id = o.cart_id",
    "LEFT JOIN sessions s ON s.id = o.body->>'CheckoutSessionId'",
    "o.id = $2"
);

/// Reads everything `decide` needs about one cart in one statement (a second only to name
/// the user when the record is missing), inside the caller's transaction or alone.
pub(crate) fn snapshot(tx: &mut impl SqlTx, key: LoadKey) -> Result<Snapshot, StoreError> {
    read(
        tx,
        &Reads {
            key,
            lines: false,
            user: None,
        },
    )
}

/// One column of a snapshot's row as a record.
fn column<T: DeserializeOwned>(row: &[Option<String>], i: usize) -> Result<Option<T>, StoreError> {
    row.get(i)
        .and_then(Option::as_deref)
        .map(|text| {
            serde_json::from_str(text)
                .map_err(|e| StoreError::caused(format!("a stored record is unreadable: {e}"), e))
        })
        .transpose()
}

/// One column of a snapshot's row as a flag (`1` is true).
fn flag(row: &[Option<String>], i: usize) -> bool {
    row.get(i).and_then(Option::as_deref) == Some("1")
}

const CART_LINES: &str = "SELECT body FROM cart_items WHERE cart_id = $1 ORDER BY id";

/// Reads what a command reads, inside the caller's transaction: one statement for the
/// snapshot and the user, and one for the lines when they are asked for.
pub(crate) fn read(tx: &mut impl SqlTx, reads: &Reads) -> Result<Snapshot, StoreError> {
    let (sql, id) = match &reads.key {
        LoadKey::Cart(id) => (CART_SNAPSHOT, id),
        LoadKey::Session(id) => (SESSION_SNAPSHOT, id),
        LoadKey::Operation(id) => (OPERATION_SNAPSHOT, id),
    };
    let user = reads.user.as_ref().map_or("", SfId::as_str);
    let params = [Value::Text(user), Value::Text(id.as_str())];
    let Some(row) = tx.first_row(sql, &params)? else {
        // No such record: the user is still read, for a refusal that names the caller.
        let user = match &reads.user {
            Some(id) => by_id(tx, Table::Users, id)?,
            None => None,
        };
        return Ok(Snapshot {
            user,
            ..Snapshot::default()
        });
    };
    from_row(tx, &row, reads.lines)
}

/// The snapshot in a row of `snapshot_query!`'s columns, with the cart's lines read when
/// `lines` asks for them.
fn from_row(
    tx: &mut impl SqlTx,
    row: &[Option<String>],
    lines: bool,
) -> Result<Snapshot, StoreError> {
    let cart: Option<WebCart> = column(row, 0)?;
    let lines = match (&cart, lines) {
        (Some(cart), true) => listed(tx, CART_LINES, &cart.id)?,
        _ => Vec::new(),
    };
    Ok(Snapshot {
        cart,
        session: column(row, 1)?,
        operation: column(row, 2)?,
        order: column(row, 3)?,
        store: column(row, 4)?,
        account: column(row, 5)?,
        cart_has_active_operation: flag(row, 6),
        has_error_outputs: flag(row, 7),
        user: column(row, 8)?,
        edited_item: None,
        lines,
    })
}

/// The oldest New operations ($4 at most) of carts that are not closed ($2), none of those
/// passed by ($3), that no other transaction holds (locked `FOR UPDATE`, others' locks
/// skipped), each with its operation snapshot, oldest first: the pick and the read in one
/// statement (PostgreSQL only).
#[cfg(feature = "postgres")]
pub(crate) const CLAIMABLE_SNAPSHOTS: &str = concat!(
    snapshot_query!(
        "operations o LEFT JOIN carts c ON c.id = o.cart_id",
        "LEFT JOIN sessions s ON s.id = o.body->>'CheckoutSessionId'",
        "o.id = ANY(ARRAY(SELECT q.id FROM operations q JOIN carts qc ON qc.id = q.cart_id
                 WHERE q.status = 'New' AND qc.status <> $2 AND q.id <> ALL($3)
                 ORDER BY q.submitted_at, q.id LIMIT $4
                 FOR UPDATE OF q SKIP LOCKED))"
    ),
    " ORDER BY o.submitted_at, o.id"
);

/// The values of [`CLAIMABLE_SNAPSHOTS`]: at most `limit` candidates, none of `passed`.
#[cfg(feature = "postgres")]
pub(crate) fn claimable_params(passed: &[SfId], limit: usize) -> [Value<'static>; 4] {
    [
        Value::Text(""),
        Value::Text(crate::model::CartStatus::Closed.as_str()),
        Value::Ids(passed.to_vec()),
        int(limit as u64),
    ]
}

/// The snapshot in one row of [`CLAIMABLE_SNAPSHOTS`] (PostgreSQL only).
#[cfg(feature = "postgres")]
pub(crate) fn claimable_snapshot(
    tx: &mut impl SqlTx,
    row: &[Option<String>],
) -> Result<Snapshot, StoreError> {
    from_row(tx, row, false)
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
/// Whether a cart exists (a refused cart write asks, to tell a lost race from a bug).
pub(crate) const CART_EXISTS: &str = "SELECT 1 FROM carts WHERE id = $1";

/// Every statement of this module, for the dialects' checks of their placeholders and plans.
#[cfg(all(test, feature = "sqlite"))]
pub(crate) const STATEMENTS: &[&str] = &[
    CART_LINES,
    CART_SNAPSHOT,
    SESSION_SNAPSHOT,
    OPERATION_SNAPSHOT,
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

/// A write that must write one row, and what it means when it writes none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guard {
    /// The record's stored version moved on from the one the decision read
    /// ([`StoreError::Conflict`]).
    Version {
        /// The kind of record, for the message.
        kind: &'static str,
        /// The record.
        id: SfId,
        /// The version the write writes.
        version: u64,
    },
    /// The cart's version moved on, or there is no such cart (an [`StoreError::Invariant`]:
    /// carts are never deleted).
    Cart {
        /// The cart.
        id: SfId,
        /// The version the write writes.
        version: u64,
    },
    /// The line's Id is held by another cart ([`StoreError::Invariant`]).
    LineOfCart {
        /// The line.
        line: SfId,
        /// The cart the commit writes it to.
        cart: SfId,
    },
}

/// One statement of a commit, with its values and, for a guarded write, its guard.
#[derive(Debug)]
pub(crate) struct Write<'a> {
    /// The statement.
    pub sql: &'static str,
    /// Its values, `$1` first.
    pub params: Vec<Value<'a>>,
    /// `None` for a write of any number of rows.
    pub guard: Option<Guard>,
}

impl<'a> Write<'a> {
    /// A write that may write any number of rows.
    pub(crate) fn any(sql: &'static str, params: Vec<Value<'a>>) -> Write<'a> {
        Write {
            sql,
            params,
            guard: None,
        }
    }
}

/// The error of a guarded write that wrote no row, `cart_exists` telling a cart that moved on
/// from one that never was. Built only then, so a commit that holds formats no message.
pub(crate) fn refusal(
    guard: Guard,
    cart_exists: impl FnOnce(SfId) -> Result<bool, StoreError>,
) -> Result<StoreError, StoreError> {
    let moved_on = |kind: &str, id: SfId, version: u64| {
        let read = version.saturating_sub(1);
        StoreError::Conflict(format!("{kind} {id} is no longer at version {read}"))
    };
    Ok(match guard {
        Guard::Version { kind, id, version } => moved_on(kind, id, version),
        Guard::Cart { id, version } => {
            if cart_exists(id)? {
                moved_on("cart", id, version)
            } else {
                StoreError::Invariant(format!("cart {id} does not exist"))
            }
        }
        Guard::LineOfCart { line, cart } => {
            StoreError::Invariant(format!("line {line} belongs to a cart other than {cart}"))
        }
    })
}

/// Writes a commit, the last thing the caller's transaction does; the caller commits on
/// success (unless the dialect committed with the writes) and rolls back on any error.
pub(crate) fn apply(tx: &mut impl SqlTx, commit: &Commit) -> Result<(), StoreError> {
    let writes = plan(tx, commit)?;
    tx.finish_with_writes(&writes)
}

/// Runs writes one by one, each checked as it must be: the first write that fails, or that
/// writes no row where its guard wants one, ends the run with its error.
pub(crate) fn run(tx: &mut impl SqlTx, writes: &[Write<'_>]) -> Result<(), StoreError> {
    for write in writes {
        let written = tx.execute(write.sql, &write.params)?;
        if let Some(guard) = write.guard
            && written != 1
        {
            return Err(refusal(guard, |cart| {
                tx.exists(CART_EXISTS, &[Value::Text(cart.as_str())])
            })?);
        }
    }
    Ok(())
}

/// The writes of a commit, in order: every update guarded by the version the decision read
/// (a record at version 1 is new, or was imported at version 0), archives and endings before
/// activations so that the unique indexes see the commit's end state.
pub(crate) fn plan<'c>(tx: &impl SqlTx, commit: &'c Commit) -> Result<Vec<Write<'c>>, StoreError> {
    crate::store::check_shape(commit)?;
    let changes = &commit.changes;
    let mut writes = Vec::new();
    for cart in &changes.carts {
        writes.push(cart_write(cart)?);
    }
    for cart in &changes.carts {
        for removed in &changes.removed_items {
            let key = vec![Value::Text(removed.as_str()), Value::Text(cart.id.as_str())];
            writes.push(Write::any(REMOVE_ITEM, key));
        }
    }
    for item in &changes.items {
        writes.push(Write {
            sql: WRITE_ITEM,
            params: vec![
                Value::Text(item.id.as_str()),
                Value::Text(item.cart_id.as_str()),
                json(item)?,
            ],
            guard: Some(Guard::LineOfCart {
                line: item.id,
                cart: item.cart_id,
            }),
        });
    }
    let (archiving, others): (Vec<_>, Vec<_>) =
        changes.sessions.iter().partition(|s| s.is_archived);
    for session in archiving.into_iter().chain(others) {
        writes.push(session_write(session)?);
    }
    let (ending, others): (Vec<_>, Vec<_>) = changes
        .operations
        .iter()
        .partition(|o| !o.status.is_active());
    for op in ending.into_iter().chain(others) {
        writes.push(operation_write(op)?);
    }
    for order in &changes.orders {
        writes.push(order_write(order)?);
    }
    if let Some(cart) = &changes.clear_outputs_of {
        writes.push(Write::any(CLEAR_OUTPUTS, vec![Value::Text(cart.as_str())]));
    }
    additions(tx, &mut writes, &changes.outputs, &commit.history)?;
    tx.held_writes(&mut writes, crate::store::held_records(changes));
    if changes
        .operations
        .iter()
        .any(|op| op.status == crate::model::OperationStatus::New)
    {
        tx.announce_work(&mut writes);
    }
    Ok(writes)
}

fn cart_write(cart: &WebCart) -> Result<Write<'_>, StoreError> {
    Ok(Write {
        sql: UPDATE_CART,
        params: vec![
            int(cart.version),
            Value::Text(cart.status.as_str()),
            json(cart)?,
            Value::Text(cart.id.as_str()),
            int(cart.version.saturating_sub(1)),
        ],
        guard: Some(Guard::Cart {
            id: cart.id,
            version: cart.version,
        }),
    })
}

fn session_write(s: &CartCheckoutSession) -> Result<Write<'_>, StoreError> {
    let (id, body) = (Value::Text(s.id.as_str()), json(s)?);
    let (sql, params) = if s.version == 1 {
        let cart = Value::Text(s.web_cart_id.as_str());
        let params = vec![id, cart, int(1), Value::Bool(s.is_archived), body];
        (CREATE_SESSION, params)
    } else {
        let at = (int(s.version), int(s.version - 1));
        let params = vec![at.0, Value::Bool(s.is_archived), body, id, at.1];
        (UPDATE_SESSION, params)
    };
    let guard = Some(Guard::Version {
        kind: "session",
        id: s.id,
        version: s.version,
    });
    Ok(Write { sql, params, guard })
}

fn operation_write(op: &BackgroundOperation) -> Result<Write<'_>, StoreError> {
    let (id, body) = (Value::Text(op.id.as_str()), json(op)?);
    let (status, expires) = (Value::Text(op.status.as_str()), Value::Time(op.expires_at));
    let (sql, params) = if op.version == 1 {
        let (cart, submitted) = (
            Value::Text(op.cart_id.as_str()),
            Value::Time(Some(op.submitted_at)),
        );
        let params = vec![id, cart, int(1), status, submitted, expires, body];
        (CREATE_OPERATION, params)
    } else {
        let at = (int(op.version), int(op.version - 1));
        let params = vec![at.0, status, expires, body, id, at.1];
        (UPDATE_OPERATION, params)
    };
    let guard = Some(Guard::Version {
        kind: "operation",
        id: op.id,
        version: op.version,
    });
    Ok(Write { sql, params, guard })
}

fn order_write(o: &Order) -> Result<Write<'_>, StoreError> {
    let (id, body) = (Value::Text(o.id.as_str()), json(o)?);
    let status = Value::Text(o.status.as_str());
    let (sql, params) = if o.version == 1 {
        let cart = Value::Text(o.cart_id.as_str());
        (CREATE_ORDER, vec![id, cart, int(1), status, body])
    } else {
        let at = (int(o.version), int(o.version - 1));
        (UPDATE_ORDER, vec![at.0, status, body, id, at.1])
    };
    let guard = Some(Guard::Version {
        kind: "order",
        id: o.id,
        version: o.version,
    });
    Ok(Write { sql, params, guard })
}

/// The inserts of validation outputs and history entries.
fn additions<'a>(
    tx: &impl SqlTx,
    writes: &mut Vec<Write<'a>>,
    outputs: &'a [crate::model::CartValidationOutput],
    history: &'a [HistoryEntry],
) -> Result<(), StoreError> {
    for o in outputs {
        let params = vec![
            Value::Text(o.id.as_str()),
            Value::Text(o.cart_id.as_str()),
            json(o)?,
        ];
        writes.push(Write::any(INSERT_OUTPUT, params));
    }
    tx.history_writes(writes, history)
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
        .map_err(|e| StoreError::InvalidDataSet(e.to_string()))?;
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
            int(r.version),
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
    let mut writes = Vec::new();
    additions(tx, &mut writes, &data.validation_outputs, &data.history)?;
    tx.held_writes(&mut writes, crate::store::held_in_dataset(data));
    run(tx, &writes)
}

/// Inserts a data set's sessions, operations and orders at the versions they have.
fn import_records(tx: &mut impl SqlTx, data: &DataSet) -> Result<(), StoreError> {
    for s in &data.sessions {
        let params = [
            Value::Text(s.id.as_str()),
            Value::Text(s.web_cart_id.as_str()),
            int(s.version),
            Value::Bool(s.is_archived),
            json(s)?,
        ];
        tx.execute(INSERT_SESSION, &params)?;
    }
    for op in &data.operations {
        let params = [
            Value::Text(op.id.as_str()),
            Value::Text(op.cart_id.as_str()),
            int(op.version),
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
            int(o.version),
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

/// A position read back as two text columns.
fn position_of(row: &[Option<String>]) -> Result<Option<EventPosition>, StoreError> {
    let part = |i: usize| row.get(i).and_then(Option::as_deref).map(str::parse::<u64>);
    match (part(0), part(1)) {
        (Some(Ok(transaction)), Some(Ok(sequence))) => {
            Ok(Some(EventPosition::new(transaction, sequence)))
        }
        (None, _) | (_, None) => Ok(None),
        _ => Err(StoreError::Io(
            format!("a stored event position is unreadable: {row:?}").into(),
        )),
    }
}

/// The position of the last event, from a query answering its two parts (none when NULL).
pub(crate) fn last_event(
    tx: &mut impl SqlTx,
    sql: &'static str,
) -> Result<Option<EventPosition>, StoreError> {
    match tx.first_row(sql, &[])? {
        Some(row) => position_of(&row),
        None => Ok(None),
    }
}

/// Webhook `hook`'s cursor.
pub(crate) fn webhook_cursor(
    tx: &mut impl SqlTx,
    hook: &str,
) -> Result<Option<EventPosition>, StoreError> {
    let sql = "SELECT xid, seq FROM webhook_cursors WHERE hook = $1";
    match tx.first_row(sql, &[Value::Text(hook)])? {
        Some(row) => position_of(&row),
        None => Ok(None),
    }
}

/// Appends `delivery` to the log and moves the cursor forward to `to`, each when given, in
/// the caller's transaction.
pub(crate) fn advance_webhook(
    tx: &mut impl SqlTx,
    hook: &str,
    to: Option<&EventPosition>,
    delivery: Option<&Delivery>,
) -> Result<(), StoreError> {
    if let Some(delivery) = delivery {
        tx.execute(
            "INSERT INTO webhook_deliveries (hook, body) VALUES ($1, $2)",
            &[Value::Text(hook), json(delivery)?],
        )?;
    }
    if let Some(to) = to {
        // A cursor never moves back: an older position leaves it where it is.
        tx.execute(
            "INSERT INTO webhook_cursors (hook, xid, seq) VALUES ($1, $2, $3)
             ON CONFLICT (hook) DO UPDATE SET xid = excluded.xid, seq = excluded.seq
             WHERE (webhook_cursors.xid, webhook_cursors.seq) < (excluded.xid, excluded.seq)",
            &[Value::Text(hook), int(to.transaction()), int(to.sequence())],
        )?;
    }
    Ok(())
}

/// Up to `limit` of webhook `hook`'s delivery attempts, the latest first.
pub(crate) fn deliveries(
    tx: &mut impl SqlTx,
    hook: &str,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    tx.records(
        "SELECT body FROM webhook_deliveries WHERE hook = $1 ORDER BY seq DESC LIMIT $2",
        &[Value::Text(hook), int(limit as u64)],
    )
}
