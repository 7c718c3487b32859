//! Workers: claim a New operation, call its provider outside any lock, report the outcome.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::Engine;
use crate::engine::Input;
use crate::engine::provider_pool::{Answer, ProviderPool};
use crate::error::CheckoutError;
use crate::integrations::{CartPatch, IntegrationRequest, PatchContext, Provider, Verdict};
use crate::machine::amounts;
use crate::machine::{
    Action, CartUpdate, CustomAction, Snapshot, StepOutcome, ValidationMessage, WorkerCommand,
};
use crate::model::{
    BackgroundOperation, CartDeliveryGroup, CartItem, KeyPrefix, Level, Order, OrderDeliveryGroup,
    OrderItem, OrderLifeCycleType, OrderStatus, ProviderKind, SfId, WebCart,
};
use crate::store::Commit;

/// The claim `commit` makes of operation `id`: the operation as it writes it, and the cart
/// as it writes it or else as the claim's snapshot read it.
fn claimed_in(commit: &Commit, id: SfId, read: Option<WebCart>) -> Option<Claim> {
    let changes = &commit.changes;
    let operation = changes.operations.iter().find(|op| op.id == id)?.clone();
    let written = changes.carts.iter().find(|c| c.id == operation.cart_id);
    let cart = written
        .cloned()
        .or(read)
        .filter(|c| c.id == operation.cart_id);
    Some(Claim {
        operation,
        cart,
        items: None,
    })
}

/// The records a claim of `created` is decided on: `snapshot` as `commit`, which starts
/// `created`, leaves it.
fn after_start(snapshot: &Snapshot, commit: &Commit, created: &BackgroundOperation) -> Snapshot {
    let changes = &commit.changes;
    let cart = changes.carts.iter().find(|c| c.id == created.cart_id);
    let session = changes
        .sessions
        .iter()
        .find(|s| s.id == created.checkout_session_id);
    Snapshot {
        cart: cart.cloned().or_else(|| snapshot.cart.clone()),
        session: session.cloned().or_else(|| snapshot.session.clone()),
        operation: Some(created.clone()),
        cart_has_active_operation: true,
        ..snapshot.clone()
    }
}

/// `start` with `claim`'s one operation written in place of the one it starts, at the
/// version the start gives it (one commit writes a record once), and both histories; `None`
/// when `claim` writes anything else.
fn folded(start: &Commit, claim: Commit) -> Option<Commit> {
    let [claimed] = <[BackgroundOperation; 1]>::try_from(claim.changes.operations.clone()).ok()?;
    if !claim.changes.is_empty_but_operations() {
        return None;
    }
    let mut folded = start.clone();
    let slot = folded
        .changes
        .operations
        .iter_mut()
        .find(|op| op.id == claimed.id)?;
    *slot = BackgroundOperation {
        version: slot.version,
        ..claimed
    };
    folded.history.extend(claim.history);
    Some(folded)
}

/// A payment step passes only on an authorisation, under a reference, of exactly the
/// order's grand total: a payment provider's pass that authorises nothing, another amount,
/// or an order without a total is unusable, so no order is activated unpaid. A decline needs
/// no authorisation, and the other steps' answers are not payments.
fn authorizes_the_order(
    op: &BackgroundOperation,
    outcome: &StepOutcome,
    patch: Option<&CartPatch>,
    order: Option<&Order>,
) -> Result<(), crate::integrations::ProviderError> {
    if op.provider_kind != Some(ProviderKind::Payment) || *outcome != StepOutcome::Passed {
        return Ok(());
    }
    let reference = patch.and_then(|p| p.payment_authorization_id.as_deref());
    if reference.is_none_or(|r| r.trim().is_empty()) {
        return Err(crate::integrations::ProviderError(
            "the payment provider passed without an authorisation reference".into(),
        ));
    }
    let authorized = patch.and_then(|p| p.authorized_amount);
    let total = order.and_then(|o| o.grand_total_amount);
    if total.is_some() && authorized == total {
        return Ok(());
    }
    Err(crate::integrations::ProviderError(format!(
        "the payment provider authorised {authorized:?}, not the order's grand total {total:?}"
    )))
}

/// What an order step produced: its outcome, no cart update, and the order.
type OrderOutcome = (StepOutcome, Option<CartUpdate>, Option<Order>);

/// What happened to one operation a worker ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperationReport {
    /// The operation.
    pub operation_id: SfId,
    /// Its name (the action or step it runs, such as `checkCartInventoryAction`).
    pub name: String,
    /// Its cart.
    pub cart_id: SfId,
    /// The attempt the worker held.
    pub attempt: u32,
    /// What the provider answered.
    pub outcome: StepOutcome,
    /// False when the report was discarded because the operation moved on (cancelled, or
    /// claimed again after the lease ran out).
    pub applied: bool,
}

/// An operation a worker holds the claim of, from [`Engine::claim_operation`]: the worker
/// renews it with [`Engine::heartbeat`], does its work with [`Engine::perform`] and reports
/// with [`Engine::report`]. A claim that is never reported (its worker died) ends when its
/// lease does, at the next [`Engine::sweep_expired`].
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    operation: BackgroundOperation,
    /// The cart as the claim's own snapshot held it, when the claim read one: the work starts
    /// from it instead of reading the cart again, as a read an instant later could have
    /// answered; what guards a report against a cart changed meanwhile is unchanged.
    cart: Option<WebCart>,
    /// The cart's lines, when a batch claim read them with the other claims' lines, as a
    /// read at the start of the work could have answered.
    items: Option<Arc<Vec<CartItem>>>,
}

impl Claim {
    /// The claimed operation, as the claim left it (Running, with this claim's attempt).
    pub fn operation(&self) -> &BackgroundOperation {
        &self.operation
    }
}

/// A claimed operation's work, done and not yet reported: what [`Engine::report`] commits.
/// Reporting it twice (a clone of it) applies it at most once: the second report is fenced.
#[derive(Debug, Clone, PartialEq)]
pub struct Performed {
    operation_id: SfId,
    name: String,
    cart_id: SfId,
    attempt: u32,
    outcome: StepOutcome,
    update: Option<CartUpdate>,
    order: Option<Order>,
}

impl Performed {
    /// What the provider (or the engine's own order work) answered.
    pub fn outcome(&self) -> &StepOutcome {
        &self.outcome
    }
}

impl Engine {
    /// Claims the oldest New operation, runs it, and reports its outcome. `Ok(None)` when
    /// there is nothing to claim (another worker may have won every candidate).
    pub fn run_next_operation(&self) -> Result<Option<OperationReport>, CheckoutError> {
        match self.claim_operation()? {
            Some(claim) => self.run_claimed(claim).map(Some),
            None => Ok(None),
        }
    }

    /// Claims up to [`EngineConfig::claim_batch`](crate::EngineConfig) operations at once,
    /// where the store can ([`Store::claim_batch`](crate::Store::claim_batch)): the oldest
    /// claimable one, and more only while it and each further one are computed in memory
    /// (the built-in tables, the engine's own order steps), whose work is too quick to leave
    /// the others' leases waiting. Runs and reports each in turn; a claim whose lease has run
    /// half out by its turn is renewed first, and skipped if it was lost. The outcome of
    /// each, in order; empty when there was nothing to claim.
    pub fn run_next_operations(
        &self,
    ) -> Result<Vec<Result<OperationReport, CheckoutError>>, CheckoutError> {
        let mut claims = self.claim_batch()?.into_iter();
        let Some(first) = claims.next() else {
            return Ok(Vec::new());
        };
        let mut outcomes = vec![self.run_claimed(first)];
        outcomes.extend(claims.filter_map(|claim| self.run_in_turn(claim)));
        Ok(outcomes)
    }

    /// Claims the oldest claimable operation for this worker, or `Ok(None)` when there is
    /// none (another worker may have won every candidate). The first of the steps (claim,
    /// [`heartbeat`](Engine::heartbeat), [`perform`](Engine::perform),
    /// [`report`](Engine::report)) that [`Engine::run_next_operation`] takes in one call, for
    /// callers that run their own worker loop.
    pub fn claim_operation(&self) -> Result<Option<Claim>, CheckoutError> {
        self.claim_next()
    }

    /// Renews `claim`'s lease for [`EngineConfig::lease_ms`](crate::EngineConfig) from now.
    /// [`CheckoutError::Fenced`] when the claim was lost (cancelled, expired, or taken over):
    /// the worker should stop working for it.
    pub fn heartbeat(&self, claim: &Claim) -> Result<(), CheckoutError> {
        let command = WorkerCommand::Heartbeat {
            operation_id: claim.operation.id,
            attempt: claim.operation.attempt,
            lease_ms: self.config.lease_ms,
        };
        self.execute_worker(&command).map(|_| ())
    }

    /// Does `claim`'s work (the provider's check, or the engine's own order step) and returns
    /// it unreported. Changes nothing but the claim's heartbeats.
    pub fn perform(&self, claim: &Claim) -> Result<Performed, CheckoutError> {
        let op = &claim.operation;
        let (outcome, update, order) = self.work_on(claim)?;
        Ok(Performed {
            operation_id: op.id,
            name: op.name.clone(),
            cart_id: op.cart_id,
            attempt: op.attempt,
            outcome,
            update,
            order,
        })
    }

    /// Commits `performed`'s outcome. A report that no longer holds (the operation moved on,
    /// or its records changed so that it no longer fits them) is discarded: nothing of it is
    /// applied, and the answer says `applied: false`. It takes the work by value, so that a
    /// large cart's lines are not copied on the way to the store; a caller that reports
    /// twice clones it first.
    pub fn report(&self, performed: Performed) -> Result<OperationReport, CheckoutError> {
        self.report_seeing(performed, &mut |_, commit| commit)
    }

    /// [`Engine::report`], handing `seen` each decision's commit as
    /// [`Engine::execute_seeing`] does.
    fn report_seeing(
        &self,
        performed: Performed,
        seen: &mut dyn FnMut(&Snapshot, Option<Commit>) -> Option<Commit>,
    ) -> Result<OperationReport, CheckoutError> {
        let Performed {
            operation_id,
            name,
            cart_id,
            attempt,
            outcome,
            update,
            order,
        } = performed;
        let finish = WorkerCommand::Finish {
            operation_id,
            attempt,
            outcome: outcome.clone(),
            update,
            order,
        };
        let applied = match self.execute_seeing(None, Input::Worker(&finish), seen) {
            Ok(_) => true,
            Err(CheckoutError::Fenced(reason)) => {
                tracing::info!(operation = %operation_id, %reason, "discarded a stale report");
                false
            }
            // The report no longer fits the records it would change (its cart or a line
            // vanished, or it names another cart's): nothing of it is applied.
            Err(CheckoutError::Stale(reason)) => {
                tracing::warn!(operation = %operation_id, %reason, "discarded an unusable report");
                false
            }
            Err(e) => return Err(e),
        };
        Ok(OperationReport {
            operation_id,
            name,
            cart_id,
            attempt,
            outcome,
            applied,
        })
    }

    /// Claims and runs one particular operation in this thread (for `runAsync` false).
    /// `Ok(None)` when a worker claimed it first.
    pub fn run_operation_now(&self, id: SfId) -> Result<Option<OperationReport>, CheckoutError> {
        let command = WorkerCommand::Claim {
            operation_id: id,
            lease_ms: self.config.lease_ms,
        };
        // The claim as its commit wrote it, so the work need not read the operation again.
        let mut claimed = None;
        let mut keep = |snapshot: &Snapshot, commit: Option<Commit>| {
            claimed = commit
                .as_ref()
                .and_then(|c| claimed_in(c, id, snapshot.cart.clone()));
            commit
        };
        match self.execute_seeing(None, Input::Worker(&command), &mut keep) {
            Ok(_) => {}
            // A worker claimed it first (or a cancel won).
            Err(CheckoutError::Fenced(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut kept: Vec<Claim> = claimed.into_iter().collect();
        self.run_claimed(self.kept_or_read(id, &mut kept)?)
            .map(Some)
    }

    /// Runs operations until none is New. Returns how many ran.
    pub fn run_until_idle(&self) -> Result<usize, CheckoutError> {
        let mut count = 0;
        while self.run_next_operation()?.is_some() {
            count += 1;
        }
        Ok(count)
    }

    /// Ends every claim whose lease ran out (its worker died or hung): the operation goes back
    /// to New while retries remain, else fails with a SystemError. Returns how many it ended.
    pub fn sweep_expired(&self) -> Result<usize, CheckoutError> {
        let mut swept = 0;
        for id in self.store.expired_operations(self.clock.now(), 64)? {
            let Some(op) = self.store.operation(&id)? else {
                continue;
            };
            let command = WorkerCommand::Expire {
                operation_id: id,
                attempt: op.attempt,
            };
            match self.execute_worker(&command) {
                Ok(_) => {
                    swept += 1;
                    metrics::counter!("cartflow_lease_expiries_total").increment(1);
                }
                // Its worker finished or heartbeat meanwhile, or a cancel won.
                Err(CheckoutError::Fenced(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(swept)
    }

    /// Claims one operation through the store's queue. The claim keeps the operation as its
    /// commit wrote it and the cart its snapshot read, so the work reads neither again.
    fn claim_next(&self) -> Result<Option<Claim>, CheckoutError> {
        let mut last: Option<Claim> = None;
        let mut claim = |snapshot: Snapshot| {
            let (commit, claim) = self.claim_commit(snapshot).unzip();
            last = claim.flatten();
            Ok(commit)
        };
        let Some(id) = self.store.claim_next(&mut claim)? else {
            return Ok(None);
        };
        // The closure's last commit is the one the store committed; read it back otherwise.
        self.kept_or_read(id, &mut last.into_iter().collect())
            .map(Some)
    }

    /// Claims up to [`EngineConfig::claim_batch`](crate::EngineConfig) operations in one
    /// commit where the store can: the oldest claimable one, and more only while it and each
    /// further one are [worked in memory](Engine::works_in_memory).
    fn claim_batch(&self) -> Result<Vec<Claim>, CheckoutError> {
        let mut kept: Vec<Claim> = Vec::new();
        let mut batchable = false;
        let mut offer = |snapshot: Snapshot, taken: usize| {
            let quick = self.works_in_memory(&snapshot);
            if taken == 0 {
                batchable = quick;
            } else if !(batchable && quick) {
                return Ok(None);
            }
            let Some((commit, claim)) = self.claim_commit(snapshot) else {
                return Ok(None);
            };
            if let Some(claim) = claim {
                // A candidate offered again (the store's first try lost a race) is kept once.
                kept.retain(|c| c.operation.id != claim.operation.id);
                kept.push(claim);
            }
            Ok(Some(commit))
        };
        let ids = self
            .store
            .claim_batch(self.config.claim_batch.max(1), &mut offer)?;
        let mut claims = ids
            .into_iter()
            .map(|id| self.kept_or_read(id, &mut kept))
            .collect::<Result<Vec<_>, _>>()?;
        if claims.len() > 1 {
            self.read_lines_of(&mut claims)?;
        }
        Ok(claims)
    }

    /// Reads the lines of every claim's cart at once ([`Store::cart_items_of`]), where one
    /// read each would cost a statement each.
    ///
    /// [`Store::cart_items_of`]: crate::Store::cart_items_of
    fn read_lines_of(&self, claims: &mut [Claim]) -> Result<(), CheckoutError> {
        let carts: Vec<SfId> = claims.iter().map(|c| c.operation.cart_id).collect();
        let lines = self.store.cart_items_of(&carts)?;
        for claim in claims {
            claim.items = lines.get(&claim.operation.cart_id).cloned();
        }
        Ok(())
    }

    /// The lines of `claim`'s cart: those its batch read, or else read now.
    fn lines_of(&self, claim: &Claim) -> Result<Arc<Vec<CartItem>>, CheckoutError> {
        match &claim.items {
            Some(items) => Ok(Arc::clone(items)),
            None => Ok(self.store.cart_items_shared(&claim.operation.cart_id)?),
        }
    }

    /// The claim of `id` among `kept` (taken out of it), or else as the store holds it.
    fn kept_or_read(&self, id: SfId, kept: &mut Vec<Claim>) -> Result<Claim, CheckoutError> {
        if let Some(at) = kept.iter().position(|c| c.operation.id == id) {
            return Ok(kept.swap_remove(at));
        }
        let operation = self.store.operation(&id)?.ok_or_else(|| {
            CheckoutError::Defect(format!("claimed operation {id} cannot be read back"))
        })?;
        Ok(Claim {
            operation,
            cart: None,
            items: None,
        })
    }

    /// The commit that claims the operation `snapshot` offers, with the claim it makes (when
    /// the commit shows it), or `None` when the candidate is no longer claimable: it is
    /// passed by.
    fn claim_commit(&self, snapshot: Snapshot) -> Option<(Commit, Option<Claim>)> {
        let id = snapshot.operation.as_ref()?.id;
        let command = WorkerCommand::Claim {
            operation_id: id,
            lease_ms: self.config.lease_ms,
        };
        match self.prepare(None, &snapshot, Input::Worker(&command)) {
            Ok(prepared) => {
                let commit = prepared.commit?;
                let claim = claimed_in(&commit, id, snapshot.cart);
                Some((commit, claim))
            }
            Err(CheckoutError::Fenced(_)) => None,
            Err(e) => {
                tracing::warn!(operation = %id, error = %e, "cannot claim; passed by");
                None
            }
        }
    }

    /// Whether the work of the operation `snapshot` offers is computed in memory, in bounded
    /// time: the engine's own order steps, a provider that says so (the built-in tables), or
    /// work that fails at once (no cart, no provider). Only such work is claimed in batches,
    /// so no claim waits out its lease behind a slow one.
    fn works_in_memory(&self, snapshot: &Snapshot) -> bool {
        let (Some(op), Some(cart)) = (&snapshot.operation, &snapshot.cart) else {
            return true;
        };
        let own = Action::from_api_name(&op.name)
            .filter(|_| op.provider_kind.is_none())
            .is_some_and(|a| matches!(a, Action::CartToOrder | Action::ActivateOrder));
        own || self
            .provider_for(op, cart.web_store_id)
            .map_or(true, |provider| provider.computes_in_memory())
    }

    /// Runs a claim of a batch whose turn came after others': renewed first when half its
    /// lease has run out, skipped when it was lost meanwhile.
    fn run_in_turn(&self, claim: Claim) -> Option<Result<OperationReport, CheckoutError>> {
        let half = chrono::Duration::milliseconds((self.config.lease_ms / 2) as i64);
        let runs_low = claim
            .operation
            .expires_at
            .is_none_or(|end| end - self.clock.now() < half);
        if runs_low {
            match self.heartbeat(&claim) {
                Ok(()) => {}
                Err(CheckoutError::Fenced(reason)) => {
                    let id = claim.operation.id;
                    tracing::info!(operation = %id, %reason, "a batched claim was lost before its turn");
                    return None;
                }
                Err(e) => return Some(Err(e)),
            }
        }
        Some(self.run_claimed(claim))
    }

    /// `commit` with the claim of the operation it creates folded in, decided on the records
    /// as `commit` leaves them, and that claim; `None` when it creates none, or the claim is
    /// refused or writes more than the operation (then `commit` goes alone).
    pub(crate) fn claiming_in(
        &self,
        snapshot: &Snapshot,
        commit: &Commit,
    ) -> Option<(Commit, Claim)> {
        let created = commit
            .changes
            .operations
            .iter()
            .find(|op| op.status == crate::model::OperationStatus::New)?;
        let (claim_commit, claim) = self.claim_commit(after_start(snapshot, commit, created))?;
        let mut claim = claim?;
        let folded = folded(commit, claim_commit)?;
        claim.operation.version = created.version;
        Some((folded, claim))
    }

    /// Performs and reports `claim`, counting the outcome in `cartflow_operations_total`.
    pub(crate) fn run_claimed(&self, claim: Claim) -> Result<OperationReport, CheckoutError> {
        self.run_claimed_seeing(claim, &mut |_, commit| commit)
    }

    /// [`Engine::run_claimed`], handing `seen` the report's commit as
    /// [`Engine::execute_seeing`] does.
    pub(crate) fn run_claimed_seeing(
        &self,
        claim: Claim,
        seen: &mut dyn FnMut(&Snapshot, Option<Commit>) -> Option<Commit>,
    ) -> Result<OperationReport, CheckoutError> {
        let performed = self.perform(&claim)?;
        let report = self.report_seeing(performed, seen)?;
        let result = match (&report.outcome, report.applied) {
            (_, false) => "discarded",
            (StepOutcome::Passed, _) => "passed",
            (StepOutcome::Failed(_), _) => "failed",
            (StepOutcome::SystemFailure(_), _) => "system_failure",
        };
        metrics::counter!("cartflow_operations_total", "name" => claim.operation.name.clone(), "outcome" => result)
            .increment(1);
        Ok(report)
    }

    /// An operation's work: the engine's own order steps, or the store's provider.
    fn work_on(&self, claim: &Claim) -> Result<OrderOutcome, CheckoutError> {
        let op = &claim.operation;
        let cart = match &claim.cart {
            Some(cart) => Some(cart.clone()),
            None => self.store.cart(&op.cart_id)?,
        };
        Ok(match cart {
            None => (
                StepOutcome::SystemFailure(format!("cart {} no longer exists", op.cart_id)),
                None,
                None,
            ),
            // Only the engine's own work (no provider kind) makes or activates an order: a
            // custom action may share an order action's name.
            Some(cart) => {
                match Action::from_api_name(&op.name).filter(|_| op.provider_kind.is_none()) {
                    Some(Action::CartToOrder) => self.draft_order(&cart, &self.lines_of(claim)?)?,
                    Some(Action::ActivateOrder) => self.activate_order(op)?,
                    _ => {
                        let (outcome, update) = self.run_integration(claim, cart)?;
                        (outcome, update, None)
                    }
                }
            }
        })
    }

    /// The provider `op` runs for `store`: a custom step's by the name the template's step
    /// gives it, any other by its kind. `Err` says why there is none to run.
    fn provider_for(&self, op: &BackgroundOperation, store: SfId) -> Result<Provider, String> {
        let kind = op.provider_kind.unwrap_or(ProviderKind::Inventory);
        if kind != ProviderKind::Custom {
            return Ok(self.integrations().provider(store, kind));
        }
        let name = CustomAction::new(&op.name)
            .ok()
            .and_then(|action| self.table.template().custom_step(action))
            .and_then(|step| step.provider.as_deref())
            .ok_or_else(|| format!("the template has no custom step {:?}", op.name))?;
        self.integrations()
            .custom(store, name)
            .ok_or_else(|| format!("store {store} registers no custom provider {name:?}"))
    }

    /// Runs the store's provider of the operation (by kind, or a custom step's by name),
    /// outside any lock, with a timeout and heartbeats.
    fn run_integration(
        &self,
        claim: &Claim,
        cart: WebCart,
    ) -> Result<(StepOutcome, Option<CartUpdate>), CheckoutError> {
        let op = &claim.operation;
        let provider = match self.provider_for(op, cart.web_store_id) {
            Ok(provider) => provider,
            Err(reason) => return Ok((StepOutcome::SystemFailure(reason), None)),
        };
        if op.provider_kind == Some(ProviderKind::Payment) && matches!(provider, Provider::Internal)
        {
            // No order is ever placed on an unauthorised payment.
            let message = ValidationMessage {
                level: Level::Error,
                message: "This store has no payment gateway configured.".into(),
                related_entity_id: Some(cart.id),
            };
            return Ok((StepOutcome::Failed(vec![message]), None));
        }
        let items = self.lines_of(claim)?;
        let order = match op.provider_kind {
            Some(ProviderKind::Payment) => self.order_of(op)?,
            _ => None,
        };
        let request = IntegrationRequest {
            operation_id: op.id,
            items: Arc::clone(&items),
            cart: cart.clone(),
            order: order.clone(),
        };
        let heartbeat = WorkerCommand::Heartbeat {
            operation_id: op.id,
            attempt: op.attempt,
            lease_ms: self.config.lease_ms,
        };
        let beat = || match self.execute_worker(&heartbeat) {
            Ok(_) => true,
            // The claim was lost: stop working for it.
            Err(CheckoutError::Fenced(_)) => false,
            // A store hiccup: keep working; the completion will tell.
            Err(_) => true,
        };
        let started = self.clock.now();
        let (outcome, patch) = call_provider(
            &self.providers,
            provider,
            request,
            Duration::from_millis(op.timeout_ms),
            Duration::from_millis(self.config.heartbeat_ms.max(1)),
            &beat,
        );
        let (outcome, patch) = self.in_time(started, op.timeout_ms, outcome, patch);
        let new_id = |kind| self.ids.next_id(kind);
        let ctx = PatchContext {
            kind: op.provider_kind,
            now: self.clock.now(),
            new_id: &new_id,
        };
        let applied = match authorizes_the_order(op, &outcome, patch.as_ref(), order.as_ref()) {
            Ok(()) => patch.map(|p| crate::integrations::apply_patch(&cart, &items, &p, &ctx)),
            Err(e) => Some(Err(e)),
        };
        Ok(match applied {
            None => (outcome, None),
            Some(Ok(update)) => (outcome, Some(update)),
            Some(Err(e)) => (
                StepOutcome::SystemFailure(format!("the provider's answer is unusable: {e}")),
                None,
            ),
        })
    }

    /// The provider's answer, or a timeout when the engine's clock says it came later than
    /// `timeout_ms` after `started`: the wait measures the machine's time, and this the
    /// engine's, so an injected clock (a simulation's) decides too.
    fn in_time(
        &self,
        started: chrono::DateTime<chrono::Utc>,
        timeout_ms: u64,
        outcome: StepOutcome,
        patch: Option<CartPatch>,
    ) -> (StepOutcome, Option<CartPatch>) {
        let took = self.clock.now().signed_duration_since(started);
        if took.num_milliseconds() <= i64::try_from(timeout_ms).unwrap_or(i64::MAX) {
            return (outcome, patch);
        }
        let reason = format!("the provider did not answer within {timeout_ms} ms");
        (StepOutcome::SystemFailure(reason), None)
    }

    /// The order of the operation's session, if it has one.
    fn order_of(&self, op: &BackgroundOperation) -> Result<Option<Order>, CheckoutError> {
        let order_id = self
            .store
            .session(&op.checkout_session_id)?
            .and_then(|s| s.order_id);
        Ok(match order_id {
            Some(id) => self.store.order(&id)?,
            None => None,
        })
    }

    /// `cartToOrderAction`'s work: a Draft order with one line per cart line.
    fn draft_order(
        &self,
        cart: &WebCart,
        items: &[CartItem],
    ) -> Result<OrderOutcome, CheckoutError> {
        if items.is_empty() {
            let message = ValidationMessage {
                level: Level::Error,
                message: "The cart has no lines to order.".into(),
                related_entity_id: Some(cart.id),
            };
            return Ok((StepOutcome::Failed(vec![message]), None, None));
        }
        if !cart.delivery_options.is_empty() && amounts::delivery_fee(cart).is_none() {
            let message = ValidationMessage {
                level: Level::Error,
                message: "The cart's delivery group has no delivery method: choose one of those \
                          offered."
                    .into(),
                related_entity_id: Some(CartDeliveryGroup::id_of(&cart.id)),
            };
            return Ok((StepOutcome::Failed(vec![message]), None, None));
        }
        let order_id = self.ids.next_id(KeyPrefix::Order);
        let order = Order {
            id: order_id,
            cart_id: cart.id,
            web_store_id: cart.web_store_id,
            account_id: cart.account_id,
            owner_id: cart.owner_id,
            status: OrderStatus::Draft,
            items: items
                .iter()
                .map(|line| OrderItem {
                    id: Some(self.ids.next_id(KeyPrefix::OrderItem)),
                    cart_item_id: line.id,
                    sku: line.sku.clone(),
                    product2_id: line.product2_id.clone(),
                    quantity: line.quantity,
                    item_type: line.item_type,
                    unit_price: line.sales_price,
                    total_price: line.total_price,
                    adjustment_amount: line.adjustment_amount,
                    tax_amount: line.tax_amount,
                })
                .collect(),
            deliver_to: cart.deliver_to.clone(),
            delivery_method_id: cart.delivery_method_id.clone(),
            delivery_group: Some(OrderDeliveryGroup::from_cart(
                self.ids.next_id(KeyPrefix::OrderDeliveryGroup),
                order_id,
                cart,
            )),
            // Only the payment step, after the draft, authorises it: an authorisation the
            // cart still holds from an earlier, cancelled checkout was for another order.
            payment_authorization: None,
            payment_authorization_id: None,
            authorized_amount: None,
            grand_total_amount: cart.grand_total_amount,
            created_date: self.clock.now(),
            activated_date: None,
            order_summary_id: None,
            order_life_cycle_type: OrderLifeCycleType::default(),
            version: 0,
        };
        Ok((StepOutcome::Passed, None, Some(order)))
    }

    /// `activateOrderAction`'s work: the session's Draft order becomes Activated, with an
    /// OrderSummary.
    fn activate_order(&self, op: &BackgroundOperation) -> Result<OrderOutcome, CheckoutError> {
        let order = self
            .store
            .session(&op.checkout_session_id)?
            .and_then(|s| s.order_id)
            .map(|id| self.store.order(&id))
            .transpose()?
            .flatten();
        let Some(mut order) = order.filter(|o| o.status == OrderStatus::Draft) else {
            let reason = "the session has no Draft order to activate".to_owned();
            return Ok((StepOutcome::SystemFailure(reason), None, None));
        };
        // Checked again here: an Error output may have arrived after the action was accepted.
        let blocked = self
            .store
            .validation_outputs(&op.cart_id)?
            .iter()
            .any(|o| o.level == Level::Error && !o.is_dismissed);
        if blocked {
            let reason = "the cart has Error-level validation outputs".to_owned();
            return Ok((StepOutcome::SystemFailure(reason), None, None));
        }
        // The order already holds its payment's authorisation: the payment step wrote it
        // onto the Draft order when it passed.
        // The accepted call's choice, kept on its operation; an activation queued before
        // operations carried one is UNMANAGED, the absent input's meaning.
        order.order_life_cycle_type = op.order_life_cycle_type.unwrap_or_default();
        order.status = OrderStatus::Activated;
        order.activated_date = Some(self.clock.now());
        order.order_summary_id = Some(self.ids.next_id(KeyPrefix::OrderSummary));
        Ok((StepOutcome::Passed, None, Some(order)))
    }

    /// Starts `threads` workers that run operations as they arrive and sweep expired claims
    /// when idle, until the pool is stopped or dropped. A worker whose loop panics is logged,
    /// counted ([`WorkerPool::restarts`]) and started again after [`RESTART_BACKOFF`].
    pub fn start_workers(&self, threads: usize) -> WorkerPool {
        let stop = Arc::new(AtomicBool::new(false));
        let restarts = Arc::new(AtomicU64::new(0));
        let handles = (0..threads.max(1))
            .map(|n| {
                let engine = self.clone();
                let stop = Arc::clone(&stop);
                let restarts = Arc::clone(&restarts);
                thread::Builder::new()
                    .name(format!("cartflow-worker-{n}"))
                    .spawn(move || {
                        let stopped = || stop.load(Ordering::Acquire);
                        run_restarting(
                            &stopped,
                            &restarts,
                            &|pause| engine.pause_unless(pause, &stopped),
                            &mut || engine.work_until(&stopped),
                        );
                    })
                    .expect("spawning a worker thread")
            })
            .collect();
        WorkerPool {
            engine: self.clone(),
            stop,
            restarts,
            handles,
            watch: self.watch_for_work(),
        }
    }

    /// One worker's loop: run operations, sweep expired claims when idle, until `stopped`.
    fn work_until(&self, stopped: &dyn Fn() -> bool) {
        while !stopped() {
            // Read before looking, so work announced while this worker looks wakes it.
            let seen = self.work_generation();
            match self.run_next_operations() {
                Ok(outcomes) if !outcomes.is_empty() => {
                    for e in outcomes.into_iter().filter_map(Result::err) {
                        tracing::warn!(error = %e, "worker step failed");
                    }
                }
                Ok(_) => {
                    if let Err(e) = self.sweep_expired() {
                        tracing::warn!(error = %e, "sweeping expired claims failed");
                    }
                    self.wait_for_work(seen, self.idle_poll());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "worker step failed");
                    self.wait_for_work(seen, self.idle_poll());
                }
            }
        }
    }

    fn idle_poll(&self) -> Duration {
        Duration::from_millis(self.config.idle_poll_ms.max(1))
    }

    /// Waits `pause` (new work does not cut it short), or until `stopped`.
    fn pause_unless(&self, pause: Duration, stopped: &dyn Fn() -> bool) {
        let until = Instant::now() + pause;
        while !stopped() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.wait_for_work(self.work_generation(), left);
        }
    }
}

/// How long a worker whose loop panicked waits before it runs the loop again, so a fault
/// that recurs at once does not spin.
pub const RESTART_BACKOFF: Duration = Duration::from_millis(100);

/// Runs a worker's loop, `work`, until `stopped()`: `work` returns once it sees the stop. A
/// panic inside it is logged, counted (in `restarts` and the metric
/// `cartflow_worker_restarts_total`), and `work` runs again after `pause(RESTART_BACKOFF)`
/// (which returns early on a stop). The claim the loop held, if any, is retried once its lease
/// ends, like a dead worker's.
pub fn run_restarting(
    stopped: &dyn Fn() -> bool,
    restarts: &AtomicU64,
    pause: &dyn Fn(Duration),
    work: &mut dyn FnMut(),
) {
    while !stopped() {
        let Err(payload) = panic::catch_unwind(AssertUnwindSafe(&mut *work)) else {
            return;
        };
        restarts.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("cartflow_worker_restarts_total").increment(1);
        let thread = thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            panic = %panic_message(payload.as_ref()),
            "a worker thread panicked; it restarts"
        );
        pause(RESTART_BACKOFF);
    }
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text payload".into())
}

/// Runs the provider so that a timeout can be enforced and a panic contained, renewing the
/// claim every `heartbeat` while it works: on a thread of the engine's provider pool, or on
/// this thread when it only computes in memory ([`Provider::computes_in_memory`]). A pooled
/// provider that overruns is abandoned: its thread finishes in the background and its answer
/// is dropped. When a heartbeat finds the claim gone (cancelled, or taken over), waiting stops
/// at once.
fn call_provider(
    pool: &ProviderPool,
    provider: Provider,
    request: IntegrationRequest,
    timeout: Duration,
    heartbeat: Duration,
    beat: &dyn Fn() -> bool,
) -> (StepOutcome, Option<CartPatch>) {
    if provider.computes_in_memory() {
        return outcome_of(call_in_place(&provider, &request, timeout), timeout);
    }
    let rx = match pool.call(provider, request) {
        Ok(rx) => rx,
        Err(reason) => return (StepOutcome::SystemFailure(reason), None),
    };
    let deadline = Instant::now() + timeout;
    let answer = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(heartbeat)) {
            Err(mpsc::RecvTimeoutError::Timeout) if left > heartbeat => {
                if !beat() {
                    let reason = "the claim was lost while the provider worked".into();
                    return (StepOutcome::SystemFailure(reason), None);
                }
            }
            other => break other,
        }
    };
    outcome_of(answer, timeout)
}

/// Runs an in-memory provider on this thread: its answer, or its panic, or a timeout when
/// it answered later than `timeout` (the answer is then dropped, as a pooled one would be).
fn call_in_place(
    provider: &Provider,
    request: &IntegrationRequest,
    timeout: Duration,
) -> Result<Answer, mpsc::RecvTimeoutError> {
    let started = Instant::now();
    let answer = panic::catch_unwind(AssertUnwindSafe(|| provider.run(request)));
    if started.elapsed() > timeout {
        return Err(mpsc::RecvTimeoutError::Timeout);
    }
    Ok(answer)
}

/// The step's outcome from a provider's answer (or the lack of one), and its patch.
fn outcome_of(
    answer: Result<Answer, mpsc::RecvTimeoutError>,
    timeout: Duration,
) -> (StepOutcome, Option<CartPatch>) {
    let outcome = match answer {
        Ok(Ok(Ok(Verdict::Passed))) => StepOutcome::Passed,
        Ok(Ok(Ok(Verdict::Updated(patch)))) => return (StepOutcome::Passed, Some(patch)),
        Ok(Ok(Ok(Verdict::Failed(messages)))) if messages.is_empty() => {
            StepOutcome::SystemFailure("the provider failed the check without a message".into())
        }
        Ok(Ok(Ok(Verdict::Failed(messages)))) => StepOutcome::Failed(messages),
        Ok(Ok(Err(e))) => StepOutcome::SystemFailure(format!("the provider failed: {e}")),
        Ok(Err(payload)) => StepOutcome::SystemFailure(format!(
            "the provider panicked: {}",
            panic_message(payload.as_ref())
        )),
        Err(mpsc::RecvTimeoutError::Timeout) => StepOutcome::SystemFailure(format!(
            "the provider did not answer within {} ms",
            timeout.as_millis()
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            StepOutcome::SystemFailure("the provider ended without an answer".into())
        }
    };
    (outcome, None)
}

/// Worker threads; stops them (after their current operation) when stopped or dropped.
pub struct WorkerPool {
    engine: Engine,
    stop: Arc<AtomicBool>,
    restarts: Arc<AtomicU64>,
    handles: Vec<JoinHandle<()>>,
    /// Wakes the workers when another process commits work; stops when the pool is dropped.
    watch: Option<crate::store::WorkWatch>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("workers", &self.handles.len())
            .field("stopping", &self.stop.load(Ordering::Relaxed))
            .field("restarts", &self.restarts())
            .finish_non_exhaustive()
    }
}

impl WorkerPool {
    /// How many times a worker of this pool panicked and was started again.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Stops the workers and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.watch.take();
        self.stop.store(true, Ordering::Release);
        self.engine.signal.notify();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}
