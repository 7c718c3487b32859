//! `decide`: the pure core. Given a snapshot, a command and the time, it returns the records
//! to write or the documented refusal. It does no I/O and reads no clock.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::error::{CheckoutError, Fenced, RecordKind, Stale};
use crate::machine::command::chosen_life_cycle_type;
use crate::machine::requirement::{as_seen_by_caller, check_fences, unmet};
use crate::machine::table::{OperationNode, Phase, SessionNode};
use crate::machine::{
    Command, Condition, Event, Machine, Node, Snapshot, StepInput, StepKind, StepOutcome,
    TransitionTable, ValidationMessage, WorkerCommand, amounts,
};
use crate::model::{
    BackgroundOperation, CartCheckoutSession, CartItem, CartItemType, CartStatus,
    CartValidationOutput, KeyPrefix, Level, OperationStatus, Order, OrderLifeCycleType, OutputType,
    ProviderKind, SessionState, SfId, WebCart, clip_message,
};

/// The buyer's message for a step that failed by a system error rather than a check.
const SYSTEM_ERROR_MESSAGE: &str =
    "We couldn't complete this step because of a system error. Try again or contact the store.";

/// The name of the payment step's operations (payment is not a core action).
pub const PAYMENT_OPERATION: &str = "authorizePayment";

/// Hands out new record IDs. Injected so tests and simulations control it.
pub trait IdSource: Send + Sync {
    /// A new, unused ID for an object kind.
    fn next_id(&self, kind: KeyPrefix) -> SfId;
}

/// Settings `decide` applies to the operations it creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OperationSettings {
    /// Longest a provider call may take, in milliseconds (Salesforce's ceiling is 120 s).
    pub timeout_ms: u64,
    /// Claims after the first that a sweeper may make when a worker disappears.
    pub retry_limit: u32,
}

impl Default for OperationSettings {
    fn default() -> Self {
        OperationSettings {
            timeout_ms: 120_000,
            retry_limit: 2,
        }
    }
}

/// The inputs of `decide` besides the snapshot and command.
pub struct DecideContext<'a> {
    /// The validated table.
    pub table: &'a TransitionTable,
    /// The time of the command.
    pub now: DateTime<Utc>,
    /// Where new IDs come from.
    pub ids: &'a dyn IdSource,
    /// Settings for new operations.
    pub settings: OperationSettings,
}

impl std::fmt::Debug for DecideContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The table and the ID source are shared parts with no state worth printing.
        f.debug_struct("DecideContext")
            .field("table", &self.table.template().name)
            .field("now", &self.now)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// One machine's move in a decision, checked against the table before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Move {
    /// The machine.
    pub machine: Machine,
    /// The record that moves.
    pub record: SfId,
    /// Its node before.
    pub from: Node,
    /// Its node after.
    pub to: Node,
}

/// The records a decision writes. Every record carries its new version (old + 1; 1 for a new
/// record): the store writes all of them or none, and only where each stored version is the
/// old one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Carts to write.
    pub carts: Vec<WebCart>,
    /// Sessions to write.
    pub sessions: Vec<CartCheckoutSession>,
    /// Operations to write.
    pub operations: Vec<BackgroundOperation>,
    /// Cart lines to replace; only with a cart in `carts`, whose version guards them.
    pub items: Vec<crate::model::CartItem>,
    /// Cart lines to delete; only with a cart in `carts`.
    pub removed_items: Vec<SfId>,
    /// Orders to write.
    pub orders: Vec<crate::model::Order>,
    /// Delete the cart's CartValidationOutputs first.
    pub clear_outputs_of: Option<SfId>,
    /// CartValidationOutputs to add.
    pub outputs: Vec<CartValidationOutput>,
}

impl Changes {
    /// True when the decision writes no record but operations.
    pub(crate) fn is_empty_but_operations(&self) -> bool {
        Changes {
            operations: Vec::new(),
            ..self.clone()
        }
        .is_empty()
    }

    /// True when the decision writes nothing.
    pub fn is_empty(&self) -> bool {
        self.carts.is_empty()
            && self.sessions.is_empty()
            && self.operations.is_empty()
            && self.items.is_empty()
            && self.removed_items.is_empty()
            && self.orders.is_empty()
            && self.clear_outputs_of.is_none()
            && self.outputs.is_empty()
    }
}

/// What an accepted command answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Output {
    /// A session action's `requestId` (the session's Id).
    RequestId(SfId),
    /// An async action's `backgroundOperationId`.
    BackgroundOperationId(SfId),
    /// No output values.
    Nothing,
}

/// An accepted command: its event, moves, writes and answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The event fired.
    pub event: Event,
    /// The declared moves it makes.
    pub moves: Vec<Move>,
    /// What to write.
    pub changes: Changes,
    /// What to answer.
    pub output: Output,
}

/// When a lease of `lease_ms` taken at `now` ends.
fn lease_end(now: DateTime<Utc>, lease_ms: u64) -> DateTime<Utc> {
    i64::try_from(lease_ms)
        .ok()
        .and_then(Duration::try_milliseconds)
        .and_then(|lease| now.checked_add_signed(lease))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A session's node under `table`, given its current operation. A session archived at the
/// template's terminal State keeps that node: the checkout completed there.
pub fn session_node(
    table: &TransitionTable,
    session: Option<&CartCheckoutSession>,
    operation: Option<&BackgroundOperation>,
) -> SessionNode {
    match session {
        Some(s) if s.is_archived && s.state.is_some() && s.state == table.terminal() => {
            SessionNode::At(s.state, Phase::Open)
        }
        Some(s) if s.is_archived => SessionNode::Archived,
        session => active_session_node(table, session, operation),
    }
}

/// The node of a session that is not archived (or absent), given its current operation.
///
/// A State the table does not know (the template changed under a checkout, or the data was
/// imported) is read as no State: like an empty one, the session can then only be left (a
/// cancel, an edit, a restart), never moved on.
pub(crate) fn active_session_node(
    table: &TransitionTable,
    session: Option<&CartCheckoutSession>,
    operation: Option<&BackgroundOperation>,
) -> SessionNode {
    let Some(s) = session else {
        return SessionNode::Absent;
    };
    let running = operation
        .is_some_and(|op| Some(op.id) == s.background_operation_id && op.status.is_active());
    let phase = match (s.is_processing, running) {
        (false, _) => Phase::Open,
        (true, false) => Phase::Locked,
        (true, true) => Phase::Running,
    };
    let state = s.state.filter(|&state| table.knows_state(state));
    SessionNode::At(state, phase)
}

/// An operation's node.
pub fn operation_node(operation: Option<&BackgroundOperation>) -> OperationNode {
    operation.map_or(OperationNode::Absent, |op| OperationNode::Is(op.status))
}

/// Decides a command. `Ok` holds the declared moves and the records to write; `Err` is the
/// first unmet requirement (with its documented code and status) or why nothing applies.
pub fn decide(
    ctx: &DecideContext<'_>,
    snapshot: &Snapshot,
    command: &Command,
) -> Result<Decision, CheckoutError> {
    let event = command.event(ctx.table);
    let snapshot = &*as_seen_by_caller(snapshot);
    crate::machine::requirement::first_unmet(ctx.table, snapshot, command, ctx.now).map_err(
        |unmet| CheckoutError::Refused {
            requirement: unmet.requirement,
            code: unmet.code,
            status: unmet.status,
            message: unmet.message,
        },
    )?;
    let mut plan = Plan::new(ctx, snapshot, event);
    let output = match command {
        Command::StartSession { .. } => plan.start_session(),
        Command::UpdateSession { .. } => plan.lock_session(),
        Command::Advance { state, .. } => plan.advance(state),
        Command::SetDetails { details, .. } => plan.set_details(details),
        Command::SetDeliveryMethod {
            delivery_method_id, ..
        } => plan.set_delivery_method(delivery_method_id),
        Command::EditCart { edit, .. } => plan.edit_cart(edit),
        Command::RunStep { .. }
        | Command::RunCustom { .. }
        | Command::CartToOrder { .. }
        | Command::AuthorizePayment { .. } => plan.run_step(None),
        Command::ActivateOrder {
            order_life_cycle_type,
            ..
        } => plan.run_activation(order_life_cycle_type.as_deref()),
        Command::Cancel { .. } => plan.cancel(),
    }?;
    plan.guard_session()?;
    plan.into_decision(output)
}

/// Decides a worker command. Its event's guards are fences: a command the operation or its
/// session moved past is refused with [`CheckoutError::Fenced`], its reason typed.
pub fn decide_worker(
    ctx: &DecideContext<'_>,
    snapshot: &Snapshot,
    command: &WorkerCommand,
) -> Result<Decision, CheckoutError> {
    check_fences(
        ctx.table,
        snapshot,
        command.event(),
        command.attempt(),
        ctx.now,
    )?;
    let mut plan = Plan::new(ctx, snapshot, command.event());
    let output = match command {
        WorkerCommand::Claim { lease_ms, .. } => plan.claim(*lease_ms),
        WorkerCommand::Heartbeat { lease_ms, .. } => plan.heartbeat(*lease_ms),
        WorkerCommand::Expire { attempt, .. } => plan.expire(*attempt),
        WorkerCommand::Finish {
            outcome,
            update,
            order,
            ..
        } => plan.finish(outcome, update.as_ref(), order.as_ref()),
    }?;
    plan.into_decision(output)
}

/// Every unmet requirement of a command, in check order, without deciding it.
pub fn check(
    table: &TransitionTable,
    snapshot: &Snapshot,
    command: &Command,
    now: DateTime<Utc>,
) -> Vec<crate::machine::Unmet> {
    unmet(table, snapshot, command, now)
}

/// Sets `field` to `value` when one is given and differs; true when the field changed.
fn replace<T: Clone + PartialEq>(field: &mut Option<T>, value: &Option<T>) -> bool {
    if value.is_none() || field == value {
        return false;
    }
    field.clone_from(value);
    true
}

/// Drops from the cart and its lines what the steps consuming `input` computed from its old
/// value: the shipping options, the taxes, the payment authorisation, the prices or the
/// promotions. The buyer's own choices (the delivery method among them) stay: a method still
/// offered once shipping runs again stays chosen.
fn drop_results_of(
    template: &crate::machine::Template,
    input: StepInput,
    cart: &mut WebCart,
    lines: &mut [CartItem],
) {
    use crate::machine::Action as A;
    for step in template
        .steps
        .iter()
        .filter(|s| s.consumes.contains(&input))
    {
        match step.kind {
            StepKind::Async(A::CalcCartShipment) => cart.delivery_options.clear(),
            StepKind::Async(A::CalcCartTaxes) => lines.iter_mut().for_each(CartItem::clear_tax),
            StepKind::Async(A::PriceCart) => lines.iter_mut().for_each(|l| {
                if l.item_type == CartItemType::Product {
                    l.list_price = None;
                    l.sales_price = None;
                    l.total_price = None;
                }
            }),
            StepKind::Async(A::CalcCartPromotions) => {
                lines.iter_mut().for_each(|l| l.adjustment_amount = None)
            }
            StepKind::Payment => {
                cart.payment_authorization_id = None;
                cart.authorized_amount = None;
            }
            _ => {}
        }
    }
}

/// A line without the amounts computed for it.
fn unpriced(mut line: CartItem) -> CartItem {
    line.list_price = None;
    line.sales_price = None;
    line.total_price = None;
    line.adjustment_amount = None;
    line.clear_tax();
    line
}

/// The records a decision is building, beside the originals, so moves can be derived.
struct Plan<'a> {
    ctx: &'a DecideContext<'a>,
    snapshot: &'a Snapshot,
    event: Event,
    cart: Option<WebCart>,
    items: Vec<crate::model::CartItem>,
    removed_items: Vec<SfId>,
    orders: Vec<crate::model::Order>,
    sessions: Vec<(Option<CartCheckoutSession>, CartCheckoutSession)>,
    operations: Vec<(Option<BackgroundOperation>, BackgroundOperation)>,
    clear_outputs_of: Option<SfId>,
    outputs: Vec<CartValidationOutput>,
}

impl<'a> Plan<'a> {
    fn new(ctx: &'a DecideContext<'a>, snapshot: &'a Snapshot, event: Event) -> Plan<'a> {
        Plan {
            ctx,
            snapshot,
            event,
            cart: None,
            items: Vec::new(),
            removed_items: Vec::new(),
            orders: Vec::new(),
            sessions: Vec::new(),
            operations: Vec::new(),
            clear_outputs_of: None,
            outputs: Vec::new(),
        }
    }

    fn cart_id(&self) -> Result<SfId, CheckoutError> {
        self.snapshot
            .cart
            .as_ref()
            .map(|c| c.id)
            .ok_or_else(|| CheckoutError::Stale(Stale::Vanished(RecordKind::Cart)))
    }

    /// Writes what a passed integration computed onto the cart and its lines.
    fn apply_cart_update(
        &mut self,
        update: &crate::machine::CartUpdate,
    ) -> Result<(), CheckoutError> {
        let mut cart = self
            .cart
            .clone()
            .or_else(|| self.snapshot.cart.clone())
            .ok_or_else(|| CheckoutError::Stale(Stale::Vanished(RecordKind::Cart)))?;
        if let Some(options) = &update.delivery_options {
            cart.delivery_options = options.clone();
        }
        cart.delivery_method_id
            .clone_from(&update.delivery_method_id);
        if let Some(authorization) = &update.payment_authorization_id {
            cart.payment_authorization_id = Some(authorization.clone());
            cart.authorized_amount = update.authorized_amount;
        }
        cart.total_product_amount = update.total_product_amount;
        cart.total_adjustment_amount = update.total_adjustment_amount;
        cart.total_charge_amount = update.total_charge_amount;
        cart.total_tax_amount = update.total_tax_amount;
        cart.grand_total_amount = update.grand_total_amount;
        if update.items.iter().any(|item| item.cart_id != cart.id) {
            return Err(CheckoutError::Stale(Stale::ForeignRecord(RecordKind::Line)));
        }
        self.items = update.items.clone();
        self.removed_items = update.removed_items.clone();
        self.cart = Some(cart);
        Ok(())
    }

    /// The operation a worker command names (its fences found it).
    fn operation(&self) -> Result<&'a BackgroundOperation, CheckoutError> {
        let snapshot = self.snapshot;
        snapshot
            .operation
            .as_ref()
            .ok_or(CheckoutError::Fenced(Fenced::OperationMissing))
    }

    fn set_cart_status(&mut self, status: CartStatus) {
        if let Some(cart) = &self.snapshot.cart
            && cart.status != status
        {
            let mut next = cart.clone();
            next.status = status;
            self.cart = Some(next);
        }
    }

    fn edit_session(
        &mut self,
        edit: impl FnOnce(&mut CartCheckoutSession),
    ) -> Result<SfId, CheckoutError> {
        let original = self
            .snapshot
            .session
            .clone()
            .ok_or_else(|| CheckoutError::Stale(Stale::Vanished(RecordKind::Session)))?;
        // A second edit in one decision builds on the first.
        if let Some((_, planned)) = self
            .sessions
            .iter_mut()
            .find(|(before, _)| before.as_ref().is_some_and(|b| b.id == original.id))
        {
            edit(planned);
            return Ok(original.id);
        }
        let mut next = original.clone();
        edit(&mut next);
        let id = next.id;
        self.sessions.push((Some(original), next));
        Ok(id)
    }

    /// A cart written under the rules of its active session also writes the session (as it
    /// is, but for its version): the decision read the session (its State, its lock, its
    /// operation), so a commit decided before the session moved on (locked, an operation
    /// started) must lose the compare-and-set instead of writing the cart under rules that
    /// no longer hold.
    fn guard_session(&mut self) -> Result<(), CheckoutError> {
        let active = self
            .snapshot
            .session
            .as_ref()
            .is_some_and(|s| !s.is_archived);
        if self.cart.is_some() && active {
            self.edit_session(|_| {})?;
        }
        Ok(())
    }

    fn edit_operation(
        &mut self,
        edit: impl FnOnce(&mut BackgroundOperation),
    ) -> Result<SfId, CheckoutError> {
        let original = self
            .snapshot
            .operation
            .clone()
            .ok_or_else(|| CheckoutError::Stale(Stale::Vanished(RecordKind::Operation)))?;
        if let Some((_, planned)) = self
            .operations
            .iter_mut()
            .find(|(before, _)| before.as_ref().is_some_and(|b| b.id == original.id))
        {
            edit(planned);
            return Ok(original.id);
        }
        let mut next = original.clone();
        edit(&mut next);
        let id = next.id;
        self.operations.push((Some(original), next));
        Ok(id)
    }

    fn start_session(&mut self) -> Result<Output, CheckoutError> {
        let cart_id = self.cart_id()?;
        self.move_cart();
        let snapshot = self.snapshot;
        if let Some(current) = snapshot.session.as_ref().filter(|s| !s.is_archived) {
            // The row that applies to the session restarts it (a failed or expired checkout
            // is archived and a new one opened); without one the checkout resumes.
            let node = Node::Session(self.node_of(current));
            let Some(row) = self.applicable_row(node) else {
                return Ok(Output::RequestId(current.id));
            };
            self.move_session(row.to)?;
        }
        let entry = match self.applicable_row(Node::Session(SessionNode::Absent)) {
            Some(row) => match row.to {
                Node::Session(SessionNode::At(state, _)) => state,
                _ => None,
            },
            None => None,
        };
        let session = CartCheckoutSession {
            id: self.ctx.ids.next_id(KeyPrefix::CartCheckoutSession),
            web_cart_id: cart_id,
            state: entry,
            next_state: None,
            is_processing: false,
            is_error: false,
            is_archived: false,
            background_operation_id: None,
            order_id: None,
            created_date: Some(self.ctx.now),
            version: 0,
        };
        let id = session.id;
        self.sessions.push((None, session));
        // A new checkout starts with no messages; a resumed one keeps them, so the error
        // screen a re-entrant flow shows after each start still lists what went wrong.
        self.clear_outputs_of = Some(cart_id);
        Ok(Output::RequestId(id))
    }

    /// The row (or stay row) the decision's event fires from `from`, when its condition
    /// holds.
    fn applicable_row(&self, from: Node) -> Option<&'a crate::machine::Transition> {
        let table: &'a TransitionTable = self.ctx.table;
        table
            .find_any(self.event, from)
            .filter(|row| row.when.is_none_or(|when| self.holds(when)))
    }

    /// Whether a row's condition holds for the snapshot.
    fn holds(&self, condition: Condition) -> bool {
        condition.holds(self.snapshot, self.ctx.now)
    }

    /// A session's node under the decision's table, with the snapshot's operation.
    fn node_of(&self, session: &CartCheckoutSession) -> SessionNode {
        session_node(
            self.ctx.table,
            Some(session),
            self.snapshot.operation.as_ref(),
        )
    }

    /// Moves the cart to the target of the row the event fires from its status, if any.
    fn move_cart(&mut self) {
        let Some(cart) = &self.snapshot.cart else {
            return;
        };
        if let Some(Node::Cart(to)) = self.applicable_row(Node::Cart(cart.status)).map(|r| r.to) {
            self.set_cart_status(to);
        }
    }

    /// Writes the session node `to` (a row's target) onto the session. The terminal State's
    /// node is a completed checkout's: a session written there is archived there.
    fn move_session(&mut self, to: Node) -> Result<SfId, CheckoutError> {
        let terminal = self.ctx.table.terminal();
        match to {
            Node::Session(SessionNode::Archived) => self.edit_session(|s| {
                s.is_archived = true;
                s.is_processing = false;
            }),
            Node::Session(SessionNode::At(Some(state), Phase::Open)) if Some(state) == terminal => {
                self.edit_session(|s| {
                    s.state = Some(state);
                    s.is_processing = false;
                    s.is_archived = true;
                })
            }
            Node::Session(SessionNode::At(state, Phase::Open)) => self.edit_session(|s| {
                s.state = state;
                s.is_processing = false;
            }),
            _ => Err(CheckoutError::Defect(format!(
                "{} cannot move a session to {to}",
                self.event
            ))),
        }
    }

    fn lock_session(&mut self) -> Result<Output, CheckoutError> {
        let state = self.snapshot.session.as_ref().and_then(|s| s.state);
        let from = Node::Session(SessionNode::At(state, Phase::Open));
        let next = self
            .ctx
            .table
            .find(self.event, from)
            .and_then(|row| row.next_state);
        let id = self.edit_session(|s| {
            s.next_state = next;
            s.is_processing = true;
        })?;
        Ok(Output::RequestId(id))
    }

    /// A screen step: the session moves to the target of its row, and the cart follows its
    /// own (a closing row's target ends the checkout: the session is archived there and the
    /// cart closes).
    fn advance(&mut self, state: &str) -> Result<Output, CheckoutError> {
        let requested: SessionState =
            state.parse().map_err(|e: crate::model::StateNameError| {
                CheckoutError::InvalidInput(e.to_string())
            })?;
        let current = self.snapshot.session.as_ref().and_then(|s| s.state);
        let from = Node::Session(SessionNode::At(current, Phase::Open));
        let to = Node::Session(SessionNode::At(Some(requested), Phase::Open));
        let event = self.event;
        if self.applicable_row(from).map(|r| r.to) != Some(to) {
            return Err(CheckoutError::undeclared(event, from, to));
        }
        let id = self.move_session(to)?;
        // The closing row completes the checkout wherever it leads.
        if event == Event::Close {
            self.edit_session(|s| s.is_archived = true)?;
        }
        self.move_cart();
        Ok(Output::RequestId(id))
    }

    /// A screen's input onto the cart ([`Plan::take_inputs`] of what it changes).
    fn set_details(
        &mut self,
        details: &crate::machine::CheckoutDetails,
    ) -> Result<Output, CheckoutError> {
        let mut cart = self
            .snapshot
            .cart
            .clone()
            .ok_or_else(|| CheckoutError::Stale(Stale::Vanished(RecordKind::Cart)))?;
        let mut changed = BTreeSet::new();
        if replace(&mut cart.deliver_to, &details.deliver_to) {
            changed.insert(StepInput::DeliveryAddress);
        }
        if replace(&mut cart.payment_token, &details.payment_token) {
            changed.insert(StepInput::Payment);
        }
        if replace(&mut cart.delivery_method_id, &details.delivery_method_id) {
            changed.insert(StepInput::DeliveryMethod);
        }
        self.take_inputs(cart, &changed)
    }

    /// `setCheckoutDeliveryMethod`: the buyer's choice, and its fee as the charge line. The
    /// action has no output values, as its description says.
    fn set_delivery_method(&mut self, method: &str) -> Result<Output, CheckoutError> {
        let details = crate::machine::CheckoutDetails {
            delivery_method_id: Some(method.to_owned()),
            ..Default::default()
        };
        self.set_details(&details).map(|_| Output::Nothing)
    }

    /// Writes the buyer's changed inputs onto `cart`: what was computed from their old
    /// values is dropped, the charge line follows the chosen method, the totals follow the
    /// lines, and a session past a step that consumed a changed input goes back to it.
    fn take_inputs(
        &mut self,
        mut cart: WebCart,
        changed: &BTreeSet<StepInput>,
    ) -> Result<Output, CheckoutError> {
        let session = self.snapshot.session.as_ref().map(|s| s.id);
        let output = session.map_or(Output::Nothing, Output::RequestId);
        if changed.is_empty() {
            return Ok(output);
        }
        let before = &self.snapshot.lines;
        let mut lines = before.clone();
        for &input in changed {
            drop_results_of(self.ctx.table.template(), input, &mut cart, &mut lines);
        }
        let ids = self.ctx.ids;
        self.removed_items =
            amounts::sync_charge_line(&cart, &mut lines, || ids.next_id(KeyPrefix::CartItem));
        amounts::total_cart(&mut cart, &lines)
            .map_err(|e| CheckoutError::InvalidInput(e.to_string()))?;
        self.items = lines.into_iter().filter(|l| !before.contains(l)).collect();
        self.cart = Some(cart);
        self.rewind(changed)?;
        Ok(output)
    }

    /// Sends the session back to the earliest step a row of a changed input's event leads
    /// to from its node; that event is then the decision's.
    fn rewind(&mut self, changed: &BTreeSet<StepInput>) -> Result<(), CheckoutError> {
        let Some(session) = self.snapshot.session.as_ref().filter(|s| !s.is_archived) else {
            return Ok(());
        };
        let from = Node::Session(self.node_of(session));
        let table: &'a TransitionTable = self.ctx.table;
        let walked: Vec<SessionState> = table.template().walk().iter().map(|s| s.state).collect();
        let position = |to: &Node| match to {
            Node::Session(SessionNode::At(Some(state), _)) => {
                walked.iter().position(|s| s == state)
            }
            _ => None,
        };
        let earliest = changed
            .iter()
            .filter_map(|&input| {
                table
                    .find(Event::Change(input), from)
                    .map(|r| (input, r.to))
            })
            .min_by_key(|(_, to)| position(to));
        if let Some((input, to)) = earliest {
            self.event = Event::Change(input);
            self.move_session(to)?;
        }
        Ok(())
    }

    /// Every amount and checkout choice depended on the old lines: the next checkout computes
    /// them again, on lines that carry none of them (the charge line goes with the delivery
    /// method), so the totals still add up to the lines.
    fn drop_amounts(&mut self, cart: &mut WebCart) {
        cart.delivery_options.clear();
        cart.delivery_method_id = None;
        cart.payment_authorization_id = None;
        cart.authorized_amount = None;
        cart.total_product_amount = None;
        cart.total_adjustment_amount = None;
        cart.total_charge_amount = None;
        cart.total_tax_amount = None;
        cart.grand_total_amount = None;
        for line in &self.snapshot.lines {
            if line.item_type == CartItemType::Charge {
                self.removed_items.push(line.id);
            } else if unpriced(line.clone()) != *line {
                self.items.push(unpriced(line.clone()));
            }
        }
    }

    fn edit_cart(&mut self, edit: &crate::machine::CartEdit) -> Result<Output, CheckoutError> {
        use crate::machine::CartEdit;
        // A cart whose Edit row moves it (out of checkout) leaves it first, as a cancel
        // would.
        if self.snapshot.cart.as_ref().is_some_and(|c| {
            self.ctx
                .table
                .find(self.event, Node::Cart(c.status))
                .is_some()
        }) {
            self.cancel()?;
        }
        let mut cart = self
            .cart
            .clone()
            .or_else(|| self.snapshot.cart.clone())
            .ok_or_else(|| CheckoutError::Stale(Stale::Vanished(RecordKind::Cart)))?;
        self.drop_amounts(&mut cart);
        match edit {
            CartEdit::AddItem { sku, quantity } => {
                let line = crate::model::CartItem::product(
                    self.ctx.ids.next_id(KeyPrefix::CartItem),
                    cart.id,
                    Some(sku.trim().to_owned()),
                    *quantity,
                );
                self.items.push(line);
            }
            CartEdit::SetQuantity { quantity, .. } => {
                let mut line = self
                    .snapshot
                    .edited_item
                    .clone()
                    .ok_or_else(|| CheckoutError::Stale(Stale::Vanished(RecordKind::Line)))?;
                // A charge line leaves with its delivery method, whatever its quantity.
                if !self.removed_items.contains(&line.id) {
                    line.quantity = *quantity;
                    self.items.retain(|l| l.id != line.id);
                    self.items.push(unpriced(line));
                }
            }
            CartEdit::RemoveItem { .. } => {
                let line = self
                    .snapshot
                    .edited_item
                    .as_ref()
                    .ok_or_else(|| CheckoutError::Stale(Stale::Vanished(RecordKind::Line)))?;
                let id = line.id;
                self.items.retain(|l| l.id != id);
                if !self.removed_items.contains(&id) {
                    self.removed_items.push(id);
                }
            }
        }
        self.cart = Some(cart);
        Ok(Output::Nothing)
    }

    /// `activateOrderAction`'s call: an async step whose operation keeps the life cycle type
    /// the call chose, which the worker's activation writes onto the order.
    fn run_activation(&mut self, given: Option<&str>) -> Result<Output, CheckoutError> {
        // `OrderLifeCycleTypeValid` refused any other value before planning began.
        let chosen = chosen_life_cycle_type(given).ok_or_else(|| {
            CheckoutError::InvalidInput(format!("orderLifeCycleType {given:?} names no type"))
        })?;
        self.run_step(Some(chosen))
    }

    /// An async step's call: the locked session runs on its row, and the template's step it
    /// is in names and types the operation (an activation's also carries `life_cycle`).
    fn run_step(
        &mut self,
        life_cycle: Option<OrderLifeCycleType>,
    ) -> Result<Output, CheckoutError> {
        let state = self.snapshot.session.as_ref().and_then(|s| s.state);
        let event = self.event;
        let from = Node::Session(SessionNode::At(state, Phase::Locked));
        let to = Node::Session(SessionNode::At(state, Phase::Running));
        if self.applicable_row(from).map(|r| r.to) != Some(to) {
            return Err(CheckoutError::undeclared(event, from, to));
        }
        let table: &'a TransitionTable = self.ctx.table;
        let step = state.and_then(|s| table.template().step(s));
        let (name, kind) = match step.map(|s| &s.kind) {
            Some(StepKind::Async(action)) => (action.api_name(), action.provider_kind()),
            Some(StepKind::Payment) => (PAYMENT_OPERATION, Some(ProviderKind::Payment)),
            // The operation is named after the custom action, which finds the step's provider.
            Some(StepKind::Custom(action)) => (action.as_str(), Some(ProviderKind::Custom)),
            _ => return Err(CheckoutError::undeclared(event, from, to)),
        };
        self.start_operation(name, kind, life_cycle)
    }

    /// Creates the New operation of an async step and records it on the session.
    fn start_operation(
        &mut self,
        name: &str,
        kind: Option<ProviderKind>,
        life_cycle: Option<OrderLifeCycleType>,
    ) -> Result<Output, CheckoutError> {
        let cart_id = self.cart_id()?;
        let session_id = self
            .snapshot
            .session
            .as_ref()
            .map(|s| s.id)
            .ok_or_else(|| CheckoutError::Stale(Stale::Vanished(RecordKind::Session)))?;
        let operation = BackgroundOperation {
            id: self.ctx.ids.next_id(KeyPrefix::BackgroundOperation),
            name: name.to_owned(),
            cart_id,
            checkout_session_id: session_id,
            provider_kind: kind,
            status: OperationStatus::New,
            error: None,
            submitted_at: self.ctx.now,
            started_at: None,
            finished_at: None,
            expires_at: None,
            attempt: 0,
            retry_limit: self.ctx.settings.retry_limit,
            timeout_ms: self.ctx.settings.timeout_ms,
            order_life_cycle_type: life_cycle,
            version: 0,
        };
        let op_id = operation.id;
        self.operations.push((None, operation));
        self.edit_session(|s| s.background_operation_id = Some(op_id))?;
        Ok(Output::BackgroundOperationId(op_id))
    }

    /// Cancel (or an edit of a cart in checkout): the session, its operation and the cart
    /// each move to the target of the row the event fires from their node.
    fn cancel(&mut self) -> Result<Output, CheckoutError> {
        let now = self.ctx.now;
        let snapshot = self.snapshot;
        if let Some(session) = snapshot.session.as_ref().filter(|s| !s.is_archived) {
            let node = Node::Session(self.node_of(session));
            let Some(row) = self.applicable_row(node) else {
                return Err(CheckoutError::undeclared(
                    self.event,
                    node,
                    Node::Session(SessionNode::Archived),
                ));
            };
            self.move_session(row.to)?;
        }
        let operation = Node::Operation(operation_node(snapshot.operation.as_ref()));
        if let Some(Node::Operation(OperationNode::Is(status))) =
            self.applicable_row(operation).map(|r| r.to)
        {
            self.edit_operation(|op| {
                op.status = status;
                op.finished_at = Some(now);
                op.expires_at = None;
            })?;
        }
        self.move_cart();
        Ok(Output::Nothing)
    }

    fn claim(&mut self, lease_ms: u64) -> Result<Output, CheckoutError> {
        let now = self.ctx.now;
        let status = self.operation_target(Event::Claim)?;
        let id = self.edit_operation(|op| {
            op.status = status;
            op.attempt += 1;
            op.started_at = Some(now);
            op.expires_at = Some(lease_end(now, lease_ms));
        })?;
        Ok(Output::BackgroundOperationId(id))
    }

    fn heartbeat(&mut self, lease_ms: u64) -> Result<Output, CheckoutError> {
        let op = self.operation()?;
        let until = lease_end(self.ctx.now, lease_ms);
        // A lease only grows: a late heartbeat must not shorten a newer one.
        if op.expires_at.is_some_and(|current| current >= until) {
            return Ok(Output::BackgroundOperationId(op.id));
        }
        let id = self.edit_operation(|op| op.expires_at = Some(until))?;
        Ok(Output::BackgroundOperationId(id))
    }

    /// A lease that ran out: the operation returns to New while retries remain, and
    /// otherwise fails, under the Fail event's own fences.
    fn expire(&mut self, attempt: u32) -> Result<Output, CheckoutError> {
        let op = self.operation()?;
        // The requeue row applies while the operation has claims left; else the sweep fails it.
        let requeue = self.applicable_row(Node::Operation(operation_node(Some(op))));
        if let Some(Node::Operation(OperationNode::Is(status))) = requeue.map(|row| row.to) {
            let id = self.edit_operation(|op| {
                op.status = status;
                op.expires_at = None;
            })?;
            return Ok(Output::BackgroundOperationId(id));
        }
        self.event = Event::Fail;
        let ctx = self.ctx;
        check_fences(
            ctx.table,
            self.snapshot,
            Event::Fail,
            Some(attempt),
            ctx.now,
        )?;
        let reason = format!(
            "no worker finished operation {} within its lease on any of {} attempts",
            op.id, op.attempt
        );
        self.finish(&StepOutcome::SystemFailure(reason), None, None)
    }

    fn finish(
        &mut self,
        outcome: &StepOutcome,
        update: Option<&crate::machine::CartUpdate>,
        order: Option<&Order>,
    ) -> Result<Output, CheckoutError> {
        let op = self.operation()?;
        let snapshot = self.snapshot;
        let session =
            snapshot
                .session
                .as_ref()
                .ok_or(CheckoutError::Fenced(Fenced::SessionFinished {
                    operation: op.id,
                }))?;
        match outcome {
            StepOutcome::Passed => self.pass_step(session, op, update, order)?,
            StepOutcome::Failed(messages) => {
                let output_type = op
                    .provider_kind
                    .map_or(OutputType::Other, ProviderKind::output_type);
                let error = format!("{} reported {} problem(s)", op.name, messages.len());
                self.fail_step(session, op, output_type, messages, &error)?;
            }
            StepOutcome::SystemFailure(reason) => {
                let messages = [ValidationMessage {
                    level: Level::Error,
                    message: SYSTEM_ERROR_MESSAGE.into(),
                    related_entity_id: Some(op.cart_id),
                }];
                self.fail_step(session, op, OutputType::SystemError, &messages, reason)?;
            }
        }
        Ok(Output::BackgroundOperationId(op.id))
    }

    /// The status the row `event` fires from the operation's node enters.
    fn operation_target(&self, event: Event) -> Result<OperationStatus, CheckoutError> {
        let op = self.operation()?;
        let from = Node::Operation(OperationNode::Is(op.status));
        match self.ctx.table.find(event, from).map(|row| row.to) {
            Some(Node::Operation(OperationNode::Is(status))) => Ok(status),
            _ => Err(CheckoutError::undeclared(event, from, from)),
        }
    }

    /// The State the row `event` fires from the running session's node enters.
    fn outcome_state(
        &self,
        event: Event,
        session: &CartCheckoutSession,
        op: &BackgroundOperation,
    ) -> Option<SessionState> {
        let from = Node::Session(session_node(self.ctx.table, Some(session), Some(op)));
        match self.ctx.table.find(event, from).map(|r| r.to) {
            Some(Node::Session(SessionNode::At(state, _))) => state,
            _ => None,
        }
    }

    /// A passed step: the operation completes, the session moves to the State the table
    /// declares next and unlocks, and what the integration computed is written.
    fn pass_step(
        &mut self,
        session: &CartCheckoutSession,
        op: &BackgroundOperation,
        update: Option<&crate::machine::CartUpdate>,
        order: Option<&Order>,
    ) -> Result<(), CheckoutError> {
        let now = self.ctx.now;
        let next = self.outcome_state(Event::Succeed, session, op);
        let status = self.operation_target(Event::Succeed)?;
        self.edit_operation(|op| {
            op.status = status;
            op.finished_at = Some(now);
            op.expires_at = None;
        })?;
        self.edit_session(|s| {
            s.state = next.or(s.next_state);
            s.next_state = None;
            s.is_processing = false;
        })?;
        if let Some(update) = update {
            self.apply_cart_update(update)?;
            self.record_authorization(update)?;
        }
        if let Some(order) = order {
            if order.cart_id != op.cart_id {
                return Err(CheckoutError::Stale(Stale::ForeignRecord(
                    RecordKind::Order,
                )));
            }
            self.orders.push(order.clone());
            let order_id = order.id;
            self.edit_session(|s| s.order_id = Some(order_id))?;
        }
        Ok(())
    }

    /// A passed payment step's authorisation, recorded on the session's Draft order as its
    /// PaymentAuthorization (the engine accepted it only for the order's grand total).
    fn record_authorization(
        &mut self,
        update: &crate::machine::CartUpdate,
    ) -> Result<(), CheckoutError> {
        let (Some(reference), Some(amount)) =
            (&update.payment_authorization_id, update.authorized_amount)
        else {
            return Ok(());
        };
        let Some(order) = self.snapshot.order.as_ref() else {
            return Err(CheckoutError::Stale(Stale::NoOrderToPay));
        };
        let mut order = order.clone();
        order.payment_authorization = Some(crate::model::PaymentAuthorization {
            id: self.ctx.ids.next_id(KeyPrefix::PaymentAuthorization),
            account_id: order.account_id,
            amount,
            status: crate::model::AuthorizationStatus::Processed,
            gateway_ref_number: reference.clone(),
            date: self.ctx.now,
        });
        order.payment_authorization_id = Some(reference.clone());
        order.authorized_amount = Some(amount);
        self.orders.push(order);
        Ok(())
    }

    /// A failed step: its messages become the cart's validation outputs, the operation
    /// ends in Error with `error`, and the session moves to the Fail row's target (Error)
    /// and unlocks.
    fn fail_step(
        &mut self,
        session: &CartCheckoutSession,
        op: &BackgroundOperation,
        output_type: OutputType,
        messages: &[ValidationMessage],
        error: &str,
    ) -> Result<(), CheckoutError> {
        let now = self.ctx.now;
        let failed = self.outcome_state(Event::Fail, session, op);
        for m in messages {
            self.outputs.push(CartValidationOutput {
                id: self.ctx.ids.next_id(KeyPrefix::CartValidationOutput),
                cart_id: op.cart_id,
                background_operation_id: Some(op.id),
                level: m.level,
                output_type,
                message: clip_message(&m.message),
                related_entity_id: m.related_entity_id,
                is_dismissed: false,
            });
        }
        let status = self.operation_target(Event::Fail)?;
        self.edit_operation(|op| {
            op.status = status;
            op.error = Some(clip_message(error));
            op.finished_at = Some(now);
            op.expires_at = None;
        })?;
        self.edit_session(|s| {
            s.state = failed;
            s.next_state = None;
            s.is_processing = false;
            s.is_error = true;
        })?;
        Ok(())
    }

    /// Derives every moved node, checks each against the table, bumps versions.
    fn into_decision(self, output: Output) -> Result<Decision, CheckoutError> {
        let event = self.event;
        let moves = self.moves();
        if let Some(m) = moves
            .iter()
            .find(|m| !self.ctx.table.admits(event, m.from, m.to))
        {
            return Err(CheckoutError::undeclared(event, m.from, m.to));
        }
        Ok(Decision {
            event,
            moves,
            changes: self.into_changes(),
            output,
        })
    }

    /// The node each planned record moves from and to: the cart, then the sessions, then
    /// the operations, leaving out the records whose node stays.
    fn moves(&self) -> Vec<Move> {
        let mut moves = Vec::new();
        let mut push = |machine: Machine, record: SfId, from: Node, to: Node| {
            if from != to {
                moves.push(Move {
                    machine,
                    record,
                    from,
                    to,
                });
            }
        };
        let op_after = |session: &CartCheckoutSession| {
            self.operations
                .iter()
                .map(|(_, op)| op)
                .find(|op| Some(op.id) == session.background_operation_id)
                .or(self.snapshot.operation.as_ref())
        };
        if let (Some(before), Some(after)) = (&self.snapshot.cart, &self.cart) {
            push(
                Machine::Cart,
                after.id,
                Node::Cart(before.status),
                Node::Cart(after.status),
            );
        }
        for (before, after) in &self.sessions {
            let table = self.ctx.table;
            let from = session_node(table, before.as_ref(), self.snapshot.operation.as_ref());
            let to = session_node(table, Some(after), op_after(after));
            push(
                Machine::Session,
                after.id,
                Node::Session(from),
                Node::Session(to),
            );
        }
        for (before, after) in &self.operations {
            push(
                Machine::Operation,
                after.id,
                Node::Operation(operation_node(before.as_ref())),
                Node::Operation(operation_node(Some(after))),
            );
        }
        moves
    }

    /// The planned records, each with its version bumped.
    fn into_changes(self) -> Changes {
        let bump = |v: u64| v + 1;
        Changes {
            carts: self
                .cart
                .into_iter()
                .map(|mut c| {
                    c.version = bump(c.version);
                    c
                })
                .collect(),
            sessions: self
                .sessions
                .into_iter()
                .map(|(_, mut s)| {
                    s.version = bump(s.version);
                    s
                })
                .collect(),
            operations: self
                .operations
                .into_iter()
                .map(|(_, mut o)| {
                    o.version = bump(o.version);
                    o
                })
                .collect(),
            items: self.items,
            removed_items: self.removed_items,
            orders: self
                .orders
                .into_iter()
                .map(|mut o| {
                    o.version = bump(o.version);
                    o
                })
                .collect(),
            clear_outputs_of: self.clear_outputs_of,
            outputs: self.outputs,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::ids::SequentialIds;
    use crate::machine::Action;
    use crate::machine::requirement::guards;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap()
    }

    fn id(kind: KeyPrefix, n: u64) -> SfId {
        SfId::from_number(kind, n)
    }

    /// A cart in `status` whose active session is open at `state`.
    fn snapshot(status: CartStatus, state: SessionState) -> Snapshot {
        let cart = WebCart::new(
            id(KeyPrefix::WebCart, 1),
            id(KeyPrefix::WebStore, 1),
            id(KeyPrefix::Account, 1),
            id(KeyPrefix::User, 1),
            status,
        );
        let session = CartCheckoutSession {
            id: id(KeyPrefix::CartCheckoutSession, 1),
            web_cart_id: cart.id,
            state: Some(state),
            next_state: None,
            is_processing: false,
            is_error: state == SessionState::Error,
            is_archived: false,
            background_operation_id: None,
            order_id: None,
            created_date: Some(now()),
            version: 1,
        };
        Snapshot {
            cart: Some(cart),
            session: Some(session),
            ..Snapshot::default()
        }
    }

    /// The output and records `command` plans under `table`: past the guards, which these
    /// tests are not about, and before its moves are checked against the table (the
    /// session node of an archived session depends on the standard terminal State).
    fn plan(
        table: &TransitionTable,
        snapshot: &Snapshot,
        command: &Command,
    ) -> Result<(Output, Changes), CheckoutError> {
        let ids = SequentialIds::starting_at(1000);
        let ctx = DecideContext {
            table,
            now: now(),
            ids: &ids,
            settings: OperationSettings::default(),
        };
        let mut plan = Plan::new(&ctx, snapshot, command.event(table));
        let output = match command {
            Command::StartSession { .. } => plan.start_session(),
            Command::Advance { state, .. } => plan.advance(state),
            Command::Cancel { .. } => plan.cancel(),
            _ => unreachable!("not planned by these tests"),
        }?;
        Ok((output, plan.into_changes()))
    }

    fn cart_status(changes: &Changes) -> Option<CartStatus> {
        changes.carts.first().map(|c| c.status)
    }

    #[test]
    fn cancel_moves_the_cart_to_the_target_of_its_row() {
        let cancel = Event::Action(Action::CancelCartAsyncOperation);
        let table = TransitionTable::standard().with_row_changed(
            cancel,
            Node::Cart(CartStatus::Processing),
            |row| row.to = Node::Cart(CartStatus::Checkout),
        );
        let command = Command::Cancel {
            cart_id: id(KeyPrefix::WebCart, 1).to_string(),
        };
        let processing = snapshot(CartStatus::Processing, SessionState::Inventory);
        let (_, changes) = plan(&table, &processing, &command).unwrap();
        assert_eq!(cart_status(&changes), Some(CartStatus::Checkout));
        assert!(changes.sessions[0].is_archived);
        // The unchanged row still takes a cart in Checkout back to Active.
        let checkout = snapshot(CartStatus::Checkout, SessionState::Inventory);
        let (_, changes) = plan(&table, &checkout, &command).unwrap();
        assert_eq!(cart_status(&changes), Some(CartStatus::Active));
    }

    #[test]
    fn a_screen_move_into_the_state_a_closing_row_enters_closes_the_checkout() {
        // A closing step that enters CheckoutSummary rather than Complete.
        let from = Node::Session(SessionNode::At(
            Some(SessionState::OrderConfirmation),
            Phase::Open,
        ));
        let table = TransitionTable::standard().with_row_changed(Event::Close, from, |row| {
            row.to = Node::Session(SessionNode::At(
                Some(SessionState::CheckoutSummary),
                Phase::Open,
            ));
        });
        let advance = |state: SessionState| Command::Advance {
            session_id: id(KeyPrefix::CartCheckoutSession, 1).to_string(),
            state: state.as_str().to_owned(),
            exp_current_state: None,
        };
        let snapshot = snapshot(CartStatus::Checkout, SessionState::OrderConfirmation);
        let closing = advance(SessionState::CheckoutSummary);
        assert_eq!(closing.event(&table), Event::Close);
        let (_, changes) = plan(&table, &snapshot, &closing).unwrap();
        let session = &changes.sessions[0];
        assert_eq!(session.state, Some(SessionState::CheckoutSummary));
        assert!(session.is_archived);
        assert_eq!(cart_status(&changes), Some(CartStatus::Closed));
        // Complete is no longer the row's target: a move there is no close, and undeclared.
        let complete = advance(SessionState::Complete);
        assert_eq!(complete.event(&table), Event::Advance);
        assert!(matches!(
            plan(&table, &snapshot, &complete),
            Err(CheckoutError::Undeclared(_))
        ));
    }

    #[test]
    fn a_start_restarts_a_session_only_where_its_row_applies() {
        let start = Event::Action(Action::CheckoutSession);
        let failed = Node::Session(SessionNode::At(Some(SessionState::Error), Phase::Open));
        let command = Command::StartSession {
            cart_id: id(KeyPrefix::WebCart, 1).to_string(),
            initial_state: None,
        };
        let snapshot = snapshot(CartStatus::Checkout, SessionState::Error);
        let session_id = id(KeyPrefix::CartCheckoutSession, 1);

        // The standard row restarts a failed session: archived, and a new one at the entry.
        let standard = TransitionTable::standard();
        let (output, changes) = plan(&standard, &snapshot, &command).unwrap();
        assert_ne!(output, Output::RequestId(session_id));
        assert!(changes.sessions[0].is_archived);
        assert_eq!(changes.sessions[1].state, Some(SessionState::Start));

        // A table whose restart of a failed session waits for its expiry resumes it.
        let table = standard.with_row_changed(start, failed, |row| {
            row.when = Some(Condition::SessionExpired);
        });
        let (output, changes) = plan(&table, &snapshot, &command).unwrap();
        assert_eq!(output, Output::RequestId(session_id));
        assert!(changes.sessions.is_empty());
    }

    /// `snapshot(status, state)` with everything the actor guards need: a buyer who owns
    /// the cart, an active account that is a member of the store.
    fn buyer_snapshot(status: CartStatus, state: SessionState) -> Snapshot {
        use crate::model::{Account, Permission, User, WebStore};
        let mut snapshot = snapshot(status, state);
        let account = id(KeyPrefix::Account, 1);
        snapshot.user = Some(User {
            id: id(KeyPrefix::User, 1),
            name: "Buyer".into(),
            account_id: Some(account),
            permissions: [Permission::B2BBuyer].into(),
        });
        snapshot.account = Some(Account {
            id: account,
            name: "Account".into(),
            is_active: true,
        });
        snapshot.store = Some(WebStore {
            id: id(KeyPrefix::WebStore, 1),
            name: "Store".into(),
            checkout_time_to_live: None,
            buyer_accounts: [account].into(),
        });
        snapshot
    }

    /// A buyer's cart in `status`, its session locked at Inventory for Confirm Price.
    fn locked_at_inventory(status: CartStatus) -> Snapshot {
        let mut snapshot = buyer_snapshot(status, SessionState::Inventory);
        let session = snapshot.session.as_mut().unwrap();
        session.is_processing = true;
        session.next_state = Some(SessionState::ConfirmPrice);
        snapshot
    }

    fn decide_with(
        table: &TransitionTable,
        snapshot: &Snapshot,
        command: &Command,
    ) -> Result<Decision, CheckoutError> {
        let ids = SequentialIds::starting_at(1000);
        let ctx = DecideContext {
            table,
            now: now(),
            ids: &ids,
            settings: OperationSettings::default(),
        };
        decide(&ctx, snapshot, command)
    }

    fn decide_worker_with(
        table: &TransitionTable,
        snapshot: &Snapshot,
        command: &WorkerCommand,
    ) -> Result<Decision, CheckoutError> {
        let ids = SequentialIds::starting_at(1000);
        let ctx = DecideContext {
            table,
            now: now(),
            ids: &ids,
            settings: OperationSettings::default(),
        };
        decide_worker(&ctx, snapshot, command)
    }

    /// The requirement, code and status a refusal answers.
    fn refusal(result: Result<Decision, CheckoutError>) -> (Requirement, &'static str, u16) {
        let error = result.expect_err("refused");
        let requirement = error.requirement().expect("a requirement");
        (requirement, error.code().as_str(), error.http_status())
    }

    fn check_inventory() -> Command {
        Command::RunStep {
            action: crate::machine::ProviderAction::CheckCartInventory,
            cart_id: id(KeyPrefix::WebCart, 1).to_string(),
        }
    }

    use crate::machine::Requirement;

    #[test]
    fn the_cart_rows_decide_the_cart_status_an_async_step_runs_on() {
        let event = Event::Action(Action::CheckCartInventory);
        let checkout = Node::Cart(CartStatus::Checkout);
        let active = Node::Cart(CartStatus::Active);
        let standard = TransitionTable::standard();
        assert!(
            decide_with(
                &standard,
                &locked_at_inventory(CartStatus::Checkout),
                &check_inventory()
            )
            .is_ok()
        );
        let on_active = locked_at_inventory(CartStatus::Active);
        assert_eq!(
            refusal(decide_with(&standard, &on_active, &check_inventory())),
            (Requirement::CartRow, "INVALID_OPERATION", 403)
        );
        // Without its stay row in Checkout the step runs on no cart; with one in Active it
        // runs on an Active cart.
        let table = standard.clone().with_stay(event, checkout, false);
        assert_eq!(
            refusal(decide_with(
                &table,
                &locked_at_inventory(CartStatus::Checkout),
                &check_inventory()
            )),
            (Requirement::CartRow, "INVALID_OPERATION", 403)
        );
        let table = standard.with_stay(event, active, true);
        assert!(decide_with(&table, &on_active, &check_inventory()).is_ok());
    }

    #[test]
    fn the_run_row_decides_the_step_and_the_next_state_an_async_step_needs() {
        let event = Event::Action(Action::CheckCartInventory);
        let locked = |state| Node::Session(SessionNode::At(Some(state), Phase::Locked));
        let snapshot = locked_at_inventory(CartStatus::Checkout);
        // The row's NextState is the one the session must hold.
        let table = TransitionTable::standard().with_row_changed(
            event,
            locked(SessionState::Inventory),
            |row| {
                row.next_state = Some(SessionState::Taxes);
            },
        );
        assert_eq!(
            refusal(decide_with(&table, &snapshot, &check_inventory())),
            (Requirement::NextStateRow, "INVALID_OPERATION", 403)
        );
        // A run row that leaves another State moves the step there.
        let table = TransitionTable::standard().with_row_changed(
            event,
            locked(SessionState::Inventory),
            |row| {
                row.from = locked(SessionState::ConfirmPrice);
            },
        );
        let error = decide_with(&table, &snapshot, &check_inventory()).unwrap_err();
        assert_eq!(error.requirement(), Some(Requirement::StepRow));
        assert!(error.to_string().contains("Confirm Price"), "{error}");
    }

    #[test]
    fn the_session_rows_decide_the_lock_an_event_needs() {
        let command = Command::SetDetails {
            cart_id: id(KeyPrefix::WebCart, 1).to_string(),
            details: crate::machine::CheckoutDetails::default(),
        };
        let snapshot = locked_at_inventory(CartStatus::Checkout);
        let standard = TransitionTable::standard();
        assert_eq!(
            refusal(decide_with(&standard, &snapshot, &command)),
            (Requirement::SessionPhaseRow, "INVALID_OPERATION", 409)
        );
        let locked = Node::Session(SessionNode::At(
            Some(SessionState::Inventory),
            Phase::Locked,
        ));
        let table = standard.with_stay(Event::Input, locked, true);
        assert!(decide_with(&table, &snapshot, &command).is_ok());
    }

    /// A session running `op` at Inventory, on a cart in Checkout.
    fn running_at_inventory(status: OperationStatus, attempt: u32) -> Snapshot {
        let mut snapshot = locked_at_inventory(CartStatus::Checkout);
        let op_id = id(KeyPrefix::BackgroundOperation, 1);
        snapshot.session.as_mut().unwrap().background_operation_id = Some(op_id);
        snapshot.operation = Some(BackgroundOperation {
            id: op_id,
            name: "checkCartInventoryAction".into(),
            cart_id: id(KeyPrefix::WebCart, 1),
            checkout_session_id: id(KeyPrefix::CartCheckoutSession, 1),
            provider_kind: Some(ProviderKind::Inventory),
            status,
            error: None,
            submitted_at: now(),
            started_at: None,
            finished_at: None,
            expires_at: None,
            attempt,
            retry_limit: 2,
            timeout_ms: 120_000,
            order_life_cycle_type: None,
            version: 1,
        });
        snapshot
    }

    #[test]
    fn a_sweep_requeues_while_the_requeue_rows_condition_holds_and_fails_after() {
        use OperationStatus as S;
        let op = id(KeyPrefix::BackgroundOperation, 1);
        let sweep = |table: &TransitionTable, attempt| {
            let expire = WorkerCommand::Expire {
                operation_id: op,
                attempt,
            };
            let snapshot = running_at_inventory(S::Running, attempt);
            let decision = decide_worker_with(table, &snapshot, &expire).unwrap();
            let status = decision.changes.operations[0].status;
            (decision.event, status)
        };
        let standard = TransitionTable::standard();
        // A retry limit of 2: the third claim is the last.
        assert_eq!(sweep(&standard, 1), (Event::Requeue, S::New));
        assert_eq!(sweep(&standard, 2), (Event::Requeue, S::New));
        assert_eq!(sweep(&standard, 3), (Event::Fail, S::Error));
        // Without its condition the row requeues whatever the claims.
        let running = Node::Operation(OperationNode::Is(S::Running));
        let table = standard.with_row_changed(Event::Requeue, running, |row| row.when = None);
        assert_eq!(sweep(&table, 3), (Event::Requeue, S::New));
    }

    #[test]
    fn worker_fences_are_the_guards_of_the_worker_rows() {
        use OperationStatus as S;
        let op = id(KeyPrefix::BackgroundOperation, 1);
        let new = Node::Operation(OperationNode::Is(S::New));
        let running = Node::Operation(OperationNode::Is(S::Running));
        for event in [
            Event::Claim,
            Event::Heartbeat,
            Event::Requeue,
            Event::Succeed,
            Event::Fail,
        ] {
            assert!(!guards(event).is_empty(), "{event}");
        }
        let claim = WorkerCommand::Claim {
            operation_id: op,
            lease_ms: 1000,
        };
        let standard = TransitionTable::standard();
        let queued = running_at_inventory(S::New, 0);
        assert!(decide_worker_with(&standard, &queued, &claim).is_ok());
        // A claim row that leaves Error, not New: a New operation is no longer claimable.
        let table = standard.clone().with_row_changed(Event::Claim, new, |row| {
            row.from = Node::Operation(OperationNode::Is(S::Error));
        });
        assert!(matches!(
            decide_worker_with(&table, &queued, &claim),
            Err(CheckoutError::Fenced(Fenced::NotClaimable { .. }))
        ));
        // A heartbeat runs on its stay row at Running; without it the attempt is superseded.
        let heartbeat = WorkerCommand::Heartbeat {
            operation_id: op,
            attempt: 1,
            lease_ms: 1000,
        };
        let claimed = running_at_inventory(S::Running, 1);
        assert!(decide_worker_with(&standard, &claimed, &heartbeat).is_ok());
        let table = standard.with_stay(Event::Heartbeat, running, false);
        assert!(matches!(
            decide_worker_with(&table, &claimed, &heartbeat),
            Err(CheckoutError::Fenced(Fenced::AttemptSuperseded { .. }))
        ));
    }

    #[test]
    fn a_report_is_fenced_unless_a_row_leaves_the_session_node() {
        use OperationStatus as S;
        let report = WorkerCommand::Finish {
            operation_id: id(KeyPrefix::BackgroundOperation, 1),
            attempt: 1,
            outcome: StepOutcome::Failed(Vec::new()),
            update: None,
            order: None,
        };
        let running = running_at_inventory(S::Running, 1);
        let standard = TransitionTable::standard();
        let decision = decide_worker_with(&standard, &running, &report).unwrap();
        // The session goes where the Fail row leads.
        assert_eq!(
            decision.changes.sessions[0].state,
            Some(SessionState::Error)
        );
        let from = Node::Session(SessionNode::At(
            Some(SessionState::Inventory),
            Phase::Running,
        ));
        let table = standard.clone().with_row_changed(Event::Fail, from, |row| {
            row.to = Node::Session(SessionNode::At(Some(SessionState::Start), Phase::Open));
        });
        // The changed row's target is what the report writes.
        let changes = decide_worker_with(&table, &running, &report)
            .unwrap()
            .changes;
        assert_eq!(changes.sessions[0].state, Some(SessionState::Start));
        let table = standard.with_row_changed(Event::Fail, from, |row| {
            row.from = Node::Session(SessionNode::At(Some(SessionState::Taxes), Phase::Running));
        });
        assert!(matches!(
            decide_worker_with(&table, &running, &report),
            Err(CheckoutError::Fenced(Fenced::SessionFinished { .. }))
        ));
    }

    #[test]
    fn an_activated_order_refuses_exactly_the_starts_a_restart_row_applies_to() {
        use crate::model::{Order, OrderStatus};
        let standard = TransitionTable::standard();
        let command = Command::StartSession {
            cart_id: id(KeyPrefix::WebCart, 1).to_string(),
            initial_state: None,
        };
        for &state in SessionState::STANDARD {
            for locked in [false, true] {
                for expired in [false, true] {
                    let mut snapshot = buyer_snapshot(CartStatus::Checkout, state);
                    let order_id = id(KeyPrefix::Order, 1);
                    let cart = snapshot.cart.as_ref().expect("the buyer's cart");
                    let owner = id(KeyPrefix::User, 1);
                    snapshot.order = Some(Order {
                        status: OrderStatus::Activated,
                        activated_date: Some(now()),
                        version: 1,
                        ..Order::draft(order_id, cart, owner, now())
                    });
                    let session = snapshot.session.as_mut().unwrap();
                    session.order_id = Some(order_id);
                    session.is_processing = locked;
                    if expired {
                        session.created_date = Some(now() - Duration::days(3));
                        snapshot.store.as_mut().unwrap().checkout_time_to_live = Some(60);
                    }
                    let refused = check(&standard, &snapshot, &command, now())
                        .iter()
                        .any(|u| u.requirement == Requirement::OrderNotActivated);
                    // A failed or an expired session is restarted (once unlocked), which
                    // would leave the activated order's checkout; any other is resumed.
                    let restarts = state == SessionState::Error || expired;
                    assert_eq!(
                        refused, restarts,
                        "{state} locked {locked} expired {expired}"
                    );
                }
            }
        }
    }
}
