//! Workers: claim a New operation, call its provider outside any lock, report the outcome.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::Engine;
use crate::error::CheckoutError;
use crate::integrations::{CartPatch, IntegrationRequest, Provider, Verdict};
use crate::machine::{Command, Snapshot, StepOutcome};
use crate::model::{BackgroundOperation, SfId};

/// What happened to one operation a worker ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperationReport {
    /// The operation.
    pub operation_id: SfId,
    /// The attempt the worker held.
    pub attempt: u32,
    /// What the provider answered.
    pub outcome: StepOutcome,
    /// False when the report was discarded because the operation moved on (cancelled, or
    /// claimed again after the lease ran out).
    pub applied: bool,
}

impl Engine {
    /// Claims the oldest New operation, runs it, and reports its outcome. `Ok(None)` when
    /// there is nothing to claim (another worker may have won every candidate).
    pub fn run_next_operation(&self) -> Result<Option<OperationReport>, CheckoutError> {
        match self.claim_next()? {
            Some(claimed) => self.run_claimed(claimed).map(Some),
            None => Ok(None),
        }
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
            let command = Command::Expire {
                operation_id: id,
                attempt: op.attempt,
            };
            match self.execute_as(None, &command) {
                Ok(_) => swept += 1,
                // Its worker finished or heartbeat meanwhile.
                Err(CheckoutError::Stale(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(swept)
    }

    /// Claims one operation through the store's queue.
    fn claim_next(&self) -> Result<Option<BackgroundOperation>, CheckoutError> {
        let lease_ms = self.config.lease_ms;
        let mut claim = |snapshot: Snapshot| {
            let Some(op) = &snapshot.operation else {
                return Ok(None);
            };
            let command = Command::Claim {
                operation_id: op.id,
                lease_ms,
            };
            // A candidate that is no longer claimable (stale) is passed by.
            match self.prepare(None, &snapshot, &command) {
                Ok(prepared) => Ok(prepared.commit),
                Err(CheckoutError::Stale(_)) => Ok(None),
                Err(e) => {
                    tracing::warn!(operation = %op.id, error = %e, "cannot claim; passed by");
                    Ok(None)
                }
            }
        };
        match self.store.claim_next(&mut claim)? {
            Some(id) => Ok(self.store.operation(&id)?),
            None => Ok(None),
        }
    }

    fn run_claimed(&self, op: BackgroundOperation) -> Result<OperationReport, CheckoutError> {
        let (outcome, update) = match self.store.cart(&op.cart_id)? {
            None => (
                StepOutcome::SystemFailure(format!("cart {} no longer exists", op.cart_id)),
                None,
            ),
            Some(cart) => {
                let provider = self
                    .integrations()
                    .provider(cart.web_store_id, op.provider_kind);
                let items = self.store.cart_items(&cart.id)?;
                let request = IntegrationRequest {
                    operation_id: op.id,
                    items: items.clone(),
                    cart: cart.clone(),
                };
                let heartbeat = Command::Heartbeat {
                    operation_id: op.id,
                    attempt: op.attempt,
                    lease_ms: self.config.lease_ms,
                };
                let beat = || match self.execute_as(None, &heartbeat) {
                    Ok(_) => true,
                    Err(CheckoutError::Stale(_)) => false,
                    // A store hiccup: keep working; the completion will tell.
                    Err(_) => true,
                };
                let (outcome, patch) = call_provider(
                    provider,
                    request,
                    Duration::from_millis(op.timeout_ms),
                    Duration::from_millis(self.config.heartbeat_ms.max(1)),
                    &beat,
                );
                match patch.map(|p| crate::integrations::apply_patch(&cart, &items, &p)) {
                    None => (outcome, None),
                    Some(Ok(update)) => (outcome, Some(update)),
                    Some(Err(e)) => (
                        StepOutcome::SystemFailure(format!(
                            "the provider's answer is unusable: {e}"
                        )),
                        None,
                    ),
                }
            }
        };
        let command = Command::Finish {
            operation_id: op.id,
            attempt: op.attempt,
            outcome: outcome.clone(),
            update,
        };
        let applied = match self.execute_as(None, &command) {
            Ok(_) => true,
            Err(CheckoutError::Stale(reason)) => {
                tracing::info!(operation = %op.id, %reason, "discarded a stale report");
                false
            }
            Err(e) => return Err(e),
        };
        Ok(OperationReport {
            operation_id: op.id,
            attempt: op.attempt,
            outcome,
            applied,
        })
    }

    /// Starts `threads` workers that run operations as they arrive and sweep expired claims
    /// when idle, until the pool is stopped or dropped.
    pub fn start_workers(&self, threads: usize) -> WorkerPool {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..threads.max(1))
            .map(|n| {
                let engine = self.clone();
                let stop = Arc::clone(&stop);
                thread::Builder::new()
                    .name(format!("cartflow-worker-{n}"))
                    .spawn(move || {
                        while !stop.load(Ordering::Acquire) {
                            match engine.run_next_operation() {
                                Ok(Some(_)) => {}
                                Ok(None) => {
                                    if let Err(e) = engine.sweep_expired() {
                                        tracing::warn!(error = %e, "sweeping expired claims failed");
                                    }
                                    engine.wait_for_work(Duration::from_millis(50));
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "worker step failed");
                                    engine.wait_for_work(Duration::from_millis(50));
                                }
                            }
                        }
                    })
                    .expect("spawning a worker thread")
            })
            .collect();
        WorkerPool {
            engine: self.clone(),
            stop,
            handles,
        }
    }
}

/// Runs the provider on its own thread so a timeout can be enforced and a panic contained,
/// renewing the claim every `heartbeat` while it works. A provider that overruns is
/// abandoned: its thread finishes in the background and its answer is dropped. When a
/// heartbeat finds the claim gone (cancelled, or taken over), waiting stops at once.
fn call_provider(
    provider: Provider,
    request: IntegrationRequest,
    timeout: Duration,
    heartbeat: Duration,
    beat: &dyn Fn() -> bool,
) -> (StepOutcome, Option<CartPatch>) {
    let (tx, rx) = mpsc::sync_channel(1);
    let spawned = thread::Builder::new()
        .name("cartflow-provider".into())
        .spawn(move || {
            let result = panic::catch_unwind(AssertUnwindSafe(|| provider.run(&request)));
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        let reason = format!("could not start the provider: {e}");
        return (StepOutcome::SystemFailure(reason), None);
    }
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
    let outcome = match answer {
        Ok(Ok(Ok(Verdict::Passed))) => StepOutcome::Passed,
        Ok(Ok(Ok(Verdict::Updated(patch)))) => return (StepOutcome::Passed, Some(patch)),
        Ok(Ok(Ok(Verdict::Failed(messages)))) if messages.is_empty() => {
            StepOutcome::SystemFailure("the provider failed the check without a message".into())
        }
        Ok(Ok(Ok(Verdict::Failed(messages)))) => StepOutcome::Failed(messages),
        Ok(Ok(Err(e))) => StepOutcome::SystemFailure(format!("the provider failed: {e}")),
        Ok(Err(payload)) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text payload".into());
            StepOutcome::SystemFailure(format!("the provider panicked: {what}"))
        }
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
    handles: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    /// Stops the workers and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
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
