//! Templates as files: the example templates are the templates the library builds, every rule
//! a template can break is refused with a message naming the step and the rule, and the
//! commands run the template they are given (`--template`, else a data directory's
//! `template.json`, else the standard one), refusing a bad one before they touch the store.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cartflow::machine::{
    Action, CustomAction, Step, StepInput, StepKind, StepProblem, StepRef, TableError, Template,
    TemplateFileError, TransitionTable,
};
use cartflow::model::{KeyPrefix, SessionState, SfId};
use cartflow::sample::{self, SampleCart};
use cartflow::store::DataSet;
use serde_json::{Value, json};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_cartflow");

/// The longest a server may take to say where it listens, or to answer one call.
const SERVER_BOUND: Duration = Duration::from_secs(30);

/// The 37-character State the documentation's example refuses.
const TOO_LONG: &str = "This State Name Is Longer Than Thirty";

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/templates")
        .join(name)
}

fn example_text(name: &str) -> String {
    fs::read_to_string(example(name)).unwrap()
}

/// The standard template's file as JSON, to change one thing in.
fn standard_value() -> Value {
    serde_json::from_str(&example_text("standard.json")).unwrap()
}

/// The step of `template` (a file's JSON) whose State is `state`.
fn step<'a>(template: &'a mut Value, state: &str) -> &'a mut Value {
    template["steps"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["state"] == state)
        .unwrap_or_else(|| panic!("no step {state}"))
}

fn steps(template: &mut Value) -> &mut Vec<Value> {
    template["steps"].as_array_mut().unwrap()
}

/// Why the standard file, changed by `change`, is refused.
fn refusal(change: impl FnOnce(&mut Value)) -> TemplateFileError {
    let mut template = standard_value();
    change(&mut template);
    refusal_of(&template.to_string())
}

fn refusal_of(text: &str) -> TemplateFileError {
    match TransitionTable::from_json(text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e,
    }
}

fn at(position: usize, state: Option<&str>) -> StepRef {
    StepRef {
        position,
        state: state.map(str::to_owned),
    }
}

/// The table refusal of a step, checked to name `position` and `state`.
fn table_refusal(error: TemplateFileError, position: usize, state: &str) -> (TableError, String) {
    let message = error.to_string();
    match error {
        TemplateFileError::Table {
            step: Some(step),
            error,
        } => {
            assert_eq!(step, at(position, Some(state)), "{message}");
            assert!(
                message.starts_with(&format!("step {position} {state:?}: ")),
                "{message}"
            );
            (error, message)
        }
        other => panic!("not a table refusal of a step: {other:?}"),
    }
}

/// The file-format refusal of a step, checked to name `step`.
fn step_refusal(error: TemplateFileError, expected: StepRef) -> (StepProblem, String) {
    let message = error.to_string();
    match error {
        TemplateFileError::Step { step, problem } => {
            assert_eq!(step, expected, "{message}");
            assert!(message.starts_with(&format!("{expected}: ")), "{message}");
            (problem, message)
        }
        other => panic!("not a refusal of a step: {other:?}"),
    }
}

fn credit_check_template() -> Template {
    let mut template = Template::standard();
    template.name = "credit-check".to_owned();
    let credit = SessionState::new("Credit Check").unwrap();
    let action = CustomAction::new("CreditCheck").unwrap();
    assert!(template.insert_step(
        SessionState::Taxes,
        Step::custom(credit, action, "CheckCredit", "credit-limit").consuming(&[
            StepInput::Lines,
            StepInput::DeliveryAddress,
            StepInput::DeliveryMethod,
        ]),
    ));
    let approval = SessionState::new("Approval").unwrap();
    assert!(template.insert_step(credit, Step::new(approval, StepKind::Screen)));
    template
}

// ---------------------------------------------------------------------------------------
// The example files

#[test]
fn the_standard_file_is_the_standard_template_as_to_json_writes_it() {
    let text = example_text("standard.json");
    assert_eq!(Template::from_json(&text).unwrap(), Template::standard());
    assert_eq!(text, Template::standard().to_json());
    let table = TransitionTable::from_json(&text).unwrap();
    assert_eq!(
        cartflow::diagram::dot(&table),
        cartflow::diagram::dot(&TransitionTable::standard())
    );
}

#[test]
fn the_file_without_promotions_is_the_older_template() {
    let text = example_text("without-promotions.json");
    assert_eq!(
        Template::from_json(&text).unwrap(),
        Template::without_promotions()
    );
    assert_eq!(text, Template::without_promotions().to_json());
    assert!(TransitionTable::from_json(&text).is_ok());
}

#[test]
fn the_credit_check_file_adds_a_custom_step_and_an_approval_screen_after_taxes() {
    let text = example_text("credit-check.json");
    let template = Template::from_json(&text).unwrap();
    assert_eq!(template, credit_check_template());
    assert_eq!(text, template.to_json());
    let table = TransitionTable::from_json(&text).unwrap();
    let template = table.template();
    let state = |name: &str| SessionState::new(name).unwrap();
    let credit = template.step(state("Credit Check")).unwrap();
    assert_eq!(
        credit.kind,
        StepKind::Custom(CustomAction::new("CreditCheck").unwrap())
    );
    assert_eq!(credit.provider.as_deref(), Some("credit-limit"));
    assert_eq!(credit.transition.as_deref(), Some("CheckCredit"));
    assert_eq!(credit.next, Some(state("Approval")));
    let approval = template.step(state("Approval")).unwrap();
    assert_eq!(approval.kind, StepKind::Screen);
    assert_eq!(approval.next, Some(SessionState::PaymentAndBillingAddress));
    assert_eq!(
        template.step(SessionState::Taxes).unwrap().next,
        Some(state("Credit Check"))
    );
}

#[test]
fn the_standard_steps_consume_what_their_actions_read_and_screens_consume_nothing() {
    use StepInput as I;
    let template = Template::standard();
    let consumes = |state: SessionState| -> Vec<StepInput> {
        template
            .step(state)
            .unwrap()
            .consumes
            .iter()
            .copied()
            .collect()
    };
    assert_eq!(consumes(SessionState::Inventory), [I::Lines]);
    assert_eq!(consumes(SessionState::ConfirmPrice), [I::Lines]);
    assert_eq!(consumes(SessionState::CalculatePromotions), [I::Lines]);
    assert_eq!(
        consumes(SessionState::ShippingCost),
        [I::Lines, I::DeliveryAddress]
    );
    assert_eq!(
        consumes(SessionState::Taxes),
        [I::Lines, I::DeliveryAddress, I::DeliveryMethod]
    );
    assert_eq!(consumes(SessionState::CartToOrder), StepInput::ALL);
    assert_eq!(consumes(SessionState::AuthorizePayment), [I::Payment]);
    assert_eq!(consumes(SessionState::ActivateOrder), []);
    for step in &template.steps {
        if !step.kind.computes() {
            assert!(step.consumes.is_empty(), "{}", step.state);
        }
    }
    // A step built in code consumes nothing until it says so.
    let step = Step::new(SessionState::Inventory, StepKind::Screen);
    assert!(step.consumes.is_empty());
}

// ---------------------------------------------------------------------------------------
// Refusals of the file format

#[test]
fn malformed_json_is_refused_with_its_line_and_column() {
    let text =
        "{\"name\": \"broken\",\n \"steps\": [\n  {\"state\": \"Start\" \"kind\": \"entry\"}\n]}";
    let error = refusal_of(text);
    assert!(
        matches!(
            &error,
            TemplateFileError::Syntax { line: 3, column, .. } if *column == 21
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "line 3, column 21: not valid JSON: expected `,` or `}`"
    );
    assert!(matches!(
        refusal_of(""),
        TemplateFileError::Syntax { line: 1, .. }
    ));
}

#[test]
fn json_that_is_not_a_template_is_refused_with_its_line_and_column() {
    let unknown = refusal_of("{\"name\": \"x\",\n \"title\": \"y\", \"steps\": []}");
    assert!(
        matches!(&unknown, TemplateFileError::Shape { line: 2, message, .. }
            if message.contains("unknown field `title`")),
        "{unknown:?}"
    );
    let missing = refusal_of("{\"name\": \"x\"}");
    assert!(
        matches!(&missing, TemplateFileError::Shape { message, .. }
            if message.contains("missing field `steps`")),
        "{missing:?}"
    );
    assert!(matches!(
        refusal_of("[1, 2]"),
        TemplateFileError::Shape { line: 1, .. }
    ));
}

#[test]
fn a_blank_template_name_is_refused() {
    assert_eq!(
        refusal(|t| t["name"] = json!("  ")),
        TemplateFileError::BlankName
    );
}

#[test]
fn a_step_that_is_not_an_object_is_refused_naming_its_position() {
    let error = refusal(|t| steps(t).insert(1, json!("Shipping Address")));
    let (problem, message) = step_refusal(error, at(2, None));
    assert_eq!(problem, StepProblem::NotAnObject("a string"));
    assert_eq!(message, "step 2: a step is a JSON object, not a string");
}

#[test]
fn an_unknown_or_missing_field_in_a_step_is_refused_naming_the_step() {
    let error = refusal(|t| step(t, "Taxes")["nxt"] = json!("Payment"));
    let (problem, message) = step_refusal(error, at(8, Some("Taxes")));
    assert!(matches!(problem, StepProblem::Fields(_)));
    assert!(message.contains("unknown field `nxt`"), "{message}");

    let error = refusal(|t| {
        step(t, "Taxes").as_object_mut().unwrap().remove("kind");
    });
    let (_, message) = step_refusal(error, at(8, Some("Taxes")));
    assert!(message.contains("missing field `kind`"), "{message}");
}

#[test]
fn a_state_over_thirty_characters_is_refused_naming_the_step_by_position() {
    let error = refusal(|t| step(t, "Shipping Address")["state"] = json!(TOO_LONG));
    let (problem, message) = step_refusal(error, at(2, None));
    assert!(matches!(problem, StepProblem::BadState(_)));
    assert_eq!(
        message,
        format!("step 2: its State: {TOO_LONG:?} is 37 characters long; a State has at most 30")
    );
    // A blank State and one with a line break break the same rule.
    for bad in ["", "Credit\nCheck", " Credit Check"] {
        let error = refusal(|t| step(t, "Shipping Address")["state"] = json!(bad));
        assert!(
            matches!(step_refusal(error, at(2, None)).0, StepProblem::BadState(_)),
            "{bad:?}"
        );
    }
}

#[test]
fn a_next_that_is_no_state_name_is_refused_naming_the_step() {
    let error = refusal(|t| step(t, "Shipping Address")["next"] = json!(TOO_LONG));
    let (problem, message) = step_refusal(error, at(2, Some("Shipping Address")));
    assert!(matches!(problem, StepProblem::BadNext(_)));
    assert!(message.contains("its next: "), "{message}");
}

#[test]
fn an_unknown_kind_is_refused_naming_the_step() {
    let error = refusal(|t| step(t, "Delivery Method")["kind"] = json!("form"));
    let (problem, message) = step_refusal(error, at(7, Some("Delivery Method")));
    assert_eq!(problem, StepProblem::UnknownKind("form".into()));
    assert_eq!(
        message,
        "step 7 \"Delivery Method\": kind \"form\" is none of: entry, screen, async, payment, \
         custom, terminal"
    );
}

#[test]
fn an_async_or_custom_step_without_an_action_is_refused() {
    let error = refusal(|t| {
        step(t, "Inventory")
            .as_object_mut()
            .unwrap()
            .remove("action");
    });
    let (problem, _) = step_refusal(error, at(3, Some("Inventory")));
    assert_eq!(problem, StepProblem::NoAction("async"));
    let error = refusal(|t| {
        let inventory = step(t, "Inventory");
        inventory["kind"] = json!("custom");
        inventory.as_object_mut().unwrap().remove("action");
    });
    let (problem, _) = step_refusal(error, at(3, Some("Inventory")));
    assert_eq!(problem, StepProblem::NoAction("custom"));
}

#[test]
fn an_action_on_a_step_that_runs_none_is_refused() {
    for (state, kind, position) in [
        ("Start", "entry", 1),
        ("Delivery Method", "screen", 7),
        ("Authorize Payment", "payment", 12),
        ("Complete", "terminal", 15),
    ] {
        let error = refusal(|t| step(t, state)["action"] = json!("priceCart"));
        let (problem, _) = step_refusal(error, at(position, Some(state)));
        assert_eq!(problem, StepProblem::ActionNotTaken(kind), "{state}");
    }
}

#[test]
fn an_unknown_action_is_refused_naming_the_step_and_the_actions() {
    let error = refusal(|t| step(t, "Inventory")["action"] = json!("checkInventory"));
    let (problem, message) = step_refusal(error, at(3, Some("Inventory")));
    assert_eq!(problem, StepProblem::UnknownAction("checkInventory".into()));
    assert!(
        message.ends_with(
            "an async step runs one of: checkCartInventoryAction, priceCart, \
             calcCartPromotionsAction, calcCartShipmentAction, calcCartTaxesAction, \
             cartToOrderAction, activateOrderAction"
        ),
        "{message}"
    );
}

#[test]
fn a_custom_action_that_is_no_identifier_is_refused() {
    let error = refusal(|t| {
        let credit = json!({"state": "Credit Check", "kind": "custom", "action": "Credit Check",
            "provider": "credit-limit", "transition": "CheckCredit", "next": "Inventory"});
        steps(t).insert(2, credit);
        step(t, "Shipping Address")["next"] = json!("Credit Check");
    });
    let (problem, _) = step_refusal(error, at(3, Some("Credit Check")));
    assert!(matches!(problem, StepProblem::BadCustomAction(_)));
}

#[test]
fn an_unknown_input_is_refused() {
    let error = refusal(|t| step(t, "Inventory")["consumes"] = json!(["lines", "cart"]));
    let (problem, message) = step_refusal(error, at(3, Some("Inventory")));
    assert_eq!(problem, StepProblem::UnknownInput("cart".into()));
    assert!(
        message.contains("lines, delivery_address, delivery_method, payment"),
        "{message}"
    );
}

#[test]
fn an_input_listed_twice_is_refused() {
    let error = refusal(|t| step(t, "Inventory")["consumes"] = json!(["lines", "lines"]));
    let (problem, _) = step_refusal(error, at(3, Some("Inventory")));
    assert_eq!(problem, StepProblem::RepeatedInput(StepInput::Lines));
}

// ---------------------------------------------------------------------------------------
// Refusals of the table's rules, each naming the step

#[test]
fn an_unknown_target_is_refused_naming_the_step() {
    let error = refusal(|t| step(t, "Shipping Address")["next"] = json!("Nowhere"));
    let (error, message) = table_refusal(error, 2, "Shipping Address");
    assert!(matches!(error, TableError::UnknownTarget { .. }));
    assert_eq!(
        message,
        "step 2 \"Shipping Address\": its next, \"Nowhere\", is no step of the template"
    );
}

#[test]
fn an_unreachable_step_is_refused_naming_it() {
    let error = refusal(|t| step(t, "Shipping Address")["next"] = json!("Confirm Price"));
    let (error, message) = table_refusal(error, 3, "Inventory");
    assert_eq!(error, TableError::Unreachable("Inventory".into()));
    assert!(message.ends_with("no path from the entry step reaches it"));
}

#[test]
fn a_duplicate_state_is_refused_naming_the_second_step() {
    let error = refusal(|t| {
        steps(t).insert(
            2,
            json!({"state": "Inventory", "kind": "screen", "next": "Inventory"}),
        );
    });
    let (error, message) = table_refusal(error, 4, "Inventory");
    assert_eq!(error, TableError::Duplicate("Inventory".into()));
    assert!(
        message.contains("already taken by an earlier step"),
        "{message}"
    );
}

#[test]
fn two_steps_running_one_action_are_refused() {
    let error = refusal(|t| step(t, "Confirm Price")["action"] = json!("checkCartInventoryAction"));
    let (error, _) = table_refusal(error, 4, "Confirm Price");
    assert_eq!(
        error,
        TableError::Duplicate("checkCartInventoryAction".into())
    );
}

#[test]
fn two_steps_giving_one_transition_name_are_refused() {
    let error = refusal(|t| step(t, "Taxes")["transition"] = json!("PriceCart"));
    let (error, _) = table_refusal(error, 8, "Taxes");
    assert_eq!(error, TableError::Duplicate("PriceCart".into()));
}

#[test]
fn error_as_a_step_is_refused() {
    let error = refusal(|t| {
        steps(t).insert(
            2,
            json!({"state": "Error", "kind": "screen", "next": "Inventory"}),
        );
        step(t, "Shipping Address")["next"] = json!("Error");
    });
    let (error, message) = table_refusal(error, 3, "Error");
    assert_eq!(error, TableError::ErrorAsStep);
    assert!(message.ends_with("Error is the failure state and cannot be a step"));
}

#[test]
fn a_custom_step_without_a_provider_is_refused_and_only_a_custom_step_names_one() {
    let error = refusal(|t| {
        let credit = json!({"state": "Credit Check", "kind": "custom", "action": "CreditCheck",
            "transition": "CheckCredit", "next": "Inventory"});
        steps(t).insert(2, credit);
        step(t, "Shipping Address")["next"] = json!("Credit Check");
    });
    let (error, message) = table_refusal(error, 3, "Credit Check");
    assert!(matches!(error, TableError::BadProvider(..)));
    assert_eq!(
        message,
        "step 3 \"Credit Check\": is a custom step but names no provider"
    );
    let error = refusal(|t| step(t, "Inventory")["provider"] = json!("stock"));
    let (error, _) = table_refusal(error, 3, "Inventory");
    assert!(matches!(error, TableError::BadProvider(..)));
}

#[test]
fn a_custom_step_naming_a_blank_provider_is_refused() {
    let error = refusal(|t| {
        let credit = json!({"state": "Credit Check", "kind": "custom", "action": "CreditCheck",
            "transition": "CheckCredit", "provider": " \t", "next": "Inventory"});
        steps(t).insert(2, credit);
        step(t, "Shipping Address")["next"] = json!("Credit Check");
    });
    let (error, message) = table_refusal(error, 3, "Credit Check");
    assert!(matches!(error, TableError::BadProvider(..)));
    assert_eq!(message, "step 3 \"Credit Check\": names a blank provider");
}

#[test]
fn a_template_needs_exactly_one_entry_step() {
    let error = refusal(|t| step(t, "Shipping Address")["kind"] = json!("entry"));
    let (error, message) = table_refusal(error, 2, "Shipping Address");
    assert!(matches!(error, TableError::Entry(_, 2)));
    assert!(message.contains("is a second entry step"), "{message}");
    // With none there is no step to blame: the template is named instead.
    let none = refusal(|t| step(t, "Start")["kind"] = json!("screen"));
    assert!(
        matches!(
            &none,
            TemplateFileError::Table {
                step: None,
                error: TableError::Entry(_, 0)
            }
        ),
        "{none:?}"
    );
    assert_eq!(
        none.to_string(),
        "template \"standard\" needs exactly one entry step, it has 0"
    );
}

#[test]
fn the_terminal_step_has_no_next_and_every_other_step_has_one() {
    let error = refusal(|t| {
        step(t, "Complete")["next"] = json!("Start");
    });
    let (error, _) = table_refusal(error, 15, "Complete");
    assert_eq!(
        error,
        TableError::BadNext("Complete".into(), "is terminal but has a next step")
    );
    let error = refusal(|t| {
        step(t, "Delivery Method")
            .as_object_mut()
            .unwrap()
            .remove("next");
    });
    let (error, message) = table_refusal(error, 7, "Delivery Method");
    assert_eq!(
        error,
        TableError::BadNext("Delivery Method".into(), "has no next step")
    );
    assert_eq!(message, "step 7 \"Delivery Method\": has no next step");
    // The terminal step may have any name.
    let mut renamed = standard_value();
    step(&mut renamed, "Order Confirmation")["next"] = json!("Done");
    step(&mut renamed, "Complete")["state"] = json!("Done");
    let table = TransitionTable::from_json(&renamed.to_string()).unwrap();
    assert!(table.closes_into("Done"));
}

#[test]
fn transition_names_are_given_where_a_step_fires_its_own_event_and_are_identifiers() {
    let error = refusal(|t| {
        step(t, "Inventory")
            .as_object_mut()
            .unwrap()
            .remove("transition");
    });
    assert!(matches!(
        table_refusal(error, 3, "Inventory").0,
        TableError::BadTransitionName(..)
    ));
    let error = refusal(|t| step(t, "Delivery Method")["transition"] = json!("Choose"));
    assert!(matches!(
        table_refusal(error, 7, "Delivery Method").0,
        TableError::BadTransitionName(..)
    ));
    let error = refusal(|t| step(t, "Inventory")["transition"] = json!("Check Inventory"));
    assert!(matches!(
        table_refusal(error, 3, "Inventory").0,
        TableError::BadTransitionName(..)
    ));
}

#[test]
fn a_core_action_that_is_not_async_cannot_be_an_async_step() {
    let error = refusal(|t| step(t, "Inventory")["action"] = json!("cancelCartAsyncOperation"));
    let (error, message) = table_refusal(error, 3, "Inventory");
    assert_eq!(
        error,
        TableError::NotAsync(Action::CancelCartAsyncOperation)
    );
    assert!(message.contains("is not an async cart action"), "{message}");
}

#[test]
fn a_step_that_computes_nothing_consumes_nothing() {
    for (state, position) in [("Start", 1), ("Delivery Method", 7), ("Complete", 15)] {
        let error = refusal(|t| step(t, state)["consumes"] = json!(["lines"]));
        let (error, message) = table_refusal(error, position, state);
        assert_eq!(error, TableError::NotAConsumer(state.into()));
        assert!(message.ends_with("computes nothing, so it consumes no input (only async, payment and custom steps do)"), "{message}");
    }
}

#[test]
fn a_core_step_consumes_at_least_what_its_action_reads() {
    let error = refusal(|t| step(t, "Taxes")["consumes"] = json!(["lines", "delivery_address"]));
    let (error, message) = table_refusal(error, 8, "Taxes");
    assert_eq!(
        error,
        TableError::MissingInput {
            step: "Taxes".into(),
            input: StepInput::DeliveryMethod
        }
    );
    assert_eq!(
        message,
        "step 8 \"Taxes\": runs an action that reads delivery_method, so \"consumes\" must \
         list delivery_method"
    );
    let error = refusal(|t| {
        step(t, "Authorize Payment")
            .as_object_mut()
            .unwrap()
            .remove("consumes");
    });
    assert!(matches!(
        table_refusal(error, 12, "Authorize Payment").0,
        TableError::MissingInput {
            input: StepInput::Payment,
            ..
        }
    ));
    // More than the action reads is the template's to say.
    let mut template = standard_value();
    step(&mut template, "Inventory")["consumes"] = json!(["lines", "delivery_address"]);
    assert!(TransitionTable::from_json(&template.to_string()).is_ok());
}

// ---------------------------------------------------------------------------------------
// The command line

fn run<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) -> Output {
    let output = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The session the data set holds for the in-stock cart, at `Taxes`.
fn taxes_session_id() -> SfId {
    SfId::from_number(KeyPrefix::CartCheckoutSession, 9_101)
}

/// The sample data with the in-stock cart in checkout and its session at `Taxes`.
fn at_taxes() -> DataSet {
    support::data::in_checkout_at(taxes_session_id(), SessionState::Taxes, false)
}

/// A data directory seeded with `data`, holding `template` (text) as its `template.json` and,
/// beside it, an `integrations.json` that registers the credit-check example's `credit-limit`
/// provider (a limit no sample cart reaches) for every store, as a template with a custom
/// step needs.
fn data_dir(data: &DataSet, template: Option<&str>) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("cartflow.json"),
        serde_json::to_string(data).unwrap(),
    )
    .unwrap();
    if let Some(template) = template {
        fs::write(dir.path().join("template.json"), template).unwrap();
        let credit =
            json!({"Custom": {"credit-limit": {"CreditLimit": {"DefaultLimit": "1000000.00"}}}});
        let providers: serde_json::Map<String, Value> = data
            .stores
            .iter()
            .map(|store| (store.id.to_string(), credit.clone()))
            .collect();
        fs::write(
            dir.path().join("integrations.json"),
            serde_json::to_string(&providers).unwrap(),
        )
        .unwrap();
    }
    dir
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// `cartflow invoke ACTION --input INPUT` as the sample buyer on `dir`, with `extra` flags.
fn invoke(dir: &Path, action: &str, input: &Value, extra: &[&str]) -> Output {
    let mut args = vec![
        "invoke".to_owned(),
        action.to_owned(),
        "--input".to_owned(),
        input.to_string(),
        "--as".to_owned(),
        sample::buyer_id().to_string(),
        "--data".to_owned(),
        path_arg(dir),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    run(dir, &args)
}

/// Update Checkout Session from Taxes to `next`.
fn lock_taxes(dir: &Path, next: &str, extra: &[&str]) -> Output {
    let input = json!({"checkoutSessionId": taxes_session_id().to_string(),
        "expCurrentState": "Taxes", "nextState": next});
    invoke(dir, "updateCheckoutSessionStateAction", &input, extra)
}

fn inspect_json(dir: &Path, extra: &[&str]) -> Value {
    let cart = SampleCart::InStock.id().to_string();
    let data = path_arg(dir);
    let mut args = vec!["inspect", "--cart", &cart, "--data", &data, "--json"];
    args.extend(extra);
    let output = run(dir, &args);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn diagram_of_the_credit_check_file_shows_its_custom_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let file = path_arg(&example("credit-check.json"));
    let output = run(
        tmp.path(),
        &["diagram", "--template", &file, "--format", "dot"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let dot = stdout(&output);
    for expected in ["Credit Check", "Approval", "CheckCredit (CreditCheck)"] {
        assert!(dot.contains(expected), "{expected} missing");
    }
    assert!(dot.contains("the credit-check checkout template"));
    let mermaid = run(
        tmp.path(),
        &["diagram", "--template", &file, "--format", "mermaid"],
    );
    assert!(stdout(&mermaid).contains("CheckCredit (CreditCheck)"));
    // The standard drawing has neither.
    let standard = stdout(&run(tmp.path(), &["diagram", "--format", "dot"]));
    assert!(!standard.contains("Credit Check"));
}

#[test]
fn diagram_of_the_standard_file_is_states_dot() {
    let tmp = tempfile::tempdir().unwrap();
    let file = path_arg(&example("standard.json"));
    let output = run(tmp.path(), &["diagram", "--template", &file]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let committed = fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/states.dot")).unwrap();
    assert_eq!(output.stdout, committed);
}

#[test]
fn the_long_state_name_is_refused_with_exit_2_and_a_message_naming_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let mut template = standard_value();
    step(&mut template, "Shipping Address")["state"] = json!(TOO_LONG);
    step(&mut template, "Start")["next"] = json!(TOO_LONG);
    let file = tmp.path().join("long.json");
    fs::write(&file, template.to_string()).unwrap();
    let output = run(tmp.path(), &["diagram", "--template", &path_arg(&file)]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let message = stderr(&output);
    assert!(
        message.contains(&format!(
            "long.json is refused: step 2: its State: {TOO_LONG:?} is 37 characters long"
        )),
        "{message}"
    );
    let missing = run(
        tmp.path(),
        &[
            "diagram",
            "--template",
            &path_arg(&tmp.path().join("none.json")),
        ],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("cannot read the template"));
}

#[test]
fn template_json_in_a_data_directory_is_run_by_invoke_worker_and_inspect() {
    let dir = data_dir(&at_taxes(), Some(&example_text("credit-check.json")));
    let locked = lock_taxes(dir.path(), "Credit Check", &[]);
    assert_eq!(locked.status.code(), Some(0), "{}", stdout(&locked));
    let cart = json!({"cartId": SampleCart::InStock.id().to_string()});
    let taxes = invoke(dir.path(), "calcCartTaxesAction", &cart, &[]);
    assert_eq!(taxes.status.code(), Some(0), "{}", stdout(&taxes));
    let data = path_arg(dir.path());
    let worker = run(dir.path(), &["worker", "--data", &data, "--exit-when-idle"]);
    assert_eq!(worker.status.code(), Some(0), "{}", stderr(&worker));
    let report: Value = serde_json::from_str(stdout(&worker).lines().next().unwrap()).unwrap();
    assert_eq!(report["status"], "Complete", "{report}");
    // The worker moved the session on to the template's custom step.
    let report = inspect_json(dir.path(), &[]);
    let session = &report["sessions"][0];
    assert_eq!(session["State"], "Credit Check", "{session}");
    assert_eq!(session["IsProcessing"], false);
    assert_eq!(report["template"]["name"], "credit-check");
    assert_eq!(report["template"]["statesNotInTemplate"], json!([]));
    // Read against the standard template, the session is at a State it does not know.
    let standard = path_arg(&example("standard.json"));
    let report = inspect_json(dir.path(), &["--template", &standard]);
    assert_eq!(report["template"]["name"], "standard");
    assert_eq!(
        report["template"]["statesNotInTemplate"],
        json!(["Credit Check"])
    );
    let cart = SampleCart::InStock.id().to_string();
    let text = run(
        dir.path(),
        &[
            "inspect",
            "--cart",
            &cart,
            "--data",
            &data,
            "--template",
            &standard,
        ],
    );
    assert!(
        stdout(&text).contains(
            "template \"standard\"\n  an active session is at \"Credit Check\", which is no step \
             of this template"
        ),
        "{}",
        stdout(&text)
    );
}

#[test]
fn the_flag_comes_before_template_json_and_the_standard_template_comes_last() {
    // No template.json: the standard template, whose Taxes step leads to payment.
    let plain = data_dir(&at_taxes(), None);
    let refused = lock_taxes(plain.path(), "Credit Check", &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    assert!(
        stdout(&refused).contains("INVALID_OPERATION"),
        "{}",
        stdout(&refused)
    );
    // template.json says credit-check, the flag says standard: the flag wins.
    let dir = data_dir(&at_taxes(), Some(&example_text("credit-check.json")));
    let standard = path_arg(&example("standard.json"));
    let refused = lock_taxes(dir.path(), "Credit Check", &["--template", &standard]);
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    let accepted = lock_taxes(
        dir.path(),
        "Payment And Billing Address",
        &["--template", &standard],
    );
    assert_eq!(accepted.status.code(), Some(0), "{}", stdout(&accepted));
}

#[test]
fn diagram_data_draws_the_template_of_a_data_directory_without_opening_it() {
    let dir = data_dir(&at_taxes(), Some(&example_text("credit-check.json")));
    let data = path_arg(dir.path());
    let output = run(dir.path(), &["diagram", "--data", &data]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("CheckCredit (CreditCheck)"));
    assert!(
        !dir.path().join("cartflow.db").exists(),
        "the data was opened"
    );
    // A sqlite: location uses the template.json beside the file.
    let beside = format!("sqlite:{}", dir.path().join("cartflow.db").display());
    let output = run(dir.path(), &["diagram", "--data", &beside]);
    assert!(stdout(&output).contains("CheckCredit (CreditCheck)"));
    let empty = tempfile::tempdir().unwrap();
    let output = run(
        empty.path(),
        &["diagram", "--data", &path_arg(empty.path())],
    );
    assert_eq!(
        output.stdout,
        fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/states.dot")).unwrap()
    );
}

#[test]
fn a_bad_template_json_stops_every_command_before_it_touches_the_store() {
    let mut template = standard_value();
    step(&mut template, "Shipping Address")["next"] = json!("Nowhere");
    let dir = data_dir(&at_taxes(), Some(&template.to_string()));
    let data = path_arg(dir.path());
    let cart = SampleCart::InStock.id().to_string();
    let buyer = sample::buyer_id().to_string();
    let input = json!({"cartId": cart}).to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec!["diagram", "--data", &data],
        vec![
            "invoke",
            "checkoutSessionAction",
            "--input",
            &input,
            "--as",
            &buyer,
            "--data",
            &data,
        ],
        vec!["inspect", "--cart", &cart, "--data", &data],
        vec!["worker", "--data", &data, "--exit-when-idle"],
        vec!["serve", "--data", &data, "--addr", "127.0.0.1:0"],
    ];
    for args in commands {
        let output = run(dir.path(), &args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        let message = stderr(&output);
        assert!(
            message.contains(&format!(
                "cartflow {}: the template {} is refused: step 2 \"Shipping Address\": its \
                 next, \"Nowhere\", is no step of the template",
                args[0],
                dir.path().join("template.json").display()
            )),
            "{args:?}: {message}"
        );
        assert!(
            !dir.path().join("cartflow.db").exists(),
            "{args:?} opened the store"
        );
    }
}

#[test]
fn serve_runs_the_template_json_of_its_data_directory() {
    let dir = data_dir(&at_taxes(), Some(&example_text("credit-check.json")));
    fs::write(
        dir.path().join("tokens.json"),
        json!({"bea-token": sample::buyer_id().to_string()}).to_string(),
    )
    .unwrap();
    let support::server::Listening {
        mut child,
        lines,
        seen,
        address,
    } = support::server::start_listening(
        Command::new(BIN)
            .args(["serve", "--workers", "0", "--addr", "127.0.0.1:0", "--data"])
            .arg(dir.path()),
        SERVER_BOUND,
    );
    let url = format!(
        "http://{address}/services/data/v64.0/actions/standard/updateCheckoutSessionStateAction"
    );
    let body = json!({"inputs": [{"checkoutSessionId": taxes_session_id().to_string(),
        "expCurrentState": "Taxes", "nextState": "Credit Check"}]});
    let answer = support::server::agent(SERVER_BOUND)
        .post(&url)
        .header("Authorization", "Bearer bea-token")
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap();
    let status = answer.status().as_u16();
    let text = answer.into_body().read_to_string().unwrap();
    assert!(support::server::sigterm(&child));
    let code = child.wait().unwrap().code();
    let rest: Vec<String> = lines.iter().collect();
    assert_eq!(status, 200, "{text}; stderr: {seen:?} {rest:?}");
    assert_eq!(code, Some(0), "{seen:?} {rest:?}");
}

#[test]
fn the_demo_tells_its_story_on_a_given_template_and_refuses_a_bad_one_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let older = path_arg(&example("without-promotions.json"));
    let output = run(tmp.path(), &["demo", "--template", &older]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let story = stdout(&output);
    assert!(
        story.contains("Template \"standard (no promotions)\" (--template), 14 steps."),
        "{story}"
    );
    let standard = stdout(&run(tmp.path(), &["demo"]));
    assert!(standard.contains("-> Calculate Promotions"), "{standard}");
    assert!(!story.contains("-> Calculate Promotions"), "{story}");
    // A bad template stops the demo before it replaces the last run's database.
    let db = tmp.path().join("cartflow-demo.db");
    let before = fs::read(&db).unwrap();
    let bad = tmp.path().join("bad.json");
    fs::write(&bad, "{\"name\": \"bad\", \"steps\": []}").unwrap();
    let output = run(tmp.path(), &["demo", "--template", &path_arg(&bad)]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("bad.json is refused"),
        "{}",
        stderr(&output)
    );
    assert_eq!(fs::read(&db).unwrap(), before);
}

#[test]
fn a_template_whose_custom_provider_no_store_registers_is_refused_before_anything_runs() {
    let dir = data_dir(&at_taxes(), Some(&example_text("credit-check.json")));
    fs::remove_file(dir.path().join("integrations.json")).unwrap();
    let data = path_arg(dir.path());
    for args in [
        vec!["worker", "--data", &data, "--exit-when-idle"],
        vec!["serve", "--data", &data, "--addr", "127.0.0.1:0"],
    ] {
        let output = run(dir.path(), &args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output)
                .contains("step \"Credit Check\" runs the custom provider \"credit-limit\""),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let locked = lock_taxes(dir.path(), "Credit Check", &[]);
    assert_eq!(locked.status.code(), Some(2), "{}", stderr(&locked));
    // Nothing ran: the session is still open at Taxes.
    fs::write(dir.path().join("integrations.json"), "{}").unwrap();
    let report = inspect_json(
        dir.path(),
        &["--template", &path_arg(&example("standard.json"))],
    );
    assert_eq!(report["sessions"][0]["State"], "Taxes");
    assert_eq!(report["sessions"][0]["IsProcessing"], false);
}

#[test]
fn a_state_that_reads_like_another_node_is_refused() {
    let error = refusal(|t| {
        step(t, "Shipping Address")["state"] = json!("Inventory (locked)");
        step(t, "Start")["next"] = json!("Inventory (locked)");
    });
    let (error, message) = table_refusal(error, 2, "Inventory (locked)");
    assert_eq!(
        error,
        TableError::ReadsLikeNode("Inventory (locked)".into())
    );
    assert!(message.contains("reads like another node"), "{message}");
}

#[test]
fn a_step_leading_into_the_terminal_step_that_is_no_screen_is_refused() {
    let error = refusal(|t| {
        steps(t).retain(|s| s["state"] != "Order Confirmation");
        step(t, "Activate Order")["next"] = json!("Complete");
    });
    let (error, message) = table_refusal(error, 13, "Activate Order");
    assert!(matches!(error, TableError::BadNext(..)), "{error:?}");
    assert!(message.contains("only a screen's move into the terminal step closes the cart"));
}

#[test]
fn a_custom_action_named_like_a_core_action_is_refused() {
    let text = example_text("credit-check.json").replace("\"CreditCheck\"", "\"priceCart\"");
    let (error, message) = table_refusal(refusal_of(&text), 9, "Credit Check");
    assert_eq!(error, TableError::CustomNamedAsCore("priceCart".into()));
    assert!(
        message.contains("has the name of a core action"),
        "{message}"
    );
}

#[test]
fn the_demo_runs_the_credit_check_template_through_its_custom_step_to_an_activated_order() {
    let tmp = tempfile::tempdir().unwrap();
    let credit = path_arg(&example("credit-check.json"));
    let output = run(tmp.path(), &["demo", "--template", &credit]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let story = stdout(&output);
    for line in [
        "Credit Check (locked) -> Credit Check (running)",
        "Credit Check (running) -> Approval",
        "Approval -> Payment And Billing Address",
        "Activated",
    ] {
        assert!(story.contains(line), "{line}: {story}");
    }
}

#[test]
fn a_screen_that_collects_the_address_does_not_move_on_without_one_and_names_it() {
    let mut template = Template::standard();
    let screen = template
        .steps
        .iter_mut()
        .find(|s| s.state == SessionState::ShippingAddress)
        .unwrap();
    screen.collects.insert(StepInput::DeliveryAddress);
    let table = TransitionTable::build(template).unwrap();
    let data = sample::dataset();
    let store = std::sync::Arc::new(cartflow::MemoryStore::from_dataset(data).unwrap());
    let engine = cartflow::Engine::new(store).with_table(table);
    let buyer = sample::buyer_id().to_string();
    let cart = SampleCart::InStock.id();
    assert!(
        engine
            .store()
            .cart(&cart)
            .unwrap()
            .unwrap()
            .deliver_to
            .is_none()
    );
    let started = engine.execute(
        &buyer,
        cartflow::machine::Command::StartSession {
            cart_id: cart.to_string(),
            initial_state: Some("Start".into()),
        },
    );
    let Ok(cartflow::machine::Output::RequestId(session)) = started else {
        panic!("checkoutSessionAction answered {started:?}");
    };
    let advance = |to: &str| {
        engine.execute(
            &buyer,
            cartflow::machine::Command::Advance {
                session_id: session.to_string(),
                state: to.into(),
                exp_current_state: None,
            },
        )
    };
    advance("Shipping Address").unwrap();
    let history = engine.store().history(&cart).unwrap();
    match advance("Inventory") {
        Err(cartflow::CheckoutError::Refused {
            code,
            status,
            message,
            ..
        }) => assert_eq!(
            (code.as_str(), status, message.as_str()),
            (
                "REQUIRED_FIELD_MISSING",
                400,
                "Shipping Address cannot move on without a delivery address (DeliverTo)"
            )
        ),
        other => panic!("the address screen moved on without an address: {other:?}"),
    }
    assert_eq!(engine.store().history(&cart).unwrap(), history);
}
