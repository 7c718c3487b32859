//! Conformance: one named test per requirement and error row Salesforce documents for the
//! checkout actions (and per decision cartflow takes where it is silent), at the library
//! level. `docs/conformance.md` maps each row to the tests here.
//!
//! Every refusal goes through [`World::refuse`], which checks the unmet requirement, the
//! errorCode and HTTP status both through `Engine::execute` and `Engine::invoke`, and that
//! the store is unchanged afterwards.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use cartflow::api::command_from_input;
use cartflow::ids::SequentialIds;
use cartflow::integrations::{IntegrationRequest, Integrations, ProviderError, Verdict};
use cartflow::machine::{
    Action, Command, OperationSettings, ProviderAction, Requirement, StepOutcome, TransitionTable,
};
use cartflow::model::{
    Access, Account, BackgroundOperation, CartCheckoutSession, CartShare, CartStatus,
    CartValidationOutput, KeyPrefix, Level, OperationStatus, OutputType, Permission, ProviderKind,
    SessionState, SfId, User, WebCart,
};
use cartflow::sample::{self, SampleCart};
use cartflow::store::DataSet;
use cartflow::{ActionResult, Engine, EngineConfig, MemoryStore, Store};
use serde_json::{Value, json};

use Requirement as R;

mod support;

const BAD_REQUEST: &str = "BAD_REQUEST";
const UNKNOWN_EXCEPTION: &str = "UNKNOWN_EXCEPTION";
const INVALID_OPERATION: &str = "INVALID_OPERATION";
const ALREADY_IN_PROCESS: &str = "ALREADY_IN_PROCESS";
const INSUFFICIENT: &str = "INSUFFICIENT_ACCESS_OR_READONLY";

const INVENTORY: &str = "checkCartInventoryAction";
const START: &str = "checkoutSessionAction";
const UPDATE: &str = "updateCheckoutSessionStateAction";
const CANCEL: &str = "cancelCartAsyncOperation";

/// The async cart actions that share Check Cart Inventory's documented error table.
const OTHER_ASYNC: [Action; 4] = [
    Action::PriceCart,
    Action::CalcCartPromotions,
    Action::CalcCartShipment,
    Action::CalcCartTaxes,
];

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

/// An engine over an in-memory store that the test can also read as a whole.
struct World {
    store: Arc<MemoryStore>,
    engine: Engine,
}

impl World {
    fn new(data: DataSet) -> World {
        let integrations = Integrations::with_stock_tables(&data.stock);
        World::with(data, EngineConfig::default(), integrations)
    }

    fn with(data: DataSet, config: EngineConfig, integrations: Integrations) -> World {
        let store = Arc::new(MemoryStore::from_dataset(data).expect("a valid fixture"));
        let engine = Engine::new(store.clone())
            .with_ids(Arc::new(SequentialIds::starting_at(50_000)))
            .with_integrations(integrations)
            .with_config(config);
        World { store, engine }
    }

    /// Every record, for before/after comparisons.
    fn data(&self) -> DataSet {
        self.store.to_dataset()
    }

    fn invoke(&self, action: &str, input: &Value, actor: impl Display) -> ActionResult {
        self.engine.invoke(action, input, &actor.to_string())
    }

    /// Invokes an action that must be accepted; returns its single output value, if any.
    #[track_caller]
    fn accept(&self, action: &str, input: &Value, actor: impl Display) -> Option<String> {
        let result = self.invoke(action, input, actor);
        assert!(result.is_success, "{action} refused: {result:?}");
        assert!(result.errors.is_none());
        assert_eq!(result.http_status, 200);
        result.output_values.map(|values| {
            assert_eq!(values.len(), 1, "{values:?}");
            values.values().next().unwrap().as_str().unwrap().to_owned()
        })
    }

    /// Invokes an action that must be refused for `requirement` with `code` / `status`,
    /// through `execute` and through `invoke`, and checks the store did not change.
    /// Returns the message.
    #[track_caller]
    fn refuse(
        &self,
        action: &str,
        input: &Value,
        actor: impl Display,
        requirement: Requirement,
        code: &str,
        status: u16,
    ) -> String {
        let actor = actor.to_string();
        let before = self.data();
        let command = command_from_input(Action::from_api_name(action).unwrap(), input)
            .expect("a well-shaped input");
        let error = self
            .engine
            .execute(&actor, command)
            .expect_err("the command should be refused");
        assert_eq!(error.requirement(), Some(requirement), "{error}");
        assert_eq!(error.code().as_str(), code, "{error}");
        assert_eq!(error.http_status(), status, "{error}");
        let result = self.invoke(action, input, &actor);
        assert!(!result.is_success);
        assert_eq!(result.http_status, status);
        assert!(result.output_values.is_none());
        let errors = result.errors.expect("a refusal carries errors");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].status_code, code);
        assert_eq!(self.data(), before, "a refusal changed the store");
        errors[0].message.clone()
    }

    fn session(&self, id: &SfId) -> CartCheckoutSession {
        self.store.session(id).unwrap().expect("the session exists")
    }

    fn cart(&self, cart: SampleCart) -> WebCart {
        self.store.cart(&cart.id()).unwrap().unwrap()
    }

    fn operation(&self, id: &SfId) -> BackgroundOperation {
        self.store
            .operation(id)
            .unwrap()
            .expect("the operation exists")
    }

    fn active_sessions(&self, cart: SampleCart) -> Vec<CartCheckoutSession> {
        let mut sessions = self.store.sessions_of(&cart.id()).unwrap();
        sessions.retain(|s| !s.is_archived);
        sessions
    }

    fn outputs(&self, cart: SampleCart) -> Vec<CartValidationOutput> {
        self.store.validation_outputs(&cart.id()).unwrap()
    }

    fn permitted(&self, actor: impl Display, cart: SampleCart) -> Vec<String> {
        let mut names: Vec<String> = self
            .engine
            .permitted(&actor.to_string(), &cart.id())
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        names.sort();
        names
    }
}

/// A user with only Modify All Data (no account, no B2B permission).
fn admin_id() -> SfId {
    SfId::from_number(KeyPrefix::User, 9_001)
}

/// A buyer of another active account of the same store.
fn outsider_id() -> SfId {
    SfId::from_number(KeyPrefix::User, 9_002)
}

fn other_account_id() -> SfId {
    SfId::from_number(KeyPrefix::Account, 9_001)
}

/// A well-formed WebCart ID that names no cart.
fn missing_cart_id() -> SfId {
    SfId::from_number(KeyPrefix::WebCart, 9_999)
}

/// A well-formed User ID that names no user.
fn unknown_user_id() -> SfId {
    SfId::from_number(KeyPrefix::User, 9_999)
}

/// The sample world plus an admin (Modify All Data only) and a buyer of another account.
fn base() -> DataSet {
    let mut data = sample::dataset();
    data.users.push(User {
        id: admin_id(),
        name: "Ada Admin".into(),
        account_id: None,
        permissions: [Permission::ModifyAllData].into_iter().collect(),
    });
    data.accounts.push(Account {
        id: other_account_id(),
        name: "Other Buyer Co".into(),
        is_active: true,
    });
    data.stores[0].buyer_accounts.insert(other_account_id());
    data.users.push(User {
        id: outsider_id(),
        name: "Otto Outsider".into(),
        account_id: Some(other_account_id()),
        permissions: [Permission::B2BBuyer].into_iter().collect(),
    });
    data
}

fn edit_cart(data: &mut DataSet, cart: SampleCart, edit: impl FnOnce(&mut WebCart)) {
    edit(data.carts.iter_mut().find(|c| c.id == cart.id()).unwrap());
}

fn set_status(data: &mut DataSet, cart: SampleCart, status: CartStatus) {
    edit_cart(data, cart, |c| c.status = status);
}

fn table() -> TransitionTable {
    TransitionTable::standard()
}

/// The State that follows `state` in the standard template.
fn next_of(state: SessionState) -> SessionState {
    table().template().step(state).unwrap().next.unwrap()
}

/// The step an async action belongs to.
fn step_of(action: Action) -> SessionState {
    table().template().step_of(action).unwrap().state
}

/// Adds an active session to `cart`.
fn add_session(
    data: &mut DataSet,
    cart: SampleCart,
    state: Option<SessionState>,
    next_state: Option<SessionState>,
    is_processing: bool,
) -> SfId {
    let id = SfId::from_number(
        KeyPrefix::CartCheckoutSession,
        5_000 + data.sessions.len() as u64,
    );
    data.sessions.push(CartCheckoutSession {
        id,
        web_cart_id: cart.id(),
        state,
        next_state,
        is_processing,
        is_error: false,
        is_archived: false,
        background_operation_id: None,
        order_id: None,
        created_date: None,
        version: 0,
    });
    id
}

/// Adds an operation of `action` with `status` and makes it the session's current one.
fn add_operation(
    data: &mut DataSet,
    session: SfId,
    action: Action,
    status: OperationStatus,
) -> SfId {
    let id = SfId::from_number(
        KeyPrefix::BackgroundOperation,
        6_000 + data.operations.len() as u64,
    );
    let s = data.sessions.iter_mut().find(|s| s.id == session).unwrap();
    s.background_operation_id = Some(id);
    data.operations.push(BackgroundOperation {
        id,
        name: action.api_name().into(),
        cart_id: s.web_cart_id,
        checkout_session_id: session,
        provider_kind: action.provider_kind(),
        status,
        error: None,
        submitted_at: chrono::Utc::now(),
        started_at: None,
        finished_at: None,
        expires_at: None,
        attempt: u32::from(status != OperationStatus::New),
        retry_limit: 2,
        timeout_ms: 120_000,
        order_life_cycle_type: None,
        version: 0,
    });
    id
}

/// `cart` in Checkout with a session locked at `state` (NextState = the step after it), as
/// Update Checkout Session leaves it before the async action.
fn locked_at(cart: SampleCart, state: SessionState) -> (DataSet, SfId) {
    let mut data = base();
    set_status(&mut data, cart, CartStatus::Checkout);
    let session = add_session(&mut data, cart, Some(state), Some(next_of(state)), true);
    (data, session)
}

/// `cart` in Checkout with an open (not processing) session at `state`.
fn open_at(cart: SampleCart, state: SessionState) -> (DataSet, SfId) {
    let mut data = base();
    set_status(&mut data, cart, CartStatus::Checkout);
    let session = add_session(&mut data, cart, Some(state), None, false);
    (data, session)
}

fn cart_input(cart: SampleCart) -> Value {
    json!({ "cartId": cart.id().to_string() })
}

fn start_input(cart: SampleCart) -> Value {
    json!({ "cartId": cart.id().to_string(), "initialState": "Start" })
}

fn update_input(session: &SfId, exp: SessionState, next: SessionState) -> Value {
    json!({
        "checkoutSessionId": session.to_string(),
        "nextState": next.as_str(),
        "expCurrentState": exp.as_str(),
    })
}

fn buyer() -> SfId {
    sample::buyer_id()
}

/// Drives `cart` from Active through the real actions to a locked Inventory step.
fn drive_to_locked_inventory(world: &World, cart: SampleCart) -> SfId {
    let session: SfId = world
        .accept(START, &start_input(cart), buyer())
        .unwrap()
        .parse()
        .unwrap();
    for (from, to) in [
        (SessionState::Start, SessionState::ShippingAddress),
        (SessionState::ShippingAddress, SessionState::Inventory),
    ] {
        world
            .engine
            .execute(
                &buyer().to_string(),
                Command::Advance {
                    session_id: session.to_string(),
                    state: to.as_str().into(),
                    exp_current_state: Some(from.as_str().into()),
                },
            )
            .unwrap();
    }
    world.accept(
        UPDATE,
        &update_input(
            &session,
            SessionState::Inventory,
            SessionState::ConfirmPrice,
        ),
        buyer(),
    );
    session
}

/// A world whose sample store's inventory checks go to `provider`.
fn world_with_provider(
    data: DataSet,
    config: EngineConfig,
    provider: impl Fn(&IntegrationRequest) -> Result<Verdict, ProviderError> + Send + Sync + 'static,
) -> World {
    let mut integrations = Integrations::new();
    integrations.set_inventory(sample::store_id(), Arc::new(provider));
    World::with(data, config, integrations)
}

// ---------------------------------------------------------------------------------------
// Check Cart Inventory: the nine documented requirements
// ---------------------------------------------------------------------------------------

#[test]
fn inventory_all_requirements_met_is_accepted_with_a_background_operation_id() {
    let (data, session) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    let op = world.accept(INVENTORY, &cart_input(SampleCart::InStock), buyer());
    let op: SfId = op.expect("backgroundOperationId").parse().unwrap();
    assert_eq!(world.session(&session).background_operation_id, Some(op));
}

#[test]
fn inventory_req1_caller_without_permission_is_refused_bad_request_400() {
    let (data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    let input = cart_input(SampleCart::InStock);
    world.refuse(
        INVENTORY,
        &input,
        sample::no_permission_id(),
        R::CallerMayInvoke,
        BAD_REQUEST,
        400,
    );
    // An unknown user, and an actor that is no ID at all, may not invoke either.
    for actor in [unknown_user_id().to_string(), "not-a-user".to_owned()] {
        world.refuse(
            INVENTORY,
            &input,
            actor,
            R::CallerMayInvoke,
            BAD_REQUEST,
            400,
        );
    }
}

#[test]
fn inventory_req1_integrator_may_invoke() {
    let (data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    let op = world.accept(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        sample::integrator_id(),
    );
    assert!(op.is_some());
}

#[test]
fn inventory_req2_inactive_effective_account_is_insufficient_access_500() {
    let (data, _) = locked_at(SampleCart::InactiveAccount, SessionState::Inventory);
    let world = World::new(data);
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InactiveAccount),
        buyer(),
        R::EffectiveAccountValid,
        INSUFFICIENT,
        500,
    );
}

#[test]
fn inventory_req2_missing_effective_account_is_insufficient_access_500() {
    let (mut data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    edit_cart(&mut data, SampleCart::InStock, |c| {
        c.account_id = sample::missing_account_id()
    });
    let world = World::new(data);
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        buyer(),
        R::EffectiveAccountValid,
        INSUFFICIENT,
        500,
    );
}

#[test]
fn inventory_req2_effective_account_of_another_buyer_is_insufficient_access_500() {
    // The outsider can edit the cart (Edit share) but belongs to another account.
    let (mut data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    edit_cart(&mut data, SampleCart::InStock, |c| {
        c.shares.push(CartShare {
            user_id: outsider_id(),
            access: Access::Edit,
        })
    });
    let world = World::new(data);
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        outsider_id(),
        R::EffectiveAccountValid,
        INSUFFICIENT,
        500,
    );
}

#[test]
fn inventory_req3_caller_not_a_store_member_is_insufficient_access_500() {
    let (data, _) = locked_at(SampleCart::ForeignStore, SessionState::Inventory);
    let world = World::new(data);
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::ForeignStore),
        buyer(),
        R::CallerIsStoreMember,
        INSUFFICIENT,
        500,
    );
}

#[test]
fn inventory_req4_owner_may_invoke() {
    let (data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    assert_eq!(world.cart(SampleCart::InStock).owner_id, buyer());
    assert!(
        world
            .accept(INVENTORY, &cart_input(SampleCart::InStock), buyer())
            .is_some()
    );
}

#[test]
fn inventory_req4_edit_share_may_invoke() {
    let (data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    assert!(
        world
            .accept(
                INVENTORY,
                &cart_input(SampleCart::InStock),
                sample::colleague_id()
            )
            .is_some()
    );
}

#[test]
fn inventory_req4_read_share_is_refused_bad_request_400() {
    let (data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        sample::reader_id(),
        R::CallerCanEditCart,
        BAD_REQUEST,
        400,
    );
}

#[test]
fn inventory_req4_no_share_is_answered_as_a_missing_cart_unknown_exception_500() {
    // A cart the caller cannot see at all is indistinguishable from one that does not exist.
    let (data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        sample::stranger_id(),
        R::CartIdValid,
        UNKNOWN_EXCEPTION,
        500,
    );
}

#[test]
fn inventory_req4_modify_all_data_may_invoke() {
    let (data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    assert!(
        world
            .accept(INVENTORY, &cart_input(SampleCart::InStock), admin_id())
            .is_some()
    );
}

#[test]
fn inventory_req5_closed_cart_is_invalid_operation_403() {
    let (mut data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    set_status(&mut data, SampleCart::InStock, CartStatus::Closed);
    let world = World::new(data);
    let message = world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        buyer(),
        R::CartRow,
        INVALID_OPERATION,
        403,
    );
    // The message names the statuses the table lets the step run on.
    assert_eq!(
        message,
        format!(
            "cart {} is Closed; checkCartInventoryAction needs Checkout",
            SampleCart::InStock.id()
        )
    );
    // The sample's own Closed cart, with no session at all, is refused the same way.
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::Closed),
        buyer(),
        R::CartRow,
        INVALID_OPERATION,
        403,
    );
}

#[test]
fn inventory_req6_session_not_processing_is_invalid_operation_403() {
    let (mut data, _) = open_at(SampleCart::InStock, SessionState::Inventory);
    // NextState is set, so only IsProcessing is wrong.
    data.sessions[0].next_state = Some(SessionState::ConfirmPrice);
    let world = World::new(data);
    let message = world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        buyer(),
        R::SessionPhaseRow,
        INVALID_OPERATION,
        403,
    );
    assert_eq!(
        message,
        "the session is not locked (IsProcessing is false): \
         call updateCheckoutSessionStateAction first"
    );
}

#[test]
fn inventory_req7_next_state_not_set_is_invalid_operation_403() {
    let (mut data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    data.sessions[0].next_state = None;
    let world = World::new(data);
    let message = world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        buyer(),
        R::NextStateRow,
        INVALID_OPERATION,
        403,
    );
    assert_eq!(
        message,
        "the session's NextState is (empty), expected Confirm Price"
    );
}

#[test]
fn inventory_req7_next_state_of_another_step_is_invalid_operation_403() {
    let (mut data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    data.sessions[0].next_state = Some(SessionState::Taxes);
    let world = World::new(data);
    let message = world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        buyer(),
        R::NextStateRow,
        INVALID_OPERATION,
        403,
    );
    assert_eq!(
        message,
        "the session's NextState is Taxes, expected Confirm Price"
    );
}

#[test]
fn inventory_req8_empty_state_is_invalid_operation_403() {
    let (mut data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    data.sessions[0].state = None;
    let world = World::new(data);
    let message = world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        buyer(),
        R::SessionStateRow,
        INVALID_OPERATION,
        403,
    );
    assert_eq!(message, "the session's State is empty");
}

#[test]
fn inventory_req9_new_operation_is_already_in_process_400() {
    let (mut data, session) = locked_at(SampleCart::InStock, SessionState::Inventory);
    add_operation(
        &mut data,
        session,
        Action::CheckCartInventory,
        OperationStatus::New,
    );
    let world = World::new(data);
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        buyer(),
        R::NoOperationInProgress,
        ALREADY_IN_PROCESS,
        400,
    );
}

#[test]
fn inventory_req9_running_operation_is_already_in_process_400() {
    let (mut data, session) = locked_at(SampleCart::InStock, SessionState::Inventory);
    add_operation(
        &mut data,
        session,
        Action::CheckCartInventory,
        OperationStatus::Running,
    );
    let world = World::new(data);
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        buyer(),
        R::NoOperationInProgress,
        ALREADY_IN_PROCESS,
        400,
    );
}

#[test]
fn inventory_req9_finished_operation_does_not_block() {
    for status in [
        OperationStatus::Complete,
        OperationStatus::Error,
        OperationStatus::Canceled,
    ] {
        let (mut data, session) = locked_at(SampleCart::InStock, SessionState::Inventory);
        let old = add_operation(&mut data, session, Action::CheckCartInventory, status);
        let world = World::new(data);
        let op: SfId = world
            .accept(INVENTORY, &cart_input(SampleCart::InStock), buyer())
            .unwrap()
            .parse()
            .unwrap();
        assert_ne!(op, old, "{status:?}");
        assert_eq!(world.operation(&op).status, OperationStatus::New);
    }
}

#[test]
fn inventory_double_click_second_call_is_already_in_process_400() {
    let (data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    let input = cart_input(SampleCart::InStock);
    world.accept(INVENTORY, &input, buyer());
    world.refuse(
        INVENTORY,
        &input,
        buyer(),
        R::NoOperationInProgress,
        ALREADY_IN_PROCESS,
        400,
    );
}

#[test]
fn inventory_no_active_session_is_invalid_operation_403() {
    let mut data = base();
    set_status(&mut data, SampleCart::InStock, CartStatus::Checkout);
    let world = World::new(data);
    let message = world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        buyer(),
        R::SessionRow,
        INVALID_OPERATION,
        403,
    );
    assert_eq!(message, "the cart has no checkout session");
}

// ---------------------------------------------------------------------------------------
// Check Cart Inventory: the seven documented error rows
// ---------------------------------------------------------------------------------------

#[test]
fn inventory_row1_malformed_cart_id_is_unknown_exception_500() {
    let (data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    let fifteen = SampleCart::InStock.id().to_15().to_owned();
    for input in [
        json!({ "cartId": "not-an-id" }),
        json!({ "cartId": "" }),
        json!({}),
        json!({ "cartId": null }),
        json!({ "cartId": 42 }),
        // A valid 15-character form with a wrong 18-character checksum.
        json!({ "cartId": format!("{fifteen}ZZZ") }),
    ] {
        world.refuse(
            INVENTORY,
            &input,
            buyer(),
            R::CartIdValid,
            UNKNOWN_EXCEPTION,
            500,
        );
    }
}

#[test]
fn inventory_row1_well_formed_id_naming_no_cart_is_unknown_exception_500() {
    let (data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    world.refuse(
        INVENTORY,
        &json!({ "cartId": missing_cart_id().to_string() }),
        buyer(),
        R::CartIdValid,
        UNKNOWN_EXCEPTION,
        500,
    );
}

#[test]
fn inventory_row1_id_of_another_object_kind_is_unknown_exception_500() {
    let (data, session) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    for other in [sample::account_id(), session, buyer()] {
        world.refuse(
            INVENTORY,
            &json!({ "cartId": other.to_string() }),
            buyer(),
            R::CartIdValid,
            UNKNOWN_EXCEPTION,
            500,
        );
    }
}

#[test]
fn inventory_row1_fifteen_character_cart_id_is_accepted() {
    let (data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    let input = json!({ "cartId": SampleCart::InStock.id().to_15() });
    assert!(world.accept(INVENTORY, &input, buyer()).is_some());
}

#[test]
fn inventory_row2_caller_cannot_invoke_is_bad_request_400() {
    let (data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        sample::no_permission_id(),
        R::CallerMayInvoke,
        BAD_REQUEST,
        400,
    );
}

#[test]
fn inventory_row3_caller_without_access_to_the_cart_is_bad_request_400() {
    let (data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        sample::reader_id(),
        R::CallerCanEditCart,
        BAD_REQUEST,
        400,
    );
    // Callers who cannot see the cart at all get the invalid-cartId answer instead.
    for actor in [sample::stranger_id(), outsider_id()] {
        world.refuse(
            INVENTORY,
            &cart_input(SampleCart::InStock),
            actor,
            R::CartIdValid,
            UNKNOWN_EXCEPTION,
            500,
        );
    }
}

#[test]
fn inventory_row4_cart_not_in_checkout_is_invalid_operation_403() {
    for status in [
        CartStatus::Active,
        CartStatus::Closed,
        CartStatus::PendingClosed,
        CartStatus::PendingDelete,
        CartStatus::Processing,
    ] {
        let (mut data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
        set_status(&mut data, SampleCart::InStock, status);
        let world = World::new(data);
        world.refuse(
            INVENTORY,
            &cart_input(SampleCart::InStock),
            buyer(),
            R::CartRow,
            INVALID_OPERATION,
            403,
        );
    }
}

#[test]
fn inventory_row5_integration_in_progress_is_already_in_process_400() {
    let (mut data, session) = locked_at(SampleCart::InStock, SessionState::Inventory);
    add_operation(
        &mut data,
        session,
        Action::CheckCartInventory,
        OperationStatus::Running,
    );
    let world = World::new(data);
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        buyer(),
        R::NoOperationInProgress,
        ALREADY_IN_PROCESS,
        400,
    );
}

#[test]
fn inventory_row6_effective_account_invalid_is_insufficient_access_500() {
    let (data, _) = locked_at(SampleCart::InactiveAccount, SessionState::Inventory);
    let world = World::new(data);
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InactiveAccount),
        buyer(),
        R::EffectiveAccountValid,
        INSUFFICIENT,
        500,
    );
}

#[test]
fn inventory_row7_caller_not_store_member_is_insufficient_access_500() {
    let (data, _) = locked_at(SampleCart::ForeignStore, SessionState::Inventory);
    let world = World::new(data);
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::ForeignStore),
        buyer(),
        R::CallerIsStoreMember,
        INSUFFICIENT,
        500,
    );
}

// ---------------------------------------------------------------------------------------
// Check Cart Inventory: requirement order (cartflow's), wrong step, dry run
// ---------------------------------------------------------------------------------------

#[test]
fn inventory_order_permission_before_cart_existence() {
    // A caller without permission learns nothing about carts: BAD_REQUEST, not a 500.
    let world = World::new(base());
    world.refuse(
        INVENTORY,
        &json!({ "cartId": missing_cart_id().to_string() }),
        sample::no_permission_id(),
        R::CallerMayInvoke,
        BAD_REQUEST,
        400,
    );
    world.refuse(
        INVENTORY,
        &json!({ "cartId": "garbage" }),
        unknown_user_id(),
        R::CallerMayInvoke,
        BAD_REQUEST,
        400,
    );
}

#[test]
fn inventory_order_cart_existence_before_access() {
    let world = World::new(base());
    world.refuse(
        INVENTORY,
        &json!({ "cartId": missing_cart_id().to_string() }),
        sample::stranger_id(),
        R::CartIdValid,
        UNKNOWN_EXCEPTION,
        500,
    );
}

#[test]
fn inventory_order_access_before_account_and_membership() {
    for cart in [SampleCart::InactiveAccount, SampleCart::ForeignStore] {
        let (data, _) = locked_at(cart, SessionState::Inventory);
        let world = World::new(data);
        world.refuse(
            INVENTORY,
            &cart_input(cart),
            sample::reader_id(),
            R::CallerCanEditCart,
            BAD_REQUEST,
            400,
        );
    }
}

#[test]
fn inventory_order_account_before_membership() {
    let (mut data, _) = locked_at(SampleCart::InactiveAccount, SessionState::Inventory);
    edit_cart(&mut data, SampleCart::InactiveAccount, |c| {
        c.web_store_id = sample::other_store_id()
    });
    let world = World::new(data);
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InactiveAccount),
        buyer(),
        R::EffectiveAccountValid,
        INSUFFICIENT,
        500,
    );
}

#[test]
fn inventory_order_membership_before_cart_status() {
    // The foreign-store cart is Active with no session: membership (500) is reported, not 403.
    let world = World::new(base());
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::ForeignStore),
        buyer(),
        R::CallerIsStoreMember,
        INSUFFICIENT,
        500,
    );
}

#[test]
fn inventory_order_cart_status_before_session() {
    let world = World::new(base());
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        buyer(),
        R::CartRow,
        INVALID_OPERATION,
        403,
    );
}

#[test]
fn inventory_order_session_before_operation() {
    // The session is not processing while an operation is New: 403, not ALREADY_IN_PROCESS.
    let (mut data, session) = open_at(SampleCart::InStock, SessionState::Inventory);
    add_operation(
        &mut data,
        session,
        Action::CheckCartInventory,
        OperationStatus::New,
    );
    let world = World::new(data);
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        buyer(),
        R::SessionPhaseRow,
        INVALID_OPERATION,
        403,
    );
}

#[test]
fn inventory_wrong_step_is_invalid_operation_403_naming_the_expected_step() {
    let (data, _) = locked_at(SampleCart::InStock, SessionState::ConfirmPrice);
    let world = World::new(data);
    let message = world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InStock),
        buyer(),
        R::StepRow,
        INVALID_OPERATION,
        403,
    );
    assert_eq!(
        message,
        "checkCartInventoryAction runs in the Inventory step; the session is in Confirm Price"
    );
}

#[test]
fn inventory_check_dry_run_lists_every_unmet_requirement_in_order() {
    // A reader, on a Closed cart with no session: seven requirements fail at once.
    let mut data = base();
    set_status(&mut data, SampleCart::InStock, CartStatus::Closed);
    let world = World::new(data);
    let before = world.data();
    let command = Command::RunStep {
        action: ProviderAction::CheckCartInventory,
        cart_id: SampleCart::InStock.id().to_string(),
    };
    let unmet = world
        .engine
        .check(&sample::reader_id().to_string(), &command)
        .unwrap();
    let listed: Vec<Requirement> = unmet.iter().map(|u| u.requirement).collect();
    assert_eq!(
        listed,
        [
            R::CallerCanEditCart,
            R::CartRow,
            R::SessionRow,
            R::SessionStateRow,
            R::SessionPhaseRow,
            R::StepRow,
            R::NextStateRow,
        ]
    );
    let codes: Vec<(&str, u16)> = unmet.iter().map(|u| (u.code.as_str(), u.status)).collect();
    assert_eq!(codes[0], (BAD_REQUEST, 400));
    assert!(codes[1..].iter().all(|c| *c == (INVALID_OPERATION, 403)));
    assert!(unmet.iter().all(|u| !u.message.is_empty()));
    // The first unmet one is what execute answers; the dry run changed nothing.
    let error = world
        .engine
        .execute(&sample::reader_id().to_string(), command.clone())
        .unwrap_err();
    assert_eq!(error.requirement(), Some(unmet[0].requirement));
    assert_eq!(world.data(), before);
}

#[test]
fn inventory_check_dry_run_is_empty_when_every_requirement_holds() {
    let (data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    let command = Command::RunStep {
        action: ProviderAction::CheckCartInventory,
        cart_id: SampleCart::InStock.id().to_string(),
    };
    let before = world.data();
    assert_eq!(
        world.engine.check(&buyer().to_string(), &command).unwrap(),
        []
    );
    assert_eq!(world.data(), before, "the dry run wrote something");
}

#[test]
fn inventory_check_dry_run_lists_operation_in_progress_with_its_code() {
    let (mut data, session) = locked_at(SampleCart::InStock, SessionState::Inventory);
    add_operation(
        &mut data,
        session,
        Action::CheckCartInventory,
        OperationStatus::Running,
    );
    set_status(&mut data, SampleCart::InStock, CartStatus::Closed);
    let world = World::new(data);
    let command = Command::RunStep {
        action: ProviderAction::CheckCartInventory,
        cart_id: SampleCart::InStock.id().to_string(),
    };
    let unmet = world.engine.check(&buyer().to_string(), &command).unwrap();
    let listed: Vec<_> = unmet
        .iter()
        .map(|u| (u.requirement, u.code.as_str(), u.status))
        .collect();
    assert_eq!(
        listed,
        [
            (R::CartRow, INVALID_OPERATION, 403),
            (R::NoOperationInProgress, ALREADY_IN_PROCESS, 400),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Check Cart Inventory: effects of an accepted call and of the worker step
// ---------------------------------------------------------------------------------------

#[test]
fn inventory_effect_records_one_new_operation_on_the_session() {
    let world = World::new(base());
    let session = drive_to_locked_inventory(&world, SampleCart::InStock);
    let op: SfId = world
        .accept(INVENTORY, &cart_input(SampleCart::InStock), buyer())
        .unwrap()
        .parse()
        .unwrap();
    let operations = world
        .store
        .operations_of(&SampleCart::InStock.id())
        .unwrap();
    assert_eq!(operations.len(), 1);
    let recorded = &operations[0];
    assert_eq!(recorded.id, op);
    assert_eq!(recorded.status, OperationStatus::New);
    assert_eq!(recorded.name, INVENTORY);
    assert_eq!(recorded.provider_kind, Some(ProviderKind::Inventory));
    assert_eq!(recorded.checkout_session_id, session);
    let s = world.session(&session);
    assert_eq!(s.background_operation_id, Some(op));
    // Still locked and at its step until a worker reports.
    assert!(s.is_processing);
    assert_eq!(s.state, Some(SessionState::Inventory));
    assert_eq!(s.next_state, Some(SessionState::ConfirmPrice));
}

#[test]
fn inventory_effect_worker_success_advances_the_session_to_next_state() {
    let world = World::new(base());
    let session = drive_to_locked_inventory(&world, SampleCart::InStock);
    let op: SfId = world
        .accept(INVENTORY, &cart_input(SampleCart::InStock), buyer())
        .unwrap()
        .parse()
        .unwrap();
    let report = world.engine.run_next_operation().unwrap().unwrap();
    assert_eq!(report.operation_id, op);
    assert_eq!(report.outcome, StepOutcome::Passed);
    assert!(report.applied);
    let s = world.session(&session);
    assert_eq!(s.state, Some(SessionState::ConfirmPrice));
    assert_eq!(s.next_state, None);
    assert!(!s.is_processing && !s.is_error && !s.is_archived);
    assert_eq!(world.operation(&op).status, OperationStatus::Complete);
    assert!(world.outputs(SampleCart::InStock).is_empty());
    assert_eq!(world.engine.run_next_operation().unwrap(), None);
}

#[test]
fn inventory_effect_short_stock_ends_in_error_with_one_inventory_output_per_problem() {
    let world = World::new(base());
    let session = drive_to_locked_inventory(&world, SampleCart::ShortStock);
    let op: SfId = world
        .accept(INVENTORY, &cart_input(SampleCart::ShortStock), buyer())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(world.engine.run_until_idle().unwrap(), 1);
    let s = world.session(&session);
    assert_eq!(s.state, Some(SessionState::Error));
    assert_eq!(s.next_state, None);
    assert!(s.is_error && !s.is_processing);
    assert_eq!(world.operation(&op).status, OperationStatus::Error);
    let outputs = world.outputs(SampleCart::ShortStock);
    // TENT-4P is wanted on two lines (3 + 2) against 4 in stock; STOVE-X 2 against 1.
    let mut messages: Vec<&str> = outputs.iter().map(|o| o.message.as_str()).collect();
    messages.sort();
    assert_eq!(
        messages,
        [
            "SKU STOVE-X: 2 wanted, only 1 available.",
            "SKU TENT-4P: 5 wanted, only 4 available."
        ]
    );
    for output in &outputs {
        assert_eq!(output.output_type, OutputType::Inventory);
        assert_eq!(output.level, Level::Error);
        assert_eq!(output.background_operation_id, Some(op));
        assert_eq!(output.cart_id, SampleCart::ShortStock.id());
    }
}

/// Runs the inventory step of the in-stock cart against `provider` and checks the
/// documented system-failure path: operation Error, one SystemError output, session in
/// Error and no longer processing. Returns the operation's recorded error.
#[track_caller]
fn assert_system_failure(world: &World) -> String {
    let session = drive_to_locked_inventory(world, SampleCart::InStock);
    let op: SfId = world
        .accept(INVENTORY, &cart_input(SampleCart::InStock), buyer())
        .unwrap()
        .parse()
        .unwrap();
    let report = world.engine.run_next_operation().unwrap().unwrap();
    assert!(report.applied);
    assert!(
        matches!(report.outcome, StepOutcome::SystemFailure(_)),
        "{report:?}"
    );
    let s = world.session(&session);
    assert!(!s.is_processing, "the session stayed locked");
    assert!(s.is_error);
    assert_eq!(s.state, Some(SessionState::Error));
    assert_eq!(s.next_state, None);
    let operation = world.operation(&op);
    assert_eq!(operation.status, OperationStatus::Error);
    let outputs = world.outputs(SampleCart::InStock);
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert_eq!(outputs[0].output_type, OutputType::SystemError);
    assert_eq!(outputs[0].level, Level::Error);
    assert_eq!(outputs[0].background_operation_id, Some(op));
    operation.error.unwrap_or_default()
}

#[test]
fn inventory_effect_provider_error_ends_in_error_with_one_system_error_output() {
    let world = world_with_provider(base(), EngineConfig::default(), |_: &IntegrationRequest| {
        Err(ProviderError("stock service unreachable".into()))
    });
    let error = assert_system_failure(&world);
    assert!(error.contains("stock service unreachable"), "{error}");
}

#[test]
fn inventory_effect_provider_panic_ends_in_error_with_one_system_error_output() {
    let world = world_with_provider(base(), EngineConfig::default(), |_: &IntegrationRequest| {
        panic!("provider bug")
    });
    let error = assert_system_failure(&world);
    assert!(error.contains("panicked"), "{error}");
}

#[test]
fn inventory_effect_provider_timeout_ends_in_error_with_one_system_error_output() {
    // The provider blocks until the test ends (the sender is dropped), far past 50 ms.
    let (release, hold) = mpsc::channel::<()>();
    let hold = Mutex::new(hold);
    let config = EngineConfig {
        operations: OperationSettings {
            timeout_ms: 50,
            ..Default::default()
        },
        ..Default::default()
    };
    let world = world_with_provider(base(), config, move |_: &IntegrationRequest| {
        let _ = hold.lock().unwrap().recv_timeout(Duration::from_secs(60));
        Ok(Verdict::Passed)
    });
    let error = assert_system_failure(&world);
    assert!(error.contains("did not answer within 50 ms"), "{error}");
    drop(release);
}

// ---------------------------------------------------------------------------------------
// The other async cart actions: the documented rows they share, table-driven
// ---------------------------------------------------------------------------------------

/// The other async action `action`'s in-stock cart, locked at its step.
fn locked_for(action: Action) -> (World, SfId) {
    let (data, session) = locked_at(SampleCart::InStock, step_of(action));
    (World::new(data), session)
}

#[test]
fn async_accepted_records_a_new_operation_and_a_worker_step_advances_for_each_action() {
    for action in OTHER_ASYNC {
        let (world, session) = locked_for(action);
        let op: SfId = world
            .accept(action.api_name(), &cart_input(SampleCart::InStock), buyer())
            .unwrap()
            .parse()
            .unwrap();
        let recorded = world.operation(&op);
        assert_eq!(recorded.status, OperationStatus::New, "{action}");
        assert_eq!(recorded.name, action.api_name());
        assert_eq!(recorded.provider_kind, action.provider_kind());
        assert_eq!(world.session(&session).background_operation_id, Some(op));
        // No provider is mapped for these kinds: internal data, the step passes.
        assert!(world.engine.run_next_operation().unwrap().unwrap().applied);
        let s = world.session(&session);
        assert_eq!(s.state, Some(next_of(step_of(action))), "{action}");
        assert!(!s.is_processing);
        assert_eq!(world.operation(&op).status, OperationStatus::Complete);
    }
}

#[test]
fn async_row1_invalid_cart_id_is_unknown_exception_500_for_each_action() {
    for action in OTHER_ASYNC {
        let (world, _) = locked_for(action);
        for input in [
            json!({ "cartId": "not-an-id" }),
            json!({}),
            json!({ "cartId": missing_cart_id().to_string() }),
            json!({ "cartId": sample::account_id().to_string() }),
        ] {
            world.refuse(
                action.api_name(),
                &input,
                buyer(),
                R::CartIdValid,
                UNKNOWN_EXCEPTION,
                500,
            );
        }
    }
}

#[test]
fn async_row2_caller_cannot_invoke_is_bad_request_400_for_each_action() {
    for action in OTHER_ASYNC {
        let (world, _) = locked_for(action);
        for actor in [sample::no_permission_id(), unknown_user_id()] {
            world.refuse(
                action.api_name(),
                &cart_input(SampleCart::InStock),
                actor,
                R::CallerMayInvoke,
                BAD_REQUEST,
                400,
            );
        }
    }
}

#[test]
fn async_row3_caller_without_edit_access_is_bad_request_400_for_each_action() {
    for action in OTHER_ASYNC {
        let (world, _) = locked_for(action);
        world.refuse(
            action.api_name(),
            &cart_input(SampleCart::InStock),
            sample::reader_id(),
            R::CallerCanEditCart,
            BAD_REQUEST,
            400,
        );
        world.refuse(
            action.api_name(),
            &cart_input(SampleCart::InStock),
            sample::stranger_id(),
            R::CartIdValid,
            UNKNOWN_EXCEPTION,
            500,
        );
        for actor in [sample::colleague_id(), admin_id()] {
            let (world, _) = locked_for(action);
            assert!(
                world
                    .accept(action.api_name(), &cart_input(SampleCart::InStock), actor)
                    .is_some()
            );
        }
    }
}

#[test]
fn async_row4_cart_not_in_checkout_is_invalid_operation_403_for_each_action() {
    for action in OTHER_ASYNC {
        for status in [
            CartStatus::Active,
            CartStatus::Closed,
            CartStatus::Processing,
        ] {
            let (mut data, _) = locked_at(SampleCart::InStock, step_of(action));
            set_status(&mut data, SampleCart::InStock, status);
            let world = World::new(data);
            world.refuse(
                action.api_name(),
                &cart_input(SampleCart::InStock),
                buyer(),
                R::CartRow,
                INVALID_OPERATION,
                403,
            );
        }
    }
}

#[test]
fn async_row5_integration_in_progress_is_already_in_process_400_for_each_action() {
    for action in OTHER_ASYNC {
        let (world, _) = locked_for(action);
        let input = cart_input(SampleCart::InStock);
        world.accept(action.api_name(), &input, buyer());
        world.refuse(
            action.api_name(),
            &input,
            buyer(),
            R::NoOperationInProgress,
            ALREADY_IN_PROCESS,
            400,
        );
    }
}

#[test]
fn async_row6_effective_account_invalid_is_insufficient_access_500_for_each_action() {
    for action in OTHER_ASYNC {
        let (data, _) = locked_at(SampleCart::InactiveAccount, step_of(action));
        let world = World::new(data);
        world.refuse(
            action.api_name(),
            &cart_input(SampleCart::InactiveAccount),
            buyer(),
            R::EffectiveAccountValid,
            INSUFFICIENT,
            500,
        );
    }
}

#[test]
fn async_row7_caller_not_store_member_is_insufficient_access_500_for_each_action() {
    for action in OTHER_ASYNC {
        let (data, _) = locked_at(SampleCart::ForeignStore, step_of(action));
        let world = World::new(data);
        world.refuse(
            action.api_name(),
            &cart_input(SampleCart::ForeignStore),
            buyer(),
            R::CallerIsStoreMember,
            INSUFFICIENT,
            500,
        );
    }
}

/// A change to a fixture's session.
type SessionEdit = fn(&mut CartCheckoutSession);

#[test]
fn async_session_requirements_are_invalid_operation_403_for_each_action() {
    for action in OTHER_ASYNC {
        let step = step_of(action);
        let input = cart_input(SampleCart::InStock);
        let cases: [(Requirement, SessionEdit); 3] = [
            (R::SessionStateRow, |s| s.state = None),
            (R::SessionPhaseRow, |s| s.is_processing = false),
            (R::NextStateRow, |s| s.next_state = None),
        ];
        for (requirement, edit) in cases {
            let (mut data, _) = locked_at(SampleCart::InStock, step);
            edit(&mut data.sessions[0]);
            let world = World::new(data);
            world.refuse(
                action.api_name(),
                &input,
                buyer(),
                requirement,
                INVALID_OPERATION,
                403,
            );
        }
    }
}

#[test]
fn async_wrong_step_is_invalid_operation_403_naming_the_expected_step_for_each_action() {
    for action in OTHER_ASYNC {
        // Every one of them is refused at the locked Inventory step.
        let (data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
        let world = World::new(data);
        let message = world.refuse(
            action.api_name(),
            &cart_input(SampleCart::InStock),
            buyer(),
            R::StepRow,
            INVALID_OPERATION,
            403,
        );
        assert!(message.contains(step_of(action).as_str()), "{message}");
    }
}

// ---------------------------------------------------------------------------------------
// Checkout Session
// ---------------------------------------------------------------------------------------

fn stale_output(cart: SampleCart, n: u64) -> CartValidationOutput {
    CartValidationOutput {
        id: SfId::from_number(KeyPrefix::CartValidationOutput, 7_000 + n),
        cart_id: cart.id(),
        background_operation_id: None,
        level: Level::Error,
        output_type: OutputType::Inventory,
        message: "left over from an earlier check".into(),
        related_entity_id: None,
        is_dismissed: false,
    }
}

#[test]
fn start_active_cart_moves_to_checkout_and_creates_a_session_at_start() {
    let world = World::new(base());
    let session: SfId = world
        .accept(START, &start_input(SampleCart::InStock), buyer())
        .expect("requestId")
        .parse()
        .unwrap();
    assert_eq!(world.cart(SampleCart::InStock).status, CartStatus::Checkout);
    let s = world.session(&session);
    assert_eq!(s.web_cart_id, SampleCart::InStock.id());
    assert_eq!(s.state, Some(SessionState::Start));
    assert!(!s.is_processing && !s.is_error && !s.is_archived);
    assert_eq!(world.active_sessions(SampleCart::InStock).len(), 1);
}

#[test]
fn start_checkout_cart_is_accepted_and_keeps_its_one_active_session() {
    let world = World::new(base());
    let first = world.accept(START, &start_input(SampleCart::InStock), buyer());
    let again = world.accept(START, &start_input(SampleCart::InStock), buyer());
    assert_eq!(first, again);
    assert_eq!(world.active_sessions(SampleCart::InStock).len(), 1);
    assert_eq!(world.cart(SampleCart::InStock).status, CartStatus::Checkout);
}

#[test]
fn start_clears_the_carts_validation_outputs() {
    let mut data = base();
    data.validation_outputs = vec![
        stale_output(SampleCart::InStock, 1),
        stale_output(SampleCart::InStock, 2),
        stale_output(SampleCart::ShortStock, 3),
    ];
    let world = World::new(data);
    world.accept(START, &start_input(SampleCart::InStock), buyer());
    assert!(world.outputs(SampleCart::InStock).is_empty());
    // Another cart's outputs are not touched.
    assert_eq!(world.outputs(SampleCart::ShortStock).len(), 1);
}

#[test]
fn a_start_that_resumes_the_checkout_keeps_the_carts_validation_outputs() {
    let world = World::new(base());
    let session = world.accept(START, &start_input(SampleCart::InStock), buyer());
    let mut data = world.data();
    data.validation_outputs = vec![stale_output(SampleCart::InStock, 1)];
    let world = World::new(data);
    // A re-entrant flow starts on every pass; the error screen after it still lists the output.
    let resumed = world.accept(START, &start_input(SampleCart::InStock), buyer());
    assert_eq!(resumed, session);
    assert_eq!(world.outputs(SampleCart::InStock).len(), 1);
}

#[test]
fn start_after_a_failed_step_clears_outputs_and_opens_a_new_session() {
    let world = World::new(base());
    let failed = drive_to_locked_inventory(&world, SampleCart::ShortStock);
    world.accept(INVENTORY, &cart_input(SampleCart::ShortStock), buyer());
    world.engine.run_until_idle().unwrap();
    assert!(!world.outputs(SampleCart::ShortStock).is_empty());
    let fresh: SfId = world
        .accept(START, &start_input(SampleCart::ShortStock), buyer())
        .unwrap()
        .parse()
        .unwrap();
    assert!(world.outputs(SampleCart::ShortStock).is_empty());
    assert_ne!(fresh, failed);
    assert!(world.session(&failed).is_archived);
    let active = world.active_sessions(SampleCart::ShortStock);
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id, fresh);
    assert_eq!(active[0].state, Some(SessionState::Start));
}

#[test]
fn start_cart_not_active_or_checkout_is_invalid_operation_403() {
    for status in [
        CartStatus::Closed,
        CartStatus::Processing,
        CartStatus::PendingClosed,
        CartStatus::PendingDelete,
    ] {
        let mut data = base();
        set_status(&mut data, SampleCart::InStock, status);
        let world = World::new(data);
        world.refuse(
            START,
            &start_input(SampleCart::InStock),
            buyer(),
            R::CartRow,
            INVALID_OPERATION,
            403,
        );
    }
}

#[test]
fn start_invalid_cart_id_is_unknown_exception_500() {
    let world = World::new(base());
    for cart_id in [
        "nope".to_owned(),
        missing_cart_id().to_string(),
        sample::account_id().to_string(),
    ] {
        world.refuse(
            START,
            &json!({ "cartId": cart_id, "initialState": "Start" }),
            buyer(),
            R::CartIdValid,
            UNKNOWN_EXCEPTION,
            500,
        );
    }
}

#[test]
fn start_caller_cannot_invoke_is_bad_request_400() {
    let world = World::new(base());
    world.refuse(
        START,
        &start_input(SampleCart::InStock),
        sample::no_permission_id(),
        R::CallerMayInvoke,
        BAD_REQUEST,
        400,
    );
}

#[test]
fn start_caller_without_edit_access_is_bad_request_400() {
    let world = World::new(base());
    world.refuse(
        START,
        &start_input(SampleCart::InStock),
        sample::reader_id(),
        R::CallerCanEditCart,
        BAD_REQUEST,
        400,
    );
    world.refuse(
        START,
        &start_input(SampleCart::InStock),
        sample::stranger_id(),
        R::CartIdValid,
        UNKNOWN_EXCEPTION,
        500,
    );
}

#[test]
fn start_no_access_to_the_effective_account_is_bad_request_400() {
    let world = World::new(base());
    world.refuse(
        START,
        &start_input(SampleCart::InactiveAccount),
        buyer(),
        R::EffectiveAccountValid,
        BAD_REQUEST,
        400,
    );
}

#[test]
fn start_account_not_associated_with_the_store_is_bad_request_400() {
    let world = World::new(base());
    world.refuse(
        START,
        &start_input(SampleCart::ForeignStore),
        buyer(),
        R::CallerIsStoreMember,
        BAD_REQUEST,
        400,
    );
}

#[test]
fn start_cart_already_in_progress_is_bad_request_400() {
    let (data, session) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    let message = world.refuse(
        START,
        &start_input(SampleCart::InStock),
        buyer(),
        R::SessionPhaseRow,
        BAD_REQUEST,
        400,
    );
    assert_eq!(
        message,
        format!("cart already in progress: session {session} is locked (IsProcessing is true)")
    );
}

#[test]
fn start_session_not_created_for_another_initial_state_is_unknown_exception_500() {
    let world = World::new(base());
    for state in ["Inventory", "Complete", "no such state"] {
        world.refuse(
            START,
            &json!({ "cartId": SampleCart::InStock.id().to_string(), "initialState": state }),
            buyer(),
            R::InitialStateIsEntry,
            UNKNOWN_EXCEPTION,
            500,
        );
    }
}

// ---------------------------------------------------------------------------------------
// Update Checkout Session
// ---------------------------------------------------------------------------------------

#[test]
fn update_matching_state_sets_next_state_and_locks_the_session() {
    let (data, session) = open_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    let request = world.accept(
        UPDATE,
        &update_input(
            &session,
            SessionState::Inventory,
            SessionState::ConfirmPrice,
        ),
        buyer(),
    );
    assert_eq!(request, Some(session.to_string()));
    let s = world.session(&session);
    assert_eq!(s.state, Some(SessionState::Inventory));
    assert_eq!(s.next_state, Some(SessionState::ConfirmPrice));
    assert!(s.is_processing);
}

#[test]
fn update_alternative_api_name_update_checkout_session_action_is_the_same_action() {
    let (data, session) = open_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    world.accept(
        "updateCheckoutSessionAction",
        &update_input(
            &session,
            SessionState::Inventory,
            SessionState::ConfirmPrice,
        ),
        buyer(),
    );
    assert!(world.session(&session).is_processing);
}

#[test]
fn update_state_mismatch_is_invalid_operation_409() {
    let (data, session) = open_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    let message = world.refuse(
        UPDATE,
        &update_input(
            &session,
            SessionState::ShippingAddress,
            SessionState::ConfirmPrice,
        ),
        buyer(),
        R::ExpectedStateMatches,
        INVALID_OPERATION,
        409,
    );
    assert_eq!(
        message,
        "the session's State is Inventory, not the expected \"Shipping Address\""
    );
}

#[test]
fn update_second_tab_loses_the_compare_and_set_with_409() {
    let (data, session) = open_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    let input = update_input(
        &session,
        SessionState::Inventory,
        SessionState::ConfirmPrice,
    );
    world.accept(UPDATE, &input, buyer());
    // The second tab read the same State; the session is now locked.
    world.refuse(
        UPDATE,
        &input,
        sample::colleague_id(),
        R::SessionPhaseRow,
        INVALID_OPERATION,
        409,
    );
    // Once the step finished the State moved on: the stale expectation is a mismatch.
    world.accept(INVENTORY, &cart_input(SampleCart::InStock), buyer());
    world.engine.run_until_idle().unwrap();
    assert_eq!(
        world.session(&session).state,
        Some(SessionState::ConfirmPrice)
    );
    world.refuse(
        UPDATE,
        &input,
        sample::colleague_id(),
        R::ExpectedStateMatches,
        INVALID_OPERATION,
        409,
    );
}

#[test]
fn update_session_processing_is_invalid_operation_409() {
    let (data, session) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    world.refuse(
        UPDATE,
        &update_input(
            &session,
            SessionState::Inventory,
            SessionState::ConfirmPrice,
        ),
        buyer(),
        R::SessionPhaseRow,
        INVALID_OPERATION,
        409,
    );
}

#[test]
fn update_closed_or_processing_cart_is_invalid_operation_403() {
    for status in [CartStatus::Closed, CartStatus::Processing] {
        let (mut data, session) = open_at(SampleCart::InStock, SessionState::Inventory);
        set_status(&mut data, SampleCart::InStock, status);
        let world = World::new(data);
        world.refuse(
            UPDATE,
            &update_input(
                &session,
                SessionState::Inventory,
                SessionState::ConfirmPrice,
            ),
            buyer(),
            R::CartRow,
            INVALID_OPERATION,
            403,
        );
    }
}

#[test]
fn update_invalid_session_id_is_unknown_exception_403() {
    let (data, _) = open_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    for id in [
        "not-a-session".to_owned(),
        String::new(),
        SfId::from_number(KeyPrefix::CartCheckoutSession, 9_999).to_string(),
        SampleCart::InStock.id().to_string(),
    ] {
        let message = world.refuse(
            UPDATE,
            &json!({ "checkoutSessionId": id, "nextState": "Confirm Price", "expCurrentState": "Inventory" }),
            buyer(),
            R::SessionIdValid,
            UNKNOWN_EXCEPTION,
            403,
        );
        // The message names the Id the caller gave, as given.
        assert_eq!(
            message,
            format!("invalid checkoutSessionId {id:?}: no such session")
        );
    }
}

#[test]
fn update_no_access_to_the_session_is_insufficient_access_400() {
    let (data, session) = open_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    let input = update_input(
        &session,
        SessionState::Inventory,
        SessionState::ConfirmPrice,
    );
    world.refuse(
        UPDATE,
        &input,
        sample::reader_id(),
        R::CallerCanEditCart,
        INSUFFICIENT,
        400,
    );
    // A session whose cart the caller cannot see is answered as one that does not exist.
    world.refuse(
        UPDATE,
        &input,
        sample::stranger_id(),
        R::SessionIdValid,
        UNKNOWN_EXCEPTION,
        403,
    );
}

#[test]
fn update_caller_cannot_invoke_is_bad_request_400() {
    let (data, session) = open_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    world.refuse(
        UPDATE,
        &update_input(
            &session,
            SessionState::Inventory,
            SessionState::ConfirmPrice,
        ),
        sample::no_permission_id(),
        R::CallerMayInvoke,
        BAD_REQUEST,
        400,
    );
}

#[test]
fn update_account_invalid_is_insufficient_access_400_where_async_actions_answer_500() {
    let (data, session) = open_at(SampleCart::InactiveAccount, SessionState::Inventory);
    let world = World::new(data);
    world.refuse(
        UPDATE,
        &update_input(
            &session,
            SessionState::Inventory,
            SessionState::ConfirmPrice,
        ),
        buyer(),
        R::EffectiveAccountValid,
        INSUFFICIENT,
        400,
    );
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::InactiveAccount),
        buyer(),
        R::EffectiveAccountValid,
        INSUFFICIENT,
        500,
    );
}

#[test]
fn update_not_a_store_member_is_insufficient_access_400_where_async_actions_answer_500() {
    let (data, session) = open_at(SampleCart::ForeignStore, SessionState::Inventory);
    let world = World::new(data);
    world.refuse(
        UPDATE,
        &update_input(
            &session,
            SessionState::Inventory,
            SessionState::ConfirmPrice,
        ),
        buyer(),
        R::CallerIsStoreMember,
        INSUFFICIENT,
        400,
    );
    world.refuse(
        INVENTORY,
        &cart_input(SampleCart::ForeignStore),
        buyer(),
        R::CallerIsStoreMember,
        INSUFFICIENT,
        500,
    );
}

#[test]
fn update_next_state_other_than_the_step_after_is_invalid_operation_403() {
    let (data, session) = open_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    for next in [SessionState::Taxes, SessionState::Inventory] {
        let message = world.refuse(
            UPDATE,
            &update_input(&session, SessionState::Inventory, next),
            buyer(),
            R::TargetIsNextStep,
            INVALID_OPERATION,
            403,
        );
        assert_eq!(
            message,
            format!(
                "updateCheckoutSessionStateAction from Inventory leads to Confirm Price, not {:?}",
                next.as_str()
            )
        );
    }
    // A screen step is not locked: it is written straight onto the session.
    let (data, session) = open_at(SampleCart::InStock, SessionState::ShippingAddress);
    let world = World::new(data);
    let message = world.refuse(
        UPDATE,
        &update_input(
            &session,
            SessionState::ShippingAddress,
            SessionState::Inventory,
        ),
        buyer(),
        R::TargetIsNextStep,
        INVALID_OPERATION,
        403,
    );
    assert_eq!(
        message,
        "updateCheckoutSessionStateAction is not declared from Shipping Address"
    );
}

#[test]
fn update_empty_state_is_invalid_operation_403() {
    let (mut data, session) = open_at(SampleCart::InStock, SessionState::Inventory);
    data.sessions[0].state = None;
    let world = World::new(data);
    world.refuse(
        UPDATE,
        &update_input(
            &session,
            SessionState::Inventory,
            SessionState::ConfirmPrice,
        ),
        buyer(),
        R::SessionStateRow,
        INVALID_OPERATION,
        403,
    );
}

#[test]
fn update_archived_session_is_invalid_operation_403() {
    let (mut data, session) = open_at(SampleCart::InStock, SessionState::Inventory);
    data.sessions[0].is_archived = true;
    let world = World::new(data);
    let message = world.refuse(
        UPDATE,
        &update_input(
            &session,
            SessionState::Inventory,
            SessionState::ConfirmPrice,
        ),
        buyer(),
        R::SessionRow,
        INVALID_OPERATION,
        403,
    );
    assert_eq!(message, format!("session {session} is archived"));
}

// ---------------------------------------------------------------------------------------
// Cancel Cart Async Operation
// ---------------------------------------------------------------------------------------

#[test]
fn cancel_closed_cart_is_invalid_operation_403() {
    let world = World::new(base());
    world.refuse(
        CANCEL,
        &cart_input(SampleCart::Closed),
        buyer(),
        R::CartRow,
        INVALID_OPERATION,
        403,
    );
    let (mut data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    set_status(&mut data, SampleCart::InStock, CartStatus::Closed);
    let world = World::new(data);
    world.refuse(
        CANCEL,
        &cart_input(SampleCart::InStock),
        buyer(),
        R::CartRow,
        INVALID_OPERATION,
        403,
    );
}

#[test]
fn cancel_with_no_session_or_no_operation_is_a_successful_no_op() {
    // The Main template calls it on every entry, with no fault path: only a Closed cart is
    // refused.
    for status in [
        CartStatus::Active,
        CartStatus::Checkout,
        CartStatus::Processing,
        CartStatus::PendingClosed,
        CartStatus::PendingDelete,
    ] {
        let mut data = base();
        set_status(&mut data, SampleCart::InStock, status);
        let world = World::new(data);
        let before = world.data();
        let answer = world.invoke(CANCEL, &cart_input(SampleCart::InStock), buyer());
        assert!(answer.is_success, "{status:?}: {answer:?}");
        let moved = world.data() != before;
        // A cart in checkout or processing leaves it; any other stays as it was.
        let leaves = matches!(status, CartStatus::Checkout | CartStatus::Processing);
        assert_eq!(moved, leaves, "{status:?}");
    }
}

#[test]
fn cancel_effects_operation_canceled_cart_active_session_archived() {
    let world = World::new(base());
    let session = drive_to_locked_inventory(&world, SampleCart::InStock);
    let op: SfId = world
        .accept(INVENTORY, &cart_input(SampleCart::InStock), buyer())
        .unwrap()
        .parse()
        .unwrap();
    let result = world.invoke(CANCEL, &cart_input(SampleCart::InStock), buyer());
    assert!(result.is_success, "{result:?}");
    assert!(result.output_values.is_none(), "cancel has no outputs");
    assert_eq!(world.operation(&op).status, OperationStatus::Canceled);
    assert_eq!(world.cart(SampleCart::InStock).status, CartStatus::Active);
    let s = world.session(&session);
    assert!(s.is_archived);
    assert!(!s.is_processing);
    assert!(world.active_sessions(SampleCart::InStock).is_empty());
    // Nothing is left for a worker.
    assert_eq!(world.engine.run_next_operation().unwrap(), None);
}

#[test]
fn cancel_a_locked_session_without_operation_archives_it_and_reopens_the_cart() {
    let (data, session) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    assert_eq!(
        world.accept(CANCEL, &cart_input(SampleCart::InStock), buyer()),
        None
    );
    assert!(world.session(&session).is_archived);
    assert_eq!(world.cart(SampleCart::InStock).status, CartStatus::Active);
}

#[test]
fn cancel_discards_the_late_report_of_a_running_operation() {
    // The provider signals that it runs, then waits until the test has cancelled.
    let (started_tx, started) = mpsc::channel::<()>();
    let (go, go_rx) = mpsc::channel::<()>();
    let (started_tx, go_rx) = (Mutex::new(started_tx), Mutex::new(go_rx));
    let world = world_with_provider(
        base(),
        EngineConfig::default(),
        move |_: &IntegrationRequest| {
            started_tx.lock().unwrap().send(()).unwrap();
            go_rx.lock().unwrap().recv().unwrap();
            Ok(Verdict::Passed)
        },
    );
    let session = drive_to_locked_inventory(&world, SampleCart::InStock);
    let op: SfId = world
        .accept(INVENTORY, &cart_input(SampleCart::InStock), buyer())
        .unwrap()
        .parse()
        .unwrap();
    let engine = world.engine.clone();
    let worker = thread::spawn(move || engine.run_next_operation());
    started.recv().unwrap();
    assert_eq!(world.operation(&op).status, OperationStatus::Running);
    world.accept(CANCEL, &cart_input(SampleCart::InStock), buyer());
    go.send(()).unwrap();
    let report = worker.join().unwrap().unwrap().unwrap();
    assert_eq!(report.outcome, StepOutcome::Passed);
    assert!(
        !report.applied,
        "a cancelled operation's report must be discarded"
    );
    assert_eq!(world.operation(&op).status, OperationStatus::Canceled);
    assert!(world.session(&session).is_archived);
    assert_eq!(world.cart(SampleCart::InStock).status, CartStatus::Active);
}

#[test]
fn cancel_shared_rows_invalid_cart_permission_access_account_membership() {
    let world = World::new(base());
    world.refuse(
        CANCEL,
        &json!({ "cartId": "bad" }),
        buyer(),
        R::CartIdValid,
        UNKNOWN_EXCEPTION,
        500,
    );
    world.refuse(
        CANCEL,
        &json!({ "cartId": missing_cart_id().to_string() }),
        buyer(),
        R::CartIdValid,
        UNKNOWN_EXCEPTION,
        500,
    );
    let (data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    let input = cart_input(SampleCart::InStock);
    world.refuse(
        CANCEL,
        &input,
        sample::no_permission_id(),
        R::CallerMayInvoke,
        BAD_REQUEST,
        400,
    );
    world.refuse(
        CANCEL,
        &input,
        sample::reader_id(),
        R::CallerCanEditCart,
        BAD_REQUEST,
        400,
    );
    world.refuse(
        CANCEL,
        &input,
        sample::stranger_id(),
        R::CartIdValid,
        UNKNOWN_EXCEPTION,
        500,
    );
    let (data, _) = locked_at(SampleCart::InactiveAccount, SessionState::Inventory);
    World::new(data).refuse(
        CANCEL,
        &cart_input(SampleCart::InactiveAccount),
        buyer(),
        R::EffectiveAccountValid,
        INSUFFICIENT,
        500,
    );
    let (data, _) = locked_at(SampleCart::ForeignStore, SessionState::Inventory);
    World::new(data).refuse(
        CANCEL,
        &cart_input(SampleCart::ForeignStore),
        buyer(),
        R::CallerIsStoreMember,
        INSUFFICIENT,
        500,
    );
}

// ---------------------------------------------------------------------------------------
// Not implemented yet: Cart to Order, Activate Order (and the payment step)
// ---------------------------------------------------------------------------------------

/// Adds a Draft order of `cart`'s lines to the session.
fn add_draft_order(data: &mut DataSet, session: SfId, cart: SampleCart) -> SfId {
    let id = SfId::from_number(KeyPrefix::Order, 7_000 + data.orders.len() as u64);
    let s = data.sessions.iter_mut().find(|s| s.id == session).unwrap();
    s.order_id = Some(id);
    let web_cart = data.carts.iter().find(|c| c.id == cart.id()).unwrap();
    let order = cartflow::model::Order::draft(id, web_cart, buyer(), chrono::Utc::now());
    data.orders.push(order);
    id
}

fn activate_input(cart: SampleCart, status: &str, run_async: bool) -> Value {
    json!({"cartId": cart.id().to_string(), "orderStatus": status, "runAsync": run_async})
}

#[test]
fn cart_to_order_makes_a_draft_order_of_the_cart_lines_on_the_session() {
    for run_async in [true, false] {
        let (data, session) = locked_at(SampleCart::InStock, SessionState::CartToOrder);
        let world = World::new(data);
        let input = json!({"cartId": SampleCart::InStock.id().to_string(), "runAsync": run_async});
        let op: SfId = world
            .accept("cartToOrderAction", &input, buyer())
            .unwrap()
            .parse()
            .unwrap();
        if run_async {
            assert_eq!(world.operation(&op).status, OperationStatus::New);
            world.engine.run_until_idle().unwrap();
        }
        // runAsync false: the operation ran before the call answered.
        assert_eq!(world.operation(&op).status, OperationStatus::Complete);
        let s = world.session(&session);
        assert_eq!(s.state, Some(SessionState::AuthorizePayment));
        let order = world
            .store
            .order(&s.order_id.expect("an order"))
            .unwrap()
            .unwrap();
        assert_eq!(order.status, cartflow::model::OrderStatus::Draft);
        let lines = world.store.cart_items(&SampleCart::InStock.id()).unwrap();
        assert_eq!(order.items.len(), lines.len());
        assert_eq!(order.cart_id, SampleCart::InStock.id());
    }
}

#[test]
fn activate_order_with_a_status_other_than_activated_is_unknown_exception_500() {
    let (mut data, session) = locked_at(SampleCart::InStock, SessionState::ActivateOrder);
    add_draft_order(&mut data, session, SampleCart::InStock);
    let world = World::new(data);
    for status in ["Draft", "activate", ""] {
        world.refuse(
            "activateOrderAction",
            &activate_input(SampleCart::InStock, status, true),
            buyer(),
            R::OrderStatusIsActivate,
            UNKNOWN_EXCEPTION,
            500,
        );
    }
}

#[test]
fn activate_order_with_a_life_cycle_type_other_than_unmanaged_or_managed_is_invalid_input_400() {
    let (mut data, session) = locked_at(SampleCart::InStock, SessionState::ActivateOrder);
    add_draft_order(&mut data, session, SampleCart::InStock);
    let world = World::new(data);
    let with_life_cycle = |status: &str, value: Value| {
        let mut input = activate_input(SampleCart::InStock, status, true);
        input["orderLifeCycleType"] = value;
        input
    };
    for value in [
        json!("managed"),
        json!("Unmanaged"),
        json!(""),
        json!("MANAGED "),
    ] {
        let message = world.refuse(
            "activateOrderAction",
            &with_life_cycle("Activated", value.clone()),
            buyer(),
            R::OrderLifeCycleTypeValid,
            "INVALID_INPUT",
            400,
        );
        assert!(
            message.contains("UNMANAGED nor MANAGED"),
            "{value}: {message}"
        );
    }
    // The order status is the documented rule, and checked first.
    world.refuse(
        "activateOrderAction",
        &with_life_cycle("Draft", json!("managed")),
        buyer(),
        R::OrderStatusIsActivate,
        UNKNOWN_EXCEPTION,
        500,
    );
    // Both values, and none, are accepted by the dry run.
    for value in [json!("UNMANAGED"), json!("MANAGED"), Value::Null] {
        let input = with_life_cycle("Activated", value.clone());
        let command = command_from_input(Action::ActivateOrder, &input).unwrap();
        let unmet = world.engine.check(&buyer().to_string(), &command).unwrap();
        assert!(unmet.is_empty(), "{value}: {unmet:?}");
    }
}

#[test]
fn activate_order_without_a_draft_order_is_invalid_input_403() {
    let refused_without_draft = |data: DataSet| {
        World::new(data).refuse(
            "activateOrderAction",
            &activate_input(SampleCart::InStock, "Activated", true),
            buyer(),
            R::DraftOrderOnSession,
            "INVALID_INPUT",
            403,
        )
    };
    let (data, session) = locked_at(SampleCart::InStock, SessionState::ActivateOrder);
    assert_eq!(
        refused_without_draft(data.clone()),
        "the session has no order: run cartToOrderAction first"
    );
    // An order that is no longer Draft is named, with its status.
    let mut data = data;
    let order = add_draft_order(&mut data, session, SampleCart::InStock);
    data.orders[0].status = cartflow::model::OrderStatus::Activated;
    assert_eq!(
        refused_without_draft(data),
        format!("order {order} is Activated, not Draft")
    );
}

#[test]
fn activate_order_with_error_outputs_on_the_cart_is_invalid_input_403() {
    let (mut data, session) = locked_at(SampleCart::InStock, SessionState::ActivateOrder);
    add_draft_order(&mut data, session, SampleCart::InStock);
    data.validation_outputs
        .push(cartflow::model::CartValidationOutput {
            id: SfId::from_number(KeyPrefix::CartValidationOutput, 8_000),
            cart_id: SampleCart::InStock.id(),
            background_operation_id: None,
            level: cartflow::model::Level::Error,
            output_type: cartflow::model::OutputType::Pricing,
            message: "price changed".into(),
            related_entity_id: None,
            is_dismissed: false,
        });
    let world = World::new(data);
    world.refuse(
        "activateOrderAction",
        &activate_input(SampleCart::InStock, "Activated", true),
        buyer(),
        R::NoErrorOutputs,
        "INVALID_INPUT",
        403,
    );
}

#[test]
fn an_activation_runs_over_outputs_that_do_not_block_and_stops_at_one_that_arrives_and_does() {
    let output = |n: u64, level, is_dismissed| cartflow::model::CartValidationOutput {
        id: SfId::from_number(KeyPrefix::CartValidationOutput, 8_000 + n),
        cart_id: SampleCart::InStock.id(),
        background_operation_id: None,
        level,
        output_type: cartflow::model::OutputType::Pricing,
        message: format!("output {n}"),
        related_entity_id: None,
        is_dismissed,
    };
    use cartflow::model::Level;
    let (mut data, session) = locked_at(SampleCart::InStock, SessionState::ActivateOrder);
    let order = add_draft_order(&mut data, session, SampleCart::InStock);
    // A warning, a note, and an Error the buyer dismissed: none blocks the order.
    data.validation_outputs.extend([
        output(1, Level::Warning, false),
        output(2, Level::Info, false),
        output(3, Level::Error, true),
    ]);
    let queue_activation = |world: &World| -> SfId {
        let input = activate_input(SampleCart::InStock, "Activated", true);
        let op = world.accept("activateOrderAction", &input, buyer());
        op.unwrap().parse().unwrap()
    };
    let world = World::new(data.clone());
    let op = queue_activation(&world);
    world.engine.run_until_idle().unwrap();
    assert_eq!(world.operation(&op).status, OperationStatus::Complete);
    let activated = world.store.order(&order).unwrap().unwrap();
    assert_eq!(activated.status, cartflow::model::OrderStatus::Activated);

    // An Error that arrives after the activation was accepted stops it when it runs.
    let world = World::new(data);
    let op = queue_activation(&world);
    let mut blocked = world.data();
    blocked
        .validation_outputs
        .push(output(4, Level::Error, false));
    let world = World::new(blocked);
    world.engine.run_until_idle().unwrap();
    assert_eq!(world.operation(&op).status, OperationStatus::Error);
    let draft = world.store.order(&order).unwrap().unwrap();
    assert_eq!(draft.status, cartflow::model::OrderStatus::Draft);
}

#[test]
fn activate_order_outside_its_step_or_while_processing_is_invalid_input_403() {
    let (mut data, session) = locked_at(SampleCart::InStock, SessionState::CartToOrder);
    add_draft_order(&mut data, session, SampleCart::InStock);
    let world = World::new(data);
    world.refuse(
        "activateOrderAction",
        &activate_input(SampleCart::InStock, "Activated", true),
        buyer(),
        R::StepRow,
        "INVALID_INPUT",
        403,
    );

    let (mut data, session) = locked_at(SampleCart::InStock, SessionState::ActivateOrder);
    add_draft_order(&mut data, session, SampleCart::InStock);
    let running = add_operation(
        &mut data,
        session,
        Action::ActivateOrder,
        OperationStatus::Running,
    );
    let refused_in_progress = |data: DataSet| {
        World::new(data).refuse(
            "activateOrderAction",
            &activate_input(SampleCart::InStock, "Activated", true),
            buyer(),
            R::NoOperationInProgress,
            "INVALID_INPUT",
            403,
        )
    };
    assert_eq!(
        refused_in_progress(data.clone()),
        format!("an integration is already in progress: operation {running} is Running")
    );
    // An operation of the cart that the session does not name is in progress all the same.
    data.sessions[0].background_operation_id = None;
    assert_eq!(
        refused_in_progress(data),
        "an integration is already in progress for this cart"
    );
}

#[test]
fn activate_order_activates_the_order_with_a_summary_and_the_last_screen_closes_the_cart() {
    let (mut data, session) = locked_at(SampleCart::InStock, SessionState::ActivateOrder);
    let order = add_draft_order(&mut data, session, SampleCart::InStock);
    let world = World::new(data);
    world.accept(
        "activateOrderAction",
        &activate_input(SampleCart::InStock, "Activated", false),
        buyer(),
    );
    let activated = world.store.order(&order).unwrap().unwrap();
    assert_eq!(activated.status, cartflow::model::OrderStatus::Activated);
    assert!(activated.order_summary_id.is_some() && activated.activated_date.is_some());
    assert_eq!(
        world.session(&session).state,
        Some(SessionState::OrderConfirmation)
    );

    // Order Confirmation -> Complete: the cart closes, the session is archived at Complete.
    world
        .engine
        .execute(
            &buyer().to_string(),
            Command::Advance {
                session_id: session.to_string(),
                state: "Complete".into(),
                exp_current_state: Some("Order Confirmation".into()),
            },
        )
        .unwrap();
    let s = world.session(&session);
    assert_eq!(s.state, Some(SessionState::Complete));
    assert!(s.is_archived);
    assert_eq!(world.cart(SampleCart::InStock).status, CartStatus::Closed);
    // A Closed cart is final.
    world.refuse(
        CANCEL,
        &cart_input(SampleCart::InStock),
        buyer(),
        R::CartRow,
        INVALID_OPERATION,
        403,
    );
}

// ---------------------------------------------------------------------------------------
// permitted
// ---------------------------------------------------------------------------------------

#[test]
fn permitted_at_a_locked_inventory_step_buyer_may_check_inventory_or_cancel() {
    let (data, _) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    let expected = [CANCEL, INVENTORY];
    for actor in [buyer(), sample::colleague_id(), admin_id()] {
        assert_eq!(world.permitted(actor, SampleCart::InStock), expected);
    }
    for actor in [
        sample::reader_id(),
        sample::stranger_id(),
        sample::no_permission_id(),
        unknown_user_id(),
    ] {
        assert_eq!(
            world.permitted(actor, SampleCart::InStock),
            Vec::<String>::new()
        );
    }
}

#[test]
fn permitted_at_each_point_of_a_checkout() {
    // An Active cart without a session: only starting makes sense.
    let world = World::new(base());
    assert_eq!(world.permitted(buyer(), SampleCart::InStock), [START]);
    // An open Inventory step: resume, lock it, or cancel.
    let (data, _) = open_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    assert_eq!(
        world.permitted(buyer(), SampleCart::InStock),
        [CANCEL, START, UPDATE]
    );
    // A screen step: advance, resume, cancel.
    let (data, _) = open_at(SampleCart::InStock, SessionState::ShippingAddress);
    let world = World::new(data);
    assert_eq!(
        world.permitted(buyer(), SampleCart::InStock),
        ["advance (screen)", CANCEL, START]
    );
    // A running operation: only cancel.
    let (mut data, session) = locked_at(SampleCart::InStock, SessionState::Inventory);
    add_operation(
        &mut data,
        session,
        Action::CheckCartInventory,
        OperationStatus::Running,
    );
    let world = World::new(data);
    assert_eq!(world.permitted(buyer(), SampleCart::InStock), [CANCEL]);
    // A Closed cart: nothing.
    let world = World::new(base());
    assert_eq!(
        world.permitted(buyer(), SampleCart::Closed),
        Vec::<String>::new()
    );
}

#[test]
fn a_screen_lists_its_move_only_once_it_has_its_input() {
    // Offered methods and none chosen: choose either, resume or cancel; not advance.
    let world = World::new(offered_two_methods(None));
    let listed = world.permitted(buyer(), SampleCart::InStock);
    let choose = "setCheckoutDeliveryMethod";
    assert_eq!(listed, [CANCEL, START, choose, choose]);
    // One chosen: advance, or choose the other.
    let world = World::new(offered_two_methods(Some("GROUND")));
    let listed = world.permitted(buyer(), SampleCart::InStock);
    assert_eq!(
        listed,
        [
            "advance (screen)",
            CANCEL,
            START,
            "setCheckoutDeliveryMethod"
        ]
    );
}

/// Inputs for invoking every implemented action on `cart` in a world's current state.
fn every_invocation(world: &World, cart: SampleCart) -> Vec<(&'static str, Value)> {
    let mut calls = vec![(START, start_input(cart)), (CANCEL, cart_input(cart))];
    for step in &table().template().steps {
        if let cartflow::machine::StepKind::Async(action) = step.kind
            && action.provider_kind().is_some()
        {
            calls.push((action.api_name(), cart_input(cart)));
        }
    }
    if let Some(s) = world.active_sessions(cart).first()
        && let Some(state) = s.state
        && let Some(step) = table().template().step(state)
        && let (Some(next), cartflow::machine::StepKind::Async(_)) = (step.next, step.kind)
    {
        calls.push((UPDATE, update_input(&s.id, state, next)));
    }
    let data = world.data();
    let offered = data.carts.iter().find(|c| c.id == cart.id());
    for option in offered.iter().flat_map(|c| c.delivery_options.iter()) {
        let input = json!({
            "cartId": cart.id().to_string(),
            "deliveryMethodId": option.delivery_method_id,
        });
        calls.push(("setCheckoutDeliveryMethod", input));
    }
    calls
}

/// A cart at the Delivery Method screen, offered two methods and having chosen `chosen`.
fn offered_two_methods(chosen: Option<&str>) -> DataSet {
    let (mut data, _) = open_at(SampleCart::InStock, SessionState::DeliveryMethod);
    let cart = data
        .carts
        .iter_mut()
        .find(|c| c.id == SampleCart::InStock.id())
        .unwrap();
    cart.delivery_options = ["GROUND", "FREIGHT"]
        .into_iter()
        .map(|id| cartflow::model::DeliveryOption {
            id: None,
            delivery_method_id: id.into(),
            name: id.into(),
            amount: rust_decimal::Decimal::TEN,
        })
        .collect();
    cart.delivery_method_id = chosen.map(str::to_owned);
    data
}

#[test]
fn permitted_lists_exactly_the_actions_that_would_be_accepted() {
    // For each fixture and actor, every action is tried on a fresh copy of the world; those
    // accepted (and with an effect) are exactly those `permitted` lists.
    let fixtures: Vec<DataSet> = vec![
        base(),
        open_at(SampleCart::InStock, SessionState::Inventory).0,
        locked_at(SampleCart::InStock, SessionState::Inventory).0,
        locked_at(SampleCart::InStock, SessionState::ShippingCost).0,
        open_at(SampleCart::InStock, SessionState::Taxes).0,
        offered_two_methods(None),
        offered_two_methods(Some("GROUND")),
        {
            let (mut data, session) = locked_at(SampleCart::InStock, SessionState::ConfirmPrice);
            add_operation(&mut data, session, Action::PriceCart, OperationStatus::New);
            data
        },
    ];
    let actors = [
        buyer(),
        sample::colleague_id(),
        sample::reader_id(),
        sample::no_permission_id(),
        sample::stranger_id(),
        admin_id(),
    ];
    for data in fixtures {
        for actor in actors {
            // Screens are no actions to invoke: `permitted_at_each_point_of_a_checkout` and
            // `a_screen_lists_its_move_only_once_it_has_its_input` cover them.
            let listed: BTreeSet<String> = World::new(data.clone())
                .permitted(actor, SampleCart::InStock)
                .into_iter()
                .filter(|name| name != "advance (screen)")
                .collect();
            let probe = World::new(data.clone());
            let mut accepted = BTreeSet::new();
            for (action, input) in every_invocation(&probe, SampleCart::InStock) {
                let world = World::new(data.clone());
                let before = world.data();
                let ok = world.invoke(action, &input, actor).is_success;
                // `permitted` leaves out a cancel with nothing to cancel.
                if ok && (action != CANCEL || world.data() != before) {
                    accepted.insert(action.to_owned());
                }
            }
            assert_eq!(listed, accepted, "actor {actor}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Every refusal changes nothing
// ---------------------------------------------------------------------------------------

#[test]
fn every_refusal_changes_nothing() {
    // Every action by every actor on every sample cart, in a handful of checkout states;
    // each call is compared with the store as it stood just before it.
    let fixtures: Vec<DataSet> = vec![
        base(),
        locked_at(SampleCart::InStock, SessionState::Inventory).0,
        open_at(SampleCart::ShortStock, SessionState::ConfirmPrice).0,
        {
            let (mut data, session) = locked_at(SampleCart::InStock, SessionState::Taxes);
            add_operation(
                &mut data,
                session,
                Action::CalcCartTaxes,
                OperationStatus::Running,
            );
            set_status(&mut data, SampleCart::Closed, CartStatus::Closed);
            data
        },
    ];
    let mut actors: Vec<String> = [
        buyer(),
        sample::colleague_id(),
        sample::reader_id(),
        sample::no_permission_id(),
        sample::stranger_id(),
        sample::integrator_id(),
        admin_id(),
        outsider_id(),
        unknown_user_id(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    actors.push("garbage".into());
    let mut codes = BTreeSet::new();
    let mut refusals = 0;
    for data in fixtures {
        // A fresh world per actor, so an accepted cancel does not hide later refusals.
        for actor in &actors {
            let world = World::new(data.clone());
            let mut calls: Vec<(&str, Value)> = Vec::new();
            for cart in SampleCart::ALL {
                let mut own = every_invocation(&world, cart);
                // Cancel last: it ends the checkout the other calls are aimed at.
                own.sort_by_key(|(action, _)| *action == CANCEL);
                calls.extend(own);
                for action in [Action::CartToOrder, Action::ActivateOrder] {
                    calls.insert(0, (action.api_name(), cart_input(cart)));
                }
            }
            for session in world.data().sessions {
                let input = update_input(
                    &session.id,
                    SessionState::Inventory,
                    SessionState::ConfirmPrice,
                );
                calls.insert(0, (UPDATE, input));
            }
            for action in [INVENTORY, START, CANCEL] {
                calls.insert(0, (action, json!({ "cartId": "bad" })));
                let missing = json!({ "cartId": missing_cart_id().to_string() });
                calls.insert(0, (action, missing));
            }
            for (action, input) in &calls {
                let before = world.data();
                let result = world.invoke(action, input, actor);
                if !result.is_success {
                    refusals += 1;
                    codes.insert(result.errors.unwrap()[0].status_code.clone());
                    assert_eq!(world.data(), before, "{action} {input} by {actor}");
                }
            }
        }
    }
    assert!(refusals > 100, "only {refusals} refusals were exercised");
    for code in [
        BAD_REQUEST,
        UNKNOWN_EXCEPTION,
        INVALID_OPERATION,
        ALREADY_IN_PROCESS,
        INSUFFICIENT,
    ] {
        assert!(codes.contains(code), "no refusal with {code}: {codes:?}");
    }
}

#[test]
fn update_without_exp_current_state_is_invalid_operation_409() {
    let (data, session) = open_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    let input = json!({"checkoutSessionId": session.to_string(), "nextState": "Confirm Price"});
    let message = world.refuse(
        UPDATE,
        &input,
        buyer(),
        R::ExpectedStateMatches,
        INVALID_OPERATION,
        409,
    );
    assert!(message.contains("expCurrentState"), "{message}");
}

#[test]
fn cancel_returns_a_processing_cart_to_active() {
    let (mut data, session) = locked_at(SampleCart::InStock, SessionState::Inventory);
    set_status(&mut data, SampleCart::InStock, CartStatus::Processing);
    let world = World::new(data);
    assert_eq!(
        world.accept(CANCEL, &cart_input(SampleCart::InStock), buyer()),
        None
    );
    assert!(world.session(&session).is_archived);
    assert_eq!(world.cart(SampleCart::InStock).status, CartStatus::Active);
}

#[test]
fn permitted_offers_the_order_steps_at_their_locked_step() {
    for (state, action) in [
        (SessionState::CartToOrder, "cartToOrderAction"),
        (SessionState::ActivateOrder, "activateOrderAction"),
    ] {
        let (mut data, session) = locked_at(SampleCart::InStock, state);
        add_draft_order(&mut data, session, SampleCart::InStock);
        let world = World::new(data);
        let offered = world.permitted(buyer(), SampleCart::InStock);
        let mut expected = [action, CANCEL];
        expected.sort();
        assert_eq!(offered, expected, "at {state}");
    }
}

// ---------------------------------------------------------------------------------------
// Repeats, invisible records, internal failures, inline runs
// ---------------------------------------------------------------------------------------

#[test]
fn an_async_step_repeated_after_its_operation_completed_is_invalid_operation_403() {
    let mut steps: Vec<(Action, Value)> = [Action::CheckCartInventory]
        .into_iter()
        .chain(OTHER_ASYNC)
        .map(|action| (action, cart_input(SampleCart::InStock)))
        .collect();
    for run_async in [true, false] {
        steps.push((
            Action::CartToOrder,
            json!({"cartId": SampleCart::InStock.id().to_string(), "runAsync": run_async}),
        ));
    }
    for (action, input) in steps {
        let (data, _) = locked_at(SampleCart::InStock, step_of(action));
        let world = World::new(data);
        let first = world.accept(action.api_name(), &input, buyer()).unwrap();
        world.engine.run_until_idle().unwrap();
        assert_eq!(
            world.operation(&first.parse().unwrap()).status,
            OperationStatus::Complete
        );
        // The session is no longer locked: the repeat is refused and starts nothing.
        world.refuse(
            action.api_name(),
            &input,
            buyer(),
            R::SessionPhaseRow,
            INVALID_OPERATION,
            403,
        );
        assert!(world.data().orders.len() <= 1, "{action}: a second order");
    }
}

#[test]
fn an_activation_repeated_after_it_completed_is_invalid_operation_403() {
    let (mut data, session) = locked_at(SampleCart::InStock, SessionState::ActivateOrder);
    add_draft_order(&mut data, session, SampleCart::InStock);
    let world = World::new(data);
    let input = activate_input(SampleCart::InStock, "Activated", false);
    world.accept("activateOrderAction", &input, buyer());
    world.refuse(
        "activateOrderAction",
        &input,
        buyer(),
        R::SessionPhaseRow,
        INVALID_OPERATION,
        403,
    );
}

/// Every action's input naming `cart` (or, for Update Checkout Session, `session`).
fn every_action_on(cart: &SfId, session: &SfId) -> Vec<(&'static str, Value)> {
    let on_cart = json!({"cartId": cart.to_string()});
    let mut calls: Vec<(&'static str, Value)> = Action::ALL
        .into_iter()
        .filter(|a| *a != Action::UpdateCheckoutSessionState)
        .map(|a| (a.api_name(), on_cart.clone()))
        .collect();
    calls.push(("authorizePayment", on_cart));
    calls.push((
        "cartToOrderAction",
        json!({"cartId": cart.to_string(), "runAsync": false}),
    ));
    calls.push((
        "activateOrderAction",
        json!({"cartId": cart.to_string(), "orderStatus": "Activated"}),
    ));
    calls.push((
        UPDATE,
        json!({"checkoutSessionId": session.to_string(), "nextState": "Confirm Price",
               "expCurrentState": "Inventory"}),
    ));
    calls
}

/// An answer as bytes, with the ID the caller sent replaced, so that answers about two IDs
/// compare.
fn answer_bytes(result: &ActionResult, sent: &SfId) -> String {
    let mut text = serde_json::to_string(result).unwrap();
    text = text.replace(sent.as_str(), "<sent>");
    format!("{}|{text}", result.http_status)
}

#[test]
fn a_cart_or_session_the_caller_cannot_see_is_answered_as_a_missing_one_by_every_action() {
    let (data, session) = locked_at(SampleCart::InStock, SessionState::Inventory);
    let world = World::new(data);
    let foreign = SampleCart::InStock.id();
    let missing_session = SfId::from_number(KeyPrefix::CartCheckoutSession, 9_999);
    let foreign_calls = every_action_on(&foreign, &session);
    let missing_calls = every_action_on(&missing_cart_id(), &missing_session);
    let before = world.data();
    for ((action, on_foreign), (_, on_missing)) in foreign_calls.iter().zip(&missing_calls) {
        for stranger in [sample::stranger_id(), outsider_id()] {
            let (sent_foreign, sent_missing) = if *action == UPDATE {
                (session, missing_session)
            } else {
                (foreign, missing_cart_id())
            };
            let a = world.invoke(action, on_foreign, stranger);
            let b = world.invoke(action, on_missing, stranger);
            assert!(!a.is_success, "{action}: {a:?}");
            assert_eq!(
                answer_bytes(&a, &sent_foreign),
                answer_bytes(&b, &sent_missing),
                "{action} as {stranger}"
            );
            let message = &a.errors.as_ref().unwrap()[0].message;
            if *action == UPDATE {
                assert!(!message.contains(foreign.as_str()), "{message}");
            }
            // The dry run tells nothing either.
            if let Some(action) = Action::from_api_name(action) {
                let check = |input: &Value, sent: &SfId| {
                    let command = command_from_input(action, input).unwrap();
                    let unmet = world.engine.check(&stranger.to_string(), &command).unwrap();
                    format!("{unmet:?}").replace(sent.as_str(), "<sent>")
                };
                assert_eq!(
                    check(on_foreign, &sent_foreign),
                    check(on_missing, &sent_missing)
                );
            }
        }
        // A reader sees the cart: the documented "no access" answer of the action.
        let read = world.invoke(action, on_foreign, sample::reader_id());
        let event = Action::from_api_name(action).map_or(
            cartflow::machine::Event::Authorize,
            cartflow::machine::Event::Action,
        );
        let guard = cartflow::machine::guards(event)
            .iter()
            .find(|g| g.requirement == R::CallerCanEditCart)
            .unwrap();
        let errors = read.errors.expect("a reader is refused");
        assert_eq!(
            (errors[0].status_code.as_str(), read.http_status),
            (guard.code.as_str(), guard.status),
            "{action} as a reader"
        );
    }
    assert_eq!(world.data(), before, "a refusal changed the store");
}

/// A store that fails in the ways a disk does, or runs a hook after each commit.
struct Faulty {
    inner: Arc<MemoryStore>,
    commit_error: Option<&'static str>,
    load_error: Option<&'static str>,
    after_commit: Box<dyn Fn(&cartflow::store::Commit) + Send + Sync>,
}

impl Faulty {
    fn new(inner: Arc<MemoryStore>) -> Faulty {
        Faulty {
            inner,
            commit_error: None,
            load_error: None,
            after_commit: Box::new(|_| {}),
        }
    }
}

impl Store for Faulty {
    fn load(
        &self,
        key: cartflow::store::LoadKey,
    ) -> Result<cartflow::machine::Snapshot, cartflow::StoreError> {
        match self.load_error {
            Some(text) => Err(cartflow::StoreError::Io(text.into())),
            None => self.inner.load(key),
        }
    }
    fn commit(&self, commit: &cartflow::store::Commit) -> Result<(), cartflow::StoreError> {
        if let Some(text) = self.commit_error {
            return Err(cartflow::StoreError::Io(text.into()));
        }
        self.inner.commit(commit)?;
        (self.after_commit)(commit);
        Ok(())
    }
    delegate_store!(inner => user, claimable_operations, expired_operations, cart, carts_after, cart_items,
        cart_item, validation_output, session, sessions_of, operation, operations_of, order,
        validation_outputs, history, events_after, last_event, webhook_cursor, advance_webhook, deliveries, begin_keyed, keep_answer, release_key, operation_counts, web_stores, owner_of);
}

fn engine_over(store: Faulty) -> Engine {
    Engine::new(Arc::new(store)).with_ids(Arc::new(SequentialIds::starting_at(50_000)))
}

#[test]
fn a_store_failure_answers_unknown_exception_500_with_a_generic_message_never_its_text() {
    let (data, session) = locked_at(SampleCart::InStock, SessionState::Inventory);
    for (commit_error, load_error) in [
        (Some("database or disk is full"), None),
        (None, Some("database disk image is malformed")),
    ] {
        let inner = Arc::new(MemoryStore::from_dataset(data.clone()).unwrap());
        let mut store = Faulty::new(inner);
        store.commit_error = commit_error;
        store.load_error = load_error;
        let engine = engine_over(store);
        let text = commit_error.or(load_error).unwrap();
        let mut calls = every_action_on(&SampleCart::InStock.id(), &session);
        calls.retain(|(name, _)| *name == INVENTORY || *name == CANCEL);
        for (action, input) in calls {
            let result = engine.invoke(action, &input, &buyer().to_string());
            let errors = result.errors.expect("the store failed");
            assert_eq!(result.http_status, 500, "{action}");
            assert_eq!(errors[0].status_code, UNKNOWN_EXCEPTION);
            assert_eq!(errors[0].message, cartflow::api::INTERNAL_ERROR_MESSAGE);
            let answer = serde_json::to_string(&errors).unwrap();
            assert!(
                !answer.contains(text),
                "{action} passed on {text:?}: {answer}"
            );
        }
    }
}

/// An engine over `data` whose store cancels the cart's checkout (as a concurrent
/// `cancelCartAsyncOperation` would) right after a worker's claim commits.
fn cancelled_after_the_claim(data: DataSet) -> (Engine, Arc<MemoryStore>) {
    let inner = Arc::new(MemoryStore::from_dataset(data).unwrap());
    let other_tab = Engine::new(inner.clone() as Arc<dyn Store>)
        .with_ids(Arc::new(SequentialIds::starting_at(70_000)));
    let mut store = Faulty::new(inner.clone());
    store.after_commit = Box::new(move |commit| {
        let claimed = commit
            .changes
            .operations
            .iter()
            .any(|op| op.status == OperationStatus::Running);
        if claimed {
            let cancel = Command::Cancel {
                cart_id: SampleCart::InStock.id().to_string(),
            };
            other_tab
                .execute(&buyer().to_string(), cancel)
                .expect("the cancel is accepted");
        }
    });
    (engine_over(store), inner)
}

#[test]
fn an_inline_order_step_cancelled_while_it_runs_is_refused_invalid_operation_409() {
    let (data, _) = locked_at(SampleCart::InStock, SessionState::CartToOrder);
    let (mut activation, session) = locked_at(SampleCart::InStock, SessionState::ActivateOrder);
    let draft = add_draft_order(&mut activation, session, SampleCart::InStock);
    let cases = [
        (
            data,
            json!({"cartId": SampleCart::InStock.id().to_string(), "runAsync": false}),
            "cartToOrderAction",
        ),
        (
            activation,
            activate_input(SampleCart::InStock, "Activated", false),
            "activateOrderAction",
        ),
    ];
    for (data, input, action) in cases {
        let (engine, inner) = cancelled_after_the_claim(data);
        let command = command_from_input(Action::from_api_name(action).unwrap(), &input).unwrap();
        let error = engine
            .execute(&buyer().to_string(), command)
            .expect_err("the step did not take effect");
        assert_eq!(
            error.requirement(),
            Some(R::InlineOperationCompleted),
            "{error}"
        );
        assert_eq!(
            (error.code().as_str(), error.http_status()),
            (INVALID_OPERATION, 409)
        );
        assert!(error.to_string().contains("canceled"), "{error}");
        let ops = inner.operations_of(&SampleCart::InStock.id()).unwrap();
        assert!(
            ops.iter().all(|op| op.status == OperationStatus::Canceled),
            "{ops:?}"
        );
        let orders = inner.to_dataset().orders;
        match action {
            "cartToOrderAction" => assert!(orders.is_empty(), "{orders:?}"),
            _ => {
                let order = orders.iter().find(|o| o.id == draft).unwrap();
                assert_eq!(order.status, cartflow::model::OrderStatus::Draft);
            }
        }
    }
}

#[test]
fn an_inline_order_step_answers_success_only_once_its_operation_completed() {
    let (data, session) = locked_at(SampleCart::InStock, SessionState::CartToOrder);
    let (engine, inner) = cancelled_after_the_claim(data);
    let input = json!({"cartId": SampleCart::InStock.id().to_string(), "runAsync": false});
    let result = engine.invoke("cartToOrderAction", &input, &buyer().to_string());
    assert!(!result.is_success, "{result:?}");
    assert_eq!(result.http_status, 409);
    assert_eq!(result.errors.unwrap()[0].status_code, INVALID_OPERATION);
    assert!(inner.session(&session).unwrap().unwrap().is_archived);
    // Without a concurrent cancel the same call succeeds with a Complete operation.
    let (data, _) = locked_at(SampleCart::InStock, SessionState::CartToOrder);
    let world = World::new(data);
    let op: SfId = world
        .accept("cartToOrderAction", &input, buyer())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(world.operation(&op).status, OperationStatus::Complete);
}
