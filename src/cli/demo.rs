//! `cartflow demo`: the Check Cart Inventory step told as a story, on the sample data in a
//! SQLite database, `<dir>/cartflow-demo.db`. Every claim it prints is checked as it goes: a
//! step that does not behave as the story says stops the demo with exit status 1.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use cartflow::ids::SequentialIds;
use cartflow::integrations::Integrations;
use cartflow::machine::Command;
use cartflow::model::{CartCheckoutSession, SfId};
use cartflow::sample::{self, SampleCart};
use cartflow::store::{Durability, SqliteStore};
use cartflow::{ActionResult, Engine, Store};
use serde_json::{Value, json};

use crate::cli::datadir::remove_database;
use crate::cli::element_json;

macro_rules! say {
    ($out:expr) => { $out.push('\n') };
    ($out:expr, $($arg:tt)*) => {{ $out.push_str(&format!($($arg)*)); $out.push('\n'); }};
}

/// The demo's database file name.
pub const DEMO_DATABASE: &str = "cartflow-demo.db";

/// Runs the demo in `dir` and prints it; exit status 0 when the story held, 1 when it
/// broke, 2 when the database cannot be written.
pub fn run(dir: &Path) -> ExitCode {
    if !dir.is_dir() {
        eprintln!(
            "cartflow demo: {} does not exist or is not a directory",
            dir.display()
        );
        return ExitCode::from(2);
    }
    let path = dir
        .canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .join(DEMO_DATABASE);
    // Each run starts from the sample world, so a rerun tells the same story.
    remove_database(&path);
    let demo = match Demo::new(&path) {
        Ok(demo) => demo,
        Err(message) => {
            eprintln!("cartflow demo: {message}");
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
            eprintln!("cartflow demo: the story broke: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The width of the step column.
const STEP: usize = 34;

struct Demo {
    engine: Engine,
    store: Arc<SqliteStore>,
    buyer: String,
}

impl Demo {
    /// A new database at `path` holding the sample world; stock checks read its stock table.
    fn new(path: &Path) -> Result<Demo, String> {
        let cannot = |e: cartflow::StoreError| format!("cannot write {}: {e}", path.display());
        let store = Arc::new(SqliteStore::open(path, Durability::Normal).map_err(cannot)?);
        store.import(&sample::dataset()).map_err(cannot)?;
        let integrations = Integrations::with_stock_tables(&store.stock().map_err(cannot)?);
        let engine = Engine::new(Arc::clone(&store) as Arc<dyn Store>)
            .with_ids(Arc::new(SequentialIds::default()))
            .with_integrations(integrations);
        Ok(Demo {
            engine,
            store,
            buyer: sample::buyer_id().to_string(),
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
        "cartflow demo: the Check Cart Inventory step, on SQLite ({DEMO_DATABASE})"
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
        done.state.map_or("(empty)", |s| s.as_str()),
        done.is_processing,
        done.is_error
    );
    if done.state.map(|s| s.as_str()) != Some("Confirm Price") {
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
        failed.state.map_or("(empty)", |s| s.as_str()),
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
        "3. Refused: the seven documented errors of checkCartInventoryAction (domain.md 2.1)"
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
        &sample::stranger_id().to_string(),
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
