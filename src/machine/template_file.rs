//! Templates as JSON files: the format `cartflow --template FILE` and a data directory's
//! `template.json` are written in (`docs/templates.md`), and refusals that name the step and
//! the rule it breaks.
//!
//! ```json
//! {
//!   "name": "standard",
//!   "steps": [
//!     {"state": "Start", "kind": "entry", "next": "Shipping Address"},
//!     {"state": "Inventory", "kind": "async", "action": "checkCartInventoryAction", "transition": "CheckInventory", "consumes": ["lines"], "next": "Confirm Price"},
//!     {"state": "Complete", "kind": "terminal"}
//!   ]
//! }
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::machine::table::template_refusal;
use crate::machine::{
    Action, CustomAction, CustomActionNameError, Step, StepInput, StepKind, TableError, Template,
    TransitionTable,
};
use crate::model::{SessionState, StateNameError};

/// A template file as it is written: a name and the steps, each left as JSON so that a step's
/// own mistakes are reported with the step.
#[derive(Deserialize)]
#[serde(rename = "template", deny_unknown_fields)]
struct TemplateFile {
    name: String,
    steps: Vec<Value>,
}

/// One step as a template file writes it. The field order is the order [`Template::to_json`]
/// writes them in.
#[derive(Serialize, Deserialize)]
#[serde(rename = "step", deny_unknown_fields)]
struct StepFile {
    state: String,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    transition: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    consumes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    collects: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// The kinds a template file names, in the order the documentation lists them.
const KINDS: &str = "entry, screen, async, payment, custom, terminal";

/// Which step a refusal concerns: its position in the file (from 1) and, when it has a valid
/// one, its State.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRef {
    /// The step's position in `steps`, counting from 1.
    pub position: usize,
    /// The step's State; `None` when the State itself is missing or not a valid name.
    pub state: Option<String>,
}

impl StepRef {
    fn of(template: &Template, index: usize) -> StepRef {
        StepRef {
            position: index + 1,
            state: template
                .steps
                .get(index)
                .map(|step| step.state.as_str().to_owned()),
        }
    }
}

impl fmt::Display for StepRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            Some(state) => write!(f, "step {} {state:?}", self.position),
            None => write!(f, "step {}", self.position),
        }
    }
}

/// What is wrong with one step of a template file, before the table's rules are checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepProblem {
    /// The step is not a JSON object.
    #[error("a step is a JSON object, not {0}")]
    NotAnObject(&'static str),
    /// The step's fields are not the format's: an unknown or missing field, or a value of the
    /// wrong type (serde's description).
    #[error("{0}")]
    Fields(String),
    /// The step's State is not a valid State name.
    #[error("its State: {0}")]
    BadState(StateNameError),
    /// The step's `next` is not a valid State name.
    #[error("its next: {0}")]
    BadNext(StateNameError),
    /// The step's kind is none of the format's.
    #[error("kind {0:?} is none of: {KINDS}")]
    UnknownKind(String),
    /// An async or custom step names no action.
    #[error("a step of kind {0} must name its \"action\"")]
    NoAction(&'static str),
    /// A step of a kind that runs no action of its own names one.
    #[error("a step of kind {0} takes no \"action\": only async and custom steps run one")]
    ActionNotTaken(&'static str),
    /// An async step's action is no core action's API name.
    #[error("action {name:?} is no core action; an async step runs one of: {actions}", name = .0, actions = async_actions())]
    UnknownAction(String),
    /// A custom step's action is not a valid custom action name.
    #[error("{0}")]
    BadCustomAction(CustomActionNameError),
    /// `consumes` or `collects` names something that is no input.
    #[error(
        "names the input {0:?}, which is none of: lines, delivery_address, delivery_method, \
         payment"
    )]
    UnknownInput(String),
    /// `consumes` or `collects` names one input twice.
    #[error("lists the input {0} twice")]
    RepeatedInput(StepInput),
}

/// Why a template file is refused. Each message says where: a line and column for JSON that
/// is no template, the step (its position and State) for a step that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateFileError {
    /// The text is not JSON.
    #[error("line {line}, column {column}: not valid JSON: {message}")]
    Syntax {
        /// The line of the mistake, from 1.
        line: usize,
        /// The column of the mistake, from 1.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// The text is JSON but not a template: not an object, an unknown or missing top-level
    /// field, or a value of the wrong type.
    #[error("line {line}, column {column}: not a template: {message}")]
    Shape {
        /// The line of the mistake, from 1.
        line: usize,
        /// The column of the mistake, from 1.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The template's name is empty or only whitespace.
    #[error("the template's \"name\" is blank: give it a name for diagrams and messages")]
    BlankName,
    /// A step is not written as the format says.
    #[error("{step}: {problem}")]
    Step {
        /// The step.
        step: StepRef,
        /// What is wrong with it.
        problem: StepProblem,
    },
    /// The template breaks a rule of the transition table; `step` is the step the rule
    /// concerns (`None` when it concerns the whole template).
    #[error("{}", table_message(.step.as_ref(), .error))]
    Table {
        /// The step the rule concerns.
        step: Option<StepRef>,
        /// The rule, as the table states it.
        error: TableError,
    },
}

impl TemplateFileError {
    fn of_json(error: &serde_json::Error) -> TemplateFileError {
        let text = error.to_string();
        let position = format!(" at line {} column {}", error.line(), error.column());
        let message = text.strip_suffix(&position).unwrap_or(&text).to_owned();
        let (line, column) = (error.line(), error.column());
        match error.classify() {
            serde_json::error::Category::Data => TemplateFileError::Shape {
                line,
                column,
                message,
            },
            _ => TemplateFileError::Syntax {
                line,
                column,
                message,
            },
        }
    }
}

/// The API names of the core actions an async step may run.
fn async_actions() -> String {
    Action::ALL
        .into_iter()
        .filter(|action| {
            action.provider_kind().is_some()
                || matches!(action, Action::CartToOrder | Action::ActivateOrder)
        })
        .map(Action::api_name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table refusal as a template file's reader sees it: the step, then the rule in words
/// that do not repeat the step's State.
fn table_message(step: Option<&StepRef>, error: &TableError) -> String {
    let Some(step) = step else {
        return error.to_string();
    };
    let rule = match error {
        TableError::Entry(_, count) => {
            format!("is a second entry step; a template has exactly one (it has {count})")
        }
        TableError::UnknownTarget { to, .. } => {
            format!("its next, {to:?}, is no step of the template")
        }
        TableError::BadNext(_, reason)
        | TableError::BadTransitionName(_, reason)
        | TableError::BadProvider(_, reason) => (*reason).to_owned(),
        TableError::Duplicate(name) => format!(
            "{name:?} is already taken by an earlier step (each State, action and transition \
             name belongs to one step)"
        ),
        TableError::ErrorAsStep => "Error is the failure state and cannot be a step".to_owned(),
        TableError::ReadsLikeNode(_) => "its State reads like another node of the table (a \
                                          step's locked or running phase, Archived, no session)"
            .to_owned(),
        TableError::CustomNamedAsCore(name) => format!(
            "its custom action {name:?} has the name of a core action; give it a name of its own"
        ),
        TableError::NotAsync(action) => format!(
            "{action} is not an async cart action; an async step runs one of: {}",
            async_actions()
        ),
        TableError::NotAConsumer(_) => "computes nothing, so it consumes no input (only async, \
                                        payment and custom steps do)"
            .to_owned(),
        TableError::BadCollects(_, reason) => (*reason).to_owned(),
        TableError::MissingInput { input, .. } => {
            format!("runs an action that reads {input}, so \"consumes\" must list {input}")
        }
        TableError::Unreachable(_) => "no path from the entry step reaches it".to_owned(),
        TableError::Ambiguous { .. } => error.to_string(),
    };
    format!("{step}: {rule}")
}

impl Template {
    /// Reads a template from its JSON file format (`docs/templates.md`), checking what the
    /// format itself says: the shape, the State names, the kinds, actions and inputs. The
    /// table's rules (one entry step, known targets, ...) are checked by
    /// [`TransitionTable::from_json`], or by [`TransitionTable::build`] on the result.
    pub fn from_json(text: &str) -> Result<Template, TemplateFileError> {
        let file: TemplateFile =
            serde_json::from_str(text).map_err(|e| TemplateFileError::of_json(&e))?;
        if file.name.trim().is_empty() {
            return Err(TemplateFileError::BlankName);
        }
        let written = file
            .steps
            .into_iter()
            .enumerate()
            .map(|(index, value)| step_of(index, value))
            .collect::<Result<Vec<(Step, Option<String>)>, TemplateFileError>>()?;
        // Successors are read once every State is: a step named with a bad State is blamed
        // itself, not the step before it that leads there.
        let steps = written
            .into_iter()
            .enumerate()
            .map(|(index, (step, next))| with_next(index, step, next.as_deref()))
            .collect::<Result<Vec<Step>, TemplateFileError>>()?;
        Ok(Template {
            name: file.name,
            steps,
        })
    }

    /// The template in its JSON file format: one line per step, fields in a fixed order, so
    /// the same template always gives the same text and [`Template::from_json`] reads it back.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\n  \"name\": ");
        out.push_str(&json_line(&self.name));
        out.push_str(",\n  \"steps\": [");
        for (index, step) in self.steps.iter().enumerate() {
            out.push_str(if index == 0 { "\n    " } else { ",\n    " });
            out.push_str(&json_line(&file_of(step)));
        }
        out.push_str(if self.steps.is_empty() {
            "]\n}\n"
        } else {
            "\n  ]\n}\n"
        });
        out
    }
}

impl TransitionTable {
    /// Reads a template file and builds its table: every rule of the format and of the table
    /// is checked, and a refusal names the step it concerns.
    pub fn from_json(text: &str) -> Result<TransitionTable, TemplateFileError> {
        let template = Template::from_json(text)?;
        if let Err((index, error)) = template_refusal(&template) {
            return Err(TemplateFileError::Table {
                step: index.map(|index| StepRef::of(&template, index)),
                error,
            });
        }
        TransitionTable::build(template)
            .map_err(|error| TemplateFileError::Table { step: None, error })
    }
}

/// One step of the file, checked, with its `next` as written (read by [`with_next`]).
fn step_of(index: usize, value: Value) -> Result<(Step, Option<String>), TemplateFileError> {
    let named = value
        .get("state")
        .and_then(Value::as_str)
        .filter(|name| SessionState::new(name).is_ok())
        .map(str::to_owned);
    let at = StepRef {
        position: index + 1,
        state: named,
    };
    let fail = |problem| TemplateFileError::Step {
        step: at.clone(),
        problem,
    };
    if let Some(found) = not_an_object(&value) {
        return Err(fail(StepProblem::NotAnObject(found)));
    }
    let file =
        StepFile::deserialize(value).map_err(|e| fail(StepProblem::Fields(e.to_string())))?;
    let state = SessionState::new(&file.state).map_err(|e| fail(StepProblem::BadState(e)))?;
    let kind = kind_of(&file.kind, file.action.as_deref()).map_err(fail)?;
    let consumes = inputs_of(&file.consumes).map_err(fail)?;
    let collects = inputs_of(&file.collects).map_err(fail)?;
    let step = Step {
        state,
        kind,
        transition: file.transition,
        provider: file.provider,
        consumes,
        collects,
        next: None,
    };
    Ok((step, file.next))
}

/// `step` (the `index`th) leading to `next`, which must be a State name.
fn with_next(index: usize, step: Step, next: Option<&str>) -> Result<Step, TemplateFileError> {
    let Some(next) = next else {
        return Ok(step);
    };
    match SessionState::new(next) {
        Ok(next) => Ok(step.then(next)),
        Err(e) => Err(TemplateFileError::Step {
            step: StepRef {
                position: index + 1,
                state: Some(step.state.as_str().to_owned()),
            },
            problem: StepProblem::BadNext(e),
        }),
    }
}

/// What a value that should be a step's object is instead, if it is not one.
fn not_an_object(value: &Value) -> Option<&'static str> {
    match value {
        Value::Object(_) => None,
        Value::Null => Some("null"),
        Value::Bool(_) => Some("a boolean"),
        Value::Number(_) => Some("a number"),
        Value::String(_) => Some("a string"),
        Value::Array(_) => Some("an array"),
    }
}

/// A step's kind from its `kind` and `action` fields.
fn kind_of(kind: &str, action: Option<&str>) -> Result<StepKind, StepProblem> {
    let without_action = match kind {
        "entry" => Some((StepKind::Entry, "entry")),
        "screen" => Some((StepKind::Screen, "screen")),
        "payment" => Some((StepKind::Payment, "payment")),
        "terminal" => Some((StepKind::Terminal, "terminal")),
        _ => None,
    };
    if let Some((kind, name)) = without_action {
        return match action {
            None => Ok(kind),
            Some(_) => Err(StepProblem::ActionNotTaken(name)),
        };
    }
    match (kind, action) {
        ("async", Some(name)) => Action::from_api_name(name)
            .map(StepKind::Async)
            .ok_or_else(|| StepProblem::UnknownAction(name.to_owned())),
        ("custom", Some(name)) => CustomAction::new(name)
            .map(StepKind::Custom)
            .map_err(StepProblem::BadCustomAction),
        ("async", None) => Err(StepProblem::NoAction("async")),
        ("custom", None) => Err(StepProblem::NoAction("custom")),
        (other, _) => Err(StepProblem::UnknownKind(other.to_owned())),
    }
}

/// A step's `consumes`: known inputs, each once.
fn inputs_of(names: &[String]) -> Result<BTreeSet<StepInput>, StepProblem> {
    let mut inputs = BTreeSet::new();
    for name in names {
        let input =
            StepInput::from_name(name).ok_or_else(|| StepProblem::UnknownInput(name.clone()))?;
        if !inputs.insert(input) {
            return Err(StepProblem::RepeatedInput(input));
        }
    }
    Ok(inputs)
}

/// A step as the file writes it.
fn file_of(step: &Step) -> StepFile {
    let (kind, action) = match step.kind {
        StepKind::Entry => ("entry", None),
        StepKind::Screen => ("screen", None),
        StepKind::Async(action) => ("async", Some(action.api_name().to_owned())),
        StepKind::Payment => ("payment", None),
        StepKind::Custom(action) => ("custom", Some(action.as_str().to_owned())),
        StepKind::Terminal => ("terminal", None),
    };
    StepFile {
        state: step.state.as_str().to_owned(),
        kind: kind.to_owned(),
        action,
        provider: step.provider.clone(),
        transition: step.transition.clone(),
        consumes: names_of(&step.consumes),
        collects: names_of(&step.collects),
        next: step.next.map(|next| next.as_str().to_owned()),
    }
}

/// Inputs by the names a file gives them.
fn names_of(inputs: &BTreeSet<StepInput>) -> Vec<String> {
    inputs.iter().map(|i| i.as_str().to_owned()).collect()
}

/// `value` as JSON on one line, with a space after each `:` and `,` as a person writes it.
fn json_line<T: Serialize + ?Sized>(value: &T) -> String {
    let mut bytes = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut bytes, Spaced);
    value
        .serialize(&mut serializer)
        .expect("strings and lists always serialize into memory");
    String::from_utf8(bytes).expect("serde_json writes UTF-8")
}

/// serde_json's compact output with a space after each separator.
struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.begin_array_value(writer, first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_reads_back_what_it_writes() {
        for template in [Template::standard(), Template::without_promotions()] {
            let text = template.to_json();
            assert_eq!(Template::from_json(&text).unwrap(), template);
            // One line per step, between the header and the closing lines.
            assert_eq!(text.lines().count(), template.steps.len() + 5);
        }
        let empty = Template {
            name: "empty".into(),
            steps: Vec::new(),
        };
        assert_eq!(Template::from_json(&empty.to_json()).unwrap(), empty);
    }

    #[test]
    fn a_step_is_written_with_its_fields_in_a_fixed_order() {
        let text = Template::standard().to_json();
        let inventory = text
            .lines()
            .find(|l| l.contains("\"state\": \"Inventory\""))
            .unwrap();
        assert_eq!(
            inventory.trim(),
            "{\"state\": \"Inventory\", \"kind\": \"async\", \"action\": \
             \"checkCartInventoryAction\", \"transition\": \"CheckInventory\", \"consumes\": \
             [\"lines\"], \"next\": \"Confirm Price\"},"
        );
    }

    #[test]
    fn a_state_with_quotes_and_accents_survives_the_round_trip() {
        let mut template = Template::standard();
        let odd = SessionState::new("Prüfung \"B\" \\ Ende").unwrap();
        assert!(template.insert_step(
            SessionState::ShippingAddress,
            Step::new(odd, StepKind::Screen)
        ));
        assert_eq!(Template::from_json(&template.to_json()).unwrap(), template);
    }
}
