//! `CheckoutError`: every refusal carries a Salesforce errorCode and an HTTP status.

use std::fmt;

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

/// A failure of the store underneath the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A record changed since it was read: the compare-and-set lost.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A commit would break an invariant the store enforces (e.g. a second active operation).
    #[error("invariant: {0}")]
    Invariant(String),
    /// Reading or writing failed.
    #[error("storage: {0}")]
    Io(String),
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
    /// A record the decision needs vanished or no longer fits it (not a worker's fencing).
    #[error("stale: {0}")]
    Stale(String),
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
            CheckoutError::Undeclared { .. } | CheckoutError::Store(_) => 500,
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
