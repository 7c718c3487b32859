//! Property tests of the engine: random worlds, random command sequences by random actors,
//! interleaved with worker steps, checked after every step against the transition table, the
//! store's invariants and a reference model written from `domain.md` and `design.md`.
//!
//! The generator produces abstract steps (indices and choices); each is turned into a concrete
//! command only when it runs, against the model's view of the world at that moment. That keeps
//! generation independent of state (plain proptest, good shrinking) while still letting a
//! `Hub` step issue the command the checkout flow would issue next, so sequences reach deep
//! steps and not only early refusals.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use cartflow::clock::ManualClock;
use cartflow::ids::SequentialIds;
use cartflow::integrations::{
    IntegrationRequest, Integrations, InventoryProvider, ProviderError, StockTable, Verdict,
};
use cartflow::machine::{
    Action, Command, Event, Machine, Node, OperationNode, Output, Phase, SessionNode, StepOutcome,
    TransitionTable, ValidationMessage, operation_node, session_node,
};
use cartflow::model::{
    Access, Account, BackgroundOperation, CartCheckoutSession, CartItem, CartItemType, CartShare,
    CartStatus, CartValidationOutput, KeyPrefix, Level, MAX_MESSAGE_LEN, OperationStatus,
    OutputType, Permission, ProviderKind, SessionState, SfId, User, WebCart, WebStore,
};
use cartflow::store::{DataSet, StockLevel};
use cartflow::{Engine, ErrorCode, MemoryStore};
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestError, TestRunner};
use rust_decimal::Decimal;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The standard checkout as domain.md §3 lists it: the model's own copy, not the crate's template.

/// What a step of the standard template does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Entry,
    Screen,
    Async(Action),
    Payment,
    Terminal,
}

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

/// The async actions a user can invoke (`domain.md` §2); payment has no core action.
const ASYNC_ACTIONS: [Action; 7] = [
    Action::CheckCartInventory,
    Action::PriceCart,
    Action::CalcCartPromotions,
    Action::CalcCartShipment,
    Action::CalcCartTaxes,
    Action::CartToOrder,
    Action::ActivateOrder,
];

fn stage_of(state: SessionState) -> Option<Stage> {
    STEPS.iter().find(|(s, _)| *s == state).map(|(_, k)| *k)
}

fn next_of(state: SessionState) -> Option<SessionState> {
    let i = STEPS.iter().position(|(s, _)| *s == state)?;
    match STEPS[i].1 {
        Stage::Terminal => None,
        _ => STEPS.get(i + 1).map(|(s, _)| *s),
    }
}

fn step_of_action(action: Action) -> Option<SessionState> {
    STEPS
        .iter()
        .find(|(_, k)| *k == Stage::Async(action))
        .map(|(s, _)| *s)
}

/// Cart to Order and Activate Order answer Unsupported in this version of cartflow.
fn implemented(action: Action) -> bool {
    !matches!(action, Action::CartToOrder | Action::ActivateOrder)
}

/// The provider kind an async action runs (`domain.md` §4).
fn provider_kind(action: Action) -> ProviderKind {
    match action {
        Action::PriceCart => ProviderKind::Price,
        Action::CalcCartPromotions => ProviderKind::Promotions,
        Action::CalcCartShipment => ProviderKind::Shipment,
        Action::CalcCartTaxes => ProviderKind::Tax,
        _ => ProviderKind::Inventory,
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
    Async(Action),
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
    CartStatus,
    CheckoutInProgress,
    InitialState,
    NoActiveSession,
    EmptyState,
    Locked,
    ExpectedStateMismatch,
    NotNextStep,
    NotLocked,
    WrongStep,
    WrongNextState,
    OperationActive,
    Unsupported,
}

use ErrorCode::{
    AlreadyInProcess as AIP, BadRequest as BR, InsufficientAccessOrReadonly as ISA,
    InvalidOperation as IO, UnknownException as UE,
};

/// Every (errorCode, HTTP status) an action may answer: domain.md §2.1 for the async actions
/// and cancel, §2.2 for the session actions, with the statuses `requirement.rs` fixes where the
/// documentation gives only "4xx" (a lost compare-and-set is 409), and 501 for the actions not
/// implemented yet.
fn documented_pairs(kind: Kind) -> &'static [(ErrorCode, u16)] {
    match kind {
        Kind::Start => &[(BR, 400), (UE, 500), (IO, 403)],
        Kind::Update | Kind::Advance => &[(BR, 400), (UE, 403), (ISA, 400), (IO, 403), (IO, 409)],
        Kind::Async(Action::CartToOrder | Action::ActivateOrder) => &[
            (BR, 400),
            (UE, 500),
            (ISA, 500),
            (IO, 403),
            (AIP, 400),
            (UE, 501),
        ],
        Kind::Async(_) => &[(BR, 400), (UE, 500), (ISA, 500), (IO, 403), (AIP, 400)],
        Kind::Cancel => &[(BR, 400), (UE, 500), (ISA, 500), (IO, 403)],
    }
}

/// The pair the documentation gives for one refusal of one action; `None` when the action
/// cannot be refused for that reason (a bug in the model).
fn documented(kind: Kind, why: Why) -> Option<(ErrorCode, u16)> {
    use Kind as K;
    use Why as W;
    let session_action = matches!(kind, K::Update | K::Advance);
    let cart_action = matches!(kind, K::Start | K::Async(_) | K::Cancel);
    Some(match why {
        W::CannotInvoke => (BR, 400),
        W::InvalidCartId if cart_action => (UE, 500),
        W::InvalidSessionId if session_action => (UE, 403),
        W::NoEditAccess if cart_action => (BR, 400),
        W::NoEditAccess | W::AccountInvalid | W::NotStoreMember if session_action => (ISA, 400),
        W::AccountInvalid | W::NotStoreMember if kind == K::Start => (BR, 400),
        W::AccountInvalid | W::NotStoreMember => (ISA, 500),
        W::CartStatus => (IO, 403),
        W::CheckoutInProgress if kind == K::Start => (BR, 400),
        W::InitialState if kind == K::Start => (UE, 500),
        W::NoActiveSession | W::EmptyState if session_action || matches!(kind, K::Async(_)) => {
            (IO, 403)
        }
        W::NotNextStep if session_action => (IO, 403),
        W::Locked | W::ExpectedStateMismatch if session_action => (IO, 409),
        W::NotLocked | W::WrongStep | W::WrongNextState if matches!(kind, K::Async(_)) => (IO, 403),
        W::OperationActive if matches!(kind, K::Async(_)) => (AIP, 400),
        W::Unsupported if matches!(kind, K::Async(a) if !implemented(a)) => (UE, 501),
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

#[derive(Debug, Clone)]
struct StoreSpec {
    members: u8,
    mapping: Mapping,
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
    /// Index into `SessionState::ALL`; `None` is an empty State.
    state: Option<u8>,
    /// 0 open, 1 locked, 2 running with a New operation, 3 running with a Running one.
    phase: u8,
    wrong_next: bool,
}

#[derive(Debug, Clone)]
struct CartSpec {
    /// A cart of the main buyer in the main store: most commands on it get past security.
    good: bool,
    store: u8,
    account: u8,
    owner: u8,
    status: CartStatus,
    shares: Vec<(u8, Access)>,
    items: Vec<ItemSpec>,
    archived: u8,
    active: Option<ActiveSeed>,
    outputs: u8,
}

#[derive(Debug, Clone)]
struct WorldSpec {
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

fn cart_spec() -> impl Strategy<Value = CartSpec> {
    let item = (0u8..8, 1u8..=4, prop::bool::weighted(0.15)).prop_map(|(sku, quantity, charge)| {
        ItemSpec {
            sku,
            quantity,
            charge,
        }
    });
    let share = (0u8..8, prop_oneof![Just(Access::Read), Just(Access::Edit)]);
    let active = prop::option::weighted(
        0.4,
        (
            prop::option::weighted(0.95, 0u8..16),
            0u8..4,
            prop::bool::weighted(0.2),
        )
            .prop_map(|(state, phase, wrong_next)| ActiveSeed {
                state,
                phase,
                wrong_next,
            }),
    );
    (
        prop::bool::weighted(0.7),
        (0u8..8, 0u8..8, 0u8..8),
        cart_status(),
        prop::collection::vec(share, 0..3),
        prop::collection::vec(item, 0..5),
        (0u8..3, active, 0u8..3),
    )
        .prop_map(
            |(
                good,
                (store, account, owner),
                status,
                shares,
                items,
                (archived, active, outputs),
            )| {
                CartSpec {
                    good,
                    store,
                    account,
                    owner,
                    status,
                    shares,
                    items,
                    archived,
                    active,
                    outputs,
                }
            },
        )
}

fn world_spec() -> impl Strategy<Value = WorldSpec> {
    let mapping = prop_oneof![
        1 => Just(Mapping::Internal),
        1 => Just(Mapping::Stock),
        2 => Just(Mapping::Scripted),
    ];
    (
        prop::collection::vec(
            (any::<u8>(), mapping).prop_map(|(members, mapping)| StoreSpec { members, mapping }),
            1..=3,
        ),
        prop::collection::vec(prop::bool::weighted(0.8), 1..=3),
        prop::collection::vec(
            (0u8..8, 0u8..8).prop_map(|(account, permissions)| UserSpec {
                account,
                permissions,
            }),
            2..=5,
        ),
        prop::collection::vec(cart_spec(), 1..=4),
    )
        .prop_map(|(stores, accounts, users, carts)| WorldSpec {
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

/// Builds the data set, the model and the store mappings of a world.
fn build(spec: &WorldSpec) -> (DataSet, Model) {
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
            checkout_time_to_live: Some(2880),
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
        mappings.push((store, s.mapping));
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
    let (mut items, mut sessions, mut ops, mut outputs) = (0u64, 0u64, 0u64, 0u64);
    let mut model_carts = Vec::new();
    for (c, spec) in spec.carts.iter().enumerate() {
        let cart_id = id(KeyPrefix::WebCart, c as u64 + 1);
        let (store, account, owner, status) = if spec.good {
            let status = spec.status;
            (
                id(KeyPrefix::WebStore, 1),
                id(KeyPrefix::Account, 1),
                id(KeyPrefix::User, 1),
                status,
            )
        } else {
            (
                pick(KeyPrefix::WebStore, spec.store, n_stores),
                pick(KeyPrefix::Account, spec.account, n_accounts),
                pick(KeyPrefix::User, spec.owner, n_users),
                spec.status,
            )
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
            ..WebCart::new(cart_id, store, account, owner, status)
        };
        let mut cart_items = Vec::new();
        for item in &spec.items {
            items += 1;
            cart_items.push(CartItem {
                item_type: if item.charge {
                    CartItemType::Charge
                } else {
                    CartItemType::Product
                },
                ..CartItem::product(
                    id(KeyPrefix::CartItem, items),
                    cart_id,
                    SKUS[usize::from(item.sku) % SKUS.len()].map(str::to_owned),
                    Decimal::from(item.quantity),
                )
            });
        }
        let mut m_sessions = Vec::new();
        let mut m_ops = Vec::new();
        let mut seed_op = |action: Action,
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
                name: action.api_name().into(),
                cart_id,
                checkout_session_id: session,
                provider_kind: provider_kind(action),
                status,
                error: None,
                submitted_at: submitted,
                started_at: running.then_some(submitted),
                finished_at: (!status.is_active()).then_some(submitted),
                expires_at: running.then(|| submitted + Duration::seconds(150)),
                attempt: u32::from(status != OperationStatus::New),
                retry_limit: 2,
                timeout_ms: 120_000,
                version: 0,
            });
            m_ops.push(MOp {
                id: op_id,
                action,
                status,
                submitted,
            });
            op_id
        };
        for k in 0..spec.archived {
            sessions += 1;
            let session_id = id(KeyPrefix::CartCheckoutSession, sessions);
            let state = STEPS[usize::from(k * 5) % STEPS.len()].0;
            let op = (k % 2 == 0).then(|| {
                seed_op(
                    Action::CheckCartInventory,
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
            };
            data.sessions.push(session.record(cart_id));
            m_sessions.push(session);
        }
        if let Some(seed) = &spec.active {
            sessions += 1;
            let session_id = id(KeyPrefix::CartCheckoutSession, sessions);
            let state = seed
                .state
                .map(|k| SessionState::ALL[usize::from(k) % SessionState::ALL.len()]);
            let stage = state.and_then(stage_of);
            // Locked and running are phases of async and payment steps only; a queued
            // operation needs a provider kind.
            let lockable = matches!(stage, Some(Stage::Async(_) | Stage::Payment));
            let runnable = matches!(stage, Some(Stage::Async(a)) if implemented(a));
            let phase = match seed.phase {
                0 => 0,
                1 if lockable => 1,
                2 | 3 if runnable => seed.phase,
                _ if lockable => 1,
                _ => 0,
            };
            let mut session = MSession {
                id: session_id,
                state,
                next: None,
                processing: phase > 0,
                error: state == Some(SessionState::Error),
                archived: false,
                op: None,
            };
            if phase > 0 {
                let next = state.and_then(next_of);
                session.next = if seed.wrong_next && phase == 1 {
                    Some(SessionState::Error)
                } else {
                    next
                };
            }
            if phase >= 2 {
                let Some(Stage::Async(action)) = stage else {
                    unreachable!("runnable steps are async")
                };
                let status = if phase == 2 {
                    OperationStatus::New
                } else {
                    OperationStatus::Running
                };
                session.op = Some(seed_op(action, session_id, status, &mut data, &mut m_ops));
            }
            data.sessions.push(session.record(cart_id));
            m_sessions.push(session);
        }
        for _ in 0..spec.outputs {
            outputs += 1;
            data.validation_outputs.push(CartValidationOutput {
                id: id(KeyPrefix::CartValidationOutput, outputs),
                cart_id,
                background_operation_id: None,
                level: Level::Error,
                output_type: OutputType::Inventory,
                message: "seeded".into(),
                related_entity_id: Some(cart_id),
                is_dismissed: false,
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
            outputs: usize::from(spec.outputs),
        });
    }
    let model = Model {
        users: data.users.clone(),
        accounts: data.accounts.clone(),
        stores: data.stores.clone(),
        mappings,
        carts: model_carts,
    };
    (data, model)
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
            order_id: None,
            created_date: None,
            version: 0,
        }
    }
}

#[derive(Debug, Clone)]
struct MOp {
    id: SfId,
    action: Action,
    status: OperationStatus,
    submitted: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct MCart {
    record: WebCart,
    status: CartStatus,
    items: Vec<CartItem>,
    sessions: Vec<MSession>,
    ops: Vec<MOp>,
    outputs: usize,
}

impl MCart {
    fn active(&self) -> Option<usize> {
        self.sessions.iter().position(|s| !s.archived)
    }

    fn op_active(&self) -> bool {
        self.ops.iter().any(|o| is_active(o.status))
    }
}

fn is_active(status: OperationStatus) -> bool {
    matches!(status, OperationStatus::New | OperationStatus::Running)
}

/// The model's world: plain data plus the checkout state the model predicts.
#[derive(Debug, Clone)]
struct Model {
    users: Vec<User>,
    accounts: Vec<Account>,
    stores: Vec<WebStore>,
    mappings: Vec<(SfId, Mapping)>,
    carts: Vec<MCart>,
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
    Run {
        action: Action,
        cart: String,
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
            Call::Advance { .. } => Kind::Advance,
            Call::Run { action, .. } => Kind::Async(*action),
            Call::Cancel { .. } => Kind::Cancel,
        }
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
                action,
                cart_id: cart,
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
            Call::Cancel { cart } => ("cancelCartAsyncOperation", json!({"cartId": cart})),
            Call::Advance { .. } => return None,
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
    Run {
        cart: usize,
        action: Action,
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

    /// Accept or refuse, in design.md's requirement order: permission, the ID, edit access,
    /// the account, store membership, then the action's own rules.
    fn decide(&self, call: &Call, actor: Option<SfId>, named: Option<SfId>) -> Result<Plan, Why> {
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
                if active.is_some_and(|s| s.processing) {
                    return Err(Why::CheckoutInProgress);
                }
                if initial.as_deref().is_some_and(|i| i != "Start") {
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
                if session.archived {
                    return Err(Why::NoActiveSession);
                }
                let state = session.state.ok_or(Why::EmptyState)?;
                if session.processing {
                    return Err(Why::Locked);
                }
                let update = matches!(call, Call::Update { .. });
                // Update Checkout Session is a compare-and-set: it succeeds only when the
                // State equals expCurrentState (§2.2). A screen step may skip the check (§3).
                let exp_matches = match exp.as_deref() {
                    Some(e) => e == state.as_str(),
                    None => !update,
                };
                if !exp_matches {
                    return Err(Why::ExpectedStateMismatch);
                }
                let step_fits = match stage_of(state) {
                    Some(Stage::Async(_) | Stage::Payment) => update,
                    Some(Stage::Entry | Stage::Screen) => !update,
                    _ => false,
                };
                let next = next_of(state).filter(|n| step_fits && n.as_str() == to);
                match next {
                    None => Err(Why::NotNextStep),
                    Some(_) if update => Ok(Plan::Update {
                        cart: c,
                        session: s,
                    }),
                    Some(to) => Ok(Plan::Advance {
                        cart: c,
                        session: s,
                        to,
                    }),
                }
            }
            Call::Run { action, .. } => {
                if cart.status != CartStatus::Checkout {
                    return Err(Why::CartStatus);
                }
                let session = active.ok_or(Why::NoActiveSession)?;
                let state = session.state.ok_or(Why::EmptyState)?;
                if !session.processing {
                    return Err(Why::NotLocked);
                }
                if step_of_action(*action) != Some(state) {
                    return Err(Why::WrongStep);
                }
                if session.next != next_of(state) {
                    return Err(Why::WrongNextState);
                }
                if cart.op_active() {
                    return Err(Why::OperationActive);
                }
                if !implemented(*action) {
                    return Err(Why::Unsupported);
                }
                Ok(Plan::Run {
                    cart: c,
                    action: *action,
                })
            }
            Call::Cancel { .. } => {
                if cart.status == CartStatus::Closed {
                    return Err(Why::CartStatus);
                }
                Ok(Plan::Cancel { cart: c })
            }
        }
    }

    /// Applies an accepted plan, checking the engine's output against it.
    fn apply(&mut self, plan: Plan, answer: &Answer, now: DateTime<Utc>) -> Result<(), String> {
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
                        Some(i) if c.sessions[i].state != Some(SessionState::Error) => {
                            same("requestId", c.sessions[i].id)?;
                            None
                        }
                        _ => Some(fresh("requestId")?),
                    }
                };
                let c = &mut self.carts[cart];
                c.status = CartStatus::Checkout;
                c.outputs = 0;
                if let Some(new) = created {
                    if let Some(i) = c.active() {
                        c.sessions[i].archived = true;
                        c.sessions[i].processing = false;
                    }
                    c.sessions.push(MSession {
                        id: new,
                        state: Some(SessionState::Start),
                        next: None,
                        processing: false,
                        error: false,
                        archived: false,
                        op: None,
                    });
                }
            }
            Plan::Update { cart, session } => {
                let s = &mut self.carts[cart].sessions[session];
                same("requestId", s.id)?;
                s.next = s.state.and_then(next_of);
                s.processing = true;
            }
            Plan::Advance { cart, session, to } => {
                let s = &mut self.carts[cart].sessions[session];
                same("requestId", s.id)?;
                s.state = Some(to);
            }
            Plan::Run { cart, action } => {
                let op = fresh("backgroundOperationId")?;
                let c = &mut self.carts[cart];
                c.ops.push(MOp {
                    id: op,
                    action,
                    status: OperationStatus::New,
                    submitted: now,
                });
                let i = c.active().expect("decide saw an active session");
                c.sessions[i].op = Some(op);
            }
            Plan::Cancel { cart } => {
                if output.is_some() {
                    return Err(format!("cancel answers no output, got {output:?}"));
                }
                let c = &mut self.carts[cart];
                if let Some(i) = c.active() {
                    let s = &mut c.sessions[i];
                    s.archived = true;
                    s.processing = false;
                    if let Some(op) = c.ops.iter_mut().find(|o| Some(o.id) == s.op)
                        && is_active(op.status)
                    {
                        op.status = OperationStatus::Canceled;
                    }
                }
                // "returns the cart to Active" (§2.2): from Checkout, and from Processing.
                // PendingClosed and PendingDelete belong to the platform's own processes and
                // stay as they are.
                if matches!(c.status, CartStatus::Checkout | CartStatus::Processing) {
                    c.status = CartStatus::Active;
                }
            }
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

    /// What the operation's provider will answer (domain.md §4 for the stock table).
    fn predict(&self, cart: usize, op: SfId, behaviour: Behaviour) -> Outcome {
        let c = &self.carts[cart];
        let action = c.ops.iter().find(|o| o.id == op).map(|o| o.action);
        if action != Some(Action::CheckCartInventory) {
            return Outcome::Passed;
        }
        let mapping = self
            .mappings
            .iter()
            .find(|(store, _)| *store == c.record.web_store_id)
            .map_or(Mapping::Internal, |(_, m)| *m);
        match mapping {
            Mapping::Internal => Outcome::Passed,
            Mapping::Scripted => match behaviour {
                Behaviour::Pass => Outcome::Passed,
                Behaviour::Fail(n) => Outcome::Failed(usize::from(n)),
                Behaviour::FailSilently | Behaviour::Error | Behaviour::Panic => Outcome::System,
            },
            Mapping::Stock => {
                let products: Vec<&CartItem> = c
                    .items
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
        }
    }

    /// Applies a worker's run of `op` (domain.md §3: success moves State to NextState, failure
    /// to Error with outputs; either way the lock is released).
    fn finish(&mut self, cart: usize, op: SfId, outcome: Outcome) {
        let c = &mut self.carts[cart];
        let status = match outcome {
            Outcome::Passed => OperationStatus::Complete,
            _ => OperationStatus::Error,
        };
        if let Some(o) = c.ops.iter_mut().find(|o| o.id == op) {
            o.status = status;
        }
        if let Some(s) = c
            .sessions
            .iter_mut()
            .find(|s| s.op == Some(op) && !s.archived)
        {
            s.processing = false;
            match outcome {
                Outcome::Passed => s.state = s.next.take(),
                _ => {
                    s.state = Some(SessionState::Error);
                    s.next = None;
                    s.error = true;
                }
            }
        }
        c.outputs += match outcome {
            Outcome::Passed => 0,
            Outcome::Failed(n) => n,
            Outcome::System => 1,
        };
    }

    /// The model and the store agree on every cart, session, operation and output count.
    fn compare(&self, data: &DataSet) -> Result<(), String> {
        for cart in &self.carts {
            let id = cart.record.id;
            let stored = data
                .carts
                .iter()
                .find(|c| c.id == id)
                .ok_or_else(|| format!("cart {id} vanished"))?;
            if stored.status != cart.status {
                return Err(format!(
                    "cart {id}: model {:?}, store {:?}",
                    cart.status, stored.status
                ));
            }
            let sessions: BTreeMap<SfId, MSession> = data
                .sessions
                .iter()
                .filter(|s| s.web_cart_id == id)
                .map(|s| {
                    let m = MSession {
                        id: s.id,
                        state: s.state,
                        next: s.next_state,
                        processing: s.is_processing,
                        error: s.is_error,
                        archived: s.is_archived,
                        op: s.background_operation_id,
                    };
                    (s.id, m)
                })
                .collect();
            let expected: BTreeMap<SfId, MSession> =
                cart.sessions.iter().map(|s| (s.id, s.clone())).collect();
            if sessions != expected {
                return Err(format!(
                    "cart {id} sessions:\n  model {expected:?}\n  store {sessions:?}"
                ));
            }
            let ops: BTreeMap<SfId, OperationStatus> = data
                .operations
                .iter()
                .filter(|o| o.cart_id == id)
                .map(|o| (o.id, o.status))
                .collect();
            let expected: BTreeMap<SfId, OperationStatus> =
                cart.ops.iter().map(|o| (o.id, o.status)).collect();
            if ops != expected {
                return Err(format!(
                    "cart {id} operations: model {expected:?}, store {ops:?}"
                ));
            }
            let outputs = data
                .validation_outputs
                .iter()
                .filter(|o| o.cart_id == id)
                .count();
            if outputs != cart.outputs {
                return Err(format!(
                    "cart {id}: model {} outputs, store {outputs}",
                    cart.outputs
                ));
            }
        }
        Ok(())
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

#[derive(Debug, Clone)]
enum Step {
    /// The command the checkout flow would issue next for the cart at this index.
    Hub {
        cart: usize,
        salt: u8,
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
    Cancel {
        actor: ActorRef,
        cart: CartRef,
        rest: bool,
    },
    Worker(Behaviour),
}

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
        2 => (0usize..16).prop_map(StateChoice::Any),
        1 => (0usize..4).prop_map(StateChoice::Garbage),
    ]
}

fn exp_choice() -> impl Strategy<Value = ExpChoice> {
    prop_oneof![
        2 => Just(ExpChoice::Omitted),
        8 => Just(ExpChoice::Current),
        1 => (0usize..16).prop_map(ExpChoice::Any),
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

fn behaviour_of(salt: u8) -> Behaviour {
    match (salt >> 2) % 10 {
        0..=4 => Behaviour::Pass,
        5 => Behaviour::Fail(1),
        6 => Behaviour::Fail(3),
        7 => Behaviour::FailSilently,
        8 => Behaviour::Error,
        _ => Behaviour::Panic,
    }
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (0usize..4, any::<u8>()).prop_map(|(cart, salt)| Step::Hub { cart, salt }),
        2 => (actor_ref(), cart_ref(), exp_choice(), any::<bool>()).prop_map(
            |(actor, cart, initial, rest)| Step::Start { actor, cart, initial, rest }
        ),
        2 => (actor_ref(), session_ref(), state_choice(), exp_choice(), any::<bool>()).prop_map(
            |(actor, session, next, exp, rest)| Step::Update { actor, session, next, exp, rest }
        ),
        2 => (actor_ref(), session_ref(), state_choice(), exp_choice()).prop_map(
            |(actor, session, state, exp)| Step::Advance { actor, session, state, exp }
        ),
        2 => (actor_ref(), 0usize..ASYNC_ACTIONS.len(), cart_ref(), any::<bool>()).prop_map(
            |(actor, action, cart, rest)| Step::Run { actor, action, cart, rest }
        ),
        1 => (actor_ref(), cart_ref(), any::<bool>()).prop_map(
            |(actor, cart, rest)| Step::Cancel { actor, cart, rest }
        ),
        3 => behaviour().prop_map(Step::Worker),
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
// The engine under test.

/// Where the scripted provider tells that it was called, and waits to be released.
type Gate = (mpsc::Sender<()>, mpsc::Receiver<()>);

/// The scripted inventory provider: answers as the current step says; may wait at a gate so a
/// test can look at the store while the operation is Running.
#[derive(Clone)]
struct Scripted {
    behaviour: Arc<Mutex<Behaviour>>,
    gate: Arc<Mutex<Option<Gate>>>,
}

impl InventoryProvider for Scripted {
    fn check_inventory(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
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

/// Counts of what a run exercised, for the summary line.
#[derive(Debug, Default)]
struct Coverage {
    accepted: BTreeMap<Kind, usize>,
    refused: BTreeMap<(Kind, Why), usize>,
    outcomes: BTreeMap<String, usize>,
    states: BTreeSet<SessionState>,
    steps: usize,
}

/// One engine over one world, the model beside it, and the checks run after every step.
struct Harness {
    engine: Engine,
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
    scripted: Scripted,
    labels: HashMap<(Machine, String), Node>,
    model: Model,
}

/// A step turned into something to run.
enum Resolved {
    User {
        actor: String,
        actor_id: Option<SfId>,
        named: Option<SfId>,
        call: Call,
        rest: bool,
    },
    Worker(Behaviour),
}

impl Harness {
    fn new(spec: &WorldSpec) -> Harness {
        common::quiet_provider_panics();
        let (data, model) = build(spec);
        let scripted = Scripted {
            behaviour: Arc::new(Mutex::new(Behaviour::Pass)),
            gate: Arc::new(Mutex::new(None)),
        };
        let mut integrations = Integrations::new();
        for (store, mapping) in &model.mappings {
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
        }
        let store = Arc::new(MemoryStore::from_dataset(data).expect("a valid world"));
        let clock = Arc::new(ManualClock::new(epoch()));
        let engine = Engine::new(store.clone())
            .with_ids(Arc::new(SequentialIds::starting_at(FIRST_GENERATED)))
            .with_clock(clock.clone())
            .with_integrations(integrations);
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
        }
    }

    fn table(&self) -> &TransitionTable {
        self.engine.table()
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

    fn state_input(choice: StateChoice, current: Option<SessionState>) -> String {
        match choice {
            StateChoice::Next => current
                .and_then(next_of)
                .unwrap_or(SessionState::ShippingAddress)
                .as_str()
                .into(),
            StateChoice::Current => current.map_or("", SessionState::as_str).into(),
            StateChoice::Any(k) => SessionState::ALL[k % SessionState::ALL.len()]
                .as_str()
                .into(),
            StateChoice::Garbage(k) => GARBAGE[k % GARBAGE.len()].into(),
        }
    }

    fn exp_input(choice: ExpChoice, current: Option<SessionState>) -> Option<String> {
        match choice {
            ExpChoice::Omitted => None,
            ExpChoice::Current => current.map(|s| s.as_str().into()),
            ExpChoice::Any(k) => Some(
                SessionState::ALL[k % SessionState::ALL.len()]
                    .as_str()
                    .into(),
            ),
            ExpChoice::Garbage(k) => Some(GARBAGE[k % GARBAGE.len()].into()),
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
            Step::Start {
                actor,
                cart,
                initial,
                rest,
            } => {
                let (cart, named) = self.cart_input(cart);
                let initial = match initial {
                    // The template passes the entry State.
                    ExpChoice::Current => Some("Start".to_owned()),
                    other => Self::exp_input(other, None),
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
                    next: Self::state_input(next, current),
                    exp: Self::exp_input(exp, current),
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
                    state: Self::state_input(state, current),
                    exp: Self::exp_input(exp, current),
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
                let action = ASYNC_ACTIONS[action % ASYNC_ACTIONS.len()];
                user(actor, named, Call::Run { action, cart }, rest)
            }
            Step::Cancel { actor, cart, rest } => {
                let (cart, named) = self.cart_input(cart);
                user(actor, named, Call::Cancel { cart }, rest)
            }
            Step::Worker(behaviour) => Resolved::Worker(behaviour),
        }
    }

    /// The hub loop of domain.md §3 for one cart, as its owner.
    fn hub(&self, index: usize, salt: u8) -> Resolved {
        let cart = self.cart(index);
        let id = cart.record.id;
        let user = |call| Resolved::User {
            actor: cart.record.owner_id.to_string(),
            actor_id: Some(cart.record.owner_id),
            named: Some(id),
            call,
            rest: salt & 1 == 1,
        };
        let on_session = |s: &MSession, call| Resolved::User {
            actor: cart.record.owner_id.to_string(),
            actor_id: Some(cart.record.owner_id),
            named: Some(s.id),
            call,
            rest: salt & 1 == 1,
        };
        let start = Call::Start {
            cart: id.to_string(),
            initial: Some("Start".into()),
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
        match (s.state, s.processing) {
            (None, _) => user(cancel),
            (Some(SessionState::Error), _) if salt & 2 == 0 => user(start),
            (Some(SessionState::Error), _) => user(cancel),
            // Now and then the buyer double-clicks the step that is already running.
            (Some(state), true) if running && salt >> 6 == 3 => match stage_of(state) {
                Some(Stage::Async(action)) => user(Call::Run {
                    action,
                    cart: id.to_string(),
                }),
                _ => Resolved::Worker(behaviour_of(salt)),
            },
            (Some(_), true) if running => Resolved::Worker(behaviour_of(salt)),
            (Some(state), true) => match stage_of(state) {
                Some(Stage::Async(action)) => user(Call::Run {
                    action,
                    cart: id.to_string(),
                }),
                _ => user(cancel),
            },
            (Some(state), false) => {
                let (Some(stage), Some(next)) = (stage_of(state), next_of(state)) else {
                    return user(cancel);
                };
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
                let view = (
                    store.cart(id),
                    store.sessions_of(id),
                    store.operations_of(id),
                    store.validation_outputs(id),
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
        let (events, answer, user_command) = match resolved {
            Resolved::User {
                actor,
                actor_id,
                named,
                call,
                rest,
            } => {
                let answer = self.user_command(&actor, actor_id, named, &call, rest, coverage)?;
                let accepted = matches!(answer, Answer::Ok(_));
                let events = if accepted {
                    vec![call.command().event()]
                } else {
                    vec![]
                };
                (events, Some(answer), true)
            }
            Resolved::Worker(behaviour) => (self.worker(behaviour, coverage, during)?, None, false),
        };
        let after = self.store.to_dataset();
        if events.is_empty() && before != after {
            return Err(format!(
                "a step that was refused or found no work changed the store:\n  step {step:?}\n  answer {answer:?}"
            ));
        }
        let moves = self.check_moves(&before, &after, &events)?;
        let entries = self.check_history(&before, &after, &events)?;
        if user_command && entries != moves {
            return Err(format!(
                "{moves} records moved but the history gained {entries} entries"
            ));
        }
        self.check_store_invariants(&after)?;
        if self.views(&closed) != closed_before {
            return Err("a Closed cart, or one of its records, changed".into());
        }
        self.model.compare(&after)?;
        for s in after.sessions.iter().filter_map(|s| s.state) {
            coverage.states.insert(s);
        }
        Ok(answer)
    }

    fn user_command(
        &mut self,
        actor: &str,
        actor_id: Option<SfId>,
        named: Option<SfId>,
        call: &Call,
        rest: bool,
        coverage: &mut Coverage,
    ) -> Result<Answer, String> {
        let kind = call.kind();
        let expected = self.model.decide(call, actor_id, named);
        let command = call.command();
        let dry = self
            .engine
            .check(actor, &command)
            .map_err(|e| format!("check failed: {e}"))?;
        let answer = self.send(actor, call, rest);
        let context = || format!("{call:?} as {actor:?} (rest: {rest})");
        // The dry run reports the first unmet requirement with the same code as the refusal.
        match expected {
            Err(why) if why != Why::Unsupported => {
                let first = dry.first().map(|u| (u.code, u.status));
                if first != documented(kind, why) {
                    return Err(format!(
                        "{}: the model refuses ({why:?}), the dry run's first unmet is {first:?}",
                        context()
                    ));
                }
            }
            _ if !dry.is_empty() => {
                return Err(format!(
                    "{}: the model expects every requirement met, the dry run says {dry:?}",
                    context()
                ));
            }
            _ => {}
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
            }
            (Ok(plan), Answer::Ok(_)) => {
                let now = self.clock_now();
                self.model
                    .apply(*plan, &answer, now)
                    .map_err(|e| format!("{}: {e}", context()))?;
                *coverage.accepted.entry(kind).or_default() += 1;
            }
            (expected, answer) => {
                return Err(format!(
                    "{}: the model says {expected:?}, the engine answered {answer:?}",
                    context()
                ));
            }
        }
        Ok(answer)
    }

    fn clock_now(&self) -> DateTime<Utc> {
        use cartflow::clock::Clock;
        self.clock.now()
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
                during(&self.store.to_dataset());
                let _ = release_tx.send(());
                worker
                    .join()
                    .map_err(|_| "the worker panicked".to_string())?
            }
        }
        .map_err(|e| format!("run_next_operation failed: {e}"))?;
        let expected = self.model.next_operation();
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
        let predicted = self.model.predict(cart, op, behaviour);
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
        *coverage.outcomes.entry(format!("{outcome:?}")).or_default() += 1;
        self.model.finish(cart, op, outcome);
        let finish = if outcome == Outcome::Passed {
            Event::Succeed
        } else {
            Event::Fail
        };
        Ok(vec![Event::Claim, finish])
    }

    /// Every record whose node changed moved along declared rows: one row of the command's
    /// event, or for a worker step a Claim row then a Succeed or Fail row. Returns the moves.
    fn check_moves(
        &self,
        before: &DataSet,
        after: &DataSet,
        events: &[Event],
    ) -> Result<usize, String> {
        let table = self.table();
        let admitted = |from: Node, to: Node| match events {
            [event] => table.admits(*event, from, to),
            [first, second] => table
                .nodes()
                .into_iter()
                .chain([from])
                .any(|mid| table.admits(*first, from, mid) && table.admits(*second, mid, to)),
            _ => from == to,
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
            Node::Session(session_node(session, op))
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
}

// ---------------------------------------------------------------------------------------------
// The properties.

fn run_sequence(world: &WorldSpec, steps: &[Step], coverage: &mut Coverage) -> Result<(), String> {
    let mut harness = Harness::new(world);
    harness.model.compare(&harness.store.to_dataset())?;
    for (n, step) in steps.iter().enumerate() {
        harness
            .step(step, coverage, None)
            .map_err(|e| format!("step {n} ({step:?}): {e}"))?;
    }
    Ok(())
}

#[test]
fn random_command_sequences_keep_every_invariant() {
    let config = ProptestConfig {
        // At least 2,000 sequences (a few seconds); PROPTEST_CASES may ask for more.
        cases: ProptestConfig::default().cases.max(2_000),
        // Failures are reported with their minimal sequence; no regression files are written.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config.clone());
    let coverage = Mutex::new(Coverage::default());
    let strategy = (world_spec(), prop::collection::vec(step(), 20..50));
    let result = runner.run(&strategy, |(world, steps)| {
        let mut local = Coverage::default();
        let outcome = run_sequence(&world, &steps, &mut local);
        let mut total = coverage.lock().unwrap_or_else(|e| e.into_inner());
        total.steps += local.steps;
        for (k, n) in local.accepted {
            *total.accepted.entry(k).or_default() += n;
        }
        for (k, n) in local.refused {
            *total.refused.entry(k).or_default() += n;
        }
        for (k, n) in local.outcomes {
            *total.outcomes.entry(k).or_default() += n;
        }
        total.states.extend(local.states);
        outcome.map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, (world, steps))) => {
            // Show the steps up to the failing one only.
            let failing = (1..=steps.len())
                .find(|&n| run_sequence(&world, &steps[..n], &mut Coverage::default()).is_err())
                .unwrap_or(steps.len());
            panic!(
                "{reason}\nminimal world: {world:#?}\nminimal steps: {:#?}",
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
        "{} sequences, {} steps; accepted {:?}; worker outcomes {:?}; refusals {:?}; States seen: {}",
        config.cases,
        total.steps,
        total.accepted,
        total.outcomes,
        by_reason,
        total.states.len()
    );
    // The generator must reach every kind of command, refusal and provider answer: a
    // property that never meets a case proves nothing about it.
    for kind in [
        Kind::Start,
        Kind::Update,
        Kind::Advance,
        Kind::Async(Action::CheckCartInventory),
        Kind::Cancel,
    ] {
        assert!(
            total.accepted.contains_key(&kind),
            "no {kind:?} was ever accepted"
        );
    }
    let reasons: BTreeSet<Why> = total.refused.keys().map(|(_, why)| *why).collect();
    for why in [
        Why::CannotInvoke,
        Why::InvalidCartId,
        Why::InvalidSessionId,
        Why::NoEditAccess,
        Why::AccountInvalid,
        Why::NotStoreMember,
        Why::CartStatus,
        Why::CheckoutInProgress,
        Why::InitialState,
        Why::NoActiveSession,
        Why::EmptyState,
        Why::Locked,
        Why::ExpectedStateMismatch,
        Why::NotNextStep,
        Why::NotLocked,
        Why::WrongStep,
        Why::WrongNextState,
        Why::OperationActive,
        Why::Unsupported,
    ] {
        assert!(
            reasons.contains(&why),
            "no command was ever refused for {why:?}"
        );
    }
    for outcome in ["Passed", "Failed", "System"] {
        assert!(
            total.outcomes.keys().any(|k| k.starts_with(outcome)),
            "no worker step ever ended {outcome}"
        );
    }
}

/// Drives one fresh cart through the standard table and records every node it is seen in.
#[test]
fn every_implemented_node_is_reachable_from_a_fresh_cart() {
    // A cart starts Active, or Processing when a platform process holds it.
    let mut world = one_cart(CartStatus::Active, None);
    let mut processing = world.carts[0].clone();
    processing.status = CartStatus::Processing;
    world.carts.push(processing);
    let mut h = Harness::new(&world);
    let mut coverage = Coverage::default();
    let mut seen: BTreeSet<Node> = BTreeSet::new();
    let observe = |data: &DataSet, seen: &mut BTreeSet<Node>| {
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
                seen.insert(Node::Session(session_node(Some(s), op)));
            }
            if !data.operations.iter().any(|o| o.cart_id == cart.id) {
                seen.insert(Node::Operation(OperationNode::Absent));
            }
        }
        for op in &data.operations {
            seen.insert(Node::Operation(operation_node(Some(op))));
        }
    };
    observe(&h.store.to_dataset(), &mut seen);
    let hub = |salt| Step::Hub { cart: 0, salt };
    let mut gated = false;
    let mut unsupported = None;
    // The happy path, as far as the implemented actions go.
    for _ in 0..100 {
        let cart = &h.model.carts[0];
        let session = cart.active().map(|i| cart.sessions[i].clone());
        if let Some(s) = &session
            && s.state == Some(SessionState::CartToOrder)
            && s.processing
        {
            let answer = h
                .step(&hub(0), &mut coverage, None)
                .expect("invariants hold");
            unsupported = answer;
            break;
        }
        let running = session.as_ref().is_some_and(|s| {
            cart.ops
                .iter()
                .any(|o| Some(o.id) == s.op && is_active(o.status))
        });
        if running && !gated {
            // Look at the store while the provider runs: the operation is Running.
            gated = true;
            let mut look = |data: &DataSet| observe(data, &mut seen);
            h.step(
                &Step::Worker(Behaviour::Pass),
                &mut coverage,
                Some(&mut look),
            )
            .expect("invariants hold");
        } else if running {
            h.step(&Step::Worker(Behaviour::Pass), &mut coverage, None)
                .expect("invariants hold");
        } else {
            h.step(&hub(0), &mut coverage, None)
                .expect("invariants hold");
        }
        observe(&h.store.to_dataset(), &mut seen);
    }
    // Cart To Order is where the implemented actions end: its action answers Unsupported.
    assert_eq!(
        unsupported,
        Some(Answer::Err("UNKNOWN_EXCEPTION".into(), 501)),
        "cartToOrderAction is implemented now: extend this test past the Cart To Order step"
    );
    let owner = ActorRef::Owner(0);
    let cart = CartRef::Known(0, IdForm::Full);
    let cancel = Step::Cancel {
        actor: owner,
        cart,
        rest: false,
    };
    // Cancel from a locked step; then a failing inventory check, a restart from Error, and a
    // cancel while the operation is New.
    let mut script = vec![cancel.clone()];
    script.extend([hub(0), hub(0), hub(0), hub(0), hub(0)]);
    script.push(Step::Worker(Behaviour::Fail(1)));
    script.push(hub(0));
    script.extend([hub(0), hub(0), hub(0), hub(0)]);
    script.push(cancel);
    // The cart a platform process held returns to Active when its checkout is cancelled.
    script.push(Step::Cancel {
        actor: ActorRef::Owner(1),
        cart: CartRef::Known(1, IdForm::Full),
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
    assert_eq!(h.model.carts[1].status, CartStatus::Active);

    // An empty State comes only from imported data (the table's entry nodes): no command
    // produces one, so driving a fresh cart cannot reach it.
    let all: BTreeSet<Node> = h
        .table()
        .nodes()
        .into_iter()
        .filter(|n| !matches!(n, Node::Session(SessionNode::At(None, _))))
        .collect();
    let unseen: BTreeSet<Node> = all.difference(&seen).copied().collect();
    // What lies behind the Unsupported action: Cart To Order running, and every step after it.
    let behind = |node: &Node| match node {
        Node::Session(SessionNode::At(Some(state), phase)) => {
            let index = |s| STEPS.iter().position(|(x, _)| *x == s);
            let here = index(*state);
            let cut = index(SessionState::CartToOrder);
            here > cut || (here == cut && *phase == Phase::Running)
        }
        _ => false,
    };
    let expected: BTreeSet<Node> = all.iter().filter(|n| behind(n)).copied().collect();
    println!(
        "reached {} of {} nodes; not reachable while Cart To Order is Unsupported: {}",
        all.len() - unseen.len(),
        all.len(),
        unseen
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert_eq!(
        unseen, expected,
        "nodes not reached (left) vs. nodes behind Cart To Order (right)"
    );
    assert!(
        seen.iter().all(|n| all.contains(n)),
        "a node outside the table was observed"
    );
}

/// A world of one cart of the main buyer in `status`, with an active session seeded as given.
fn one_cart(status: CartStatus, active: Option<ActiveSeed>) -> WorldSpec {
    WorldSpec {
        stores: vec![StoreSpec {
            members: 1,
            mapping: Mapping::Scripted,
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
            archived: 0,
            active,
            outputs: 0,
        }],
    }
}

/// Cancel archives the session "from wherever it is" (domain.md §2.2): a session whose State
/// is empty must not trap its cart in Checkout (Start resumes it, every step refuses it).
#[test]
fn cancel_releases_a_session_whose_state_is_empty() {
    let empty = ActiveSeed {
        state: None,
        phase: 0,
        wrong_next: false,
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

/// The checks the properties rely on do fail on a store that broke them.
#[test]
fn the_checks_reject_doctored_stores() {
    let inventory = ActiveSeed {
        state: Some(2),
        phase: 2,
        wrong_next: false,
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

    // The documented pairs are the ones domain.md gives.
    assert_eq!(
        documented(
            Kind::Async(Action::CheckCartInventory),
            Why::OperationActive
        ),
        Some((AIP, 400))
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
}
