//! The limits of buyer-written text: every field takes values up to its documented maximum,
//! one character more is `STRING_TOO_LONG` naming the field, and a NUL or another control
//! character is `INVALID_INPUT` naming the field. The answers are the same on the memory,
//! SQLite and PostgreSQL stores, through the library, the CLI and the HTTP facade, and a
//! refused input leaves every stored record as it was.

mod support;

use std::sync::Arc;

use cartflow::error::ErrorCode;
use cartflow::ids::SequentialIds;
use cartflow::machine::limits::{self, FieldLimit};
use cartflow::machine::{CartEdit, CheckoutDetails, Command, Output};
use cartflow::model::{Address, SfId};
use cartflow::sample::{self, SampleCart};
use cartflow::{CheckoutError, Engine, Store};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use support::stores::{self, Guard, Open};

fn buyer() -> String {
    sample::buyer_id().to_string()
}

/// An engine over `open`'s store of the sample world, with the in-stock cart in checkout
/// (its session at Start, not processing). Returns the session's Id too.
fn in_checkout(open: Open) -> (Engine, Option<Guard>, String) {
    let (store, guard) = open(sample::dataset());
    let engine = Engine::new(store)
        .with_ids(Arc::new(SequentialIds::default()))
        .with_integrations(sample::integrations(&sample::dataset()));
    let started = engine.execute(
        &buyer(),
        Command::StartSession {
            cart_id: SampleCart::InStock.id().to_string(),
            initial_state: None,
        },
    );
    let Ok(Output::RequestId(session)) = started else {
        panic!("checkout did not start: {started:?}");
    };
    (engine, guard, session.to_string())
}

/// Everything stored about the carts the commands address.
fn world(store: &dyn Store) -> Value {
    let of = |cart: SfId| {
        json!({
            "cart": store.cart(&cart).unwrap(),
            "items": store.cart_items(&cart).unwrap(),
            "sessions": store.sessions_of(&cart).unwrap(),
            "operations": store.operations_of(&cart).unwrap(),
            "outputs": store.validation_outputs(&cart).unwrap(),
            "history": store.history(&cart).unwrap().len(),
        })
    };
    json!([of(SampleCart::InStock.id()), of(SampleCart::Reorder.id())])
}

fn address() -> Address {
    sample::denver()
}

/// A command carrying `value` in `field`, everything else valid.
fn command_with(field: FieldLimit, value: &str, session: &str) -> Command {
    let cart_id = SampleCart::InStock.id().to_string();
    let details = |details: CheckoutDetails| Command::SetDetails {
        cart_id: cart_id.clone(),
        details,
    };
    let on_address = |edit: fn(&mut Address, String)| {
        let mut address = address();
        edit(&mut address, value.to_owned());
        details(CheckoutDetails {
            deliver_to: Some(address),
            ..CheckoutDetails::default()
        })
    };
    let edit = |edit: CartEdit| Command::EditCart {
        cart_id: SampleCart::Reorder.id().to_string(),
        edit,
    };
    match field.field {
        "DeliverTo.Street" => on_address(|a, v| a.street = v),
        "DeliverTo.City" => on_address(|a, v| a.city = v),
        "DeliverTo.StateCode" => on_address(|a, v| a.state_code = Some(v)),
        "DeliverTo.PostalCode" => on_address(|a, v| a.postal_code = v),
        "DeliverTo.CountryCode" => on_address(|a, v| a.country_code = v),
        "DeliveryMethodId" => details(CheckoutDetails {
            delivery_method_id: Some(value.to_owned()),
            ..CheckoutDetails::default()
        }),
        "PaymentToken" => details(CheckoutDetails {
            payment_token: Some(value.to_owned()),
            ..CheckoutDetails::default()
        }),
        "State" => Command::Advance {
            session_id: session.to_owned(),
            state: value.to_owned(),
            exp_current_state: None,
        },
        "initialState" => Command::StartSession {
            cart_id: SampleCart::Reorder.id().to_string(),
            initial_state: Some(value.to_owned()),
        },
        "nextState" => Command::UpdateSession {
            session_id: session.to_owned(),
            next_state: value.to_owned(),
            exp_current_state: None,
        },
        "expCurrentState" => Command::UpdateSession {
            session_id: session.to_owned(),
            next_state: "Inventory".into(),
            exp_current_state: Some(value.to_owned()),
        },
        "orderStatus" => Command::ActivateOrder {
            cart_id,
            order_status: Some(value.to_owned()),
            order_life_cycle_type: None,
            run_async: true,
        },
        "orderLifeCycleType" => Command::ActivateOrder {
            cart_id,
            order_status: Some("Activated".into()),
            order_life_cycle_type: Some(value.to_owned()),
            run_async: true,
        },
        "Sku" => edit(CartEdit::AddItem {
            sku: value.to_owned(),
            quantity: Decimal::ONE,
        }),
        "CartItemId" => edit(CartEdit::RemoveItem {
            item_id: value.to_owned(),
        }),
        other => panic!("no command carries {other}"),
    }
}

/// A refusal as the caller sees it: code, status, and the field named (else the message).
type Answer = Option<(ErrorCode, u16, Option<String>)>;

fn answer(result: Result<Output, CheckoutError>) -> Answer {
    result.err().map(|e| {
        (
            e.code(),
            e.http_status(),
            e.field().map(str::to_owned).or(Some(e.to_string())),
        )
    })
}

/// Over the maximum, and with control characters: refused with the field named, and
/// nothing stored changes. Returns the answers, to compare across stores.
fn refusals(engine: &Engine, session: &str) -> Vec<(String, Answer)> {
    let store = engine.store().clone();
    let mut answers = Vec::new();
    for field in limits::FIELD_LIMITS {
        let at_max = "a".repeat(field.max_chars);
        let over = format!("{at_max}é");
        let bad = [
            (over.as_str(), ErrorCode::StringTooLong),
            ("a\0b", ErrorCode::InvalidInput),
            ("a\u{1}", ErrorCode::InvalidInput),
            ("\u{7f}", ErrorCode::InvalidInput),
        ];
        for (value, code) in bad {
            let before = world(store.as_ref());
            let got = answer(engine.execute(&buyer(), command_with(field, value, session)));
            assert_eq!(
                got,
                Some((code, 400, Some(field.field.to_owned()))),
                "{} = {value:?}",
                field.field
            );
            assert_eq!(
                world(store.as_ref()),
                before,
                "{} changed nothing",
                field.field
            );
            answers.push((field.field.to_owned(), got));
        }
    }
    answers
}

/// At the maximum (and a street with line breaks): never a limit refusal. The screen
/// fields are stored as given.
fn acceptances(engine: &Engine, session: &str) -> Vec<(String, Answer)> {
    let mut answers = Vec::new();
    for field in limits::FIELD_LIMITS {
        let value = if field.multiline {
            format!(
                "{}\r\n{}",
                "a".repeat(100),
                "b".repeat(field.max_chars - 102)
            )
        } else {
            "é".repeat(field.max_chars)
        };
        let result = engine.execute(&buyer(), command_with(field, &value, session));
        if let Err(e) = &result {
            assert_eq!(e.field(), None, "{} at its maximum: {e}", field.field);
        }
        answers.push((field.field.to_owned(), answer(result)));
    }
    let cart = engine
        .store()
        .cart(&SampleCart::InStock.id())
        .unwrap()
        .unwrap();
    let long = |n: usize| Some("é".repeat(n));
    assert_eq!(cart.payment_token, long(255));
    // (A delivery method must be one offered, so the 18-character one is refused by that
    // rule, not by its length.)
    // Each address command sends a whole address; the last one sent the longest country code.
    assert_eq!(cart.deliver_to.unwrap().country_code, "é".repeat(10));
    answers
}

#[test]
fn every_field_takes_its_maximum_and_refuses_one_more_character_on_every_store() {
    let mut answers = Vec::new();
    for (name, open) in stores::all() {
        let (engine, _guard, session) = in_checkout(open);
        let refused = refusals(&engine, &session);
        let accepted = acceptances(&engine, &session);
        answers.push((name, refused, accepted));
    }
    let (first, refused, accepted) = &answers[0];
    for (name, other_refused, other_accepted) in &answers[1..] {
        assert_eq!(other_refused, refused, "{name} answers as {first} does");
        assert_eq!(other_accepted, accepted, "{name} answers as {first} does");
    }
}

#[test]
fn action_inputs_are_checked_before_the_session_is_read() {
    for (name, open) in stores::all() {
        let (engine, _guard, session) = in_checkout(open);
        let before = world(engine.store().as_ref());
        let cases = [
            (
                "checkoutSessionAction",
                json!({"cartId": SampleCart::Reorder.id().to_string(), "initialState": "Start\0"}),
                "INVALID_INPUT",
                "initialState",
            ),
            (
                "updateCheckoutSessionStateAction",
                json!({"checkoutSessionId": session, "nextState": "x".repeat(31)}),
                "STRING_TOO_LONG",
                "nextState",
            ),
            (
                "updateCheckoutSessionStateAction",
                json!({"checkoutSessionId": session, "nextState": "Inventory", "expCurrentState": "Start\u{1b}"}),
                "INVALID_INPUT",
                "expCurrentState",
            ),
            (
                "activateOrderAction",
                json!({"cartId": SampleCart::InStock.id().to_string(), "orderStatus": "A".repeat(41)}),
                "STRING_TOO_LONG",
                "orderStatus",
            ),
            // A session that does not exist: the input is refused all the same, before any
            // record is looked up.
            (
                "updateCheckoutSessionStateAction",
                json!({"checkoutSessionId": "2z9000000000999AAA", "nextState": "\0"}),
                "INVALID_INPUT",
                "nextState",
            ),
        ];
        for (action, input, code, field) in cases {
            let result = engine.invoke(action, &input, &buyer());
            assert!(!result.is_success, "{name} {action}");
            assert_eq!(result.http_status, 400, "{name} {action}");
            let error = &result.errors.as_ref().unwrap()[0];
            assert_eq!(error.status_code, code, "{name} {action}");
            assert!(
                error.message.starts_with(field),
                "{name}: {}",
                error.message
            );
        }
        assert_eq!(world(engine.store().as_ref()), before, "{name}");
    }
}

#[test]
fn the_cli_refuses_a_nul_in_an_action_input_and_creates_no_session() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("cartflow.json"),
        serde_json::to_string(&sample::dataset()).unwrap(),
    )
    .unwrap();
    let cart = SampleCart::InStock.id();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cartflow"))
        .args([
            "invoke",
            "checkoutSessionAction",
            "--input",
            &json!({"cartId": cart.to_string(), "initialState": "Start\u{0}"}).to_string(),
            "--as",
            &buyer(),
            "--data",
            &tmp.path().display().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        tmp.path().join("cartflow.db").exists(),
        "the database was seeded"
    );
    let element: Value = serde_json::from_slice(&output.stdout).unwrap();
    let element = if element.is_array() {
        element[0].clone()
    } else {
        element
    };
    assert_eq!(
        element["errors"][0]["statusCode"], "INVALID_INPUT",
        "{element}"
    );
    let store = cartflow::store::SqliteStore::open(
        tmp.path().join("cartflow.db"),
        cartflow::store::Durability::Normal,
    )
    .unwrap();
    assert!(store.sessions_of(&cart).unwrap().is_empty());
}

#[cfg(feature = "http")]
mod over_http {
    use super::*;
    use cartflow::clock::SystemClock;
    use cartflow::http::{Server, ServerConfig, Tokens};
    use std::time::Duration;

    const V: &str = "v64.0";
    const TOKEN: &str = "buyer-token";

    struct Facade {
        _server: Server,
        base: String,
        agent: ureq::Agent,
    }

    impl Facade {
        fn start(store: Arc<dyn Store>) -> Facade {
            let engine = Engine::new(store)
                .with_integrations(sample::integrations(&sample::dataset()))
                .with_clock(Arc::new(SystemClock));
            let config = ServerConfig {
                addr: "127.0.0.1:0".parse().unwrap(),
                workers: 0,
                ..ServerConfig::default()
            };
            let tokens = Tokens::new().with(TOKEN, sample::buyer_id());
            let server = Server::start(engine, tokens, &config).unwrap();
            Facade {
                base: format!("http://{}/services/data/{V}", server.local_addr()),
                _server: server,
                agent: ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(120)))
                    .build()
                    .new_agent(),
            }
        }

        fn answer(response: ureq::http::Response<ureq::Body>) -> (u16, Value) {
            let status = response.status().as_u16();
            let text = response.into_body().read_to_string().unwrap();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }

        fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
            let response = self
                .agent
                .patch(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {TOKEN}"))
                .header("Content-Type", "application/json")
                .send(body.to_string())
                .unwrap();
            Facade::answer(response)
        }

        fn post(&self, path: &str, body: &Value) -> (u16, Value) {
            let response = self
                .agent
                .post(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {TOKEN}"))
                .header("Content-Type", "application/json")
                .send(body.to_string())
                .unwrap();
            Facade::answer(response)
        }

        fn get(&self, path: &str) -> Value {
            let response = self
                .agent
                .get(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {TOKEN}"))
                .call()
                .unwrap();
            let (status, body) = Facade::answer(response);
            assert_eq!(status, 200, "{path}: {body}");
            body
        }
    }

    fn refused(reply: (u16, Value), code: &str, field: &str) {
        let (status, body) = reply;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body[0]["errorCode"], code, "{body}");
        assert_eq!(body[0]["fields"], json!([field]), "{body}");
    }

    #[test]
    fn patches_and_actions_with_a_nul_or_an_over_long_value_answer_400_on_every_store() {
        for (name, open) in stores::all() {
            let (store, _guard) = open(sample::dataset());
            let f = Facade::start(store);
            let cart = SampleCart::InStock.id().to_string();
            let (status, started) = f.post(
                "/actions/standard/checkoutSessionAction",
                &json!({"inputs": [{"cartId": cart}]}),
            );
            assert_eq!(status, 200, "{name}: {started}");
            let session = started[0]["outputValues"]["requestId"]
                .as_str()
                .unwrap()
                .to_owned();
            let cart_path = format!("/sobjects/WebCart/{cart}");
            let session_path = format!("/sobjects/CartCheckoutSession/{session}");
            let before = (f.get(&cart_path), f.get(&session_path));

            refused(
                f.patch(&cart_path, &json!({"PaymentToken": "tok\u{0}visa"})),
                "INVALID_INPUT",
                "PaymentToken",
            );
            refused(
                f.patch(&cart_path, &json!({"PaymentToken": "t".repeat(500_000)})),
                "STRING_TOO_LONG",
                "PaymentToken",
            );
            let mut address = serde_json::to_value(sample::denver()).unwrap();
            address["City"] = json!("D".repeat(41));
            refused(
                f.patch(&cart_path, &json!({"DeliverTo": address})),
                "STRING_TOO_LONG",
                "DeliverTo.City",
            );
            address["City"] = json!("Denver\n");
            refused(
                f.patch(&cart_path, &json!({"DeliverTo": address})),
                "INVALID_INPUT",
                "DeliverTo.City",
            );
            refused(
                f.patch(&session_path, &json!({"State": "S".repeat(31)})),
                "STRING_TOO_LONG",
                "State",
            );
            let (status, body) = f.post(
                "/actions/standard/updateCheckoutSessionStateAction",
                &json!({"inputs": [{"checkoutSessionId": session, "nextState": "Inventory\u{0}"}]}),
            );
            assert_eq!(status, 400, "{name}: {body}");
            assert_eq!(body[0]["errors"][0]["statusCode"], "INVALID_INPUT");
            assert_eq!((f.get(&cart_path), f.get(&session_path)), before, "{name}");

            // A street may hold line breaks; at their maximum the fields are stored.
            let mut address = serde_json::to_value(sample::denver()).unwrap();
            address["Street"] = json!("1701 Wynkoop St\nSuite 2");
            address["City"] = json!("D".repeat(40));
            let (status, body) = f.patch(
                &cart_path,
                &json!({"DeliverTo": address, "PaymentToken": "t".repeat(255)}),
            );
            assert_eq!(status, 204, "{name}: {body}");
            assert_eq!(f.get(&cart_path)["DeliverTo"], address, "{name}");
        }
    }
}
