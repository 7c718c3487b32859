//! # cartflow
//!
//! The Salesforce B2B Commerce checkout flow as an explicit, typed finite-state machine.
//!
//! A checkout session walks fixed steps (shipping address, inventory, pricing, ...). Each
//! expensive check runs as a background operation through a store's integration, and
//! documented requirements decide who may do what, when. cartflow declares every legal move
//! once, in a [`TransitionTable`](machine::TransitionTable); the [`Engine`] runs it, the
//! [`diagram`] module draws it, and the tests check every commit against it.
//!
//! ```
//! use std::sync::Arc;
//! use cartflow::{Engine, MemoryStore};
//!
//! let engine = Engine::new(Arc::new(MemoryStore::new()));
//! // An unknown caller may not invoke anything: the documented BAD_REQUEST / 400.
//! let result = engine.invoke(
//!     "checkCartInventoryAction",
//!     &serde_json::json!({"cartId": "0a6RM0000004GLz"}),
//!     "005000000000001",
//! );
//! assert!(!result.is_success);
//! assert_eq!(result.errors.unwrap()[0].status_code, "BAD_REQUEST");
//! assert_eq!(result.http_status, 400);
//! ```

pub mod api;
#[cfg(feature = "http")]
pub mod asynchronous;
pub mod clock;
pub mod diagram;
pub mod engine;
pub mod error;
pub mod flow;
#[cfg(feature = "http")]
pub mod http;
pub mod ids;
pub mod integrations;
pub mod machine;
pub mod model;
pub mod sample;
pub mod store;

pub use api::ActionResult;
pub use engine::{Engine, EngineConfig};
pub use error::{CheckoutError, ErrorCode, Fenced, StoreError, UndeclaredMove};
pub use store::{MemoryStore, Store};

/// The README's code blocks, compiled and run as doc tests so they cannot go stale.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
