//! The engine for tokio services ([`AsyncEngine`]).
//!
//! The engine is synchronous. A call reads and writes the store, and a PostgreSQL store
//! blocks on the network. An async service must not run it on a runtime worker thread: that
//! thread would stall every other task on it. [`AsyncEngine`] runs each call on tokio's
//! blocking pool (`spawn_blocking`) and awaits it. The calls are the engine's own, with the
//! same answers and the same atomicity. A call whose future is dropped still runs to its end,
//! since a commit cannot be half made, and its answer is dropped.
//!
//! Needs a tokio runtime with the blocking pool (any multi-thread or current-thread runtime
//! has one), and the `http` feature.
//!
//! ```
//! use std::sync::Arc;
//! use cartflow::asynchronous::AsyncEngine;
//! use cartflow::flow::{BuyerInput, Drive, Waiting};
//! use cartflow::{Engine, MemoryStore, sample};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let data = sample::dataset();
//! let integrations = sample::integrations(&data);
//! let engine = AsyncEngine::new(
//!     Engine::new(Arc::new(MemoryStore::from_dataset(data).unwrap()))
//!         .with_integrations(integrations),
//! );
//! let input = BuyerInput {
//!     deliver_to: Some(sample::denver()),
//!     delivery_method_id: None,
//!     payment_token: Some(sample::GOOD_TOKEN.into()),
//!     place_order: true,
//! };
//! let buyer = sample::buyer_id().to_string();
//! let cart = sample::SampleCart::InStock.id();
//! let outcome = engine.drive(&buyer, &cart, input, Waiting::RunInline).await.unwrap();
//! assert!(matches!(outcome, Drive::Complete { .. }));
//! # });
//! ```

use std::panic;

use serde_json::Value;

use crate::api::ActionResult;
use crate::engine::{Engine, OperationReport, Permitted};
use crate::error::CheckoutError;
use crate::flow::{self, BuyerInput, Drive, Waiting};
use crate::machine::{Command, Output, Unmet};
use crate::model::SfId;

/// An [`Engine`] whose calls are awaited. Cloning it is cheap: clones share the engine.
#[derive(Clone)]
pub struct AsyncEngine {
    engine: Engine,
}

impl std::fmt::Debug for AsyncEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncEngine").finish_non_exhaustive()
    }
}

impl AsyncEngine {
    /// Wraps `engine`.
    pub fn new(engine: Engine) -> AsyncEngine {
        AsyncEngine { engine }
    }

    /// The engine, for what needs no store call (its table, its clock) or runs off the
    /// runtime anyway (its workers: [`Engine::start_workers`]).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs `work` with the engine on the blocking pool and awaits its answer. A panic in
    /// `work` is resumed in the awaiting task, as a synchronous call would panic.
    ///
    /// # Panics
    ///
    /// When `work` panics, or when the runtime shut down before `work` could start.
    pub async fn run<T, F>(&self, work: F) -> T
    where
        F: FnOnce(&Engine) -> T + Send + 'static,
        T: Send + 'static,
    {
        let engine = self.engine.clone();
        match tokio::task::spawn_blocking(move || work(&engine)).await {
            Ok(answer) => answer,
            Err(e) if e.is_panic() => panic::resume_unwind(e.into_panic()),
            Err(_) => panic!("the tokio runtime shut down before the engine call ran"),
        }
    }

    /// [`Engine::execute`]: carries out `command` as `actor`.
    pub async fn execute(&self, actor: &str, command: Command) -> Result<Output, CheckoutError> {
        let actor = actor.to_owned();
        self.run(move |e| e.execute(&actor, command)).await
    }

    /// [`Engine::invoke`]: a standard action's call with one input, as the REST facade
    /// answers it.
    pub async fn invoke(&self, action_name: &str, input: Value, actor: &str) -> ActionResult {
        let (name, actor) = (action_name.to_owned(), actor.to_owned());
        self.run(move |e| e.invoke(&name, &input, &actor)).await
    }

    /// [`Engine::invoke_custom`]: a template's custom action with one input.
    pub async fn invoke_custom(
        &self,
        action_name: &str,
        input: Value,
        actor: &str,
    ) -> ActionResult {
        let (name, actor) = (action_name.to_owned(), actor.to_owned());
        self.run(move |e| e.invoke_custom(&name, &input, &actor))
            .await
    }

    /// [`Engine::check`]: the requirements `command` would not meet, without committing.
    pub async fn check(&self, actor: &str, command: Command) -> Result<Vec<Unmet>, CheckoutError> {
        let actor = actor.to_owned();
        self.run(move |e| e.check(&actor, &command)).await
    }

    /// [`Engine::permitted`]: what `actor` may do next on `cart_id`.
    pub async fn permitted(
        &self,
        actor: &str,
        cart_id: SfId,
    ) -> Result<Vec<Permitted>, CheckoutError> {
        let actor = actor.to_owned();
        self.run(move |e| e.permitted(&actor, &cart_id)).await
    }

    /// [`flow::drive`]: moves `cart`'s checkout on as far as `input` allows.
    /// `Waiting::Poll` waits on the blocking pool, not on the runtime.
    pub async fn drive(
        &self,
        actor: &str,
        cart: &SfId,
        input: BuyerInput,
        waiting: Waiting,
    ) -> Result<Drive, CheckoutError> {
        let (actor, cart) = (actor.to_owned(), *cart);
        self.run(move |e| flow::drive(e, &actor, &cart, &input, waiting))
            .await
    }

    /// [`Engine::run_next_operation`]: claims, runs and reports one waiting operation.
    pub async fn run_next_operation(&self) -> Result<Option<OperationReport>, CheckoutError> {
        self.run(Engine::run_next_operation).await
    }

    /// [`Engine::run_until_idle`]: runs waiting operations until none is left.
    pub async fn run_until_idle(&self) -> Result<usize, CheckoutError> {
        self.run(Engine::run_until_idle).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{MemoryStore, sample};

    #[tokio::test(flavor = "current_thread")]
    async fn calls_answer_as_the_engine_does_and_a_panic_reaches_the_caller() {
        let data = sample::dataset();
        let engine = AsyncEngine::new(Engine::new(Arc::new(
            MemoryStore::from_dataset(data).unwrap(),
        )));
        let cart = sample::SampleCart::InStock.id();
        let refused = engine
            .invoke(
                "checkCartInventoryAction",
                serde_json::json!({"cartId": cart}),
                "005000000000099",
            )
            .await;
        assert_eq!(refused.http_status, 400, "{refused:?}");
        let permitted = engine
            .permitted(&sample::buyer_id().to_string(), cart)
            .await
            .unwrap();
        assert!(!permitted.is_empty());
        let worker = engine.clone();
        let panicked =
            tokio::spawn(async move { worker.run(|_| panic!("in the engine call")).await })
                .await
                .unwrap_err();
        assert!(panicked.is_panic());
    }
}
