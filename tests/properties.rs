//! Property tests of the engine: random worlds, random command sequences by random actors,
//! interleaved with worker steps and the passing of time, checked after every step against
//! the transition table, the store's invariants, the checkout's own promises (orders, cancel,
//! Closed carts) and a reference model written from Salesforce's documentation and the
//! decisions `docs/architecture.md` records (payment, completion, repeats, time-to-live, edits),
//! never from the crate's own requirement or decision code.
//!
//! The generator produces abstract steps (indices and choices); each is turned into a concrete
//! command only when it runs, against the model's view of the world at that moment. That keeps
//! generation independent of state (plain proptest, good shrinking) while still letting a
//! `Hub` step issue the command the checkout flow would issue next, so sequences reach the
//! order steps and the close, not only early refusals.
//!
//! The buyer's inputs follow the template's declarations, as legality follows the table: what
//! each step consumes and each screen collects, the steps before the order (where input is
//! taken), and the table's rows of an input change (where the session goes back to). Half the
//! worlds map the sample providers (price book, promotions, shipping rates, tax table, token
//! gateway): the model asks them what a step computes, and the amounts invariant runs them again
//! over the inputs of every order activated here.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use cartflow::clock::{Clock, ManualClock};
use cartflow::ids::SequentialIds;
use cartflow::integrations::{
    CartPatch, CustomProvider, IntegrationRequest, Integrations, InventoryProvider,
    PaymentProvider, Provider, ProviderError, StockTable, StoreProviders, TokenGateway, Verdict,
};
use cartflow::machine::Step as TemplateStep;
use cartflow::machine::{
    Action, CartEdit, CheckoutDetails, Command, CustomAction, Event, Machine, Node, OperationNode,
    Output, Phase, ProviderAction, SessionNode, StepInput, StepKind, StepOutcome, TableError,
    Template, TransitionTable, ValidationMessage, amounts, operation_node, session_node,
};
use cartflow::model::{
    Access, Account, Address, BackgroundOperation, CartCheckoutSession, CartItem, CartItemType,
    CartShare, CartStatus, CartValidationOutput, DeliveryOption, KeyPrefix, Level, MAX_MESSAGE_LEN,
    OperationStatus, Order, OrderItem, OrderStatus, OutputType, Permission, ProviderKind,
    SessionState, SfId, User, WebCart, WebStore,
};
use cartflow::store::{DataSet, StockLevel};
use cartflow::{Engine, EngineConfig, ErrorCode, MemoryStore};
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestError, TestRunner};
use rust_decimal::Decimal;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The checkout template, as the model reads it.

/// What a step of a template does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Entry,
    Screen,
    Async(Action),
    Payment,
    /// A store's own async step, invoked as its custom action.
    Custom(CustomAction),
    Terminal,
}

impl Stage {
    fn of(kind: StepKind) -> Stage {
        match kind {
            StepKind::Entry => Stage::Entry,
            StepKind::Screen => Stage::Screen,
            StepKind::Async(action) => Stage::Async(action),
            StepKind::Payment => Stage::Payment,
            StepKind::Custom(action) => Stage::Custom(action),
            StepKind::Terminal => Stage::Terminal,
        }
    }
}

/// The standard checkout as Salesforce's template lists it: the model's copy, not the crate's
/// (`the_models_standard_checkout_is_the_crates` compares them).
const STEPS: [(SessionState, Stage); 15] = [
    (SessionState::Start, Stage::Entry),
    (SessionState::ShippingAddress, Stage::Screen),
    (
        SessionState::Inventory,
        Stage::Async(Action::CheckCartInventory),
    ),
    (SessionState::ConfirmPrice, Stage::Async(Action::PriceCart)),
    (
        SessionState::CalculatePromotions,
        Stage::Async(Action::CalcCartPromotions),
    ),
    (
        SessionState::ShippingCost,
        Stage::Async(Action::CalcCartShipment),
    ),
    (SessionState::DeliveryMethod, Stage::Screen),
    (SessionState::Taxes, Stage::Async(Action::CalcCartTaxes)),
    (SessionState::PaymentAndBillingAddress, Stage::Screen),
    (SessionState::CheckoutSummary, Stage::Screen),
    (SessionState::CartToOrder, Stage::Async(Action::CartToOrder)),
    (SessionState::AuthorizePayment, Stage::Payment),
    (
        SessionState::ActivateOrder,
        Stage::Async(Action::ActivateOrder),
    ),
    (SessionState::OrderConfirmation, Stage::Screen),
    (SessionState::Complete, Stage::Terminal),
];

/// The async actions that run a store's provider (its integration); the order steps and
/// payment have calls of their own.
const PROVIDER_ACTIONS: [Action; 5] = [
    Action::CheckCartInventory,
    Action::PriceCart,
    Action::CalcCartPromotions,
    Action::CalcCartShipment,
    Action::CalcCartTaxes,
];

/// The name of the payment step's call and operations (payment is not a core action).
const AUTHORIZE_PAYMENT: &str = "authorizePayment";

/// The only orderStatus that means "activate".
const ACTIVATED: &str = "Activated";

/// State names that are a step of no template the suite runs: inputs that must be refused.
const NO_STEP: [&str; 2] = ["Gift Wrapping", "Zahlung bestätigt"];

/// A template's steps in the order a session walks them, entry first, terminal last.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Flow {
    steps: Vec<(SessionState, Stage)>,
}

impl Flow {
    fn standard() -> Flow {
        Flow {
            steps: STEPS.to_vec(),
        }
    }

    /// The steps of `template` from its entry, each followed by its successor.
    fn of(template: &Template) -> Flow {
        let mut steps = Vec::new();
        let mut cursor = template.entry();
        while let Some(step) = cursor.and_then(|state| template.step(state)) {
            if steps.iter().any(|(s, _)| *s == step.state) {
                break;
            }
            steps.push((step.state, Stage::of(step.kind)));
            cursor = step.next;
        }
        Flow { steps }
    }

    fn entry(&self) -> SessionState {
        self.steps[0].0
    }

    fn stage_of(&self, state: SessionState) -> Option<Stage> {
        self.steps
            .iter()
            .find(|(s, _)| *s == state)
            .map(|(_, k)| *k)
    }

    fn position(&self, state: SessionState) -> Option<usize> {
        self.steps.iter().position(|(s, _)| *s == state)
    }

    fn next_of(&self, state: SessionState) -> Option<SessionState> {
        let i = self.position(state)?;
        match self.steps[i].1 {
            Stage::Terminal => None,
            _ => self.steps.get(i + 1).map(|(s, _)| *s),
        }
    }

    /// The step a piece of work belongs to.
    fn step_of(&self, work: Work) -> Option<SessionState> {
        self.steps
            .iter()
            .find(|(_, k)| Work::of(*k) == Some(work))
            .map(|(s, _)| *s)
    }

    /// The work of every async step a session passes before it reaches `state`.
    fn work_before(&self, state: SessionState) -> Vec<Work> {
        let end = self.position(state).unwrap_or(0);
        self.steps[..end]
            .iter()
            .filter_map(|(_, k)| Work::of(*k))
            .collect()
    }

    /// The States a session of the template can be in: its steps in order, then Error.
    fn states(&self) -> Vec<SessionState> {
        let mut states: Vec<SessionState> = self.steps.iter().map(|(s, _)| *s).collect();
        states.push(SessionState::Error);
        states
    }

    /// The State names a command may give: the template's States, then names that are no
    /// step of it (the standard ones it lacks, and a few of no template at all).
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.states().iter().map(|s| s.to_string()).collect();
        let strangers = SessionState::STANDARD
            .iter()
            .filter(|s| self.position(**s).is_none() && **s != SessionState::Error)
            .map(|s| s.to_string());
        names.extend(strangers.chain(NO_STEP.map(str::to_owned)));
        names
    }

    /// The screen whose move into the terminal step closes the cart.
    fn closing_screen(&self) -> Option<SessionState> {
        self.steps
            .windows(2)
            .find(|pair| pair[1].1 == Stage::Terminal)
            .map(|pair| pair[0].0)
    }
}

/// What a background operation does: an async core action, the payment step, or a store's
/// own step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Work {
    Step(Action),
    Payment,
    Custom(CustomAction),
}

impl Work {
    fn of(stage: Stage) -> Option<Work> {
        match stage {
            Stage::Async(action) => Some(Work::Step(action)),
            Stage::Payment => Some(Work::Payment),
            Stage::Custom(action) => Some(Work::Custom(action)),
            _ => None,
        }
    }

    fn name(&self) -> &str {
        match self {
            Work::Step(action) => action.api_name(),
            Work::Payment => AUTHORIZE_PAYMENT,
            Work::Custom(action) => action.as_str(),
        }
    }

    /// The provider kind it runs (its integration); making and activating the order are the
    /// platform's own work.
    fn provider_kind(self) -> Option<ProviderKind> {
        Some(match self {
            Work::Step(Action::CheckCartInventory) => ProviderKind::Inventory,
            Work::Step(Action::PriceCart) => ProviderKind::Price,
            Work::Step(Action::CalcCartPromotions) => ProviderKind::Promotions,
            Work::Step(Action::CalcCartShipment) => ProviderKind::Shipment,
            Work::Step(Action::CalcCartTaxes) => ProviderKind::Tax,
            Work::Payment => ProviderKind::Payment,
            Work::Custom(_) => ProviderKind::Custom,
            Work::Step(_) => return None,
        })
    }

    /// The CartValidationOutput type of a failure: the provider's kind (its integration), and
    /// `Other` for the payment step and the order steps.
    fn output_type(self) -> OutputType {
        match self {
            Work::Step(Action::CheckCartInventory) => OutputType::Inventory,
            Work::Step(Action::PriceCart) => OutputType::Pricing,
            Work::Step(Action::CalcCartPromotions) => OutputType::Promotions,
            Work::Step(Action::CalcCartShipment) => OutputType::Shipping,
            Work::Step(Action::CalcCartTaxes) => OutputType::Taxes,
            _ => OutputType::Other,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Documented refusals.

/// The command kinds a user can send, for the error tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Start,
    Update,
    Advance,
    /// The screen step into `Complete`.
    Close,
    Async(Action),
    Authorize,
    /// A store's own async step.
    Custom,
    Details,
    /// `setCheckoutDeliveryMethod`.
    DeliveryMethod,
    Edit,
    Cancel,
}

/// Why the model refuses a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Why {
    CannotInvoke,
    InvalidCartId,
    InvalidSessionId,
    NoEditAccess,
    AccountInvalid,
    NotStoreMember,
    OrderStatus,
    CartStatus,
    CheckoutDisabled,
    CheckoutInProgress,
    InitialState,
    NoActiveSession,
    Expired,
    EmptyState,
    Locked,
    ExpectedStateMismatch,
    NotNextStep,
    NotLocked,
    WrongStep,
    WrongNextState,
    NoDraftOrder,
    ErrorOutputs,
    OperationActive,
    MethodNotOffered,
    InvalidEdit,
    OrderActivated,
    /// A screen moves on without an input it collects.
    InputMissing,
    /// The buyer's input once the order exists (or at a step the template has no input at).
    InputAfterOrder,
}

const ALL_REASONS: [Why; 28] = [
    Why::CannotInvoke,
    Why::InvalidCartId,
    Why::InvalidSessionId,
    Why::NoEditAccess,
    Why::AccountInvalid,
    Why::NotStoreMember,
    Why::OrderStatus,
    Why::CartStatus,
    Why::CheckoutDisabled,
    Why::CheckoutInProgress,
    Why::InitialState,
    Why::NoActiveSession,
    Why::Expired,
    Why::EmptyState,
    Why::Locked,
    Why::ExpectedStateMismatch,
    Why::NotNextStep,
    Why::NotLocked,
    Why::WrongStep,
    Why::WrongNextState,
    Why::NoDraftOrder,
    Why::ErrorOutputs,
    Why::OperationActive,
    Why::MethodNotOffered,
    Why::InvalidEdit,
    Why::OrderActivated,
    Why::InputMissing,
    Why::InputAfterOrder,
];

use ErrorCode::{
    AlreadyInProcess as AIP, BadRequest as BR, InsufficientAccessOrReadonly as ISA,
    InvalidInput as II, InvalidOperation as IO, RequiredFieldMissing as RFM,
    UnknownException as UE,
};

/// Every (errorCode, HTTP status) an action may answer: the shared table for the async actions
/// and cancel, each action's own for the session actions and activation, with the statuses
/// `requirement.rs` fixes where the documentation gives only "4xx" (a lost compare-and-set is
/// 409). A screen that moves on without an input it collects is 400 `REQUIRED_FIELD_MISSING`.
/// A screen's write of buyer input has the session actions' access rows, and
/// `setCheckoutDeliveryMethod` the async actions' rows; both refuse a delivery method nobody
/// offered with 400 `INVALID_INPUT`, and any input once the order exists with 403
/// `INVALID_OPERATION`. The documentation lists no rows
/// for cart edits; they answer as checkoutSessionAction does, and 400 `INVALID_INPUT` for an
/// edit that is not well-formed.
fn documented_pairs(kind: Kind) -> &'static [(ErrorCode, u16)] {
    match kind {
        Kind::Start => &[(BR, 400), (UE, 500), (IO, 403)],
        Kind::Update => &[(BR, 400), (UE, 403), (ISA, 400), (IO, 403), (IO, 409)],
        // A screen refuses to move on without what it collects.
        Kind::Advance | Kind::Close => &[
            (BR, 400),
            (UE, 403),
            (ISA, 400),
            (IO, 403),
            (IO, 409),
            (RFM, 400),
        ],
        Kind::Async(Action::ActivateOrder) => {
            &[(BR, 400), (UE, 500), (ISA, 500), (IO, 403), (II, 403)]
        }
        Kind::Async(_) | Kind::Authorize | Kind::Custom => {
            &[(BR, 400), (UE, 500), (ISA, 500), (IO, 403), (AIP, 400)]
        }
        Kind::Details => &[
            (BR, 400),
            (UE, 500),
            (ISA, 400),
            (IO, 403),
            (IO, 409),
            (II, 400),
        ],
        // setCheckoutDeliveryMethod: the async actions' shared rows, and a method not offered.
        Kind::DeliveryMethod => &[
            (BR, 400),
            (UE, 500),
            (ISA, 500),
            (IO, 403),
            (AIP, 400),
            (II, 400),
        ],
        Kind::Edit => &[(BR, 400), (UE, 500), (IO, 403), (II, 400)],
        Kind::Cancel => &[(BR, 400), (UE, 500), (ISA, 500), (IO, 403)],
    }
}

/// The pair the documentation gives for one refusal of one action; `None` when the action
/// cannot be refused for that reason (a bug in the model).
fn documented(kind: Kind, why: Why) -> Option<(ErrorCode, u16)> {
    use Kind as K;
    use Why as W;
    let session_action = matches!(kind, K::Update | K::Advance | K::Close);
    let cart_action = !session_action;
    let async_action = matches!(kind, K::Async(_) | K::Authorize | K::Custom);
    let activate = kind == K::Async(Action::ActivateOrder);
    let input = kind == K::Details;
    let choose = kind == K::DeliveryMethod;
    let edit = kind == K::Edit;
    Some(match why {
        W::CannotInvoke => (BR, 400),
        W::InvalidCartId if cart_action => (UE, 500),
        W::InvalidSessionId if session_action => (UE, 403),
        W::NoEditAccess | W::AccountInvalid | W::NotStoreMember if session_action || input => {
            (ISA, 400)
        }
        W::NoEditAccess => (BR, 400),
        W::AccountInvalid | W::NotStoreMember if kind == K::Start || edit => (BR, 400),
        W::AccountInvalid | W::NotStoreMember => (ISA, 500),
        // "an order status other than activate is 500 UNKNOWN_EXCEPTION" (Activate Order).
        W::OrderStatus if activate => (UE, 500),
        W::CartStatus => (IO, 403),
        W::CheckoutDisabled if kind == K::Start => (IO, 403),
        W::CheckoutInProgress if kind == K::Start => (BR, 400),
        W::InitialState if kind == K::Start => (UE, 500),
        W::NoActiveSession | W::Expired if session_action || async_action || input || choose => {
            (IO, 403)
        }
        W::EmptyState if session_action || async_action => (IO, 403),
        W::NotNextStep if session_action => (IO, 403),
        W::Locked if session_action || input => (IO, 409),
        W::Locked if choose => (IO, 403),
        W::ExpectedStateMismatch if session_action => (IO, 409),
        W::NotLocked if async_action => (IO, 403),
        // Activation's own documented rules are 403 INVALID_INPUT.
        W::WrongStep
        | W::WrongNextState
        | W::NoDraftOrder
        | W::ErrorOutputs
        | W::OperationActive
            if activate =>
        {
            (II, 403)
        }
        W::WrongStep | W::WrongNextState if async_action => (IO, 403),
        W::OperationActive if async_action || choose => (AIP, 400),
        W::MethodNotOffered if input || choose => (II, 400),
        W::InputMissing if matches!(kind, K::Advance | K::Close) => (RFM, 400),
        // Once the order exists it is what the buyer pays for: its inputs no longer change.
        W::InputAfterOrder if input || choose => (IO, 403),
        W::InvalidEdit if edit => (II, 400),
        // Once the order is activated the checkout can only complete (docs/architecture.md).
        W::OrderActivated if matches!(kind, K::Start | K::Edit | K::Cancel) || async_action => {
            (IO, 403)
        }
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Random worlds.

/// Which inventory provider a store maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mapping {
    /// No mapping: the internal data passes every check.
    Internal,
    /// The built-in stock table.
    Stock,
    /// The scripted provider: passes, fails, errors or panics as the step says.
    Scripted,
}

/// Which payment provider a store maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payment {
    /// None: no order may be placed (no payment is ever authorised without a gateway).
    Unmapped,
    /// A gateway that authorises every order's grand total (the step is a SystemError when
    /// the session has no order with a total).
    Approve,
    /// A gateway that declines every payment, with one message.
    Decline,
    /// The scripted provider.
    Scripted,
    /// The sample token gateway: authorises the order's grand total against the cart's token.
    Gateway,
}

#[derive(Debug, Clone)]
struct StoreSpec {
    members: u8,
    mapping: Mapping,
    payment: Payment,
    /// CheckoutTimeToLive in minutes.
    ttl: Option<u32>,
}

#[derive(Debug, Clone)]
struct UserSpec {
    account: u8,
    permissions: u8,
}

#[derive(Debug, Clone)]
struct ItemSpec {
    sku: u8,
    quantity: u8,
    charge: bool,
}

#[derive(Debug, Clone)]
struct ActiveSeed {
    /// Index into the template's States (`Flow::states`, Error last); `None` is an empty
    /// State.
    state: Option<u8>,
    /// 0 open, 1 locked, 2 running with a New operation, 3 running with a Running one.
    phase: u8,
    wrong_next: bool,
    /// From the Authorize Payment step on: 0 no order, 1-2 the step's own (Draft before
    /// activation, Activated after), 3 the other status, 4 an OrderId that names nothing.
    order: u8,
    /// 0 no CreatedDate (never expires), 1 five minutes old, 2 more than two days old.
    created: u8,
}

#[derive(Debug, Clone)]
struct CartSpec {
    /// A cart of the main buyer in the main store: most commands on it get past security.
    good: bool,
    /// A cart with an active session is in Checkout, as the engine leaves it.
    consistent: bool,
    store: u8,
    account: u8,
    owner: u8,
    status: CartStatus,
    shares: Vec<(u8, Access)>,
    items: Vec<ItemSpec>,
    /// The Shipment integration has offered delivery options.
    options: bool,
    /// The cart has been priced.
    priced: bool,
    archived: u8,
    active: Option<ActiveSeed>,
    outputs: Vec<(Level, bool)>,
}

#[derive(Debug, Clone)]
struct WorldSpec {
    /// The stores map the sample providers (price book, promotions, shipping rates, tax
    /// table) for the provider steps: their checkouts compute real amounts.
    sample: bool,
    stores: Vec<StoreSpec>,
    accounts: Vec<bool>,
    users: Vec<UserSpec>,
    carts: Vec<CartSpec>,
}

fn cart_status() -> impl Strategy<Value = CartStatus> {
    prop_oneof![
        6 => Just(CartStatus::Active),
        4 => Just(CartStatus::Checkout),
        2 => Just(CartStatus::Closed),
        1 => Just(CartStatus::Processing),
        1 => Just(CartStatus::PendingClosed),
        1 => Just(CartStatus::PendingDelete),
    ]
}

fn active_seed(flow: &Flow) -> impl Strategy<Value = ActiveSeed> + use<> {
    // Any State, and more often one of the order steps.
    let states = u8::try_from(flow.states().len()).expect("a template has few steps");
    let order = flow.position(SessionState::CartToOrder).unwrap_or(0) as u8;
    let state = prop_oneof![2 => 0u8..states, 1 => order..order + 4];
    (
        prop::option::weighted(0.9, state),
        0u8..4,
        prop::bool::weighted(0.2),
        0u8..5,
        0u8..3,
    )
        .prop_map(|(state, phase, wrong_next, order, created)| ActiveSeed {
            state,
            phase,
            wrong_next,
            order,
            created,
        })
}

fn cart_spec(flow: &Flow) -> impl Strategy<Value = CartSpec> + use<> {
    let item = (0u8..8, 1u8..=4, prop::bool::weighted(0.15)).prop_map(|(sku, quantity, charge)| {
        ItemSpec {
            sku,
            quantity,
            charge,
        }
    });
    let share = (0u8..8, prop_oneof![Just(Access::Read), Just(Access::Edit)]);
    let level = prop_oneof![
        3 => Just(Level::Error),
        1 => Just(Level::Warning),
        1 => Just(Level::Info),
    ];
    let output = (level, prop::bool::weighted(0.3));
    (
        (prop::bool::weighted(0.7), prop::bool::weighted(0.6)),
        (0u8..8, 0u8..8, 0u8..8),
        cart_status(),
        prop::collection::vec(share, 0..3),
        prop::collection::vec(item, 0..5),
        (prop::bool::weighted(0.6), prop::bool::weighted(0.5)),
        (
            0u8..3,
            prop::option::weighted(0.45, active_seed(flow)),
            prop::collection::vec(output, 0..3),
        ),
    )
        .prop_map(
            |(
                (good, consistent),
                (store, account, owner),
                status,
                shares,
                items,
                (options, priced),
                (archived, active, outputs),
            )| {
                CartSpec {
                    good,
                    consistent,
                    store,
                    account,
                    owner,
                    status,
                    shares,
                    items,
                    options,
                    priced,
                    archived,
                    active,
                    outputs,
                }
            },
        )
}

fn store_spec() -> impl Strategy<Value = StoreSpec> {
    let mapping = prop_oneof![
        1 => Just(Mapping::Internal),
        1 => Just(Mapping::Stock),
        2 => Just(Mapping::Scripted),
    ];
    let payment = prop_oneof![
        1 => Just(Payment::Unmapped),
        3 => Just(Payment::Approve),
        1 => Just(Payment::Decline),
        2 => Just(Payment::Scripted),
        3 => Just(Payment::Gateway),
    ];
    let ttl = prop_oneof![
        3 => Just(Some(2880)),
        2 => Just(None),
        2 => Just(Some(30)),
        1 => Just(Some(0)),
    ];
    (any::<u8>(), mapping, payment, ttl).prop_map(|(members, mapping, payment, ttl)| StoreSpec {
        members,
        mapping,
        payment,
        ttl,
    })
}

fn world_spec(flow: &Flow) -> impl Strategy<Value = WorldSpec> + use<> {
    (
        prop::bool::weighted(0.5),
        prop::collection::vec(store_spec(), 1..=3),
        prop::collection::vec(prop::bool::weighted(0.8), 1..=3),
        prop::collection::vec(
            (0u8..8, 0u8..8).prop_map(|(account, permissions)| UserSpec {
                account,
                permissions,
            }),
            2..=5,
        ),
        prop::collection::vec(cart_spec(flow), 1..=4),
    )
        .prop_map(|(sample, stores, accounts, users, carts)| WorldSpec {
            sample,
            stores,
            accounts,
            users,
            carts,
        })
}

/// Record numbers of the world; IDs the engine generates start far above them.
const FIRST_GENERATED: u64 = 1_000_000;
/// The record number of references to records that do not exist.
const MISSING: u64 = 900_000;
/// The record number of well-formed IDs that name nothing.
const UNKNOWN: u64 = 950_000;

fn id(kind: KeyPrefix, n: u64) -> SfId {
    SfId::from_number(kind, n)
}

fn epoch() -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000, 0)
        .single()
        .expect("a valid instant")
}

/// Units in stock per SKU in every store that maps the stock table; "Z" is unknown to it.
const STOCK: [(&str, u32); 2] = [("A", 1_000), ("B", 3)];
const SKUS: [Option<&str>; 8] = [
    Some("A"),
    Some("A"),
    Some("A"),
    Some("B"),
    Some("Z"),
    None,
    Some(""),
    Some("  "),
];

/// The SKUs of a world with the sample providers: mostly ones its price book lists ("Z" has
/// no price, and no weight for the weight-based shipping).
const PRICED_SKUS: [Option<&str>; 8] = [
    Some("A"),
    Some("A"),
    Some("A"),
    Some("B"),
    Some("B"),
    Some("A"),
    Some("Z"),
    Some("A"),
];

/// The sample store's providers, for the stores of a world that maps them: the sample price
/// book, promotions, shipping rates and tax table, knowing this suite's SKUs too.
fn sample_providers() -> StoreProviders {
    let mut providers = cartflow::sample::provider_config()
        .remove(&cartflow::sample::store_id())
        .expect("the sample store maps providers");
    providers.price = providers.price.map(|book| {
        book.list("A", Decimal::new(1250, 2))
            .list("B", Decimal::new(4000, 2))
    });
    providers.shipment = providers.shipment.map(|rates| {
        rates
            .weight("A", Decimal::new(15, 1))
            .weight("B", Decimal::from(6))
    });
    providers.payment = None;
    providers.custom.clear();
    providers
}

/// The sample gateway, with the suite's token issued to the main buyer's account.
fn sample_gateway() -> TokenGateway {
    let providers = cartflow::sample::provider_config();
    let gateway = providers[&cartflow::sample::store_id()]
        .payment
        .clone()
        .expect("the sample store maps a gateway");
    gateway.issue(GOOD_TOKEN, id(KeyPrefix::Account, 1))
}

/// The payment token the gateway issued to the main buyer's account.
const GOOD_TOKEN: &str = "tok_visa_4242";

/// The delivery options a Shipment integration offered, on the carts that have them.
fn offered_options() -> Vec<DeliveryOption> {
    [("STD", "Standard", 5), ("EXP", "Express", 20)]
        .into_iter()
        .map(|(method, name, amount)| DeliveryOption {
            id: None,
            delivery_method_id: method.into(),
            name: name.into(),
            amount: Decimal::from(amount),
        })
        .collect()
}

/// A delivery method no integration offers.
const UNOFFERED_METHOD: &str = "DRONE";

fn address() -> Address {
    Address {
        street: "1 Main St".into(),
        city: "Springfield".into(),
        state_code: Some("IL".into()),
        postal_code: "62701".into(),
        country_code: "US".into(),
    }
}

/// The addresses a buyer gives: Springfield (5 % in the sample tax table), Denver (2.9 %),
/// and one the tax table has no rate for.
fn address_of(k: u8) -> Address {
    match k % 3 {
        0 => address(),
        1 => cartflow::sample::denver(),
        _ => Address {
            street: "1 Rue de Rivoli".into(),
            city: "Paris".into(),
            state_code: None,
            postal_code: "75001".into(),
            country_code: "FR".into(),
        },
    }
}

/// Builds the data set and the model of a world whose checkouts follow `table`'s template.
fn build(spec: &WorldSpec, table: &TransitionTable) -> (DataSet, Model) {
    let flow = &Arc::new(Flow::of(table.template()));
    let skus = if spec.sample { PRICED_SKUS } else { SKUS };
    let mut data = DataSet::default();
    let n_accounts = spec.accounts.len() as u64;
    let n_stores = spec.stores.len() as u64;
    let n_users = spec.users.len() as u64;
    // Index `n` (one past the end) names a record that does not exist.
    let pick = |kind: KeyPrefix, choice: u8, n: u64| {
        let k = u64::from(choice) % (n + 1);
        if k == n {
            id(kind, MISSING)
        } else {
            id(kind, k + 1)
        }
    };
    for (i, active) in spec.accounts.iter().enumerate() {
        data.accounts.push(Account {
            id: id(KeyPrefix::Account, i as u64 + 1),
            name: format!("account {i}"),
            is_active: *active || i == 0,
        });
    }
    let mut mappings = Vec::new();
    for (i, s) in spec.stores.iter().enumerate() {
        let mut members: BTreeSet<SfId> = (0..n_accounts)
            .filter(|a| s.members & (1 << a) != 0)
            .map(|a| id(KeyPrefix::Account, a + 1))
            .collect();
        if i == 0 {
            members.insert(id(KeyPrefix::Account, 1));
        }
        let store = id(KeyPrefix::WebStore, i as u64 + 1);
        data.stores.push(WebStore {
            id: store,
            name: format!("store {i}"),
            checkout_time_to_live: s.ttl,
            buyer_accounts: members,
        });
        if s.mapping == Mapping::Stock {
            for (sku, units) in STOCK {
                data.stock.push(StockLevel {
                    store_id: store,
                    sku: sku.into(),
                    quantity: Decimal::from(units),
                });
            }
        }
        mappings.push((store, s.mapping, s.payment));
    }
    for (i, u) in spec.users.iter().enumerate() {
        let mut permissions: BTreeSet<Permission> = [
            Permission::B2BBuyer,
            Permission::B2BCommerceIntegrator,
            Permission::ModifyAllData,
        ]
        .into_iter()
        .enumerate()
        .filter(|(bit, _)| u.permissions & (1 << bit) != 0)
        .map(|(_, p)| p)
        .collect();
        // Choice 0 is an internal user (no account).
        let mut account = match u64::from(u.account) % (n_accounts + 2) {
            0 => None,
            k => Some(pick(KeyPrefix::Account, (k - 1) as u8, n_accounts)),
        };
        if i == 0 {
            permissions.insert(Permission::B2BBuyer);
            account = Some(id(KeyPrefix::Account, 1));
        }
        data.users.push(User {
            id: id(KeyPrefix::User, i as u64 + 1),
            name: format!("user {i}"),
            account_id: account,
            permissions,
        });
    }
    let (mut items, mut sessions, mut ops, mut outputs, mut orders) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut model_carts = Vec::new();
    for (c, spec) in spec.carts.iter().enumerate() {
        let cart_id = id(KeyPrefix::WebCart, c as u64 + 1);
        let (store, account, owner) = if spec.good {
            (
                id(KeyPrefix::WebStore, 1),
                id(KeyPrefix::Account, 1),
                id(KeyPrefix::User, 1),
            )
        } else {
            (
                pick(KeyPrefix::WebStore, spec.store, n_stores),
                pick(KeyPrefix::Account, spec.account, n_accounts),
                pick(KeyPrefix::User, spec.owner, n_users),
            )
        };
        let status = if spec.consistent && spec.active.is_some() {
            CartStatus::Checkout
        } else {
            spec.status
        };
        let cart = WebCart {
            shares: spec
                .shares
                .iter()
                .map(|(u, access)| CartShare {
                    user_id: id(KeyPrefix::User, u64::from(*u) % n_users + 1),
                    access: *access,
                })
                .collect(),
            delivery_options: if spec.options {
                offered_options()
            } else {
                Vec::new()
            },
            ..WebCart::new(cart_id, store, account, owner, status)
        };
        let mut cart = cart;
        let mut cart_items = Vec::new();
        for item in &spec.items {
            items += 1;
            let mut line = CartItem {
                item_type: if item.charge {
                    CartItemType::Charge
                } else {
                    CartItemType::Product
                },
                ..CartItem::product(
                    id(KeyPrefix::CartItem, items),
                    cart_id,
                    skus[usize::from(item.sku) % skus.len()].map(str::to_owned),
                    Decimal::from(item.quantity),
                )
            };
            // A priced cart's products were priced at 10.00 a unit (by no provider of the
            // world): the next Confirm Price reprices them.
            if spec.priced && !item.charge && line.sku.is_some() {
                let unit = Decimal::new(1000, 2);
                line.list_price = Some(unit);
                line.sales_price = Some(unit);
                line.total_price = Some(unit * line.quantity);
            }
            cart_items.push(line);
        }
        // The cart's totals are its lines', as they always are.
        model_total(&mut cart, &cart_items);
        let mut m_sessions = Vec::new();
        let mut m_ops = Vec::new();
        let mut m_orders = Vec::new();
        let mut seed_op = |work: Work,
                           session: SfId,
                           status: OperationStatus,
                           data: &mut DataSet,
                           m_ops: &mut Vec<MOp>| {
            ops += 1;
            let op_id = id(KeyPrefix::BackgroundOperation, ops);
            let submitted = epoch() - Duration::seconds(1_000 - ops as i64);
            let running = status == OperationStatus::Running;
            data.operations.push(BackgroundOperation {
                id: op_id,
                name: work.name().into(),
                cart_id,
                checkout_session_id: session,
                provider_kind: work.provider_kind(),
                status,
                error: None,
                submitted_at: submitted,
                started_at: running.then_some(submitted),
                finished_at: (!status.is_active()).then_some(submitted),
                expires_at: running.then(|| submitted + Duration::seconds(150)),
                attempt: u32::from(status != OperationStatus::New),
                retry_limit: 2,
                timeout_ms: 120_000,
                order_life_cycle_type: None,
                version: 0,
            });
            m_ops.push(MOp {
                id: op_id,
                work,
                session,
                status,
                submitted,
                attempt: u32::from(status != OperationStatus::New),
                expires_at: running.then(|| submitted + Duration::seconds(150)),
            });
            op_id
        };
        for k in 0..spec.archived {
            sessions += 1;
            let session_id = id(KeyPrefix::CartCheckoutSession, sessions);
            let state = flow.steps[usize::from(k * 5) % flow.steps.len()].0;
            let op = (k % 2 == 0).then(|| {
                seed_op(
                    Work::Step(Action::CheckCartInventory),
                    session_id,
                    OperationStatus::Complete,
                    &mut data,
                    &mut m_ops,
                )
            });
            let session = MSession {
                id: session_id,
                state: Some(state),
                next: None,
                processing: false,
                error: false,
                archived: true,
                op,
                order: None,
                created: None,
            };
            data.sessions.push(session.record(cart_id));
            m_sessions.push(session);
        }
        if let Some(seed) = &spec.active {
            sessions += 1;
            let session_id = id(KeyPrefix::CartCheckoutSession, sessions);
            let states = flow.states();
            let state = seed.state.map(|k| states[usize::from(k) % states.len()]);
            let stage = state.and_then(|s| flow.stage_of(s));
            let at = state.and_then(|s| flow.position(s));
            // An imported checkout carries the operations of the async steps it passed.
            let passed = state.map(|s| flow.work_before(s)).unwrap_or_default();
            let mut checked = None;
            for work in passed {
                let complete = OperationStatus::Complete;
                checked = Some(seed_op(work, session_id, complete, &mut data, &mut m_ops));
            }
            // Locked and running are phases of async, payment and custom steps only.
            let lockable = stage.and_then(Work::of).is_some();
            let phase = match seed.phase {
                0 => 0,
                _ if !lockable => 0,
                p => p,
            };
            let mut session = MSession {
                id: session_id,
                state,
                next: None,
                processing: phase > 0,
                error: state == Some(SessionState::Error),
                archived: false,
                op: checked,
                order: None,
                created: match seed.created {
                    0 => None,
                    1 => Some(epoch() - Duration::minutes(5)),
                    _ => Some(epoch() - Duration::minutes(3_000)),
                },
            };
            if phase > 0 {
                let next = state.and_then(|s| flow.next_of(s));
                session.next = if seed.wrong_next && phase == 1 {
                    Some(SessionState::Error)
                } else {
                    next
                };
            }
            if phase >= 2 {
                let work = stage.and_then(Work::of).expect("lockable steps have work");
                let status = if phase == 2 {
                    OperationStatus::New
                } else {
                    OperationStatus::Running
                };
                session.op = Some(seed_op(work, session_id, status, &mut data, &mut m_ops));
            }
            let payment = flow.position(SessionState::AuthorizePayment);
            let confirmation = at > flow.position(SessionState::ActivateOrder);
            let last = flow.position(SessionState::Complete);
            if at >= payment && at < last && seed.order > 0 {
                orders += 1;
                let order_id = id(KeyPrefix::Order, orders);
                session.order = Some(order_id);
                let activated = match seed.order {
                    1 | 2 => Some(confirmation),
                    3 => Some(!confirmation),
                    _ => None,
                };
                if let Some(activated) = activated {
                    let order = seeded_order(order_id, orders, &cart, &cart_items, activated);
                    m_orders.push(MOrder::of(&order));
                    data.orders.push(order);
                }
            }
            data.sessions.push(session.record(cart_id));
            m_sessions.push(session);
        }
        let mut m_outputs = Vec::new();
        for (level, dismissed) in &spec.outputs {
            outputs += 1;
            data.validation_outputs.push(CartValidationOutput {
                id: id(KeyPrefix::CartValidationOutput, outputs),
                cart_id,
                background_operation_id: None,
                level: *level,
                output_type: OutputType::Inventory,
                message: "seeded".into(),
                related_entity_id: Some(cart_id),
                is_dismissed: *dismissed,
            });
            m_outputs.push(MOutput {
                level: *level,
                dismissed: *dismissed,
                output_type: OutputType::Inventory,
            });
        }
        data.items.extend(cart_items.iter().cloned());
        data.carts.push(cart.clone());
        model_carts.push(MCart {
            record: cart,
            status,
            items: cart_items,
            sessions: m_sessions,
            ops: m_ops,
            outputs: m_outputs,
            orders: m_orders,
        });
    }
    let mut config = cartflow::integrations::ProviderConfig::new();
    for (store, _, payment) in &mappings {
        let mut providers = if spec.sample {
            sample_providers()
        } else {
            StoreProviders::default()
        };
        if *payment == Payment::Gateway {
            providers.payment = Some(sample_gateway());
        }
        config.insert(*store, providers);
    }
    let mut providers = Integrations::new();
    providers
        .configure(&config)
        .expect("the sample providers are valid");
    let model = Model {
        users: data.users.clone(),
        accounts: data.accounts.clone(),
        stores: data.stores.clone(),
        mappings,
        carts: model_carts,
        flow: flow.clone(),
        table: table.clone(),
        providers,
        sample: spec.sample,
        fired: None,
    };
    (data, model)
}

/// An order an imported checkout already made.
fn seeded_order(
    order_id: SfId,
    n: u64,
    cart: &WebCart,
    items: &[CartItem],
    activated: bool,
) -> Order {
    let made = epoch() - Duration::hours(1);
    Order {
        status: if activated {
            OrderStatus::Activated
        } else {
            OrderStatus::Draft
        },
        items: items
            .iter()
            .map(|line| OrderItem {
                id: None,
                cart_item_id: line.id,
                sku: line.sku.clone(),
                product2_id: None,
                quantity: line.quantity,
                item_type: line.item_type,
                unit_price: None,
                total_price: None,
                adjustment_amount: None,
                tax_amount: None,
            })
            .collect(),
        activated_date: activated.then_some(made),
        order_summary_id: activated.then(|| id(KeyPrefix::OrderSummary, n)),
        ..Order::draft(order_id, cart, cart.owner_id, made)
    }
}

// ---------------------------------------------------------------------------------------------
// The reference model.

#[derive(Debug, Clone, PartialEq, Eq)]
struct MSession {
    id: SfId,
    state: Option<SessionState>,
    next: Option<SessionState>,
    processing: bool,
    error: bool,
    archived: bool,
    op: Option<SfId>,
    order: Option<SfId>,
    created: Option<DateTime<Utc>>,
}

impl MSession {
    fn record(&self, cart: SfId) -> CartCheckoutSession {
        CartCheckoutSession {
            id: self.id,
            web_cart_id: cart,
            state: self.state,
            next_state: self.next,
            is_processing: self.processing,
            is_error: self.error,
            is_archived: self.archived,
            background_operation_id: self.op,
            order_id: self.order,
            created_date: self.created,
            version: 0,
        }
    }

    fn of(s: &CartCheckoutSession) -> MSession {
        MSession {
            id: s.id,
            state: s.state,
            next: s.next_state,
            processing: s.is_processing,
            error: s.is_error,
            archived: s.is_archived,
            op: s.background_operation_id,
            order: s.order_id,
            created: s.created_date,
        }
    }
}

#[derive(Debug, Clone)]
struct MOp {
    id: SfId,
    work: Work,
    session: SfId,
    status: OperationStatus,
    submitted: DateTime<Utc>,
    /// How many times a worker claimed it.
    attempt: u32,
    /// While Running, when its claim's lease ends (claim time + [`LEASE_MS`]); else none.
    expires_at: Option<DateTime<Utc>>,
}

/// The lease of a worker's claim, in milliseconds, as the harness configures the engine.
const LEASE_MS: u64 = 30_000;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct MOutput {
    level: Level,
    dismissed: bool,
    output_type: OutputType,
}

impl MOutput {
    /// An output that blocks activation: Error level, not dismissed.
    fn blocks(&self) -> bool {
        self.level == Level::Error && !self.dismissed
    }
}

/// Whether a session's order is activated.
fn activated(cart: &MCart, session: &MSession) -> bool {
    session
        .order
        .and_then(|id| cart.orders.iter().find(|o| o.id == id))
        .is_some_and(|o| o.status == OrderStatus::Activated)
}

/// An order line as the model knows it: the cart line, its type and quantity, and its unit
/// price, total, adjustment and tax.
type MOrderLine = (SfId, CartItemType, Decimal, [Option<Decimal>; 4]);

/// What the model knows of an order: what it was made from and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MOrder {
    id: SfId,
    status: OrderStatus,
    lines: Vec<MOrderLine>,
    deliver_to: Option<Address>,
    delivery_method: Option<String>,
    authorization: Option<String>,
    authorized: Option<Decimal>,
    grand_total: Option<Decimal>,
    /// Activated orders carry an OrderSummary and their activation date.
    summary: bool,
}

impl MOrder {
    fn of(order: &Order) -> MOrder {
        MOrder {
            id: order.id,
            status: order.status,
            lines: order
                .items
                .iter()
                .map(|i| {
                    let amounts = [
                        i.unit_price,
                        i.total_price,
                        i.adjustment_amount,
                        i.tax_amount,
                    ];
                    (i.cart_item_id, i.item_type, i.quantity, amounts)
                })
                .collect(),
            deliver_to: order.deliver_to.clone(),
            delivery_method: order.delivery_method_id.clone(),
            authorization: order.payment_authorization_id.clone(),
            authorized: order.authorized_amount,
            grand_total: order.grand_total_amount,
            summary: order.order_summary_id.is_some() && order.activated_date.is_some(),
        }
    }

    /// The order as a record, for a provider that reads it (the payment gateway reads its
    /// grand total).
    fn record(&self, cart: &WebCart) -> Order {
        Order {
            status: self.status,
            deliver_to: self.deliver_to.clone(),
            delivery_method_id: self.delivery_method.clone(),
            payment_authorization_id: self.authorization.clone(),
            authorized_amount: self.authorized,
            grand_total_amount: self.grand_total,
            ..seeded_order(self.id, 0, cart, &[], false)
        }
    }

    /// A Draft order of the cart as it stands (Cart to Order "creates a Draft order from
    /// the cart").
    fn draft(id: SfId, cart: &MCart) -> MOrder {
        MOrder {
            id,
            status: OrderStatus::Draft,
            lines: cart
                .items
                .iter()
                .map(|i| {
                    let amounts = [
                        i.sales_price,
                        i.total_price,
                        i.adjustment_amount,
                        i.tax_amount,
                    ];
                    (i.id, i.item_type, i.quantity, amounts)
                })
                .collect(),
            deliver_to: cart.record.deliver_to.clone(),
            delivery_method: cart.record.delivery_method_id.clone(),
            // A draft is authorised by the payment step after it, never by the cart's past.
            authorization: None,
            authorized: None,
            grand_total: cart.record.grand_total_amount,
            summary: false,
        }
    }
}

#[derive(Debug, Clone)]
struct MCart {
    record: WebCart,
    status: CartStatus,
    items: Vec<CartItem>,
    sessions: Vec<MSession>,
    ops: Vec<MOp>,
    outputs: Vec<MOutput>,
    orders: Vec<MOrder>,
}

impl MCart {
    fn active(&self) -> Option<usize> {
        self.sessions.iter().position(|s| !s.archived)
    }

    fn op_active(&self) -> bool {
        self.ops.iter().any(|o| is_active(o.status))
    }

    fn order(&self, id: Option<SfId>) -> Option<&MOrder> {
        id.and_then(|id| self.orders.iter().find(|o| o.id == id))
    }
}

fn is_active(status: OperationStatus) -> bool {
    matches!(status, OperationStatus::New | OperationStatus::Running)
}

/// The model's world: plain data plus the checkout state the model predicts.
#[derive(Clone)]
struct Model {
    users: Vec<User>,
    accounts: Vec<Account>,
    stores: Vec<WebStore>,
    mappings: Vec<(SfId, Mapping, Payment)>,
    carts: Vec<MCart>,
    /// The template every checkout follows.
    flow: Arc<Flow>,
    /// Its table: the rows an input change fires, the steps' inputs.
    table: TransitionTable,
    /// The providers the stores map that compute amounts (the sample ones), and the sample
    /// gateway: the model asks them what a step computes.
    providers: Integrations,
    /// Whether the stores map the sample providers.
    sample: bool,
    /// The event the last applied command fired, when it is not the command's own (an input
    /// change that rewinds the session).
    fired: Option<Event>,
}

/// A user command after resolution: the raw inputs plus what the model knows they name.
#[derive(Debug, Clone)]
enum Call {
    Start {
        cart: String,
        initial: Option<String>,
    },
    Update {
        session: String,
        next: String,
        exp: Option<String>,
    },
    Advance {
        session: String,
        state: String,
        exp: Option<String>,
    },
    /// One of the five provider steps.
    Run {
        action: Action,
        cart: String,
    },
    CartToOrder {
        cart: String,
        run_async: bool,
    },
    Authorize {
        cart: String,
    },
    /// A custom async step.
    Custom {
        action: CustomAction,
        cart: String,
    },
    Activate {
        cart: String,
        status: Option<String>,
        run_async: bool,
    },
    Details {
        cart: String,
        details: CheckoutDetails,
    },
    /// `setCheckoutDeliveryMethod`.
    DeliveryMethod {
        cart: String,
        method: String,
    },
    Edit {
        cart: String,
        edit: CartEdit,
    },
    Cancel {
        cart: String,
    },
}

impl Call {
    fn kind(&self) -> Kind {
        match self {
            Call::Start { .. } => Kind::Start,
            Call::Update { .. } => Kind::Update,
            Call::Advance { state, .. } if state == SessionState::Complete.as_str() => Kind::Close,
            Call::Advance { .. } => Kind::Advance,
            Call::Run { action, .. } => Kind::Async(*action),
            Call::CartToOrder { .. } => Kind::Async(Action::CartToOrder),
            Call::Authorize { .. } => Kind::Authorize,
            Call::Custom { .. } => Kind::Custom,
            Call::Activate { .. } => Kind::Async(Action::ActivateOrder),
            Call::Details { .. } => Kind::Details,
            Call::DeliveryMethod { .. } => Kind::DeliveryMethod,
            Call::Edit { .. } => Kind::Edit,
            Call::Cancel { .. } => Kind::Cancel,
        }
    }

    /// `runAsync` false: the operation runs inside the call.
    fn inline(&self) -> bool {
        matches!(
            self,
            Call::CartToOrder {
                run_async: false,
                ..
            } | Call::Activate {
                run_async: false,
                ..
            }
        )
    }

    fn command(&self) -> Command {
        match self.clone() {
            Call::Start { cart, initial } => Command::StartSession {
                cart_id: cart,
                initial_state: initial,
            },
            Call::Update { session, next, exp } => Command::UpdateSession {
                session_id: session,
                next_state: next,
                exp_current_state: exp,
            },
            Call::Advance {
                session,
                state,
                exp,
            } => Command::Advance {
                session_id: session,
                state,
                exp_current_state: exp,
            },
            Call::Run { action, cart } => Command::RunStep {
                action: ProviderAction::of(action).expect("the model runs provider actions only"),
                cart_id: cart,
            },
            Call::CartToOrder { cart, run_async } => Command::CartToOrder {
                cart_id: cart,
                run_async,
            },
            Call::Authorize { cart } => Command::AuthorizePayment { cart_id: cart },
            Call::Custom { action, cart } => Command::RunCustom {
                action,
                cart_id: cart,
            },
            Call::Activate {
                cart,
                status,
                run_async,
            } => Command::ActivateOrder {
                cart_id: cart,
                order_status: status,
                order_life_cycle_type: None,
                run_async,
            },
            Call::Details { cart, details } => Command::SetDetails {
                cart_id: cart,
                details,
            },
            Call::DeliveryMethod { cart, method } => Command::SetDeliveryMethod {
                cart_id: cart,
                delivery_method_id: method,
            },
            Call::Edit { cart, edit } => Command::EditCart {
                cart_id: cart,
                edit,
            },
            Call::Cancel { cart } => Command::Cancel { cart_id: cart },
        }
    }

    /// The invocable action and its input object, for calls that have one.
    fn rest(&self) -> Option<(&'static str, Value)> {
        Some(match self {
            Call::Start { cart, initial } => (
                "checkoutSessionAction",
                json!({"cartId": cart, "initialState": initial}),
            ),
            Call::Update { session, next, exp } => (
                "updateCheckoutSessionStateAction",
                json!({"checkoutSessionId": session, "nextState": next, "expCurrentState": exp}),
            ),
            Call::Run { action, cart } => (action.api_name(), json!({"cartId": cart})),
            Call::CartToOrder { cart, run_async } => (
                "cartToOrderAction",
                json!({"cartId": cart, "runAsync": run_async}),
            ),
            Call::Authorize { cart } => (AUTHORIZE_PAYMENT, json!({"cartId": cart})),
            Call::Activate {
                cart,
                status,
                run_async,
            } => (
                "activateOrderAction",
                json!({"cartId": cart, "orderStatus": status, "runAsync": run_async}),
            ),
            Call::Cancel { cart } => ("cancelCartAsyncOperation", json!({"cartId": cart})),
            Call::DeliveryMethod { cart, method } => (
                "setCheckoutDeliveryMethod",
                json!({"cartId": cart, "deliveryMethodId": method}),
            ),
            // Screens write records directly (a REST PATCH), not through an action.
            Call::Advance { .. } | Call::Details { .. } | Call::Edit { .. } => return None,
            // Custom steps are invoked through the engine's own command only, so far.
            Call::Custom { .. } => return None,
        })
    }
}

/// An accepted command, as the model plans it.
#[derive(Debug, Clone, Copy)]
enum Plan {
    Start {
        cart: usize,
    },
    Update {
        cart: usize,
        session: usize,
    },
    Advance {
        cart: usize,
        session: usize,
        to: SessionState,
    },
    Work {
        cart: usize,
        work: Work,
    },
    /// A screen's buyer input, or `setCheckoutDeliveryMethod`.
    Details {
        cart: usize,
    },
    Edit {
        cart: usize,
    },
    Cancel {
        cart: usize,
    },
}

/// What an engine answered: `Ok` with the output (key and ID), or the error pair.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Ok(Option<(&'static str, String)>),
    Err(String, u16),
}

/// What a provider call comes to, as far as the session and the outputs can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed(usize),
    System,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Passed => "Passed",
            Outcome::Failed(_) => "Failed",
            Outcome::System => "System",
        }
    }
}

fn finish_event(outcome: Outcome) -> Event {
    if outcome == Outcome::Passed {
        Event::Succeed
    } else {
        Event::Fail
    }
}

impl Model {
    fn user(&self, id: Option<SfId>) -> Option<&User> {
        id.and_then(|id| self.users.iter().find(|u| u.id == id))
    }

    fn cart_index(&self, id: Option<SfId>) -> Option<usize> {
        id.and_then(|id| self.carts.iter().position(|c| c.record.id == id))
    }

    fn session_index(&self, id: Option<SfId>) -> Option<(usize, usize)> {
        let id = id?;
        self.carts.iter().enumerate().find_map(|(c, cart)| {
            cart.sessions
                .iter()
                .position(|s| s.id == id)
                .map(|s| (c, s))
        })
    }

    fn store_of(&self, cart: &MCart) -> Option<&WebStore> {
        self.stores
            .iter()
            .find(|s| s.id == cart.record.web_store_id)
    }

    /// Owner, any share, or Modify All Data.
    fn can_see(&self, user: &User, cart: &WebCart) -> bool {
        cart.owner_id == user.id
            || user.permissions.contains(&Permission::ModifyAllData)
            || cart.shares.iter().any(|s| s.user_id == user.id)
    }

    fn can_edit(&self, user: &User, cart: &WebCart) -> bool {
        cart.owner_id == user.id
            || user.permissions.contains(&Permission::ModifyAllData)
            || cart
                .shares
                .iter()
                .any(|s| s.user_id == user.id && s.access == Access::Edit)
    }

    /// The effective account exists, is active, and is the caller's own (internal users
    /// act for any account).
    fn account_valid(&self, user: &User, cart: &WebCart) -> bool {
        self.accounts.iter().any(|a| {
            a.id == cart.account_id && a.is_active && user.account_id.is_none_or(|own| own == a.id)
        })
    }

    fn store_member(&self, cart: &WebCart) -> bool {
        self.stores
            .iter()
            .any(|s| s.id == cart.web_store_id && s.buyer_accounts.contains(&cart.account_id))
    }

    /// Whether a restart starts the session over rather than resuming it: it failed, it
    /// expired, or it is at no State it can go on from (empty, or no step of the template).
    fn starts_over(&self, cart: &MCart, session: &MSession, now: DateTime<Utc>) -> bool {
        let resumable = session
            .state
            .is_some_and(|s| s != SessionState::Error && self.flow.position(s).is_some());
        !resumable || self.expired(cart, session, now)
    }

    /// Whether a session has outlived its store's CheckoutTimeToLive (in minutes,
    /// none never expires, at most a year). A session without a CreatedDate never expires.
    fn expired(&self, cart: &MCart, session: &MSession, now: DateTime<Utc>) -> bool {
        let ttl = self
            .store_of(cart)
            .and_then(|store| store.checkout_time_to_live);
        match (session.created, ttl) {
            (Some(created), Some(minutes)) => {
                now >= created + Duration::minutes(i64::from(minutes.min(525_600)))
            }
            _ => false,
        }
    }

    /// Accept or refuse, in cartflow's requirement order: permission, the ID, edit access,
    /// the account, store membership, then the action's own rules.
    fn decide(
        &self,
        call: &Call,
        actor: Option<SfId>,
        named: Option<SfId>,
        now: DateTime<Utc>,
    ) -> Result<Plan, Why> {
        let user = self.user(actor).ok_or(Why::CannotInvoke)?;
        let may_invoke = [
            Permission::B2BBuyer,
            Permission::B2BCommerceIntegrator,
            Permission::ModifyAllData,
        ]
        .iter()
        .any(|p| user.permissions.contains(p));
        if !may_invoke {
            return Err(Why::CannotInvoke);
        }
        let (c, s) = match call {
            Call::Update { .. } | Call::Advance { .. } => {
                let (c, s) = self.session_index(named).ok_or(Why::InvalidSessionId)?;
                (c, Some(s))
            }
            _ => (self.cart_index(named).ok_or(Why::InvalidCartId)?, None),
        };
        let cart = &self.carts[c];
        // A cart the caller cannot see at all is answered as one that does not exist.
        if !self.can_see(user, &cart.record) {
            return Err(match call {
                Call::Update { .. } | Call::Advance { .. } => Why::InvalidSessionId,
                _ => Why::InvalidCartId,
            });
        }
        if !self.can_edit(user, &cart.record) {
            return Err(Why::NoEditAccess);
        }
        if !self.account_valid(user, &cart.record) {
            return Err(Why::AccountInvalid);
        }
        if !self.store_member(&cart.record) {
            return Err(Why::NotStoreMember);
        }
        let active = cart.active().map(|i| &cart.sessions[i]);
        match call {
            Call::Start { initial, .. } => {
                if !matches!(cart.status, CartStatus::Active | CartStatus::Checkout) {
                    return Err(Why::CartStatus);
                }
                // A time-to-live of 0 disables checkout.
                if self
                    .store_of(cart)
                    .is_some_and(|s| s.checkout_time_to_live == Some(0))
                {
                    return Err(Why::CheckoutDisabled);
                }
                // A restart would leave a checkout whose order is activated.
                if active.is_some_and(|s| activated(cart, s) && self.starts_over(cart, s, now)) {
                    return Err(Why::OrderActivated);
                }
                if active.is_some_and(|s| s.processing) {
                    return Err(Why::CheckoutInProgress);
                }
                if initial
                    .as_deref()
                    .is_some_and(|i| i != self.flow.entry().as_str())
                {
                    return Err(Why::InitialState);
                }
                Ok(Plan::Start { cart: c })
            }
            Call::Update { next: to, exp, .. } | Call::Advance { state: to, exp, .. } => {
                let s = s.expect("a session-addressed call");
                let session = &cart.sessions[s];
                if matches!(cart.status, CartStatus::Closed | CartStatus::Processing) {
                    return Err(Why::CartStatus);
                }
                // The step into Complete closes the cart, and only a cart in checkout can be
                // closed by its checkout (the table's one row: Checkout -> Closed).
                if call.kind() == Kind::Close && cart.status != CartStatus::Checkout {
                    return Err(Why::CartStatus);
                }
                if session.archived {
                    return Err(Why::NoActiveSession);
                }
                // The last screen is not bound by the time-to-live: a checkout whose order
                // is activated must always be able to complete.
                if call.kind() != Kind::Close && self.expired(cart, session, now) {
                    return Err(Why::Expired);
                }
                let state = session.state.ok_or(Why::EmptyState)?;
                if session.processing {
                    return Err(Why::Locked);
                }
                let update = matches!(call, Call::Update { .. });
                // Update Checkout Session is a compare-and-set: it succeeds only when the
                // State equals expCurrentState. A screen step of the template may skip the check.
                let exp_matches = match exp.as_deref() {
                    Some(e) => e == state.as_str(),
                    None => !update,
                };
                if !exp_matches {
                    return Err(Why::ExpectedStateMismatch);
                }
                let step_fits = match self.flow.stage_of(state) {
                    Some(Stage::Async(_) | Stage::Payment | Stage::Custom(_)) => update,
                    Some(Stage::Entry | Stage::Screen) => !update,
                    _ => false,
                };
                let next = self
                    .flow
                    .next_of(state)
                    .filter(|n| step_fits && n.as_str() == to);
                match next {
                    None => Err(Why::NotNextStep),
                    Some(_) if update => Ok(Plan::Update {
                        cart: c,
                        session: s,
                    }),
                    // A screen moves on only with every input it collects.
                    Some(_) if !self.screen_inputs_given(cart, state) => Err(Why::InputMissing),
                    Some(to) => Ok(Plan::Advance {
                        cart: c,
                        session: s,
                        to,
                    }),
                }
            }
            Call::Run { action, .. } => self.decide_work(c, Work::Step(*action), now),
            Call::CartToOrder { .. } => self.decide_work(c, Work::Step(Action::CartToOrder), now),
            Call::Authorize { .. } => self.decide_work(c, Work::Payment, now),
            Call::Custom { action, .. } => self.decide_work(c, Work::Custom(*action), now),
            Call::Activate { status, .. } => {
                if status.as_deref() != Some(ACTIVATED) {
                    return Err(Why::OrderStatus);
                }
                self.decide_work(c, Work::Step(Action::ActivateOrder), now)
            }
            Call::Details { details, .. } => {
                if cart.status != CartStatus::Checkout {
                    return Err(Why::CartStatus);
                }
                let session = active.ok_or(Why::NoActiveSession)?;
                if self.expired(cart, session, now) {
                    return Err(Why::Expired);
                }
                if session.processing {
                    return Err(Why::Locked);
                }
                if !self.takes_input(session.state) {
                    return Err(Why::InputAfterOrder);
                }
                if let Some(method) = &details.delivery_method_id
                    && !offered(&cart.record, method)
                {
                    return Err(Why::MethodNotOffered);
                }
                Ok(Plan::Details { cart: c })
            }
            Call::DeliveryMethod { method, .. } => {
                // The async actions' shared rules, on an unlocked session before the order.
                if cart.status != CartStatus::Checkout {
                    return Err(Why::CartStatus);
                }
                let session = active.ok_or(Why::NoActiveSession)?;
                if self.expired(cart, session, now) {
                    return Err(Why::Expired);
                }
                if cart.op_active() {
                    return Err(Why::OperationActive);
                }
                if session.processing {
                    return Err(Why::Locked);
                }
                if !self.takes_input(session.state) {
                    return Err(Why::InputAfterOrder);
                }
                if !offered(&cart.record, method) {
                    return Err(Why::MethodNotOffered);
                }
                Ok(Plan::Details { cart: c })
            }
            Call::Edit { edit, .. } => {
                // Lines change on an open cart, or one in checkout, which leaves it (documented).
                if !matches!(cart.status, CartStatus::Active | CartStatus::Checkout) {
                    return Err(Why::CartStatus);
                }
                if active.is_some_and(|s| activated(cart, s)) {
                    return Err(Why::OrderActivated);
                }
                let positive = |q: &Decimal| *q > Decimal::ZERO;
                let valid = match edit {
                    CartEdit::AddItem { sku, quantity } => {
                        !sku.trim().is_empty() && positive(quantity)
                    }
                    // The delivery charge follows the chosen method: no buyer edits it.
                    CartEdit::SetQuantity { item_id, quantity } => {
                        product_line(cart, item_id) && positive(quantity)
                    }
                    CartEdit::RemoveItem { item_id } => product_line(cart, item_id),
                };
                if !valid {
                    return Err(Why::InvalidEdit);
                }
                Ok(Plan::Edit { cart: c })
            }
            Call::Cancel { .. } => {
                if cart.status == CartStatus::Closed {
                    return Err(Why::CartStatus);
                }
                if active.is_some_and(|s| activated(cart, s)) {
                    return Err(Why::OrderActivated);
                }
                Ok(Plan::Cancel { cart: c })
            }
        }
    }

    /// Whether the buyer's input is taken at `state`: before the order exists (the steps the
    /// template walks up to the one that makes it), at Error, and at no State (or one the
    /// template lacks, read as none). Afterwards the order is what the buyer pays for.
    fn takes_input(&self, state: Option<SessionState>) -> bool {
        match state {
            None | Some(SessionState::Error) => true,
            Some(state) if self.flow.position(state).is_none() => true,
            Some(state) => self
                .table
                .template()
                .before_order()
                .iter()
                .any(|step| step.state == state),
        }
    }

    /// Whether the cart holds every input the screen at `state` collects.
    fn screen_inputs_given(&self, cart: &MCart, state: SessionState) -> bool {
        self.table.template().step(state).is_none_or(|step| {
            step.collects
                .iter()
                .all(|input| collected(&cart.record, *input))
        })
    }

    /// Whether `call` repeats the async step its cart's session has just completed (the
    /// session is unlocked again, so the repeat is refused).
    fn repeats_completed_step(&self, call: &Call, named: Option<SfId>) -> bool {
        let work = match call {
            Call::Run { action, .. } => Work::Step(*action),
            Call::CartToOrder { .. } => Work::Step(Action::CartToOrder),
            Call::Authorize { .. } => Work::Payment,
            Call::Custom { action, .. } => Work::Custom(*action),
            Call::Activate { .. } => Work::Step(Action::ActivateOrder),
            _ => return false,
        };
        let Some(cart) = self.cart_index(named).map(|c| &self.carts[c]) else {
            return false;
        };
        let Some(session) = cart.active().map(|i| &cart.sessions[i]) else {
            return false;
        };
        !session.processing
            && cart.ops.iter().any(|o| {
                Some(o.id) == session.op && o.work == work && o.status == OperationStatus::Complete
            })
    }

    /// The documented rules every async step shares (cart in Checkout, a locked session at this
    /// step with its NextState, one integration at a time), and activation's own (a
    /// Draft order on the session, no Error-level output).
    fn decide_work(&self, c: usize, work: Work, now: DateTime<Utc>) -> Result<Plan, Why> {
        let cart = &self.carts[c];
        if cart.status != CartStatus::Checkout {
            return Err(Why::CartStatus);
        }
        let session = cart
            .active()
            .map(|i| &cart.sessions[i])
            .ok_or(Why::NoActiveSession)?;
        if self.expired(cart, session, now) {
            return Err(Why::Expired);
        }
        let state = session.state.ok_or(Why::EmptyState)?;
        // A step repeated after its operation completed finds the session unlocked: refused
        // like any call on an unlocked session (the documented rule), never a second run.
        if !session.processing {
            return Err(Why::NotLocked);
        }
        if self.flow.step_of(work) != Some(state) {
            return Err(Why::WrongStep);
        }
        if session.next != self.flow.next_of(state) {
            return Err(Why::WrongNextState);
        }
        if work == Work::Step(Action::ActivateOrder) {
            let draft = cart
                .order(session.order)
                .is_some_and(|o| o.status == OrderStatus::Draft);
            if !draft {
                return Err(Why::NoDraftOrder);
            }
            if cart.outputs.iter().any(MOutput::blocks) {
                return Err(Why::ErrorOutputs);
            }
        }
        // No step may run on a checkout whose order is already activated (only imported
        // data can put one at an earlier step): never a second order.
        if work != Work::Step(Action::ActivateOrder) && activated(cart, session) {
            return Err(Why::OrderActivated);
        }
        if cart.op_active() {
            return Err(Why::OperationActive);
        }
        Ok(Plan::Work { cart: c, work })
    }

    /// Applies an accepted plan, checking the engine's output against it. Returns the
    /// operation an async step created.
    fn apply(
        &mut self,
        plan: Plan,
        call: &Call,
        answer: &Answer,
        now: DateTime<Utc>,
        new_line: Option<SfId>,
    ) -> Result<Option<(usize, SfId)>, String> {
        let Answer::Ok(output) = answer else {
            return Err(format!(
                "the model accepts {plan:?}; the engine answered {answer:?}"
            ));
        };
        let known: BTreeSet<SfId> = self
            .carts
            .iter()
            .flat_map(|c| {
                c.sessions
                    .iter()
                    .map(|s| s.id)
                    .chain(c.ops.iter().map(|o| o.id))
            })
            .collect();
        let fresh = |key: &str| -> Result<SfId, String> {
            match output {
                Some((k, id)) if *k == key => {
                    let id: SfId = id.parse().map_err(|e| format!("output {id}: {e}"))?;
                    if known.contains(&id) {
                        return Err(format!("output {key} {id} is not a new record"));
                    }
                    Ok(id)
                }
                other => Err(format!("expected a new {key}, got {other:?}")),
            }
        };
        let same = |key: &str, expected: SfId| -> Result<(), String> {
            match output {
                Some((k, id)) if *k == key && *id == expected.to_string() => Ok(()),
                other => Err(format!("expected {key} {expected}, got {other:?}")),
            }
        };
        match plan {
            Plan::Start { cart } => {
                let created = {
                    let c = &self.carts[cart];
                    match c.active() {
                        // Resume a live checkout; a failed, expired or empty one starts over.
                        Some(i) if !self.starts_over(c, &c.sessions[i], now) => {
                            same("requestId", c.sessions[i].id)?;
                            None
                        }
                        _ => Some(fresh("requestId")?),
                    }
                };
                let c = &mut self.carts[cart];
                c.status = CartStatus::Checkout;
                if let Some(new) = created {
                    // Only a new checkout starts without messages; a resumed one keeps them.
                    c.outputs.clear();
                    if let Some(i) = c.active() {
                        c.sessions[i].archived = true;
                        c.sessions[i].processing = false;
                    }
                    c.sessions.push(MSession {
                        id: new,
                        state: Some(self.flow.entry()),
                        next: None,
                        processing: false,
                        error: false,
                        archived: false,
                        op: None,
                        order: None,
                        created: Some(now),
                    });
                }
            }
            Plan::Update { cart, session } => {
                let s = &mut self.carts[cart].sessions[session];
                same("requestId", s.id)?;
                s.next = s.state.and_then(|state| self.flow.next_of(state));
                s.processing = true;
            }
            Plan::Advance { cart, session, to } => {
                let c = &mut self.carts[cart];
                let s = &mut c.sessions[session];
                same("requestId", s.id)?;
                s.state = Some(to);
                // Order Confirmation closes the cart; the finished session is archived.
                if to == SessionState::Complete {
                    s.archived = true;
                    c.status = CartStatus::Closed;
                }
            }
            Plan::Work { cart, work } => {
                let op = fresh("backgroundOperationId")?;
                let c = &mut self.carts[cart];
                let i = c.active().expect("decide saw an active session");
                c.ops.push(MOp {
                    id: op,
                    work,
                    session: c.sessions[i].id,
                    status: OperationStatus::New,
                    submitted: now,
                    attempt: 0,
                    expires_at: None,
                });
                c.sessions[i].op = Some(op);
                return Ok(Some((cart, op)));
            }
            Plan::Details { cart } => {
                let c = &self.carts[cart];
                if matches!(call, Call::DeliveryMethod { .. }) {
                    // setCheckoutDeliveryMethod answers no output values.
                    if output.is_some() {
                        return Err(format!("setCheckoutDeliveryMethod answered {output:?}"));
                    }
                } else {
                    let session = c.active().map(|i| c.sessions[i].id);
                    same("requestId", session.expect("decide saw an active session"))?;
                }
                self.take_inputs(cart, call, new_line)?;
            }
            Plan::Edit { cart } => {
                if output.is_some() {
                    return Err(format!("an edit answers no output, got {output:?}"));
                }
                let Call::Edit { edit, .. } = call else {
                    return Err(format!("an edit plan for {call:?}"));
                };
                let c = &mut self.carts[cart];
                // Cancel "runs whenever the buyer edits a cart that is in checkout".
                if c.status == CartStatus::Checkout {
                    cancel_checkout(c);
                }
                // Every amount and checkout choice depended on the old lines.
                let record = &mut c.record;
                record.delivery_options.clear();
                record.delivery_method_id = None;
                record.payment_authorization_id = None;
                record.authorized_amount = None;
                record.total_product_amount = None;
                record.total_adjustment_amount = None;
                record.total_charge_amount = None;
                record.total_tax_amount = None;
                record.grand_total_amount = None;
                // ... and so did every line's amounts; the charge line goes with the method.
                let edited = match edit {
                    CartEdit::SetQuantity { item_id, .. } | CartEdit::RemoveItem { item_id } => {
                        line_of(c, item_id).map(|k| c.items[k].id)
                    }
                    CartEdit::AddItem { .. } => None,
                };
                c.items.retain(|l| l.item_type != CartItemType::Charge);
                for line in &mut c.items {
                    line.list_price = None;
                    line.sales_price = None;
                    line.total_price = None;
                    line.adjustment_amount = None;
                    line.tax_amount = None;
                }
                let edited = edited.and_then(|id| c.items.iter().position(|l| l.id == id));
                match edit {
                    CartEdit::AddItem { sku, quantity } => {
                        let id = new_line.ok_or("an added line without an ID")?;
                        let sku = Some(sku.trim().to_owned());
                        c.items
                            .push(CartItem::product(id, c.record.id, sku, *quantity));
                    }
                    CartEdit::SetQuantity { quantity, .. } => {
                        if let Some(k) = edited {
                            c.items[k].quantity = *quantity;
                        }
                    }
                    CartEdit::RemoveItem { .. } => {
                        if let Some(k) = edited {
                            c.items.remove(k);
                        }
                    }
                }
            }
            Plan::Cancel { cart } => {
                if output.is_some() {
                    return Err(format!("cancel answers no output, got {output:?}"));
                }
                cancel_checkout(&mut self.carts[cart]);
            }
        }
        Ok(None)
    }

    /// The buyer's input onto the cart: each field given that differs is a changed input;
    /// what was computed from a changed input's old value is dropped, the charge line follows
    /// the chosen method, the totals follow the lines, and a session that passed a step
    /// consuming a changed input goes back to the earliest step the table's rows of those
    /// changes lead to (the event fired is that change).
    fn take_inputs(
        &mut self,
        cart: usize,
        call: &Call,
        new_line: Option<SfId>,
    ) -> Result<(), String> {
        let c = &mut self.carts[cart];
        let mut record = c.record.clone();
        let mut changed = BTreeSet::new();
        let mut give = |field: &mut Option<String>, value: Option<&String>, input| {
            if let Some(value) = value.filter(|v| field.as_ref() != Some(*v)) {
                *field = Some(value.clone());
                changed.insert(input);
            }
        };
        let (address, method, token) = match call {
            Call::Details { details, .. } => (
                details.deliver_to.as_ref(),
                details.delivery_method_id.as_ref(),
                details.payment_token.as_ref(),
            ),
            Call::DeliveryMethod { method, .. } => (None, Some(method), None),
            _ => return Err(format!("an input plan for {call:?}")),
        };
        give(
            &mut record.delivery_method_id,
            method,
            StepInput::DeliveryMethod,
        );
        give(&mut record.payment_token, token, StepInput::Payment);
        if let Some(address) = address.filter(|a| record.deliver_to.as_ref() != Some(*a)) {
            record.deliver_to = Some(address.clone());
            changed.insert(StepInput::DeliveryAddress);
        }
        if changed.is_empty() {
            return Ok(());
        }
        let template = self.table.template();
        for input in &changed {
            drop_computed(template, *input, &mut record, &mut c.items);
        }
        follow_method(&record, &mut c.items, new_line)?;
        model_total(&mut record, &c.items);
        c.record = record;
        let Some(i) = c.active() else {
            return Ok(());
        };
        let session = &mut c.sessions[i];
        let known = session.state.filter(|s| self.table.knows_state(*s));
        let from = Node::Session(SessionNode::At(known, Phase::Open));
        let position = |to: &Node| match to {
            Node::Session(SessionNode::At(Some(state), _)) => self.flow.position(*state),
            _ => None,
        };
        let back = changed
            .iter()
            .filter_map(|input| {
                let row = self.table.find(Event::Change(*input), from)?;
                Some((*input, row.to))
            })
            .min_by_key(|(_, to)| position(to));
        if let Some((input, Node::Session(SessionNode::At(state, _)))) = back {
            session.state = state;
            self.fired = Some(Event::Change(input));
        }
        Ok(())
    }

    /// The New operation a worker must claim next: the oldest, of a cart that is not Closed
    /// (a Closed cart is final: not even a worker may change it).
    fn next_operation(&self) -> Option<(usize, SfId)> {
        self.carts
            .iter()
            .enumerate()
            .filter(|(_, cart)| cart.status != CartStatus::Closed)
            .flat_map(|(c, cart)| cart.ops.iter().map(move |o| (c, o)))
            .filter(|(_, o)| o.status == OperationStatus::New)
            .min_by_key(|(_, o)| (o.submitted, o.id))
            .map(|(c, o)| (c, o.id))
    }

    /// What the operation will come to, with what it computed: the answer of the provider
    /// that computes amounts (asked on the model's cart), or [`Model::outcome`].
    fn predict(&self, cart: usize, op: SfId, behaviour: Behaviour) -> (Outcome, Option<CartPatch>) {
        let c = &self.carts[cart];
        let Some(o) = c.ops.iter().find(|o| o.id == op) else {
            return (Outcome::System, None);
        };
        let store = c.record.web_store_id;
        let computing = o
            .work
            .provider_kind()
            .filter(|k| !matches!(k, ProviderKind::Inventory | ProviderKind::Custom));
        let provider = computing.map(|kind| self.providers.provider(store, kind));
        let Some(provider) = provider.filter(|p| !matches!(p, Provider::Internal)) else {
            let outcome = self.outcome(cart, op, behaviour);
            if o.work == Work::Payment && outcome == Outcome::Passed {
                return authorization(c, o);
            }
            return (outcome, None);
        };
        let session = c.sessions.iter().find(|s| s.id == o.session);
        let order = session
            .and_then(|s| c.order(s.order))
            .filter(|_| o.work == Work::Payment);
        let request = IntegrationRequest {
            operation_id: o.id,
            cart: WebCart {
                status: c.status,
                ..c.record.clone()
            },
            items: c.items.clone().into(),
            order: order.map(|order| order.record(&c.record)),
        };
        match provider.run(&request) {
            // A payment passes only on an authorisation of the order's grand total.
            Ok(Verdict::Passed) if o.work == Work::Payment => (Outcome::System, None),
            Ok(Verdict::Passed) => (Outcome::Passed, None),
            Ok(Verdict::Updated(patch)) => {
                let total = order.and_then(|o| o.grand_total);
                let unreferenced = patch
                    .payment_authorization_id
                    .as_deref()
                    .is_none_or(|r| r.trim().is_empty());
                let unusable = o.work == Work::Payment
                    && (unreferenced || total.is_none() || patch.authorized_amount != total);
                if unusable {
                    (Outcome::System, None)
                } else {
                    (Outcome::Passed, Some(patch))
                }
            }
            Ok(Verdict::Failed(messages)) if messages.is_empty() => (Outcome::System, None),
            Ok(Verdict::Failed(messages)) => (Outcome::Failed(messages.len()), None),
            Err(_) => (Outcome::System, None),
        }
    }

    /// What the operation will come to: its provider's answer (the documented check for the stock
    /// table), or for the order steps the platform's own work.
    fn outcome(&self, cart: usize, op: SfId, behaviour: Behaviour) -> Outcome {
        let c = &self.carts[cart];
        let Some(op) = c.ops.iter().find(|o| o.id == op) else {
            return Outcome::System;
        };
        let (_, inventory, payment) = self
            .mappings
            .iter()
            .find(|(store, _, _)| *store == c.record.web_store_id)
            .copied()
            .unwrap_or((c.record.web_store_id, Mapping::Internal, Payment::Unmapped));
        let scripted = || match behaviour {
            Behaviour::Pass => Outcome::Passed,
            Behaviour::Fail(n) => Outcome::Failed(usize::from(n)),
            Behaviour::FailSilently | Behaviour::Error | Behaviour::Panic => Outcome::System,
        };
        match op.work {
            // An order of no lines cannot be made.
            Work::Step(Action::CartToOrder) if c.items.is_empty() => Outcome::Failed(1),
            // Nor one of a cart offered delivery methods without an offered one chosen.
            Work::Step(Action::CartToOrder)
                if !c.record.delivery_options.is_empty()
                    && !c
                        .record
                        .delivery_method_id
                        .as_deref()
                        .is_some_and(|m| offered(&c.record, m)) =>
            {
                Outcome::Failed(1)
            }
            Work::Step(Action::CartToOrder) => Outcome::Passed,
            // Activation needs its Draft order, and no Error output, when it runs, not
            // only when it was requested: an imported queue may hold one that was never checked.
            Work::Step(Action::ActivateOrder) => {
                let session = c.sessions.iter().find(|s| s.id == op.session);
                let draft = session
                    .and_then(|s| c.order(s.order))
                    .is_some_and(|o| o.status == OrderStatus::Draft);
                if draft && !c.outputs.iter().any(MOutput::blocks) {
                    Outcome::Passed
                } else {
                    Outcome::System
                }
            }
            // No order is placed on a payment nobody authorised.
            Work::Payment => match payment {
                Payment::Unmapped | Payment::Decline => Outcome::Failed(1),
                Payment::Approve => Outcome::Passed,
                Payment::Scripted => scripted(),
                // Asked in `predict`; here only when it has nothing to authorise.
                Payment::Gateway => Outcome::Failed(1),
            },
            Work::Step(Action::CheckCartInventory) => match inventory {
                Mapping::Internal => Outcome::Passed,
                Mapping::Scripted => scripted(),
                Mapping::Stock => stock_outcome(&c.items),
            },
            Work::Custom(_) => scripted(),
            Work::Step(_) => Outcome::Passed,
        }
    }

    /// A worker claims the New operation `op` at `now`: Running, one more attempt, and a lease
    /// of [`LEASE_MS`] from now.
    fn claim(&mut self, cart: usize, op: SfId, now: DateTime<Utc>) {
        if let Some(o) = self.carts[cart].ops.iter_mut().find(|o| o.id == op) {
            o.status = OperationStatus::Running;
            o.attempt += 1;
            o.expires_at = Some(now + Duration::milliseconds(LEASE_MS as i64));
        }
    }

    /// Applies a worker's run of `op` (success moves State to NextState, failure
    /// to Error with outputs; either way the lock is released). `order` is the ID of the order
    /// a passed Cart To Order made.
    /// `patch` is what a passed provider computed, and `new_line` the charge line it made.
    fn finish(
        &mut self,
        cart: usize,
        op: SfId,
        (outcome, patch): (Outcome, Option<&CartPatch>),
        order: Option<SfId>,
        new_line: Option<SfId>,
    ) -> Result<(), String> {
        let c = &mut self.carts[cart];
        let status = match outcome {
            Outcome::Passed => OperationStatus::Complete,
            _ => OperationStatus::Error,
        };
        let Some(o) = c.ops.iter_mut().find(|o| o.id == op) else {
            return Ok(());
        };
        o.status = status;
        // A finished operation holds no lease.
        o.expires_at = None;
        let work = o.work;
        let Some(i) = c
            .sessions
            .iter()
            .position(|s| s.op == Some(op) && !s.archived)
        else {
            return Ok(());
        };
        if let (Outcome::Passed, Some(patch)) = (outcome, patch) {
            apply_answer(
                &mut c.record,
                &mut c.items,
                patch,
                work.provider_kind(),
                new_line,
            )?;
        }
        let s = &mut c.sessions[i];
        s.processing = false;
        match outcome {
            Outcome::Passed => s.state = s.next.take(),
            _ => {
                s.state = Some(SessionState::Error);
                s.next = None;
                s.error = true;
            }
        }
        if outcome == Outcome::Passed {
            match work {
                Work::Step(Action::CartToOrder) => {
                    if let Some(id) = order {
                        s.order = Some(id);
                        let draft = MOrder::draft(id, c);
                        c.orders.push(draft);
                    }
                }
                Work::Step(Action::ActivateOrder) => {
                    let order = s.order;
                    // The order keeps the authorisation its payment step recorded.
                    if let Some(o) = c.orders.iter_mut().find(|o| Some(o.id) == order) {
                        o.status = OrderStatus::Activated;
                        o.summary = true;
                    }
                }
                // The authorisation is the Draft order's PaymentAuthorization at once.
                Work::Payment if c.record.payment_authorization_id.is_some() => {
                    let order = s.order;
                    let authorization = c.record.payment_authorization_id.clone();
                    let authorized = c.record.authorized_amount;
                    if let Some(o) = c.orders.iter_mut().find(|o| Some(o.id) == order) {
                        o.authorization = authorization;
                        o.authorized = authorized;
                    }
                }
                _ => {}
            }
        }
        let (n, output_type) = match outcome {
            Outcome::Passed => (0, OutputType::Other),
            Outcome::Failed(n) => (n, work.output_type()),
            Outcome::System => (1, OutputType::SystemError),
        };
        c.outputs.extend((0..n).map(|_| MOutput {
            level: Level::Error,
            dismissed: false,
            output_type,
        }));
        Ok(())
    }

    /// The model and the store agree on every cart, line, session, operation, output and
    /// order.
    fn compare(&self, data: &DataSet) -> Result<(), String> {
        for cart in &self.carts {
            let id = cart.record.id;
            let stored = data
                .carts
                .iter()
                .find(|c| c.id == id)
                .ok_or_else(|| format!("cart {id} vanished"))?;
            // The Ids of the records the engine keeps inside carts and lines (offered methods,
            // tax rows) are the engine's to mint: `check_held_records` checks them.
            let expected = without_held_records(&WebCart {
                status: cart.status,
                ..cart.record.clone()
            });
            if without_held_records(&WebCart {
                version: 0,
                ..stored.clone()
            }) != expected
            {
                return Err(format!(
                    "cart {id}:\n  model {expected:?}\n  store {stored:?}"
                ));
            }
            let lines: Vec<CartItem> = data
                .items
                .iter()
                .filter(|i| i.cart_id == id)
                .map(without_tax_rows)
                .collect();
            let modelled: Vec<CartItem> = cart.items.iter().map(without_tax_rows).collect();
            if lines.len() != modelled.len() || modelled.iter().any(|i| !lines.contains(i)) {
                return Err(format!("cart {id}: its lines changed"));
            }
            let sessions: BTreeMap<SfId, MSession> = data
                .sessions
                .iter()
                .filter(|s| s.web_cart_id == id)
                .map(|s| (s.id, MSession::of(s)))
                .collect();
            let expected: BTreeMap<SfId, MSession> =
                cart.sessions.iter().map(|s| (s.id, s.clone())).collect();
            if sessions != expected {
                return Err(format!(
                    "cart {id} sessions:\n  model {expected:?}\n  store {sessions:?}"
                ));
            }
            type OpView = (
                OperationStatus,
                String,
                Option<ProviderKind>,
                SfId,
                u32,
                Option<DateTime<Utc>>,
            );
            let ops: BTreeMap<SfId, OpView> = data
                .operations
                .iter()
                .filter(|o| o.cart_id == id)
                .map(|o| {
                    let view = (
                        o.status,
                        o.name.clone(),
                        o.provider_kind,
                        o.checkout_session_id,
                        o.attempt,
                        o.expires_at,
                    );
                    (o.id, view)
                })
                .collect();
            let expected: BTreeMap<SfId, OpView> = cart
                .ops
                .iter()
                .map(|o| {
                    let view = (
                        o.status,
                        o.work.name().to_owned(),
                        o.work.provider_kind(),
                        o.session,
                        o.attempt,
                        o.expires_at,
                    );
                    (o.id, view)
                })
                .collect();
            if ops != expected {
                return Err(format!(
                    "cart {id} operations:\n  model {expected:?}\n  store {ops:?}"
                ));
            }
            let mut outputs: Vec<MOutput> = data
                .validation_outputs
                .iter()
                .filter(|o| o.cart_id == id)
                .map(|o| MOutput {
                    level: o.level,
                    dismissed: o.is_dismissed,
                    output_type: o.output_type,
                })
                .collect();
            outputs.sort();
            let mut expected = cart.outputs.clone();
            expected.sort();
            if outputs != expected {
                return Err(format!(
                    "cart {id} outputs:\n  model {expected:?}\n  store {outputs:?}"
                ));
            }
            let orders: BTreeMap<SfId, MOrder> = data
                .orders
                .iter()
                .filter(|o| o.cart_id == id)
                .map(|o| (o.id, MOrder::of(o)))
                .collect();
            let expected: BTreeMap<SfId, MOrder> =
                cart.orders.iter().map(|o| (o.id, o.clone())).collect();
            if orders != expected {
                return Err(format!(
                    "cart {id} orders:\n  model {expected:?}\n  store {orders:?}"
                ));
            }
        }
        Ok(())
    }
}

/// The cart without the Ids of its offered methods.
fn without_held_records(cart: &WebCart) -> WebCart {
    let mut cart = cart.clone();
    cart.delivery_options.iter_mut().for_each(|o| o.id = None);
    cart
}

/// The line without its tax rows (its `TaxAmount`, their sum, stays).
fn without_tax_rows(line: &CartItem) -> CartItem {
    CartItem {
        taxes: Vec::new(),
        ..line.clone()
    }
}

/// Every record held inside a cart, a line or an order has an Id of its own, is found by it
/// through the store's index, and adds up: a line's tax rows sum to its `TaxAmount`, an
/// order's payment authorisation is of its `AuthorizedAmount`, its delivery group ships by
/// its method.
fn check_held_records(store: &dyn cartflow::Store, data: &DataSet) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    let mut held = |id: SfId, holder: SfId| -> Result<(), String> {
        if !seen.insert(id) {
            return Err(format!("the held Id {id} is used twice"));
        }
        match store.owner_of(&id).map_err(|e| e.to_string())? {
            Some(found) if found == holder => Ok(()),
            found => Err(format!(
                "{id} is held by {holder}, the index says {found:?}"
            )),
        }
    };
    for cart in &data.carts {
        for id in cart.child_ids() {
            held(id, cart.id)?;
        }
    }
    for line in &data.items {
        let sum = line
            .taxes
            .iter()
            .try_fold(None, |total: Option<Decimal>, t| {
                total.unwrap_or_default().checked_add(t.amount).map(Some)
            });
        if !line.taxes.is_empty() && sum != Some(line.tax_amount) {
            return Err(format!(
                "line {}: tax rows {sum:?}, TaxAmount {:?}",
                line.id, line.tax_amount
            ));
        }
        for tax in &line.taxes {
            if tax.cart_item_id != line.id {
                return Err(format!(
                    "tax {} of line {} names {}",
                    tax.id, line.id, tax.cart_item_id
                ));
            }
            held(tax.id, line.id)?;
        }
    }
    for order in &data.orders {
        for id in order.child_ids() {
            held(id, order.id)?;
        }
        if let Some(authorization) = &order.payment_authorization
            && Some(authorization.amount) != order.authorized_amount
        {
            return Err(format!(
                "order {}: authorisation of {}, AuthorizedAmount {:?}",
                order.id, authorization.amount, order.authorized_amount
            ));
        }
        if let Some(group) = &order.delivery_group
            && group.order_delivery_method_id != order.delivery_method_id
        {
            return Err(format!(
                "order {}: its delivery group ships by another method",
                order.id
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The cart's amounts, as the model computes them from WebCart's and CartItem's definitions.

/// Whether `method` is one of the delivery methods the cart was offered.
fn offered(cart: &WebCart, method: &str) -> bool {
    cart.delivery_options
        .iter()
        .any(|o| o.delivery_method_id == method)
}

/// Whether the cart holds `input` where a screen asks for it: an address; a delivery method
/// when options were offered; a payment token unless there is nothing (known) to pay.
fn collected(cart: &WebCart, input: StepInput) -> bool {
    match input {
        StepInput::Lines => true,
        StepInput::DeliveryAddress => cart.deliver_to.is_some(),
        StepInput::DeliveryMethod => {
            cart.delivery_options.is_empty() || cart.delivery_method_id.is_some()
        }
        StepInput::Payment => {
            cart.payment_token.is_some() || cart.grand_total_amount.is_none_or(|t| t.is_zero())
        }
    }
}

/// The sum of `field` over `lines`; `None` when no line has one.
fn sum_of(lines: &[CartItem], field: impl Fn(&CartItem) -> Option<Decimal>) -> Option<Decimal> {
    lines.iter().filter_map(field).reduce(|a, b| a + b)
}

/// The cart's totals from its lines: products and charges are the TotalPrice of the lines of
/// each type, adjustments and taxes every line's; the grand total adds them up, and there is
/// none before the products are priced.
fn model_total(cart: &mut WebCart, lines: &[CartItem]) {
    let of_type = |kind| sum_of(lines, |l| l.total_price.filter(|_| l.item_type == kind));
    let products = of_type(CartItemType::Product);
    let charges = of_type(CartItemType::Charge);
    let adjustments = sum_of(lines, |l| l.adjustment_amount);
    let taxes = sum_of(lines, |l| l.tax_amount);
    cart.total_product_amount = products;
    cart.total_charge_amount = charges;
    cart.total_adjustment_amount = adjustments;
    cart.total_tax_amount = taxes;
    cart.grand_total_amount = products.map(|p| {
        [adjustments, charges, taxes]
            .into_iter()
            .fold(p, |total, part| total + part.unwrap_or_default())
    });
}

/// The fee of the chosen delivery method, when it is one of those offered.
fn chosen_fee(cart: &WebCart) -> Option<Decimal> {
    let method = cart.delivery_method_id.as_ref()?;
    cart.delivery_options
        .iter()
        .find(|o| &o.delivery_method_id == method)
        .map(|o| o.amount)
}

/// The charge line follows the chosen method: the cart's first Charge line, priced at the
/// fee (quantity 1; its adjustment and tax dropped when the fee changes), or a new one of Id
/// `new_line`; no Charge line at all when no offered method is chosen.
fn follow_method(
    cart: &WebCart,
    lines: &mut Vec<CartItem>,
    new_line: Option<SfId>,
) -> Result<(), String> {
    let fee = chosen_fee(cart);
    let first = lines
        .iter()
        .position(|l| l.item_type == CartItemType::Charge);
    let mut k = 0;
    lines.retain(|l| {
        let keep = l.item_type != CartItemType::Charge || (fee.is_some() && Some(k) == first);
        k += 1;
        keep
    });
    let Some(fee) = fee else {
        return Ok(());
    };
    let price = |line: &mut CartItem| {
        line.quantity = Decimal::ONE;
        line.list_price = Some(fee);
        line.sales_price = Some(fee);
        line.total_price = Some(fee);
        line.adjustment_amount = None;
        line.tax_amount = None;
    };
    match lines
        .iter_mut()
        .find(|l| l.item_type == CartItemType::Charge)
    {
        Some(line) if line.total_price == Some(fee) => {}
        Some(line) => price(line),
        None => {
            let id = new_line.ok_or("the chosen method has no charge line")?;
            let mut line = CartItem::product(id, cart.id, None, Decimal::ONE);
            line.item_type = CartItemType::Charge;
            price(&mut line);
            lines.push(line);
        }
    }
    Ok(())
}

/// What the template's steps that consume `input` computed from its old value, dropped: the
/// shipping options, the taxes, the product lines' prices, the promotions, the payment
/// authorisation. The buyer's own choices stay.
fn drop_computed(
    template: &Template,
    input: StepInput,
    cart: &mut WebCart,
    lines: &mut [CartItem],
) {
    for step in template
        .steps
        .iter()
        .filter(|s| s.consumes.contains(&input))
    {
        match step.kind {
            StepKind::Async(Action::CalcCartShipment) => cart.delivery_options.clear(),
            StepKind::Async(Action::CalcCartTaxes) => {
                lines.iter_mut().for_each(|l| l.tax_amount = None);
            }
            StepKind::Async(Action::PriceCart) => {
                for line in lines
                    .iter_mut()
                    .filter(|l| l.item_type == CartItemType::Product)
                {
                    line.list_price = None;
                    line.sales_price = None;
                    line.total_price = None;
                }
            }
            StepKind::Async(Action::CalcCartPromotions) => {
                lines.iter_mut().for_each(|l| l.adjustment_amount = None);
            }
            StepKind::Payment => {
                cart.payment_authorization_id = None;
                cart.authorized_amount = None;
            }
            _ => {}
        }
    }
}

/// A passed provider's answer, as `CartPatch` documents it: the amounts it gives each line
/// (a tax provider's replace every line's tax), the options it offers (the buyer's choice kept
/// when still offered, its charge line following), the authorisation; then the totals.
fn apply_answer(
    cart: &mut WebCart,
    lines: &mut Vec<CartItem>,
    patch: &CartPatch,
    kind: Option<ProviderKind>,
    new_line: Option<SfId>,
) -> Result<(), String> {
    if kind == Some(ProviderKind::Tax) {
        lines.iter_mut().for_each(|l| l.tax_amount = None);
    }
    for amounts in &patch.items {
        let line = lines
            .iter_mut()
            .find(|l| l.id == amounts.item_id)
            .ok_or("a provider priced a line the cart lacks")?;
        let set = |field: &mut Option<Decimal>, value: Option<Decimal>| {
            if value.is_some() {
                *field = value;
            }
        };
        set(&mut line.list_price, amounts.list_price);
        set(&mut line.sales_price, amounts.sales_price);
        set(&mut line.total_price, amounts.total_price);
        set(&mut line.adjustment_amount, amounts.adjustment_amount);
        set(&mut line.tax_amount, amounts.tax_amount);
    }
    if let Some(options) = &patch.delivery_options {
        cart.delivery_options = options.clone();
        if chosen_fee(cart).is_none() {
            cart.delivery_method_id = None;
        }
        follow_method(cart, lines, new_line)?;
    }
    if patch.payment_authorization_id.is_some() {
        cart.payment_authorization_id = patch.payment_authorization_id.clone();
        cart.authorized_amount = patch.authorized_amount;
    }
    model_total(cart, lines);
    Ok(())
}

/// Cancel's documented effects: the session is archived and its operation Canceled; the cart
/// "returns to Active" from Checkout, and from Processing. PendingClosed and PendingDelete
/// belong to the platform's own processes and stay as they are.
fn cancel_checkout(c: &mut MCart) {
    if let Some(i) = c.active() {
        let s = &mut c.sessions[i];
        s.archived = true;
        s.processing = false;
        if let Some(op) = c.ops.iter_mut().find(|o| Some(o.id) == s.op)
            && is_active(op.status)
        {
            op.status = OperationStatus::Canceled;
            op.expires_at = None;
        }
    }
    if matches!(c.status, CartStatus::Checkout | CartStatus::Processing) {
        c.status = CartStatus::Active;
    }
}

/// The cart's line an edit names, by any spelling of its ID.
fn line_of(cart: &MCart, raw: &str) -> Option<usize> {
    let id = SfId::parse(raw).ok()?;
    cart.items.iter().position(|i| i.id == id)
}

/// Whether `raw` names a product line of the cart (the edits' lines).
fn product_line(cart: &MCart, raw: &str) -> bool {
    line_of(cart, raw).is_some_and(|i| cart.items[i].item_type == CartItemType::Product)
}

/// The reference inventory check against the stock table: lines sharing a
/// SKU are summed; a blank SKU, an empty cart, an unknown SKU or short stock fail, one
/// problem each.
fn stock_outcome(items: &[CartItem]) -> Outcome {
    let products: Vec<&CartItem> = items
        .iter()
        .filter(|i| i.item_type == CartItemType::Product)
        .collect();
    if products.is_empty() {
        return Outcome::Failed(1);
    }
    let mut problems = 0;
    let mut wanted: BTreeMap<&str, Decimal> = BTreeMap::new();
    for item in products {
        match item.sku.as_deref().map(str::trim) {
            None | Some("") => problems += 1,
            Some(sku) => *wanted.entry(sku).or_default() += item.quantity,
        }
    }
    for (sku, quantity) in wanted {
        match STOCK.iter().find(|(s, _)| *s == sku) {
            Some((_, units)) if Decimal::from(*units) >= quantity => {}
            _ => problems += 1,
        }
    }
    if problems == 0 {
        Outcome::Passed
    } else {
        Outcome::Failed(problems)
    }
}

// ---------------------------------------------------------------------------------------------
// Random command sequences.

#[derive(Debug, Clone, Copy)]
enum IdForm {
    Full,
    Short,
    LowerSuffix,
}

#[derive(Debug, Clone, Copy)]
enum ActorRef {
    /// The owner of the cart at this index.
    Owner(usize),
    User(usize, IdForm),
    Unknown,
    WrongKind(usize),
    Malformed(usize),
}

#[derive(Debug, Clone, Copy)]
enum CartRef {
    Known(usize, IdForm),
    Unknown,
    WrongKind(usize),
    Malformed(usize),
}

#[derive(Debug, Clone, Copy)]
enum SessionRef {
    /// The active (else the latest) session of the cart at this index.
    Current(usize, IdForm),
    Archived(usize, usize),
    Unknown,
    WrongKind(usize),
    Malformed(usize),
}

/// A State input: the declared next one, the current one, any State, or not a State at all.
#[derive(Debug, Clone, Copy)]
enum StateChoice {
    Next,
    Current,
    Any(usize),
    Garbage(usize),
}

#[derive(Debug, Clone, Copy)]
enum ExpChoice {
    Omitted,
    Current,
    Any(usize),
    Garbage(usize),
}

/// How the scripted provider answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Pass,
    Fail(u8),
    FailSilently,
    Error,
    Panic,
}

/// Which order step an `Order` step calls.
#[derive(Debug, Clone, Copy)]
enum OrderCall {
    CartToOrder,
    Authorize,
    Activate,
}

/// The orderStatus input of an activation.
#[derive(Debug, Clone, Copy)]
enum StatusChoice {
    Activated,
    Draft,
    Lowercase,
    Omitted,
}

/// The buyer input of a screen: each field left alone, or given.
#[derive(Debug, Clone, Copy)]
struct DetailsChoice {
    /// 0 none, else one of the addresses (`address_of`).
    address: u8,
    /// 0 none, 1-2 an offered option (when the cart has options), 3 one nobody offered.
    method: u8,
    /// 0 none, 1 the issued token, 2 a blank one, 3 one the gateway declines.
    token: u8,
}

/// A line an edit names.
#[derive(Debug, Clone, Copy)]
enum LineRef {
    /// The cart's own line at this index.
    Own(usize),
    /// A line of another cart.
    Foreign,
    Malformed,
}

/// A change to a cart's lines; quantities may be zero or negative, SKUs blank.
#[derive(Debug, Clone, Copy)]
enum EditChoice {
    Add { sku: usize, quantity: i8 },
    SetQuantity { line: LineRef, quantity: i8 },
    Remove { line: LineRef },
}

/// SKUs an added line may have; the engine trims them.
const ADDED_SKUS: [&str; 5] = ["A", " B ", "Z", "", "  "];

#[derive(Debug, Clone)]
enum Step {
    /// The command the checkout flow would issue next for the cart at this index.
    Hub {
        cart: usize,
        salt: u16,
    },
    /// `count` hub steps in a row whose providers all pass: a buyer who gets far.
    Drive {
        cart: usize,
        salt: u16,
        count: u8,
    },
    Start {
        actor: ActorRef,
        cart: CartRef,
        initial: ExpChoice,
        rest: bool,
    },
    Update {
        actor: ActorRef,
        session: SessionRef,
        next: StateChoice,
        exp: ExpChoice,
        rest: bool,
    },
    Advance {
        actor: ActorRef,
        session: SessionRef,
        state: StateChoice,
        exp: ExpChoice,
    },
    Run {
        actor: ActorRef,
        action: usize,
        cart: CartRef,
        rest: bool,
    },
    Order {
        actor: ActorRef,
        call: OrderCall,
        cart: CartRef,
        status: StatusChoice,
        run_async: bool,
        rest: bool,
    },
    Details {
        actor: ActorRef,
        cart: CartRef,
        details: DetailsChoice,
    },
    /// `setCheckoutDeliveryMethod`: `method` 0-2 an offered option (when there are some), 3 one
    /// nobody offered, 4 none given.
    DeliveryMethod {
        actor: ActorRef,
        cart: CartRef,
        method: u8,
        rest: bool,
    },
    Edit {
        actor: ActorRef,
        cart: CartRef,
        edit: EditChoice,
    },
    Cancel {
        actor: ActorRef,
        cart: CartRef,
        rest: bool,
    },
    Worker(Behaviour),
    /// Time passes, in minutes.
    Wait(u32),
}

/// Bits of a hub step's salt.
const SALT_REST: u16 = 1;
/// At an Error session: cancel rather than restart.
const SALT_CANCEL_ON_ERROR: u16 = 1 << 1;
/// Bits 2-5 pick the provider's answer, bits 6-7 both set double-click a running step.
const SALT_BEHAVIOUR: u16 = 0b1111 << 2;
const SALT_DOUBLE_CLICK: u16 = 0b11 << 6;
/// Run the order steps inside the call (`runAsync` false).
const SALT_INLINE: u16 = 1 << 8;
/// Fill in every buyer input the cart lacks at a screen, not only what the screen collects.
const SALT_DETAILS: u16 = 1 << 9;
/// Choose the delivery method by `setCheckoutDeliveryMethod` rather than a screen's input.
const SALT_CHOOSE: u16 = 1 << 10;
/// All three set: the buyer changes an input (bits 13-15 say which) wherever the checkout is.
const SALT_CHANGE: u16 = 0b111 << 10;
/// Both set (without `SALT_DETAILS`): the buyer moves on from a screen without the input
/// it collects.
const SALT_SKIP_INPUT: u16 = 0b11 << 13;

const GARBAGE: [&str; 4] = ["", "inventory", "Nonsense", "Start "];

fn id_form() -> impl Strategy<Value = IdForm> {
    prop_oneof![
        4 => Just(IdForm::Full),
        1 => Just(IdForm::Short),
        1 => Just(IdForm::LowerSuffix),
    ]
}

fn actor_ref() -> impl Strategy<Value = ActorRef> {
    prop_oneof![
        8 => (0usize..4).prop_map(ActorRef::Owner),
        4 => (0usize..5, id_form()).prop_map(|(u, f)| ActorRef::User(u, f)),
        1 => Just(ActorRef::Unknown),
        1 => (0usize..3).prop_map(ActorRef::WrongKind),
        1 => (0usize..5).prop_map(ActorRef::Malformed),
    ]
}

fn cart_ref() -> impl Strategy<Value = CartRef> {
    prop_oneof![
        10 => (0usize..4, id_form()).prop_map(|(c, f)| CartRef::Known(c, f)),
        1 => Just(CartRef::Unknown),
        1 => (0usize..3).prop_map(CartRef::WrongKind),
        1 => (0usize..5).prop_map(CartRef::Malformed),
    ]
}

fn session_ref() -> impl Strategy<Value = SessionRef> {
    prop_oneof![
        10 => (0usize..4, id_form()).prop_map(|(c, f)| SessionRef::Current(c, f)),
        2 => (0usize..4, 0usize..3).prop_map(|(c, k)| SessionRef::Archived(c, k)),
        1 => Just(SessionRef::Unknown),
        1 => (0usize..3).prop_map(SessionRef::WrongKind),
        1 => (0usize..5).prop_map(SessionRef::Malformed),
    ]
}

fn state_choice() -> impl Strategy<Value = StateChoice> {
    prop_oneof![
        8 => Just(StateChoice::Next),
        1 => Just(StateChoice::Current),
        2 => (0usize..48).prop_map(StateChoice::Any),
        1 => (0usize..4).prop_map(StateChoice::Garbage),
    ]
}

fn exp_choice() -> impl Strategy<Value = ExpChoice> {
    prop_oneof![
        2 => Just(ExpChoice::Omitted),
        8 => Just(ExpChoice::Current),
        1 => (0usize..48).prop_map(ExpChoice::Any),
        1 => (0usize..4).prop_map(ExpChoice::Garbage),
    ]
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        5 => Just(Behaviour::Pass),
        2 => (1u8..=3).prop_map(Behaviour::Fail),
        1 => Just(Behaviour::FailSilently),
        1 => Just(Behaviour::Error),
        1 => Just(Behaviour::Panic),
    ]
}

fn behaviour_of(salt: u16) -> Behaviour {
    match ((salt & SALT_BEHAVIOUR) >> 2) % 10 {
        0..=4 => Behaviour::Pass,
        5 => Behaviour::Fail(1),
        6 => Behaviour::Fail(3),
        7 => Behaviour::FailSilently,
        8 => Behaviour::Error,
        _ => Behaviour::Panic,
    }
}

fn order_call() -> impl Strategy<Value = OrderCall> {
    prop_oneof![
        Just(OrderCall::CartToOrder),
        Just(OrderCall::Authorize),
        Just(OrderCall::Activate),
    ]
}

fn status_choice() -> impl Strategy<Value = StatusChoice> {
    prop_oneof![
        6 => Just(StatusChoice::Activated),
        1 => Just(StatusChoice::Draft),
        1 => Just(StatusChoice::Lowercase),
        1 => Just(StatusChoice::Omitted),
    ]
}

fn details_choice() -> impl Strategy<Value = DetailsChoice> {
    (0u8..4, 0u8..4, 0u8..4).prop_map(|(address, method, token)| DetailsChoice {
        address,
        method,
        token,
    })
}

fn edit_choice() -> impl Strategy<Value = EditChoice> {
    let quantity = prop_oneof![4 => 1i8..5, 1 => -1i8..=0];
    let line = prop_oneof![
        4 => (0usize..5).prop_map(LineRef::Own),
        1 => Just(LineRef::Foreign),
        1 => Just(LineRef::Malformed),
    ];
    prop_oneof![
        (0usize..ADDED_SKUS.len(), quantity.clone())
            .prop_map(|(sku, quantity)| EditChoice::Add { sku, quantity }),
        (line.clone(), quantity)
            .prop_map(|(line, quantity)| EditChoice::SetQuantity { line, quantity }),
        line.prop_map(|line| EditChoice::Remove { line }),
    ]
}

fn wait() -> impl Strategy<Value = u32> {
    prop_oneof![3 => 1u32..60, 1 => 60u32..4_000]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (0usize..4, any::<u16>()).prop_map(|(cart, salt)| Step::Hub { cart, salt }),
        2 => (0usize..4, any::<u16>(), 4u8..24)
            .prop_map(|(cart, salt, count)| Step::Drive { cart, salt, count }),
        2 => (actor_ref(), cart_ref(), exp_choice(), any::<bool>()).prop_map(
            |(actor, cart, initial, rest)| Step::Start { actor, cart, initial, rest }
        ),
        2 => (actor_ref(), session_ref(), state_choice(), exp_choice(), any::<bool>()).prop_map(
            |(actor, session, next, exp, rest)| Step::Update { actor, session, next, exp, rest }
        ),
        2 => (actor_ref(), session_ref(), state_choice(), exp_choice()).prop_map(
            |(actor, session, state, exp)| Step::Advance { actor, session, state, exp }
        ),
        2 => (actor_ref(), 0usize..PROVIDER_ACTIONS.len(), cart_ref(), any::<bool>()).prop_map(
            |(actor, action, cart, rest)| Step::Run { actor, action, cart, rest }
        ),
        2 => (
            actor_ref(),
            order_call(),
            cart_ref(),
            status_choice(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(actor, call, cart, status, run_async, rest)| Step::Order {
                actor,
                call,
                cart,
                status,
                run_async,
                rest,
            }),
        1 => (actor_ref(), cart_ref(), details_choice()).prop_map(
            |(actor, cart, details)| Step::Details { actor, cart, details }
        ),
        1 => (actor_ref(), cart_ref(), 0u8..5, any::<bool>()).prop_map(
            |(actor, cart, method, rest)| Step::DeliveryMethod { actor, cart, method, rest }
        ),
        1 => (actor_ref(), cart_ref(), edit_choice()).prop_map(
            |(actor, cart, edit)| Step::Edit { actor, cart, edit }
        ),
        1 => (actor_ref(), cart_ref(), any::<bool>()).prop_map(
            |(actor, cart, rest)| Step::Cancel { actor, cart, rest }
        ),
        3 => behaviour().prop_map(Step::Worker),
        1 => wait().prop_map(Step::Wait),
    ]
}

/// An ID in one of its accepted spellings.
fn spell(id: SfId, form: IdForm) -> String {
    match form {
        IdForm::Full => id.to_string(),
        IdForm::Short => id.to_15().to_owned(),
        IdForm::LowerSuffix => format!("{}{}", id.to_15(), id.as_str()[15..].to_lowercase()),
    }
}

/// A string that is not a valid ID, built around a real one.
fn malformed(k: usize, real: SfId) -> String {
    let text = real.as_str();
    match k % 5 {
        0 => String::new(),
        1 => "not-an-id".into(),
        2 => text[..14].into(),
        3 => {
            let bad = if &text[15..] == "QQQ" { "RRR" } else { "QQQ" };
            format!("{}{bad}", real.to_15())
        }
        _ => format!("{}é", &text[..14]),
    }
}

// ---------------------------------------------------------------------------------------------
// Custom async steps.
//
// Generated templates hold custom async steps, and the model runs one as any async step (the
// lock, an operation, the outcome of the provider its step names, here the scripted one,
// registered under every custom step's provider name).

/// Registers the scripted provider under the provider name of each custom step of
/// `template`, for every store.
fn register_custom_providers(
    integrations: &mut Integrations,
    stores: impl IntoIterator<Item = SfId>,
    template: &Template,
    scripted: &Scripted,
) {
    for store in stores {
        for (_, step) in template.custom_steps() {
            let name = step.provider.as_deref().unwrap_or_default();
            integrations.set_custom(store, name, Arc::new(scripted.clone()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The engine under test.

/// Where the scripted provider tells that it was called, and waits to be released.
type Gate = (mpsc::Sender<()>, mpsc::Receiver<()>);

/// The scripted provider (inventory and payment): answers as the current step says; may wait
/// at a gate so a test can look at the store while the operation is Running.
#[derive(Clone)]
struct Scripted {
    behaviour: Arc<Mutex<Behaviour>>,
    gate: Arc<Mutex<Option<Gate>>>,
}

impl Scripted {
    fn answer(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        let gate = self.gate.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((entered, release)) = gate {
            let _ = entered.send(());
            let _ = release.recv();
        }
        let behaviour = *self.behaviour.lock().unwrap_or_else(|e| e.into_inner());
        match behaviour {
            Behaviour::Pass => Ok(Verdict::Passed),
            Behaviour::Fail(n) => Ok(Verdict::Failed(
                (0..n)
                    .map(|k| ValidationMessage {
                        level: Level::Error,
                        // The first message is longer than Salesforce stores.
                        message: format!(
                            "problem {k} {}",
                            "x".repeat(if k == 0 { 300 } else { 5 })
                        ),
                        related_entity_id: Some(request.cart.id),
                    })
                    .collect(),
            )),
            Behaviour::FailSilently => Ok(Verdict::Failed(Vec::new())),
            Behaviour::Error => Err(ProviderError("the scripted provider is down".into())),
            Behaviour::Panic => std::panic::panic_any(common::PROVIDER_PANIC),
        }
    }
}

impl InventoryProvider for Scripted {
    fn check_inventory(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        self.answer(request)
    }
}

impl CustomProvider for Scripted {
    fn run_step(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        self.answer(request)
    }
}

impl PaymentProvider for Scripted {
    fn authorize_payment(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        Ok(match self.answer(request)? {
            Verdict::Passed => authorize(request),
            other => other,
        })
    }
}

/// Counts of what a run exercised, for the summary line and the coverage assertions.
#[derive(Debug, Default)]
struct Coverage {
    accepted: BTreeMap<Kind, usize>,
    refused: BTreeMap<(Kind, Why), usize>,
    outcomes: BTreeMap<String, usize>,
    states: BTreeSet<SessionState>,
    /// Named situations the properties were checked in.
    seen: BTreeMap<&'static str, usize>,
    steps: usize,
}

impl Coverage {
    fn note(&mut self, what: &'static str) {
        *self.seen.entry(what).or_default() += 1;
    }

    fn merge(&mut self, other: Coverage) {
        self.steps += other.steps;
        for (k, n) in other.accepted {
            *self.accepted.entry(k).or_default() += n;
        }
        for (k, n) in other.refused {
            *self.refused.entry(k).or_default() += n;
        }
        for (k, n) in other.outcomes {
            *self.outcomes.entry(k).or_default() += n;
        }
        for (k, n) in other.seen {
            *self.seen.entry(k).or_default() += n;
        }
        self.states.extend(other.states);
    }
}

/// One engine over one world, the model beside it, and the checks run after every step.
struct Harness {
    engine: Engine,
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
    scripted: Scripted,
    labels: HashMap<(Machine, String), Node>,
    model: Model,
    /// The sessions the world was imported with: their checkouts did not run every step here.
    imported: BTreeSet<SfId>,
}

/// A step turned into something to run. One lives per step and is matched at once, so the
/// size of the user variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Resolved {
    User {
        actor: String,
        actor_id: Option<SfId>,
        named: Option<SfId>,
        call: Call,
        rest: bool,
    },
    Worker(Behaviour),
    Wait(u32),
}

fn approve(request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
    Ok(authorize(request))
}

/// What the model's passing payment providers ([`approve`], the scripted one) answer: an
/// authorisation of the order's grand total, under the reference the token gateway would use.
fn authorize(request: &IntegrationRequest) -> Verdict {
    Verdict::authorized(
        TokenGateway::authorization_id(&request.operation_id),
        request,
    )
}

/// The model of [`authorize`]'s answer for `o`, once the engine has checked it: an
/// authorisation of the order's grand total, or an unusable answer (a SystemError) when the
/// session has no order with a total.
fn authorization(c: &MCart, o: &MOp) -> (Outcome, Option<CartPatch>) {
    let total = c
        .sessions
        .iter()
        .find(|s| s.id == o.session)
        .and_then(|s| c.order(s.order))
        .and_then(|order| order.grand_total);
    match total {
        None => (Outcome::System, None),
        Some(total) => (
            Outcome::Passed,
            Some(CartPatch {
                payment_authorization_id: Some(TokenGateway::authorization_id(&o.id)),
                authorized_amount: Some(total),
                ..CartPatch::default()
            }),
        ),
    }
}

fn decline(request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
    Ok(Verdict::Failed(vec![ValidationMessage {
        level: Level::Error,
        message: "The card was declined.".into(),
        related_entity_id: Some(request.cart.id),
    }]))
}

impl Harness {
    /// A world checking out with the standard template.
    fn new(spec: &WorldSpec) -> Harness {
        Harness::with_table(spec, TransitionTable::standard())
    }

    /// A world checking out with `table`'s template.
    fn with_table(spec: &WorldSpec, table: TransitionTable) -> Harness {
        common::quiet_provider_panics();
        let (data, model) = build(spec, &table);
        let scripted = Scripted {
            behaviour: Arc::new(Mutex::new(Behaviour::Pass)),
            gate: Arc::new(Mutex::new(None)),
        };
        // The providers that compute amounts are the model's own; the scripted ones are added.
        let mut integrations = model.providers.clone();
        for (store, mapping, payment) in &model.mappings {
            match mapping {
                Mapping::Internal => {}
                Mapping::Stock => {
                    let table = StockTable::new(STOCK.map(|(s, u)| (s, Decimal::from(u))));
                    integrations.set_inventory(*store, Arc::new(table));
                }
                Mapping::Scripted => {
                    integrations.set_inventory(*store, Arc::new(scripted.clone()));
                }
            }
            let provider = match payment {
                Payment::Unmapped | Payment::Gateway => continue,
                Payment::Approve => Provider::Payment(Arc::new(approve)),
                Payment::Decline => Provider::Payment(Arc::new(decline)),
                Payment::Scripted => Provider::Payment(Arc::new(scripted.clone())),
            };
            integrations.set(*store, provider);
        }
        // Every store a cart names, whether or not the world holds it.
        let stores: BTreeSet<SfId> = data.carts.iter().map(|c| c.web_store_id).collect();
        register_custom_providers(&mut integrations, stores, table.template(), &scripted);
        let imported = data.sessions.iter().map(|s| s.id).collect();
        let store = Arc::new(MemoryStore::from_dataset(data).expect("a valid world"));
        let clock = Arc::new(ManualClock::new(epoch()));
        let engine = Engine::new(store.clone())
            .with_ids(Arc::new(SequentialIds::starting_at(FIRST_GENERATED)))
            .with_clock(clock.clone())
            .with_integrations(integrations)
            .with_config(EngineConfig {
                lease_ms: LEASE_MS,
                ..EngineConfig::default()
            })
            .with_table(table);
        let labels = engine
            .table()
            .nodes()
            .into_iter()
            .map(|n| ((n.machine(), n.to_string()), n))
            .collect();
        Harness {
            engine,
            store,
            clock,
            scripted,
            labels,
            model,
            imported,
        }
    }

    fn table(&self) -> &TransitionTable {
        self.engine.table()
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn cart(&self, index: usize) -> &MCart {
        &self.model.carts[index % self.model.carts.len()]
    }

    fn some_session(&self) -> Option<SfId> {
        self.model
            .carts
            .iter()
            .flat_map(|c| c.sessions.iter())
            .map(|s| s.id)
            .next()
    }

    fn actor(&self, actor: ActorRef) -> (String, Option<SfId>) {
        let users = &self.model.users;
        match actor {
            ActorRef::Owner(c) => {
                let owner = self.cart(c).record.owner_id;
                (owner.to_string(), Some(owner))
            }
            ActorRef::User(u, form) => {
                let user = users[u % users.len()].id;
                (spell(user, form), Some(user))
            }
            ActorRef::Unknown => {
                let user = id(KeyPrefix::User, UNKNOWN);
                (user.to_string(), Some(user))
            }
            ActorRef::WrongKind(k) => {
                let other = match k % 3 {
                    0 => self.model.accounts[0].id,
                    1 => self.model.carts[0].record.id,
                    _ => self.model.stores[0].id,
                };
                (other.to_string(), Some(other))
            }
            ActorRef::Malformed(k) => (malformed(k, users[0].id), None),
        }
    }

    fn cart_input(&self, cart: CartRef) -> (String, Option<SfId>) {
        match cart {
            CartRef::Known(c, form) => {
                let id = self.cart(c).record.id;
                (spell(id, form), Some(id))
            }
            CartRef::Unknown => {
                let cart = id(KeyPrefix::WebCart, UNKNOWN);
                (cart.to_string(), Some(cart))
            }
            CartRef::WrongKind(k) => {
                let other = match k % 3 {
                    0 => self.some_session().unwrap_or(self.model.users[0].id),
                    1 => self.model.users[0].id,
                    _ => self.model.stores[0].id,
                };
                (other.to_string(), Some(other))
            }
            CartRef::Malformed(k) => (malformed(k, self.model.carts[0].record.id), None),
        }
    }

    /// The session input, and the session's current State as the model knows it.
    fn session_input(&self, session: SessionRef) -> (String, Option<SfId>, Option<SessionState>) {
        let unknown = id(KeyPrefix::CartCheckoutSession, UNKNOWN);
        let found = match session {
            SessionRef::Current(c, form) => {
                let cart = self.cart(c);
                cart.active()
                    .or(cart.sessions.len().checked_sub(1))
                    .map(|i| (&cart.sessions[i], form))
            }
            SessionRef::Archived(c, k) => {
                let archived: Vec<&MSession> = self
                    .cart(c)
                    .sessions
                    .iter()
                    .filter(|s| s.archived)
                    .collect();
                (!archived.is_empty()).then(|| (archived[k % archived.len()], IdForm::Full))
            }
            SessionRef::Unknown => None,
            SessionRef::WrongKind(k) => {
                let other = match k % 3 {
                    0 => self.model.carts[0].record.id,
                    1 => self
                        .model
                        .carts
                        .iter()
                        .flat_map(|c| c.ops.iter())
                        .map(|o| o.id)
                        .next()
                        .unwrap_or(self.model.users[0].id),
                    _ => self.model.accounts[0].id,
                };
                return (other.to_string(), Some(other), None);
            }
            SessionRef::Malformed(k) => {
                return (
                    malformed(k, self.some_session().unwrap_or(unknown)),
                    None,
                    None,
                );
            }
        };
        match found {
            Some((s, form)) => (spell(s.id, form), Some(s.id), s.state),
            None => (unknown.to_string(), Some(unknown), None),
        }
    }

    /// The State name a command gives for choice `k`: one of the template's, or one that is
    /// no step of it.
    fn any_name(&self, k: usize) -> String {
        let names = self.model.flow.names();
        names[k % names.len()].clone()
    }

    fn state_input(&self, choice: StateChoice, current: Option<SessionState>) -> String {
        let flow = &self.model.flow;
        match choice {
            StateChoice::Next => current
                .and_then(|s| flow.next_of(s))
                .or_else(|| flow.next_of(flow.entry()))
                .map_or_else(String::new, |s| s.to_string()),
            StateChoice::Current => current.as_ref().map_or("", SessionState::as_str).into(),
            StateChoice::Any(k) => self.any_name(k),
            StateChoice::Garbage(k) => GARBAGE[k % GARBAGE.len()].into(),
        }
    }

    fn exp_input(&self, choice: ExpChoice, current: Option<SessionState>) -> Option<String> {
        match choice {
            ExpChoice::Omitted => None,
            ExpChoice::Current => current.map(|s| s.as_str().into()),
            ExpChoice::Any(k) => Some(self.any_name(k)),
            ExpChoice::Garbage(k) => Some(GARBAGE[k % GARBAGE.len()].into()),
        }
    }

    fn details_input(choice: DetailsChoice, cart: &MCart) -> CheckoutDetails {
        let options = &cart.record.delivery_options;
        CheckoutDetails {
            deliver_to: (choice.address > 0).then(|| address_of(choice.address)),
            delivery_method_id: match choice.method {
                0 => None,
                3 => Some(UNOFFERED_METHOD.into()),
                k if !options.is_empty() => Some(
                    options[usize::from(k) % options.len()]
                        .delivery_method_id
                        .clone(),
                ),
                _ => Some("STD".into()),
            },
            payment_token: match choice.token {
                0 => None,
                1 => Some(GOOD_TOKEN.into()),
                2 => Some("  ".into()),
                _ => Some(cartflow::sample::DECLINED_TOKEN.into()),
            },
        }
    }

    fn resolve(&self, step: &Step) -> Resolved {
        let user = |actor, named, call, rest| {
            let (actor, actor_id) = self.actor(actor);
            Resolved::User {
                actor,
                actor_id,
                named,
                call,
                rest,
            }
        };
        match *step {
            Step::Hub { cart, salt } => self.hub(cart, salt),
            // Run one at a time by `run_sequence`.
            Step::Drive { cart, salt, .. } => self.hub(cart, drive_salt(salt)),
            Step::Start {
                actor,
                cart,
                initial,
                rest,
            } => {
                let (cart, named) = self.cart_input(cart);
                let initial = match initial {
                    // The template passes the entry State.
                    ExpChoice::Current => Some(self.model.flow.entry().to_string()),
                    other => self.exp_input(other, None),
                };
                user(actor, named, Call::Start { cart, initial }, rest)
            }
            Step::Update {
                actor,
                session,
                next,
                exp,
                rest,
            } => {
                let (session, named, current) = self.session_input(session);
                let call = Call::Update {
                    session,
                    next: self.state_input(next, current),
                    exp: self.exp_input(exp, current),
                };
                user(actor, named, call, rest)
            }
            Step::Advance {
                actor,
                session,
                state,
                exp,
            } => {
                let (session, named, current) = self.session_input(session);
                let call = Call::Advance {
                    session,
                    state: self.state_input(state, current),
                    exp: self.exp_input(exp, current),
                };
                user(actor, named, call, false)
            }
            Step::Run {
                actor,
                action,
                cart,
                rest,
            } => {
                let (cart, named) = self.cart_input(cart);
                let action = PROVIDER_ACTIONS[action % PROVIDER_ACTIONS.len()];
                user(actor, named, Call::Run { action, cart }, rest)
            }
            Step::Order {
                actor,
                call,
                cart,
                status,
                run_async,
                rest,
            } => {
                let (cart, named) = self.cart_input(cart);
                let call = match call {
                    OrderCall::CartToOrder => Call::CartToOrder { cart, run_async },
                    OrderCall::Authorize => Call::Authorize { cart },
                    OrderCall::Activate => Call::Activate {
                        cart,
                        status: match status {
                            StatusChoice::Activated => Some(ACTIVATED.into()),
                            StatusChoice::Draft => Some("Draft".into()),
                            StatusChoice::Lowercase => Some("activated".into()),
                            StatusChoice::Omitted => None,
                        },
                        run_async,
                    },
                };
                user(actor, named, call, rest)
            }
            Step::Details {
                actor,
                cart,
                details,
            } => {
                let index = match cart {
                    CartRef::Known(c, _) => c,
                    _ => 0,
                };
                let details = Self::details_input(details, self.cart(index));
                let (cart, named) = self.cart_input(cart);
                user(actor, named, Call::Details { cart, details }, false)
            }
            Step::DeliveryMethod {
                actor,
                cart,
                method,
                rest,
            } => {
                let index = match cart {
                    CartRef::Known(c, _) => c,
                    _ => 0,
                };
                let options = &self.cart(index).record.delivery_options;
                let method = match method {
                    3 => UNOFFERED_METHOD.to_owned(),
                    4 => String::new(),
                    k if !options.is_empty() => options[usize::from(k) % options.len()]
                        .delivery_method_id
                        .clone(),
                    _ => "STD".to_owned(),
                };
                let (cart, named) = self.cart_input(cart);
                user(actor, named, Call::DeliveryMethod { cart, method }, rest)
            }
            Step::Edit { actor, cart, edit } => {
                let index = match cart {
                    CartRef::Known(c, _) => c,
                    _ => 0,
                };
                let edit = self.edit_input(edit, index);
                let (cart, named) = self.cart_input(cart);
                user(actor, named, Call::Edit { cart, edit }, false)
            }
            Step::Cancel { actor, cart, rest } => {
                let (cart, named) = self.cart_input(cart);
                user(actor, named, Call::Cancel { cart }, rest)
            }
            Step::Worker(behaviour) => Resolved::Worker(behaviour),
            Step::Wait(minutes) => Resolved::Wait(minutes),
        }
    }

    fn edit_input(&self, choice: EditChoice, index: usize) -> CartEdit {
        let cart = self.cart(index);
        let line = |line: LineRef| match line {
            LineRef::Own(k) if !cart.items.is_empty() => {
                cart.items[k % cart.items.len()].id.to_string()
            }
            LineRef::Own(_) | LineRef::Foreign => self
                .model
                .carts
                .iter()
                .filter(|c| c.record.id != cart.record.id)
                .flat_map(|c| c.items.iter())
                .map(|i| i.id)
                .next()
                .unwrap_or_else(|| id(KeyPrefix::CartItem, UNKNOWN))
                .to_string(),
            LineRef::Malformed => "not-a-line".into(),
        };
        match choice {
            EditChoice::Add { sku, quantity } => CartEdit::AddItem {
                sku: ADDED_SKUS[sku % ADDED_SKUS.len()].into(),
                quantity: Decimal::from(quantity),
            },
            EditChoice::SetQuantity { line: l, quantity } => CartEdit::SetQuantity {
                item_id: line(l),
                quantity: Decimal::from(quantity),
            },
            EditChoice::Remove { line: l } => CartEdit::RemoveItem { item_id: line(l) },
        }
    }

    /// The buyer's input at the screen `state` before it moves on: what the screen collects
    /// and the cart lacks; with `SALT_DETAILS`, any input the cart lacks. A delivery method
    /// is chosen by `setCheckoutDeliveryMethod` with `SALT_CHOOSE`.
    fn screen_input(&self, cart: &MCart, state: SessionState, salt: u16) -> Option<Call> {
        let record = &cart.record;
        let collects = |input| {
            salt & SALT_DETAILS != 0
                || self
                    .table()
                    .template()
                    .step(state)
                    .is_some_and(|s| s.collects.contains(&input))
        };
        let id = record.id.to_string();
        let options = &record.delivery_options;
        let pick = usize::from(salt >> 13) % options.len().max(1);
        if collects(StepInput::DeliveryMethod)
            && record.delivery_method_id.is_none()
            && !options.is_empty()
        {
            let method = options[pick].delivery_method_id.clone();
            return Some(if salt & SALT_CHOOSE != 0 {
                Call::DeliveryMethod { cart: id, method }
            } else {
                Call::Details {
                    cart: id,
                    details: CheckoutDetails {
                        delivery_method_id: Some(method),
                        ..CheckoutDetails::default()
                    },
                }
            });
        }
        let details = CheckoutDetails {
            deliver_to: (collects(StepInput::DeliveryAddress) && record.deliver_to.is_none())
                .then(address),
            payment_token: (collects(StepInput::Payment) && record.payment_token.is_none())
                .then(|| GOOD_TOKEN.to_owned()),
            delivery_method_id: None,
        };
        (details != CheckoutDetails::default()).then_some(Call::Details { cart: id, details })
    }

    /// A buyer who changes their mind, wherever the checkout is (bits 13-15 of `salt`): another
    /// address, another delivery method (by a screen or by `setCheckoutDeliveryMethod`), one
    /// nobody offered, or another payment token.
    fn change_input(cart: &MCart, salt: u16) -> Call {
        let record = &cart.record;
        let id = record.id.to_string();
        let address = (0..3)
            .map(|k| address_of(k + (salt >> 15) as u8))
            .find(|a| record.deliver_to.as_ref() != Some(a));
        let method = record
            .delivery_options
            .iter()
            .map(|o| o.delivery_method_id.clone())
            .find(|m| record.delivery_method_id.as_ref() != Some(m))
            .unwrap_or_else(|| UNOFFERED_METHOD.to_owned());
        let token = if record.payment_token.as_deref() == Some(GOOD_TOKEN) {
            cartflow::sample::DECLINED_TOKEN
        } else {
            GOOD_TOKEN
        };
        let details = |details| Call::Details {
            cart: id.clone(),
            details,
        };
        match (salt >> 13) & 0b111 {
            0 | 1 => details(CheckoutDetails {
                deliver_to: address,
                ..CheckoutDetails::default()
            }),
            2 | 3 => Call::DeliveryMethod {
                cart: id.clone(),
                method,
            },
            4 => details(CheckoutDetails {
                delivery_method_id: Some(method),
                ..CheckoutDetails::default()
            }),
            5 => Call::DeliveryMethod {
                cart: id.clone(),
                method: UNOFFERED_METHOD.to_owned(),
            },
            6 => details(CheckoutDetails {
                payment_token: Some(token.to_owned()),
                ..CheckoutDetails::default()
            }),
            _ => details(CheckoutDetails {
                deliver_to: address,
                delivery_method_id: Some(method),
                ..CheckoutDetails::default()
            }),
        }
    }

    /// The call that runs the async step `state` names.
    fn work_call(&self, state: SessionState, cart: String, salt: u16) -> Option<Call> {
        let run_async = salt & SALT_INLINE == 0;
        Some(match self.model.flow.stage_of(state)? {
            Stage::Async(Action::CartToOrder) => Call::CartToOrder { cart, run_async },
            Stage::Async(Action::ActivateOrder) => Call::Activate {
                cart,
                status: Some(ACTIVATED.into()),
                run_async,
            },
            Stage::Async(action) => Call::Run { action, cart },
            Stage::Payment => Call::Authorize { cart },
            Stage::Custom(action) => Call::Custom { action, cart },
            Stage::Entry | Stage::Screen | Stage::Terminal => return None,
        })
    }

    /// The checkout template's hub loop for one cart, as its owner.
    fn hub(&self, index: usize, salt: u16) -> Resolved {
        let cart = self.cart(index);
        let id = cart.record.id;
        let rest = salt & SALT_REST != 0;
        let user = |call| Resolved::User {
            actor: cart.record.owner_id.to_string(),
            actor_id: Some(cart.record.owner_id),
            named: Some(id),
            call,
            rest,
        };
        let on_session = |s: &MSession, call| Resolved::User {
            actor: cart.record.owner_id.to_string(),
            actor_id: Some(cart.record.owner_id),
            named: Some(s.id),
            call,
            rest,
        };
        let flow = &self.model.flow;
        let start = Call::Start {
            cart: id.to_string(),
            initial: Some(flow.entry().to_string()),
        };
        let cancel = Call::Cancel {
            cart: id.to_string(),
        };
        let Some(s) = cart.active().map(|i| &cart.sessions[i]) else {
            return user(start);
        };
        let running = cart
            .ops
            .iter()
            .any(|o| Some(o.id) == s.op && is_active(o.status));
        let work = |state| self.work_call(state, id.to_string(), salt);
        if running {
            // Now and then the buyer double-clicks the step that is already running.
            return match s.state.and_then(work) {
                Some(call) if salt & SALT_DOUBLE_CLICK == SALT_DOUBLE_CLICK => user(call),
                _ => Resolved::Worker(behaviour_of(salt)),
            };
        }
        if salt & SALT_CHANGE == SALT_CHANGE {
            return user(Self::change_input(cart, salt));
        }
        if self.model.expired(cart, s, self.now()) {
            // An expired checkout starts over; a locked one can only be cancelled.
            return user(if s.processing { cancel } else { start });
        }
        match (s.state, s.processing) {
            (None, _) => user(cancel),
            (Some(SessionState::Error), _) if salt & SALT_CANCEL_ON_ERROR == 0 => user(start),
            (Some(SessionState::Error), _) => user(cancel),
            (Some(state), true) => work(state).map_or_else(|| user(cancel.clone()), user),
            (Some(state), false) => {
                // A late double click: the step that has just completed, once more.
                let completed = cart
                    .ops
                    .iter()
                    .find(|o| Some(o.id) == s.op && o.status == OperationStatus::Complete);
                if salt & SALT_DOUBLE_CLICK == SALT_DOUBLE_CLICK
                    && let Some(call) = completed.and_then(|o| flow.step_of(o.work)).and_then(work)
                {
                    return user(call);
                }
                let (Some(stage), Some(next)) = (flow.stage_of(state), flow.next_of(state)) else {
                    return user(cancel);
                };
                let skip = salt & SALT_SKIP_INPUT == SALT_SKIP_INPUT && salt & SALT_DETAILS == 0;
                if matches!(stage, Stage::Screen | Stage::Entry)
                    && !skip
                    && let Some(call) = self.screen_input(cart, state, salt)
                {
                    return user(call);
                }
                let session = s.id.to_string();
                let next = next.as_str().to_owned();
                let exp = Some(state.as_str().to_owned());
                match stage {
                    Stage::Entry | Stage::Screen => on_session(
                        s,
                        Call::Advance {
                            session,
                            state: next,
                            exp,
                        },
                    ),
                    _ => on_session(s, Call::Update { session, next, exp }),
                }
            }
        }
    }
}

/// A driven buyer's salt: providers pass, nothing is double-clicked, no input is changed or
/// left out.
fn drive_salt(salt: u16) -> u16 {
    salt & !(SALT_BEHAVIOUR | SALT_DOUBLE_CLICK | 1 << 12 | 1 << 14)
}

impl Harness {
    /// Runs a command through `execute` or, when `rest`, the invocable-action shape.
    fn send(&self, actor: &str, call: &Call, rest: bool) -> Answer {
        if rest && let Some((name, input)) = call.rest() {
            let result = self.engine.invoke(name, &input, actor);
            if result.is_success {
                let output = result.output_values.as_ref().and_then(|values| {
                    ["requestId", "backgroundOperationId"]
                        .into_iter()
                        .find_map(|k| Some((k, values.get(k)?.as_str()?.to_owned())))
                });
                return Answer::Ok(output);
            }
            let code = result
                .errors
                .as_ref()
                .and_then(|e| e.first())
                .map_or_else(String::new, |e| e.status_code.clone());
            return Answer::Err(code, result.http_status);
        }
        match self.engine.execute(actor, call.command()) {
            Ok(Output::RequestId(id)) => Answer::Ok(Some(("requestId", id.to_string()))),
            Ok(Output::BackgroundOperationId(id)) => {
                Answer::Ok(Some(("backgroundOperationId", id.to_string())))
            }
            Ok(Output::Nothing) => Answer::Ok(None),
            Err(e) => Answer::Err(e.code().as_str().to_owned(), e.http_status()),
        }
    }

    /// The carts that are Closed now.
    fn closed_carts(&self) -> Result<Vec<SfId>, String> {
        let store = self.engine.store();
        let mut closed = Vec::new();
        for cart in &self.model.carts {
            let stored = store.cart(&cart.record.id).map_err(|e| e.to_string())?;
            if stored.is_some_and(|c| c.status == CartStatus::Closed) {
                closed.push(cart.record.id);
            }
        }
        Ok(closed)
    }

    /// Everything the store holds about these carts, through the Store API.
    fn views(&self, carts: &[SfId]) -> Vec<String> {
        let store = self.engine.store();
        carts
            .iter()
            .map(|id| {
                let sessions = store.sessions_of(id);
                let orders: Vec<_> = sessions
                    .iter()
                    .flatten()
                    .filter_map(|s| s.order_id)
                    .map(|order| store.order(&order))
                    .collect();
                let view = (
                    store.cart(id),
                    store.cart_items(id),
                    sessions,
                    store.operations_of(id),
                    store.validation_outputs(id),
                    orders,
                    store.history(id),
                );
                format!("{view:?}")
            })
            .collect()
    }

    /// Runs one step and checks every property. `during` sees the store while a worker's
    /// provider is running (the scripted provider waits at a gate until it returns).
    fn step(
        &mut self,
        step: &Step,
        coverage: &mut Coverage,
        during: Option<&mut dyn FnMut(&DataSet)>,
    ) -> Result<Option<Answer>, String> {
        self.clock.advance(Duration::seconds(1));
        coverage.steps += 1;
        let closed = self.closed_carts()?;
        let closed_before = self.views(&closed);
        let before = self.store.to_dataset();
        let resolved = self.resolve(step);
        let (events, answer, plan) = match resolved {
            Resolved::User {
                actor,
                actor_id,
                named,
                call,
                rest,
            } => {
                let (answer, plan, events) =
                    self.user_command(&actor, actor_id, named, &call, rest, coverage)?;
                (events, Some(answer), plan)
            }
            Resolved::Worker(behaviour) => (self.worker(behaviour, coverage, during)?, None, None),
            Resolved::Wait(minutes) => {
                self.clock.advance(Duration::minutes(i64::from(minutes)));
                (vec![], None, None)
            }
        };
        let after = self.store.to_dataset();
        if events.is_empty() && before != after {
            return Err(format!(
                "a step that was refused or found no work changed the store:\n  step {step:?}\n  answer {answer:?}"
            ));
        }
        let moves = self.check_moves(&before, &after, &events)?;
        let entries = self.check_history(&before, &after, &events)?;
        // One event moves each record at most once, each move one entry; a call that also
        // ran its operation may move a record several times between the two looks.
        if (events.len() == 1 && entries != moves) || entries < moves {
            return Err(format!(
                "{moves} records moved but the history gained {entries} entries on {events:?}"
            ));
        }
        self.check_store_invariants(&after)?;
        self.check_states(&after)?;
        self.check_closing(&before, &after, &events)?;
        if self.views(&closed) != closed_before {
            return Err("a Closed cart, or one of its records, changed".into());
        }
        self.check_orders(&before, &after, coverage)?;
        self.check_amounts(&before, &after, coverage)?;
        // Cancel, and an edit of a cart in checkout, which cancels it first.
        let cancelled = match plan {
            Some(Plan::Cancel { cart }) => Some(cart),
            Some(Plan::Edit { cart }) => {
                let id = self.model.carts[cart].record.id;
                let was = before.carts.iter().find(|c| c.id == id).map(|c| c.status);
                (was == Some(CartStatus::Checkout)).then_some(cart)
            }
            _ => None,
        };
        if let Some(cart) = cancelled {
            self.check_cancel(&before, &after, self.model.carts[cart].record.id)?;
        }
        self.model.compare(&after)?;
        check_held_records(self.store.as_ref(), &after)?;
        for s in after.sessions.iter().filter_map(|s| s.state) {
            coverage.states.insert(s);
        }
        Ok(answer)
    }

    /// Runs a user command beside the model; returns the answer, the model's plan when both
    /// accepted it, and the events its commit fired.
    fn user_command(
        &mut self,
        actor: &str,
        actor_id: Option<SfId>,
        named: Option<SfId>,
        call: &Call,
        rest: bool,
        coverage: &mut Coverage,
    ) -> Result<(Answer, Option<Plan>, Vec<Event>), String> {
        let kind = call.kind();
        let now = self.now();
        if let Some(situation) = self.input_situation(call, named) {
            coverage.note(situation);
        }
        let expected = self.model.decide(call, actor_id, named, now);
        let command = call.command();
        let dry = self
            .engine
            .check(actor, &command)
            .map_err(|e| format!("check failed: {e}"))?;
        let answer = self.send(actor, call, rest);
        let (answer, inline_refused) = self.inline_refusal(call, &expected, answer);
        let context = || format!("{call:?} as {actor:?} (rest: {rest})");
        // The dry run reports the first unmet requirement with the same code as the refusal.
        let refused_for = expected.as_ref().err().copied();
        match refused_for {
            Some(why) => {
                let first = dry.first().map(|u| (u.code, u.status));
                if first != documented(kind, why) {
                    return Err(format!(
                        "{}: the model refuses ({why:?}), the dry run's first unmet is {first:?}",
                        context()
                    ));
                }
            }
            None if !dry.is_empty() => {
                return Err(format!(
                    "{}: the model expects every requirement met, the dry run says {dry:?}",
                    context()
                ));
            }
            None => {}
        }
        match (&expected, &answer) {
            (Err(why), Answer::Err(code, status)) => {
                let Some((want_code, want_status)) = documented(kind, *why) else {
                    return Err(format!(
                        "the model refused {kind:?} for {why:?}, which it cannot"
                    ));
                };
                let pair_listed = documented_pairs(kind)
                    .iter()
                    .any(|(c, s)| c.as_str() == code && s == status);
                if !pair_listed {
                    return Err(format!(
                        "{}: {code}/{status} is not a documented refusal of {kind:?}",
                        context()
                    ));
                }
                if code != want_code.as_str() || *status != want_status {
                    return Err(format!(
                        "{}: the model refuses with {why:?} ({want_code}/{want_status}), the engine with {code}/{status}",
                        context()
                    ));
                }
                *coverage.refused.entry((kind, *why)).or_default() += 1;
                if self.model.repeats_completed_step(call, named) {
                    coverage.note("a repeated step was refused");
                }
                Ok((answer, None, vec![]))
            }
            (Ok(plan), Answer::Ok(_)) => {
                if let Plan::Start { cart } = *plan {
                    let c = &self.model.carts[cart];
                    if c.active()
                        .is_some_and(|i| self.model.expired(c, &c.sessions[i], now))
                    {
                        coverage.note("an expired checkout restarted");
                    }
                }
                self.note_template_steps(plan, coverage);
                let new_line = match (plan, call) {
                    (
                        Plan::Edit { cart },
                        Call::Edit {
                            edit: CartEdit::AddItem { .. },
                            ..
                        },
                    ) => Some(self.added_line(*cart)?),
                    // A chosen method's new charge line.
                    (Plan::Details { cart }, _) => self.new_line(*cart)?,
                    _ => None,
                };
                self.model.fired = None;
                let started = self
                    .model
                    .apply(*plan, call, &answer, now, new_line)
                    .map_err(|e| format!("{}: {e}", context()))?;
                *coverage.accepted.entry(kind).or_default() += 1;
                let fired = self.model.fired.take();
                if fired.is_some() {
                    coverage.note("an input change sent the session back");
                }
                let mut events = vec![fired.unwrap_or_else(|| command.event(self.table()))];
                if let (Some((cart, op)), true) = (started, call.inline()) {
                    // runAsync false: the operation has run by the time the call answers.
                    let (outcome, patch) = self.model.predict(cart, op, Behaviour::Pass);
                    // The call succeeds only when its operation completed.
                    if (outcome != Outcome::Passed) != inline_refused {
                        return Err(format!(
                            "{}: the inline operation comes to {outcome:?}, the call was refused: {inline_refused}",
                            context()
                        ));
                    }
                    let order = self.made_order(cart, op, outcome)?;
                    let new_line = self.new_line(cart)?;
                    self.model.claim(cart, op, now);
                    self.model
                        .finish(cart, op, (outcome, patch.as_ref()), order, new_line)?;
                    events.extend([Event::Claim, finish_event(outcome)]);
                    coverage.note("an order step ran inside its call");
                    let work = self.model.carts[cart].ops.iter().find(|o| o.id == op);
                    let name = work.map_or("?", |o| o.work.name());
                    *coverage
                        .outcomes
                        .entry(format!("{} ({name}, inline)", outcome.label()))
                        .or_default() += 1;
                }
                Ok((answer, Some(*plan), events))
            }
            (expected, answer) => Err(format!(
                "{}: the model says {expected:?}, the engine answered {answer:?}",
                context()
            )),
        }
    }

    /// Where a buyer's input (a screen's, or `setCheckoutDeliveryMethod`) meets the checkout
    /// of the cart it names: at a screen, an async or payment step, after taxes.
    fn input_situation(&self, call: &Call, named: Option<SfId>) -> Option<&'static str> {
        if !matches!(call, Call::Details { .. } | Call::DeliveryMethod { .. }) {
            return None;
        }
        let cart = &self.model.carts[self.model.cart_index(named)?];
        let state = cart.active().and_then(|i| cart.sessions[i].state)?;
        let flow = &self.model.flow;
        let taxes = flow.position(SessionState::Taxes);
        let position = flow.position(state);
        if self.model.takes_input(Some(state)) && taxes.is_some() && position > taxes {
            return Some("buyer input after taxes");
        }
        Some(match flow.stage_of(state)? {
            Stage::Entry | Stage::Screen => "buyer input at a screen",
            Stage::Async(_) | Stage::Custom(_) => "buyer input at an async step",
            Stage::Payment => "buyer input at the payment step",
            Stage::Terminal => return None,
        })
    }

    /// Notes an accepted move out of a step the standard template lacks, and the lock of a
    /// custom step.
    fn note_template_steps(&self, plan: &Plan, coverage: &mut Coverage) {
        let (Plan::Advance { cart, session, .. } | Plan::Update { cart, session }) = *plan else {
            return;
        };
        let Some(state) = self.model.carts[cart].sessions[session].state else {
            return;
        };
        match (plan, self.model.flow.stage_of(state)) {
            (Plan::Advance { .. }, _) if !state.is_standard() => {
                coverage.note("a step the standard template lacks was passed");
            }
            (Plan::Update { .. }, Some(Stage::Custom(_))) => {
                coverage.note("a custom step was locked");
            }
            _ => {}
        }
    }

    /// runAsync false: a step whose operation ran inside the call but did not complete is
    /// refused `INVALID_OPERATION` 409 after its operation was committed. Such an answer is
    /// read as the acceptance it started with (the new operation's Id), flagged refused.
    fn inline_refusal(
        &self,
        call: &Call,
        expected: &Result<Plan, Why>,
        answer: Answer,
    ) -> (Answer, bool) {
        let (Ok(Plan::Work { cart, .. }), Answer::Err(code, 409)) = (expected, &answer) else {
            return (answer, false);
        };
        if !call.inline() || code != "INVALID_OPERATION" {
            return (answer, false);
        }
        let c = &self.model.carts[*cart];
        let new: Vec<SfId> = self
            .store
            .to_dataset()
            .operations
            .iter()
            .filter(|o| o.cart_id == c.record.id && !c.ops.iter().any(|m| m.id == o.id))
            .map(|o| o.id)
            .collect();
        match new[..] {
            [op] => (
                Answer::Ok(Some(("backgroundOperationId", op.to_string()))),
                true,
            ),
            _ => (answer, false),
        }
    }

    /// The line an edit added: the one line of the cart the model does not know yet.
    fn added_line(&self, cart: usize) -> Result<SfId, String> {
        let c = &self.model.carts[cart];
        let new: Vec<SfId> = self
            .store
            .to_dataset()
            .items
            .iter()
            .filter(|i| i.cart_id == c.record.id && !c.items.iter().any(|m| m.id == i.id))
            .map(|i| i.id)
            .collect();
        match new[..] {
            [line] => Ok(line),
            _ => Err(format!("an edit that adds one line added {new:?}")),
        }
    }

    /// The line of the cart the model does not know yet, if any (a new charge line).
    fn new_line(&self, cart: usize) -> Result<Option<SfId>, String> {
        let c = &self.model.carts[cart];
        let new: Vec<SfId> = self
            .store
            .to_dataset()
            .items
            .iter()
            .filter(|i| i.cart_id == c.record.id && !c.items.iter().any(|m| m.id == i.id))
            .map(|i| i.id)
            .collect();
        match new[..] {
            [] => Ok(None),
            [line] => Ok(Some(line)),
            _ => Err(format!("one step added the lines {new:?}")),
        }
    }

    /// The order a passed Cart To Order made: the one order of the cart the model does not
    /// know yet.
    fn made_order(&self, cart: usize, op: SfId, outcome: Outcome) -> Result<Option<SfId>, String> {
        let c = &self.model.carts[cart];
        let work = c.ops.iter().find(|o| o.id == op).map(|o| o.work);
        if outcome != Outcome::Passed || work != Some(Work::Step(Action::CartToOrder)) {
            return Ok(None);
        }
        let new: Vec<SfId> = self
            .store
            .to_dataset()
            .orders
            .iter()
            .filter(|o| o.cart_id == c.record.id && c.order(Some(o.id)).is_none())
            .map(|o| o.id)
            .collect();
        match new[..] {
            [order] => Ok(Some(order)),
            _ => Err(format!(
                "operation {op} made orders {new:?}; Cart To Order makes exactly one"
            )),
        }
    }

    /// One worker step; returns the events its commits fire.
    fn worker(
        &mut self,
        behaviour: Behaviour,
        coverage: &mut Coverage,
        during: Option<&mut dyn FnMut(&DataSet)>,
    ) -> Result<Vec<Event>, String> {
        *self
            .scripted
            .behaviour
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = behaviour;
        let expected = self.model.next_operation();
        let now = self.now();
        let report = match during {
            None => self.engine.run_next_operation(),
            Some(during) => {
                let (entered_tx, entered_rx) = mpsc::channel();
                let (release_tx, release_rx) = mpsc::channel();
                *self.scripted.gate.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((entered_tx, release_rx));
                let engine = self.engine.clone();
                let worker = std::thread::spawn(move || engine.run_next_operation());
                entered_rx
                    .recv_timeout(std::time::Duration::from_secs(30))
                    .map_err(|_| "the gated provider was never called".to_string())?;
                let running = self.store.to_dataset();
                during(&running);
                // While the provider works, the store holds exactly the claim the model makes.
                let claimed = expected.map(|(cart, op)| {
                    let mut model = self.model.clone();
                    model.claim(cart, op, now);
                    model.compare(&running)
                });
                let _ = release_tx.send(());
                let report = worker
                    .join()
                    .map_err(|_| "the worker panicked".to_string())?;
                if let Some(Err(e)) = claimed {
                    return Err(format!("while the provider worked: {e}"));
                }
                report
            }
        }
        .map_err(|e| format!("run_next_operation failed: {e}"))?;
        let (report, (cart, op)) = match (report, expected) {
            (None, None) => return Ok(vec![]),
            (Some(report), Some(expected)) => (report, expected),
            (report, expected) => {
                return Err(format!(
                    "worker: the model expects to run {expected:?}, the engine ran {report:?}"
                ));
            }
        };
        if report.operation_id != op || !report.applied {
            return Err(format!(
                "worker: expected operation {op} to run and apply, got {report:?}"
            ));
        }
        let (predicted, patch) = self.model.predict(cart, op, behaviour);
        let outcome = match &report.outcome {
            StepOutcome::Passed => Outcome::Passed,
            StepOutcome::Failed(m) => Outcome::Failed(m.len()),
            StepOutcome::SystemFailure(_) => Outcome::System,
        };
        if outcome != predicted {
            return Err(format!(
                "worker on {op}: predicted {predicted:?}, provider gave {:?}",
                report.outcome
            ));
        }
        if outcome == Outcome::Passed && patch.is_some() {
            coverage.note("a provider's cart update was applied");
        }
        let work = self.model.carts[cart]
            .ops
            .iter()
            .find(|o| o.id == op)
            .map(|o| o.work);
        *coverage
            .outcomes
            .entry(format!(
                "{} ({})",
                outcome.label(),
                work.as_ref().map_or("?", Work::name)
            ))
            .or_default() += 1;
        let order = self.made_order(cart, op, outcome)?;
        let new_line = self.new_line(cart)?;
        self.model.claim(cart, op, now);
        self.model
            .finish(cart, op, (outcome, patch.as_ref()), order, new_line)?;
        Ok(vec![Event::Claim, finish_event(outcome)])
    }

    /// Every record whose node changed moved along declared rows: the events in order, each
    /// moving it along one of its rows or leaving it where it is. Returns the moves.
    fn check_moves(
        &self,
        before: &DataSet,
        after: &DataSet,
        events: &[Event],
    ) -> Result<usize, String> {
        let table = self.table();
        let admitted = |from: Node, to: Node| {
            let mut reach = BTreeSet::from([from]);
            for event in events {
                let next: Vec<Node> = reach
                    .iter()
                    .filter_map(|n| table.find(*event, *n).map(|row| row.to))
                    .collect();
                reach.extend(next);
            }
            reach.contains(&to)
        };
        let mut moves = 0;
        let mut check = |what: String, from: Node, to: Node| {
            if from == to {
                return Ok(());
            }
            moves += 1;
            if admitted(from, to) {
                Ok(())
            } else {
                Err(format!(
                    "{what} moved {from} -> {to} on {events:?}: not declared"
                ))
            }
        };
        for cart in &after.carts {
            let old = before
                .carts
                .iter()
                .find(|c| c.id == cart.id)
                .ok_or_else(|| format!("cart {} appeared", cart.id))?;
            check(
                format!("cart {}", cart.id),
                Node::Cart(old.status),
                Node::Cart(cart.status),
            )?;
        }
        let ops = |data: &DataSet| -> HashMap<SfId, BackgroundOperation> {
            data.operations.iter().map(|o| (o.id, o.clone())).collect()
        };
        let (ops_before, ops_after) = (ops(before), ops(after));
        for id in ops_before.keys() {
            if !ops_after.contains_key(id) {
                return Err(format!("operation {id} vanished"));
            }
        }
        for (id, op) in &ops_after {
            check(
                format!("operation {id}"),
                Node::Operation(operation_node(ops_before.get(id))),
                Node::Operation(operation_node(Some(op))),
            )?;
        }
        let node = |data: &DataSet, ops: &HashMap<SfId, BackgroundOperation>, id: SfId| {
            let session = data.sessions.iter().find(|s| s.id == id);
            let op = session
                .and_then(|s| s.background_operation_id)
                .and_then(|o| ops.get(&o));
            Node::Session(session_node(table, session, op))
        };
        for s in &before.sessions {
            if !after.sessions.iter().any(|a| a.id == s.id) {
                return Err(format!("session {} vanished", s.id));
            }
        }
        for s in &after.sessions {
            check(
                format!("session {}", s.id),
                node(before, &ops_before, s.id),
                node(after, &ops_after, s.id),
            )?;
        }
        Ok(moves)
    }

    /// The history only grows, and every new entry is a declared row of the step's events.
    fn check_history(
        &self,
        before: &DataSet,
        after: &DataSet,
        events: &[Event],
    ) -> Result<usize, String> {
        if !after.history.starts_with(&before.history) {
            return Err("the history was rewritten".into());
        }
        let new = &after.history[before.history.len()..];
        for entry in new {
            let lookup = |label: &str| {
                self.labels
                    .get(&(entry.machine, label.to_owned()))
                    .copied()
                    .ok_or_else(|| format!("history names an unknown node {label:?}"))
            };
            let (from, to) = (lookup(&entry.from)?, lookup(&entry.to)?);
            if !events.contains(&entry.event)
                || from == to
                || !self.table().admits(entry.event, from, to)
            {
                return Err(format!(
                    "history entry {entry:?} is not a declared move of {events:?}"
                ));
            }
        }
        Ok(new.len())
    }

    /// At most one New or Running operation and one non-archived session per cart; stored
    /// messages fit Salesforce's 255 characters.
    fn check_store_invariants(&self, after: &DataSet) -> Result<(), String> {
        let store = self.engine.store();
        for cart in &after.carts {
            let sessions = store.sessions_of(&cart.id).map_err(|e| e.to_string())?;
            let ops = store.operations_of(&cart.id).map_err(|e| e.to_string())?;
            let active_sessions = sessions.iter().filter(|s| !s.is_archived).count();
            let active_ops = ops.iter().filter(|o| is_active(o.status)).count();
            if active_sessions > 1 || active_ops > 1 {
                return Err(format!(
                    "cart {} has {active_sessions} active sessions and {active_ops} New or Running operations",
                    cart.id
                ));
            }
            let outputs = store
                .validation_outputs(&cart.id)
                .map_err(|e| e.to_string())?;
            if let Some(long) = outputs
                .iter()
                .find(|o| o.message.chars().count() > MAX_MESSAGE_LEN)
            {
                return Err(format!("output {} is longer than 255 characters", long.id));
            }
        }
        Ok(())
    }

    /// Every session is at a step of the template, or in Error (or, imported, at no State).
    fn check_states(&self, after: &DataSet) -> Result<(), String> {
        let flow = &self.model.flow;
        let stray = after.sessions.iter().find(|s| {
            s.state
                .is_some_and(|state| state != SessionState::Error && flow.position(state).is_none())
        });
        match stray {
            Some(s) => Err(format!(
                "session {} is at {:?}, no step of the template",
                s.id, s.state
            )),
            None => Ok(()),
        }
    }

    /// A cart closes only on the closing row: the step's events hold the close, and a
    /// session of the cart moved from the template's last screen into Complete.
    fn check_closing(
        &self,
        before: &DataSet,
        after: &DataSet,
        events: &[Event],
    ) -> Result<(), String> {
        let closing = self.model.flow.closing_screen();
        for cart in &after.carts {
            let was = before
                .carts
                .iter()
                .find(|c| c.id == cart.id)
                .map(|c| c.status);
            if cart.status != CartStatus::Closed || was == Some(CartStatus::Closed) {
                continue;
            }
            let closed_by_its_screen = after.sessions.iter().any(|s| {
                let old = before.sessions.iter().find(|o| o.id == s.id);
                s.web_cart_id == cart.id
                    && s.state == Some(SessionState::Complete)
                    && old.is_some_and(|o| o.state == closing && !o.is_processing)
            });
            if !events.contains(&Event::Close) || !closed_by_its_screen {
                return Err(format!(
                    "cart {} closed on {events:?} without a move from {closing:?} into Complete",
                    cart.id
                ));
            }
        }
        Ok(())
    }

    /// The session `owner` has a Complete operation for the work of every async step of the
    /// template before `step`: each ran and passed since the session started (a restart is a
    /// new session). `what` happened there, and is named in the error.
    fn check_passed(
        &self,
        data: &DataSet,
        owner: SfId,
        step: SessionState,
        what: &str,
    ) -> Result<(), String> {
        let unpassed = self.model.flow.work_before(step).into_iter().find(|w| {
            !data.operations.iter().any(|o| {
                o.checkout_session_id == owner
                    && o.name == w.name()
                    && o.status == OperationStatus::Complete
            })
        });
        match unpassed {
            Some(work) => Err(format!(
                "{what} in session {owner} before {} passed",
                work.name()
            )),
            None => Ok(()),
        }
    }

    /// The order promises, read from the store alone:
    /// - no order without the checks before it: a new order belongs to exactly one session
    ///   of its cart, and that session passed every async step of the template before Cart
    ///   To Order (the inventory check, in the standard template);
    /// - no activation while Error outputs exist, nor before every step ran: an order that
    ///   becomes Activated belonged to a cart with no undismissed Error-level output, its
    ///   session passed every async step before Activate Order, and it is still active, moved
    ///   to the step after Activate Order (Order Confirmation, in the standard template);
    /// - never a second order for a cart: at most one Activated order per cart, and no order
    ///   is made for a cart whose order was activated. A checkout abandoned before activation
    ///   (cancelled, failed, expired) may leave its Draft behind; such a Draft is never
    ///   activated, because only the active session's order can be;
    /// - orders never vanish, and an Activated order stays Activated.
    fn check_orders(
        &self,
        before: &DataSet,
        after: &DataSet,
        coverage: &mut Coverage,
    ) -> Result<(), String> {
        let flow = &self.model.flow;
        for cart in &after.carts {
            let of_cart = |data: &DataSet| -> BTreeMap<SfId, Order> {
                data.orders
                    .iter()
                    .filter(|o| o.cart_id == cart.id)
                    .map(|o| (o.id, o.clone()))
                    .collect()
            };
            let (old, new) = (of_cart(before), of_cart(after));
            let activated_before = old.values().any(|o| o.status == OrderStatus::Activated);
            for (id, order) in &old {
                match new.get(id) {
                    None => return Err(format!("order {id} vanished")),
                    Some(now)
                        if order.status == OrderStatus::Activated
                            && now.status != OrderStatus::Activated =>
                    {
                        return Err(format!("order {id} was Activated and is {:?}", now.status));
                    }
                    _ => {}
                }
            }
            let sessions: Vec<&CartCheckoutSession> = after
                .sessions
                .iter()
                .filter(|s| s.web_cart_id == cart.id)
                .collect();
            for (id, order) in &new {
                let owners: Vec<&&CartCheckoutSession> = sessions
                    .iter()
                    .filter(|s| s.order_id == Some(*id))
                    .collect();
                let is_new = !old.contains_key(id);
                if is_new {
                    let [owner] = owners[..] else {
                        return Err(format!(
                            "new order {id} of cart {} belongs to {} sessions",
                            cart.id,
                            owners.len()
                        ));
                    };
                    let made = format!("order {id} was made");
                    self.check_passed(after, owner.id, SessionState::CartToOrder, &made)?;
                    if activated_before {
                        return Err(format!(
                            "order {id} was made for cart {}, whose order is already activated",
                            cart.id
                        ));
                    }
                    if !old.is_empty() {
                        coverage.note("an order was made beside an abandoned Draft");
                    }
                }
                let activated_now = order.status == OrderStatus::Activated
                    && old
                        .get(id)
                        .is_none_or(|o| o.status != OrderStatus::Activated);
                if activated_now {
                    let blocking = before.validation_outputs.iter().any(|o| {
                        o.cart_id == cart.id && o.level == Level::Error && !o.is_dismissed
                    });
                    if blocking {
                        return Err(format!(
                            "order {id} was activated while cart {} had Error outputs",
                            cart.id
                        ));
                    }
                    let confirmation = flow.next_of(SessionState::ActivateOrder);
                    let Some(owner) = owners
                        .iter()
                        .find(|s| !s.is_archived && s.state == confirmation)
                    else {
                        return Err(format!(
                            "order {id} was activated but no active session of it moved to {confirmation:?}"
                        ));
                    };
                    let activated = format!("order {id} was activated");
                    self.check_passed(after, owner.id, SessionState::ActivateOrder, &activated)?;
                    coverage.note("an order was activated");
                }
            }
            let activated = new
                .values()
                .filter(|o| o.status == OrderStatus::Activated)
                .count();
            if activated > 1 {
                return Err(format!("cart {} has {activated} Activated orders", cart.id));
            }
        }
        Ok(())
    }

    /// The amounts promises, read from the store alone:
    /// - a cart's totals are always `amounts::total_cart` of its lines;
    /// - an authorised order's authorised amount is its grand total;
    /// - an order made while the cart was offered delivery options has a delivery method among
    ///   them and one charge line at its fee;
    /// - an order activated in a world of the sample providers has the amounts the same
    ///   providers compute again over its lines, address and delivery method, and (with the
    ///   sample gateway) an authorisation.
    ///
    /// Orders of imported checkouts, which did not run their steps here, are held to the first
    /// two only.
    fn check_amounts(
        &self,
        before: &DataSet,
        after: &DataSet,
        coverage: &mut Coverage,
    ) -> Result<(), String> {
        for cart in &after.carts {
            let lines: Vec<CartItem> = after
                .items
                .iter()
                .filter(|i| i.cart_id == cart.id)
                .cloned()
                .collect();
            let mut totalled = cart.clone();
            amounts::total_cart(&mut totalled, &lines).map_err(|e| e.to_string())?;
            if totalled != *cart {
                return Err(format!(
                    "cart {}'s totals are not its lines':\n  lines {lines:?}\n  cart {cart:?}",
                    cart.id
                ));
            }
        }
        for order in &after.orders {
            let id = order.id;
            if order.payment_authorization_id.is_some()
                && order.authorized_amount != order.grand_total_amount
            {
                return Err(format!(
                    "order {id} authorised {:?} of its grand total {:?}",
                    order.authorized_amount, order.grand_total_amount
                ));
            }
            let old = before.orders.iter().find(|o| o.id == id);
            let owner = after.sessions.iter().find(|s| s.order_id == Some(id));
            if owner.is_none_or(|s| self.imported.contains(&s.id)) {
                continue;
            }
            let cart = after
                .carts
                .iter()
                .find(|c| c.id == order.cart_id)
                .ok_or("an order of no cart")?;
            if old.is_none() && !cart.delivery_options.is_empty() {
                self.check_delivery(order, cart)?;
                coverage.note("an order was made with a delivery method offered");
            }
            let activated_now = order.status == OrderStatus::Activated
                && old.is_none_or(|o| o.status != OrderStatus::Activated);
            if activated_now && self.model.sample {
                self.check_recomputed(order, cart)?;
                coverage.note("an activated order's amounts were computed again");
            }
        }
        Ok(())
    }

    /// An order has a delivery method its cart offered and one charge line at its fee.
    fn check_delivery(&self, order: &Order, cart: &WebCart) -> Result<(), String> {
        let fee = order.delivery_method_id.as_ref().and_then(|method| {
            cart.delivery_options
                .iter()
                .find(|o| &o.delivery_method_id == method)
                .map(|o| o.amount)
        });
        let charges: Vec<Option<Decimal>> = order
            .items
            .iter()
            .filter(|i| i.item_type == CartItemType::Charge)
            .map(|i| i.total_price)
            .collect();
        match fee {
            Some(fee) if charges == [Some(fee)] => Ok(()),
            _ => Err(format!(
                "order {} of a cart offered {:?} has delivery method {:?} and charges {charges:?}",
                order.id, cart.delivery_options, order.delivery_method_id
            )),
        }
    }

    /// The providers of the order's store, run again in the template's order over the
    /// order's product lines, address and delivery method, compute the order's line totals,
    /// adjustments, taxes, charge and grand total; with the sample gateway the order is
    /// authorised.
    fn check_recomputed(&self, order: &Order, cart: &WebCart) -> Result<(), String> {
        let mut fresh = WebCart {
            deliver_to: order.deliver_to.clone(),
            delivery_method_id: order.delivery_method_id.clone(),
            payment_authorization_id: None,
            authorized_amount: None,
            ..cart.clone()
        };
        let template = self.table().template();
        let walked = template.before_order();
        let has = |action| walked.iter().any(|s| s.kind == StepKind::Async(action));
        // What no step of the template computes is taken as the order has it.
        let mut lines: Vec<CartItem> = order
            .items
            .iter()
            .filter(|i| i.item_type == CartItemType::Product)
            .map(|i| {
                let mut line =
                    CartItem::product(i.cart_item_id, cart.id, i.sku.clone(), i.quantity);
                if !has(Action::PriceCart) {
                    line.sales_price = i.unit_price;
                    line.total_price = i.total_price;
                }
                if !has(Action::CalcCartPromotions) {
                    line.adjustment_amount = i.adjustment_amount;
                }
                if !has(Action::CalcCartTaxes) {
                    line.tax_amount = i.tax_amount;
                }
                line
            })
            .collect();
        let charge = id(KeyPrefix::CartItem, UNKNOWN);
        if has(Action::CalcCartShipment) {
            fresh.delivery_options.clear();
        }
        model_total(&mut fresh, &lines);
        follow_method(&fresh, &mut lines, Some(charge))?;
        for step in walked {
            let StepKind::Async(action) = step.kind else {
                continue;
            };
            let Some(kind) = action
                .provider_kind()
                .filter(|k| *k != ProviderKind::Inventory)
            else {
                continue;
            };
            let request = IntegrationRequest {
                operation_id: id(KeyPrefix::BackgroundOperation, UNKNOWN),
                cart: fresh.clone(),
                items: lines.clone().into(),
                order: None,
            };
            match self
                .model
                .providers
                .provider(cart.web_store_id, kind)
                .run(&request)
            {
                Ok(Verdict::Updated(patch)) => {
                    apply_answer(&mut fresh, &mut lines, &patch, Some(kind), Some(charge))?;
                }
                Ok(Verdict::Passed) => {}
                other => {
                    return Err(format!(
                        "order {}: {action} over its inputs answers {other:?}",
                        order.id
                    ));
                }
            }
        }
        model_total(&mut fresh, &lines);
        let amounts_of = |id: SfId| lines.iter().find(|l| l.id == id);
        for item in order
            .items
            .iter()
            .filter(|i| i.item_type == CartItemType::Product)
        {
            let again = amounts_of(item.cart_item_id).ok_or("a line went missing")?;
            let (was, is) = (
                (item.total_price, item.adjustment_amount, item.tax_amount),
                (again.total_price, again.adjustment_amount, again.tax_amount),
            );
            if was != is {
                return Err(format!(
                    "order {} line {}: (total, adjustment, tax) {was:?}, computed again {is:?}",
                    order.id, item.cart_item_id
                ));
            }
        }
        let ordered: Vec<Option<Decimal>> = order
            .items
            .iter()
            .filter(|i| i.item_type == CartItemType::Charge)
            .map(|i| i.total_price)
            .collect();
        let again: Vec<Option<Decimal>> = lines
            .iter()
            .filter(|l| l.item_type == CartItemType::Charge)
            .map(|l| l.total_price)
            .collect();
        if ordered != again || order.grand_total_amount != fresh.grand_total_amount {
            return Err(format!(
                "order {}: charges {ordered:?} and grand total {:?}, computed again {again:?} and {:?}",
                order.id, order.grand_total_amount, fresh.grand_total_amount
            ));
        }
        let gateway =
            self.model.mappings.iter().any(|(store, _, payment)| {
                *store == cart.web_store_id && *payment == Payment::Gateway
            });
        if gateway && order.payment_authorization_id.is_none() {
            return Err(format!("order {} was activated unauthorised", order.id));
        }
        Ok(())
    }

    /// What an accepted cancel guarantees: the cart has no active session and no New or
    /// Running operation, and it is Active again, unless a platform process holds it
    /// (PendingClosed, PendingDelete), which cancel leaves as it is.
    fn check_cancel(&self, before: &DataSet, after: &DataSet, cart: SfId) -> Result<(), String> {
        let status = |data: &DataSet| data.carts.iter().find(|c| c.id == cart).map(|c| c.status);
        let expected = match status(before) {
            Some(held @ (CartStatus::PendingClosed | CartStatus::PendingDelete)) => held,
            _ => CartStatus::Active,
        };
        if status(after) != Some(expected) {
            return Err(format!(
                "cancel left cart {cart} {:?}, expected {expected:?}",
                status(after)
            ));
        }
        if let Some(op) = after
            .operations
            .iter()
            .find(|o| o.cart_id == cart && is_active(o.status))
        {
            return Err(format!("cancel left operation {} {:?}", op.id, op.status));
        }
        if let Some(s) = after
            .sessions
            .iter()
            .find(|s| s.web_cart_id == cart && !s.is_archived)
        {
            return Err(format!("cancel left session {} active", s.id));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The properties.

fn run_sequence(
    template: &Template,
    world: &WorldSpec,
    steps: &[Step],
    coverage: &mut Coverage,
) -> Result<(), String> {
    // A generated template that does not build is a bug of the generator.
    let table = TransitionTable::build(template.clone())
        .map_err(|e| format!("the generated template does not build: {e}"))?;
    check_diagram(&table)?;
    if template.steps != Template::standard().steps {
        coverage.note("a sequence over a non-standard template");
    }
    let mut harness = Harness::with_table(world, table);
    harness.model.compare(&harness.store.to_dataset())?;
    if world.sample {
        coverage.note("a sequence over the sample providers");
    }
    let inputs = |coverage: &Coverage| -> usize {
        let situations = coverage
            .seen
            .iter()
            .filter(|(k, _)| k.starts_with("buyer input"));
        situations.map(|(_, n)| n).sum()
    };
    let inputs_before = inputs(coverage);
    for (n, step) in steps.iter().enumerate() {
        let repeat = match step {
            Step::Drive { count, .. } => usize::from(*count),
            _ => 1,
        };
        for k in 0..repeat {
            harness
                .step(step, coverage, None)
                .map_err(|e| format!("step {n}.{k} ({step:?}): {e}"))?;
        }
    }
    if inputs(coverage) > inputs_before {
        coverage.note("a sequence that gave or changed the buyer's inputs");
    }
    Ok(())
}

/// Runs at least `cases` random sequences (PROPTEST_CASES may ask for more), each over a
/// world and a template drawn from `templates`, with every property checked after every step.
/// Panics with the failing template, world and steps (up to the failing one); prints what the
/// run exercised under `label` and returns it.
fn run_cases(label: &str, cases: u32, templates: impl Strategy<Value = Template>) -> Coverage {
    let config = ProptestConfig {
        cases: ProptestConfig::default().cases.max(cases),
        // Failures are reported with their minimal sequence; no regression files are written.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config.clone());
    let coverage = Mutex::new(Coverage::default());
    let strategy = templates.prop_flat_map(|template| {
        let flow = Flow::of(&template);
        let steps = prop::collection::vec(step(), 20..50);
        (Just(template), world_spec(&flow), steps)
    });
    let result = runner.run(&strategy, |(template, world, steps)| {
        let mut local = Coverage::default();
        let outcome = run_sequence(&template, &world, &steps, &mut local);
        coverage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .merge(local);
        outcome.map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, (template, world, steps))) => {
            // Show the steps up to the failing one only.
            let (failing, reason) = (1..=steps.len())
                .find_map(|n| {
                    let run =
                        run_sequence(&template, &world, &steps[..n], &mut Coverage::default());
                    run.err().map(|e| (n, e))
                })
                .unwrap_or((steps.len(), reason.to_string()));
            panic!(
                "{reason}\nminimal template: {:#?}\nminimal world: {world:#?}\nminimal steps: {:#?}",
                Flow::of(&template).steps,
                &steps[..failing]
            )
        }
        Err(e) => panic!("{e}"),
    }
    let total = coverage.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut by_reason: BTreeMap<Why, usize> = BTreeMap::new();
    for ((_, why), n) in &total.refused {
        *by_reason.entry(*why).or_default() += n;
    }
    println!(
        "{label}: {} sequences, {} steps; accepted {:?}; outcomes {:?}; refusals {:?}; seen {:?}; States seen: {}",
        config.cases,
        total.steps,
        total.accepted,
        total.outcomes,
        by_reason,
        total.seen,
        total.states.len()
    );
    total
}

/// What a run must have met: a property that never meets a case proves nothing about it.
struct Expected<'a> {
    accepted: &'a [Kind],
    reasons: &'a [Why],
    /// Prefixes of operation outcomes, as `Coverage::outcomes` names them.
    outcomes: &'a [&'a str],
    seen: &'a [&'a str],
}

fn assert_reached(total: &Coverage, expected: &Expected) {
    for kind in expected.accepted {
        assert!(
            total.accepted.contains_key(kind),
            "no {kind:?} was ever accepted"
        );
    }
    let reasons: BTreeSet<Why> = total.refused.keys().map(|(_, why)| *why).collect();
    for why in expected.reasons {
        assert!(
            reasons.contains(why),
            "no command was ever refused for {why:?}"
        );
    }
    for outcome in expected.outcomes {
        assert!(
            total.outcomes.keys().any(|k| k.starts_with(outcome)),
            "no operation ever ended {outcome})"
        );
    }
    for seen in expected.seen {
        assert!(total.seen.contains_key(seen), "never seen: {seen}");
    }
}

/// At least 2,000 sequences gave or changed the buyer's inputs (each input checked against the
/// model and every invariant after it), at least 1,000 ran over the sample providers, so that
/// the amounts invariant met real prices, promotions, shipping, taxes and payments, and the
/// inputs' refusals were met.
fn assert_inputs_met(total: &Coverage) {
    let count = |what: &str| total.seen.get(what).copied().unwrap_or_default();
    let changing = count("a sequence that gave or changed the buyer's inputs");
    assert!(
        changing >= 2_000,
        "{changing} sequences gave the buyer's inputs"
    );
    let priced = count("a sequence over the sample providers");
    assert!(
        priced >= 1_000,
        "{priced} sequences over the sample providers"
    );
    // Both ways of giving an input were refused after the order and for a method nobody
    // offered, and a screen refused to move on without its input.
    for refusal in [
        (Kind::Details, Why::InputAfterOrder),
        (Kind::Details, Why::MethodNotOffered),
        (Kind::DeliveryMethod, Why::InputAfterOrder),
        (Kind::DeliveryMethod, Why::MethodNotOffered),
        (Kind::Advance, Why::InputMissing),
    ] {
        assert!(
            total.refused.contains_key(&refusal),
            "never refused: {refusal:?}"
        );
    }
}

/// The command kinds a checkout of any template sends.
const EVERY_TEMPLATE_ACCEPTS: [Kind; 11] = [
    Kind::Start,
    Kind::Update,
    Kind::Advance,
    Kind::Close,
    Kind::Async(Action::CartToOrder),
    Kind::Authorize,
    Kind::Async(Action::ActivateOrder),
    Kind::Details,
    Kind::DeliveryMethod,
    Kind::Edit,
    Kind::Cancel,
];

/// What the sequences of any template meet of the buyer's inputs and the amounts: inputs
/// changed at every kind of step (and refused once the order exists, or for a method nobody
/// offered: `ALL_REASONS`), rewinds, orders with their delivery method, and activated orders
/// whose amounts the providers computed again, and a provider's cart update applied (the model
/// applies what the sample providers answer).
const EVERY_TEMPLATE_SEES: [&str; 9] = [
    "an order was activated",
    "an input change sent the session back",
    "buyer input at a screen",
    "buyer input at an async step",
    "buyer input at the payment step",
    "buyer input after taxes",
    "an order was made with a delivery method offered",
    "an activated order's amounts were computed again",
    "a provider's cart update was applied",
];

#[test]
fn random_command_sequences_keep_every_invariant() {
    // At least 2,800 sequences per run (about 10 s on two cores).
    let total = run_cases("standard template", 2_800, Just(Template::standard()));
    assert_inputs_met(&total);
    let mut accepted = EVERY_TEMPLATE_ACCEPTS.to_vec();
    accepted.push(Kind::Async(Action::CheckCartInventory));
    assert_reached(
        &total,
        &Expected {
            accepted: &accepted,
            reasons: &ALL_REASONS,
            outcomes: &[
                "Passed (checkCartInventoryAction",
                "Failed (checkCartInventoryAction",
                "System (checkCartInventoryAction",
                "Passed (cartToOrderAction",
                "Failed (cartToOrderAction",
                "Passed (authorizePayment",
                "Failed (authorizePayment",
                "System (authorizePayment",
                "Passed (activateOrderAction",
            ],
            seen: &[
                EVERY_TEMPLATE_SEES.as_slice(),
                &[
                    "an order step ran inside its call",
                    "an expired checkout restarted",
                    "an order was made beside an abandoned Draft",
                    "a repeated step was refused",
                ],
            ]
            .concat(),
        },
    );
}

/// The same properties over random templates: the standard one with provider steps removed,
/// screens renamed, and screens and custom async steps of new names inserted, each checked
/// against its own table.
#[test]
fn random_templates_keep_every_invariant() {
    // At least 2,800 sequences per run (about 10 s on two cores), every one over a template
    // that is not the standard.
    let total = run_cases("random templates", 2_800, template());
    assert_inputs_met(&total);
    let over_other_templates = total
        .seen
        .get("a sequence over a non-standard template")
        .copied()
        .unwrap_or_default();
    assert!(
        over_other_templates >= 2_800,
        "{over_other_templates} sequences over non-standard templates"
    );
    assert_reached(
        &total,
        &Expected {
            accepted: &EVERY_TEMPLATE_ACCEPTS,
            reasons: &ALL_REASONS,
            outcomes: &[
                "Passed (cartToOrderAction",
                "Passed (authorizePayment",
                "Failed (authorizePayment",
                "Passed (activateOrderAction",
            ],
            seen: &[
                EVERY_TEMPLATE_SEES.as_slice(),
                &[
                    "a step the standard template lacks was passed",
                    "a custom step was locked",
                ],
            ]
            .concat(),
        },
    );
    // The new names were walked through: beyond ASCII, and of the longest length allowed.
    assert!(total.states.iter().any(|s| !s.as_str().is_ascii()));
    assert!(
        total
            .states
            .iter()
            .any(|s| s.as_str().chars().count() == 30)
    );
}

// ---------------------------------------------------------------------------------------------
// Random templates.

/// Names for the steps the generator adds; some are siblings once decorated (`Credit Check`,
/// `Credit-Check`, `Credit Check.`).
const NEW_NAMES: [&str; 8] = [
    "Credit Check",
    "Approval",
    "Prüfung",
    "Подтверждение",
    "確認画面",
    "Review & Sign",
    "Étape 2: Livraison",
    "Gift Options 🎁",
];

/// How a new name is decorated.
#[derive(Debug, Clone, Copy)]
enum Decoration {
    Plain,
    /// Spaces become this punctuation, or it is appended: the same words, other punctuation.
    Punctuation(usize),
    /// Filled up to exactly 30 characters, the most a State may have.
    Longest(usize),
}

const PUNCTUATION: [&str; 4] = ["-", "_", ".", "!"];
const FILLERS: [char; 3] = ['x', 'é', '界'];

fn new_name(base: usize, decoration: Decoration) -> String {
    let base = NEW_NAMES[base % NEW_NAMES.len()];
    match decoration {
        Decoration::Plain => base.to_owned(),
        Decoration::Punctuation(k) => match PUNCTUATION[k % PUNCTUATION.len()] {
            mark @ ("-" | "_") => base.replace(' ', mark),
            mark => format!("{base}{mark}"),
        },
        Decoration::Longest(k) => {
            let fill = FILLERS[k % FILLERS.len()];
            let mut name: String = base.chars().take(28).collect();
            name.push(' ');
            while name.chars().count() < 30 {
                name.push(fill);
            }
            name
        }
    }
}

fn decoration() -> impl Strategy<Value = Decoration> {
    prop_oneof![
        2 => Just(Decoration::Plain),
        2 => (0usize..PUNCTUATION.len()).prop_map(Decoration::Punctuation),
        1 => (0usize..FILLERS.len()).prop_map(Decoration::Longest),
    ]
}

/// A step to insert: a screen, or a custom async step, of a new name.
#[derive(Debug, Clone, Copy)]
struct Insert {
    /// Which step it follows, as an index into the template's steps before the terminal one.
    after: usize,
    base: usize,
    decoration: Decoration,
    custom: bool,
    /// Bits of the inputs it consumes (a custom step: `StepInput::ALL`) or collects (a
    /// screen: `StepInput::CHANGEABLE`).
    inputs: u8,
}

/// The standard template's screens the generator may rename.
const RENAMABLE: [SessionState; 5] = [
    SessionState::ShippingAddress,
    SessionState::DeliveryMethod,
    SessionState::PaymentAndBillingAddress,
    SessionState::CheckoutSummary,
    SessionState::OrderConfirmation,
];

/// The steps of the standard template a generated one may lack: every provider step. The order
/// steps and payment stay, so a checkout can still place its order.
const REMOVABLE: [SessionState; 5] = [
    SessionState::Inventory,
    SessionState::ConfirmPrice,
    SessionState::CalculatePromotions,
    SessionState::ShippingCost,
    SessionState::Taxes,
];

/// Random valid templates: from the standard one, some provider steps removed, some screens
/// renamed, and one to four screens or custom async steps of new names inserted (some
/// collecting, or consuming, some of the buyer's inputs).
fn template() -> impl Strategy<Value = Template> {
    let insert = (
        0usize..16,
        0usize..NEW_NAMES.len(),
        decoration(),
        prop::bool::weighted(0.25),
        prop_oneof![2 => Just(0u8), 1 => 0u8..16],
    )
        .prop_map(|(after, base, decoration, custom, inputs)| Insert {
            after,
            base,
            decoration,
            custom,
            inputs,
        });
    let rename = (
        0usize..RENAMABLE.len(),
        0usize..NEW_NAMES.len(),
        decoration(),
    );
    (
        any::<u8>(),
        prop::collection::vec(rename, 0..3),
        prop::collection::vec(insert, 1..=4),
    )
        .prop_map(|(removed, renames, inserts)| {
            let mut template = Template::standard();
            template.name = "generated".to_owned();
            for (bit, state) in REMOVABLE.iter().enumerate() {
                if removed & (1 << bit) != 0 {
                    template.remove_step(*state);
                }
            }
            for (screen, base, decoration) in renames {
                let name = new_name(base, decoration);
                rename_step(&mut template, RENAMABLE[screen], &name);
            }
            for (n, insert) in inserts.into_iter().enumerate() {
                insert_step(&mut template, n, insert);
            }
            template
        })
}

/// Renames the step `from` (when there is one and `to` names no other step), and every
/// reference to it.
fn rename_step(template: &mut Template, from: SessionState, to: &str) {
    let to = SessionState::new(to).expect("new names are valid States");
    if template.step(to).is_some() {
        return;
    }
    for step in &mut template.steps {
        if step.state == from {
            step.state = to;
        }
        if step.next == Some(from) {
            step.next = Some(to);
        }
    }
}

/// Inserts the `n`th new step, unless its name is taken.
fn insert_step(template: &mut Template, n: usize, insert: Insert) {
    let state = SessionState::new(&new_name(insert.base, insert.decoration))
        .expect("new names are valid States");
    let flow = Flow::of(template);
    // Any step but the terminal one; a custom step not after the screen that closes the cart
    // (only a screen may lead into the terminal step).
    let choices = flow.steps.len() - if insert.custom { 2 } else { 1 };
    let after = flow.steps[insert.after % choices].0;
    let chosen = |inputs: &[StepInput]| -> Vec<StepInput> {
        (0..inputs.len())
            .filter(|bit| insert.inputs & (1 << bit) != 0)
            .map(|bit| inputs[bit])
            .collect()
    };
    let step = if insert.custom {
        let action = CustomAction::new(&format!("Custom_{n}")).expect("an identifier");
        TemplateStep::custom(state, action, &format!("RunCustom{n}"), "scripted")
            .consuming(&chosen(&StepInput::ALL))
    } else {
        TemplateStep::new(state, StepKind::Screen).collecting(&chosen(&StepInput::CHANGEABLE))
    };
    template.insert_step(after, step);
}

/// The DOT drawing of `table` is well-formed: each node is declared once, under an id of its
/// own made of ASCII letters, digits and `_`; every edge joins declared nodes; each row the
/// drawing does not fold has an edge of its own, with the row's label; each folded family is
/// one edge into Archived from a point; and the Mermaid drawing has as many edges.
fn check_diagram(table: &TransitionTable) -> Result<(), String> {
    let dot = cartflow::diagram::dot(table);
    let mermaid = cartflow::diagram::mermaid(table);
    check_drawing(table, &dot, &mermaid)
}

/// [`check_diagram`] on given drawings of `table`.
fn check_drawing(table: &TransitionTable, dot: &str, mermaid: &str) -> Result<(), String> {
    let drawn = DotDrawing::parse(dot)?;
    let id_of = |node: Node| -> Result<&String, String> {
        drawn
            .ids
            .get(&(cluster_of(node.machine()), node.to_string()))
            .ok_or_else(|| format!("the diagram has no node {node}"))
    };
    let mut families = BTreeSet::new();
    for row in table.rows() {
        if cartflow::diagram::collapsed(row) {
            families.insert(row.event);
            continue;
        }
        let edge = (
            id_of(row.from)?.clone(),
            id_of(row.to)?.clone(),
            row.label(),
        );
        let count = drawn.edges.iter().filter(|e| **e == edge).count();
        if count != 1 {
            return Err(format!("the row {row:?} is drawn {count} times"));
        }
    }
    let archived = id_of(Node::Session(SessionNode::Archived))?;
    let points: BTreeSet<&String> = drawn.points.iter().collect();
    for event in &families {
        let folded: Vec<_> = drawn
            .edges
            .iter()
            .filter(|(_, to, label)| to == archived && label == event.label())
            .collect();
        if folded.len() != 1 || !points.contains(&folded[0].0) {
            return Err(format!("the folded {event} rows are drawn as {folded:?}"));
        }
    }
    let expected = table.rows().len()
        - table
            .rows()
            .iter()
            .filter(|r| cartflow::diagram::collapsed(r))
            .count()
        + families.len();
    let mermaid_edges = mermaid.lines().filter(|l| l.contains(" --> ")).count();
    if drawn.edges.len() != expected || mermaid_edges != expected {
        return Err(format!(
            "{expected} edges expected, DOT has {} and Mermaid {mermaid_edges}",
            drawn.edges.len()
        ));
    }
    Ok(())
}

fn cluster_of(machine: Machine) -> &'static str {
    match machine {
        Machine::Session => "session",
        Machine::Cart => "cart",
        Machine::Operation => "operation",
    }
}

/// What a DOT drawing declares: node ids by (cluster, label), the point nodes, and the edges
/// as (from id, to id, label).
struct DotDrawing {
    ids: BTreeMap<(&'static str, String), String>,
    points: Vec<String>,
    edges: Vec<(String, String, String)>,
}

impl DotDrawing {
    fn parse(dot: &str) -> Result<DotDrawing, String> {
        let mut drawing = DotDrawing {
            ids: BTreeMap::new(),
            points: Vec::new(),
            edges: Vec::new(),
        };
        let mut declared = BTreeSet::new();
        let mut cluster = "";
        for line in dot.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix("subgraph cluster_") {
                let name = name.trim_end_matches(" {");
                cluster = [Machine::Session, Machine::Cart, Machine::Operation]
                    .map(cluster_of)
                    .into_iter()
                    .find(|c| *c == name)
                    .ok_or_else(|| format!("an unknown cluster {name}"))?;
                continue;
            }
            let Some((head, attributes)) = line.split_once(" [") else {
                continue;
            };
            if head.starts_with("//") || matches!(head, "graph" | "node" | "edge") {
                continue;
            }
            let label = quoted_label(attributes).ok_or_else(|| format!("no label: {line}"))?;
            if let Some((from, to)) = head.split_once(" -> ") {
                drawing.edges.push((from.to_owned(), to.to_owned(), label));
                continue;
            }
            let plain = head.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !plain || !declared.insert(head.to_owned()) {
                return Err(format!("the node id {head:?} is not plain, or taken"));
            }
            if attributes.contains("shape=point") {
                drawing.points.push(head.to_owned());
            } else if drawing
                .ids
                .insert((cluster, label.clone()), head.to_owned())
                .is_some()
            {
                return Err(format!("two nodes of {cluster} read {label:?}"));
            }
        }
        for (from, to, label) in &drawing.edges {
            if !declared.contains(from) || !declared.contains(to) {
                return Err(format!(
                    "the edge {from} -> {to} ({label}) joins undeclared nodes"
                ));
            }
        }
        Ok(drawing)
    }
}

/// The first `label="..."` (or `xlabel="..."`) of a DOT attribute list, unescaped.
fn quoted_label(attributes: &str) -> Option<String> {
    let start = attributes.find("label=\"")? + "label=\"".len();
    let mut label = String::new();
    let mut chars = attributes[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => label.push(chars.next()?),
            '"' => return Some(label),
            c => label.push(c),
        }
    }
    None
}

/// The model's copy of the standard checkout is the crate's standard template.
#[test]
fn the_models_standard_checkout_is_the_crates() {
    assert_eq!(Flow::of(&Template::standard()), Flow::standard());
    assert_eq!(
        Flow::standard().states(),
        SessionState::STANDARD.to_vec(),
        "the standard States, in order, Error last"
    );
}

/// Collects every node the store's records are in.
fn observe(data: &DataSet, seen: &mut BTreeSet<Node>) {
    let standard = TransitionTable::standard();
    let ops: HashMap<SfId, &BackgroundOperation> =
        data.operations.iter().map(|o| (o.id, o)).collect();
    for cart in &data.carts {
        seen.insert(Node::Cart(cart.status));
        let sessions: Vec<_> = data
            .sessions
            .iter()
            .filter(|s| s.web_cart_id == cart.id)
            .collect();
        if sessions.iter().all(|s| s.is_archived) {
            seen.insert(Node::Session(SessionNode::Absent));
        }
        for s in sessions {
            let op = s.background_operation_id.and_then(|o| ops.get(&o).copied());
            seen.insert(Node::Session(session_node(&standard, Some(s), op)));
        }
        if !data.operations.iter().any(|o| o.cart_id == cart.id) {
            seen.insert(Node::Operation(OperationNode::Absent));
        }
    }
    for op in &data.operations {
        seen.insert(Node::Operation(operation_node(Some(op))));
    }
}

/// Hub steps on one cart until its checkout reaches `until` (or the cart closes), every
/// provider passing; the first running provider call is held at the gate and `look`ed at.
fn drive(
    h: &mut Harness,
    cart: usize,
    salt: u16,
    until: Option<SessionState>,
    seen: &mut BTreeSet<Node>,
    gated: &mut bool,
) {
    let coverage = &mut Coverage::default();
    for _ in 0..200 {
        let c = &h.model.carts[cart];
        if c.status == CartStatus::Closed {
            return;
        }
        let session = c.active().map(|i| c.sessions[i].clone());
        if until.is_some() && session.as_ref().and_then(|s| s.state) == until {
            return;
        }
        let running = session.as_ref().is_some_and(|s| {
            c.ops
                .iter()
                .any(|o| Some(o.id) == s.op && is_active(o.status))
        });
        let scripted = running
            && c.ops.iter().any(|o| {
                Some(o.id) == session.as_ref().and_then(|s| s.op)
                    && o.work == Work::Step(Action::CheckCartInventory)
            });
        if scripted && !*gated {
            // Look at the store while the provider runs: the operation is Running.
            *gated = true;
            let mut look = |data: &DataSet| observe(data, seen);
            h.step(&Step::Worker(Behaviour::Pass), coverage, Some(&mut look))
                .expect("invariants hold");
        } else {
            h.step(&Step::Hub { cart, salt }, coverage, None)
                .expect("invariants hold");
        }
        observe(&h.store.to_dataset(), seen);
    }
    panic!("cart {cart} did not reach {until:?} in 200 steps");
}

/// A world of one store (scripted inventory, a gateway that approves, no time-to-live) and
/// one cart of the main buyer in `status`, with an active session seeded as given.
fn one_cart(status: CartStatus, active: Option<ActiveSeed>) -> WorldSpec {
    WorldSpec {
        sample: false,
        stores: vec![StoreSpec {
            members: 1,
            mapping: Mapping::Scripted,
            payment: Payment::Approve,
            ttl: None,
        }],
        accounts: vec![true],
        users: vec![
            UserSpec {
                account: 1,
                permissions: 1,
            },
            UserSpec {
                account: 0,
                permissions: 0,
            },
        ],
        carts: vec![CartSpec {
            good: true,
            consistent: false,
            store: 0,
            account: 0,
            owner: 0,
            status,
            shares: vec![],
            items: vec![ItemSpec {
                sku: 0,
                quantity: 1,
                charge: false,
            }],
            options: true,
            priced: true,
            archived: 0,
            active,
            outputs: vec![],
        }],
    }
}

/// Drives fresh carts through the standard table and records every node they are seen in:
/// every node of the table must be reached, except the empty-State ones that only imported
/// data has.
#[test]
fn every_node_of_the_table_is_reachable_from_a_fresh_cart() {
    // A cart starts Active, or Processing when a platform process holds it.
    let mut world = one_cart(CartStatus::Active, None);
    let second = world.carts[0].clone();
    let mut processing = world.carts[0].clone();
    processing.status = CartStatus::Processing;
    world.carts.extend([second, processing]);
    let mut h = Harness::new(&world);
    let mut coverage = Coverage::default();
    let mut seen: BTreeSet<Node> = BTreeSet::new();
    observe(&h.store.to_dataset(), &mut seen);
    let mut gated = false;
    // The happy path to Complete, asynchronously, with the buyer's input at each screen.
    drive(&mut h, 0, SALT_DETAILS, None, &mut seen, &mut gated);
    assert!(gated, "the inventory check ran");
    assert_eq!(h.model.carts[0].status, CartStatus::Closed);
    let order = &h.model.carts[0].orders;
    assert!(
        order.len() == 1 && order[0].status == OrderStatus::Activated,
        "the checkout placed one order: {order:?}"
    );
    assert_eq!(
        order[0].deliver_to,
        Some(address()),
        "the order ships there"
    );

    // The second cart: a cancel from a locked step; then a failing inventory check, a restart
    // from Error, and a cancel while the operation is New.
    let hub = Step::Hub { cart: 1, salt: 0 };
    let cancel = Step::Cancel {
        actor: ActorRef::Owner(1),
        cart: CartRef::Known(1, IdForm::Full),
        rest: false,
    };
    let mut script = vec![hub.clone(); 4];
    script.push(cancel.clone());
    script.extend(vec![hub.clone(); 5]);
    script.push(Step::Worker(Behaviour::Fail(1)));
    script.extend(vec![hub.clone(); 5]);
    script.push(cancel);
    // The cart a platform process held returns to Active when its checkout is cancelled.
    script.push(Step::Cancel {
        actor: ActorRef::Owner(2),
        cart: CartRef::Known(2, IdForm::Full),
        rest: false,
    });
    for step in &script {
        h.step(step, &mut coverage, None).expect("invariants hold");
        observe(&h.store.to_dataset(), &mut seen);
    }
    assert!(seen.contains(&Node::Session(SessionNode::At(
        Some(SessionState::Error),
        Phase::Open
    ))));
    assert!(seen.contains(&Node::Operation(OperationNode::Is(
        OperationStatus::Canceled
    ))));
    assert_eq!(h.model.carts[2].status, CartStatus::Active);

    // An empty State comes only from imported data (the table's entry nodes): no command
    // produces one, so driving a fresh cart cannot reach it.
    let all: BTreeSet<Node> = h
        .table()
        .nodes()
        .into_iter()
        .filter(|n| !matches!(n, Node::Session(SessionNode::At(None, _))))
        .collect();
    let unseen: BTreeSet<Node> = all.difference(&seen).copied().collect();
    println!(
        "reached {} of {} nodes (empty-State nodes excluded)",
        all.len() - unseen.len(),
        all.len(),
    );
    assert!(
        unseen.is_empty(),
        "nodes never reached: {}",
        unseen
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        seen.iter().all(|n| all.contains(n)),
        "a node outside the table was observed"
    );
}

/// Once Order Confirmation closes the cart, nothing changes it again: every command is
/// refused (the harness checks the cart's records, orders and history are untouched).
#[test]
fn nothing_changes_a_cart_after_its_checkout_completes() {
    let mut h = Harness::new(&one_cart(CartStatus::Active, None));
    let (mut seen, mut gated) = (BTreeSet::new(), false);
    drive(&mut h, 0, SALT_INLINE, None, &mut seen, &mut gated);
    assert_eq!(h.model.carts[0].status, CartStatus::Closed);
    let owner = ActorRef::Owner(0);
    let cart = CartRef::Known(0, IdForm::Full);
    let session = SessionRef::Current(0, IdForm::Full);
    let mut attempts = vec![
        Step::Start {
            actor: owner,
            cart,
            initial: ExpChoice::Current,
            rest: true,
        },
        Step::Cancel {
            actor: owner,
            cart,
            rest: true,
        },
        Step::Advance {
            actor: owner,
            session,
            state: StateChoice::Current,
            exp: ExpChoice::Current,
        },
        Step::Update {
            actor: owner,
            session,
            next: StateChoice::Next,
            exp: ExpChoice::Current,
            rest: true,
        },
        Step::Details {
            actor: owner,
            cart,
            details: DetailsChoice {
                address: 1,
                method: 1,
                token: 1,
            },
        },
        Step::Wait(5_000),
        Step::Worker(Behaviour::Pass),
    ];
    for call in [
        OrderCall::CartToOrder,
        OrderCall::Authorize,
        OrderCall::Activate,
    ] {
        attempts.push(Step::Order {
            actor: owner,
            call,
            cart,
            status: StatusChoice::Activated,
            run_async: false,
            rest: true,
        });
    }
    attempts.extend((0..PROVIDER_ACTIONS.len()).map(|action| Step::Run {
        actor: owner,
        action,
        cart,
        rest: false,
    }));
    let mut coverage = Coverage::default();
    for step in &attempts {
        let answer = h.step(step, &mut coverage, None).expect("invariants hold");
        assert!(
            !matches!(answer, Some(Answer::Ok(_))),
            "{step:?} was accepted on a Closed cart"
        );
    }
    assert!(coverage.accepted.is_empty());
}

/// The promise "never a second order for a cart" after an order was activated: at Order
/// Confirmation the buyer cancels, lets the session expire, or edits the cart, and checks out
/// again. Every way out is tried; the failures of all of them are reported together.
#[test]
fn an_activated_order_is_never_followed_by_a_second_one() {
    let owner = ActorRef::Owner(0);
    let cart = CartRef::Known(0, IdForm::Full);
    let ways_out = [
        (
            "a cancel",
            Step::Cancel {
                actor: owner,
                cart,
                rest: true,
            },
        ),
        ("the session expiring", Step::Wait(61)),
        (
            "an edit of the cart",
            Step::Edit {
                actor: owner,
                cart,
                edit: EditChoice::Add {
                    sku: 0,
                    quantity: 1,
                },
            },
        ),
    ];
    let mut broken = Vec::new();
    for (name, leave) in &ways_out {
        let mut world = one_cart(CartStatus::Active, None);
        world.stores[0].ttl = Some(60);
        let mut h = Harness::new(&world);
        let (mut seen, mut gated) = (BTreeSet::new(), false);
        let confirmation = Some(SessionState::OrderConfirmation);
        drive(&mut h, 0, 0, confirmation, &mut seen, &mut gated);
        let mut coverage = Coverage::default();
        if let Err(e) = h.step(leave, &mut coverage, None) {
            broken.push(format!("{name} at Order Confirmation: {e}"));
            continue;
        }
        // The buyer starts over; `step` checks every promise after each command.
        for n in 0..60 {
            let c = &h.model.carts[0];
            let at = c.active().and_then(|i| c.sessions[i].state);
            if n > 0 && at == confirmation {
                break;
            }
            let hub = Step::Hub { cart: 0, salt: 0 };
            if let Err(e) = h.step(&hub, &mut coverage, None) {
                broken.push(format!("after {name} at Order Confirmation: {e}"));
                break;
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// An imported checkout at Order Confirmation on a cart that is not in Checkout: the step into
/// Complete must not close that cart (the table's one row is Checkout -> Closed). The model
/// expects the refusal the cart's status calls for, 403 `INVALID_OPERATION`, with the dry run
/// naming it.
#[test]
fn the_last_screen_closes_only_a_cart_in_checkout() {
    for status in [
        CartStatus::Active,
        CartStatus::PendingClosed,
        CartStatus::PendingDelete,
    ] {
        let confirmation = ActiveSeed {
            state: Some(13),
            phase: 0,
            wrong_next: false,
            order: 1,
            created: 0,
        };
        let mut h = Harness::new(&one_cart(status, Some(confirmation)));
        let close = Step::Hub { cart: 0, salt: 0 };
        let answer = h.step(&close, &mut Coverage::default(), None);
        assert_eq!(
            answer,
            Ok(Some(Answer::Err("INVALID_OPERATION".into(), 403))),
            "a {status:?} cart"
        );
    }
}

/// An imported queue holds an activation requested while the cart has an Error output: the
/// worker must not activate the order (no activation while Error outputs exist). The
/// model expects it to fail as an activation without its Draft order does.
#[test]
fn a_queued_activation_never_runs_over_error_outputs() {
    let queued = ActiveSeed {
        state: Some(12),
        phase: 2,
        wrong_next: false,
        order: 1,
        created: 0,
    };
    let mut world = one_cart(CartStatus::Checkout, Some(queued));
    world.carts[0].outputs = vec![(Level::Error, false)];
    let mut h = Harness::new(&world);
    let worker = Step::Worker(Behaviour::Pass);
    assert_eq!(h.step(&worker, &mut Coverage::default(), None), Ok(None));
    assert_eq!(h.model.carts[0].orders[0].status, OrderStatus::Draft);
}

/// Cancel archives the session "from wherever it is", as documented: a session whose State
/// is empty must not trap its cart in Checkout (every step refuses it; Start and Cancel leave it).
#[test]
fn cancel_releases_a_session_whose_state_is_empty() {
    let empty = ActiveSeed {
        state: None,
        phase: 0,
        wrong_next: false,
        order: 0,
        created: 0,
    };
    let mut h = Harness::new(&one_cart(CartStatus::Checkout, Some(empty)));
    let cancel = Step::Cancel {
        actor: ActorRef::Owner(0),
        cart: CartRef::Known(0, IdForm::Full),
        rest: true,
    };
    let answer = h.step(&cancel, &mut Coverage::default(), None);
    assert_eq!(answer, Ok(Some(Answer::Ok(None))));
    assert_eq!(h.model.carts[0].status, CartStatus::Active);
}

/// An imported session locked at the State of index `state`, with its Draft order.
fn locked_with_its_order(state: u8) -> ActiveSeed {
    ActiveSeed {
        state: Some(state),
        phase: 1,
        wrong_next: false,
        order: 1,
        created: 0,
    }
}

/// The checks the properties rely on do fail on a store that broke them.
#[test]
fn the_checks_reject_doctored_stores() {
    let inventory = ActiveSeed {
        state: Some(2),
        phase: 2,
        wrong_next: false,
        order: 0,
        created: 0,
    };
    let h = Harness::new(&one_cart(CartStatus::Checkout, Some(inventory)));
    let before = h.store.to_dataset();
    assert_eq!(
        before.sessions[0].state,
        Some(SessionState::Inventory),
        "the seed"
    );
    let run = [Event::Action(Action::CheckCartInventory)];
    assert_eq!(h.check_moves(&before, &before, &run), Ok(0));

    // A session that jumps steps.
    let mut jumped = before.clone();
    jumped.sessions[0].state = Some(SessionState::Taxes);
    assert!(h.check_moves(&before, &jumped, &[Event::Advance]).is_err());
    assert!(h.model.compare(&jumped).is_err());

    // An operation whose attempt or lease is not what its claims gave it.
    assert_eq!(h.model.compare(&before), Ok(()));
    let mut reclaimed = before.clone();
    reclaimed.operations[0].attempt += 1;
    assert!(h.model.compare(&reclaimed).is_err());
    let mut leased = before.clone();
    leased.operations[0].expires_at = Some(epoch());
    assert!(h.model.compare(&leased).is_err());

    // An operation that completes without being claimed, or on the wrong event.
    let mut completed = before.clone();
    completed.operations[0].status = OperationStatus::Complete;
    completed.sessions[0].state = Some(SessionState::ConfirmPrice);
    completed.sessions[0].is_processing = false;
    assert!(
        h.check_moves(&before, &completed, &[Event::Succeed])
            .is_err()
    );
    assert!(h.check_moves(&before, &completed, &run).is_err());
    let mut running = before.clone();
    running.operations[0].status = OperationStatus::Running;
    assert_eq!(h.check_moves(&before, &running, &[Event::Claim]), Ok(1));
    assert!(
        h.check_moves(&running, &completed, &[Event::Succeed])
            .is_ok()
    );
    assert_eq!(
        h.check_moves(&before, &completed, &[Event::Claim, Event::Succeed]),
        Ok(2)
    );
    // The events of a step run in order.
    assert!(
        h.check_moves(&before, &completed, &[Event::Succeed, Event::Claim])
            .is_err()
    );

    // A record that vanishes, a cart that reopens from Closed, a rewritten history.
    let mut vanished = before.clone();
    vanished.sessions.clear();
    assert!(h.check_moves(&before, &vanished, &run).is_err());
    let mut reopened = before.clone();
    reopened.carts[0].status = CartStatus::Closed;
    assert!(h.check_moves(&reopened, &before, &run).is_err());
    let entry = cartflow::store::HistoryEntry {
        at: epoch(),
        actor: None,
        cart_id: before.carts[0].id,
        event: Event::Succeed,
        machine: Machine::Session,
        record: before.sessions[0].id,
        from: "Inventory (running)".into(),
        to: "Taxes".into(),
    };
    let mut forged = before.clone();
    forged.history.push(entry.clone());
    assert!(
        h.check_history(&before, &forged, &[Event::Succeed])
            .is_err()
    );
    let mut declared = before.clone();
    declared.history.push(cartflow::store::HistoryEntry {
        to: "Confirm Price".into(),
        ..entry
    });
    assert_eq!(
        h.check_history(&before, &declared, &[Event::Succeed]),
        Ok(1)
    );
    assert!(h.check_history(&declared, &before, &[]).is_err());

    // The order promises.
    let activate = locked_with_its_order(12);
    let h = Harness::new(&one_cart(CartStatus::Checkout, Some(activate)));
    let before = h.store.to_dataset();
    assert_eq!(before.orders[0].status, OrderStatus::Draft, "the seed");
    let coverage = &mut Coverage::default();
    assert_eq!(h.check_orders(&before, &before, coverage), Ok(()));
    let mut activated = before.clone();
    activated.orders[0].status = OrderStatus::Activated;
    activated.sessions[0].state = Some(SessionState::OrderConfirmation);
    assert_eq!(h.check_orders(&before, &activated, coverage), Ok(()));
    // ... while an Error output exists;
    let mut blocked = before.clone();
    blocked.validation_outputs.push(CartValidationOutput {
        id: id(KeyPrefix::CartValidationOutput, 77),
        cart_id: before.carts[0].id,
        background_operation_id: None,
        level: Level::Error,
        output_type: OutputType::Inventory,
        message: "short".into(),
        related_entity_id: None,
        is_dismissed: false,
    });
    assert!(h.check_orders(&blocked, &activated, coverage).is_err());
    // ... without its session moving on;
    let mut stuck = activated.clone();
    stuck.sessions[0].state = Some(SessionState::ActivateOrder);
    assert!(h.check_orders(&before, &stuck, coverage).is_err());
    // a second Activated order, or a new order after activation;
    let mut second = activated.clone();
    let mut other = second.orders[0].clone();
    other.id = id(KeyPrefix::Order, 78);
    second.orders.push(other.clone());
    assert!(h.check_orders(&second, &second, coverage).is_err());
    other.status = OrderStatus::Draft;
    let mut redrafted = activated.clone();
    redrafted.orders.push(other.clone());
    redrafted.sessions[0].order_id = Some(other.id);
    assert!(h.check_orders(&activated, &redrafted, coverage).is_err());
    // an order made in a session that never passed an inventory check;
    let mut unchecked = before.clone();
    unchecked.operations.clear();
    unchecked.orders.clear();
    let mut made = unchecked.clone();
    made.orders.push(other);
    made.sessions[0].order_id = Some(made.orders[0].id);
    assert!(h.check_orders(&unchecked, &made, coverage).is_err());
    // an order that vanishes.
    assert!(h.check_orders(&before, &unchecked, coverage).is_err());

    // Cancel's promise.
    let cart = before.carts[0].id;
    assert!(h.check_cancel(&before, &before, cart).is_err());
    let mut cancelled = before.clone();
    cancelled.carts[0].status = CartStatus::Active;
    cancelled.sessions[0].is_archived = true;
    assert_eq!(h.check_cancel(&before, &cancelled, cart), Ok(()));
    cancelled.operations[0].status = OperationStatus::New;
    assert!(h.check_cancel(&before, &cancelled, cart).is_err());

    // The documented pairs are the ones Salesforce's documentation gives.
    assert_eq!(
        documented(
            Kind::Async(Action::CheckCartInventory),
            Why::OperationActive
        ),
        Some((AIP, 400))
    );
    assert_eq!(
        documented(Kind::Async(Action::ActivateOrder), Why::OperationActive),
        Some((II, 403))
    );
    assert_eq!(
        documented(Kind::Async(Action::ActivateOrder), Why::OrderStatus),
        Some((UE, 500))
    );
    assert_eq!(
        documented(Kind::Update, Why::NotStoreMember),
        Some((ISA, 400))
    );
    assert_eq!(
        documented(Kind::Cancel, Why::NotStoreMember),
        Some((ISA, 500))
    );
    assert_eq!(documented(Kind::Cancel, Why::OperationActive), None);
    assert_eq!(documented(Kind::Cancel, Why::Expired), None);
    assert_eq!(
        documented(Kind::Start, Why::CheckoutDisabled),
        Some((IO, 403))
    );
    assert_eq!(documented(Kind::Authorize, Why::ErrorOutputs), None);
}

// ---------------------------------------------------------------------------------------------
// The checks over other templates, and what random templates found.

/// A template the standard one is not: a screen of a new name after Shipping Address, and no
/// Taxes step.
fn other_template() -> TransitionTable {
    let mut template = Template::standard();
    template.remove_step(SessionState::Taxes);
    let screen = TemplateStep::new(SessionState::new("Prüfung").unwrap(), StepKind::Screen);
    assert!(template.insert_step(SessionState::ShippingAddress, screen));
    TransitionTable::build(template).unwrap()
}

/// The checks the random templates rely on fail on stores and drawings that broke them.
#[test]
fn the_checks_over_other_templates_reject_doctored_stores_and_drawings() {
    // A session at Activate Order (index 12 of this template's States), locked, with its
    // Draft order: every step before it has passed.
    let activate = locked_with_its_order(12);
    let table = other_template();
    let h = Harness::with_table(
        &one_cart(CartStatus::Checkout, Some(activate)),
        table.clone(),
    );
    let before = h.store.to_dataset();
    assert_eq!(
        before.sessions[0].state,
        Some(SessionState::ActivateOrder),
        "the seed"
    );
    assert_eq!(h.check_states(&before), Ok(()));

    // A session at a State that is no step of the template (Taxes was removed).
    let mut stray = before.clone();
    stray.sessions[0].state = Some(SessionState::Taxes);
    assert!(h.check_states(&stray).is_err());

    // An activation in a session one of whose steps never passed.
    let mut activated = before.clone();
    activated.orders[0].status = OrderStatus::Activated;
    activated.sessions[0].state = Some(SessionState::OrderConfirmation);
    let coverage = &mut Coverage::default();
    assert_eq!(h.check_orders(&before, &activated, coverage), Ok(()));
    let price = Action::PriceCart.api_name();
    let unpriced = |data: &DataSet| {
        let mut data = data.clone();
        data.operations.retain(|o| o.name != price);
        data
    };
    assert!(
        h.check_orders(&unpriced(&before), &unpriced(&activated), coverage)
            .is_err()
    );

    // A cart that closes without the closing row: on another event, or from another step.
    let mut confirmed = before.clone();
    confirmed.sessions[0].state = Some(SessionState::OrderConfirmation);
    confirmed.sessions[0].is_processing = false;
    let mut closed = confirmed.clone();
    closed.carts[0].status = CartStatus::Closed;
    closed.sessions[0].state = Some(SessionState::Complete);
    closed.sessions[0].is_archived = true;
    assert_eq!(
        h.check_closing(&confirmed, &closed, &[Event::Close]),
        Ok(())
    );
    assert!(
        h.check_closing(&confirmed, &closed, &[Event::Advance])
            .is_err()
    );
    assert!(h.check_closing(&before, &closed, &[Event::Close]).is_err());

    // A drawing that lacks an edge, declares a node twice, or draws one edge twice.
    let dot = cartflow::diagram::dot(&table);
    let mermaid = cartflow::diagram::mermaid(&table);
    assert_eq!(check_drawing(&table, &dot, &mermaid), Ok(()));
    let edge = dot.lines().find(|l| l.contains(" -> ")).unwrap();
    let node = dot
        .lines()
        .find(|l| l.contains("session_pru00fcfung ["))
        .unwrap();
    let without_edge = dot.replace(&format!("{edge}\n"), "");
    let twice = |line: &str| dot.replace(line, &format!("{line}\n{line}"));
    for broken in [without_edge, twice(node), twice(edge)] {
        assert!(check_drawing(&table, &broken, &mermaid).is_err());
    }
}

/// The diagram and the history name a node by its label, so no two nodes of a table may read
/// alike: a step named like another step's phase (`Inventory (locked)`) or like a fixed node
/// (`Archived`, `no session`) is refused, naming the State; and the generator's own names
/// never read alike (every generated template's drawing passes `check_diagram`).
#[test]
fn no_two_nodes_of_a_table_read_alike() {
    for name in [
        "Inventory (locked)",
        "Archived",
        "no session",
        "Shipping Cost (running)",
    ] {
        let mut template = Template::standard();
        let screen = TemplateStep::new(SessionState::new(name).unwrap(), StepKind::Screen);
        assert!(template.insert_step(SessionState::DeliveryMethod, screen));
        assert_eq!(
            TransitionTable::build(template).map(|_| ()),
            Err(TableError::ReadsLikeNode(name.to_owned())),
            "{name}"
        );
    }
}

/// Only a screen's move into the terminal step closes the cart: a template whose last step
/// before Complete is async would activate its order and never close, so it is refused; the
/// standard template, whose Order Confirmation screen closes, drives to a Closed cart.
#[test]
fn a_checkout_whose_last_step_is_async_is_refused_and_the_standard_one_closes() {
    let mut template = Template::standard();
    template.remove_step(SessionState::OrderConfirmation);
    assert!(matches!(
        TransitionTable::build(template),
        Err(TableError::BadNext(state, _)) if state == "Activate Order"
    ));
    let mut h = Harness::with_table(
        &one_cart(CartStatus::Active, None),
        TransitionTable::standard(),
    );
    let (mut seen, mut gated) = (BTreeSet::new(), false);
    // Panics when the cart is not Closed within 200 steps.
    drive(&mut h, 0, 0, None, &mut seen, &mut gated);
}

/// The amounts checks fail on stores that broke the amounts promises: a cart whose totals
/// are not its lines', an authorisation of another amount than the order's total, an order
/// made without the delivery method (or the charge line) its cart was offered, and an
/// activated order whose tax is not what the providers compute over its inputs.
#[test]
fn the_amounts_checks_reject_doctored_stores() {
    let mut world = one_cart(CartStatus::Active, None);
    world.sample = true;
    world.stores[0].payment = Payment::Gateway;
    let mut h = Harness::new(&world);
    let (mut seen, mut gated) = (BTreeSet::new(), false);
    let activate = Some(SessionState::ActivateOrder);
    drive(&mut h, 0, SALT_DETAILS, activate, &mut seen, &mut gated);
    let drafted = h.store.to_dataset();
    drive(&mut h, 0, SALT_DETAILS, None, &mut seen, &mut gated);
    let done = h.store.to_dataset();
    let order = &done.orders[0];
    assert_eq!(order.status, OrderStatus::Activated, "the seed");
    assert!(order.payment_authorization_id.is_some() && order.authorized_amount.is_some());
    let coverage = &mut Coverage::default();
    assert_eq!(h.check_amounts(&drafted, &done, coverage), Ok(()));
    assert!(
        coverage
            .seen
            .contains_key("an activated order's amounts were computed again")
    );

    // A cart whose totals are not its lines'.
    let mut untotalled = done.clone();
    untotalled.carts[0].total_tax_amount = None;
    assert!(h.check_amounts(&done, &untotalled, coverage).is_err());
    // An authorisation of another amount than the order's grand total.
    let mut overcharged = done.clone();
    overcharged.orders[0].authorized_amount = order.grand_total_amount.map(|t| t + Decimal::ONE);
    assert!(h.check_amounts(&done, &overcharged, coverage).is_err());
    // An activated order taxed for other inputs than its own (its totals still add up).
    let mut stale = done.clone();
    let cent = Decimal::new(1, 2);
    let line = stale.orders[0]
        .items
        .iter_mut()
        .find(|i| i.item_type == CartItemType::Product)
        .expect("a product line");
    line.tax_amount = line.tax_amount.map(|t| t + cent);
    stale.orders[0].grand_total_amount = order.grand_total_amount.map(|t| t + cent);
    stale.orders[0].authorized_amount = stale.orders[0].grand_total_amount;
    assert!(h.check_amounts(&drafted, &stale, coverage).is_err());
    // An order made without the delivery method, or the charge line, its cart was offered.
    let mut unmade = drafted.clone();
    unmade.orders.clear();
    assert_eq!(h.check_amounts(&unmade, &drafted, coverage), Ok(()));
    let mut no_charge = drafted.clone();
    no_charge.orders[0]
        .items
        .retain(|i| i.item_type != CartItemType::Charge);
    assert!(h.check_amounts(&unmade, &no_charge, coverage).is_err());
    let mut no_method = drafted.clone();
    no_method.orders[0].delivery_method_id = None;
    assert!(h.check_amounts(&unmade, &no_method, coverage).is_err());
}

/// Over the sample providers: the buyer's new address after Taxes sends the session back to
/// Shipping Cost and drops the taxes; once the order exists, another delivery method is
/// refused 403 `INVALID_OPERATION` with nothing changed; the order activated at the end ships
/// to the new address with its tax (the harness checks every amounts promise at each step).
#[test]
fn a_change_after_taxes_goes_back_and_one_after_the_order_is_refused() {
    let mut world = one_cart(CartStatus::Active, None);
    world.sample = true;
    world.stores[0].payment = Payment::Gateway;
    let mut h = Harness::new(&world);
    let (mut seen, mut gated) = (BTreeSet::new(), false);
    let payment_screen = Some(SessionState::PaymentAndBillingAddress);
    drive(
        &mut h,
        0,
        SALT_DETAILS,
        payment_screen,
        &mut seen,
        &mut gated,
    );
    let taxed = h.store.to_dataset();
    assert!(taxed.items.iter().any(|i| i.tax_amount.is_some()), "taxed");
    let (owner, cart) = (ActorRef::Owner(0), CartRef::Known(0, IdForm::Full));
    let denver = Step::Details {
        actor: owner,
        cart,
        details: DetailsChoice {
            address: 1,
            method: 0,
            token: 0,
        },
    };
    let coverage = &mut Coverage::default();
    let answer = h.step(&denver, coverage, None).expect("invariants hold");
    assert!(matches!(answer, Some(Answer::Ok(_))), "{answer:?}");
    let after = h.store.to_dataset();
    assert_eq!(after.sessions[0].state, Some(SessionState::ShippingCost));
    assert!(after.items.iter().all(|i| i.tax_amount.is_none()));
    assert!(
        coverage
            .seen
            .contains_key("an input change sent the session back")
    );

    drive(
        &mut h,
        0,
        SALT_DETAILS,
        Some(SessionState::AuthorizePayment),
        &mut seen,
        &mut gated,
    );
    let before = h.store.to_dataset();
    let other = Step::DeliveryMethod {
        actor: owner,
        cart,
        method: 1,
        rest: true,
    };
    let answer = h.step(&other, coverage, None).expect("invariants hold");
    assert_eq!(answer, Some(Answer::Err("INVALID_OPERATION".into(), 403)));
    assert_eq!(h.store.to_dataset(), before, "nothing changed");

    drive(&mut h, 0, SALT_DETAILS, None, &mut seen, &mut gated);
    let order = &h.store.to_dataset().orders[0];
    assert_eq!(order.status, OrderStatus::Activated);
    assert_eq!(order.deliver_to, Some(cartflow::sample::denver()));
    assert!(order.items.iter().any(|i| i.tax_amount.is_some()));
    assert_eq!(order.authorized_amount, order.grand_total_amount);
}
