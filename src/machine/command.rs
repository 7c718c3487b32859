//! Commands (the machine's inputs) and snapshots (what it decides over).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::machine::{Action, CustomAction, Event, ProviderAction, StepKind, TransitionTable};
use rust_decimal::Decimal;

use crate::model::{
    Account, Address, BackgroundOperation, CartCheckoutSession, CartItem, DeliveryOption, Level,
    Order, OrderLifeCycleType, OrderStatus, SfId, User, WebCart, WebStore,
};

/// One request to move a checkout. Inputs that come from callers stay raw strings here:
/// validating them is part of deciding, so a malformed ID gets its documented error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
// Commands are built once per call and passed by reference; boxing the larger variants
// would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// `checkoutSessionAction`.
    StartSession {
        /// The cart's ID as given.
        cart_id: String,
        /// The State to start in; the template's entry when absent.
        initial_state: Option<String>,
    },
    /// `updateCheckoutSessionStateAction`: compare-and-set State, record NextState, lock.
    UpdateSession {
        /// The session's ID as given.
        session_id: String,
        /// The State the async step leads to.
        next_state: String,
        /// The State the caller believes the session is in.
        exp_current_state: Option<String>,
    },
    /// A screen step writes the next State onto the session.
    Advance {
        /// The session's ID as given.
        session_id: String,
        /// The State to move to.
        state: String,
        /// The State the caller believes the session is in.
        exp_current_state: Option<String>,
    },
    /// A screen step writes the buyer's input onto the cart (`None` fields stay as they are).
    SetDetails {
        /// The cart's ID as given.
        cart_id: String,
        /// What the buyer entered.
        details: CheckoutDetails,
    },
    /// `setCheckoutDeliveryMethod`: the buyer chooses one of the delivery methods offered
    /// for the cart; its fee becomes the cart's charge line.
    SetDeliveryMethod {
        /// The cart's ID as given.
        cart_id: String,
        /// The chosen method, one of the cart's offered delivery options.
        delivery_method_id: String,
    },
    /// The buyer changes a line of the cart. A cart in checkout returns to Active first: its
    /// operation is cancelled and its session archived, in the same commit.
    EditCart {
        /// The cart's ID as given.
        cart_id: String,
        /// The change.
        edit: CartEdit,
    },
    /// One of the async cart actions that run a provider (`checkCartInventoryAction`,
    /// `priceCart`, ...). The order actions are not among them: each has its own command.
    RunStep {
        /// Which action.
        action: ProviderAction,
        /// The cart's ID as given.
        cart_id: String,
    },
    /// A custom async step's action (`POST .../actions/custom/apex/{name}`): the same guards
    /// as the async core actions, and an operation named after the action that runs the
    /// provider the template's step names.
    RunCustom {
        /// The custom action, as the template names it.
        action: CustomAction,
        /// The cart's ID as given.
        cart_id: String,
    },
    /// `cartToOrderAction`: make a Draft order from the cart.
    CartToOrder {
        /// The cart's ID as given.
        cart_id: String,
        /// False: the engine runs the operation before answering.
        run_async: bool,
    },
    /// `activateOrderAction`: activate the session's Draft order.
    ActivateOrder {
        /// The cart's ID as given.
        cart_id: String,
        /// Must mean "activate" (`Activated`).
        order_status: Option<String>,
        /// `UNMANAGED` or `MANAGED`, as given; `UNMANAGED` when absent.
        order_life_cycle_type: Option<String>,
        /// False: the engine runs the operation before answering.
        run_async: bool,
    },
    /// The Authorize Payment step: authorise the cart's payment token through the store's
    /// payment integration (not a core action; the template calls a payment integration).
    AuthorizePayment {
        /// The cart's ID as given.
        cart_id: String,
    },
    /// `cancelCartAsyncOperation`.
    Cancel {
        /// The cart's ID as given.
        cart_id: String,
    },
}

/// The life cycle type an activation's `orderLifeCycleType` input chooses: `UNMANAGED` when
/// absent, `None` when the value names neither `UNMANAGED` nor `MANAGED` (exactly, as
/// `orderStatus` must be exactly `Activated`).
pub(crate) fn chosen_life_cycle_type(given: Option<&str>) -> Option<OrderLifeCycleType> {
    given.map_or(
        Some(OrderLifeCycleType::default()),
        OrderLifeCycleType::parse,
    )
}

/// What a command addresses, so the engine knows what to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A cart, by the ID as given.
    Cart(String),
    /// A session, by the ID as given.
    Session(String),
}

impl Command {
    /// The event the command fires under `table`: a screen move into a State that a
    /// closing row of the table enters is [`Event::Close`], any other [`Event::Advance`].
    pub fn event(&self, table: &TransitionTable) -> Event {
        match self {
            Command::StartSession { .. } => Event::Action(Action::CheckoutSession),
            Command::UpdateSession { .. } => Event::Action(Action::UpdateCheckoutSessionState),
            Command::Advance { state, .. } if table.closes_into(state) => Event::Close,
            Command::Advance { .. } => Event::Advance,
            Command::CartToOrder { .. } => Event::Action(Action::CartToOrder),
            Command::ActivateOrder { .. } => Event::Action(Action::ActivateOrder),
            Command::AuthorizePayment { .. } => Event::Authorize,
            Command::SetDetails { .. } => Event::Input,
            Command::SetDeliveryMethod { .. } => Event::Action(Action::SetCheckoutDeliveryMethod),
            Command::EditCart { .. } => Event::Edit,
            Command::RunStep { action, .. } => Event::Action(action.action()),
            Command::RunCustom { action, .. } => Event::Custom(*action),
            Command::Cancel { .. } => Event::Action(Action::CancelCartAsyncOperation),
        }
    }

    /// The command that runs a step of `kind` on a cart, as a caller invokes it: an order
    /// action through its own command (activating with orderStatus `Activated`, the one
    /// value that activates), a provider action through [`Command::RunStep`], the payment step
    /// through [`Command::AuthorizePayment`], a custom step through [`Command::RunCustom`].
    /// `None` for a step that runs nothing (entry, screen, terminal) or an action no async
    /// step runs.
    pub fn for_step(kind: StepKind, cart_id: String) -> Option<Command> {
        Some(match kind {
            StepKind::Async(Action::CartToOrder) => Command::CartToOrder {
                cart_id,
                run_async: true,
            },
            StepKind::Async(Action::ActivateOrder) => Command::ActivateOrder {
                cart_id,
                order_status: Some(OrderStatus::Activated.as_str().to_owned()),
                order_life_cycle_type: None,
                run_async: true,
            },
            StepKind::Async(action) => Command::RunStep {
                action: ProviderAction::of(action)?,
                cart_id,
            },
            StepKind::Payment => Command::AuthorizePayment { cart_id },
            StepKind::Custom(action) => Command::RunCustom { action, cart_id },
            StepKind::Entry | StepKind::Screen | StepKind::Terminal => return None,
        })
    }

    /// The record the command addresses.
    pub fn target(&self) -> Target {
        match self {
            Command::StartSession { cart_id, .. }
            | Command::SetDetails { cart_id, .. }
            | Command::SetDeliveryMethod { cart_id, .. }
            | Command::EditCart { cart_id, .. }
            | Command::CartToOrder { cart_id, .. }
            | Command::ActivateOrder { cart_id, .. }
            | Command::AuthorizePayment { cart_id }
            | Command::RunStep { cart_id, .. }
            | Command::RunCustom { cart_id, .. }
            | Command::Cancel { cart_id } => Target::Cart(cart_id.clone()),
            Command::UpdateSession { session_id, .. } | Command::Advance { session_id, .. } => {
                Target::Session(session_id.clone())
            }
        }
    }
}

/// What a worker or the sweeper reports about an operation. Kept apart from [`Command`] so
/// that [`crate::Engine::execute`] cannot take one: only the engine's own worker paths decide
/// these, through [`crate::machine::decide_worker`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
// Built once per report and passed by reference, like `Command`.
#[allow(clippy::large_enum_variant)]
pub enum WorkerCommand {
    /// A worker claims a New operation.
    Claim {
        /// The operation.
        operation_id: SfId,
        /// How long the claim is good for, in milliseconds.
        lease_ms: u64,
    },
    /// A worker extends its claim while the provider works.
    Heartbeat {
        /// The operation.
        operation_id: SfId,
        /// The attempt the worker claimed.
        attempt: u32,
        /// The new lease, in milliseconds from now.
        lease_ms: u64,
    },
    /// A sweeper ends a claim whose lease ran out: back to New while retries remain, else
    /// the operation fails with a SystemError.
    Expire {
        /// The operation.
        operation_id: SfId,
        /// The attempt whose lease ran out.
        attempt: u32,
    },
    /// A worker reports the outcome of an operation it claimed.
    Finish {
        /// The operation.
        operation_id: SfId,
        /// The attempt the worker claimed (the fencing token).
        attempt: u32,
        /// What the provider answered.
        outcome: StepOutcome,
        /// What a passed check writes to the cart (prices, options, ...), if anything.
        update: Option<CartUpdate>,
        /// The order a passed order step made or activated, whole.
        order: Option<Order>,
    },
}

impl WorkerCommand {
    /// The event the command fires.
    pub fn event(&self) -> Event {
        match self {
            WorkerCommand::Claim { .. } => Event::Claim,
            WorkerCommand::Heartbeat { .. } => Event::Heartbeat,
            // Becomes `Fail` when no retry remains (decided against the operation).
            WorkerCommand::Expire { .. } => Event::Requeue,
            WorkerCommand::Finish { outcome, .. } => match outcome {
                StepOutcome::Passed => Event::Succeed,
                _ => Event::Fail,
            },
        }
    }

    /// The attempt the command holds (its fencing token); a claim holds none yet.
    pub fn attempt(&self) -> Option<u32> {
        match self {
            WorkerCommand::Claim { .. } => None,
            WorkerCommand::Heartbeat { attempt, .. }
            | WorkerCommand::Expire { attempt, .. }
            | WorkerCommand::Finish { attempt, .. } => Some(*attempt),
        }
    }

    /// The operation the command is about.
    pub fn operation_id(&self) -> SfId {
        match self {
            WorkerCommand::Claim { operation_id, .. }
            | WorkerCommand::Heartbeat { operation_id, .. }
            | WorkerCommand::Expire { operation_id, .. }
            | WorkerCommand::Finish { operation_id, .. } => *operation_id,
        }
    }
}

/// A change to a cart's lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum CartEdit {
    /// A new product line.
    AddItem {
        /// Its SKU.
        sku: String,
        /// How many (positive).
        quantity: Decimal,
    },
    /// A line's new quantity (positive).
    SetQuantity {
        /// The line.
        item_id: String,
        /// How many.
        quantity: Decimal,
    },
    /// Removes a line.
    RemoveItem {
        /// The line.
        item_id: String,
    },
}

/// The buyer's input of the screen steps; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CheckoutDetails {
    /// Where to ship (Shipping Address).
    #[serde(default)]
    pub deliver_to: Option<Address>,
    /// One of the offered delivery methods (Delivery Method).
    #[serde(default)]
    pub delivery_method_id: Option<String>,
    /// The tokenized payment method (Payment And Billing Address).
    #[serde(default)]
    pub payment_token: Option<String>,
}

/// What a passed integration writes to the cart: whole new records of the lines it changed,
/// and the cart's new amounts (computed from every line, so they always add up).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CartUpdate {
    /// The changed lines, whole.
    pub items: Vec<CartItem>,
    /// The lines removed (a charge line whose delivery method is no longer offered).
    pub removed_items: Vec<SfId>,
    /// The shipping options offered, when the integration offers them.
    pub delivery_options: Option<Vec<DeliveryOption>>,
    /// The buyer's chosen delivery method after the update (dropped when no longer offered).
    pub delivery_method_id: Option<String>,
    /// The payment authorisation reference, when the integration authorised payment.
    pub payment_authorization_id: Option<String>,
    /// The amount the authorisation covers (the order's grand total).
    pub authorized_amount: Option<Decimal>,
    /// Sum of the product lines' TotalPrice.
    pub total_product_amount: Option<Decimal>,
    /// Sum of the promotion adjustments.
    pub total_adjustment_amount: Option<Decimal>,
    /// Charges.
    pub total_charge_amount: Option<Decimal>,
    /// Taxes.
    pub total_tax_amount: Option<Decimal>,
    /// The grand total.
    pub grand_total_amount: Option<Decimal>,
}

/// A message an integration writes for the buyer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidationMessage {
    /// Severity; failures are `Error`.
    pub level: Level,
    /// Text for the buyer (clipped to 255 characters when stored).
    pub message: String,
    /// The cart or cart item it is about.
    pub related_entity_id: Option<SfId>,
}

/// The outcome of one provider call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum StepOutcome {
    /// The check passed.
    Passed,
    /// The check failed with messages of the provider's kind.
    Failed(Vec<ValidationMessage>),
    /// The provider errored, panicked or timed out: a SystemError.
    SystemFailure(String),
}

/// Everything `decide` reads: loaded by the engine in one consistent read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The acting user, if they exist.
    pub user: Option<User>,
    /// The cart the command addresses, if it exists.
    pub cart: Option<WebCart>,
    /// The cart's store.
    pub store: Option<WebStore>,
    /// The cart's effective account.
    pub account: Option<Account>,
    /// The cart's active session, or for a session-addressed command the session named.
    pub session: Option<CartCheckoutSession>,
    /// The session's current operation, or for a worker command the operation named.
    pub operation: Option<BackgroundOperation>,
    /// Whether any operation of the cart is New or Running.
    pub cart_has_active_operation: bool,
    /// The session's order, if it has one.
    pub order: Option<Order>,
    /// Whether the cart has an Error-level CartValidationOutput that is not dismissed.
    pub has_error_outputs: bool,
    /// The line a `SetQuantity` or `RemoveItem` edit names, when it belongs to the cart.
    pub edited_item: Option<CartItem>,
    /// The cart's lines, for the commands whose input changes amounts (a screen's input,
    /// `setCheckoutDeliveryMethod`, an edit of the lines); empty for the others. Read after the cart, whose
    /// version guards them.
    pub lines: Vec<CartItem>,
}

impl Snapshot {
    /// When the session expired, if it is past its store's checkout time-to-live at `now`.
    /// The one place that decides whether a session has expired: the guards and the choice
    /// between resuming and restarting a checkout all ask it.
    pub(crate) fn session_expired_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let created = self.session.as_ref()?.created_date?;
        let expiry = self.store.as_ref()?.checkout_expiry(created)?;
        (now >= expiry).then_some(expiry)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::model::{KeyPrefix, SessionState};

    fn snapshot(ttl_minutes: Option<u32>, created: Option<DateTime<Utc>>) -> Snapshot {
        let session = CartCheckoutSession {
            id: SfId::from_number(KeyPrefix::CartCheckoutSession, 1),
            web_cart_id: SfId::from_number(KeyPrefix::WebCart, 1),
            state: Some(SessionState::Start),
            next_state: None,
            is_processing: false,
            is_error: false,
            is_archived: false,
            background_operation_id: None,
            order_id: None,
            created_date: created,
            version: 0,
        };
        let store = WebStore {
            id: SfId::from_number(KeyPrefix::WebStore, 1),
            name: "Store".into(),
            checkout_time_to_live: ttl_minutes,
            buyer_accounts: Default::default(),
        };
        Snapshot {
            session: Some(session),
            store: Some(store),
            ..Snapshot::default()
        }
    }

    #[test]
    fn a_session_expires_the_moment_its_time_to_live_ends() {
        let created = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
        let expiry = created + Duration::minutes(60);
        let snapshot = snapshot(Some(60), Some(created));
        assert_eq!(
            snapshot.session_expired_at(expiry - Duration::seconds(1)),
            None
        );
        assert_eq!(snapshot.session_expired_at(expiry), Some(expiry));
        assert_eq!(
            snapshot.session_expired_at(expiry + Duration::days(1)),
            Some(expiry)
        );
    }

    #[test]
    fn a_session_without_a_time_to_live_or_a_creation_date_never_expires() {
        let created = Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap();
        let much_later = created + Duration::days(3_650);
        assert_eq!(
            snapshot(None, Some(created)).session_expired_at(much_later),
            None
        );
        assert_eq!(
            snapshot(Some(60), None).session_expired_at(much_later),
            None
        );
        let no_session = Snapshot {
            session: None,
            ..snapshot(Some(60), Some(created))
        };
        assert_eq!(no_session.session_expired_at(much_later), None);
    }
}
