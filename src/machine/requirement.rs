//! Requirements: the named guards of each action, in the order they are checked, each with
//! the errorCode and HTTP status the documentation gives for that action.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::ErrorCode;
use crate::machine::table::{Phase, SessionNode};
use crate::machine::{Action, Command, Event, Node, Snapshot, TransitionTable};
use crate::model::{Access, CartStatus, OrderStatus, Permission, SessionState, SfId};

/// A named precondition of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Requirement {
    /// The caller exists and holds a permission that may invoke checkout actions
    /// (B2B buyer, B2B Commerce Integrator or Modify All Data).
    CallerMayInvoke,
    /// The cartId is a well-formed WebCart ID that names a cart.
    CartIdValid,
    /// The checkoutSessionId is a well-formed ID that names a session.
    SessionIdValid,
    /// The caller can edit the cart: owner, an Edit share, or Modify All Data.
    CallerCanEditCart,
    /// The cart's effective account exists, is active, and is the caller's own account
    /// (internal users act for any account).
    EffectiveAccountValid,
    /// The buyer account is a member of the cart's store.
    CallerIsStoreMember,
    /// The cart's status is Checkout.
    CartInCheckout,
    /// The cart's status is Active or Checkout (a checkout can start).
    CartOpenForCheckout,
    /// The cart's status is not Closed.
    CartNotClosed,
    /// The cart's status is neither Closed nor Processing.
    CartNotClosedOrProcessing,
    /// The cart's active session is not locked for an async step.
    NoSessionInProgress,
    /// The initialState input names the template's entry State.
    InitialStateIsEntry,
    /// A session exists and is not archived.
    SessionExists,
    /// The store allows checkout (its time-to-live is not 0).
    CheckoutEnabled,
    /// The session is younger than the store's checkout time-to-live.
    SessionNotExpired,
    /// The session's State is not empty.
    SessionStateNotEmpty,
    /// The session is locked (IsProcessing true) for the async step.
    SessionIsProcessing,
    /// The session is not locked (IsProcessing false).
    SessionNotProcessing,
    /// The session's State is the step this action belongs to.
    SessionAtStep,
    /// The session's NextState is the State that follows this step.
    NextStateSet,
    /// The session's State equals the caller's expCurrentState (required by Update Checkout
    /// Session, optional for a screen step's write).
    ExpectedStateMatches,
    /// The requested State is the one the table declares after the current State.
    TargetIsNextStep,
    /// No background operation of the cart is New or Running.
    NoOperationInProgress,
    /// A chosen delivery method is one the Shipment integration offered.
    DeliveryMethodOffered,
    /// The cart's status is Active or Checkout (its lines may change).
    CartEditable,
    /// The edit is well-formed: a positive quantity, a non-blank SKU, a line of this cart.
    EditValid,
    /// The session's order is not activated: once it is, the checkout can only complete.
    OrderNotActivated,
    /// The orderStatus input means "activate" (`Activated`).
    OrderStatusIsActivate,
    /// The session has a Draft order (made by `cartToOrderAction`).
    DraftOrderOnSession,
    /// The cart has no Error-level CartValidationOutput.
    NoErrorOutputs,
    /// The operation a `runAsync: false` call started completed before the call answered.
    /// Not a guard: the engine checks it after running the operation inline.
    InlineOperationCompleted,
}

/// A requirement as one action checks it: with the documented code and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Guard {
    /// The requirement.
    pub requirement: Requirement,
    /// The errorCode when it is unmet.
    pub code: ErrorCode,
    /// The HTTP status when it is unmet.
    pub status: u16,
}

/// An unmet requirement, as `check` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unmet {
    /// The requirement.
    pub requirement: Requirement,
    /// Its errorCode for this action.
    pub code: ErrorCode,
    /// Its HTTP status for this action.
    pub status: u16,
    /// What is wrong, for a person.
    pub message: String,
}

const fn guard(requirement: Requirement, code: ErrorCode, status: u16) -> Guard {
    Guard {
        requirement,
        code,
        status,
    }
}

use ErrorCode as C;
use Requirement as R;

/// `checkoutSessionAction` (the rows Salesforce documents for it).
const START: &[Guard] = &[
    guard(R::CallerMayInvoke, C::BadRequest, 400),
    guard(R::CartIdValid, C::UnknownException, 500),
    guard(R::CallerCanEditCart, C::BadRequest, 400),
    guard(R::EffectiveAccountValid, C::BadRequest, 400),
    guard(R::CallerIsStoreMember, C::BadRequest, 400),
    guard(R::CartOpenForCheckout, C::InvalidOperation, 403),
    guard(R::CheckoutEnabled, C::InvalidOperation, 403),
    guard(R::OrderNotActivated, C::InvalidOperation, 403),
    guard(R::NoSessionInProgress, C::BadRequest, 400),
    guard(R::InitialStateIsEntry, C::UnknownException, 500),
];

/// `updateCheckoutSessionStateAction`, and the screen steps' writes of State (as documented
/// for the action and for the standard checkout template).
const UPDATE: &[Guard] = &[
    guard(R::CallerMayInvoke, C::BadRequest, 400),
    guard(R::SessionIdValid, C::UnknownException, 403),
    guard(R::CallerCanEditCart, C::InsufficientAccessOrReadonly, 400),
    guard(
        R::EffectiveAccountValid,
        C::InsufficientAccessOrReadonly,
        400,
    ),
    guard(R::CallerIsStoreMember, C::InsufficientAccessOrReadonly, 400),
    guard(R::CartNotClosedOrProcessing, C::InvalidOperation, 403),
    guard(R::SessionExists, C::InvalidOperation, 403),
    guard(R::SessionNotExpired, C::InvalidOperation, 403),
    guard(R::SessionStateNotEmpty, C::InvalidOperation, 403),
    guard(R::SessionNotProcessing, C::InvalidOperation, 409),
    guard(R::ExpectedStateMatches, C::InvalidOperation, 409),
    guard(R::TargetIsNextStep, C::InvalidOperation, 403),
];

/// The last screen step's move to the terminal state (closes the cart): the UPDATE rows, on a
/// cart in Checkout, and not subject to the time-to-live, so a checkout whose order is
/// activated can always complete.
const CLOSE: &[Guard] = &[
    guard(R::CallerMayInvoke, C::BadRequest, 400),
    guard(R::SessionIdValid, C::UnknownException, 403),
    guard(R::CallerCanEditCart, C::InsufficientAccessOrReadonly, 400),
    guard(
        R::EffectiveAccountValid,
        C::InsufficientAccessOrReadonly,
        400,
    ),
    guard(R::CallerIsStoreMember, C::InsufficientAccessOrReadonly, 400),
    guard(R::CartInCheckout, C::InvalidOperation, 403),
    guard(R::SessionExists, C::InvalidOperation, 403),
    guard(R::SessionStateNotEmpty, C::InvalidOperation, 403),
    guard(R::SessionNotProcessing, C::InvalidOperation, 409),
    guard(R::ExpectedStateMatches, C::InvalidOperation, 409),
    guard(R::TargetIsNextStep, C::InvalidOperation, 403),
];

/// The async cart actions (the error table Salesforce documents for them), in the order
/// `docs/architecture.md` gives: security first, so a caller without permission learns
/// nothing about carts, then the cart, the session and its operation.
const ASYNC: &[Guard] = &[
    guard(R::CallerMayInvoke, C::BadRequest, 400),
    guard(R::CartIdValid, C::UnknownException, 500),
    guard(R::CallerCanEditCart, C::BadRequest, 400),
    guard(
        R::EffectiveAccountValid,
        C::InsufficientAccessOrReadonly,
        500,
    ),
    guard(R::CallerIsStoreMember, C::InsufficientAccessOrReadonly, 500),
    guard(R::CartInCheckout, C::InvalidOperation, 403),
    guard(R::SessionExists, C::InvalidOperation, 403),
    guard(R::SessionNotExpired, C::InvalidOperation, 403),
    guard(R::SessionStateNotEmpty, C::InvalidOperation, 403),
    guard(R::SessionIsProcessing, C::InvalidOperation, 403),
    guard(R::SessionAtStep, C::InvalidOperation, 403),
    guard(R::NextStateSet, C::InvalidOperation, 403),
    guard(R::OrderNotActivated, C::InvalidOperation, 403),
    guard(R::NoOperationInProgress, C::AlreadyInProcess, 400),
];

/// A screen step's write of buyer input onto the cart: the session's access rules, on a
/// cart in checkout whose session is not locked.
const INPUT: &[Guard] = &[
    guard(R::CallerMayInvoke, C::BadRequest, 400),
    guard(R::CartIdValid, C::UnknownException, 500),
    guard(R::CallerCanEditCart, C::InsufficientAccessOrReadonly, 400),
    guard(
        R::EffectiveAccountValid,
        C::InsufficientAccessOrReadonly,
        400,
    ),
    guard(R::CallerIsStoreMember, C::InsufficientAccessOrReadonly, 400),
    guard(R::CartInCheckout, C::InvalidOperation, 403),
    guard(R::SessionExists, C::InvalidOperation, 403),
    guard(R::SessionNotExpired, C::InvalidOperation, 403),
    guard(R::SessionNotProcessing, C::InvalidOperation, 409),
    guard(R::DeliveryMethodOffered, C::InvalidInput, 400),
];

/// `activateOrderAction`: the async actions' shared rows, an order status that must mean
/// "activate" (500 `UNKNOWN_EXCEPTION`), and the step, the Draft order, the absence of
/// Error outputs and of a running operation, each 403 `INVALID_INPUT`.
const ACTIVATE: &[Guard] = &[
    guard(R::CallerMayInvoke, C::BadRequest, 400),
    guard(R::CartIdValid, C::UnknownException, 500),
    guard(R::CallerCanEditCart, C::BadRequest, 400),
    guard(
        R::EffectiveAccountValid,
        C::InsufficientAccessOrReadonly,
        500,
    ),
    guard(R::CallerIsStoreMember, C::InsufficientAccessOrReadonly, 500),
    guard(R::OrderStatusIsActivate, C::UnknownException, 500),
    guard(R::CartInCheckout, C::InvalidOperation, 403),
    guard(R::SessionExists, C::InvalidOperation, 403),
    guard(R::SessionNotExpired, C::InvalidOperation, 403),
    guard(R::SessionStateNotEmpty, C::InvalidOperation, 403),
    guard(R::SessionIsProcessing, C::InvalidOperation, 403),
    guard(R::SessionAtStep, C::InvalidInput, 403),
    guard(R::NextStateSet, C::InvalidInput, 403),
    guard(R::DraftOrderOnSession, C::InvalidInput, 403),
    guard(R::NoErrorOutputs, C::InvalidInput, 403),
    guard(R::NoOperationInProgress, C::InvalidInput, 403),
];

/// An edit of the cart's lines. Salesforce documents no error rows for cart edits here;
/// the codes follow the session actions'.
const EDIT: &[Guard] = &[
    guard(R::CallerMayInvoke, C::BadRequest, 400),
    guard(R::CartIdValid, C::UnknownException, 500),
    guard(R::CallerCanEditCart, C::BadRequest, 400),
    guard(R::EffectiveAccountValid, C::BadRequest, 400),
    guard(R::CallerIsStoreMember, C::BadRequest, 400),
    guard(R::CartEditable, C::InvalidOperation, 403),
    guard(R::OrderNotActivated, C::InvalidOperation, 403),
    guard(R::EditValid, C::InvalidInput, 400),
];

/// `cancelCartAsyncOperation`, with the async actions' shared rows.
const CANCEL: &[Guard] = &[
    guard(R::CallerMayInvoke, C::BadRequest, 400),
    guard(R::CartIdValid, C::UnknownException, 500),
    guard(R::CallerCanEditCart, C::BadRequest, 400),
    guard(
        R::EffectiveAccountValid,
        C::InsufficientAccessOrReadonly,
        500,
    ),
    guard(R::CallerIsStoreMember, C::InsufficientAccessOrReadonly, 500),
    guard(R::CartNotClosed, C::InvalidOperation, 403),
    guard(R::OrderNotActivated, C::InvalidOperation, 403),
];

/// The guards of an event, in the order they are checked (first unmet wins). Worker events
/// have none: they are fenced by the operation's status and attempt instead.
pub fn guards(event: Event) -> &'static [Guard] {
    match event {
        Event::Action(Action::CheckoutSession) => START,
        Event::Action(Action::UpdateCheckoutSessionState) | Event::Advance => UPDATE,
        Event::Close => CLOSE,
        Event::Action(Action::ActivateOrder) => ACTIVATE,
        Event::Action(Action::CancelCartAsyncOperation) => CANCEL,
        Event::Input => INPUT,
        Event::Edit => EDIT,
        Event::Action(_) | Event::Authorize => ASYNC,
        Event::Claim | Event::Heartbeat | Event::Requeue | Event::Succeed | Event::Fail => &[],
    }
}

/// The State a session-addressed command asks to move to, and the expected current State.
fn requested_states(command: &Command) -> (Option<&str>, Option<&str>) {
    match command {
        Command::UpdateSession {
            next_state,
            exp_current_state,
            ..
        } => (Some(next_state.as_str()), exp_current_state.as_deref()),
        Command::Advance {
            state,
            exp_current_state,
            ..
        } => (Some(state.as_str()), exp_current_state.as_deref()),
        _ => (None, None),
    }
}

/// The step an async command belongs to.
fn step_state(table: &TransitionTable, event: Event) -> Option<SessionState> {
    match event {
        Event::Action(action) => table.template().step_of(action).map(|s| s.state),
        Event::Authorize => table
            .template()
            .steps
            .iter()
            .find(|s| s.kind == crate::machine::StepKind::Payment)
            .map(|s| s.state),
        _ => None,
    }
}

fn show(state: Option<SessionState>) -> &'static str {
    state.map_or("(empty)", SessionState::as_str)
}

/// Evaluates one requirement; `Err` carries the message for a person.
pub fn evaluate(
    requirement: Requirement,
    table: &TransitionTable,
    snapshot: &Snapshot,
    command: &Command,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let user = snapshot.user.as_ref();
    let cart = snapshot.cart.as_ref();
    let session = snapshot.session.as_ref();
    let event = command.event();
    match requirement {
        R::CallerMayInvoke => match user {
            None => Err("the caller is not a known user".into()),
            Some(u)
                if u.has(Permission::B2BBuyer)
                    || u.has(Permission::B2BCommerceIntegrator)
                    || u.has(Permission::ModifyAllData) =>
            {
                Ok(())
            }
            Some(u) => Err(format!(
                "user {} lacks the permission to invoke {event} (B2B buyer, B2BCommerceIntegrator or ModifyAllData)",
                u.id
            )),
        },
        R::CartIdValid => {
            let (Command::StartSession { cart_id, .. }
            | Command::SetDetails { cart_id, .. }
            | Command::EditCart { cart_id, .. }
            | Command::CartToOrder { cart_id, .. }
            | Command::ActivateOrder { cart_id, .. }
            | Command::AuthorizePayment { cart_id }
            | Command::RunStep { cart_id, .. }
            | Command::Cancel { cart_id }) = command
            else {
                return cart.map(|_| ()).ok_or_else(|| "no cart".into());
            };
            match SfId::parse_kind(cart_id, crate::model::KeyPrefix::WebCart) {
                Err(e) => Err(format!("invalid cartId: {e}")),
                Ok(id) if cart.is_some_and(|c| c.id == id) => Ok(()),
                Ok(id) => Err(format!("invalid cartId: no cart {id}")),
            }
        }
        R::SessionIdValid => match session {
            Some(_) => Ok(()),
            None => {
                let given = match command {
                    Command::UpdateSession { session_id, .. }
                    | Command::Advance { session_id, .. } => session_id.as_str(),
                    _ => "",
                };
                Err(format!("invalid checkoutSessionId {given:?}: no such session"))
            }
        },
        R::CallerCanEditCart => match (user, cart) {
            (Some(u), Some(c)) => match c.access_of(u) {
                Some(Access::Edit) => Ok(()),
                Some(Access::Read) => Err(format!("user {} can read cart {} but not edit it", u.id, c.id)),
                None => Err(format!("user {} has no access to cart {}", u.id, c.id)),
            },
            _ => Err("no access to the cart".into()),
        },
        R::EffectiveAccountValid => {
            let (Some(u), Some(c)) = (user, cart) else {
                return Err("the cart's effective account is unknown".into());
            };
            match &snapshot.account {
                None => Err(format!("the cart's effective account {} does not exist", c.account_id)),
                Some(a) if !a.is_active => Err(format!("the cart's effective account {} is not active", a.id)),
                Some(a) if u.account_id.is_some_and(|own| own != a.id) => Err(format!(
                    "the cart's effective account {} is not accessible to user {}",
                    a.id, u.id
                )),
                Some(_) => Ok(()),
            }
        }
        R::CallerIsStoreMember => {
            let (Some(u), Some(c)) = (user, cart) else {
                return Err("the store is unknown".into());
            };
            let buyer = u.account_id.unwrap_or(c.account_id);
            match &snapshot.store {
                Some(store) if store.buyer_accounts.contains(&buyer) => Ok(()),
                Some(store) => Err(format!("account {buyer} is not a member of store {}", store.id)),
                None => Err(format!("the cart's store {} does not exist", c.web_store_id)),
            }
        }
        R::CartInCheckout => cart_status_in(cart, &[CartStatus::Checkout]),
        R::CartOpenForCheckout => cart_status_in(cart, &[CartStatus::Active, CartStatus::Checkout]),
        R::CartNotClosed => cart_status_in(
            cart,
            &[
                CartStatus::Active,
                CartStatus::Checkout,
                CartStatus::PendingClosed,
                CartStatus::PendingDelete,
                CartStatus::Processing,
            ],
        ),
        R::CartNotClosedOrProcessing => cart_status_in(
            cart,
            &[
                CartStatus::Active,
                CartStatus::Checkout,
                CartStatus::PendingClosed,
                CartStatus::PendingDelete,
            ],
        ),
        R::NoSessionInProgress => match session {
            Some(s) if s.is_processing && !s.is_archived => {
                Err(format!("cart already in progress: session {} is processing", s.id))
            }
            _ => Ok(()),
        },
        R::InitialStateIsEntry => {
            let entry = table.template().entry();
            let Command::StartSession { initial_state, .. } = command else {
                return Ok(());
            };
            match initial_state.as_deref() {
                None => Ok(()),
                Some(given) if entry.is_some_and(|e| e.as_str() == given) => Ok(()),
                Some(given) => Err(format!(
                    "session not created: initialState {given:?} is not the template's entry ({})",
                    show(entry)
                )),
            }
        }
        R::CheckoutEnabled => match &snapshot.store {
            Some(store) if !store.checkout_enabled() => Err(format!(
                "store {} has checkout disabled (CheckoutTimeToLive is 0)",
                store.id
            )),
            _ => Ok(()),
        },
        R::SessionNotExpired => {
            let expiry = session
                .and_then(|s| s.created_date)
                .zip(snapshot.store.as_ref())
                .and_then(|(created, store)| store.checkout_expiry(created));
            match expiry {
                Some(expiry) if now >= expiry => Err(format!(
                    "the checkout session expired at {expiry}: start checkout again"
                )),
                _ => Ok(()),
            }
        }
        R::SessionExists => match session {
            Some(s) if s.is_archived => Err(format!("session {} is archived", s.id)),
            Some(_) => Ok(()),
            None => Err("the cart has no checkout session".into()),
        },
        R::SessionStateNotEmpty => match session {
            Some(s) if s.state.is_some() => Ok(()),
            _ => Err("the session's State is empty".into()),
        },
        R::SessionIsProcessing => match session {
            Some(s) if s.is_processing => Ok(()),
            _ => Err("the session is not locked (IsProcessing is false): call updateCheckoutSessionStateAction first".into()),
        },
        R::SessionNotProcessing => match session {
            Some(s) if s.is_processing => Err(format!("session {} is locked (IsProcessing is true)", s.id)),
            _ => Ok(()),
        },
        R::SessionAtStep => {
            let expected = step_state(table, event);
            let actual = session.and_then(|s| s.state);
            match expected {
                Some(step) if actual == Some(step) => Ok(()),
                Some(step) => Err(format!(
                    "{event} runs in the {step} step; the session is in {}",
                    show(actual)
                )),
                None => Err(format!("{event} is not a step of template {}", table.template().name)),
            }
        }
        R::NextStateSet => {
            let expected = step_state(table, event)
                .and_then(|step| table.template().step(step))
                .and_then(|step| step.next);
            let actual = session.and_then(|s| s.next_state);
            if expected.is_some() && actual == expected {
                Ok(())
            } else {
                Err(format!(
                    "the session's NextState is {}, expected {}",
                    show(actual),
                    show(expected)
                ))
            }
        }
        R::ExpectedStateMatches => {
            let (_, expected) = requested_states(command);
            let actual = session.and_then(|s| s.state);
            // Update Checkout Session is a compare-and-set: the expected State is required.
            // A screen step's write may omit it (the standard checkout template writes State
            // "optionally checking" the current one).
            if expected.is_none() && matches!(command, Command::UpdateSession { .. }) {
                return Err("expCurrentState is required: the update is a compare-and-set".into());
            }
            match expected {
                Some(given) if Some(given) != actual.map(SessionState::as_str) => Err(format!(
                    "the session's State is {}, not the expected {given:?}",
                    show(actual)
                )),
                _ => Ok(()),
            }
        }
        R::TargetIsNextStep => {
            let (requested, _) = requested_states(command);
            let requested = requested.unwrap_or_default();
            let current = session.and_then(|s| s.state);
            let from = Node::Session(SessionNode::At(current, Phase::Open));
            let declared = match table.find(event, from) {
                Some(row) if matches!(event, Event::Advance | Event::Close) => match row.to {
                    Node::Session(SessionNode::At(state, _)) => state,
                    _ => None,
                },
                Some(row) => row.next_state,
                None => None,
            };
            match declared {
                Some(next) if next.as_str() == requested => Ok(()),
                Some(next) => Err(format!(
                    "{event} from {} leads to {next}, not {requested:?}",
                    show(current)
                )),
                None => Err(format!("{event} is not declared from {}", show(current))),
            }
        }
        R::CartEditable => cart_status_in(cart, &[CartStatus::Active, CartStatus::Checkout]),
        R::EditValid => {
            let Command::EditCart { edit, .. } = command else {
                return Ok(());
            };
            let positive = |q: &rust_decimal::Decimal| *q > rust_decimal::Decimal::ZERO;
            match edit {
                crate::machine::CartEdit::AddItem { sku, quantity } => {
                    if sku.trim().is_empty() {
                        Err("a new line needs a SKU".into())
                    } else if !positive(quantity) {
                        Err(format!("quantity {quantity} is not positive"))
                    } else {
                        Ok(())
                    }
                }
                crate::machine::CartEdit::SetQuantity { item_id, quantity } => {
                    if snapshot.edited_item.is_none() {
                        Err(format!("cart has no line {item_id:?}"))
                    } else if !positive(quantity) {
                        Err(format!("quantity {quantity} is not positive: remove the line instead"))
                    } else {
                        Ok(())
                    }
                }
                crate::machine::CartEdit::RemoveItem { item_id } => match snapshot.edited_item {
                    Some(_) => Ok(()),
                    None => Err(format!("cart has no line {item_id:?}")),
                },
            }
        }
        R::OrderNotActivated => match (&snapshot.order, session) {
            // checkoutSessionAction may resume such a checkout; only a restart (of a failed
            // or expired session) would leave it.
            (Some(order), Some(s))
                if !s.is_archived
                    && s.order_id == Some(order.id)
                    && order.status == OrderStatus::Activated
                    && (!matches!(command, Command::StartSession { .. })
                        || s.state == Some(SessionState::Error)
                        || session_expired(snapshot, now)) =>
            {
                Err(format!(
                    "order {} is activated: the checkout can only complete",
                    order.id
                ))
            }
            _ => Ok(()),
        },
        R::OrderStatusIsActivate => match command {
            Command::ActivateOrder { order_status, .. }
                if order_status.as_deref() != Some(OrderStatus::Activated.as_str()) =>
            {
                Err(format!(
                    "orderStatus {:?} does not mean activate: use \"{}\"",
                    order_status.as_deref().unwrap_or(""),
                    OrderStatus::Activated.as_str()
                ))
            }
            _ => Ok(()),
        },
        R::DraftOrderOnSession => match (&snapshot.order, session.and_then(|s| s.order_id)) {
            (Some(order), Some(id)) if order.id == id && order.status == OrderStatus::Draft => {
                Ok(())
            }
            (Some(order), Some(_)) => Err(format!(
                "order {} is {}, not Draft",
                order.id,
                order.status.as_str()
            )),
            _ => Err("the session has no order: run cartToOrderAction first".into()),
        },
        R::NoErrorOutputs => {
            if snapshot.has_error_outputs {
                Err("the cart has Error-level validation outputs".into())
            } else {
                Ok(())
            }
        }
        R::DeliveryMethodOffered => {
            let Command::SetDetails { details, .. } = command else {
                return Ok(());
            };
            match (&details.delivery_method_id, cart) {
                (Some(method), Some(c)) if !c.delivery_options.iter().any(|o| &o.delivery_method_id == method) => {
                    Err(format!(
                        "delivery method {method:?} is not one the cart was offered ({})",
                        c.delivery_options
                            .iter()
                            .map(|o| o.delivery_method_id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
                _ => Ok(()),
            }
        }
        // Checked by the engine once the inline run ended, never before a decision.
        R::InlineOperationCompleted => Ok(()),
        R::NoOperationInProgress => {
            let active = snapshot
                .operation
                .as_ref()
                .filter(|op| op.status.is_active());
            match active {
                Some(op) => Err(format!(
                    "an integration is already in progress: operation {} is {}",
                    op.id,
                    op.status.as_str()
                )),
                None if snapshot.cart_has_active_operation => {
                    Err("an integration is already in progress for this cart".into())
                }
                None => Ok(()),
            }
        }
    }
}

/// Whether the snapshot's session is past the store's checkout time-to-live at `now`.
fn session_expired(snapshot: &Snapshot, now: DateTime<Utc>) -> bool {
    snapshot
        .session
        .as_ref()
        .and_then(|s| s.created_date)
        .zip(snapshot.store.as_ref())
        .and_then(|(created, store)| store.checkout_expiry(created))
        .is_some_and(|expiry| now >= expiry)
}

fn cart_status_in(
    cart: Option<&crate::model::WebCart>,
    allowed: &[CartStatus],
) -> Result<(), String> {
    match cart {
        Some(c) if allowed.contains(&c.status) => Ok(()),
        Some(c) => Err(format!(
            "cart {} is {}; this needs {}",
            c.id,
            c.status.as_str(),
            allowed
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        )),
        None => Err("no cart".into()),
    }
}

/// The snapshot as the caller of a user command may see it. A cart the caller cannot see at
/// all (not its owner, no share, no Modify All Data), and so its session, is left out, so
/// that every requirement answers exactly as for a cart or session that does not exist:
/// like Salesforce's sharing, an invisible record is indistinguishable from a missing one.
/// Worker commands (no guards) see everything.
pub fn as_seen_by_caller<'a>(snapshot: &'a Snapshot, command: &Command) -> Cow<'a, Snapshot> {
    let hidden = !guards(command.event()).is_empty()
        && snapshot.cart.as_ref().is_some_and(|cart| {
            snapshot
                .user
                .as_ref()
                .is_none_or(|user| cart.access_of(user).is_none())
        });
    if !hidden {
        return Cow::Borrowed(snapshot);
    }
    Cow::Owned(Snapshot {
        user: snapshot.user.clone(),
        ..Snapshot::default()
    })
}

/// Every unmet requirement of `command`, in check order (a dry run).
pub fn unmet(
    table: &TransitionTable,
    snapshot: &Snapshot,
    command: &Command,
    now: DateTime<Utc>,
) -> Vec<Unmet> {
    let snapshot = &*as_seen_by_caller(snapshot, command);
    guards(command.event())
        .iter()
        .filter_map(|g| {
            evaluate(g.requirement, table, snapshot, command, now)
                .err()
                .map(|message| Unmet {
                    requirement: g.requirement,
                    code: g.code,
                    status: g.status,
                    message,
                })
        })
        .collect()
}
