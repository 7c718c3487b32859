//! `CheckoutError`: every refusal carries a Salesforce errorCode and an HTTP status.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::machine::{Action, Event, Node, Requirement};
use crate::model::{OperationStatus, SfId};

/// The Salesforce `errorCode` (`statusCode` in an action result) of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `UNKNOWN_EXCEPTION`.
    #[serde(rename = "UNKNOWN_EXCEPTION")]
    UnknownException,
    /// `BAD_REQUEST`.
    #[serde(rename = "BAD_REQUEST")]
    BadRequest,
    /// `INVALID_OPERATION`.
    #[serde(rename = "INVALID_OPERATION")]
    InvalidOperation,
    /// `ALREADY_IN_PROCESS`.
    #[serde(rename = "ALREADY_IN_PROCESS")]
    AlreadyInProcess,
    /// `INSUFFICIENT_ACCESS_OR_READONLY`.
    #[serde(rename = "INSUFFICIENT_ACCESS_OR_READONLY")]
    InsufficientAccessOrReadonly,
    /// `INVALID_INPUT`.
    #[serde(rename = "INVALID_INPUT")]
    InvalidInput,
    /// `STRING_TOO_LONG`: a text is longer than its field's documented maximum.
    #[serde(rename = "STRING_TOO_LONG")]
    StringTooLong,
    /// `REQUIRED_FIELD_MISSING`: a screen moves on without an input it asks for.
    #[serde(rename = "REQUIRED_FIELD_MISSING")]
    RequiredFieldMissing,
}

impl ErrorCode {
    /// The code as Salesforce spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnknownException => "UNKNOWN_EXCEPTION",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::InvalidOperation => "INVALID_OPERATION",
            ErrorCode::AlreadyInProcess => "ALREADY_IN_PROCESS",
            ErrorCode::InsufficientAccessOrReadonly => "INSUFFICIENT_ACCESS_OR_READONLY",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::StringTooLong => "STRING_TOO_LONG",
            ErrorCode::RequiredFieldMissing => "REQUIRED_FIELD_MISSING",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a worker command (claim, heartbeat, expiry, report) is fenced off: the operation or
/// its session moved on since the worker read it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Fenced {
    /// The operation named does not exist.
    #[error("no such operation")]
    OperationMissing,
    /// The operation's cart is Closed: not even a worker's report may change it.
    #[error("cart {cart} is Closed")]
    CartClosed {
        /// The cart.
        cart: SfId,
    },
    /// Only a New operation may be claimed.
    #[error("operation {operation} is {}, not New", status.as_str())]
    NotClaimable {
        /// The operation.
        operation: SfId,
        /// Its status.
        status: OperationStatus,
    },
    /// The operation is no longer Running under the attempt the worker holds: it was
    /// cancelled, finished, or claimed again after the lease ran out.
    #[error(
        "operation {operation} is {} at attempt {current}; the report of attempt {held} is discarded",
        status.as_str()
    )]
    AttemptSuperseded {
        /// The operation.
        operation: SfId,
        /// Its status.
        status: OperationStatus,
        /// The attempt the worker holds.
        held: u32,
        /// The operation's attempt.
        current: u32,
    },
    /// The sweeper may not end a lease that has not run out (a heartbeat renewed it).
    #[error("the lease of operation {operation} runs until {until}")]
    LeaseRunning {
        /// The operation.
        operation: SfId,
        /// When the lease ends.
        until: DateTime<Utc>,
    },
    /// The operation's session is archived, unlocked, or runs another operation.
    #[error("operation {operation} no longer belongs to an active, locked session")]
    SessionFinished {
        /// The operation.
        operation: SfId,
    },
}

/// A failure of the store underneath the engine. Only [`StoreError::Conflict`] is worth
/// retrying: the other variants say the same thing however often the commit is tried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A concurrent commit won: a version this commit read moved on, or a record it creates
    /// (an ID, a cart's one active session, a cart's one New or Running operation) was created
    /// first. Deciding again on what the winner wrote is the answer.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The commit itself is malformed: it breaks a rule no concurrent commit explains (a line
    /// written or removed without its cart, a line of another cart, a cart that does not
    /// exist). A bug in whoever built the commit; nothing was written and retrying cannot help.
    #[error("invariant: {0}")]
    Invariant(String),
    /// A data set given to import is inconsistent (a duplicate ID, a reference to a record it
    /// lacks); nothing of it was imported.
    #[error("invalid data set: {0}")]
    InvalidDataSet(String),
    /// Reading or writing failed: the database is unreachable or refused the statement, a
    /// file cannot be opened, a stored record cannot be read back.
    #[error("storage: {0}")]
    Io(#[source] StorageFailure),
}

impl StoreError {
    /// A storage failure described by `message` (which should include the cause's text)
    /// and caused by `cause`, which stays reachable through [`std::error::Error::source`]
    /// (to downcast it to the database driver's error, say).
    pub fn caused<E>(message: impl Into<String>, cause: E) -> StoreError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        StoreError::Io(StorageFailure {
            message: message.into(),
            cause: Some(Arc::new(cause)),
        })
    }
}

/// What [`StoreError::Io`] carries: a message for people and, when a driver or the operating
/// system raised it, the typed cause as the error's source. Two failures are equal when their
/// messages are.
#[derive(Clone)]
pub struct StorageFailure {
    message: String,
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl StorageFailure {
    /// The message, which includes the cause's text.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<String> for StorageFailure {
    fn from(message: String) -> StorageFailure {
        StorageFailure {
            message,
            cause: None,
        }
    }
}

impl From<&str> for StorageFailure {
    fn from(message: &str) -> StorageFailure {
        StorageFailure::from(message.to_owned())
    }
}

impl fmt::Display for StorageFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for StorageFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageFailure")
            .field("message", &self.message)
            .field("cause", &self.cause)
            .finish()
    }
}

impl PartialEq for StorageFailure {
    fn eq(&self, other: &StorageFailure) -> bool {
        self.message == other.message
    }
}

impl Eq for StorageFailure {}

impl std::error::Error for StorageFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

/// The kind of record a [`Stale`] reason names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordKind {
    /// A WebCart.
    Cart,
    /// A cart's line (CartItem).
    Line,
    /// A CartCheckoutSession.
    Session,
    /// A background operation.
    Operation,
    /// An order.
    Order,
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordKind::Cart => "cart",
            RecordKind::Line => "line",
            RecordKind::Session => "session",
            RecordKind::Operation => "operation",
            RecordKind::Order => "order",
        })
    }
}

/// Why a command's reading no longer fits what it would change (carried by
/// [`CheckoutError::Stale`]). Another client or worker changed the records in between;
/// reading them again shows what is there now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Stale {
    /// A record the command needs is gone since it was read.
    #[error("the {0} disappeared")]
    Vanished(RecordKind),
    /// A worker's report names a record of another cart (a line, or the order it places).
    #[error("the report names a {0} of another cart")]
    ForeignRecord(RecordKind),
    /// A payment step's authorisation finds no Draft order to be recorded on.
    #[error("an authorisation with no order to pay")]
    NoOrderToPay,
    /// The session stands at a state this engine's template has no step for (the template
    /// changed since the session reached it).
    #[error("{0} is not a step of the template")]
    UnknownState(String),
    /// The flow driver's steps kept finding the session moved on: another client drives it.
    #[error("the checkout made no progress; another client may be driving it")]
    NoProgress,
    /// The flow driver waited its limit for a session that stays processing.
    #[error("session {session} still processing after {waited_ms} ms")]
    StillProcessing {
        /// The session.
        session: SfId,
        /// How long the driver waited.
        waited_ms: u64,
    },
}

/// Why a command was refused or could not be carried out. A refused command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckoutError {
    /// A documented requirement is unmet.
    #[error("{message}")]
    Refused {
        /// The first unmet requirement.
        requirement: Requirement,
        /// Its documented error code for this action.
        code: ErrorCode,
        /// Its documented HTTP status for this action.
        status: u16,
        /// What is wrong, for a person.
        message: String,
    },
    /// A record the decision needs vanished or no longer fits it (not a worker's fencing);
    /// nothing was committed.
    #[error("stale: {0}")]
    Stale(Stale),
    /// A worker command no longer applies (another worker, the sweeper or a cancel won); the
    /// reason says which fence stopped it. Nothing was committed.
    #[error("stale: {0}")]
    Fenced(#[from] Fenced),
    /// The action has no implementation in this version.
    #[error("{0} is not available in this version of cartflow")]
    Unsupported(Action),
    /// The input is not of the documented shape.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A buyer-written text is longer than its field's documented maximum.
    #[error("{field}: data value too large (max length={max_chars})")]
    StringTooLong {
        /// The field, as the caller names it.
        field: &'static str,
        /// Its documented maximum, in characters.
        max_chars: usize,
    },
    /// A buyer-written text holds a NUL or another control character its field refuses.
    #[error("{field} holds a control character; only the street may hold line breaks")]
    ControlCharacter {
        /// The field, as the caller names it.
        field: &'static str,
    },
    /// The engine computed a move the table does not declare; nothing was committed.
    #[error("undeclared transition on {}: {} -> {}", .0.event, .0.from, .0.to)]
    Undeclared(Box<UndeclaredMove>),
    /// cartflow broke one of its own rules (a declared move it cannot apply, a complete
    /// session without an order): a bug, answered 500 and never retried; nothing was
    /// committed.
    #[error("internal defect: {0}")]
    Defect(String),
    /// Concurrent commands kept winning the compare-and-set; nothing was committed.
    #[error("the session kept changing under {0} attempts; nothing was committed")]
    Contention(u32),
    /// The store failed; nothing was committed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CheckoutError {
    /// The Salesforce errorCode.
    pub fn code(&self) -> ErrorCode {
        match self {
            CheckoutError::Refused { code, .. } => *code,
            CheckoutError::InvalidInput(_) | CheckoutError::ControlCharacter { .. } => {
                ErrorCode::InvalidInput
            }
            CheckoutError::StringTooLong { .. } => ErrorCode::StringTooLong,
            _ => ErrorCode::UnknownException,
        }
    }

    /// The HTTP status.
    pub fn http_status(&self) -> u16 {
        match self {
            CheckoutError::Refused { status, .. } => *status,
            CheckoutError::Stale(_) | CheckoutError::Fenced(_) => 409,
            CheckoutError::Unsupported(_) => 501,
            CheckoutError::InvalidInput(_)
            | CheckoutError::StringTooLong { .. }
            | CheckoutError::ControlCharacter { .. } => 400,
            CheckoutError::Contention(_) => 503,
            CheckoutError::Undeclared { .. }
            | CheckoutError::Defect(_)
            | CheckoutError::Store(_) => 500,
        }
    }

    /// The input field a refusal is about, when it is about one field.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            CheckoutError::StringTooLong { field, .. }
            | CheckoutError::ControlCharacter { field } => Some(field),
            _ => None,
        }
    }

    /// The unmet requirement, for a refusal.
    pub fn requirement(&self) -> Option<Requirement> {
        match self {
            CheckoutError::Refused { requirement, .. } => Some(*requirement),
            _ => None,
        }
    }
}

/// A move the table does not declare (boxed in [`CheckoutError::Undeclared`], whose other
/// variants are small).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndeclaredMove {
    /// The event.
    pub event: Event,
    /// The node before.
    pub from: Node,
    /// The node after.
    pub to: Node,
}

impl CheckoutError {
    /// The error for a move the table does not declare.
    pub fn undeclared(event: Event, from: Node, to: Node) -> CheckoutError {
        CheckoutError::Undeclared(Box::new(UndeclaredMove { event, from, to }))
    }
}
