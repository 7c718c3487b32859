//! Requirements: the named guards of each action, in the order they are checked, each with
//! the errorCode and HTTP status the documentation gives for that action.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::error::ErrorCode;
use crate::machine::table::{Phase, SessionNode};
use crate::machine::{Action, CartEdit, Command, Event, Node, Snapshot, Target, TransitionTable};
use crate::model::{
    Access, CartCheckoutSession, CartStatus, KeyPrefix, OrderStatus, Permission, SessionState,
    SfId, User, WebCart,
};

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
        Event::Action(_) | Event::Authorize | Event::Custom(_) => ASYNC,
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

/// The step an async command belongs to: the one whose own event it fires (an async core
/// action, the payment step's authorisation, a custom step's action).
fn step_state(table: &TransitionTable, event: Event) -> Option<SessionState> {
    table
        .template()
        .steps
        .iter()
        .find(|s| s.own_event() == Some(event))
        .map(|s| s.state)
}

fn show(state: Option<SessionState>) -> String {
    state.map_or_else(|| "(empty)".to_owned(), |s| s.to_string())
}

/// Evaluates one requirement; `Err` carries the message for a person.
pub fn evaluate(
    requirement: Requirement,
    table: &TransitionTable,
    snapshot: &Snapshot,
    command: &Command,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let facts = Facts {
        table,
        snapshot,
        command,
        event: command.event(table),
        now,
    };
    match requirement {
        R::CallerMayInvoke => facts.caller_may_invoke(),
        R::CartIdValid => facts.cart_id_valid(),
        R::SessionIdValid => facts.session_id_valid(),
        R::CallerCanEditCart => facts.caller_can_edit_cart(),
        R::EffectiveAccountValid => facts.effective_account_valid(),
        R::CallerIsStoreMember => facts.caller_is_store_member(),
        R::CartInCheckout => cart_status_in(facts.cart(), IN_CHECKOUT),
        R::CartOpenForCheckout => cart_status_in(facts.cart(), OPEN),
        R::CartNotClosed => cart_status_in(facts.cart(), NOT_CLOSED),
        R::CartNotClosedOrProcessing => cart_status_in(facts.cart(), NOT_CLOSED_OR_PROCESSING),
        R::CartEditable => cart_status_in(facts.cart(), OPEN),
        R::NoSessionInProgress => facts.no_session_in_progress(),
        R::InitialStateIsEntry => facts.initial_state_is_entry(),
        R::CheckoutEnabled => facts.checkout_enabled(),
        R::SessionNotExpired => facts.session_not_expired(),
        R::SessionExists => facts.session_exists(),
        R::SessionStateNotEmpty => facts.session_state_not_empty(),
        R::SessionIsProcessing => facts.session_is_processing(),
        R::SessionNotProcessing => facts.session_not_processing(),
        R::SessionAtStep => facts.session_at_step(),
        R::NextStateSet => facts.next_state_set(),
        R::ExpectedStateMatches => facts.expected_state_matches(),
        R::TargetIsNextStep => facts.target_is_next_step(),
        R::EditValid => facts.edit_valid(),
        R::OrderNotActivated => facts.order_not_activated(),
        R::OrderStatusIsActivate => facts.order_status_is_activate(),
        R::DraftOrderOnSession => facts.draft_order_on_session(),
        R::NoErrorOutputs => facts.no_error_outputs(),
        R::DeliveryMethodOffered => facts.delivery_method_offered(),
        // Checked by the engine once the inline run ended, never before a decision.
        R::InlineOperationCompleted => Ok(()),
        R::NoOperationInProgress => facts.no_operation_in_progress(),
    }
}

/// The cart statuses each cart-status requirement allows, in the order its message names them.
const IN_CHECKOUT: &[CartStatus] = &[CartStatus::Checkout];
const OPEN: &[CartStatus] = &[CartStatus::Active, CartStatus::Checkout];
const NOT_CLOSED: &[CartStatus] = &[
    CartStatus::Active,
    CartStatus::Checkout,
    CartStatus::PendingClosed,
    CartStatus::PendingDelete,
    CartStatus::Processing,
];
const NOT_CLOSED_OR_PROCESSING: &[CartStatus] = &[
    CartStatus::Active,
    CartStatus::Checkout,
    CartStatus::PendingClosed,
    CartStatus::PendingDelete,
];

/// What a requirement is checked against: one command, the snapshot it addresses (as the
/// caller may see it), the table and the time.
struct Facts<'a> {
    table: &'a TransitionTable,
    snapshot: &'a Snapshot,
    command: &'a Command,
    event: Event,
    now: DateTime<Utc>,
}

impl Facts<'_> {
    fn user(&self) -> Option<&User> {
        self.snapshot.user.as_ref()
    }

    fn cart(&self) -> Option<&WebCart> {
        self.snapshot.cart.as_ref()
    }

    fn session(&self) -> Option<&CartCheckoutSession> {
        self.snapshot.session.as_ref()
    }
}

/// The caller and its access.
impl Facts<'_> {
    fn caller_may_invoke(&self) -> Result<(), String> {
        match self.user() {
            None => Err("the caller is not a known user".into()),
            Some(u)
                if u.has(Permission::B2BBuyer)
                    || u.has(Permission::B2BCommerceIntegrator)
                    || u.has(Permission::ModifyAllData) =>
            {
                Ok(())
            }
            Some(u) => Err(format!(
                "user {} lacks the permission to invoke {} \
                 (B2B buyer, B2BCommerceIntegrator or ModifyAllData)",
                u.id, self.event
            )),
        }
    }

    fn cart_id_valid(&self) -> Result<(), String> {
        let cart = self.cart();
        let Target::Cart(cart_id) = self.command.target() else {
            return cart.map(|_| ()).ok_or_else(|| "no cart".into());
        };
        match SfId::parse_kind(&cart_id, KeyPrefix::WebCart) {
            Err(e) => Err(format!("invalid cartId: {e}")),
            Ok(id) if cart.is_some_and(|c| c.id == id) => Ok(()),
            Ok(id) => Err(format!("invalid cartId: no cart {id}")),
        }
    }

    fn session_id_valid(&self) -> Result<(), String> {
        if self.session().is_some() {
            return Ok(());
        }
        let given = match self.command {
            Command::UpdateSession { session_id, .. } | Command::Advance { session_id, .. } => {
                session_id.as_str()
            }
            _ => "",
        };
        Err(format!(
            "invalid checkoutSessionId {given:?}: no such session"
        ))
    }

    fn caller_can_edit_cart(&self) -> Result<(), String> {
        let (Some(u), Some(c)) = (self.user(), self.cart()) else {
            return Err("no access to the cart".into());
        };
        match c.access_of(u) {
            Some(Access::Edit) => Ok(()),
            Some(Access::Read) => Err(format!(
                "user {} can read cart {} but not edit it",
                u.id, c.id
            )),
            None => Err(format!("user {} has no access to cart {}", u.id, c.id)),
        }
    }

    fn effective_account_valid(&self) -> Result<(), String> {
        let (Some(u), Some(c)) = (self.user(), self.cart()) else {
            return Err("the cart's effective account is unknown".into());
        };
        match &self.snapshot.account {
            None => Err(format!(
                "the cart's effective account {} does not exist",
                c.account_id
            )),
            Some(a) if !a.is_active => Err(format!(
                "the cart's effective account {} is not active",
                a.id
            )),
            Some(a) if u.account_id.is_some_and(|own| own != a.id) => Err(format!(
                "the cart's effective account {} is not accessible to user {}",
                a.id, u.id
            )),
            Some(_) => Ok(()),
        }
    }

    fn caller_is_store_member(&self) -> Result<(), String> {
        let (Some(u), Some(c)) = (self.user(), self.cart()) else {
            return Err("the store is unknown".into());
        };
        let buyer = u.account_id.unwrap_or(c.account_id);
        match &self.snapshot.store {
            Some(store) if store.buyer_accounts.contains(&buyer) => Ok(()),
            Some(store) => Err(format!(
                "account {buyer} is not a member of store {}",
                store.id
            )),
            None => Err(format!(
                "the cart's store {} does not exist",
                c.web_store_id
            )),
        }
    }
}

/// Starting a checkout, and the session's lifetime.
impl Facts<'_> {
    fn no_session_in_progress(&self) -> Result<(), String> {
        match self.session() {
            Some(s) if s.is_processing && !s.is_archived => Err(format!(
                "cart already in progress: session {} is processing",
                s.id
            )),
            _ => Ok(()),
        }
    }

    fn initial_state_is_entry(&self) -> Result<(), String> {
        let entry = self.table.template().entry();
        let Command::StartSession { initial_state, .. } = self.command else {
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

    fn checkout_enabled(&self) -> Result<(), String> {
        match &self.snapshot.store {
            Some(store) if !store.checkout_enabled() => Err(format!(
                "store {} has checkout disabled (CheckoutTimeToLive is 0)",
                store.id
            )),
            _ => Ok(()),
        }
    }

    fn session_not_expired(&self) -> Result<(), String> {
        match self.snapshot.session_expired_at(self.now) {
            Some(expiry) => Err(format!(
                "the checkout session expired at {expiry}: start checkout again"
            )),
            None => Ok(()),
        }
    }

    fn session_exists(&self) -> Result<(), String> {
        match self.session() {
            Some(s) if s.is_archived => Err(format!("session {} is archived", s.id)),
            Some(_) => Ok(()),
            None => Err("the cart has no checkout session".into()),
        }
    }
}

/// The session's State, lock and step.
impl Facts<'_> {
    fn session_state_not_empty(&self) -> Result<(), String> {
        match self.session() {
            Some(s) if s.state.is_some() => Ok(()),
            _ => Err("the session's State is empty".into()),
        }
    }

    fn session_is_processing(&self) -> Result<(), String> {
        match self.session() {
            Some(s) if s.is_processing => Ok(()),
            _ => Err("the session is not locked (IsProcessing is false): \
                      call updateCheckoutSessionStateAction first"
                .into()),
        }
    }

    fn session_not_processing(&self) -> Result<(), String> {
        match self.session() {
            Some(s) if s.is_processing => {
                Err(format!("session {} is locked (IsProcessing is true)", s.id))
            }
            _ => Ok(()),
        }
    }

    fn session_at_step(&self) -> Result<(), String> {
        let event = self.event;
        let expected = step_state(self.table, event);
        let actual = self.session().and_then(|s| s.state);
        match expected {
            Some(step) if actual == Some(step) => Ok(()),
            Some(step) => Err(format!(
                "{event} runs in the {step} step; the session is in {}",
                show(actual)
            )),
            None => Err(format!(
                "{event} is not a step of template {}",
                self.table.template().name
            )),
        }
    }

    fn next_state_set(&self) -> Result<(), String> {
        let template = self.table.template();
        let expected = step_state(self.table, self.event)
            .and_then(|step| template.step(step))
            .and_then(|step| step.next);
        let actual = self.session().and_then(|s| s.next_state);
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

    fn expected_state_matches(&self) -> Result<(), String> {
        let (_, expected) = requested_states(self.command);
        let actual = self.session().and_then(|s| s.state);
        // Update Checkout Session is a compare-and-set: the expected State is required.
        // A screen step's write may omit it (the standard checkout template writes State
        // "optionally checking" the current one).
        if expected.is_none() && matches!(self.command, Command::UpdateSession { .. }) {
            return Err("expCurrentState is required: the update is a compare-and-set".into());
        }
        match expected {
            Some(given) if Some(given) != actual.as_ref().map(SessionState::as_str) => {
                Err(format!(
                    "the session's State is {}, not the expected {given:?}",
                    show(actual)
                ))
            }
            _ => Ok(()),
        }
    }

    fn target_is_next_step(&self) -> Result<(), String> {
        let event = self.event;
        let (requested, _) = requested_states(self.command);
        let requested = requested.unwrap_or_default();
        let current = self.session().and_then(|s| s.state);
        match self.declared_target(current) {
            Some(next) if next.as_str() == requested => Ok(()),
            Some(next) => Err(format!(
                "{event} from {} leads to {next}, not {requested:?}",
                show(current)
            )),
            None => Err(format!("{event} is not declared from {}", show(current))),
        }
    }

    /// The State the table declares after `current` for this event: a screen step's move
    /// goes to its row's target, Update Checkout Session to its row's NextState.
    fn declared_target(&self, current: Option<SessionState>) -> Option<SessionState> {
        let from = Node::Session(SessionNode::At(current, Phase::Open));
        let row = self.table.find(self.event, from)?;
        if matches!(self.event, Event::Advance | Event::Close) {
            match row.to {
                Node::Session(SessionNode::At(state, _)) => state,
                _ => None,
            }
        } else {
            row.next_state
        }
    }
}

/// The buyer's input: cart edits and checkout details.
impl Facts<'_> {
    fn edit_valid(&self) -> Result<(), String> {
        let Command::EditCart { edit, .. } = self.command else {
            return Ok(());
        };
        let positive = |q: &Decimal| *q > Decimal::ZERO;
        match edit {
            CartEdit::AddItem { sku, quantity } => {
                if sku.trim().is_empty() {
                    Err("a new line needs a SKU".into())
                } else if !positive(quantity) {
                    Err(format!("quantity {quantity} is not positive"))
                } else {
                    Ok(())
                }
            }
            CartEdit::SetQuantity { item_id, quantity } => {
                if self.snapshot.edited_item.is_none() {
                    Err(format!("cart has no line {item_id:?}"))
                } else if !positive(quantity) {
                    Err(format!(
                        "quantity {quantity} is not positive: remove the line instead"
                    ))
                } else {
                    Ok(())
                }
            }
            CartEdit::RemoveItem { item_id } => match self.snapshot.edited_item {
                Some(_) => Ok(()),
                None => Err(format!("cart has no line {item_id:?}")),
            },
        }
    }

    fn delivery_method_offered(&self) -> Result<(), String> {
        let Command::SetDetails { details, .. } = self.command else {
            return Ok(());
        };
        let (Some(method), Some(c)) = (&details.delivery_method_id, self.cart()) else {
            return Ok(());
        };
        let offered = &c.delivery_options;
        if offered.iter().any(|o| &o.delivery_method_id == method) {
            return Ok(());
        }
        Err(format!(
            "delivery method {method:?} is not one the cart was offered ({})",
            offered
                .iter()
                .map(|o| o.delivery_method_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// The order and the cart's operations.
impl Facts<'_> {
    fn order_not_activated(&self) -> Result<(), String> {
        let (Some(order), Some(s)) = (&self.snapshot.order, self.session()) else {
            return Ok(());
        };
        // checkoutSessionAction may resume such a checkout; only a restart (of a failed
        // or expired session) would leave it.
        let leaves_checkout = !matches!(self.command, Command::StartSession { .. })
            || s.state == Some(SessionState::Error)
            || self.snapshot.session_expired_at(self.now).is_some();
        if !s.is_archived
            && s.order_id == Some(order.id)
            && order.status == OrderStatus::Activated
            && leaves_checkout
        {
            return Err(format!(
                "order {} is activated: the checkout can only complete",
                order.id
            ));
        }
        Ok(())
    }

    fn order_status_is_activate(&self) -> Result<(), String> {
        let activate = OrderStatus::Activated.as_str();
        match self.command {
            Command::ActivateOrder { order_status, .. }
                if order_status.as_deref() != Some(activate) =>
            {
                Err(format!(
                    "orderStatus {:?} does not mean activate: use \"{activate}\"",
                    order_status.as_deref().unwrap_or("")
                ))
            }
            _ => Ok(()),
        }
    }

    fn draft_order_on_session(&self) -> Result<(), String> {
        let on_session = self.session().and_then(|s| s.order_id);
        match (&self.snapshot.order, on_session) {
            (Some(order), Some(id)) if order.id == id && order.status == OrderStatus::Draft => {
                Ok(())
            }
            (Some(order), Some(_)) => Err(format!(
                "order {} is {}, not Draft",
                order.id,
                order.status.as_str()
            )),
            _ => Err("the session has no order: run cartToOrderAction first".into()),
        }
    }

    fn no_error_outputs(&self) -> Result<(), String> {
        if self.snapshot.has_error_outputs {
            Err("the cart has Error-level validation outputs".into())
        } else {
            Ok(())
        }
    }

    fn no_operation_in_progress(&self) -> Result<(), String> {
        let active = self
            .snapshot
            .operation
            .as_ref()
            .filter(|op| op.status.is_active());
        match active {
            Some(op) => Err(format!(
                "an integration is already in progress: operation {} is {}",
                op.id,
                op.status.as_str()
            )),
            None if self.snapshot.cart_has_active_operation => {
                Err("an integration is already in progress for this cart".into())
            }
            None => Ok(()),
        }
    }
}

fn cart_status_in(cart: Option<&WebCart>, allowed: &[CartStatus]) -> Result<(), String> {
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
/// Only user commands are decided this way; workers' commands see every record.
pub fn as_seen_by_caller(snapshot: &Snapshot) -> Cow<'_, Snapshot> {
    let hidden = snapshot.cart.as_ref().is_some_and(|cart| {
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
    let snapshot = &*as_seen_by_caller(snapshot);
    guards(command.event(table))
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
