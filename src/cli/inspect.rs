//! `cartflow inspect`: a cart's checkout as the store holds it — the cart, its sessions,
//! operations, validation outputs, order and history.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use cartflow::machine::Template;
use cartflow::model::{SessionState, SfId};
use cartflow::{Store, StoreError};
use serde_json::{Value, json};

use crate::cli::datadir::open_store;
use crate::cli::{print_stdout, template};

/// What to inspect.
#[derive(Debug, Clone)]
pub struct Request {
    /// The cart's ID as given.
    pub cart: String,
    /// The `--data` value.
    pub data: String,
    /// Print JSON instead of text.
    pub json: bool,
    /// The template file (`--template`); see [`template::table`].
    pub template: Option<PathBuf>,
}

/// Prints the cart's checkout; exit 2 for a usage or data error, 1 when no such cart.
pub fn run(request: &Request) -> ExitCode {
    let cart: SfId = match request.cart.parse() {
        Ok(id) => id,
        Err(e) => {
            errln!("cartflow inspect: --cart: {e}");
            return ExitCode::from(2);
        }
    };
    let table = match template::table(Some(&request.data), request.template.as_deref()) {
        Ok(table) => table,
        Err(e) => {
            errln!("cartflow inspect: {e}");
            return ExitCode::from(2);
        }
    };
    let opened = match open_store(&request.data) {
        Ok(opened) => opened,
        Err(e) => {
            errln!("cartflow inspect: {e}");
            return ExitCode::from(2);
        }
    };
    match gather(opened.store.as_ref(), &cart, table.template()) {
        Ok(None) => {
            errln!("cartflow inspect: no cart {cart} in {}", opened.location);
            ExitCode::from(1)
        }
        Ok(Some(report)) => {
            let text = if request.json {
                let mut text = serde_json::to_string_pretty(&report).unwrap_or_default();
                text.push('\n');
                text
            } else {
                render(&report)
            };
            print_stdout(&text)
        }
        Err(e) => {
            errln!("cartflow inspect: {}: {e}", opened.location);
            ExitCode::from(2)
        }
    }
}

/// Everything the store holds about one cart's checkout, as JSON, with the template it is
/// read against: its name, and the active sessions whose State is no step of it (a checkout
/// begun under another template, which this one cannot carry on).
fn gather(
    store: &dyn Store,
    cart_id: &SfId,
    template: &Template,
) -> Result<Option<Value>, StoreError> {
    let Some(cart) = store.cart(cart_id)? else {
        return Ok(None);
    };
    let sessions = store.sessions_of(cart_id)?;
    let mut orders = Vec::new();
    for id in sessions.iter().filter_map(|s| s.order_id) {
        orders.extend(store.order(&id)?);
    }
    let strangers: Vec<String> = sessions
        .iter()
        .filter(|s| !s.is_archived)
        .filter_map(|s| s.state)
        .filter(|&state| state != SessionState::Error && template.step(state).is_none())
        .map(|state| state.as_str().to_owned())
        .collect();
    Ok(Some(json!({
        "template": {"name": template.name, "statesNotInTemplate": strangers},
        // The payment token is write-only here too: whether one is on file, never the token.
        "cart": cart.shown(),
        "items": store.cart_items(cart_id)?,
        "sessions": sessions,
        "operations": store.operations_of(cart_id)?,
        "validationOutputs": store.validation_outputs(cart_id)?,
        "orders": orders,
        "history": store.history(cart_id)?,
    })))
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        // An event such as {"Action": "priceCart"}: its action's name.
        Value::Object(fields) if fields.len() == 1 => {
            fields.values().next().map(text).unwrap_or_default()
        }
        other => other.to_string(),
    }
}

/// The report as text for a person.
fn render(report: &Value) -> String {
    let mut out = String::new();
    let cart = &report["cart"];
    let _ = writeln!(
        out,
        "cart {} ({}), store {}, account {}, owner {}, total {}",
        text(&cart["Id"]),
        text(&cart["Status"]),
        text(&cart["WebStoreId"]),
        text(&cart["AccountId"]),
        text(&cart["OwnerId"]),
        text(&cart["GrandTotalAmount"]),
    );
    let list = |out: &mut String, title: &str, key: &str, line: &dyn Fn(&Value) -> String| {
        let rows = report[key].as_array().cloned().unwrap_or_default();
        let _ = writeln!(out, "{title} ({})", rows.len());
        for row in &rows {
            let _ = writeln!(out, "  {}", line(row));
        }
    };
    list(&mut out, "lines", "items", &|i| {
        // The charge line has no SKU: it is the delivery charge.
        let what = match i["Type"].as_str() {
            Some("Charge") => "(delivery charge)".to_owned(),
            _ => text(&i["Sku"]),
        };
        format!(
            "{} {what} x{} total {} tax {}",
            text(&i["Id"]),
            text(&i["Quantity"]),
            text(&i["TotalPrice"]),
            text(&i["TaxAmount"])
        )
    });
    list(&mut out, "sessions", "sessions", &|s| {
        format!(
            "{} State {} NextState {} IsProcessing {} IsError {} IsArchived {} Order {}",
            text(&s["Id"]),
            text(&s["State"]),
            text(&s["NextState"]),
            text(&s["IsProcessing"]),
            text(&s["IsError"]),
            text(&s["IsArchived"]),
            text(&s["OrderId"])
        )
    });
    list(&mut out, "operations", "operations", &|o| {
        format!(
            "{} {} {} attempt {} {}",
            text(&o["Id"]),
            text(&o["Name"]),
            text(&o["Status"]),
            text(&o["RetryCount"]),
            text(&o["Error"])
        )
    });
    list(&mut out, "validation outputs", "validationOutputs", &|v| {
        format!(
            "{} {}: {}",
            text(&v["Level"]),
            text(&v["Type"]),
            text(&v["Message"])
        )
    });
    list(&mut out, "orders", "orders", &|o| {
        format!(
            "{} {} total {} summary {}",
            text(&o["Id"]),
            text(&o["Status"]),
            text(&o["GrandTotalAmount"]),
            text(&o["OrderSummaryId"])
        )
    });
    list(&mut out, "history", "history", &|h| {
        format!(
            "{} {} {} {}: {} -> {}",
            text(&h["At"]),
            text(&h["Actor"]),
            text(&h["Event"]),
            text(&h["Record"]),
            text(&h["From"]),
            text(&h["To"])
        )
    });
    let template = &report["template"];
    let _ = writeln!(out, "template {}", template["name"]);
    for state in template["statesNotInTemplate"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "  an active session is at {state}, which is no step of this template"
        );
    }
    out
}
