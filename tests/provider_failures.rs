//! A provider that fails by an error, a panic or a timeout leaves none of its writes behind.
//! For each provider kind that writes amounts (Price, Promotions, Shipment, Tax), the sample
//! store's own provider of that kind computes its answer and then fails: after the worker
//! ran, the cart and its lines are byte for byte what they were before the step, the
//! operation is Error, the session is at Error, and the cart holds exactly one
//! CartValidationOutput, of Type SystemError. Every case runs on every store.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use cartflow::engine::EngineConfig;
use cartflow::integrations::{
    CartPatch, IntegrationRequest, Provider, ProviderError, Verdict, apply_patch,
};
use cartflow::machine::{Action, CheckoutDetails, Command, OperationSettings, Output};
use cartflow::model::{
    CartItem, Level, OperationStatus, OutputType, ProviderKind, SessionState, SfId, WebCart,
};
use cartflow::sample::{self, SampleCart};
use cartflow::{Engine, Store};
use serde_json::json;

#[path = "support/mod.rs"]
mod support;

/// The provider steps whose provider writes amounts, in the order the template runs them,
/// each with its State and the State after it.
const STEPS: [(Action, &str, &str); 4] = [
    (Action::PriceCart, "Confirm Price", "Calculate Promotions"),
    (
        Action::CalcCartPromotions,
        "Calculate Promotions",
        "Shipping Cost",
    ),
    (Action::CalcCartShipment, "Shipping Cost", "Delivery Method"),
    (
        Action::CalcCartTaxes,
        "Taxes",
        "Payment And Billing Address",
    ),
];

/// How the provider fails once it has computed its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// It returns an error.
    Error,
    /// It panics.
    Panic,
    /// It answers only after the operation's timeout, when the test lets it.
    Timeout,
}

/// The timeout of the operations a timing-out provider runs under: the provider waits for
/// the test, never for the clock, so the value only bounds how long the worker waits.
const SHORT_TIMEOUT_MS: u64 = 200;

/// What the failing provider shares with the test: the patch it computed before failing,
/// the gate a timing-out provider waits at, and its signal that it has answered.
struct Witness {
    computed: Mutex<Option<CartPatch>>,
    gate: Mutex<Receiver<()>>,
    answered: Mutex<Sender<()>>,
}

/// The sample store's provider of `kind`, made to compute its answer and then fail.
fn failing(
    kind: ProviderKind,
    inner: Provider,
    failure: Failure,
    witness: Arc<Witness>,
) -> Provider {
    let run = move |request: &IntegrationRequest| -> Result<Verdict, ProviderError> {
        let verdict = inner.run(request)?;
        if let Verdict::Updated(patch) = &verdict {
            *witness.computed.lock().unwrap() = Some(patch.clone());
        }
        match failure {
            Failure::Error => Err(ProviderError("the service is unreachable".into())),
            Failure::Panic => panic!("the provider crashed after computing its answer"),
            Failure::Timeout => {
                // Held until the test releases it, well after the worker gave up.
                let _ = witness.gate.lock().unwrap().recv();
                let _ = witness.answered.lock().unwrap().send(());
                Ok(verdict)
            }
        }
    };
    match kind {
        ProviderKind::Price => Provider::Price(Arc::new(run)),
        ProviderKind::Promotions => Provider::Promotions(Arc::new(run)),
        ProviderKind::Shipment => Provider::Shipment(Arc::new(run)),
        ProviderKind::Tax => Provider::Tax(Arc::new(run)),
        other => panic!("{other:?} is not a kind that writes amounts"),
    }
}

/// One case: the sample world on a store, its providers, the failing one among them.
struct Case {
    engine: Engine,
    buyer: String,
    cart: SfId,
    session: String,
    witness: Arc<Witness>,
    release: Sender<()>,
    answered: Receiver<()>,
    _guard: Option<support::stores::Guard>,
}

impl Case {
    fn new(open: support::stores::Open, kind: ProviderKind, failure: Failure) -> Case {
        let data = sample::dataset();
        let mut integrations = sample::integrations(&data);
        let (release, gate) = mpsc::channel();
        let (signal, answered) = mpsc::channel();
        let witness = Arc::new(Witness {
            computed: Mutex::new(None),
            gate: Mutex::new(gate),
            answered: Mutex::new(signal),
        });
        let store = sample::store_id();
        let inner = integrations.provider(store, kind);
        assert!(
            !matches!(inner, Provider::Internal),
            "the sample maps {kind:?}"
        );
        integrations.set(store, failing(kind, inner, failure, Arc::clone(&witness)));
        let (store, guard) = open(data);
        let engine = Engine::new(store).with_integrations(integrations);
        let buyer = sample::buyer_id().to_string();
        let cart = SampleCart::InStock.id();
        let started = engine
            .execute(
                &buyer,
                Command::StartSession {
                    cart_id: cart.to_string(),
                    initial_state: None,
                },
            )
            .unwrap();
        let Output::RequestId(session) = started else {
            panic!("checkoutSessionAction answered {started:?}");
        };
        Case {
            engine,
            buyer,
            cart,
            session: session.to_string(),
            witness,
            release,
            answered,
            _guard: guard,
        }
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.engine.store()
    }

    fn execute(&self, command: Command) {
        self.engine.execute(&self.buyer, command).unwrap();
    }

    fn advance(&self, from: &str, to: &str) {
        self.execute(Command::Advance {
            session_id: self.session.clone(),
            state: to.into(),
            exp_current_state: Some(from.into()),
        });
    }

    fn details(&self, details: CheckoutDetails) {
        self.execute(Command::SetDetails {
            cart_id: self.cart.to_string(),
            details,
        });
    }

    fn lock(&self, from: &str, to: &str) {
        let locked = self.engine.invoke(
            "updateCheckoutSessionStateAction",
            &json!({"checkoutSessionId": self.session, "expCurrentState": from, "nextState": to}),
            &self.buyer,
        );
        assert!(locked.is_success, "{locked:?}");
    }

    /// Invokes `action` through `engine` and lets one worker of it run the operation.
    fn run(&self, engine: &Engine, action: Action) -> SfId {
        let output = engine
            .execute(
                &self.buyer,
                Command::RunStep {
                    action: cartflow::machine::ProviderAction::of(action).unwrap(),
                    cart_id: self.cart.to_string(),
                },
            )
            .unwrap();
        let Output::BackgroundOperationId(operation) = output else {
            panic!("{action} answered {output:?}");
        };
        assert_eq!(engine.run_until_idle().unwrap(), 1);
        operation
    }

    fn state(&self) -> SessionState {
        let session = self.session.parse().unwrap();
        let session = self.store().session(&session).unwrap().unwrap();
        session.state.unwrap()
    }

    /// Walks the checkout to the step of `failing_action`, every step before it passing
    /// (the buyer ships to Denver and takes the first method offered), and locks that step.
    fn walk_to(&self, failing_action: Action) {
        self.advance("Start", "Shipping Address");
        self.details(CheckoutDetails {
            deliver_to: Some(sample::denver()),
            ..CheckoutDetails::default()
        });
        self.advance("Shipping Address", "Inventory");
        let route = [(Action::CheckCartInventory, "Inventory", "Confirm Price")]
            .into_iter()
            .chain(STEPS);
        for (action, from, to) in route {
            if from == "Taxes" {
                let offered = self.cart().delivery_options;
                let method = offered.first().expect("the shipment step offered a method");
                self.details(CheckoutDetails {
                    delivery_method_id: Some(method.delivery_method_id.clone()),
                    ..CheckoutDetails::default()
                });
                self.advance("Delivery Method", "Taxes");
            }
            self.lock(from, to);
            if action == failing_action {
                return;
            }
            self.run(&self.engine, action);
            assert_eq!(self.state().as_str(), to, "{action} passes on the way");
        }
        panic!("{failing_action} is no step of the walk");
    }

    fn cart(&self) -> WebCart {
        self.store().cart(&self.cart).unwrap().unwrap()
    }

    fn items(&self) -> Vec<CartItem> {
        self.store().cart_items(&self.cart).unwrap()
    }

    /// The cart and its lines, serialized: what a failed step must leave byte for byte.
    fn written(&self) -> (Vec<u8>, Vec<u8>) {
        (
            serde_json::to_vec(&self.cart()).unwrap(),
            serde_json::to_vec(&self.items()).unwrap(),
        )
    }
}

/// Whether applying `patch` would have changed the cart or a line.
fn would_change(cart: &WebCart, items: &[CartItem], patch: &CartPatch) -> bool {
    let mint = |kind| SfId::from_number(kind, 9_999);
    let context = cartflow::integrations::PatchContext {
        kind: None,
        now: chrono::DateTime::UNIX_EPOCH,
        new_id: &mint,
    };
    let update = apply_patch(cart, items, patch, &context).unwrap();
    let totals = [
        (update.total_product_amount, cart.total_product_amount),
        (update.total_adjustment_amount, cart.total_adjustment_amount),
        (update.total_charge_amount, cart.total_charge_amount),
        (update.total_tax_amount, cart.total_tax_amount),
        (update.grand_total_amount, cart.grand_total_amount),
    ];
    update.items.iter().any(|line| !items.contains(line))
        || totals.iter().any(|(new, old)| new != old)
        || update
            .delivery_options
            .is_some_and(|offered| offered != cart.delivery_options)
}

/// Runs the step of `action` with its provider failing by `failure` on every store, and
/// checks what the failure left.
fn fails_without_writes(failure: Failure) {
    for (store_name, open) in support::stores::all() {
        for (action, ..) in STEPS {
            let kind = action.provider_kind().unwrap();
            let context = format!("{store_name}, {action}, {failure:?}");
            let case = Case::new(open, kind, failure);
            case.walk_to(action);
            let (cart_before, items_before) = (case.cart(), case.items());
            let written_before = case.written();

            let engine = match failure {
                Failure::Timeout => case.engine.clone().with_config(EngineConfig {
                    operations: OperationSettings {
                        timeout_ms: SHORT_TIMEOUT_MS,
                        ..OperationSettings::default()
                    },
                    ..EngineConfig::default()
                }),
                Failure::Error | Failure::Panic => case.engine.clone(),
            };
            let operation = case.run(&engine, action);

            // The provider had an answer that would have changed the cart.
            let computed = case.witness.computed.lock().unwrap().clone();
            let patch = computed.unwrap_or_else(|| panic!("{context}: nothing computed"));
            assert!(
                would_change(&cart_before, &items_before, &patch),
                "{context}: the provider's answer changes nothing, so the case proves nothing"
            );
            assert_left_nothing(&case, operation, &written_before, &context);
            if failure == Failure::Timeout {
                // The late answer arrives after the failure was written: it is dropped too.
                case.release.send(()).unwrap();
                case.answered.recv().unwrap();
                assert_left_nothing(&case, operation, &written_before, &context);
            }
        }
    }
}

/// The step failed and wrote only its failure: the operation and the session are at Error,
/// one SystemError output, and the cart and its lines are as `written_before`.
fn assert_left_nothing(
    case: &Case,
    operation: SfId,
    written_before: &(Vec<u8>, Vec<u8>),
    context: &str,
) {
    let op = case.store().operation(&operation).unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Error, "{context}");
    let session = case.session.parse().unwrap();
    let session = case.store().session(&session).unwrap().unwrap();
    assert_eq!(session.state, Some(SessionState::Error), "{context}");
    assert!(session.is_error && !session.is_processing, "{context}");
    let outputs = case.store().validation_outputs(&case.cart).unwrap();
    assert_eq!(outputs.len(), 1, "{context}: {outputs:?}");
    assert_eq!(outputs[0].output_type, OutputType::SystemError, "{context}");
    assert_eq!(outputs[0].level, Level::Error, "{context}");
    assert_eq!(
        outputs[0].background_operation_id,
        Some(operation),
        "{context}"
    );
    let written = case.written();
    assert!(
        written.0 == written_before.0,
        "{context}: the cart changed\nbefore {}\nafter  {}",
        String::from_utf8_lossy(&written_before.0),
        String::from_utf8_lossy(&written.0)
    );
    assert!(
        written.1 == written_before.1,
        "{context}: the lines changed\nbefore {}\nafter  {}",
        String::from_utf8_lossy(&written_before.1),
        String::from_utf8_lossy(&written.1)
    );
}

#[test]
fn a_provider_that_errors_after_computing_its_answer_leaves_only_a_system_error() {
    fails_without_writes(Failure::Error);
}

#[test]
fn a_provider_that_panics_after_computing_its_answer_leaves_only_a_system_error() {
    fails_without_writes(Failure::Panic);
}

#[test]
fn a_provider_that_answers_after_its_timeout_leaves_only_a_system_error() {
    fails_without_writes(Failure::Timeout);
}
