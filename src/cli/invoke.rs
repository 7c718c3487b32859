//! `cartflow invoke`: one action call (or a bulk of them) against a data directory or
//! database. Each accepted call commits to the database as it is made.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use cartflow::engine::OperationReport;
use cartflow::ids::RandomIds;
use cartflow::machine::{Action, PAYMENT_OPERATION, StepOutcome};
use cartflow::model::{KeyPrefix, SfId};
use cartflow::{Engine, Store};
use serde_json::Value;

use crate::cli::{datadir, template};
use crate::cli::{element_json, print_stdout};

/// What to invoke, as the command line gave it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The action's API name.
    pub action: String,
    /// One input object or a JSON array of them, as text.
    pub input: String,
    /// The acting user's ID.
    pub actor: String,
    /// The data directory or database URL (see [`datadir::open_store`]).
    pub data: String,
    /// Run background operations until idle afterwards.
    pub wait: bool,
    /// The integrations file (`--integrations`); see [`datadir::provider_file`].
    pub integrations: Option<PathBuf>,
    /// The template file (`--template`); see [`template::table`].
    pub template: Option<PathBuf>,
}

/// Exit status when every element succeeded.
const ALL_SUCCEEDED: u8 = 0;
/// Exit status when any element failed.
const SOME_FAILED: u8 = 1;
/// Exit status for a usage or data error.
const USAGE: u8 = 2;

/// Runs the request; prints the element(s) on stdout and problems on stderr.
pub fn run(request: &Request) -> ExitCode {
    match invoke(request) {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            errln!("cartflow invoke: {message}");
            ExitCode::from(USAGE)
        }
    }
}

/// The inputs of the call: one object, or the bulk shape (an array).
enum Inputs {
    One(Value),
    Bulk(Vec<Value>),
}

fn parse_inputs(text: &str) -> Result<Inputs, String> {
    match serde_json::from_str::<Value>(text) {
        Err(e) => Err(format!("--input is not valid JSON: {e}")),
        Ok(Value::Array(items)) if items.is_empty() => {
            Err("--input is an empty array: give at least one input object".into())
        }
        Ok(Value::Array(items)) => Ok(Inputs::Bulk(items)),
        // Anything else is one input; the engine answers INVALID_INPUT for a non-object.
        Ok(one) => Ok(Inputs::One(one)),
    }
}

/// Every name `cartflow invoke` takes: the ten core actions, the spelling one help page
/// uses for the state update, and the payment step.
fn action_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = Action::ALL.iter().map(|a| a.api_name()).collect();
    names.push(PAYMENT_OPERATION);
    names
}

/// Refuses a name that is no action, naming the nearest one.
fn check_action(name: &str) -> Result<(), String> {
    if Action::from_api_name(name).is_some() || name == PAYMENT_OPERATION {
        return Ok(());
    }
    let names = action_names();
    let folded = name.to_lowercase();
    let nearest = names
        .iter()
        .map(|candidate| {
            (
                strsim::levenshtein(&folded, &candidate.to_lowercase()),
                candidate,
            )
        })
        .min()
        .filter(|(distance, _)| *distance <= name.len().max(4) / 2);
    let guess = nearest.map_or(String::new(), |(_, candidate)| {
        format!("; did you mean {candidate}?")
    });
    Err(format!(
        "no action named {name:?}{guess} (the actions: {})",
        names.join(", ")
    ))
}

/// The acting user's Id, refused when it is no User Id at all.
fn parse_actor(raw: &str) -> Result<SfId, String> {
    SfId::parse_kind(raw, KeyPrefix::User)
        .map_err(|e| format!("--as {raw:?} is not a User Id: {e}"))
}

fn invoke(request: &Request) -> Result<u8, String> {
    // Everything the command line alone decides is checked before the data is opened: a
    // usage error touches nothing.
    let inputs = parse_inputs(&request.input)?;
    check_action(&request.action)?;
    let actor = parse_actor(&request.actor)?;
    let providers = datadir::provider_file(&request.data, request.integrations.as_deref())
        .map_err(|e| e.to_string())?;
    let table = template::table(Some(&request.data), request.template.as_deref())
        .map_err(|e| e.to_string())?;
    let opened = datadir::open_store(&request.data).map_err(|e| e.to_string())?;
    if opened
        .store
        .user(&actor)
        .map_err(|e| e.to_string())?
        .is_none()
    {
        return Err(format!(
            "{} holds no user {actor} (--as): give the Id of one of its User records",
            opened.location
        ));
    }
    let integrations = opened
        .integrations(providers.as_ref())
        .map_err(|e| e.to_string())?;
    opened.check_template(&integrations, table.template())?;
    let engine = Engine::new(Arc::clone(&opened.store))
        .with_table(table)
        .with_ids(Arc::new(RandomIds))
        .with_integrations(integrations);
    datadir::warn_missing_providers("invoke", &engine);

    let (results, bulk) = match inputs {
        Inputs::One(input) => (
            vec![engine.invoke(&request.action, &input, &request.actor)],
            false,
        ),
        Inputs::Bulk(items) => (
            items
                .iter()
                .map(|input| engine.invoke(&request.action, input, &request.actor))
                .collect(),
            true,
        ),
    };
    let worker = if request.wait {
        run_worker(&engine, &*opened.store)
    } else {
        Ok(())
    };

    let elements: Vec<Value> = results.iter().map(element_json).collect();
    let printed = if bulk {
        Value::Array(elements)
    } else {
        elements.into_iter().next().unwrap_or(Value::Null)
    };
    let mut text = serde_json::to_string_pretty(&printed).map_err(|e| e.to_string())?;
    text.push('\n');
    if print_stdout(&text) != ExitCode::SUCCESS {
        return Ok(USAGE);
    }
    worker?;
    Ok(if results.iter().all(|r| r.is_success) {
        ALL_SUCCEEDED
    } else {
        SOME_FAILED
    })
}

/// Runs background operations until none is New, reporting each on stderr.
fn run_worker(engine: &Engine, store: &dyn Store) -> Result<(), String> {
    let mut ran = 0;
    loop {
        match engine.run_next_operation() {
            Ok(Some(report)) => {
                ran += 1;
                errln!("{}", describe(store, &report));
            }
            Ok(None) => break,
            Err(e) => return Err(format!("the worker stopped: {e}")),
        }
    }
    if ran == 0 {
        errln!("worker: no background operation was waiting");
    }
    Ok(())
}

fn describe(store: &dyn Store, report: &OperationReport) -> String {
    let operation = store.operation(&report.operation_id).ok().flatten();
    let name = operation
        .as_ref()
        .map_or("operation", |op| op.name.as_str());
    let status = operation
        .as_ref()
        .map_or("unknown", |op| op.status.as_str());
    let mut line = format!("worker: {name} {} ended {status}", report.operation_id);
    let session = operation
        .as_ref()
        .and_then(|op| store.session(&op.checkout_session_id).ok().flatten());
    if let Some(session) = session {
        line.push_str(&format!(
            "; session {} State {}",
            session.id,
            session.state.as_ref().map_or("(empty)", |s| s.as_str())
        ));
    }
    match &report.outcome {
        StepOutcome::Passed => {}
        StepOutcome::Failed(messages) => {
            for message in messages {
                line.push_str(&format!("\n  {:?}: {}", message.level, message.message));
            }
        }
        StepOutcome::SystemFailure(reason) => line.push_str(&format!("\n  SystemError: {reason}")),
    }
    if !report.applied {
        line.push_str(" (report discarded: the operation had moved on)");
    }
    line
}
