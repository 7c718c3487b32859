//! The check that every WebStore has a provider for the steps money depends on: without a
//! Price provider the built-in answer passes pricing and the order carries no total; without
//! a Payment provider no payment step can pass, so no order can be placed.

use std::sync::atomic::Ordering;

use crate::engine::Engine;
use crate::error::StoreError;
use crate::integrations::Provider;
use crate::machine::StepKind;
use crate::model::{ProviderKind, SfId};

/// The provider kinds whose absence changes what an order costs or whether it can be paid.
const CHECKED_KINDS: [ProviderKind; 2] = [ProviderKind::Price, ProviderKind::Payment];

/// A WebStore that has no provider mapped for a step of the engine's template that needs one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingProvider {
    /// The WebStore.
    pub store: SfId,
    /// Its name, for the message.
    pub store_name: String,
    /// The provider kind it lacks ([`ProviderKind::Price`] or [`ProviderKind::Payment`]).
    pub kind: ProviderKind,
}

impl MissingProvider {
    /// What the missing provider means for the store's orders.
    pub fn consequence(&self) -> &'static str {
        match self.kind {
            ProviderKind::Payment => "no payment step can pass, so no order can be placed",
            _ => "the built-in answer prices nothing, so orders carry no total",
        }
    }
}

impl Engine {
    /// The WebStores of the engine's store that lack a Price or a Payment provider for a step
    /// of its template. The engine logs each one as a warning before the first command it
    /// runs; a service that would rather refuse to start asks this first.
    pub fn missing_providers(&self) -> Result<Vec<MissingProvider>, StoreError> {
        let needed: Vec<ProviderKind> = CHECKED_KINDS
            .into_iter()
            .filter(|kind| self.template_needs(*kind))
            .collect();
        let mut missing = Vec::new();
        for store in self.store().web_stores()? {
            for &kind in &needed {
                if matches!(
                    self.integrations().provider(store.id, kind),
                    Provider::Internal
                ) {
                    missing.push(MissingProvider {
                        store: store.id,
                        store_name: store.name.clone(),
                        kind,
                    });
                }
            }
        }
        Ok(missing)
    }

    /// Runs the check now and answers what it found, for a caller that reports it its own
    /// way (the CLI names each store on stderr at start-up): the engine then does not log it
    /// again before its first command.
    pub fn check_providers(&self) -> Result<Vec<MissingProvider>, StoreError> {
        self.providers_checked.store(true, Ordering::Relaxed);
        self.missing_providers()
    }

    /// Whether a step of the template runs a provider of `kind`.
    fn template_needs(&self, kind: ProviderKind) -> bool {
        self.table()
            .template()
            .steps
            .iter()
            .any(|step| match step.kind {
                StepKind::Payment => kind == ProviderKind::Payment,
                StepKind::Async(action) => action.provider_kind() == Some(kind),
                _ => false,
            })
    }

    /// Logs [`Engine::missing_providers`] as warnings (a store that cannot be read is logged
    /// too: the check must never stop a command).
    pub(crate) fn warn_missing_providers(&self) {
        match self.missing_providers() {
            Ok(missing) => {
                for m in missing {
                    tracing::warn!(
                        store = %m.store,
                        name = %m.store_name,
                        kind = ?m.kind,
                        "WebStore has no {:?} provider mapped: {}",
                        m.kind,
                        m.consequence()
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot check the WebStores' providers"),
        }
    }
}
