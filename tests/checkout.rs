//! Whole checkouts with the flow driver: Start to Complete with an activated order, the
//! failure paths, and a checkout one engine stops that another continues.

use std::sync::Arc;

use cartflow::flow::{BuyerInput, Drive, Waiting, drive};
use cartflow::ids::SequentialIds;
use cartflow::machine::{Action, Command, Event, ProviderAction, Requirement, StepKind};
use cartflow::model::{CartStatus, OrderStatus, OutputType, SessionState, SfId};
use cartflow::sample::{self, SampleCart};
use cartflow::{Engine, MemoryStore, Store};
use serde_json::json;

fn engine_over(store: Arc<MemoryStore>, first_id: u64) -> Engine {
    let data = sample::dataset();
    Engine::new(store)
        .with_ids(Arc::new(SequentialIds::starting_at(first_id)))
        .with_integrations(sample::integrations(&data))
}

fn store() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::from_dataset(sample::dataset()).unwrap())
}

fn full_input() -> BuyerInput {
    BuyerInput {
        deliver_to: Some(sample::denver()),
        delivery_method_id: None,
        payment_token: Some(sample::GOOD_TOKEN.into()),
        place_order: true,
    }
}

fn buyer() -> String {
    sample::buyer_id().to_string()
}

#[test]
fn a_checkout_runs_from_start_to_an_activated_order_and_a_closed_cart() {
    let store = store();
    let engine = engine_over(store.clone(), 1);
    let cart = SampleCart::InStock.id();
    let outcome = drive(&engine, &buyer(), &cart, &full_input(), Waiting::RunInline).unwrap();
    let Drive::Complete {
        session_id,
        order_id,
    } = outcome
    else {
        panic!("not complete: {outcome:?}");
    };
    let order = store.order(&order_id).unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Activated);
    assert!(order.order_summary_id.is_some());
    assert!(order.payment_authorization_id.is_some());
    let cart_after = store.cart(&cart).unwrap().unwrap();
    assert_eq!(cart_after.status, CartStatus::Closed);
    // The order carries what the buyer saw: lines and the grand total.
    assert_eq!(order.grand_total_amount, cart_after.grand_total_amount);
    assert_eq!(order.items.len(), store.cart_items(&cart).unwrap().len());
    let session = store.session(&session_id).unwrap().unwrap();
    assert_eq!(session.state, Some(SessionState::Complete));
    assert!(session.is_archived);
    // Every step of the template was passed through, in order.
    let reached: Vec<String> = store
        .history(&cart)
        .unwrap()
        .into_iter()
        .filter(|h| h.record == session_id)
        .map(|h| h.to)
        .collect();
    for state in SessionState::STANDARD
        .iter()
        .filter(|s| **s != SessionState::Error)
    {
        assert!(
            reached.iter().any(|to| to == state.as_str()),
            "{state} not reached: {reached:?}"
        );
    }
    // Driving a complete checkout again is a no-op answer.
    let again = drive(&engine, &buyer(), &cart, &full_input(), Waiting::RunInline).unwrap();
    assert!(matches!(again, Drive::Complete { .. }));
}

#[test]
fn a_checkout_stopped_anywhere_is_continued_by_another_engine() {
    let store = store();
    let cart = SampleCart::InStock.id();
    // The first engine runs until the buyer must choose a payment method.
    let first = engine_over(store.clone(), 1);
    let partial = BuyerInput {
        payment_token: None,
        ..full_input()
    };
    let stopped = drive(&first, &buyer(), &cart, &partial, Waiting::RunInline).unwrap();
    assert!(
        matches!(
            stopped,
            Drive::NeedsInput {
                state: SessionState::PaymentAndBillingAddress,
                ..
            }
        ),
        "{stopped:?}"
    );
    drop(first);
    // A second engine (another process, in effect) picks it up from the store alone.
    let second = engine_over(store.clone(), 1_000_000);
    let done = drive(&second, &buyer(), &cart, &full_input(), Waiting::RunInline).unwrap();
    assert!(matches!(done, Drive::Complete { .. }), "{done:?}");
}

#[test]
fn a_declined_payment_ends_in_error_without_an_activated_order() {
    let store = store();
    let engine = engine_over(store.clone(), 1);
    let cart = SampleCart::InStock.id();
    let input = BuyerInput {
        payment_token: Some(sample::DECLINED_TOKEN.into()),
        ..full_input()
    };
    let outcome = drive(&engine, &buyer(), &cart, &input, Waiting::RunInline).unwrap();
    let Drive::Failed {
        session_id,
        outputs,
    } = outcome
    else {
        panic!("not failed: {outcome:?}");
    };
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].output_type, OutputType::Other);
    let session = store.session(&session_id).unwrap().unwrap();
    // The Draft order exists but was never activated, and the cart stays in checkout.
    let order = store.order(&session.order_id.unwrap()).unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Draft);
    assert_eq!(
        store.cart(&cart).unwrap().unwrap().status,
        CartStatus::Checkout
    );
}

#[test]
fn short_stock_fails_before_any_order_is_made() {
    let store = store();
    let engine = engine_over(store.clone(), 1);
    let cart = SampleCart::ShortStock.id();
    let outcome = drive(&engine, &buyer(), &cart, &full_input(), Waiting::RunInline).unwrap();
    let Drive::Failed {
        outputs,
        session_id,
    } = outcome
    else {
        panic!("not failed: {outcome:?}");
    };
    assert_eq!(outputs.len(), 2);
    assert!(
        outputs
            .iter()
            .all(|o| o.output_type == OutputType::Inventory)
    );
    assert!(
        store
            .session(&session_id)
            .unwrap()
            .unwrap()
            .order_id
            .is_none()
    );
}

#[test]
fn workers_and_the_driver_share_the_work() {
    let store = store();
    let engine = engine_over(store.clone(), 1);
    let workers = engine.start_workers(2);
    let cart = SampleCart::InStock.id();
    let outcome = drive(
        &engine,
        &buyer(),
        &cart,
        &full_input(),
        Waiting::Poll(std::time::Duration::from_secs(30)),
    )
    .unwrap();
    workers.stop();
    assert!(matches!(outcome, Drive::Complete { .. }), "{outcome:?}");
}

mod edits {
    use super::*;
    use cartflow::machine::{CartEdit, Command, Requirement};
    use cartflow::model::OperationStatus;
    use rust_decimal::Decimal;
    use serde_json::json;

    fn edit(
        engine: &Engine,
        cart: SampleCart,
        edit: CartEdit,
    ) -> Result<(), cartflow::CheckoutError> {
        engine
            .execute(
                &buyer(),
                Command::EditCart {
                    cart_id: cart.id().to_string(),
                    edit,
                },
            )
            .map(|_| ())
    }

    #[test]
    fn editing_a_cart_in_checkout_cancels_its_operation_and_returns_it_to_active() {
        let store = store();
        let engine = engine_over(store.clone(), 1);
        let cart = SampleCart::InStock;
        // Walk to a running inventory check (started, not yet run).
        let input = BuyerInput::default();
        let stopped = drive(&engine, &buyer(), &cart.id(), &input, Waiting::RunInline).unwrap();
        assert!(matches!(
            stopped,
            Drive::NeedsInput {
                state: SessionState::ShippingAddress,
                ..
            }
        ));
        engine
            .execute(
                &buyer(),
                Command::SetDetails {
                    cart_id: cart.id().to_string(),
                    details: cartflow::machine::CheckoutDetails {
                        deliver_to: Some(sample::denver()),
                        ..Default::default()
                    },
                },
            )
            .unwrap();
        let session = store.sessions_of(&cart.id()).unwrap().pop().unwrap();
        engine
            .execute(
                &buyer(),
                Command::Advance {
                    session_id: session.id.to_string(),
                    state: "Inventory".into(),
                    exp_current_state: Some("Shipping Address".into()),
                },
            )
            .unwrap();
        let lock = json!({"checkoutSessionId": session.id.to_string(), "expCurrentState": "Inventory", "nextState": "Confirm Price"});
        assert!(
            engine
                .invoke("updateCheckoutSessionStateAction", &lock, &buyer())
                .is_success
        );
        let op = engine.invoke(
            "checkCartInventoryAction",
            &json!({"cartId": cart.id().to_string()}),
            &buyer(),
        );
        let op = op.output_values.unwrap()["backgroundOperationId"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();

        let lines_before = store.cart_items(&cart.id()).unwrap().len();
        edit(
            &engine,
            cart,
            CartEdit::AddItem {
                sku: "STOVE-X".into(),
                quantity: Decimal::ONE,
            },
        )
        .unwrap();

        assert_eq!(
            store.operation(&op).unwrap().unwrap().status,
            OperationStatus::Canceled
        );
        assert!(store.session(&session.id).unwrap().unwrap().is_archived);
        let after = store.cart(&cart.id()).unwrap().unwrap();
        assert_eq!(after.status, CartStatus::Active);
        assert_eq!(
            store.cart_items(&cart.id()).unwrap().len(),
            lines_before + 1
        );
        // Nothing is left for a worker, and a new checkout starts from the edited cart.
        assert_eq!(engine.run_next_operation().unwrap(), None);
        let done = drive(
            &engine,
            &buyer(),
            &cart.id(),
            &full_input(),
            Waiting::RunInline,
        )
        .unwrap();
        assert!(matches!(done, Drive::Complete { .. }), "{done:?}");
    }

    #[test]
    fn quantities_change_and_lines_go_and_prices_are_dropped() {
        let store = store();
        let engine = engine_over(store.clone(), 1);
        let cart = SampleCart::InStock;
        let lines = store.cart_items(&cart.id()).unwrap();
        edit(
            &engine,
            cart,
            CartEdit::SetQuantity {
                item_id: lines[0].id.to_string(),
                quantity: Decimal::from(7),
            },
        )
        .unwrap();
        edit(
            &engine,
            cart,
            CartEdit::RemoveItem {
                item_id: lines[1].id.to_string(),
            },
        )
        .unwrap();
        let now = store.cart_items(&cart.id()).unwrap();
        assert_eq!(now.len(), lines.len() - 1);
        assert_eq!(
            now.iter().find(|l| l.id == lines[0].id).unwrap().quantity,
            Decimal::from(7)
        );
        assert!(now.iter().all(|l| l.id != lines[1].id));
        assert!(
            store
                .cart(&cart.id())
                .unwrap()
                .unwrap()
                .grand_total_amount
                .is_none()
        );
    }

    #[test]
    fn bad_edits_are_refused_and_change_nothing() {
        let store = store();
        let engine = engine_over(store.clone(), 1);
        let before = store.to_dataset();
        let foreign_line = store.cart_items(&SampleCart::ShortStock.id()).unwrap()[0]
            .id
            .to_string();
        let cases = [
            (
                SampleCart::InStock,
                CartEdit::AddItem {
                    sku: " ".into(),
                    quantity: Decimal::ONE,
                },
                Requirement::EditValid,
                400,
            ),
            (
                SampleCart::InStock,
                CartEdit::AddItem {
                    sku: "A".into(),
                    quantity: Decimal::ZERO,
                },
                Requirement::EditValid,
                400,
            ),
            (
                SampleCart::InStock,
                CartEdit::RemoveItem {
                    item_id: foreign_line.clone(),
                },
                Requirement::EditValid,
                400,
            ),
            (
                SampleCart::InStock,
                CartEdit::SetQuantity {
                    item_id: "nonsense".into(),
                    quantity: Decimal::ONE,
                },
                Requirement::EditValid,
                400,
            ),
            (
                SampleCart::Closed,
                CartEdit::AddItem {
                    sku: "A".into(),
                    quantity: Decimal::ONE,
                },
                Requirement::CartRow,
                403,
            ),
        ];
        for (cart, change, requirement, status) in cases {
            let err = edit(&engine, cart, change.clone()).unwrap_err();
            assert_eq!(err.requirement(), Some(requirement), "{change:?}: {err}");
            assert_eq!(err.http_status(), status, "{change:?}");
        }
        assert_eq!(store.to_dataset(), before);
    }
}

/// Drives `cart` to Checkout Summary and past it, to Cart To Order. Returns the session.
fn past_the_summary(engine: &Engine, cart: &SfId) -> SfId {
    let summary = BuyerInput {
        place_order: false,
        ..full_input()
    };
    let Drive::NeedsInput { session_id, state } =
        drive(engine, &buyer(), cart, &summary, Waiting::RunInline).unwrap()
    else {
        panic!("the drive did not stop at a screen");
    };
    assert_eq!(state, SessionState::CheckoutSummary);
    let next = engine.table().template().step(state).unwrap().next.unwrap();
    engine
        .execute(
            &buyer(),
            Command::Advance {
                session_id: session_id.to_string(),
                state: next.as_str().to_owned(),
                exp_current_state: Some(state.as_str().to_owned()),
            },
        )
        .unwrap();
    session_id
}

/// Drives `cart` past Checkout Summary, then walks its async steps by hand until the session
/// is locked at Activate Order with its Draft order. Returns the session.
fn locked_at_activation(engine: &Engine, cart: &SfId) -> SfId {
    let session_id = past_the_summary(engine, cart);
    let template = engine.table().template().clone();
    let step_next = |state: SessionState| template.step(state).unwrap().next.unwrap();
    let execute = |command: Command| engine.execute(&buyer(), command).unwrap();
    loop {
        let session = engine.store().session(&session_id).unwrap().unwrap();
        let here = session.state.unwrap();
        execute(Command::UpdateSession {
            session_id: session_id.to_string(),
            next_state: step_next(here).as_str().to_owned(),
            exp_current_state: Some(here.as_str().to_owned()),
        });
        if here == SessionState::ActivateOrder {
            return session_id;
        }
        let kind = template.step(here).unwrap().kind;
        execute(Command::for_step(kind, cart.to_string()).unwrap());
        engine.run_until_idle().unwrap();
    }
}

/// An activation command with its orderStatus replaced; any other command is a failure.
fn with_order_status(command: &Command, status: Option<&str>) -> Command {
    match command {
        Command::ActivateOrder {
            cart_id,
            order_life_cycle_type,
            run_async,
            ..
        } => Command::ActivateOrder {
            cart_id: cart_id.clone(),
            order_status: status.map(str::to_owned),
            order_life_cycle_type: order_life_cycle_type.clone(),
            run_async: *run_async,
        },
        other => panic!("activation built as {other:?}, not as activateOrderAction"),
    }
}

#[test]
fn order_status_is_checked_on_every_path_that_activates() {
    let store = store();
    let engine = engine_over(store.clone(), 1);
    let cart = SampleCart::InStock.id();
    let session_id = locked_at_activation(&engine, &cart);
    let draft_order = store
        .session(&session_id)
        .unwrap()
        .unwrap()
        .order_id
        .unwrap();
    let refused = |command: Command| {
        let error = engine.execute(&buyer(), command).unwrap_err();
        assert_eq!(
            error.requirement(),
            Some(Requirement::OrderStatusIsActivate),
            "{error}"
        );
    };

    // `RunStep` cannot express the order actions: they are no provider actions.
    for action in [Action::CartToOrder, Action::ActivateOrder] {
        assert_eq!(ProviderAction::of(action), None);
    }
    // The library's own command.
    let activate = Command::ActivateOrder {
        cart_id: cart.to_string(),
        order_status: None,
        order_life_cycle_type: None,
        run_async: true,
    };
    for status in [None, Some("Draft"), Some("activated")] {
        refused(with_order_status(&activate, status));
    }
    // `invoke`, by API name.
    for input in [
        json!({"cartId": cart.to_string()}),
        json!({"cartId": cart.to_string(), "orderStatus": "Draft"}),
    ] {
        let result = engine.invoke("activateOrderAction", &input, &buyer());
        assert!(!result.is_success, "{result:?}");
        assert_eq!(result.errors.unwrap()[0].status_code, "UNKNOWN_EXCEPTION");
    }
    // `permitted`'s candidate is the real activation command.
    let permitted = engine.permitted(&buyer(), &cart).unwrap();
    let offered: Vec<&Command> = permitted
        .iter()
        .map(|p| &p.command)
        .filter(|c| c.event(engine.table()) == Event::Action(Action::ActivateOrder))
        .collect();
    assert_eq!(offered.len(), 1, "{permitted:?}");
    assert_eq!(
        *offered[0],
        with_order_status(&activate, Some(OrderStatus::Activated.as_str()))
    );
    refused(with_order_status(offered[0], Some("Draft")));
    // The flow driver's command for the step.
    let step = engine
        .table()
        .template()
        .step(SessionState::ActivateOrder)
        .unwrap();
    let flow_command = Command::for_step(step.kind, cart.to_string()).unwrap();
    refused(with_order_status(&flow_command, None));

    // Nothing the refusals touched changed: still locked, the order still Draft.
    let session = store.session(&session_id).unwrap().unwrap();
    assert!(session.is_processing);
    assert_eq!(session.state, Some(SessionState::ActivateOrder));
    let order = store.order(&draft_order).unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Draft);
    // The driver activates through that same command.
    let done = drive(&engine, &buyer(), &cart, &full_input(), Waiting::RunInline).unwrap();
    assert!(matches!(done, Drive::Complete { order_id, .. } if order_id == draft_order));
    let order = store.order(&draft_order).unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Activated);
}

#[test]
fn permitted_offers_the_command_of_every_async_and_payment_step_it_is_locked_at() {
    let store = store();
    let engine = engine_over(store.clone(), 1);
    let cart = SampleCart::InStock.id();
    let session_id = past_the_summary(&engine, &cart);
    let template = engine.table().template().clone();
    let step_next = |state: SessionState| template.step(state).unwrap().next.unwrap();
    let execute = |command: Command| engine.execute(&buyer(), command).unwrap();
    let mut offered_steps = Vec::new();
    loop {
        let here = store.session(&session_id).unwrap().unwrap().state.unwrap();
        let kind = template.step(here).unwrap().kind;
        let Some(own) = Command::for_step(kind, cart.to_string()) else {
            break;
        };
        execute(Command::UpdateSession {
            session_id: session_id.to_string(),
            next_state: step_next(here).as_str().to_owned(),
            exp_current_state: Some(here.as_str().to_owned()),
        });
        let permitted = engine.permitted(&buyer(), &cart).unwrap();
        assert!(
            permitted.iter().any(|p| p.command == own),
            "locked at {here}, {own:?} is not among {permitted:?}"
        );
        offered_steps.push(here);
        execute(own);
        engine.run_until_idle().unwrap();
    }
    // Cart To Order, Authorize Payment and Activate Order, in order.
    assert_eq!(
        offered_steps,
        [
            SessionState::CartToOrder,
            SessionState::AuthorizePayment,
            SessionState::ActivateOrder
        ]
    );
}

#[test]
fn each_async_step_runs_through_the_one_command_of_its_event() {
    let table = cartflow::machine::TransitionTable::standard();
    let cart = SampleCart::InStock.id().to_string();
    for step in &table.template().steps {
        let command = Command::for_step(step.kind, cart.clone());
        assert_eq!(
            command.as_ref().map(|c| c.event(&table)),
            step.own_event(),
            "{}",
            step.state
        );
        match (step.kind, command) {
            (StepKind::Async(Action::CartToOrder), Some(command)) => {
                assert!(
                    matches!(command, Command::CartToOrder { .. }),
                    "{command:?}"
                );
            }
            (StepKind::Async(Action::ActivateOrder), Some(command)) => {
                assert!(
                    matches!(&command, Command::ActivateOrder { order_status: Some(s), .. }
                        if s == OrderStatus::Activated.as_str()),
                    "{command:?}"
                );
            }
            (StepKind::Async(action), Some(command)) => assert_eq!(
                command,
                Command::RunStep {
                    action: ProviderAction::of(action).unwrap(),
                    cart_id: cart.clone()
                }
            ),
            (_, command) => assert!(
                matches!(command, None | Some(Command::AuthorizePayment { .. })),
                "{command:?}"
            ),
        }
    }
}

#[test]
fn a_template_whose_terminal_step_has_another_name_completes_a_checkout() {
    use cartflow::machine::{Template, TransitionTable};
    let done: SessionState = "Order Placed".parse().unwrap();
    let mut template = Template::standard();
    for step in &mut template.steps {
        if step.state == SessionState::Complete {
            step.state = done;
        }
        if step.next == Some(SessionState::Complete) {
            step.next = Some(done);
        }
    }
    let table = TransitionTable::build(template).unwrap();
    let store = store();
    let engine = engine_over(store.clone(), 1).with_table(table);
    let cart = SampleCart::InStock.id();
    let outcome = drive(&engine, &buyer(), &cart, &full_input(), Waiting::RunInline).unwrap();
    let Drive::Complete {
        session_id,
        order_id,
    } = outcome
    else {
        panic!("not complete: {outcome:?}");
    };
    let session = store.session(&session_id).unwrap().unwrap();
    assert_eq!(session.state, Some(done));
    assert!(session.is_archived);
    assert_eq!(
        store.cart(&cart).unwrap().unwrap().status,
        CartStatus::Closed
    );
    let order = store.order(&order_id).unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Activated);
}
