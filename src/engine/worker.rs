//! Workers: claim a New operation, call its provider outside any lock, report the outcome.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde::Serialize;

use crate::engine::Engine;
use crate::error::CheckoutError;
use crate::integrations::{IntegrationRequest, Provider, Verdict};
use crate::machine::{Command, StepOutcome};
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

/// How long a claim lasts beyond the provider's timeout before a sweeper may take it back.
const LEASE_MARGIN_MS: u64 = 30_000;

impl Engine {
    /// Claims the oldest New operation, runs it, and reports its outcome. `Ok(None)` when
    /// there is nothing to do.
    /// Another worker may win every candidate; then this returns `Ok(None)` too.
    pub fn run_next_operation(&self) -> Result<Option<OperationReport>, CheckoutError> {
        for id in self.store.claimable_operations(8)? {
            if let Some(claimed) = self.claim(id)? {
                return self.run_claimed(claimed).map(Some);
            }
        }
        Ok(None)
    }

    /// Runs operations until none is New. Returns how many ran.
    pub fn run_until_idle(&self) -> Result<usize, CheckoutError> {
        let mut count = 0;
        while self.run_next_operation()?.is_some() {
            count += 1;
        }
        Ok(count)
    }

    /// Claims one operation; `None` when another worker got it first.
    fn claim(&self, operation_id: SfId) -> Result<Option<BackgroundOperation>, CheckoutError> {
        let Some(op) = self.store.operation(&operation_id)? else {
            return Ok(None);
        };
        let command = Command::Claim {
            operation_id,
            lease_ms: op.timeout_ms.saturating_add(LEASE_MARGIN_MS),
        };
        match self.execute_as(None, &command) {
            Ok(_) => Ok(self.store.operation(&operation_id)?),
            Err(CheckoutError::Stale(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn run_claimed(&self, op: BackgroundOperation) -> Result<OperationReport, CheckoutError> {
        let outcome = match self.store.cart(&op.cart_id)? {
            None => StepOutcome::SystemFailure(format!("cart {} no longer exists", op.cart_id)),
            Some(cart) => {
                let provider = self
                    .integrations()
                    .provider(cart.web_store_id, op.provider_kind);
                let request = IntegrationRequest {
                    operation_id: op.id,
                    items: self.store.cart_items(&cart.id)?,
                    cart,
                };
                call_provider(provider, request, Duration::from_millis(op.timeout_ms))
            }
        };
        let command = Command::Finish {
            operation_id: op.id,
            attempt: op.attempt,
            outcome: outcome.clone(),
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

    /// Starts `threads` workers that run operations as they arrive, until the pool is
    /// stopped or dropped.
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
                                Ok(None) => engine.wait_for_work(Duration::from_millis(50)),
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

/// Runs the provider on its own thread so a timeout can be enforced and a panic contained.
/// A provider that overruns is abandoned: its thread finishes in the background and its
/// answer is dropped.
fn call_provider(
    provider: Provider,
    request: IntegrationRequest,
    timeout: Duration,
) -> StepOutcome {
    let (tx, rx) = mpsc::sync_channel(1);
    let spawned = thread::Builder::new()
        .name("cartflow-provider".into())
        .spawn(move || {
            let result = panic::catch_unwind(AssertUnwindSafe(|| provider.run(&request)));
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return StepOutcome::SystemFailure(format!("could not start the provider: {e}"));
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(Ok(Verdict::Passed))) => StepOutcome::Passed,
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
    }
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
