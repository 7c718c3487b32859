//! A store's own async steps, end to end: a credit-check template (the standard checkout plus
//! a custom "Credit Check" step after Taxes and an "Approval" screen after it) driven over
//! HTTP to an activated order, its provider refusing the first time and passing the second;
//! the custom step's operation under a panicking, hanging or vanished provider; the async
//! actions' codes at the wrong step; and the routes that list and describe custom actions.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration as StdDuration;

use cartflow::clock::ManualClock;
use cartflow::flow::{BuyerInput, Drive, Waiting, drive};
use cartflow::ids::SequentialIds;
use cartflow::integrations::{
    CreditLimit, CustomProvider, IntegrationRequest, Integrations, ProviderError, Verdict,
};
use cartflow::machine::{
    Command, CustomAction, OperationSettings, Output, Step, StepInput, StepKind, StepOutcome,
    Template, TransitionTable,
};
use cartflow::model::{OperationStatus, OutputType, ProviderKind, SessionState, SfId};
use cartflow::sample::{self, SampleCart};
use cartflow::{Engine, EngineConfig, MemoryStore};
use chrono::{TimeZone, Utc};
use rust_decimal::Decimal;

const CREDIT_CHECK: &str = "Credit Check";
const APPROVAL: &str = "Approval";
const PROVIDER: &str = "credit-limit";

fn credit_action() -> CustomAction {
    CustomAction::new("CreditCheck").unwrap()
}

fn state(name: &str) -> SessionState {
    SessionState::new(name).unwrap()
}

/// The standard template with a custom "Credit Check" step after `after` (run by
/// `credit-limit`, its transition `CheckCredit`) and an "Approval" screen after it.
fn credit_check_after(after: SessionState) -> Template {
    let mut template = Template::standard();
    template.name = "credit check".into();
    // It holds the cart's total to a limit: the total is computed from the lines, the
    // delivery address (shipping, taxes) and the delivery method.
    let check = Step::custom(
        state(CREDIT_CHECK),
        credit_action(),
        "CheckCredit",
        PROVIDER,
    )
    .consuming(&[
        StepInput::Lines,
        StepInput::DeliveryAddress,
        StepInput::DeliveryMethod,
    ]);
    assert!(template.insert_step(after, check));
    assert!(template.insert_step(
        state(CREDIT_CHECK),
        Step::new(state(APPROVAL), StepKind::Screen)
    ));
    template
}

/// The credit-check template, read from `examples/templates/credit-check.json`: the custom
/// step after Taxes, then the Approval screen.
fn credit_check() -> TransitionTable {
    let table = TransitionTable::from_json(include_str!("../examples/templates/credit-check.json"))
        .unwrap();
    let built = credit_check_after(SessionState::Taxes);
    assert_eq!(
        table.template().steps,
        built.steps,
        "the example file drifted"
    );
    table
}

/// The sample store's providers, with `provider` registered as `credit-limit`.
fn integrations_with(provider: Arc<dyn CustomProvider>) -> Integrations {
    let mut integrations = sample::integrations(&sample::dataset());
    integrations.set_custom(sample::store_id(), PROVIDER, provider);
    integrations
}

/// A credit department: the built-in [`CreditLimit`], whose default limit it can raise.
struct CreditDesk(Mutex<CreditLimit>);

impl CreditDesk {
    fn raise(&self, limit: Decimal) {
        self.0.lock().unwrap().default_limit = limit;
    }
}

impl CustomProvider for CreditDesk {
    fn run_step(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        self.0.lock().unwrap().run_step(request)
    }
}

// ---------------------------------------------------------------------------------------
// The library: the command, the flow driver, the worker's fault paths
// ---------------------------------------------------------------------------------------

fn buyer() -> String {
    sample::buyer_id().to_string()
}

/// An engine on the sample world whose template runs "Credit Check" right after Shipping
/// Address (so a test reaches it in two screens), with `provider` and `config`.
fn early_check(
    provider: Arc<dyn CustomProvider>,
    config: EngineConfig,
) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap(),
    ));
    let table = TransitionTable::build(credit_check_after(SessionState::ShippingAddress)).unwrap();
    let engine = Engine::new(Arc::new(
        MemoryStore::from_dataset(sample::dataset()).unwrap(),
    ))
    .with_table(table)
    .with_ids(Arc::new(SequentialIds::default()))
    .with_clock(clock.clone())
    .with_integrations(integrations_with(provider))
    .with_config(config);
    (engine, clock)
}

/// Walks the in-stock cart to a locked Credit Check and invokes its custom action, through
/// the command `Command::for_step` builds for the step; returns the session and the operation.
fn start_credit_check(engine: &Engine) -> (SfId, SfId) {
    let session = lock_credit_check(engine);
    let cart = SampleCart::InStock.id().to_string();
    let command = Command::for_step(StepKind::Custom(credit_action()), cart).unwrap();
    assert_eq!(
        command,
        Command::RunCustom {
            action: credit_action(),
            cart_id: SampleCart::InStock.id().to_string()
        }
    );
    let Output::BackgroundOperationId(operation) = engine.execute(&buyer(), command).unwrap()
    else {
        panic!("no operation");
    };
    (session, operation)
}

#[test]
fn a_custom_action_creates_an_operation_named_after_it_that_runs_the_named_provider() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let provider = Arc::new(move |request: &IntegrationRequest| {
        counted.fetch_add(1, Ordering::SeqCst);
        assert_eq!(request.cart.id, SampleCart::InStock.id());
        Ok(Verdict::Passed)
    });
    let (engine, _) = early_check(provider, EngineConfig::default());
    let (session, operation) = start_credit_check(&engine);
    let store = engine.store();
    let recorded = store.operation(&operation).unwrap().unwrap();
    assert_eq!(recorded.name, "CreditCheck");
    assert_eq!(recorded.provider_kind, Some(ProviderKind::Custom));
    assert_eq!(recorded.status, OperationStatus::New);
    let report = engine.run_next_operation().unwrap().unwrap();
    assert_eq!(
        (report.outcome, report.applied),
        (StepOutcome::Passed, true)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let moved = store.session(&session).unwrap().unwrap();
    assert_eq!(moved.state, Some(state(APPROVAL)));
    assert!(!moved.is_processing);
}

#[test]
fn the_flow_driver_and_permitted_run_a_custom_step() {
    let refusing = Arc::new(|request: &IntegrationRequest| {
        Ok(Verdict::Failed(vec![
            cartflow::machine::ValidationMessage {
                level: cartflow::model::Level::Error,
                message: "No credit today.".into(),
                related_entity_id: Some(request.cart.id),
            },
        ]))
    });
    let (engine, _) = early_check(refusing, EngineConfig::default());
    let cart = SampleCart::InStock.id();
    let input = BuyerInput {
        deliver_to: Some(sample::denver()),
        ..BuyerInput::default()
    };
    let Drive::Failed { outputs, .. } =
        drive(&engine, &buyer(), &cart, &input, Waiting::RunInline).unwrap()
    else {
        panic!("the driver did not stop at the refused credit check");
    };
    let texts: Vec<(&str, OutputType)> = outputs
        .iter()
        .map(|o| (o.message.as_str(), o.output_type))
        .collect();
    assert_eq!(texts, [("No credit today.", OutputType::Other)]);
    let op = outputs[0].background_operation_id.unwrap();
    assert_eq!(
        engine.store().operation(&op).unwrap().unwrap().name,
        "CreditCheck"
    );

    // Locked at the custom step, `permitted` offers its custom action.
    let (engine, _) = early_check(
        Arc::new(|_: &IntegrationRequest| Ok(Verdict::Passed)),
        EngineConfig::default(),
    );
    lock_credit_check(&engine);
    let names: Vec<String> = engine
        .permitted(&buyer(), &cart)
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(names.contains(&"CreditCheck".to_owned()), "{names:?}");
}

/// Starts checkout of the in-stock cart and walks it to a locked Credit Check; returns the
/// session.
fn lock_credit_check(engine: &Engine) -> SfId {
    let cart = SampleCart::InStock.id().to_string();
    let Output::RequestId(session) = engine
        .execute(
            &buyer(),
            Command::StartSession {
                cart_id: cart,
                initial_state: None,
            },
        )
        .unwrap()
    else {
        panic!("no session");
    };
    for to in ["Shipping Address", CREDIT_CHECK] {
        engine
            .execute(
                &buyer(),
                Command::Advance {
                    session_id: session.to_string(),
                    state: to.into(),
                    exp_current_state: None,
                },
            )
            .unwrap();
    }
    engine
        .execute(
            &buyer(),
            Command::UpdateSession {
                session_id: session.to_string(),
                next_state: APPROVAL.into(),
                exp_current_state: Some(CREDIT_CHECK.into()),
            },
        )
        .unwrap();
    session
}

/// Runs the custom step's operation once and checks the system-failure path: session in
/// Error, operation Error, one SystemError output. Returns the operation's error.
#[track_caller]
fn system_failure(engine: &Engine) -> String {
    let (session, operation) = start_credit_check(engine);
    let report = engine.run_next_operation().unwrap().unwrap();
    assert!(report.applied);
    assert!(
        matches!(report.outcome, StepOutcome::SystemFailure(_)),
        "{report:?}"
    );
    let store = engine.store();
    let failed = store.session(&session).unwrap().unwrap();
    assert_eq!(failed.state, Some(SessionState::Error));
    assert!(failed.is_error && !failed.is_processing);
    let outputs = store.validation_outputs(&SampleCart::InStock.id()).unwrap();
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert_eq!(outputs[0].output_type, OutputType::SystemError);
    let op = store.operation(&operation).unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Error);
    op.error.unwrap_or_default()
}

#[test]
fn a_panicking_custom_provider_fails_its_step_with_a_system_error() {
    let (engine, _) = early_check(
        Arc::new(|_: &IntegrationRequest| -> Result<Verdict, ProviderError> {
            panic!("credit bureau bug")
        }),
        EngineConfig::default(),
    );
    let error = system_failure(&engine);
    assert!(error.contains("panicked: credit bureau bug"), "{error}");
}

#[test]
fn a_hanging_custom_provider_times_out_into_a_system_error() {
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
    let provider = Arc::new(move |_: &IntegrationRequest| {
        let _ = hold
            .lock()
            .unwrap()
            .recv_timeout(StdDuration::from_secs(60));
        Ok(Verdict::Passed)
    });
    let (engine, _) = early_check(provider, config);
    let error = system_failure(&engine);
    assert!(error.contains("did not answer within 50 ms"), "{error}");
    drop(release);
}

#[test]
fn a_custom_step_whose_provider_is_not_registered_fails_with_a_system_error() {
    let (engine, _) = early_check(
        Arc::new(|_: &IntegrationRequest| Ok(Verdict::Passed)),
        EngineConfig::default(),
    );
    // The same engine without the registration (the sample integrations register
    // `credit-limit`; the stock tables alone register nothing of the kind).
    let engine =
        engine.with_integrations(Integrations::with_stock_tables(&sample::dataset().stock));
    let error = system_failure(&engine);
    assert!(
        error.contains("registers no custom provider \"credit-limit\""),
        "{error}"
    );
}

#[test]
fn a_custom_operation_whose_worker_vanished_is_retried_and_the_stale_report_discarded() {
    // The first call hangs until released (a worker that stopped answering); later calls pass.
    let (release, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let provider = Arc::new(move |_: &IntegrationRequest| {
        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = gate.lock().unwrap().recv();
        }
        Ok(Verdict::Passed)
    });
    let config = EngineConfig {
        operations: OperationSettings {
            timeout_ms: 3_600_000,
            retry_limit: 2,
        },
        lease_ms: 30_000,
        // No heartbeat during the test: the first worker looks dead once its lease ends.
        heartbeat_ms: 3_600_000,
        ..EngineConfig::default()
    };
    let (engine, clock) = early_check(provider, config);
    let (session, operation) = start_credit_check(&engine);
    let store = engine.store().clone();
    let first = {
        let engine = engine.clone();
        thread::spawn(move || engine.run_next_operation())
    };
    // Wait until the first worker's provider call has begun (and so holds the claim): the
    // retry below must be the second call, whatever the scheduler does.
    while calls.load(Ordering::SeqCst) == 0 {
        thread::yield_now();
    }
    assert_eq!(
        store.operation(&operation).unwrap().unwrap().status,
        OperationStatus::Running
    );
    clock.advance(chrono::Duration::seconds(31));
    assert_eq!(engine.sweep_expired().unwrap(), 1);
    let requeued = store.operation(&operation).unwrap().unwrap();
    assert_eq!(
        (requeued.status, requeued.attempt),
        (OperationStatus::New, 1)
    );

    let second = engine.run_next_operation().unwrap().unwrap();
    assert_eq!((second.attempt, second.applied), (2, true));
    assert_eq!(
        store.session(&session).unwrap().unwrap().state,
        Some(state(APPROVAL))
    );
    release.send(()).unwrap();
    let stale = first.join().unwrap().unwrap().unwrap();
    assert_eq!((stale.attempt, stale.applied), (1, false));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let done = store.operation(&operation).unwrap().unwrap();
    assert_eq!((done.status, done.attempt), (OperationStatus::Complete, 2));
}

#[test]
fn a_custom_action_the_template_lacks_is_not_found_and_changes_nothing() {
    let (engine, _) = early_check(
        Arc::new(|_: &IntegrationRequest| Ok(Verdict::Passed)),
        EngineConfig::default(),
    );
    let session = lock_credit_check(&engine);
    let input = serde_json::json!({"cartId": SampleCart::InStock.id().to_string()});
    for name in ["NoSuchCheck", "priceCart", "not a name"] {
        let answer = engine.invoke_custom(name, &input, &buyer());
        assert_eq!(answer.http_status, 404, "{name}");
        assert_eq!(answer.errors.unwrap()[0].status_code, "NOT_FOUND");
    }
    let bad_input = serde_json::json!({"cartId": "x", "runAsync": false});
    let answer = engine.invoke_custom("CreditCheck", &bad_input, &buyer());
    assert_eq!(answer.http_status, 400);
    assert_eq!(answer.errors.unwrap()[0].status_code, "INVALID_INPUT");
    // The command itself, for an action the template lacks, is refused as input.
    let unknown = Command::RunCustom {
        action: CustomAction::new("NoSuchCheck").unwrap(),
        cart_id: SampleCart::InStock.id().to_string(),
    };
    let refused = engine.execute(&buyer(), unknown).unwrap_err();
    assert_eq!(
        (refused.code().as_str(), refused.http_status()),
        ("INVALID_INPUT", 400)
    );
    assert!(
        refused.to_string().contains("no custom action NoSuchCheck"),
        "{refused}"
    );
    let unchanged = engine.store().session(&session).unwrap().unwrap();
    assert!(unchanged.is_processing);
    assert_eq!(unchanged.background_operation_id, None);
}

// ---------------------------------------------------------------------------------------
// Over HTTP
// ---------------------------------------------------------------------------------------

#[cfg(feature = "http")]
mod over_http {
    use std::time::Instant;

    use cartflow::http::{REPLAYED_HEADER, Server, ServerConfig, Tokens};
    use cartflow::store::{Durability, SqliteStore};
    use serde_json::{Value, json};
    use tempfile::TempDir;

    use super::*;

    const V: &str = "v64.0";
    const BUYER: &str = "buyer-token";
    /// The longest a background step may take before a test gives up (a bound, not a measure).
    const STEP_BOUND: StdDuration = StdDuration::from_secs(60);

    struct Fixture {
        server: Option<Server>,
        base: String,
        agent: ureq::Agent,
        _dir: TempDir,
    }

    #[derive(Debug)]
    struct Reply {
        status: u16,
        replayed: bool,
        body: Value,
    }

    /// A server with two workers over a SQLite copy of the sample world, running `table`.
    fn start(table: TransitionTable, provider: Arc<dyn CustomProvider>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("cartflow.db"), Durability::Normal).unwrap();
        store.import(&sample::dataset()).unwrap();
        let engine = Engine::new(Arc::new(store))
            .with_table(table)
            .with_integrations(integrations_with(provider));
        let config = ServerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            workers: 2,
            ..ServerConfig::default()
        };
        let tokens = Tokens::new().with(BUYER, sample::buyer_id());
        let server = Server::start(engine, tokens, &config).unwrap();
        let base = format!("http://{}/services/data/{V}", server.local_addr());
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(StdDuration::from_secs(120)))
            .build()
            .new_agent();
        Fixture {
            server: Some(server),
            base,
            agent,
            _dir: dir,
        }
    }

    fn reply(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
        let response = response.expect("the server answers");
        let status = response.status().as_u16();
        let replayed = response
            .headers()
            .get(REPLAYED_HEADER)
            .is_some_and(|v| v == "true");
        let text = response.into_body().read_to_string().unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        Reply {
            status,
            replayed,
            body,
        }
    }

    impl Fixture {
        fn get(&self, token: Option<&str>, path: &str) -> Reply {
            let mut request = self.agent.get(format!("{}{path}", self.base));
            if let Some(token) = token {
                request = request.header("Authorization", format!("Bearer {token}"));
            }
            reply(request.call())
        }

        fn post(&self, path: &str, inputs: Value, key: Option<&str>) -> Reply {
            let mut request = self
                .agent
                .post(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {BUYER}"));
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key);
            }
            reply(request.send(json!({ "inputs": inputs }).to_string()))
        }

        fn action(&self, name: &str, input: Value) -> Reply {
            self.post(&format!("/actions/standard/{name}"), json!([input]), None)
        }

        fn custom(&self, name: &str, input: Value, key: Option<&str>) -> Reply {
            self.post(&format!("/actions/custom/apex/{name}"), json!([input]), key)
        }

        /// The only output value of a successful one-input call.
        fn output(reply: &Reply, name: &str) -> String {
            assert_eq!(reply.status, 200, "{name}: {:?}", reply.body);
            let element = &reply.body[0];
            assert_eq!(element["isSuccess"], true, "{name}: {element}");
            assert_eq!(element["actionName"], name);
            element["outputValues"]
                .as_object()
                .and_then(|values| values.values().next())
                .and_then(Value::as_str)
                .expect("an output value")
                .to_owned()
        }

        fn succeed(&self, name: &str, input: Value) -> String {
            Fixture::output(&self.action(name, input), name)
        }

        fn record(&self, object: &str, id: &str) -> Value {
            let reply = self.get(Some(BUYER), &format!("/sobjects/{object}/{id}"));
            assert_eq!(reply.status, 200, "{object} {id}: {:?}", reply.body);
            reply.body
        }

        fn patch(&self, path: &str, body: Value) {
            let reply = reply(
                self.agent
                    .patch(format!("{}{path}", self.base))
                    .header("Authorization", format!("Bearer {BUYER}"))
                    .send(body.to_string()),
            );
            assert_eq!((reply.status, &reply.body), (204, &Value::Null), "{body}");
        }

        fn advance(&self, session: &str, to: &str) {
            self.patch(
                &format!("/sobjects/CartCheckoutSession/{session}"),
                json!({ "State": to }),
            );
        }

        fn set_on_cart(&self, cart: &str, fields: Value) {
            self.patch(&format!("/sobjects/WebCart/{cart}"), fields);
        }

        fn lock(&self, session: &str, from: &str, to: &str) {
            let locked = self.succeed(
                "updateCheckoutSessionStateAction",
                json!({"checkoutSessionId": session, "expCurrentState": from, "nextState": to}),
            );
            assert_eq!(locked, session);
        }

        /// Polls the session until it is no longer processing, as the template's hub does.
        fn settled(&self, session: &str) -> Value {
            let started = Instant::now();
            loop {
                let record = self.record("CartCheckoutSession", session);
                if record["IsProcessing"] == false {
                    return record;
                }
                assert!(started.elapsed() < STEP_BOUND, "still processing: {record}");
                thread::sleep(StdDuration::from_millis(10));
            }
        }

        /// Locks the step at `from`, invokes `action` and waits: the session must reach `to`.
        fn async_step(&self, session: &str, cart: &str, from: &str, to: &str, action: &str) {
            self.lock(session, from, to);
            let mut input = json!({ "cartId": cart });
            if action == "activateOrderAction" {
                input["orderStatus"] = json!("Activated");
            }
            self.succeed(action, input);
            assert_eq!(self.settled(session)["State"], to, "{action}");
        }

        fn outputs(&self, cart: &str) -> Vec<Value> {
            let reply = self.get(
                Some(BUYER),
                &format!("/sobjects/WebCart/{cart}/CartValidationOutputs"),
            );
            assert_eq!(reply.status, 200, "{:?}", reply.body);
            reply.body["records"].as_array().unwrap().clone()
        }

        fn stop(&mut self) {
            if let Some(server) = self.server.take() {
                server.shutdown();
            }
        }
    }

    /// Starts (or restarts) checkout on the in-stock cart and walks it through the standard
    /// steps to Credit Check; returns the session.
    fn walk_to_credit_check(f: &Fixture, cart: &str) -> String {
        let session = f.succeed("checkoutSessionAction", json!({ "cartId": cart }));
        f.advance(&session, "Shipping Address");
        f.set_on_cart(cart, json!({ "DeliverTo": sample::denver() }));
        f.advance(&session, "Inventory");
        for (from, to, action) in [
            ("Inventory", "Confirm Price", "checkCartInventoryAction"),
            ("Confirm Price", "Calculate Promotions", "priceCart"),
            (
                "Calculate Promotions",
                "Shipping Cost",
                "calcCartPromotionsAction",
            ),
            ("Shipping Cost", "Delivery Method", "calcCartShipmentAction"),
        ] {
            f.async_step(&session, cart, from, to, action);
        }
        let offered = f.record("WebCart", cart)["DeliveryOptions"][0]["DeliveryMethodId"].clone();
        f.set_on_cart(cart, json!({ "DeliveryMethodId": offered }));
        f.advance(&session, "Taxes");
        f.async_step(&session, cart, "Taxes", CREDIT_CHECK, "calcCartTaxesAction");
        session
    }

    /// Locks Credit Check and invokes its custom action (with `key` as Idempotency-Key);
    /// returns the operation and the settled session.
    fn run_credit_check(
        f: &Fixture,
        session: &str,
        cart: &str,
        key: Option<&str>,
    ) -> (String, Value) {
        f.lock(session, CREDIT_CHECK, APPROVAL);
        let answer = f.custom("CreditCheck", json!({ "cartId": cart }), key);
        let operation = Fixture::output(&answer, "CreditCheck");
        if let Some(key) = key {
            // The same call again is the kept answer, and runs nothing.
            let again = f.custom("CreditCheck", json!({ "cartId": cart }), Some(key));
            assert!(again.replayed, "{again:?}");
            assert_eq!((again.status, &again.body), (answer.status, &answer.body));
        }
        (operation, f.settled(session))
    }

    #[test]
    fn a_whole_checkout_through_a_credit_check_is_refused_once_then_passes_to_an_activated_order() {
        let desk = Arc::new(CreditDesk(Mutex::new(CreditLimit::new(Decimal::ONE))));
        let mut f = start(credit_check(), desk.clone());
        let cart = SampleCart::InStock.id().to_string();

        // The first time, the cart is above the account's credit limit of 1.00.
        let first = walk_to_credit_check(&f, &cart);
        let (operation, failed) = run_credit_check(&f, &first, &cart, None);
        assert_eq!(failed["State"], "Error", "{failed}");
        assert_eq!(failed["IsError"], true);
        let op = f.record("BackgroundOperation", &operation);
        assert_eq!(
            (&op["Name"], &op["Status"]),
            (&json!("CreditCheck"), &json!("Error"))
        );
        assert_eq!(op["ProviderKind"], "Custom");
        let outputs = f.outputs(&cart);
        assert_eq!(outputs.len(), 1, "{outputs:?}");
        assert_eq!(outputs[0]["Type"], "Other");
        assert_eq!(outputs[0]["Level"], "Error");
        assert_eq!(outputs[0]["BackgroundOperationId"], operation.as_str());
        let message = outputs[0]["Message"].as_str().unwrap();
        assert!(message.contains("credit limit of 1"), "{message}");

        // The credit department raises the limit; the buyer starts again, as the template
        // does from Error: the failed session is archived and a new one walks the steps.
        desk.raise(Decimal::from(1_000_000));
        let second = walk_to_credit_check(&f, &cart);
        assert_ne!(second, first);
        assert_eq!(f.record("CartCheckoutSession", &first)["IsArchived"], true);
        let (operation, passed) = run_credit_check(&f, &second, &cart, Some("credit-check-2"));
        assert_eq!(passed["State"], APPROVAL, "{passed}");
        assert_eq!(
            f.record("BackgroundOperation", &operation)["Status"],
            "Complete"
        );
        assert!(f.outputs(&cart).is_empty());

        // Approval is a screen; then the rest of the standard checkout.
        f.advance(&second, "Payment And Billing Address");
        f.set_on_cart(&cart, json!({ "PaymentToken": sample::GOOD_TOKEN }));
        f.advance(&second, "Checkout Summary");
        f.advance(&second, "Cart To Order");
        f.async_step(
            &second,
            &cart,
            "Cart To Order",
            "Authorize Payment",
            "cartToOrderAction",
        );
        f.async_step(
            &second,
            &cart,
            "Authorize Payment",
            "Activate Order",
            "authorizePayment",
        );
        f.async_step(
            &second,
            &cart,
            "Activate Order",
            "Order Confirmation",
            "activateOrderAction",
        );
        f.advance(&second, "Complete");
        let done = f.record("CartCheckoutSession", &second);
        assert_eq!(
            (&done["State"], &done["IsArchived"]),
            (&json!("Complete"), &json!(true))
        );
        let order = f.record("Order", done["OrderId"].as_str().unwrap());
        assert_eq!(order["Status"], "Activated");
        assert_eq!(f.record("WebCart", &cart)["Status"], "Closed");
        f.stop();
    }

    #[test]
    fn a_custom_action_at_the_wrong_step_gets_the_async_actions_code_and_changes_nothing() {
        let mut f = start(
            credit_check(),
            Arc::new(|_: &IntegrationRequest| Ok(Verdict::Passed)),
        );
        let cart = SampleCart::InStock.id().to_string();
        let session = f.succeed("checkoutSessionAction", json!({ "cartId": cart }));
        f.advance(&session, "Shipping Address");
        f.advance(&session, "Inventory");
        // Unlocked: the async actions' SessionIsProcessing row, for the core and custom alike.
        let core = f.action("priceCart", json!({ "cartId": cart }));
        let custom = f.custom("CreditCheck", json!({ "cartId": cart }), None);
        assert_eq!(
            (custom.status, &custom.body[0]["errors"][0]["statusCode"]),
            (core.status, &core.body[0]["errors"][0]["statusCode"])
        );
        assert_eq!(custom.status, 403);
        // Locked at Inventory: the wrong step, INVALID_OPERATION 403 naming the step.
        f.lock(&session, "Inventory", "Confirm Price");
        let custom = f.custom("CreditCheck", json!({ "cartId": cart }), Some("wrong-step"));
        assert_eq!(custom.status, 403, "{:?}", custom.body);
        let error = &custom.body[0]["errors"][0];
        assert_eq!(error["statusCode"], "INVALID_OPERATION");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("runs in the Credit Check step"),
            "{error}"
        );
        assert_eq!(custom.body[0]["actionName"], "CreditCheck");
        // A refusal is kept under its Idempotency-Key like any answer below 500.
        let again = f.custom("CreditCheck", json!({ "cartId": cart }), Some("wrong-step"));
        assert!(again.replayed);
        assert_eq!(again.body, custom.body);
        let unchanged = f.record("CartCheckoutSession", &session);
        assert_eq!(unchanged["State"], "Inventory");
        assert_eq!(unchanged["IsProcessing"], true);
        assert_eq!(unchanged["BackgroundOperationId"], Value::Null);
        f.stop();
    }

    #[test]
    fn the_apex_routes_list_and_describe_the_templates_custom_actions() {
        let mut f = start(
            credit_check(),
            Arc::new(|_: &IntegrationRequest| Ok(Verdict::Passed)),
        );
        let listed = f.get(Some(BUYER), "/actions/custom/apex");
        assert_eq!(listed.status, 200);
        assert_eq!(
            listed.body,
            json!({"actions": [{
                "label": "Credit Check",
                "name": "CreditCheck",
                "type": "APEX",
                "url": format!("/services/data/{V}/actions/custom/apex/CreditCheck"),
            }]})
        );
        let described = f.get(Some(BUYER), "/actions/custom/apex/CreditCheck");
        assert_eq!(described.status, 200);
        assert_eq!(described.body["name"], "CreditCheck");
        assert_eq!(described.body["label"], "Credit Check");
        assert_eq!(described.body["standard"], false);
        assert_eq!(described.body["inputs"][0]["name"], "cartId");
        assert_eq!(described.body["inputs"][0]["required"], true);
        assert_eq!(described.body["inputs"].as_array().unwrap().len(), 1);
        assert_eq!(
            described.body["outputs"][0]["name"],
            "backgroundOperationId"
        );
        // An unknown name, or a standard action's, is no Apex action: 404, nothing runs.
        for name in ["NoSuchCheck", "priceCart"] {
            let missing = f.get(Some(BUYER), &format!("/actions/custom/apex/{name}"));
            assert_eq!(
                (missing.status, &missing.body[0]["errorCode"]),
                (404, &json!("NOT_FOUND"))
            );
            let invoked = f.custom(
                name,
                json!({"cartId": SampleCart::InStock.id().to_string()}),
                None,
            );
            assert_eq!(
                (invoked.status, &invoked.body[0]["errorCode"]),
                (404, &json!("NOT_FOUND"))
            );
        }
        assert_eq!(f.get(None, "/actions/custom/apex").status, 401);
        // The standard template has no custom action: the list is empty.
        let mut standard = start(
            TransitionTable::standard(),
            Arc::new(|_: &IntegrationRequest| Ok(Verdict::Passed)),
        );
        let listed = standard.get(Some(BUYER), "/actions/custom/apex");
        assert_eq!(listed.body, json!({"actions": []}));
        standard.stop();
        f.stop();
    }
}

// ---------------------------------------------------------------------------------------
// The command line: the Custom map of integrations.json
// ---------------------------------------------------------------------------------------

/// `cartflow invoke checkoutSessionAction` on a copy of the example data whose
/// integrations.json is the example's plus `custom` as the sample store's Custom map.
fn invoke_with_custom(custom: serde_json::Value) -> std::process::Output {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root.join("cartflow.json"), dir.path().join("cartflow.json")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("integrations.json")).unwrap()).unwrap();
    config[sample::store_id().to_string()]["Custom"] = custom;
    std::fs::write(dir.path().join("integrations.json"), config.to_string()).unwrap();
    let input = serde_json::json!({"cartId": SampleCart::InStock.id().to_string()});
    std::process::Command::new(env!("CARGO_BIN_EXE_cartflow"))
        .args(["invoke", "checkoutSessionAction", "--input"])
        .arg(input.to_string())
        .args(["--as", &buyer(), "--data"])
        .arg(dir.path())
        .output()
        .unwrap()
}

#[test]
fn the_cli_reads_a_credit_limit_from_integrations_json_and_refuses_one_that_cannot_work() {
    let good = invoke_with_custom(serde_json::json!({
        PROVIDER: {"CreditLimit": {"DefaultLimit": "5000.00"}}
    }));
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let bad = invoke_with_custom(serde_json::json!({
        PROVIDER: {"CreditLimit": {"DefaultLimit": "-1"}}
    }));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("credit-limit"), "{stderr}");
    assert!(stderr.contains("negative"), "{stderr}");
}
