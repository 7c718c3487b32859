//! The transition table: every legal move of a session, a cart and an operation, as data.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::Bfs;
use serde::{Deserialize, Serialize};

use crate::machine::{Action, Event, Step, StepInput, StepKind, Template};
use crate::model::{CartStatus, OperationStatus, SessionState};

/// The three state machines a checkout drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Machine {
    /// CartCheckoutSession: State, IsProcessing, IsArchived.
    Session,
    /// WebCart.Status.
    Cart,
    /// BackgroundOperation.Status.
    Operation,
}

/// Where a session is in its step: free, locked by Update Checkout Session, or waiting on
/// its background operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Phase {
    /// IsProcessing false.
    Open,
    /// IsProcessing true, no New or Running operation yet.
    Locked,
    /// IsProcessing true, the session's operation is New or Running.
    Running,
}

/// A session's node in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum SessionNode {
    /// The cart has no active session.
    Absent,
    /// An active session: its State (`None` when empty) and phase.
    At(Option<SessionState>, Phase),
    /// The session is archived (finished or cancelled); it never changes again.
    Archived,
}

/// An operation's node in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum OperationNode {
    /// Not created yet.
    Absent,
    /// Created, with this status.
    Is(OperationStatus),
}

/// A state of one of the three machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Node {
    /// A session node.
    Session(SessionNode),
    /// A cart status.
    Cart(CartStatus),
    /// An operation node.
    Operation(OperationNode),
}

impl Node {
    /// The machine this node belongs to.
    pub fn machine(self) -> Machine {
        match self {
            Node::Session(_) => Machine::Session,
            Node::Cart(_) => Machine::Cart,
            Node::Operation(_) => Machine::Operation,
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Session(SessionNode::Absent) => f.write_str("no session"),
            Node::Session(SessionNode::Archived) => f.write_str("Archived"),
            Node::Session(SessionNode::At(state, phase)) => {
                let name = state.as_ref().map_or("(empty State)", SessionState::as_str);
                match phase {
                    Phase::Open => f.write_str(name),
                    Phase::Locked => write!(f, "{name} (locked)"),
                    Phase::Running => write!(f, "{name} (running)"),
                }
            }
            Node::Cart(status) => f.write_str(status.as_str()),
            Node::Operation(OperationNode::Absent) => f.write_str("no operation"),
            Node::Operation(OperationNode::Is(status)) => f.write_str(status.as_str()),
        }
    }
}

/// One declared move: `event` takes a machine from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Transition {
    /// What fires it.
    pub event: Event,
    /// The node before.
    pub from: Node,
    /// The node after.
    pub to: Node,
    /// For the lock of an async step: the NextState it records.
    pub next_state: Option<SessionState>,
    /// The name the template gives the transition of the event's step (`CheckInventory`
    /// on the rows `checkCartInventoryAction` fires).
    pub name: Option<String>,
    /// A fact the row applies under only; without one the row always applies.
    pub when: Option<Condition>,
}

/// A fact of the records, besides their nodes, that a row applies under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Condition {
    /// The session is past its store's checkout time-to-live.
    SessionExpired,
    /// The operation has claims left: its claims so far are at most its retry limit.
    RetriesRemain,
}

impl Condition {
    /// Whether the condition holds for `snapshot` at `now`.
    pub(crate) fn holds(self, snapshot: &crate::machine::Snapshot, now: DateTime<Utc>) -> bool {
        match self {
            Condition::SessionExpired => snapshot.session_expired_at(now).is_some(),
            Condition::RetriesRemain => snapshot
                .operation
                .as_ref()
                .is_some_and(|op| op.attempt <= op.retry_limit),
        }
    }
}

impl Transition {
    /// The label diagrams draw: the event's label, after the transition's name when it has
    /// one (`CheckInventory (checkCartInventoryAction)`).
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} ({})", self.event.label()),
            None => self.event.label().to_owned(),
        }
    }
}

/// Why a template or table is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The template has no entry step, or more than one.
    #[error("template {0:?} needs exactly one entry step, it has {1}")]
    Entry(String, usize),
    /// A step's `next` names a State that is no step of the template.
    #[error("step {from} goes to {to}, which is not a step of the template")]
    UnknownTarget {
        /// The step's State.
        from: String,
        /// The unknown target.
        to: String,
    },
    /// A non-terminal step has no next step, or the terminal step has one.
    #[error("step {0} {1}")]
    BadNext(String, &'static str),
    /// Two steps share a State, run the same action, or give their transitions the same
    /// name.
    #[error("{0} appears in more than one step")]
    Duplicate(String),
    /// A step's transition name is missing (an async or payment step must name its
    /// transition), given on a step that fires no event of its own (entry, screen,
    /// terminal), or not an identifier.
    #[error("step {0} {1}")]
    BadTransitionName(String, &'static str),
    /// `Error` is the failure state, not a step.
    #[error("Error is the failure state and cannot be a step")]
    ErrorAsStep,
    /// An action that is not an async cart action was used as an async step.
    #[error("{0} cannot be the action of an async step")]
    NotAsync(Action),
    /// A State reads like another node of the table (a step's locked or running phase, or
    /// `Archived`), so the diagram and the history could not tell the two apart.
    #[error("the State {0:?} reads like another node of the table")]
    ReadsLikeNode(String),
    /// A custom step's action takes the API name of a core action, which callers could not
    /// tell apart from it.
    #[error("the custom action {0} has the name of a core action")]
    CustomNamedAsCore(String),
    /// A custom step names no provider, or a step that is not custom names one.
    #[error("step {0} {1}")]
    BadProvider(String, &'static str),
    /// An entry, screen or terminal step declares inputs, though it computes nothing.
    #[error(
        "step {0} computes nothing, so it consumes no input (only async, payment and custom \
         steps do)"
    )]
    NotAConsumer(String),
    /// A step that is not a screen declares inputs it collects, or a screen collects the
    /// cart's lines (which only an edit of the cart changes).
    #[error("step {0} {1}")]
    BadCollects(String, &'static str),
    /// A core async step or the payment step leaves out an input its action reads.
    #[error("step {step} runs an action that reads {input}, so it must consume {input}")]
    MissingInput {
        /// The step's State.
        step: String,
        /// The input left out.
        input: StepInput,
    },
    /// A step or node no path from the entry reaches.
    #[error("{0} is unreachable from the entry")]
    Unreachable(String),
    /// Two rows leave the same node on the same event.
    #[error("two transitions leave {from} on {event}")]
    Ambiguous {
        /// The event's label.
        event: String,
        /// The node.
        from: String,
    },
}

/// The validated table the engine runs, the diagram draws and the tests check against.
#[derive(Debug, Clone)]
pub struct TransitionTable {
    template: Template,
    rows: Vec<Transition>,
    /// The rows (by their place in `rows`), stay rows and sources of each event.
    by_event: BTreeMap<Event, EventIndex>,
    states: BTreeSet<SessionState>,
    terminal: Option<SessionState>,
}

/// The nodes a machine can be in without any transition having happened: a cart is created
/// Active, or put in Processing by the platform's own processes; a session with an empty
/// State can only come from imported data, and can only be cancelled.
pub const ENTRY_NODES: [Node; 7] = [
    Node::Session(SessionNode::Absent),
    Node::Session(SessionNode::At(None, Phase::Open)),
    Node::Session(SessionNode::At(None, Phase::Locked)),
    Node::Session(SessionNode::At(None, Phase::Running)),
    Node::Cart(CartStatus::Active),
    Node::Cart(CartStatus::Processing),
    Node::Operation(OperationNode::Absent),
];

impl TransitionTable {
    /// The table of the standard template.
    pub fn standard() -> TransitionTable {
        TransitionTable::build(Template::standard()).expect("the standard template is valid")
    }

    /// Builds and validates the table of a template.
    pub fn build(template: Template) -> Result<TransitionTable, TableError> {
        validate_template(&template)?;
        let mut rows = rows_of(&template);
        for row in &mut rows {
            row.name = template.transition_name(row.event).map(str::to_owned);
        }
        let mut sources = BTreeSet::new();
        for row in &rows {
            if !sources.insert((row.event, row.from)) {
                return Err(TableError::Ambiguous {
                    event: row.event.to_string(),
                    from: row.from.to_string(),
                });
            }
        }
        let stays = stay_rows(&template, &rows);
        let states = rows
            .iter()
            .flat_map(|r| [r.from, r.to])
            .filter_map(|node| match node {
                Node::Session(SessionNode::At(state, _)) => state,
                _ => None,
            })
            .collect();
        let terminal = terminal_of(&template);
        let by_event = index_by_event(&rows, &stays);
        let table = TransitionTable {
            template,
            rows,
            by_event,
            states,
            terminal,
        };
        table.check_reachable()?;
        Ok(table)
    }

    /// Whether some node of the table is at `state` (a step of the template, or `Error`).
    pub fn knows_state(&self, state: SessionState) -> bool {
        self.states.contains(&state)
    }

    /// The template the table was built from.
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// Every row, in a stable order.
    pub fn rows(&self) -> &[Transition] {
        &self.rows
    }

    /// The row `event` fires from `from`, if any.
    pub fn find(&self, event: Event, from: Node) -> Option<&Transition> {
        let index = self.by_event.get(&event)?;
        let &(_, row) = index.rows.iter().find(|(source, _)| *source == from)?;
        Some(&self.rows[row])
    }

    /// The stay row `event` fires from `node`: the event may fire there while that machine
    /// keeps its node (the cart of an async step stays in Checkout). Stay rows are
    /// preconditions: they move nothing, so they are not drawn and reach no node.
    pub fn find_stay(&self, event: Event, node: Node) -> Option<&Transition> {
        let index = self.by_event.get(&event)?;
        index.stays.iter().find(|row| row.from == node)
    }

    /// The row or the stay row `event` fires from `node`, if any.
    pub fn find_any(&self, event: Event, node: Node) -> Option<&Transition> {
        self.find(event, node)
            .or_else(|| self.find_stay(event, node))
    }

    /// Whether `event` may fire from `node` at all: a row leaves it, or a stay row holds it.
    /// A row's condition is not asked here: it chooses between rows, not whether one exists.
    pub fn leaves(&self, event: Event, node: Node) -> bool {
        self.find_any(event, node).is_some()
    }

    /// Every node `event` may fire from (rows and stay rows), sorted.
    pub fn sources(&self, event: Event) -> BTreeSet<Node> {
        self.sources_of(event).iter().copied().collect()
    }

    /// [`TransitionTable::sources`] as the table keeps it: sorted, without building a set.
    pub(crate) fn sources_of(&self, event: Event) -> &[Node] {
        self.by_event
            .get(&event)
            .map_or(&[], |index| index.sources.as_slice())
    }

    /// The template's terminal State: a session archived there keeps its node.
    pub fn terminal(&self) -> Option<SessionState> {
        self.terminal
    }

    /// Whether a closing row (a screen's move into the terminal step) enters the State
    /// named `state`.
    pub fn closes_into(&self, state: &str) -> bool {
        self.rows.iter().any(|row| {
            row.event == Event::Close
                && matches!(row.to, Node::Session(SessionNode::At(Some(to), _)) if to.as_str() == state)
        })
    }

    /// Whether moving from `from` to `to` on `event` is declared.
    pub fn admits(&self, event: Event, from: Node, to: Node) -> bool {
        from == to || self.find(event, from).is_some_and(|row| row.to == to)
    }

    /// Every node that appears in the table, sorted.
    pub fn nodes(&self) -> BTreeSet<Node> {
        self.rows.iter().flat_map(|r| [r.from, r.to]).collect()
    }

    /// The petgraph view of the table: nodes, and one edge per row labelled with its event.
    pub fn graph(&self) -> (DiGraph<Node, Event>, BTreeMap<Node, NodeIndex>) {
        let mut graph = DiGraph::new();
        let mut index = BTreeMap::new();
        for node in self.nodes() {
            index.insert(node, graph.add_node(node));
        }
        for row in &self.rows {
            graph.add_edge(index[&row.from], index[&row.to], row.event);
        }
        (graph, index)
    }

    fn check_reachable(&self) -> Result<(), TableError> {
        let (graph, index) = self.graph();
        let mut seen = BTreeSet::new();
        for entry in ENTRY_NODES {
            let Some(&start) = index.get(&entry) else {
                continue;
            };
            let mut bfs = Bfs::new(&graph, start);
            while let Some(found) = bfs.next(&graph) {
                seen.insert(graph[found]);
            }
        }
        match self.nodes().into_iter().find(|node| !seen.contains(node)) {
            Some(node) => Err(TableError::Unreachable(node.to_string())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
impl TransitionTable {
    /// The table with the row `event` fires from `from` changed by `change`: for tests
    /// that a reader follows whatever the rows say.
    pub(crate) fn with_row_changed(
        mut self,
        event: Event,
        from: Node,
        change: impl FnOnce(&mut Transition),
    ) -> TransitionTable {
        let index = self
            .rows
            .iter()
            .position(|row| row.event == event && row.from == from)
            .expect("the row to change exists");
        change(&mut self.rows[index]);
        self.by_event = index_by_event(&self.rows, &self.stays());
        self
    }

    /// The table with a stay row for `event` at `node` added (`stays`) or removed.
    pub(crate) fn with_stay(mut self, event: Event, node: Node, stays: bool) -> TransitionTable {
        let mut rows = self.stays();
        if stays {
            rows.insert((event, node), row(event, node, node));
        } else {
            rows.remove(&(event, node));
        }
        self.by_event = index_by_event(&self.rows, &rows);
        self
    }

    /// Every stay row, by event and node.
    fn stays(&self) -> BTreeMap<(Event, Node), Transition> {
        self.by_event
            .iter()
            .flat_map(|(&event, index)| {
                index
                    .stays
                    .iter()
                    .map(move |r| ((event, r.from), r.clone()))
            })
            .collect()
    }
}

fn validate_template(template: &Template) -> Result<(), TableError> {
    template_refusal(template).map_err(|(_, error)| error)
}

/// A template's first broken rule, with the index of the step it concerns (`None` when it
/// concerns the template as a whole), for messages that point at the step.
pub(crate) type Refusal = (Option<usize>, TableError);

/// Checks a template's rules in order: one entry step; each step on its own and against the
/// earlier ones; every successor a step; every step on the path from the entry.
pub(crate) fn template_refusal(template: &Template) -> Result<(), Refusal> {
    check_entry(template)?;
    let mut seen = Seen::default();
    for (index, step) in template.steps.iter().enumerate() {
        check_step(step, &mut seen).map_err(|error| (Some(index), error))?;
    }
    check_targets(template, &seen.states)?;
    check_closing(template)?;
    check_labels(template)?;
    check_on_path(template)
}

/// A step leading into the terminal step is a screen: the screen's move there is the row that
/// closes the cart, and without it an activated checkout would never close.
fn check_closing(template: &Template) -> Result<(), Refusal> {
    let terminal = |state| {
        template
            .step(state)
            .is_some_and(|s| s.kind == StepKind::Terminal)
    };
    match template
        .steps
        .iter()
        .position(|s| s.kind != StepKind::Screen && s.next.is_some_and(terminal))
    {
        Some(index) => Err((
            Some(index),
            TableError::BadNext(
                template.steps[index].state.to_string(),
                "leads to the terminal step but is not a screen (only a screen's move into the \
                 terminal step closes the cart)",
            ),
        )),
        None => Ok(()),
    }
}

/// No State reads like another node the table draws and its history records: a step's locked
/// or running phase (`Inventory (locked)`), or a node of no State (`Archived`, `no session`).
fn check_labels(template: &Template) -> Result<(), Refusal> {
    let states = template.steps.iter().map(|s| Some(s.state)).chain([None]);
    let mut taken: BTreeSet<String> = states
        .flat_map(|state| {
            [Phase::Locked, Phase::Running]
                .map(|phase| Node::Session(SessionNode::At(state, phase)).to_string())
        })
        .collect();
    taken.extend(
        [
            SessionNode::Absent,
            SessionNode::Archived,
            SessionNode::At(None, Phase::Open),
        ]
        .map(|node| Node::Session(node).to_string()),
    );
    match template
        .steps
        .iter()
        .position(|s| taken.contains(s.state.as_str()))
    {
        Some(index) => Err((
            Some(index),
            TableError::ReadsLikeNode(template.steps[index].state.to_string()),
        )),
        None => Ok(()),
    }
}

/// What the steps checked so far have taken: States, actions and transition names each
/// belong to one step.
#[derive(Default)]
struct Seen<'a> {
    states: BTreeSet<SessionState>,
    actions: BTreeSet<Event>,
    names: BTreeSet<&'a str>,
}

/// Exactly one entry step; a second one is the step to blame.
fn check_entry(template: &Template) -> Result<(), Refusal> {
    let entries: Vec<usize> = (0..template.steps.len())
        .filter(|&i| template.steps[i].kind == StepKind::Entry)
        .collect();
    match entries.len() {
        1 => Ok(()),
        count => Err((
            entries.get(1).copied(),
            TableError::Entry(template.name.clone(), count),
        )),
    }
}

/// The rules of one step: its State, provider, action, transition name, inputs and next.
fn check_step<'a>(step: &'a Step, seen: &mut Seen<'a>) -> Result<(), TableError> {
    if step.state == SessionState::Error {
        return Err(TableError::ErrorAsStep);
    }
    if !seen.states.insert(step.state) {
        return Err(TableError::Duplicate(step.state.to_string()));
    }
    check_provider(step)?;
    check_action(step, &mut seen.actions)?;
    check_transition_name(step, &mut seen.names)?;
    check_inputs(step)?;
    check_next(step)
}

/// An async step runs an async cart action, and no two steps run the same action.
fn check_action(step: &Step, actions: &mut BTreeSet<Event>) -> Result<(), TableError> {
    let event = match step.kind {
        StepKind::Custom(action) if Action::from_api_name(action.as_str()).is_some() => {
            return Err(TableError::CustomNamedAsCore(action.to_string()));
        }
        StepKind::Custom(action) => Event::Custom(action),
        StepKind::Async(action) => {
            if action.provider_kind().is_none()
                && !matches!(action, Action::CartToOrder | Action::ActivateOrder)
            {
                return Err(TableError::NotAsync(action));
            }
            Event::Action(action)
        }
        _ => return Ok(()),
    };
    if !actions.insert(event) {
        return Err(TableError::Duplicate(event.label().to_owned()));
    }
    Ok(())
}

/// Only a step that computes something consumes inputs, and a core step consumes at least
/// what its action reads.
fn check_inputs(step: &Step) -> Result<(), TableError> {
    if !step.kind.computes() && !step.consumes.is_empty() {
        return Err(TableError::NotAConsumer(step.state.to_string()));
    }
    if !step.collects.is_empty() && step.kind != StepKind::Screen {
        return Err(TableError::BadCollects(
            step.state.to_string(),
            "is not a screen, so it collects no input (only screens ask the buyer)",
        ));
    }
    if step.collects.contains(&StepInput::Lines) {
        return Err(TableError::BadCollects(
            step.state.to_string(),
            "collects lines, which no screen asks for (an edit of the cart changes them)",
        ));
    }
    let required = step.kind.required_inputs();
    match required.iter().find(|input| !step.consumes.contains(input)) {
        Some(&input) => Err(TableError::MissingInput {
            step: step.state.to_string(),
            input,
        }),
        None => Ok(()),
    }
}

/// The terminal step has no successor; every other step has one.
fn check_next(step: &Step) -> Result<(), TableError> {
    let bad = |reason| Err(TableError::BadNext(step.state.to_string(), reason));
    match (step.kind, step.next) {
        (StepKind::Terminal, Some(_)) => bad("is terminal but has a next step"),
        (StepKind::Terminal, None) | (_, Some(_)) => Ok(()),
        (_, None) => bad("has no next step"),
    }
}

/// Every successor is a step of the template.
fn check_targets(template: &Template, states: &BTreeSet<SessionState>) -> Result<(), Refusal> {
    for (index, step) in template.steps.iter().enumerate() {
        if let Some(next) = step.next
            && !states.contains(&next)
        {
            return Err((
                Some(index),
                TableError::UnknownTarget {
                    from: step.state.to_string(),
                    to: next.to_string(),
                },
            ));
        }
    }
    Ok(())
}

/// Every step is on the path from the entry.
fn check_on_path(template: &Template) -> Result<(), Refusal> {
    let mut reached = BTreeSet::new();
    let mut cursor = template.entry();
    while let Some(state) = cursor {
        if !reached.insert(state) {
            break;
        }
        cursor = template.step(state).and_then(|s| s.next);
    }
    match template
        .steps
        .iter()
        .position(|s| !reached.contains(&s.state))
    {
        Some(index) => Err((
            Some(index),
            TableError::Unreachable(template.steps[index].state.to_string()),
        )),
        None => Ok(()),
    }
}

/// A provider is named on a custom step, and only there, by a name that is not blank.
fn check_provider(step: &Step) -> Result<(), TableError> {
    let custom = matches!(step.kind, StepKind::Custom(_));
    let bad = |reason| Err(TableError::BadProvider(step.state.to_string(), reason));
    match (custom, step.provider.as_deref()) {
        (true, None) => bad("is a custom step but names no provider"),
        (true, Some(name)) if name.trim().is_empty() => bad("names a blank provider"),
        (false, Some(_)) => bad("names a provider but is not a custom step"),
        _ => Ok(()),
    }
}

/// The longest transition name a step may give.
pub const TRANSITION_NAME_MAX_CHARS: usize = 40;

/// A step's transition name: present exactly on the steps with an event of their own, an
/// identifier (an ASCII letter, then letters, digits or `_`, at most
/// [`TRANSITION_NAME_MAX_CHARS`]), and not taken by an earlier step (`names`).
fn check_transition_name<'a>(
    step: &'a Step,
    names: &mut BTreeSet<&'a str>,
) -> Result<(), TableError> {
    let bad = |reason| {
        Err(TableError::BadTransitionName(
            step.state.to_string(),
            reason,
        ))
    };
    let name = match (step.own_event(), step.transition.as_deref()) {
        (Some(_), Some(name)) => name,
        (None, None) => return Ok(()),
        (Some(_), None) => {
            return bad("is an async or payment step but does not name its transition");
        }
        (None, Some(_)) => return bad("names a transition but fires no event of its own"),
    };
    if !crate::machine::action::is_identifier(name, TRANSITION_NAME_MAX_CHARS) {
        return bad(
            "names its transition with no identifier (a letter, then at most 39 letters, digits or _)",
        );
    }
    if !names.insert(name) {
        return Err(TableError::Duplicate(name.to_owned()));
    }
    Ok(())
}

fn session(state: SessionState, phase: Phase) -> Node {
    Node::Session(SessionNode::At(Some(state), phase))
}

fn row(event: Event, from: Node, to: Node) -> Transition {
    Transition {
        event,
        from,
        to,
        next_state: None,
        name: None,
        when: None,
    }
}

/// Generates the rows of a (validated) template.
fn rows_of(template: &Template) -> Vec<Transition> {
    let entry = template.entry().unwrap_or(SessionState::Start);
    let mut rows = fixed_rows(entry);
    for step in &template.steps {
        rows.extend(step_rows(template, step));
    }
    let archiving = archive_rows(&rows, terminal_of(template));
    rows.extend(archiving);
    rows.extend(change_rows(template));
    rows.extend(edit_exit_rows());
    rows.sort();
    rows.dedup();
    rows
}

/// The rows every template has: starting a checkout, cancelling it, and an operation's life.
fn fixed_rows(entry: SessionState) -> Vec<Transition> {
    use OperationNode as O;
    use OperationStatus as S;
    let start = Event::Action(Action::CheckoutSession);
    let cancel = Event::Action(Action::CancelCartAsyncOperation);
    vec![
        row(
            start,
            Node::Session(SessionNode::Absent),
            session(entry, Phase::Open),
        ),
        row(
            start,
            Node::Cart(CartStatus::Active),
            Node::Cart(CartStatus::Checkout),
        ),
        row(
            cancel,
            Node::Cart(CartStatus::Checkout),
            Node::Cart(CartStatus::Active),
        ),
        row(
            cancel,
            Node::Cart(CartStatus::Processing),
            Node::Cart(CartStatus::Active),
        ),
        // A lease that ran out returns the operation to New while it has claims left; with
        // none left the sweep fails it (the Fail rows).
        Transition {
            when: Some(Condition::RetriesRemain),
            ..row(
                Event::Requeue,
                Node::Operation(O::Is(S::Running)),
                Node::Operation(O::Is(S::New)),
            )
        },
        row(
            Event::Claim,
            Node::Operation(O::Is(S::New)),
            Node::Operation(O::Is(S::Running)),
        ),
        row(
            Event::Succeed,
            Node::Operation(O::Is(S::Running)),
            Node::Operation(O::Is(S::Complete)),
        ),
        row(
            Event::Fail,
            Node::Operation(O::Is(S::Running)),
            Node::Operation(O::Is(S::Error)),
        ),
        row(
            cancel,
            Node::Operation(O::Is(S::New)),
            Node::Operation(O::Is(S::Canceled)),
        ),
        row(
            cancel,
            Node::Operation(O::Is(S::Running)),
            Node::Operation(O::Is(S::Canceled)),
        ),
    ]
}

/// The rows of one step that has a successor: a screen step's move, or an async step's
/// lock, run and outcome.
fn step_rows(template: &Template, step: &crate::machine::Step) -> Vec<Transition> {
    let Some(next) = step.next else {
        return Vec::new();
    };
    match step.kind {
        StepKind::Entry | StepKind::Screen => screen_rows(template, step.state, next),
        StepKind::Terminal => Vec::new(),
        StepKind::Async(action) => async_rows(Event::Action(action), step.state, next),
        StepKind::Payment => async_rows(Event::Authorize, step.state, next),
        StepKind::Custom(action) => async_rows(Event::Custom(action), step.state, next),
    }
}

/// A screen step's move from `here` to `next`; the move into the terminal state completes
/// the checkout and closes the cart.
fn screen_rows(template: &Template, here: SessionState, next: SessionState) -> Vec<Transition> {
    let terminal = template
        .step(next)
        .is_some_and(|s| s.kind == StepKind::Terminal);
    let event = if terminal {
        Event::Close
    } else {
        Event::Advance
    };
    let mut rows = vec![row(
        event,
        session(here, Phase::Open),
        session(next, Phase::Open),
    )];
    if terminal {
        rows.push(row(
            event,
            Node::Cart(CartStatus::Checkout),
            Node::Cart(CartStatus::Closed),
        ));
    }
    rows
}

/// An async step at `here`, run by `emit`: Update Checkout Session locks it, `emit` starts
/// its operation, and the operation's outcome moves the session on to `next` or to Error.
fn async_rows(emit: Event, here: SessionState, next: SessionState) -> Vec<Transition> {
    use OperationNode as O;
    use OperationStatus as S;
    let update = Event::Action(Action::UpdateCheckoutSessionState);
    vec![
        Transition {
            next_state: Some(next),
            ..row(
                update,
                session(here, Phase::Open),
                session(here, Phase::Locked),
            )
        },
        // The run row carries the NextState its lock recorded: the session must hold it.
        Transition {
            next_state: Some(next),
            ..row(
                emit,
                session(here, Phase::Locked),
                session(here, Phase::Running),
            )
        },
        row(
            emit,
            Node::Operation(O::Absent),
            Node::Operation(O::Is(S::New)),
        ),
        row(
            Event::Succeed,
            session(here, Phase::Running),
            session(next, Phase::Open),
        ),
        row(
            Event::Fail,
            session(here, Phase::Running),
            session(SessionState::Error, Phase::Open),
        ),
    ]
}

/// A change of an input that a step the session has passed consumed sends the session back
/// to the first step that consumes it (before the order exists: input changes are refused
/// afterwards).
fn change_rows(template: &Template) -> Vec<Transition> {
    let walked = template.before_order();
    let mut rows = Vec::new();
    for (index, step) in walked.iter().enumerate() {
        for input in StepInput::CHANGEABLE {
            let consumer = walked[..index]
                .iter()
                .find(|earlier| earlier.consumes.contains(&input));
            if let Some(consumer) = consumer {
                rows.push(row(
                    Event::Change(input),
                    session(step.state, Phase::Open),
                    session(consumer.state, Phase::Open),
                ));
            }
        }
    }
    rows
}

/// Cancel archives the session from wherever it is (an imported empty State included), and
/// so does an edit of the cart; a restart archives an unlocked one. `rows` are the rows so
/// far, whose session nodes are the ones to archive from.
fn archive_rows(rows: &[Transition], terminal: Option<SessionState>) -> Vec<Transition> {
    let start = Event::Action(Action::CheckoutSession);
    let cancel = Event::Action(Action::CancelCartAsyncOperation);
    let active: BTreeSet<Node> = rows
        .iter()
        .flat_map(|r| [r.from, r.to])
        .chain(ENTRY_NODES)
        .filter(|n| matches!(n, Node::Session(SessionNode::At(..))))
        .collect();
    let mut archiving = Vec::new();
    for node in active {
        // A completed checkout is final: its cart is Closed.
        if terminal.is_some_and(|t| node == session(t, Phase::Open)) {
            continue;
        }
        archiving.push(row(cancel, node, Node::Session(SessionNode::Archived)));
        // Editing a cart in checkout takes it out of checkout as a cancel does.
        archiving.push(row(Event::Edit, node, Node::Session(SessionNode::Archived)));
        // A restart archives a failed session that is not locked, one with no State it can
        // go on from (empty, or one the template lacks), and an expired one; an unlocked
        // session in any other State is resumed.
        if let Node::Session(SessionNode::At(state, Phase::Open)) = node {
            let resumable = state.is_some_and(|s| s != SessionState::Error);
            let when = resumable.then_some(Condition::SessionExpired);
            archiving.push(Transition {
                when,
                ..row(start, node, Node::Session(SessionNode::Archived))
            });
        }
    }
    archiving
}

/// The template's terminal State.
/// One event's part of the table, as every command asks it: found by the event, then by a
/// short scan, where a map keyed by event and node compares whole nodes at each level.
#[derive(Debug, Clone, Default)]
struct EventIndex {
    /// Each row's source, and the row's place in the table's rows.
    rows: Vec<(Node, usize)>,
    /// The stay rows.
    stays: Vec<Transition>,
    /// Every node the event fires from (rows and stay rows), sorted, without repeats.
    sources: Vec<Node>,
}

/// The [`EventIndex`] of every event with a row or a stay row.
fn index_by_event(
    rows: &[Transition],
    stays: &BTreeMap<(Event, Node), Transition>,
) -> BTreeMap<Event, EventIndex> {
    let mut by_event: BTreeMap<Event, EventIndex> = BTreeMap::new();
    for (place, row) in rows.iter().enumerate() {
        let index = by_event.entry(row.event).or_default();
        index.rows.push((row.from, place));
        index.sources.push(row.from);
    }
    for (&(event, node), row) in stays {
        let index = by_event.entry(event).or_default();
        index.stays.push(row.clone());
        index.sources.push(node);
    }
    for index in by_event.values_mut() {
        index.sources.sort();
        index.sources.dedup();
    }
    by_event
}

fn terminal_of(template: &Template) -> Option<SessionState> {
    template
        .steps
        .iter()
        .find(|s| s.kind == StepKind::Terminal)
        .map(|s| s.state)
}

/// The statuses a cart may have while a worker reports on its operation: any but Closed.
const OPEN_CART_STATUSES: [CartStatus; 5] = [
    CartStatus::Active,
    CartStatus::Checkout,
    CartStatus::PendingClosed,
    CartStatus::PendingDelete,
    CartStatus::Processing,
];

/// The stay rows: where an event may fire although it leaves that machine's node as it is.
/// Together with the rows they are every state-shaped precondition of every event.
fn stay_rows(template: &Template, rows: &[Transition]) -> BTreeMap<(Event, Node), Transition> {
    use CartStatus as C;
    let update = Event::Action(Action::UpdateCheckoutSessionState);
    let cancel = Event::Action(Action::CancelCartAsyncOperation);
    let unlocked = [C::Active, C::Checkout, C::PendingClosed, C::PendingDelete];
    let mut carts: Vec<(Event, &[CartStatus])> = vec![
        (Event::Action(Action::CheckoutSession), &[C::Checkout]),
        (update, &unlocked),
        (Event::Advance, &unlocked),
        (Event::Input, &[C::Checkout]),
        (
            Event::Action(Action::SetCheckoutDeliveryMethod),
            &[C::Checkout],
        ),
        (Event::Edit, &[C::Active]),
        (cancel, &[C::Active, C::PendingClosed, C::PendingDelete]),
    ];
    // An async step's call, and every report of a worker on a cart that is not Closed.
    carts.extend(
        template
            .steps
            .iter()
            .filter_map(Step::own_event)
            .map(|event| (event, &[C::Checkout][..])),
    );
    carts.extend(WORKER_EVENTS.map(|event| (event, &OPEN_CART_STATUSES[..])));
    let mut stays: Vec<Transition> = carts
        .into_iter()
        .flat_map(|(event, statuses)| statuses.iter().map(move |&s| (event, Node::Cart(s))))
        .map(|(event, node)| row(event, node, node))
        .collect();
    let running = Node::Operation(OperationNode::Is(OperationStatus::Running));
    stays.push(row(Event::Heartbeat, running, running));
    stays.extend(input_session_stays(template, rows));
    stays.extend(terminal_session_stays(template));
    stays
        .into_iter()
        .map(|stay| ((stay.event, stay.from), stay))
        .collect()
}

/// The worker's events.
const WORKER_EVENTS: [Event; 5] = [
    Event::Claim,
    Event::Heartbeat,
    Event::Requeue,
    Event::Succeed,
    Event::Fail,
];

/// A session at the terminal State has the node of a completed checkout, archived or not:
/// archiving it there leaves its node as it is. A cancel or an edit archives one found
/// unarchived (only imported data holds one), and so does a start once it has expired.
fn terminal_session_stays(template: &Template) -> Vec<Transition> {
    let Some(terminal) = terminal_of(template) else {
        return Vec::new();
    };
    let node = session(terminal, Phase::Open);
    vec![
        row(Event::Action(Action::CancelCartAsyncOperation), node, node),
        row(Event::Edit, node, node),
        Transition {
            when: Some(Condition::SessionExpired),
            ..row(Event::Action(Action::CheckoutSession), node, node)
        },
    ]
}

/// A screen's buyer input is written on an unlocked session before the order exists, on a
/// failed one (which only a restart, and so a new order, goes on from) and on one with no
/// State.
fn input_session_stays(template: &Template, rows: &[Transition]) -> Vec<Transition> {
    let open: BTreeSet<SessionState> = template
        .before_order()
        .iter()
        .map(|step| step.state)
        .chain([SessionState::Error])
        .collect();
    let nodes: BTreeSet<Node> = rows
        .iter()
        .flat_map(|r| [r.from, r.to])
        .chain(ENTRY_NODES)
        .filter(|node| match node {
            Node::Session(SessionNode::At(state, Phase::Open)) => {
                state.is_none_or(|state| open.contains(&state))
            }
            _ => false,
        })
        .collect();
    let choose = Event::Action(Action::SetCheckoutDeliveryMethod);
    nodes
        .into_iter()
        .flat_map(|node| [row(Event::Input, node, node), row(choose, node, node)])
        .collect()
}

/// An edit of the cart takes it out of checkout and cancels its operation.
fn edit_exit_rows() -> Vec<Transition> {
    use OperationNode as O;
    use OperationStatus as S;
    [
        (
            Node::Cart(CartStatus::Checkout),
            Node::Cart(CartStatus::Active),
        ),
        (
            Node::Operation(O::Is(S::New)),
            Node::Operation(O::Is(S::Canceled)),
        ),
        (
            Node::Operation(O::Is(S::Running)),
            Node::Operation(O::Is(S::Canceled)),
        ),
    ]
    .into_iter()
    .map(|(from, to)| row(Event::Edit, from, to))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_table_holds_every_state_and_action() {
        let table = TransitionTable::standard();
        let nodes = table.nodes();
        for &state in SessionState::STANDARD {
            assert!(
                nodes.contains(&session(state, Phase::Open)),
                "{state} missing"
            );
        }
        for action in Action::ALL {
            let event = Event::Action(action);
            assert!(!table.sources(event).is_empty(), "{action} missing");
        }
    }

    #[test]
    fn unknown_targets_and_unreachable_steps_are_refused() {
        let mut template = Template::standard();
        template.steps[1].next = Some(SessionState::Error);
        assert_eq!(
            TransitionTable::build(template).unwrap_err(),
            TableError::UnknownTarget {
                from: "Shipping Address".into(),
                to: "Error".into()
            }
        );

        let mut template = Template::standard();
        template.steps.retain(|s| s.state != SessionState::Taxes);
        assert!(matches!(
            TransitionTable::build(template),
            Err(TableError::UnknownTarget { to, .. }) if to == "Taxes"
        ));

        let mut template = Template::standard();
        template.steps[1].next = Some(SessionState::ConfirmPrice);
        assert_eq!(
            TransitionTable::build(template).unwrap_err(),
            TableError::Unreachable("Inventory".into())
        );
    }

    #[test]
    fn templates_with_bad_shapes_are_refused() {
        let mut template = Template::standard();
        template
            .steps
            .push(Step::new(SessionState::Error, StepKind::Screen).then(SessionState::Complete));
        assert_eq!(
            TransitionTable::build(template).unwrap_err(),
            TableError::ErrorAsStep
        );

        let mut template = Template::standard();
        template.steps[0].kind = StepKind::Screen;
        assert!(matches!(
            TransitionTable::build(template),
            Err(TableError::Entry(_, 0))
        ));

        let mut template = Template::standard();
        template.steps[1].kind = StepKind::Async(Action::CancelCartAsyncOperation);
        assert!(matches!(
            TransitionTable::build(template),
            Err(TableError::NotAsync(_))
        ));
    }

    fn step_index(template: &Template, state: SessionState) -> usize {
        template
            .steps
            .iter()
            .position(|s| s.state == state)
            .unwrap()
    }

    #[test]
    fn two_steps_with_the_same_transition_name_are_refused() {
        let mut template = Template::standard();
        let taxes = step_index(&template, SessionState::Taxes);
        template.steps[taxes].transition = Some("PriceCart".into());
        assert_eq!(
            TransitionTable::build(template).unwrap_err(),
            TableError::Duplicate("PriceCart".into())
        );
    }

    #[test]
    fn transition_names_are_where_a_step_fires_its_own_event_and_are_identifiers() {
        let build = |state: SessionState, name: Option<&str>| {
            let mut template = Template::standard();
            let index = step_index(&template, state);
            template.steps[index].transition = name.map(str::to_owned);
            TransitionTable::build(template)
        };
        for (state, name) in [
            // An async step and the payment step must name theirs.
            (SessionState::Inventory, None),
            (SessionState::AuthorizePayment, None),
            // A screen fires no event of its own.
            (SessionState::DeliveryMethod, Some("ChooseDelivery")),
            (SessionState::Inventory, Some("")),
            (SessionState::Inventory, Some("Check Inventory")),
            (SessionState::Inventory, Some("1stCheck")),
            (SessionState::Inventory, Some(&"C".repeat(41))),
        ] {
            assert!(
                matches!(
                    build(state, name),
                    Err(TableError::BadTransitionName(s, _)) if s == state.as_str()
                ),
                "{state} {name:?}"
            );
        }
        assert!(build(SessionState::Inventory, Some(&"C".repeat(40))).is_ok());
        assert!(build(SessionState::Inventory, Some("Check_Inventory_2")).is_ok());
    }

    #[test]
    fn each_row_of_a_steps_event_carries_the_steps_transition_name() {
        let table = TransitionTable::standard();
        let inventory = Event::Action(Action::CheckCartInventory);
        let named: Vec<&Transition> = table.rows().iter().filter(|r| r.name.is_some()).collect();
        // Lock-to-running and operation creation, for each of the eight steps.
        assert_eq!(named.len(), 2 * 8);
        for row in table.rows().iter().filter(|r| r.event == inventory) {
            assert_eq!(row.name.as_deref(), Some("CheckInventory"));
            assert_eq!(row.label(), "CheckInventory (checkCartInventoryAction)");
        }
        let update = Event::Action(Action::UpdateCheckoutSessionState);
        assert!(
            table
                .rows()
                .iter()
                .filter(|r| r.event == update)
                .all(|r| r.name.is_none() && r.label() == update.label())
        );
    }

    #[test]
    fn a_restart_row_applies_to_a_failed_session_always_and_to_any_other_once_expired() {
        let table = TransitionTable::standard();
        let start = Event::Action(Action::CheckoutSession);
        let restart = |state| table.find(start, session(state, Phase::Open)).unwrap();
        assert_eq!(restart(SessionState::Error).when, None);
        for state in [SessionState::Start, SessionState::Inventory] {
            assert_eq!(
                restart(state).when,
                Some(Condition::SessionExpired),
                "{state}"
            );
            assert_eq!(restart(state).to, Node::Session(SessionNode::Archived));
        }
        assert!(
            table
                .rows()
                .iter()
                .filter(|r| r.when.is_some())
                .all(|r| r.event == start || r.event == Event::Requeue)
        );
    }

    #[test]
    fn only_the_state_a_closing_row_enters_closes() {
        let table = TransitionTable::standard();
        assert!(table.closes_into("Complete"));
        assert!(!table.closes_into("OrderConfirmation"));
        assert!(!table.closes_into("Error"));
        let from = session(SessionState::OrderConfirmation, Phase::Open);
        let table = table.with_row_changed(Event::Close, from, |row| {
            row.to = session(SessionState::CheckoutSummary, Phase::Open);
        });
        assert!(table.closes_into(SessionState::CheckoutSummary.as_str()));
        assert!(!table.closes_into("Complete"));
    }

    fn credit_check() -> Step {
        let state = SessionState::new("Credit Check").unwrap();
        let action = crate::machine::CustomAction::new("CreditCheck").unwrap();
        Step::custom(state, action, "CheckCredit", "credit-bureau")
    }

    #[test]
    fn a_custom_step_locks_runs_and_ends_as_an_async_step_does() {
        let mut template = Template::standard();
        assert!(template.insert_step(SessionState::Taxes, credit_check()));
        let table = TransitionTable::build(template).unwrap();
        let here = credit_check().state;
        let event = credit_check().own_event().unwrap();
        assert_eq!(event.label(), "CreditCheck");
        let update = Event::Action(Action::UpdateCheckoutSessionState);
        let lock = table.find(update, session(here, Phase::Open)).unwrap();
        assert_eq!(
            lock.next_state,
            Some(SessionState::PaymentAndBillingAddress)
        );
        let run = table.find(event, session(here, Phase::Locked)).unwrap();
        assert_eq!(run.label(), "CheckCredit (CreditCheck)");
        assert!(table.admits(
            Event::Succeed,
            session(here, Phase::Running),
            session(SessionState::PaymentAndBillingAddress, Phase::Open)
        ));
        assert!(table.admits(
            Event::Succeed,
            session(SessionState::Taxes, Phase::Running),
            session(here, Phase::Open)
        ));
    }

    #[test]
    fn a_custom_step_names_its_provider_and_only_a_custom_step_does() {
        let build = |change: &dyn Fn(&mut Template)| {
            let mut template = Template::standard();
            assert!(template.insert_step(SessionState::Taxes, credit_check()));
            change(&mut template);
            TransitionTable::build(template)
        };
        let here = credit_check().state;
        let index = |t: &Template, state| t.steps.iter().position(|s| s.state == state).unwrap();
        assert!(matches!(
            build(&|t| {
                let i = index(t, SessionState::new("Credit Check").unwrap());
                t.steps[i].provider = None;
            }),
            Err(TableError::BadProvider(s, _)) if s == here.as_str()
        ));
        assert!(matches!(
            build(&|t| {
                let i = index(t, SessionState::Inventory);
                t.steps[i].provider = Some("stock".into());
            }),
            Err(TableError::BadProvider(s, _)) if s == "Inventory"
        ));
        // Two steps invoked as the same custom action.
        let again = build(&|t| {
            let mut twin = credit_check();
            twin.state = SessionState::new("Credit Check Again").unwrap();
            twin.transition = Some("CheckCreditAgain".into());
            assert!(t.insert_step(SessionState::CheckoutSummary, twin));
        });
        assert_eq!(
            again.unwrap_err(),
            TableError::Duplicate("CreditCheck".into())
        );
    }

    #[test]
    fn a_custom_action_cannot_take_a_core_actions_name() {
        for name in ["priceCart", "updateCheckoutSessionAction"] {
            let mut template = Template::standard();
            let mut step = credit_check();
            step.kind = StepKind::Custom(crate::machine::CustomAction::new(name).unwrap());
            assert!(template.insert_step(SessionState::Taxes, step));
            assert_eq!(
                TransitionTable::build(template).unwrap_err(),
                TableError::CustomNamedAsCore(name.into())
            );
        }
    }

    #[test]
    fn stay_rows_are_preconditions_that_move_nothing_and_are_not_drawn() {
        let table = TransitionTable::standard();
        let cancel = Event::Action(Action::CancelCartAsyncOperation);
        let pending = Node::Cart(CartStatus::PendingClosed);
        assert_eq!(
            table.find_stay(cancel, pending).map(|r| r.to),
            Some(pending)
        );
        assert!(table.find(cancel, pending).is_none());
        assert!(!table.nodes().contains(&pending));
        // Every async step runs on a cart in Checkout, and on no other.
        for event in table.template().steps.iter().filter_map(Step::own_event) {
            let carts: Vec<Node> = table
                .sources(event)
                .into_iter()
                .filter(|n| n.machine() == Machine::Cart)
                .collect();
            assert_eq!(carts, [Node::Cart(CartStatus::Checkout)], "{event}");
        }
        // A worker reports on any cart but a Closed one.
        for event in WORKER_EVENTS {
            for status in CartStatus::ALL {
                let open = status != CartStatus::Closed;
                assert_eq!(
                    table.leaves(event, Node::Cart(status)),
                    open,
                    "{event} {status:?}"
                );
            }
        }
    }

    #[test]
    fn a_terminal_step_may_have_any_name() {
        let done = SessionState::new("Done").unwrap();
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
        assert_eq!(table.terminal(), Some(done));
        assert!(table.closes_into("Done"));
        // A finished checkout is archived where it ended: no cancel leaves it.
        let cancel = Event::Action(Action::CancelCartAsyncOperation);
        assert!(table.find(cancel, session(done, Phase::Open)).is_none());
    }

    #[test]
    fn a_store_can_remove_a_step() {
        let table = TransitionTable::build(Template::without_promotions()).unwrap();
        assert!(
            !table
                .nodes()
                .contains(&session(SessionState::CalculatePromotions, Phase::Open))
        );
        assert!(table.admits(
            Event::Succeed,
            session(SessionState::ConfirmPrice, Phase::Running),
            session(SessionState::ShippingCost, Phase::Open)
        ));
    }
}
