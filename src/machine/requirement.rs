//! Requirements: the named guards of each action, in the order they are checked, each with
//! the errorCode and HTTP status the documentation gives for that action.

use std::borrow::Cow;
use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::error::{ErrorCode, Fenced};
use crate::machine::command::chosen_life_cycle_type;
use crate::machine::decide::{active_session_node, session_node};
use crate::machine::table::{OperationNode, Phase, SessionNode};
use crate::machine::{
    Action, CartEdit, Command, Event, Node, Snapshot, StepInput, Target, TransitionTable,
};
use crate::model::{
    Access, BackgroundOperation, CartCheckoutSession, CartItemType, KeyPrefix, OrderLifeCycleType,
    OrderStatus, Permission, SessionState, SfId, User, WebCart,
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
    /// The table has a row (or a stay row) for this event from the cart's status.
    CartRow,
    /// The initialState input names the template's entry State.
    InitialStateIsEntry,
    /// A row of this event leaves a session node of the session's kind: an active session
    /// where the event needs one (not absent, not archived).
    SessionRow,
    /// The store allows checkout (its time-to-live is not 0).
    CheckoutEnabled,
    /// The session is younger than the store's checkout time-to-live.
    SessionNotExpired,
    /// A row of this event leaves a session node whose State is set exactly when the
    /// session's is (the actions need a State; only a cancel or an edit takes an empty one).
    SessionStateRow,
    /// A row of this event leaves a session node locked exactly when the session is
    /// (IsProcessing): the async actions run on a locked session, the others need it free.
    /// Locked and running count as one, so that a repeat while the step runs is answered
    /// by `NoOperationInProgress`.
    SessionPhaseRow,
    /// A row of this event leaves a session node at the session's State (the step the
    /// action belongs to).
    StepRow,
    /// The session's NextState is the one the row this event fires from the session's
    /// State carries (the State its lock recorded).
    NextStateRow,
    /// The session's State equals the caller's expCurrentState (required by Update Checkout
    /// Session, optional for a screen step's write).
    ExpectedStateMatches,
    /// The requested State is the one the table declares after the current State.
    TargetIsNextStep,
    /// The screen the session leaves has every input it collects: an address; a delivery
    /// method when the Shipment integration offered any; a payment token when the cart has
    /// a total that is not zero.
    ScreenInputsGiven,
    /// No background operation of the cart is New or Running.
    NoOperationInProgress,
    /// A chosen delivery method is one the Shipment integration offered.
    DeliveryMethodOffered,
    /// The edit is well-formed: a positive quantity, a non-blank SKU, a line of this cart.
    EditValid,
    /// The session's order is not activated: once it is, the checkout can only complete.
    OrderNotActivated,
    /// The orderStatus input means "activate" (`Activated`).
    OrderStatusIsActivate,
    /// The orderLifeCycleType input, when given, is `UNMANAGED` or `MANAGED`.
    OrderLifeCycleTypeValid,
    /// The session has a Draft order (made by `cartToOrderAction`).
    DraftOrderOnSession,
    /// The cart has no Error-level CartValidationOutput.
    NoErrorOutputs,
    /// The operation a `runAsync: false` call started completed before the call answered.
    /// Not a guard: the engine checks it after running the operation inline.
    InlineOperationCompleted,
    /// A worker's operation exists.
    OperationExists,
    /// A row (or a stay row) of this worker event leaves the operation's status: only a
    /// New operation is claimed, only a Running one reported on.
    OperationRow,
    /// The worker holds the operation's current attempt (the fencing token).
    AttemptCurrent,
    /// The lease of the attempt has run out (the sweeper's condition).
    LeaseEnded,
    /// A row of this worker event leaves the session's node: the session is active,
    /// locked and running this operation.
    SessionNodeRow,
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
    guard(R::CartRow, C::InvalidOperation, 403),
    guard(R::CheckoutEnabled, C::InvalidOperation, 403),
    guard(R::OrderNotActivated, C::InvalidOperation, 403),
    guard(R::SessionPhaseRow, C::BadRequest, 400),
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
    guard(R::CartRow, C::InvalidOperation, 403),
    guard(R::SessionRow, C::InvalidOperation, 403),
    guard(R::SessionNotExpired, C::InvalidOperation, 403),
    guard(R::SessionStateRow, C::InvalidOperation, 403),
    guard(R::SessionPhaseRow, C::InvalidOperation, 409),
    guard(R::ExpectedStateMatches, C::InvalidOperation, 409),
    guard(R::TargetIsNextStep, C::InvalidOperation, 403),
    guard(R::ScreenInputsGiven, C::RequiredFieldMissing, 400),
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
    guard(R::CartRow, C::InvalidOperation, 403),
    guard(R::SessionRow, C::InvalidOperation, 403),
    guard(R::SessionStateRow, C::InvalidOperation, 403),
    guard(R::SessionPhaseRow, C::InvalidOperation, 409),
    guard(R::ExpectedStateMatches, C::InvalidOperation, 409),
    guard(R::TargetIsNextStep, C::InvalidOperation, 403),
    guard(R::ScreenInputsGiven, C::RequiredFieldMissing, 400),
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
    guard(R::CartRow, C::InvalidOperation, 403),
    guard(R::SessionRow, C::InvalidOperation, 403),
    guard(R::SessionNotExpired, C::InvalidOperation, 403),
    guard(R::SessionStateRow, C::InvalidOperation, 403),
    guard(R::SessionPhaseRow, C::InvalidOperation, 403),
    guard(R::StepRow, C::InvalidOperation, 403),
    guard(R::NextStateRow, C::InvalidOperation, 403),
    guard(R::OrderNotActivated, C::InvalidOperation, 403),
    guard(R::NoOperationInProgress, C::AlreadyInProcess, 400),
];

/// A screen step's write of buyer input onto the cart: the session's access rules, on a
/// cart in checkout whose session is not locked and is at a step the table lets input
/// stay at (before the order exists).
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
    guard(R::CartRow, C::InvalidOperation, 403),
    guard(R::SessionRow, C::InvalidOperation, 403),
    guard(R::SessionNotExpired, C::InvalidOperation, 403),
    guard(R::SessionPhaseRow, C::InvalidOperation, 409),
    // Only before the order (or on a failed or empty State): the order is what is paid for.
    guard(R::StepRow, C::InvalidOperation, 403),
    guard(R::DeliveryMethodOffered, C::InvalidInput, 400),
];

/// `setCheckoutDeliveryMethod`: the async actions' shared guards and codes, on a cart in
/// checkout whose session is not locked and has no order yet (a step the table lets the
/// choice stay at), and a method that is offered.
const DELIVERY_METHOD: &[Guard] = &[
    guard(R::CallerMayInvoke, C::BadRequest, 400),
    guard(R::CartIdValid, C::UnknownException, 500),
    guard(R::CallerCanEditCart, C::BadRequest, 400),
    guard(
        R::EffectiveAccountValid,
        C::InsufficientAccessOrReadonly,
        500,
    ),
    guard(R::CallerIsStoreMember, C::InsufficientAccessOrReadonly, 500),
    guard(R::CartRow, C::InvalidOperation, 403),
    guard(R::SessionRow, C::InvalidOperation, 403),
    guard(R::SessionNotExpired, C::InvalidOperation, 403),
    guard(R::NoOperationInProgress, C::AlreadyInProcess, 400),
    guard(R::SessionPhaseRow, C::InvalidOperation, 403),
    guard(R::StepRow, C::InvalidOperation, 403),
    guard(R::DeliveryMethodOffered, C::InvalidInput, 400),
];

/// `activateOrderAction`: the async actions' shared rows, an order status that must mean
/// "activate" (500 `UNKNOWN_EXCEPTION`), a life cycle type that names one (400
/// `INVALID_INPUT`: Salesforce documents no row for it), and the step, the Draft order, the absence of
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
    guard(R::OrderLifeCycleTypeValid, C::InvalidInput, 400),
    guard(R::CartRow, C::InvalidOperation, 403),
    guard(R::SessionRow, C::InvalidOperation, 403),
    guard(R::SessionNotExpired, C::InvalidOperation, 403),
    guard(R::SessionStateRow, C::InvalidOperation, 403),
    guard(R::SessionPhaseRow, C::InvalidOperation, 403),
    guard(R::StepRow, C::InvalidInput, 403),
    guard(R::NextStateRow, C::InvalidInput, 403),
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
    guard(R::CartRow, C::InvalidOperation, 403),
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
    guard(R::CartRow, C::InvalidOperation, 403),
    guard(R::OrderNotActivated, C::InvalidOperation, 403),
];

/// A worker's fence: an unmet one answers [`CheckoutError::Fenced`] with its typed reason,
/// so the code and status are those every fenced command answers.
const fn fence(requirement: Requirement) -> Guard {
    guard(requirement, C::UnknownException, 409)
}

/// A worker's claim: of an existing New operation, on a cart that is not Closed.
const CLAIM: &[Guard] = &[
    fence(R::OperationExists),
    fence(R::CartRow),
    fence(R::OperationRow),
];

/// A heartbeat: the claim's own attempt of a Running operation.
const HEARTBEAT: &[Guard] = &[
    fence(R::OperationExists),
    fence(R::CartRow),
    fence(R::OperationRow),
    fence(R::AttemptCurrent),
];

/// The sweeper's requeue: a Running attempt whose lease ran out.
const REQUEUE: &[Guard] = &[
    fence(R::OperationExists),
    fence(R::CartRow),
    fence(R::OperationRow),
    fence(R::AttemptCurrent),
    fence(R::LeaseEnded),
];

/// A worker's report: the current attempt, for the session that runs the operation.
const REPORT: &[Guard] = &[
    fence(R::OperationExists),
    fence(R::CartRow),
    fence(R::OperationRow),
    fence(R::AttemptCurrent),
    fence(R::SessionNodeRow),
];

/// The guards of an event, in the order they are checked (first unmet wins). A worker
/// event's guards are its fences, each unmet one with its typed [`Fenced`] reason.
pub fn guards(event: Event) -> &'static [Guard] {
    match event {
        Event::Action(Action::CheckoutSession) => START,
        Event::Action(Action::UpdateCheckoutSessionState) | Event::Advance => UPDATE,
        Event::Close => CLOSE,
        Event::Action(Action::ActivateOrder) => ACTIVATE,
        Event::Action(Action::CancelCartAsyncOperation) => CANCEL,
        Event::Input | Event::Change(_) => INPUT,
        Event::Action(Action::SetCheckoutDeliveryMethod) => DELIVERY_METHOD,
        Event::Edit => EDIT,
        Event::Action(_) | Event::Authorize | Event::Custom(_) => ASYNC,
        Event::Claim => CLAIM,
        Event::Heartbeat => HEARTBEAT,
        Event::Requeue => REQUEUE,
        Event::Succeed | Event::Fail => REPORT,
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

/// What a screen misses, as the buyer's fields name it.
fn missing_input(input: StepInput) -> &'static str {
    match input {
        StepInput::Lines => "lines",
        StepInput::DeliveryAddress => "a delivery address (DeliverTo)",
        StepInput::DeliveryMethod => "one of the offered delivery methods (DeliveryMethodId)",
        StepInput::Payment => "a payment method (PaymentToken)",
    }
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
    Facts::new(table, snapshot, command, now).evaluate(requirement)
}

/// The first guard of `command`'s event that `snapshot` does not meet, as the refusal the
/// caller gets; `Ok` when every guard holds. The facts are gathered once for all guards.
pub(crate) fn first_unmet(
    table: &TransitionTable,
    snapshot: &Snapshot,
    command: &Command,
    now: DateTime<Utc>,
) -> Result<(), Unmet> {
    let facts = Facts::new(table, snapshot, command, now);
    for g in guards(facts.event) {
        facts.evaluate(g.requirement).map_err(|message| Unmet {
            requirement: g.requirement,
            code: g.code,
            status: g.status,
            message,
        })?;
    }
    Ok(())
}

impl Facts<'_> {
    fn evaluate(&self, requirement: Requirement) -> Result<(), String> {
        let facts = self;
        match requirement {
            R::CallerMayInvoke => facts.caller_may_invoke(),
            R::CartIdValid => facts.cart_id_valid(),
            R::SessionIdValid => facts.session_id_valid(),
            R::CallerCanEditCart => facts.caller_can_edit_cart(),
            R::EffectiveAccountValid => facts.effective_account_valid(),
            R::CallerIsStoreMember => facts.caller_is_store_member(),
            R::CartRow => facts.cart_row(),
            R::InitialStateIsEntry => facts.initial_state_is_entry(),
            R::CheckoutEnabled => facts.checkout_enabled(),
            R::SessionNotExpired => facts.session_not_expired(),
            R::SessionRow => facts.session_row(),
            R::SessionStateRow => facts.session_state_row(),
            R::SessionPhaseRow => facts.session_phase_row(),
            R::StepRow => facts.step_row(),
            R::NextStateRow => facts.next_state_row(),
            R::ExpectedStateMatches => facts.expected_state_matches(),
            R::TargetIsNextStep => facts.target_is_next_step(),
            R::ScreenInputsGiven => facts.screen_inputs_given(),
            R::EditValid => facts.edit_valid(),
            R::OrderNotActivated => facts.order_not_activated(),
            R::OrderStatusIsActivate => facts.order_status_is_activate(),
            R::OrderLifeCycleTypeValid => facts.order_life_cycle_type_valid(),
            R::DraftOrderOnSession => facts.draft_order_on_session(),
            R::NoErrorOutputs => facts.no_error_outputs(),
            R::DeliveryMethodOffered => facts.delivery_method_offered(),
            // Checked by the engine once the inline run ended, never before a decision.
            R::InlineOperationCompleted => Ok(()),
            // A worker's fences, which no user command lists (see `fence_of`).
            R::OperationExists
            | R::OperationRow
            | R::AttemptCurrent
            | R::LeaseEnded
            | R::SessionNodeRow => Ok(()),
            R::NoOperationInProgress => facts.no_operation_in_progress(),
        }
    }
}

/// What a requirement is checked against: one command, the snapshot it addresses (as the
/// caller may see it), the table and the time.
struct Facts<'a> {
    table: &'a TransitionTable,
    snapshot: &'a Snapshot,
    command: &'a Command,
    event: Event,
    now: DateTime<Utc>,
    /// The session's node as a user command sees it: an archived session is `Archived`,
    /// wherever it ended.
    here: SessionNode,
}

impl<'a> Facts<'a> {
    fn new(
        table: &'a TransitionTable,
        snapshot: &'a Snapshot,
        command: &'a Command,
        now: DateTime<Utc>,
    ) -> Facts<'a> {
        let here = match snapshot.session.as_ref() {
            Some(s) if s.is_archived => SessionNode::Archived,
            session => active_session_node(table, session, snapshot.operation.as_ref()),
        };
        Facts {
            table,
            snapshot,
            command,
            event: command.event(table),
            now,
            here,
        }
    }
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
}

/// The parts of a session's node a guard asks the table about, in the guard lists' order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Active, rather than absent or archived.
    Kind,
    /// Whether the State is set.
    StateSet,
    /// Whether the session is locked (IsProcessing): locked and running count as one.
    Lock,
    /// The State itself.
    State,
}

/// Whether a row leaving `from` agrees with the session's node `here` on `part`. A session
/// that is absent or archived agrees only with a row leaving its very node.
fn agrees(from: SessionNode, here: SessionNode, part: Part) -> bool {
    match (from, here) {
        (SessionNode::At(state, phase), SessionNode::At(here_state, here_phase)) => match part {
            Part::Kind => true,
            Part::StateSet => state.is_some() == here_state.is_some(),
            Part::Lock => (phase == Phase::Open) == (here_phase == Phase::Open),
            Part::State => state == here_state,
        },
        _ => from == here,
    }
}

/// The table's questions about the cart's and the session's nodes: each asks whether a row
/// of the command's event (or a stay row) leaves a node that agrees with the record's.
impl Facts<'_> {
    fn cart_row(&self) -> Result<(), String> {
        let Some(c) = self.cart() else {
            return Err("no cart".into());
        };
        if self.table.leaves(self.event, Node::Cart(c.status)) {
            return Ok(());
        }
        let allowed: Vec<&str> = self
            .table
            .sources(self.event)
            .into_iter()
            .filter_map(|node| match node {
                Node::Cart(status) => Some(status.as_str()),
                _ => None,
            })
            .collect();
        Err(format!(
            "cart {} is {}; {} needs {}",
            c.id,
            c.status.as_str(),
            self.event,
            if allowed.is_empty() {
                "a cart status the table declares".to_owned()
            } else {
                allowed.join(" or ")
            }
        ))
    }

    /// Whether a row (or stay row) of the event leaves a session node that agrees with the
    /// session's on `part`.
    fn session_agrees(&self, part: Part) -> bool {
        let here = self.here;
        self.table
            .sources_of(self.event)
            .iter()
            .any(|&from| matches!(from, Node::Session(from) if agrees(from, here, part)))
    }

    /// What is wrong with a session that is absent or archived, or `None` for an active one.
    fn inactive_session(&self) -> Option<String> {
        match self.session() {
            None => Some("the cart has no checkout session".into()),
            Some(s) if s.is_archived => Some(format!("session {} is archived", s.id)),
            Some(_) => None,
        }
    }

    fn session_row(&self) -> Result<(), String> {
        if self.session_agrees(Part::Kind) {
            return Ok(());
        }
        Err(self
            .inactive_session()
            .unwrap_or_else(|| format!("{} does not apply to an active session", self.event)))
    }

    fn session_state_row(&self) -> Result<(), String> {
        if self.session_agrees(Part::StateSet) {
            return Ok(());
        }
        Err(match self.session() {
            Some(s) if s.state.is_some() && !s.is_archived => {
                format!(
                    "{} does not apply to a session whose State is set",
                    self.event
                )
            }
            _ => "the session's State is empty".into(),
        })
    }

    fn session_phase_row(&self) -> Result<(), String> {
        if self.session_agrees(Part::Lock) {
            return Ok(());
        }
        if let Some(problem) = self.inactive_session() {
            return Err(problem);
        }
        Err(match self.session() {
            Some(s) if s.is_processing => format!(
                "cart already in progress: session {} is locked (IsProcessing is true)",
                s.id
            ),
            _ => "the session is not locked (IsProcessing is false): \
                  call updateCheckoutSessionStateAction first"
                .into(),
        })
    }

    fn step_row(&self) -> Result<(), String> {
        if self.session_agrees(Part::State) {
            return Ok(());
        }
        let event = self.event;
        let steps: BTreeSet<String> = self
            .table
            .sources(event)
            .into_iter()
            .filter_map(|node| match node {
                Node::Session(SessionNode::At(Some(state), _)) => Some(state.to_string()),
                _ => None,
            })
            .collect();
        if steps.is_empty() {
            return Err(format!(
                "{event} is not a step of template {}",
                self.table.template().name
            ));
        }
        let actual = self.session().and_then(|s| s.state);
        Err(format!(
            "{event} runs in the {} step; the session is in {}",
            steps.into_iter().collect::<Vec<_>>().join(" or "),
            show(actual)
        ))
    }

    fn next_state_row(&self) -> Result<(), String> {
        let session = self.session().filter(|s| !s.is_archived);
        let state = session.and_then(|s| s.state);
        let expected = self
            .table
            .rows()
            .iter()
            .filter(|row| row.event == self.event)
            .filter(
                |row| matches!(row.from, Node::Session(SessionNode::At(from, _)) if from == state),
            )
            .find_map(|row| row.next_state);
        let actual = session.and_then(|s| s.next_state);
        if session.is_some() && expected.is_some() && actual == expected {
            return Ok(());
        }
        Err(format!(
            "the session's NextState is {}, expected {}",
            show(actual),
            show(expected)
        ))
    }
}

/// The session's State, lock and step.
impl Facts<'_> {
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
    /// Leaving a screen (a screen step's write of State) needs what the screen collects.
    fn screen_inputs_given(&self) -> Result<(), String> {
        if !matches!(self.event, Event::Advance | Event::Close) {
            return Ok(());
        }
        let Some(step) = self
            .session()
            .and_then(|s| s.state)
            .and_then(|state| self.table.template().step(state))
        else {
            return Ok(());
        };
        match step.collects.iter().find(|&&input| !self.given(input)) {
            None => Ok(()),
            Some(input) => Err(format!(
                "{} cannot move on without {}",
                step.state,
                missing_input(*input)
            )),
        }
    }

    /// Whether the cart holds `input`, where the checkout needs it.
    fn given(&self, input: StepInput) -> bool {
        let Some(cart) = self.cart() else {
            return false;
        };
        match input {
            StepInput::Lines => true,
            StepInput::DeliveryAddress => cart.deliver_to.is_some(),
            StepInput::DeliveryMethod => {
                cart.delivery_options.is_empty() || cart.delivery_method_id.is_some()
            }
            // Nothing to pay for is known before the cart is priced: the payment step
            // itself refuses a cart without a total.
            StepInput::Payment => {
                cart.payment_token.is_some()
                    || cart.grand_total_amount.is_none_or(|total| total.is_zero())
            }
        }
    }

    fn edit_valid(&self) -> Result<(), String> {
        let Command::EditCart { edit, .. } = self.command else {
            return Ok(());
        };
        let positive = |q: &Decimal| *q > Decimal::ZERO;
        // The delivery charge follows the chosen method; the buyer edits products only.
        if let Some(line) = &self.snapshot.edited_item
            && line.item_type == CartItemType::Charge
        {
            return Err(format!(
                "line {} is the delivery charge, which follows the chosen delivery method",
                line.id
            ));
        }
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
        let method = match self.command {
            Command::SetDetails { details, .. } => details.delivery_method_id.as_ref(),
            Command::SetDeliveryMethod {
                delivery_method_id, ..
            } => Some(delivery_method_id),
            _ => None,
        };
        let (Some(method), Some(c)) = (method, self.cart()) else {
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
        let leaves_checkout =
            !matches!(self.command, Command::StartSession { .. }) || self.start_restarts();
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

    /// Whether the start row that applies to the session at its State archives it (a
    /// restart), whatever its lock: a locked session is refused later, for its lock.
    fn start_restarts(&self) -> bool {
        let node = match self.here {
            SessionNode::At(state, _) => SessionNode::At(state, Phase::Open),
            other => other,
        };
        let node = Node::Session(node);
        self.table
            .find_any(self.event, node)
            .is_some_and(|row| row.when.is_none_or(|c| c.holds(self.snapshot, self.now)))
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

    fn order_life_cycle_type_valid(&self) -> Result<(), String> {
        let Command::ActivateOrder {
            order_life_cycle_type: given,
            ..
        } = self.command
        else {
            return Ok(());
        };
        match chosen_life_cycle_type(given.as_deref()) {
            Some(_) => Ok(()),
            None => Err(format!(
                "orderLifeCycleType {:?} is neither {} nor {}",
                given.as_deref().unwrap_or_default(),
                OrderLifeCycleType::Unmanaged.as_str(),
                OrderLifeCycleType::Managed.as_str()
            )),
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

/// Checks a worker event's fences in order; the first unmet one is why the worker command is
/// refused. `attempt` is the fencing token the command holds, if it holds one.
pub(crate) fn check_fences(
    table: &TransitionTable,
    snapshot: &Snapshot,
    event: Event,
    attempt: Option<u32>,
    now: DateTime<Utc>,
) -> Result<(), Fenced> {
    let fences = Fences {
        table,
        snapshot,
        event,
        attempt,
        now,
    };
    guards(event)
        .iter()
        .try_for_each(|g| fences.check(g.requirement))
}

/// What a worker command's fences are checked against.
struct Fences<'a> {
    table: &'a TransitionTable,
    snapshot: &'a Snapshot,
    event: Event,
    attempt: Option<u32>,
    now: DateTime<Utc>,
}

impl Fences<'_> {
    fn check(&self, requirement: Requirement) -> Result<(), Fenced> {
        match requirement {
            R::OperationExists => self.operation().map(|_| ()),
            R::CartRow => self.cart_row(),
            R::OperationRow => self.operation_row(),
            R::AttemptCurrent => self.attempt_current(),
            R::LeaseEnded => self.lease_ended(),
            R::SessionNodeRow => self.session_node_row(),
            // The user commands' requirements are no fences.
            _ => Ok(()),
        }
    }

    fn operation(&self) -> Result<&BackgroundOperation, Fenced> {
        self.snapshot
            .operation
            .as_ref()
            .ok_or(Fenced::OperationMissing)
    }

    fn superseded(&self, op: &BackgroundOperation) -> Fenced {
        Fenced::AttemptSuperseded {
            operation: op.id,
            status: op.status,
            held: self.attempt.unwrap_or_default(),
            current: op.attempt,
        }
    }

    /// Only a Closed cart has no row for a worker event: not even a report may change it.
    fn cart_row(&self) -> Result<(), Fenced> {
        match &self.snapshot.cart {
            Some(cart) if !self.table.leaves(self.event, Node::Cart(cart.status)) => {
                Err(Fenced::CartClosed { cart: cart.id })
            }
            _ => Ok(()),
        }
    }

    fn operation_row(&self) -> Result<(), Fenced> {
        let op = self.operation()?;
        let node = Node::Operation(OperationNode::Is(op.status));
        if self.table.leaves(self.event, node) {
            Ok(())
        } else if self.event == Event::Claim {
            Err(Fenced::NotClaimable {
                operation: op.id,
                status: op.status,
            })
        } else {
            Err(self.superseded(op))
        }
    }

    fn attempt_current(&self) -> Result<(), Fenced> {
        let op = self.operation()?;
        if self.attempt == Some(op.attempt) {
            Ok(())
        } else {
            Err(self.superseded(op))
        }
    }

    /// A heartbeat may have renewed the lease since the sweeper read it.
    fn lease_ended(&self) -> Result<(), Fenced> {
        let op = self.operation()?;
        match op.expires_at.filter(|until| *until > self.now) {
            Some(until) => Err(Fenced::LeaseRunning {
                operation: op.id,
                until,
            }),
            None => Ok(()),
        }
    }

    fn session_node_row(&self) -> Result<(), Fenced> {
        let op = self.operation()?;
        let node = session_node(self.table, self.snapshot.session.as_ref(), Some(op));
        if self.table.leaves(self.event, Node::Session(node)) {
            Ok(())
        } else {
            Err(Fenced::SessionFinished { operation: op.id })
        }
    }
}

/// The snapshot as the caller of a user command may see it. A cart the caller cannot see at
/// all (not its owner, no share, no Modify All Data), and so its session, is left out, so
/// that every requirement answers exactly as for a cart or session that does not exist:
/// like Salesforce's sharing, an invisible record is indistinguishable from a missing one.
/// Only user commands are decided this way; workers' commands see every record.
pub(crate) fn as_seen_by_caller(snapshot: &Snapshot) -> Cow<'_, Snapshot> {
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
pub(crate) fn unmet(
    table: &TransitionTable,
    snapshot: &Snapshot,
    command: &Command,
    now: DateTime<Utc>,
) -> Vec<Unmet> {
    let snapshot = &*as_seen_by_caller(snapshot);
    let facts = Facts::new(table, snapshot, command, now);
    guards(facts.event)
        .iter()
        .filter_map(|g| {
            facts.evaluate(g.requirement).err().map(|message| Unmet {
                requirement: g.requirement,
                code: g.code,
                status: g.status,
                message,
            })
        })
        .collect()
}
