#![doc = include_str!("../README.md")]
// Every public item is documented, printable, and public only where the API needs it.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]

pub mod api;
#[cfg(feature = "http")]
pub mod asynchronous;
pub mod clock;
pub mod diagram;
pub mod engine;
pub mod error;
pub mod events;
pub mod flow;
#[cfg(feature = "http")]
pub mod http;
pub mod ids;
pub mod integrations;
pub mod machine;
pub mod model;
// The fixtures of the tests, examples and demo: public so that they can use them, hidden
// from the documentation and outside the API's stability promise.
#[doc(hidden)]
pub mod sample;
pub mod store;
#[cfg(feature = "http")]
pub mod webhooks;

pub use api::ActionResult;
pub use engine::{Engine, EngineConfig, MissingProvider};
pub use error::{
    CheckoutError, ErrorCode, Fenced, RecordKind, Stale, StorageFailure, StoreError, UndeclaredMove,
};
pub use store::{MemoryStore, Store};
