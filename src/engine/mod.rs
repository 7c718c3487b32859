//! The engine: the imperative shell around [`decide`](crate::machine::decide). It loads a
//! snapshot, decides, and commits the result in one version-checked store transaction,
//! retrying from a fresh read when a concurrent command won the compare-and-set.

mod provider_check;
mod provider_pool;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::Serialize;

pub use provider_check::MissingProvider;
pub use worker::{Claim, OperationReport, Performed, RESTART_BACKOFF, WorkerPool, run_restarting};

use crate::clock::{Clock, SystemClock};
use crate::error::{CheckoutError, ErrorCode, RecordKind, Stale, StoreError};
use crate::ids::RandomIds;
use crate::integrations::Integrations;
use crate::machine::{
    Action, Command, DecideContext, Event, IdSource, Node, OperationSettings, Output, Requirement,
    SessionNode, Snapshot, StepKind, Target, TransitionTable, Unmet, WorkerCommand,
};
use crate::model::{BackgroundOperation, KeyPrefix, OperationStatus, SfId};
use crate::store::{Commit, HistoryEntry, LoadKey, Reads, Store, load_reads};

/// A command as the engine carries it out: a user's, or one of its own workers'.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Input<'a> {
    /// A user's command, checked against its guards.
    User(&'a Command),
    /// A worker's command, fenced by the operation's status and attempt.
    Worker(&'a WorkerCommand),
}

impl Input<'_> {
    fn event(self, table: &TransitionTable) -> Event {
        match self {
            Input::User(command) => command.event(table),
            Input::Worker(command) => command.event(),
        }
    }
}

/// Engine settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EngineConfig {
    /// Timeout and retry limit of new operations.
    pub operations: OperationSettings,
    /// How many times a command is re-decided after losing a compare-and-set.
    pub max_attempts: u32,
    /// How long a worker's claim lasts without a heartbeat, in milliseconds: after a worker
    /// dies, its operation is retried (or failed) this long after its last heartbeat.
    pub lease_ms: u64,
    /// How often a worker renews its claim while the provider works, in milliseconds.
    pub heartbeat_ms: u64,
    /// How long an idle worker waits before it looks for work again, in milliseconds. Work
    /// this engine creates wakes it at once, and so does work another process commits to a
    /// store that announces it (PostgreSQL: see [`Store::watch_for_work`]).
    pub idle_poll_ms: u64,
    /// How many operations a worker claims at once, at most, where the store can claim
    /// several in one commit (PostgreSQL) and their work is computed in memory: see
    /// [`Engine::run_next_operations`]. 1 claims one at a time.
    pub claim_batch: usize,
    /// Whether an operation that runs where it starts (`runAsync` false, the flow driver's
    /// inline mode) is claimed in the commit that creates it, one commit fewer, so no worker
    /// can take it first. False leaves it New for an instant, to this caller or a worker.
    pub claim_inline: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            operations: OperationSettings::default(),
            max_attempts: 64,
            lease_ms: 30_000,
            heartbeat_ms: 10_000,
            idle_poll_ms: 50,
            claim_batch: 8,
            claim_inline: true,
        }
    }
}

/// Wakes idle workers when an operation is created.
#[derive(Debug, Default)]
pub(crate) struct WorkSignal {
    generation: Mutex<u64>,
    ready: Condvar,
}

impl WorkSignal {
    fn notify(&self) {
        let mut g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        *g = g.wrapping_add(1);
        self.ready.notify_all();
    }

    /// How many times work was announced: a worker reads it before it looks for work.
    fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `timeout` unless work was announced since `seen` was read, so an
    /// announcement made while the worker was looking is not lost.
    fn wait_since(&self, seen: u64, timeout: Duration) {
        let g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .ready
            .wait_timeout_while(g, timeout, |g| *g == seen)
            .map_err(|e| e.into_inner());
    }
}

/// A decided command, ready to commit.
pub(crate) struct Prepared {
    output: Output,
    commit: Option<Commit>,
    creates_work: bool,
}

/// A command the actor may issue now, as `permitted` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Permitted {
    /// The action (or `advance (screen)`) by name.
    pub name: String,
    /// The command that would be accepted.
    pub command: Command,
}

/// The checkout engine. Cheap to clone: every part is shared.
#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn Store>,
    table: Arc<TransitionTable>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    integrations: Arc<Integrations>,
    config: EngineConfig,
    signal: Arc<WorkSignal>,
    providers: Arc<provider_pool::ProviderPool>,
    /// Whether the provider check has run (every clone shares it).
    providers_checked: Arc<AtomicBool>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The store, clock, IDs and providers are trait objects; the template names the rest.
        f.debug_struct("Engine")
            .field("template", &self.table.template().name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over `store` with the standard template, the system clock, random IDs and
    /// no integrations mapped.
    pub fn new(store: Arc<dyn Store>) -> Engine {
        Engine {
            store,
            table: Arc::new(TransitionTable::standard()),
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
            integrations: Arc::new(Integrations::new()),
            config: EngineConfig::default(),
            signal: Arc::new(WorkSignal::default()),
            providers: Arc::new(provider_pool::ProviderPool::new()),
            providers_checked: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Uses another (validated) table.
    pub fn with_table(mut self, table: TransitionTable) -> Engine {
        self.table = Arc::new(table);
        self
    }

    /// Uses another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Engine {
        self.clock = clock;
        self
    }

    /// Uses another ID source.
    pub fn with_ids(mut self, ids: Arc<dyn IdSource>) -> Engine {
        self.ids = ids;
        self
    }

    /// Uses these integrations.
    pub fn with_integrations(mut self, integrations: Integrations) -> Engine {
        self.integrations = Arc::new(integrations);
        self
    }

    /// Uses these settings.
    pub fn with_config(mut self, config: EngineConfig) -> Engine {
        self.config = config;
        self
    }

    /// The table the engine runs.
    pub fn table(&self) -> &TransitionTable {
        &self.table
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The time on the engine's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// Loads what `command` needs, with `actor` as the acting user (`None`: a worker).
    fn load(&self, actor: Option<&str>, command: &Command) -> Result<Snapshot, CheckoutError> {
        let snapshot = match reads_of(actor, command) {
            Some(reads) => load_reads(self.store.as_ref(), &reads)?,
            None => Snapshot {
                user: match actor.map(SfId::parse) {
                    Some(Ok(id)) => self.store.user(&id)?,
                    _ => None,
                },
                ..Snapshot::default()
            },
        };
        Ok(with_edited_item(command, snapshot))
    }

    /// Carries out a command as `actor` (a user ID as given): decides it against a fresh
    /// snapshot and commits it atomically. A refused command changes nothing.
    ///
    /// Worker commands are of another type, [`WorkerCommand`], which only the engine's own
    /// worker paths carry out: a user cannot claim or report an operation.
    ///
    /// ```compile_fail,E0308
    /// # use cartflow::machine::WorkerCommand;
    /// # fn claim(engine: &cartflow::Engine, operation_id: cartflow::model::SfId) {
    /// let claim = WorkerCommand::Claim { operation_id, lease_ms: 1 };
    /// engine.execute("005000000000001AAA", claim);
    /// # }
    /// ```
    pub fn execute(&self, actor: &str, command: Command) -> Result<Output, CheckoutError> {
        let inline = matches!(
            command,
            Command::CartToOrder {
                run_async: false,
                ..
            } | Command::ActivateOrder {
                run_async: false,
                ..
            }
        );
        if !inline {
            return self.execute_checked(actor, &command);
        }
        let (output, claim) = self.execute_claiming(actor, &command)?;
        if let Output::BackgroundOperationId(id) = &output {
            self.run_inline(*id, claim)?;
        }
        Ok(output)
    }

    /// Carries out a user's command after the checks of its input alone.
    fn execute_checked(&self, actor: &str, command: &Command) -> Result<Output, CheckoutError> {
        self.execute_user_seeing(actor, command, &mut |_, commit| commit)
    }

    /// [`Engine::execute_checked`], handing `seen` each decision's commit as
    /// [`Engine::execute_seeing`] does. Runs no operation inline.
    pub(crate) fn execute_user_seeing(
        &self,
        actor: &str,
        command: &Command,
        seen: &mut dyn FnMut(&Snapshot, Option<Commit>) -> Option<Commit>,
    ) -> Result<Output, CheckoutError> {
        crate::machine::limits::check(command)?;
        self.check_custom_action(command)?;
        self.execute_seeing(Some(actor), Input::User(command), seen)
    }

    /// Carries out a user's command that starts an operation to run here, and, when
    /// [`EngineConfig::claim_inline`] allows, claims it in the same commit: the claim made,
    /// or `None` when the operation was left New (or none was started).
    pub(crate) fn execute_claiming(
        &self,
        actor: &str,
        command: &Command,
    ) -> Result<(Output, Option<Claim>), CheckoutError> {
        if !self.config.claim_inline {
            return Ok((self.execute_checked(actor, command)?, None));
        }
        let mut claimed = None;
        let mut fold = |snapshot: &Snapshot, commit: Option<Commit>| {
            claimed = None;
            let commit = commit?;
            match self.claiming_in(snapshot, &commit) {
                Some((folded, claim)) => {
                    claimed = Some(claim);
                    Some(folded)
                }
                None => Some(commit),
            }
        };
        let output = self.execute_user_seeing(actor, command, &mut fold)?;
        Ok((output, claimed))
    }

    /// A custom action the template does not have is refused as input, before anything is
    /// loaded: no guard could say more about it than that.
    fn check_custom_action(&self, command: &Command) -> Result<(), CheckoutError> {
        let template = self.table.template();
        match command {
            Command::RunCustom { action, .. } if template.custom_step(*action).is_none() => {
                Err(CheckoutError::InvalidInput(format!(
                    "template {:?} has no custom action {action}",
                    template.name
                )))
            }
            _ => Ok(()),
        }
    }

    /// runAsync false: runs the operation here, before the call answers (or waits for the
    /// worker that claimed it first), and succeeds only when it completed, its result
    /// committed. Otherwise (a concurrent cancel won, or the step failed) the call is refused
    /// with `INVALID_OPERATION` 409: its operation lost to what happened meanwhile.
    fn run_inline(&self, id: SfId, claim: Option<Claim>) -> Result<(), CheckoutError> {
        match claim {
            Some(claim) => drop(self.run_claimed(claim)?),
            None => drop(self.run_operation_now(id)?),
        }
        let operation = self.await_operation(id)?;
        let message = match operation.status {
            OperationStatus::Complete => return Ok(()),
            OperationStatus::Canceled => format!(
                "operation {id} was canceled before it finished; its step did not take effect"
            ),
            OperationStatus::Error => {
                format!("operation {id} ended in Error; the cart's CartValidationOutputs say why")
            }
            status => format!(
                "operation {id} is still {} after {} ms; poll the session",
                status.as_str(),
                self.inline_wait(&operation).as_millis()
            ),
        };
        Err(CheckoutError::Refused {
            requirement: Requirement::InlineOperationCompleted,
            code: ErrorCode::InvalidOperation,
            status: 409,
            message,
        })
    }

    /// The operation once it is no longer New or Running: at once when this thread ran it,
    /// else polled while a worker runs it, for at most [`Engine::inline_wait`].
    fn await_operation(&self, id: SfId) -> Result<BackgroundOperation, CheckoutError> {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let operation = self
                .store
                .operation(&id)?
                .ok_or(CheckoutError::Stale(Stale::Vanished(RecordKind::Operation)))?;
            if !operation.status.is_active() || started.elapsed() > self.inline_wait(&operation) {
                return Ok(operation);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// How long a runAsync-false call waits for a worker that claimed its operation: the
    /// provider's timeout plus one lease.
    fn inline_wait(&self, operation: &BackgroundOperation) -> Duration {
        Duration::from_millis(operation.timeout_ms.saturating_add(self.config.lease_ms))
    }

    /// Carries out a worker command (no acting user): claim, heartbeat, expiry or report.
    pub(crate) fn execute_worker(&self, command: &WorkerCommand) -> Result<Output, CheckoutError> {
        self.execute_as(None, Input::Worker(command))
    }

    fn execute_as(&self, actor: Option<&str>, input: Input<'_>) -> Result<Output, CheckoutError> {
        self.execute_seeing(actor, input, &mut |_, commit| commit)
    }

    /// [`Engine::execute_as`], handing `seen` each decision's snapshot and commit as it is
    /// made (again after a conflict) and committing the commit it answers: the last it is
    /// handed is the one committed.
    pub(crate) fn execute_seeing(
        &self,
        actor: Option<&str>,
        input: Input<'_>,
        seen: &mut dyn FnMut(&Snapshot, Option<Commit>) -> Option<Commit>,
    ) -> Result<Output, CheckoutError> {
        // Checked at the first command rather than at each builder call: by then the
        // template and the integrations are the ones the engine runs. Only the first caller
        // checks, and no other command waits for it.
        if !self.providers_checked.swap(true, Ordering::Relaxed) {
            self.warn_missing_providers();
        }
        let _span = tracing::info_span!("command", event = %input.event(&self.table)).entered();
        let actor_id = actor.and_then(|a| SfId::parse(a).ok());
        let reads = match input {
            Input::User(command) => reads_of(actor, command),
            Input::Worker(command) => Some(Reads {
                key: LoadKey::Operation(command.operation_id()),
                lines: false,
                user: None,
            }),
        };
        let Some(reads) = reads else {
            // A target that is no ID names no record: decided on no cart, it writes nothing.
            let snapshot = match input {
                Input::User(command) => self.load(actor, command)?,
                Input::Worker(_) => Snapshot::default(),
            };
            return Ok(self.prepare(actor_id, &snapshot, input)?.output);
        };
        for _ in 0..self.config.max_attempts.max(1) {
            let mut decided = None;
            let result = self.store.transact(&reads, &mut |snapshot| {
                let snapshot = match input {
                    Input::User(command) => with_edited_item(command, snapshot),
                    Input::Worker(_) => snapshot,
                };
                let mut prepared = self.prepare(actor_id, &snapshot, input);
                let commit = prepared.as_mut().ok().and_then(|p| p.commit.take());
                let commit = seen(&snapshot, commit);
                decided = Some(prepared);
                Ok(commit)
            });
            match result {
                Ok(()) => {
                    let prepared = decided.ok_or_else(|| {
                        StoreError::Io("the store answered without deciding".into())
                    })??;
                    if prepared.creates_work {
                        self.signal.notify();
                    }
                    return Ok(prepared.output);
                }
                // Another command won the compare-and-set: decide again on what it wrote.
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(CheckoutError::Contention(self.config.max_attempts))
    }

    /// Decides `input` on `snapshot` and builds the commit (`None` when nothing changes).
    pub(crate) fn prepare(
        &self,
        actor: Option<SfId>,
        snapshot: &Snapshot,
        input: Input<'_>,
    ) -> Result<Prepared, CheckoutError> {
        let now = self.clock.now();
        let ctx = DecideContext {
            table: &self.table,
            now,
            ids: self.ids.as_ref(),
            settings: self.config.operations,
        };
        let decision = match input {
            Input::User(command) => crate::machine::decide(&ctx, snapshot, command)?,
            Input::Worker(command) => crate::machine::decide_worker(&ctx, snapshot, command)?,
        };
        if decision.changes.is_empty() {
            return Ok(Prepared {
                output: decision.output,
                commit: None,
                creates_work: false,
            });
        }
        let cart_id = snapshot
            .cart
            .as_ref()
            .map(|c| c.id)
            .ok_or(CheckoutError::Stale(Stale::Vanished(RecordKind::Cart)))?;
        let history = decision
            .moves
            .iter()
            .map(|m| HistoryEntry {
                at: now,
                actor,
                cart_id,
                event: decision.event,
                machine: m.machine,
                record: m.record,
                from: m.from.to_string(),
                to: m.to.to_string(),
            })
            .collect();
        let creates_work = decision
            .changes
            .operations
            .iter()
            .any(|op| op.status == crate::model::OperationStatus::New);
        tracing::debug!(event = %decision.event, cart = %cart_id, "decided");
        Ok(Prepared {
            output: decision.output,
            commit: Some(Commit {
                changes: decision.changes,
                history,
            }),
            creates_work,
        })
    }

    /// Every unmet requirement of `command` for `actor`, without changing anything (a dry run).
    pub fn check(&self, actor: &str, command: &Command) -> Result<Vec<Unmet>, CheckoutError> {
        let snapshot = self.load(Some(actor), command)?;
        Ok(crate::machine::check(
            &self.table,
            &snapshot,
            command,
            self.clock.now(),
        ))
    }

    /// What `actor` may do on a cart's checkout now: each command that would be accepted and
    /// would change something or answer something (a start that resumes the checkout answers
    /// its session; a cancel with nothing to cancel does neither, and is left out).
    pub fn permitted(&self, actor: &str, cart_id: &SfId) -> Result<Vec<Permitted>, CheckoutError> {
        let cart = cart_id.to_string();
        let snapshot = self.load(
            Some(actor),
            &Command::Cancel {
                cart_id: cart.clone(),
            },
        )?;
        let mut candidates = vec![
            Command::StartSession {
                cart_id: cart.clone(),
                initial_state: None,
            },
            Command::Cancel {
                cart_id: cart.clone(),
            },
        ];
        // Each async step through the one command that fires its event (an order action
        // through its own command, so its orderStatus is checked like a caller's), each
        // custom step through its custom action, and the payment step through its
        // authorisation.
        for step in &self.table.template().steps {
            if matches!(
                step.kind,
                StepKind::Async(_) | StepKind::Custom(_) | StepKind::Payment
            ) && let Some(command) = Command::for_step(step.kind, cart.clone())
            {
                candidates.push(command);
            }
        }
        if let Some(session) = snapshot.session.as_ref().filter(|s| !s.is_archived) {
            let from = Node::Session(SessionNode::At(session.state, crate::machine::Phase::Open));
            let current = session.state.map(|s| s.as_str().to_owned());
            if let Some(row) = self
                .table
                .find(Event::Action(Action::UpdateCheckoutSessionState), from)
                && let Some(next) = row.next_state
            {
                candidates.push(Command::UpdateSession {
                    session_id: session.id.to_string(),
                    next_state: next.as_str().to_owned(),
                    exp_current_state: current.clone(),
                });
            }
            let screen = self
                .table
                .find(Event::Advance, from)
                .or_else(|| self.table.find(Event::Close, from));
            if let Some(row) = screen
                && let Node::Session(SessionNode::At(Some(next), _)) = row.to
            {
                candidates.push(Command::Advance {
                    session_id: session.id.to_string(),
                    state: next.as_str().to_owned(),
                    exp_current_state: current,
                });
            }
        }
        // The choice of each offered delivery method the buyer has not chosen.
        if let Some(offered) = &snapshot.cart {
            let others = offered
                .delivery_options
                .iter()
                .filter(|o| offered.delivery_method_id.as_ref() != Some(&o.delivery_method_id));
            candidates.extend(others.map(|option| Command::SetDeliveryMethod {
                cart_id: cart.clone(),
                delivery_method_id: option.delivery_method_id.clone(),
            }));
        }
        // A command is permitted when deciding it now would succeed and change something;
        // the IDs it would take come from a scratch source and are thrown away.
        let scratch = crate::ids::SequentialIds::default();
        let ctx = DecideContext {
            table: &self.table,
            now: self.clock.now(),
            ids: &scratch,
            settings: self.config.operations,
        };
        let mut permitted = Vec::new();
        for command in candidates {
            // Cart-addressed candidates share the snapshot read above; only the
            // session-addressed ones (Update, a screen step) read their own.
            let session_snapshot;
            let snap = match command.target() {
                Target::Cart(_) => &snapshot,
                _ => {
                    session_snapshot = self.load(Some(actor), &command)?;
                    &session_snapshot
                }
            };
            let useful = |d: &crate::machine::Decision| {
                !d.changes.is_empty() || d.output != crate::machine::Output::Nothing
            };
            if crate::machine::decide(&ctx, snap, &command).is_ok_and(|d| useful(&d)) {
                permitted.push(Permitted {
                    name: command.event(&self.table).label().to_owned(),
                    command,
                });
            }
        }
        Ok(permitted)
    }

    /// Asks the store to wake this engine's idle workers when another process commits work.
    pub(crate) fn watch_for_work(&self) -> Option<crate::store::WorkWatch> {
        let signal = Arc::clone(&self.signal);
        match self.store.watch_for_work(Arc::new(move || signal.notify())) {
            Ok(watch) => watch,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the store for new work: idle workers poll");
                None
            }
        }
    }

    /// How many times new work was announced to this engine's idle workers so far.
    pub(crate) fn work_generation(&self) -> u64 {
        self.signal.generation()
    }

    /// Waits up to `timeout` for new work announced after `seen` (a
    /// [`work_generation`](Engine::work_generation)); returns at once if some already was.
    pub(crate) fn wait_for_work(&self, seen: u64, timeout: Duration) {
        self.signal.wait_since(seen, timeout);
    }

    pub(crate) fn integrations(&self) -> &Integrations {
        &self.integrations
    }
}

/// What `command` reads, with `actor` as the acting user (`None`: a worker); `None` when its
/// target is no ID at all.
fn reads_of(actor: Option<&str>, command: &Command) -> Option<Reads> {
    let key = match command.target() {
        Target::Cart(raw) => LoadKey::Cart(SfId::parse_kind(&raw, KeyPrefix::WebCart).ok()?),
        Target::Session(raw) => LoadKey::Session(SfId::parse(&raw).ok()?),
    };
    // An input that changes amounts, or an edit of the lines, which drops them: the cart's
    // lines, read in the view of the cart, whose version the commit checks.
    let lines = matches!(
        command,
        Command::SetDetails { .. } | Command::SetDeliveryMethod { .. } | Command::EditCart { .. }
    );
    let user = actor.and_then(|a| SfId::parse(a).ok());
    Some(Reads { key, lines, user })
}

/// An edit naming a line gets the line, if it is one of the cart's.
fn with_edited_item(command: &Command, mut snapshot: Snapshot) -> Snapshot {
    if let Command::EditCart {
        edit:
            crate::machine::CartEdit::SetQuantity { item_id, .. }
            | crate::machine::CartEdit::RemoveItem { item_id },
        ..
    } = command
        && let Ok(item) = SfId::parse(item_id)
    {
        snapshot.edited_item = snapshot.lines.iter().find(|line| line.id == item).cloned();
    }
    snapshot
}
