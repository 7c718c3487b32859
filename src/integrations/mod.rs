//! Integrations: the providers that perform each kind of check, and each store's mapping
//! of kind to provider (StoreIntegratedService).

mod stock;

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

pub use stock::StockTable;

use crate::machine::ValidationMessage;
use crate::model::{CartItem, ProviderKind, SfId, WebCart};

/// What a provider is asked to check: the operation and the cart as it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntegrationRequest {
    /// The background operation running the check.
    pub operation_id: SfId,
    /// The cart.
    pub cart: WebCart,
    /// The cart's lines.
    pub items: Vec<CartItem>,
}

/// A provider's answer when it could do its job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// The check passed.
    Passed,
    /// The check failed: one message per problem, written as CartValidationOutputs.
    Failed(Vec<ValidationMessage>),
}

/// A provider could not do its job (the platform's "exception thrown by a provider"):
/// the operation ends in Error with a SystemError output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProviderError(pub String);

/// Checks stock for a cart (`checkCartInventoryAction`).
///
/// Called from a worker thread outside any lock or transaction, with a timeout: a provider
/// that errors, panics or overruns ends the operation in Error, never a stuck session.
pub trait InventoryProvider: Send + Sync + 'static {
    /// Checks the request's cart.
    fn check_inventory(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError>;
}

impl<F> InventoryProvider for F
where
    F: Fn(&IntegrationRequest) -> Result<Verdict, ProviderError> + Send + Sync + 'static,
{
    fn check_inventory(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        self(request)
    }
}

/// The provider bound to one (store, kind).
#[derive(Clone)]
pub enum Provider {
    /// An inventory provider.
    Inventory(Arc<dyn InventoryProvider>),
    /// No mapping: the platform's internal data is used, which for cartflow means the
    /// step passes without an external check.
    Internal,
}

impl Provider {
    /// Runs the provider.
    pub fn run(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        match self {
            Provider::Inventory(p) => p.check_inventory(request),
            Provider::Internal => Ok(Verdict::Passed),
        }
    }
}

/// Each store's StoreIntegratedService mapping: which provider performs each kind of check.
#[derive(Clone, Default)]
pub struct Integrations {
    inventory: HashMap<SfId, Arc<dyn InventoryProvider>>,
}

impl Integrations {
    /// No mappings: every check uses internal data.
    pub fn new() -> Integrations {
        Integrations::default()
    }

    /// Maps a store's Inventory checks to `provider`.
    pub fn set_inventory(
        &mut self,
        store: SfId,
        provider: Arc<dyn InventoryProvider>,
    ) -> &mut Self {
        self.inventory.insert(store, provider);
        self
    }

    /// The provider of `kind` for `store`.
    pub fn provider(&self, store: SfId, kind: ProviderKind) -> Provider {
        match kind {
            ProviderKind::Inventory => self
                .inventory
                .get(&store)
                .cloned()
                .map_or(Provider::Internal, Provider::Inventory),
            _ => Provider::Internal,
        }
    }

    /// Maps every store with stock levels to a [`StockTable`] of them.
    pub fn with_stock_tables(levels: &[crate::store::StockLevel]) -> Integrations {
        let mut by_store: HashMap<SfId, StockTable> = HashMap::new();
        for level in levels {
            by_store
                .entry(level.store_id)
                .or_default()
                .set(&level.sku, level.quantity);
        }
        let mut integrations = Integrations::new();
        for (store, table) in by_store {
            integrations.set_inventory(store, Arc::new(table));
        }
        integrations
    }
}
