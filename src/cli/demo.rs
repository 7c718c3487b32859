//! `cartflow demo`: a checkout told as a story, on the sample data in a
//! SQLite database, `<dir>/cartflow-demo.db`. Every claim it prints is checked as it goes: a
//! step that does not behave as the story says stops the demo with exit status 1.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use cartflow::clock::ManualClock;
use cartflow::flow::{BuyerInput, Drive, Waiting, drive};
use cartflow::ids::SequentialIds;
use cartflow::integrations::Integrations;
use cartflow::machine::{Command, TransitionTable};
use cartflow::model::{CartCheckoutSession, CartStatus, OrderStatus, SessionState, SfId};
use cartflow::sample::{self, SampleCart};
use cartflow::store::{Durability, SqliteStore};
use cartflow::{ActionResult, Engine, Store};
use serde_json::{Value, json};

use crate::cli::datadir::{ProviderFile, remove_database, warn_missing_providers};
use crate::cli::element_json;

macro_rules! say {
    ($out:expr) => { $out.push('\n') };
    ($out:expr, $($arg:tt)*) => {{ $out.push_str(&format!($($arg)*)); $out.push('\n'); }};
}

/// The demo's database file name.
pub const DEMO_DATABASE: &str = "cartflow-demo.db";

/// Runs the demo in `dir` and prints it; exit status 0 when the story held, 1 when it
/// broke, 2 when the database cannot be written or `integrations` (a file that replaces the
/// sample providers) or `template` (a template file that replaces the standard one) cannot
/// be used.
pub fn run(dir: &Path, integrations: Option<&Path>, template: Option<&Path>) -> ExitCode {
    if !dir.is_dir() {
        errln!(
            "cartflow demo: {} does not exist or is not a directory",
            dir.display()
        );
        return ExitCode::from(2);
    }
    // Read and checked before the previous run's database is removed: a bad file touches nothing.
    let providers = match integrations.map(ProviderFile::read).transpose() {
        Ok(providers) => providers,
        Err(e) => {
            errln!("cartflow demo: {e}");
            return ExitCode::from(2);
        }
    };
    // Only the flag: the demo's directory holds the database it writes, not a store's data.
    let table = match template.map(|file| crate::cli::template::table(None, Some(file))) {
        None => None,
        Some(Ok(table)) => Some(table),
        Some(Err(e)) => {
            errln!("cartflow demo: {e}");
            return ExitCode::from(2);
        }
    };
    let path = dir
        .canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .join(DEMO_DATABASE);
    // Each run starts from the sample world, so a rerun tells the same story.
    remove_database(&path);
    let demo = match Demo::new(&path, providers.as_ref(), table) {
        Ok(demo) => demo,
        Err(message) => {
            errln!("cartflow demo: {message}");
            return ExitCode::from(2);
        }
    };
    let mut out = String::new();
    let outcome = story(&demo, &mut out);
    // Close the database (SQLite folds its -wal file back in) before saying where it is.
    drop(demo);
    if outcome.is_ok() {
        say!(out);
        say!(
            out,
            "The demo's database is {} (give `--data sqlite:{}` to invoke or worker).",
            path.display(),
            path.display()
        );
    }
    let code = crate::cli::print_stdout(&out);
    match outcome {
        Ok(()) => code,
        Err(message) => {
            errln!("cartflow demo: the story broke: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The width of the step column.
const STEP: usize = 34;

struct Demo {
    engine: Engine,
    store: Arc<SqliteStore>,
    clock: Arc<ManualClock>,
    buyer: String,
    /// Whether the engine runs a template given with `--template`.
    custom: bool,
}

impl Demo {
    /// A new database at `path` holding the sample world; stock checks read its stock table,
    /// the other checks use the sample providers or, when given, those of `providers`. The
    /// engine runs `table` when given (a `--template`), else the standard template.
    fn new(
        path: &Path,
        providers: Option<&ProviderFile>,
        table: Option<TransitionTable>,
    ) -> Result<Demo, String> {
        let cannot = |e: cartflow::StoreError| format!("cannot write {}: {e}", path.display());
        let store = Arc::new(SqliteStore::open(path, Durability::Normal).map_err(cannot)?);
        store.import(&sample::dataset()).map_err(cannot)?;
        let integrations = match providers {
            None => sample::integrations(&sample::dataset()),
            Some(file) => {
                let mut integrations = Integrations::with_stock_tables(&sample::dataset().stock);
                file.apply(&mut integrations).map_err(|e| e.to_string())?;
                integrations
            }
        };
        let stores = sample::dataset().stores.into_iter().map(|store| store.id);
        let standard = cartflow::machine::Template::standard();
        let template = table.as_ref().map_or(&standard, TransitionTable::template);
        integrations
            .check_template(template, stores)
            .map_err(|e| e.to_string())?;
        // A clock of the demo's own, so every run prints the same story and the expiry
        // chapter can let two days pass in an instant.
        let clock = Arc::new(ManualClock::new(
            chrono::DateTime::parse_from_rfc3339("2026-11-02T09:00:00Z")
                .map_err(|e| e.to_string())?
                .to_utc(),
        ));
        let mut engine = Engine::new(Arc::clone(&store) as Arc<dyn Store>)
            .with_ids(Arc::new(SequentialIds::default()))
            .with_clock(clock.clone())
            .with_integrations(integrations);
        let custom = table.is_some();
        if let Some(table) = table {
            engine = engine.with_table(table);
        }
        warn_missing_providers("demo", &engine);
        Ok(Demo {
            engine,
            store,
            clock,
            buyer: sample::buyer_id().to_string(),
            custom,
        })
    }

    fn export(&self) -> Result<cartflow::store::DataSet, String> {
        self.store.export().map_err(|e| e.to_string())
    }

    fn session(&self, id: &str) -> Result<CartCheckoutSession, String> {
        let id: SfId = id.parse().map_err(|e| format!("{e}"))?;
        self.store
            .session(&id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("session {id} vanished"))
    }

    fn invoke(&self, action: &str, input: &Value, actor: &str) -> ActionResult {
        self.engine.invoke(action, input, actor)
    }

    /// Invokes an action that the story needs to succeed; returns its one output value.
    fn expect_ok(&self, action: &str, input: &Value, key: Option<&str>) -> Result<String, String> {
        let result = self.invoke(action, input, &self.buyer);
        if !result.is_success {
            return Err(format!("{action} was refused: {}", element_json(&result)));
        }
        Ok(key
            .and_then(|k| result.output_values.as_ref()?.get(k)?.as_str())
            .unwrap_or_default()
            .to_owned())
    }

    /// A screen step: the flow writes the next State onto the session.
    fn advance(&self, out: &mut String, session: &str, from: &str, to: &str) -> Result<(), String> {
        self.engine
            .execute(
                &self.buyer,
                Command::Advance {
                    session_id: session.to_owned(),
                    state: to.to_owned(),
                    exp_current_state: Some(from.to_owned()),
                },
            )
            .map_err(|e| format!("the screen step {from} -> {to} was refused: {e}"))?;
        say!(
            out,
            "   {:STEP$} State {from} -> {to}",
            "screen step (advance)"
        );
        Ok(())
    }

    /// checkoutSessionAction, both screen steps, and the lock of the Inventory step.
    fn to_locked_inventory(&self, out: &mut String, cart: SampleCart) -> Result<String, String> {
        let cart_id = cart.id().to_string();
        let session = self.expect_ok(
            "checkoutSessionAction",
            &json!({"cartId": cart_id, "initialState": "Start"}),
            Some("requestId"),
        )?;
        let status = self
            .store
            .cart(&cart.id())
            .map_err(|e| e.to_string())?
            .map(|c| c.status.as_str())
            .unwrap_or("?");
        say!(
            out,
            "   {:STEP$} requestId {session}: session State Start, cart {status}",
            "checkoutSessionAction"
        );
        self.advance(out, &session, "Start", "Shipping Address")?;
        self.advance(out, &session, "Shipping Address", "Inventory")?;
        self.expect_ok(
            "updateCheckoutSessionStateAction",
            &json!({"checkoutSessionId": session, "expCurrentState": "Inventory", "nextState": "Confirm Price"}),
            None,
        )?;
        let locked = self.session(&session)?;
        if !locked.is_processing {
            return Err("the session is not locked after updateCheckoutSessionStateAction".into());
        }
        say!(
            out,
            "   {:STEP$} Inventory locked: IsProcessing true, NextState Confirm Price",
            "updateCheckoutSessionStateAction"
        );
        Ok(session)
    }

    /// Runs the worker until idle and reports the operation's status.
    fn run_worker(&self, out: &mut String, operation: &str) -> Result<String, String> {
        let ran = self.engine.run_until_idle().map_err(|e| e.to_string())?;
        let id: SfId = operation.parse().map_err(|e| format!("{e}"))?;
        let status = self
            .store
            .operation(&id)
            .map_err(|e| e.to_string())?
            .map(|op| op.status.as_str())
            .unwrap_or("?");
        say!(
            out,
            "   {:STEP$} ran {ran} operation: {operation} is {status}",
            "worker"
        );
        Ok(status.to_owned())
    }

    /// A call the documentation says is refused: prints its errorCode and HTTP status and
    /// checks that it changed nothing.
    fn refused(
        &self,
        out: &mut String,
        row: &str,
        who: &str,
        cart_id: &str,
        expected: (&str, u16),
    ) -> Result<ActionResult, String> {
        let before = self.export()?;
        let result = self.invoke("checkCartInventoryAction", &json!({"cartId": cart_id}), who);
        let error = result
            .errors
            .as_ref()
            .and_then(|e| e.first())
            .ok_or_else(|| format!("{row}: the call was not refused"))?;
        if (error.status_code.as_str(), result.http_status) != expected || result.is_success {
            return Err(format!(
                "{row}: expected {} {}, got {}",
                expected.0,
                expected.1,
                element_json(&result)
            ));
        }
        if self.export()? != before {
            return Err(format!("{row}: a refused call changed the store"));
        }
        say!(
            out,
            "   {row:34} {:32} {}  {}",
            error.status_code,
            result.http_status,
            error.message
        );
        Ok(result)
    }
}

fn story(demo: &Demo, out: &mut String) -> Result<(), String> {
    let data = sample::dataset();
    let store = &data.stores[0];
    let stock: Vec<String> = data
        .stock
        .iter()
        .map(|s| format!("{} {}", s.sku, s.quantity))
        .collect();
    let lines = |cart: SampleCart| -> String {
        data.items
            .iter()
            .filter(|i| i.cart_id == cart.id())
            .map(|i| format!("{} x{}", i.sku.as_deref().unwrap_or("?"), i.quantity))
            .collect::<Vec<_>>()
            .join(", ")
    };

    say!(
        out,
        "cartflow demo: a B2B checkout, step by step, on SQLite ({DEMO_DATABASE})"
    );
    say!(
        out,
        "Store \"{}\" ({}), stock: {}.",
        store.name,
        store.id,
        stock.join(", ")
    );
    say!(
        out,
        "Buyer: Bea Buyer ({}) of Summit Outfitters ({}).",
        sample::buyer_id(),
        sample::account_id()
    );
    if demo.custom {
        let template = demo.engine.table().template();
        say!(
            out,
            "Template \"{}\" (--template), {} steps.",
            template.name,
            template.steps.len()
        );
    }

    // 1. The happy path.
    say!(out);
    say!(out, "1. A cart whose stock is there");
    let cart = SampleCart::InStock;
    say!(out, "   {:STEP$} {} ({})", "cart", cart.id(), lines(cart));
    let session = demo.to_locked_inventory(out, cart)?;
    let request = json!({"inputs": [{"cartId": cart.id().to_string()}]});
    let result = demo.invoke(
        "checkCartInventoryAction",
        &request["inputs"][0],
        &demo.buyer,
    );
    if !result.is_success {
        return Err(format!(
            "checkCartInventoryAction was refused: {}",
            element_json(&result)
        ));
    }
    let operation = result
        .output_values
        .as_ref()
        .and_then(|v| v.get("backgroundOperationId")?.as_str())
        .unwrap_or_default()
        .to_owned();
    say!(
        out,
        "   {:STEP$} backgroundOperationId {operation} (New): the check runs in the background",
        "checkCartInventoryAction"
    );
    say!(
        out,
        "     POST /services/data/v62.0/actions/standard/checkCartInventoryAction {request}"
    );
    say!(
        out,
        "     HTTP {}: {}",
        result.http_status,
        Value::Array(vec![element_json(&result)])
    );
    if demo.run_worker(out, &operation)? != "Complete" {
        return Err("the in-stock cart's check did not complete".into());
    }
    let done = demo.session(&session)?;
    say!(
        out,
        "   {:STEP$} State {}, IsProcessing {}, IsError {}",
        "session",
        done.state.as_ref().map_or("(empty)", |s| s.as_str()),
        done.is_processing,
        done.is_error
    );
    if done.state != Some(SessionState::ConfirmPrice) {
        return Err("the session did not advance to Confirm Price".into());
    }

    // 2. Short stock.
    say!(out);
    say!(out, "2. A cart that wants more than the stock holds");
    let cart = SampleCart::ShortStock;
    say!(out, "   {:STEP$} {} ({})", "cart", cart.id(), lines(cart));
    let session = demo.to_locked_inventory(out, cart)?;
    let operation = demo.expect_ok(
        "checkCartInventoryAction",
        &json!({"cartId": cart.id().to_string()}),
        Some("backgroundOperationId"),
    )?;
    say!(
        out,
        "   {:STEP$} backgroundOperationId {operation} (New)",
        "checkCartInventoryAction"
    );
    if demo.run_worker(out, &operation)? != "Error" {
        return Err("the short cart's check did not fail".into());
    }
    let failed = demo.session(&session)?;
    say!(
        out,
        "   {:STEP$} State {}, IsProcessing {}, IsError {}",
        "session",
        failed.state.as_ref().map_or("(empty)", |s| s.as_str()),
        failed.is_processing,
        failed.is_error
    );
    let mut outputs = demo
        .store
        .validation_outputs(&cart.id())
        .map_err(|e| e.to_string())?;
    outputs.sort_by(|a, b| a.message.cmp(&b.message));
    if !failed.is_error || outputs.is_empty() {
        return Err("the short cart has no validation messages".into());
    }
    say!(out, "   validation messages (CartValidationOutput):");
    for output in &outputs {
        say!(
            out,
            "     {:?} {:?}: {}",
            output.level,
            output.output_type,
            output.message
        );
    }

    // 3. The documented refusals.
    say!(out);
    say!(
        out,
        "3. Refused: the seven documented errors of checkCartInventoryAction"
    );
    say!(
        out,
        "   {:34} {:32} {}  {}",
        "condition",
        "errorCode",
        "HTTP",
        "message"
    );
    let buyer = demo.buyer.clone();
    let first = demo.refused(
        out,
        "invalid cartId",
        &buyer,
        "0a6notACart",
        ("UNKNOWN_EXCEPTION", 500),
    )?;
    let in_stock = SampleCart::InStock.id().to_string();
    demo.refused(
        out,
        "caller can't invoke the action",
        &sample::no_permission_id().to_string(),
        &in_stock,
        ("BAD_REQUEST", 400),
    )?;
    demo.refused(
        out,
        "caller has no access to the cart",
        &sample::reader_id().to_string(),
        &in_stock,
        ("BAD_REQUEST", 400),
    )?;
    // The buyer gives up on the failed checkout: the cart goes back to Active.
    let short = SampleCart::ShortStock.id().to_string();
    demo.expect_ok("cancelCartAsyncOperation", &json!({"cartId": short}), None)?;
    say!(
        out,
        "     (cancelCartAsyncOperation on {short}: session archived, cart back to Active)"
    );
    demo.refused(
        out,
        "cart isn't in Checkout",
        &buyer,
        &short,
        ("INVALID_OPERATION", 403),
    )?;
    // A double click: the second call finds the first one's operation still New.
    let mut setup = String::new();
    demo.to_locked_inventory(&mut setup, SampleCart::ShortStock)?;
    let pending = demo.expect_ok(
        "checkCartInventoryAction",
        &json!({"cartId": short}),
        Some("backgroundOperationId"),
    )?;
    say!(
        out,
        "     (checkout restarted on {short}; first checkCartInventoryAction accepted: {pending} New)"
    );
    demo.refused(
        out,
        "already in process (2nd click)",
        &buyer,
        &short,
        ("ALREADY_IN_PROCESS", 400),
    )?;
    demo.refused(
        out,
        "effective account not valid",
        &buyer,
        &SampleCart::InactiveAccount.id().to_string(),
        ("INSUFFICIENT_ACCESS_OR_READONLY", 500),
    )?;
    demo.refused(
        out,
        "caller isn't a store member",
        &buyer,
        &SampleCart::ForeignStore.id().to_string(),
        ("INSUFFICIENT_ACCESS_OR_READONLY", 500),
    )?;
    say!(
        out,
        "   Each refusal changed nothing. The first one, as the REST answer's element:"
    );
    let element = serde_json::to_string_pretty(&element_json(&first)).map_err(|e| e.to_string())?;
    for line in element.lines() {
        say!(out, "     {line}");
    }

    whole_checkout(demo, out)?;
    failure_paths(demo, out)?;

    say!(out);
    say!(
        out,
        "Next: `cartflow invoke --help` drives the same actions on a data directory (a copy of examples/data);"
    );
    say!(
        out,
        "`cartflow diagram --format dot` draws every move the engine allows."
    );
    Ok(())
}

/// Prints the State moves of a session, from its history.
fn print_moves(demo: &Demo, out: &mut String, cart: SfId, session: SfId) -> Result<(), String> {
    let history = demo.store.history(&cart).map_err(|e| e.to_string())?;
    for entry in history.iter().filter(|h| h.record == session) {
        say!(
            out,
            "   {:STEP$} {} -> {}",
            entry.event.label(),
            entry.from,
            entry.to
        );
    }
    Ok(())
}

fn amount(value: Option<rust_decimal::Decimal>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// 4. The in-stock cart of chapter 1 goes on from Confirm Price to an activated order.
fn whole_checkout(demo: &Demo, out: &mut String) -> Result<(), String> {
    say!(out);
    say!(
        out,
        "4. The whole checkout: the first cart goes on to an activated order"
    );
    say!(
        out,
        "   The flow driver runs the template's hub loop with the buyer's input: ship to Denver,"
    );
    say!(
        out,
        "   the cheapest delivery method, payment token {}; at Checkout Summary the buyer moves",
        sample::GOOD_TOKEN
    );
    say!(out, "   the delivery to New York, then places the order.");
    let cart = SampleCart::InStock.id();
    let input = BuyerInput {
        deliver_to: Some(sample::denver()),
        delivery_method_id: None,
        payment_token: Some(sample::GOOD_TOKEN.into()),
        place_order: true,
    };
    // Chapter 1 passed the Shipping Address screen without one: the buyer enters it now.
    demo.engine
        .execute(
            &demo.buyer,
            Command::SetDetails {
                cart_id: cart.to_string(),
                details: cartflow::machine::CheckoutDetails {
                    deliver_to: input.deliver_to.clone(),
                    ..Default::default()
                },
            },
        )
        .map_err(|e| format!("the address was refused: {e}"))?;
    let input = change_of_address(demo, out, input)?;
    let outcome = drive(&demo.engine, &demo.buyer, &cart, &input, Waiting::RunInline)
        .map_err(|e| format!("the checkout stopped: {e}"))?;
    let Drive::Complete {
        session_id,
        order_id,
    } = outcome
    else {
        return Err(format!("the checkout did not complete: {outcome:?}"));
    };
    print_moves(demo, out, cart, session_id)?;
    let c = demo
        .store
        .cart(&cart)
        .map_err(|e| e.to_string())?
        .ok_or("the cart vanished")?;
    say!(
        out,
        "   {:STEP$} products {}, promotions {}, shipping {} ({}), tax {}, total {}",
        "cart amounts",
        amount(c.total_product_amount),
        amount(c.total_adjustment_amount),
        amount(c.total_charge_amount),
        c.delivery_method_id.as_deref().unwrap_or("-"),
        amount(c.total_tax_amount),
        amount(c.grand_total_amount)
    );
    let order = demo
        .store
        .order(&order_id)
        .map_err(|e| e.to_string())?
        .ok_or("the order vanished")?;
    if order.status != OrderStatus::Activated || c.status != CartStatus::Closed {
        return Err("the order is not activated or the cart not closed".into());
    }
    say!(
        out,
        "   {:STEP$} {} {} (OrderSummary {}, payment {} of {}), cart {}",
        "order",
        order.id,
        order.status.as_str(),
        order
            .order_summary_id
            .map_or("-".into(), |id| id.to_string()),
        order.payment_authorization_id.as_deref().unwrap_or("-"),
        amount(order.authorized_amount),
        c.status.as_str()
    );
    Ok(())
}

/// The buyer walks to Checkout Summary with `input`, then changes the address: the session
/// goes back to Shipping Cost and the taxes computed for the old address are dropped. Returns
/// the input with the new address.
fn change_of_address(
    demo: &Demo,
    out: &mut String,
    input: BuyerInput,
) -> Result<BuyerInput, String> {
    let cart = SampleCart::InStock.id();
    let first = BuyerInput {
        place_order: false,
        ..input.clone()
    };
    let outcome = drive(&demo.engine, &demo.buyer, &cart, &first, Waiting::RunInline)
        .map_err(|e| format!("the checkout stopped: {e}"))?;
    let Drive::NeedsInput { session_id, state } = outcome else {
        return Err(format!(
            "the checkout did not wait for the order: {outcome:?}"
        ));
    };
    let taxed = demo.store.cart(&cart).map_err(|e| e.to_string())?;
    let taxed = taxed.ok_or("the cart vanished")?;
    say!(
        out,
        "   {:STEP$} at {state}: tax {} for Denver, total {}",
        "taxed",
        amount(taxed.total_tax_amount),
        amount(taxed.grand_total_amount)
    );
    let new_york = Command::SetDetails {
        cart_id: cart.to_string(),
        details: cartflow::machine::CheckoutDetails {
            deliver_to: Some(sample::new_york()),
            ..Default::default()
        },
    };
    demo.engine
        .execute(&demo.buyer, new_york)
        .map_err(|e| format!("the new address was refused: {e}"))?;
    let back = demo.session(&session_id.to_string())?;
    let untaxed = demo.store.cart(&cart).map_err(|e| e.to_string())?;
    let untaxed = untaxed.ok_or("the cart vanished")?;
    if back.state != Some(SessionState::ShippingCost) || untaxed.total_tax_amount.is_some() {
        return Err("the change of address did not send the checkout back to Shipping Cost".into());
    }
    say!(
        out,
        "   {:STEP$} to New York: the session goes back to {}, its Denver tax dropped",
        "address changed",
        SessionState::ShippingCost
    );
    Ok(BuyerInput {
        deliver_to: Some(sample::new_york()),
        ..input
    })
}

/// 5. A declined payment, and a checkout left until its time-to-live ran out.
fn failure_paths(demo: &Demo, out: &mut String) -> Result<(), String> {
    say!(out);
    say!(out, "5. When checkout fails");
    let cart = SampleCart::Reorder.id();
    let input = BuyerInput {
        deliver_to: Some(sample::denver()),
        delivery_method_id: None,
        payment_token: Some(sample::DECLINED_TOKEN.into()),
        place_order: true,
    };
    let outcome = drive(&demo.engine, &demo.buyer, &cart, &input, Waiting::RunInline)
        .map_err(|e| format!("the checkout stopped: {e}"))?;
    let Drive::Failed { outputs, .. } = outcome else {
        return Err(format!("the declined payment did not fail: {outcome:?}"));
    };
    say!(
        out,
        "   {:STEP$} token {} on cart {cart}: session State Error",
        "declined payment",
        sample::DECLINED_TOKEN
    );
    for output in &outputs {
        say!(
            out,
            "     {:?} {:?}: {}",
            output.level,
            output.output_type,
            output.message
        );
    }
    demo.expect_ok(
        "cancelCartAsyncOperation",
        &json!({"cartId": cart.to_string()}),
        None,
    )?;
    say!(
        out,
        "   {:STEP$} the Draft order is never activated; the cart is Active again",
        "cancelCartAsyncOperation"
    );

    // A new checkout, abandoned at the payment screen for longer than the store allows.
    let partial = BuyerInput {
        payment_token: None,
        ..input
    };
    let stopped = drive(
        &demo.engine,
        &demo.buyer,
        &cart,
        &partial,
        Waiting::RunInline,
    )
    .map_err(|e| format!("the checkout stopped: {e}"))?;
    let Drive::NeedsInput { session_id, state } = stopped else {
        return Err(format!(
            "the checkout did not wait for the buyer: {stopped:?}"
        ));
    };
    say!(
        out,
        "   {:STEP$} a new checkout waits at {state}; 49 hours pass (CheckoutTimeToLive 2880 min)",
        "expired session"
    );
    demo.clock.advance(chrono::Duration::hours(49));
    let refused = demo.engine.execute(
        &demo.buyer,
        Command::UpdateSession {
            session_id: session_id.to_string(),
            next_state: "Checkout Summary".into(),
            exp_current_state: Some(state.as_str().into()),
        },
    );
    match refused {
        Err(e) if e.http_status() == 403 => say!(
            out,
            "   {:STEP$} {} {}: {e}",
            "next step refused",
            e.code(),
            e.http_status()
        ),
        other => return Err(format!("the expired session was not refused: {other:?}")),
    }
    let restarted = demo.expect_ok(
        "checkoutSessionAction",
        &json!({"cartId": cart.to_string()}),
        Some("requestId"),
    )?;
    say!(
        out,
        "   {:STEP$} the expired session is archived; a new one ({restarted}) starts at Start",
        "checkoutSessionAction"
    );
    Ok(())
}
