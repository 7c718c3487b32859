//! Integrations: the providers that perform each kind of check, and each store's mapping
//! of kind to provider (StoreIntegratedService).

mod custom;
mod http;
mod payment;
mod price_book;
mod promotions;
mod shipping;
mod stock;
mod tax;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

pub use custom::{CreditLimit, CustomConfig};
pub use http::{
    DEFAULT_TIMEOUT_MS, HttpProviderConfig, MAX_TIMEOUT_MS, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
#[cfg(feature = "http")]
pub use http::{HttpProvider, sign};
pub use payment::TokenGateway;
pub use price_book::{NegotiatedPrice, PriceBook, round_money};
pub use promotions::{PromotionRule, Promotions};
pub use shipping::{DeliveryMethod, RateBand, RateBasis, ShippingRates};
pub use stock::StockTable;
pub use tax::{TaxRate, TaxTable};

use rust_decimal::Decimal;

use crate::machine::{CartUpdate, Template, ValidationMessage, amounts};
use chrono::{DateTime, Utc};

use crate::model::{
    CartItem, CartTax, DeliveryOption, KeyPrefix, Order, ProviderKind, SfId, TaxType, WebCart,
};

/// What a provider is asked to check: the operation and the cart as it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntegrationRequest {
    /// The background operation running the check.
    pub operation_id: SfId,
    /// The cart.
    pub cart: WebCart,
    /// The cart's lines, shared: the worker keeps them to apply the provider's answer to,
    /// so a large cart's lines are read once and copied for nobody.
    pub items: Arc<Vec<CartItem>>,
    /// The session's order, for the payment step: it authorises the order's total, which is
    /// what the buyer pays for. `None` for the other steps.
    pub order: Option<Order>,
}

/// A provider's answer when it could do its job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// The check passed.
    Passed,
    /// The check passed and computed amounts for the cart (prices, adjustments, options, ...).
    Updated(CartPatch),
    /// The check failed: one message per problem, written as CartValidationOutputs.
    Failed(Vec<ValidationMessage>),
}

impl Verdict {
    /// A payment provider's pass: an authorisation, under `reference`, of the grand total of
    /// the order `request` carries. The engine accepts a passed payment step only with such
    /// an authorisation (a plain [`Verdict::Passed`] from a payment provider is unusable).
    pub fn authorized(reference: impl Into<String>, request: &IntegrationRequest) -> Verdict {
        Verdict::Updated(CartPatch {
            payment_authorization_id: Some(reference.into()),
            authorized_amount: request.order.as_ref().and_then(|o| o.grand_total_amount),
            ..CartPatch::default()
        })
    }
}

/// New amounts of one cart line; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemAmounts {
    /// The line.
    pub item_id: SfId,
    /// Unit list price.
    pub list_price: Option<Decimal>,
    /// Unit sales price.
    pub sales_price: Option<Decimal>,
    /// SalesPrice × Quantity.
    pub total_price: Option<Decimal>,
    /// Promotion adjustment (zero or negative).
    pub adjustment_amount: Option<Decimal>,
    /// Tax on the line.
    pub tax_amount: Option<Decimal>,
    /// The rate the tax was computed at (a fraction), for the line's CartTax row.
    pub tax_rate: Option<Decimal>,
    /// The tax's name, for the line's CartTax row (`Tax` when absent).
    pub tax_name: Option<String>,
}

impl ItemAmounts {
    /// No change to `item_id` yet.
    pub fn of(item_id: SfId) -> ItemAmounts {
        ItemAmounts {
            item_id,
            list_price: None,
            sales_price: None,
            total_price: None,
            adjustment_amount: None,
            tax_amount: None,
            tax_rate: None,
            tax_name: None,
        }
    }
}

/// What applying a provider's answer needs besides the answer: who answered, when, and where
/// new record Ids come from.
pub struct PatchContext<'a> {
    /// The kind of provider that answered (`None` for the engine's own work).
    pub kind: Option<ProviderKind>,
    /// When the answer is applied (the CartTax rows' TaxCalculationDate).
    pub now: DateTime<Utc>,
    /// Mints the Id of a new record of a kind (a charge line, an offered method, a tax row).
    pub new_id: &'a dyn Fn(KeyPrefix) -> SfId,
}

impl fmt::Debug for PatchContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatchContext")
            .field("kind", &self.kind)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// What a passed provider computed. The engine applies it to the lines the provider saw and
/// derives the cart's totals from all lines, so totals always add up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CartPatch {
    /// New amounts per line.
    pub items: Vec<ItemAmounts>,
    /// Shipping options to offer the buyer, replacing those offered before. The buyer's
    /// chosen method is kept when it is still offered (its charge line repriced at the new
    /// fee), and dropped with its charge line when it is not.
    pub delivery_options: Option<Vec<DeliveryOption>>,
    /// The payment authorisation reference.
    pub payment_authorization_id: Option<String>,
    /// The amount the payment authorisation covers; the engine accepts an authorisation only
    /// of the order's grand total.
    pub authorized_amount: Option<Decimal>,
}

/// Applies a provider's patch to the lines it saw, and totals the cart from every line
/// ([`total_cart`](crate::machine::amounts::total_cart)). A tax provider's answer replaces
/// every line's tax, charge lines included: a line it leaves out has no tax, a line it taxes
/// has one CartTax row. New delivery options replace the offered ones (each a new
/// CartDeliveryGroupMethod record) and keep or drop the buyer's choice and its charge line.
/// A patch naming a line the cart does not have is a provider error.
pub fn apply_patch(
    cart: &WebCart,
    items: &[CartItem],
    patch: &CartPatch,
    ctx: &PatchContext<'_>,
) -> Result<CartUpdate, ProviderError> {
    let mut lines: Vec<CartItem> = items.to_vec();
    let taxes = ctx.kind == Some(ProviderKind::Tax);
    if taxes {
        lines.iter_mut().for_each(CartItem::clear_tax);
    }
    // Each line found by Id once, so a patch of every line of a large cart stays linear.
    let at: HashMap<SfId, usize> = lines.iter().enumerate().map(|(i, l)| (l.id, i)).collect();
    for amounts in &patch.items {
        let Some(line) = at.get(&amounts.item_id).map(|&i| &mut lines[i]) else {
            return Err(ProviderError(format!(
                "the provider priced line {}, which cart {} does not have",
                amounts.item_id, cart.id
            )));
        };
        let set = |field: &mut Option<Decimal>, value: Option<Decimal>| {
            if value.is_some() {
                *field = value;
            }
        };
        set(&mut line.list_price, amounts.list_price);
        set(&mut line.sales_price, amounts.sales_price);
        set(&mut line.total_price, amounts.total_price);
        set(&mut line.adjustment_amount, amounts.adjustment_amount);
        set(&mut line.tax_amount, amounts.tax_amount);
        if taxes && let Some(amount) = amounts.tax_amount {
            line.taxes = vec![tax_row(line.id, amount, amounts, ctx)];
        }
    }
    let mut totalled = cart.clone();
    let mut removed_items = Vec::new();
    if let Some(options) = &patch.delivery_options {
        totalled.delivery_options = options
            .iter()
            .map(|option| DeliveryOption {
                id: Some((ctx.new_id)(KeyPrefix::CartDeliveryGroupMethod)),
                ..option.clone()
            })
            .collect();
        if amounts::delivery_fee(&totalled).is_none() {
            totalled.delivery_method_id = None;
        }
        removed_items =
            amounts::sync_charge_line(&totalled, &mut lines, || (ctx.new_id)(KeyPrefix::CartItem));
    }
    amounts::total_cart(&mut totalled, &lines).map_err(|e| ProviderError(e.to_string()))?;
    let before: HashMap<SfId, &CartItem> = items.iter().map(|l| (l.id, l)).collect();
    Ok(CartUpdate {
        items: lines
            .into_iter()
            .filter(|line| before.get(&line.id) != Some(&line))
            .collect(),
        removed_items,
        delivery_options: patch
            .delivery_options
            .as_ref()
            .map(|_| totalled.delivery_options.clone()),
        delivery_method_id: totalled.delivery_method_id.clone(),
        payment_authorization_id: patch.payment_authorization_id.clone(),
        authorized_amount: patch.authorized_amount,
        total_product_amount: totalled.total_product_amount,
        total_adjustment_amount: totalled.total_adjustment_amount,
        total_charge_amount: totalled.total_charge_amount,
        total_tax_amount: totalled.total_tax_amount,
        grand_total_amount: totalled.grand_total_amount,
    })
}

/// The CartTax row of a line taxed `amount` by a tax answer.
fn tax_row(line: SfId, amount: Decimal, given: &ItemAmounts, ctx: &PatchContext<'_>) -> CartTax {
    CartTax {
        id: (ctx.new_id)(KeyPrefix::CartTax),
        cart_item_id: line,
        amount,
        tax_rate: given.tax_rate,
        name: given.tax_name.clone().unwrap_or_else(|| "Tax".to_owned()),
        tax_type: TaxType::Estimated,
        tax_calculation_date: ctx.now,
    }
}

/// A provider could not do its job (the platform's "exception thrown by a provider"):
/// the operation ends in Error with a SystemError output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProviderError(pub String);

/// Declares a provider trait for one kind of check, with a blanket implementation for
/// closures, so a test or a small integration can be a function.
macro_rules! provider_trait {
    ($(#[$doc:meta])* $name:ident, $method:ident) => {
        $(#[$doc])*
        ///
        /// Called from a worker thread outside any lock or transaction, with a timeout: a
        /// provider that errors, panics or overruns ends the operation in Error, never a stuck
        /// session.
        pub trait $name: Send + Sync + 'static {
            /// Runs the check on the request's cart.
            fn $method(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError>;

            /// Whether the check only computes from the request and the provider's own data,
            /// in memory and in bounded time: no I/O, no lock it could wait on. The worker then
            /// runs it on its own thread, still under `catch_unwind` (a panic fails the
            /// operation) and still timed (an answer later than the timeout is the timeout's
            /// failure), instead of handing it to a provider thread, which costs two thread
            /// switches a call. It renews no lease while it runs. A check that may block keeps
            /// the default, `false`.
            fn computes_in_memory(&self) -> bool {
                false
            }
        }

        impl<F> $name for F
        where
            F: Fn(&IntegrationRequest) -> Result<Verdict, ProviderError> + Send + Sync + 'static,
        {
            fn $method(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
                self(request)
            }
        }
    };
}

provider_trait!(
    /// Checks stock for a cart (`checkCartInventoryAction`).
    InventoryProvider,
    check_inventory
);
provider_trait!(
    /// Prices a cart's lines (`priceCart`).
    PriceProvider,
    price_cart
);
provider_trait!(
    /// Applies promotions to a priced cart (`calcCartPromotionsAction`).
    PromotionsProvider,
    apply_promotions
);
provider_trait!(
    /// Offers shipping options and prices the chosen one (`calcCartShipmentAction`).
    ShipmentProvider,
    calculate_shipment
);
provider_trait!(
    /// Computes taxes (`calcCartTaxesAction`).
    TaxProvider,
    calculate_taxes
);
provider_trait!(
    /// Authorises the buyer's tokenized payment (the Authorize Payment step).
    PaymentProvider,
    authorize_payment
);
provider_trait!(
    /// Runs a store's own async step (a custom step of the template), registered by name
    /// with [`Integrations::set_custom`]. A failure's messages are written as
    /// CartValidationOutputs of Type `Other`.
    CustomProvider,
    run_step
);

/// The provider bound to one (store, kind).
#[derive(Clone)]
pub enum Provider {
    /// An inventory provider.
    Inventory(Arc<dyn InventoryProvider>),
    /// A price provider.
    Price(Arc<dyn PriceProvider>),
    /// A promotions provider.
    Promotions(Arc<dyn PromotionsProvider>),
    /// A shipment provider.
    Shipment(Arc<dyn ShipmentProvider>),
    /// A tax provider.
    Tax(Arc<dyn TaxProvider>),
    /// A payment provider.
    Payment(Arc<dyn PaymentProvider>),
    /// A custom step's provider (registered by name, with [`Integrations::set_custom`]).
    Custom(Arc<dyn CustomProvider>),
    /// No mapping: the platform's internal data is used, which for cartflow means the
    /// step passes without an external check.
    Internal,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The provider itself is a trait object, and may hold a secret: only its kind shows.
        f.debug_struct("Provider")
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Runs the provider.
    pub fn run(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        match self {
            Provider::Inventory(p) => p.check_inventory(request),
            Provider::Price(p) => p.price_cart(request),
            Provider::Promotions(p) => p.apply_promotions(request),
            Provider::Shipment(p) => p.calculate_shipment(request),
            Provider::Tax(p) => p.calculate_taxes(request),
            Provider::Payment(p) => p.authorize_payment(request),
            Provider::Custom(p) => p.run_step(request),
            Provider::Internal => Ok(Verdict::Passed),
        }
    }

    /// Whether the provider only computes in memory, in bounded time: see
    /// [`InventoryProvider::computes_in_memory`]. Internal data always does.
    pub fn computes_in_memory(&self) -> bool {
        match self {
            Provider::Inventory(p) => p.computes_in_memory(),
            Provider::Price(p) => p.computes_in_memory(),
            Provider::Promotions(p) => p.computes_in_memory(),
            Provider::Shipment(p) => p.computes_in_memory(),
            Provider::Tax(p) => p.computes_in_memory(),
            Provider::Payment(p) => p.computes_in_memory(),
            Provider::Custom(p) => p.computes_in_memory(),
            Provider::Internal => true,
        }
    }

    /// The kind of check this provider performs (`None` for internal data).
    pub fn kind(&self) -> Option<ProviderKind> {
        Some(match self {
            Provider::Inventory(_) => ProviderKind::Inventory,
            Provider::Price(_) => ProviderKind::Price,
            Provider::Promotions(_) => ProviderKind::Promotions,
            Provider::Shipment(_) => ProviderKind::Shipment,
            Provider::Tax(_) => ProviderKind::Tax,
            Provider::Payment(_) => ProviderKind::Payment,
            Provider::Custom(_) => ProviderKind::Custom,
            Provider::Internal => return None,
        })
    }
}

/// The built-in providers one store maps, as configuration (JSON in `integrations.json`).
/// Inventory comes from the store's stock table; a kind left out uses internal data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct StoreProviders {
    /// A price book.
    #[serde(default)]
    pub price: Option<PriceBook>,
    /// Promotions.
    #[serde(default)]
    pub promotions: Option<Promotions>,
    /// Shipping rates.
    #[serde(default)]
    pub shipment: Option<ShippingRates>,
    /// A tax table.
    #[serde(default)]
    pub tax: Option<TaxTable>,
    /// A payment gateway.
    #[serde(default)]
    pub payment: Option<TokenGateway>,
    /// Custom providers by the name a template's custom step gives (`"credit-limit"`), each
    /// a built-in custom provider's configuration or `{"Http": {...}}`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub custom: std::collections::BTreeMap<String, CustomConfig>,
    /// Kinds answered by an HTTP service instead (`{"Tax": {"Url": ..., "Secret": ...}}`). A
    /// kind may have a built-in provider or an HTTP one, not both.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub http: std::collections::BTreeMap<ProviderKind, HttpProviderConfig>,
}

/// Checks a store's HTTP providers: each configuration valid, no custom kind (a custom
/// step's HTTP provider goes under `Custom`), no kind that also has a built-in provider.
fn check_http(providers: &StoreProviders) -> Result<(), ProviderError> {
    let built_in = [
        (ProviderKind::Price, providers.price.is_some()),
        (ProviderKind::Promotions, providers.promotions.is_some()),
        (ProviderKind::Shipment, providers.shipment.is_some()),
        (ProviderKind::Tax, providers.tax.is_some()),
        (ProviderKind::Payment, providers.payment.is_some()),
    ];
    for (kind, config) in &providers.http {
        if *kind == ProviderKind::Custom {
            return Err(ProviderError(
                "a custom step's HTTP provider goes under Custom, by its name".into(),
            ));
        }
        if built_in.contains(&(*kind, true)) {
            return Err(ProviderError(format!(
                "{kind:?} has both a built-in and an HTTP provider; keep one"
            )));
        }
        config
            .validate()
            .map_err(|e| ProviderError(format!("{kind:?}: {e}")))?;
    }
    Ok(())
}

/// The provider of `kind` answered by the service `config` names.
#[cfg(feature = "http")]
fn http_provider(
    kind: ProviderKind,
    config: &HttpProviderConfig,
) -> Result<Provider, ProviderError> {
    let p = Arc::new(HttpProvider::new(config.clone(), kind)?);
    Ok(match kind {
        ProviderKind::Inventory => Provider::Inventory(p),
        ProviderKind::Price => Provider::Price(p),
        ProviderKind::Promotions => Provider::Promotions(p),
        ProviderKind::Shipment => Provider::Shipment(p),
        ProviderKind::Tax => Provider::Tax(p),
        ProviderKind::Payment => Provider::Payment(p),
        ProviderKind::Custom => Provider::Custom(p),
    })
}

/// Without the `http` feature there is no HTTP client: a configuration naming one is refused.
#[cfg(not(feature = "http"))]
fn http_provider(kind: ProviderKind, _: &HttpProviderConfig) -> Result<Provider, ProviderError> {
    Err(ProviderError(format!(
        "the {kind:?} provider is answered over HTTP, which needs cartflow's `http` feature"
    )))
}

/// Built-in providers per store, by store ID.
pub type ProviderConfig = std::collections::BTreeMap<SfId, StoreProviders>;

/// Each store's StoreIntegratedService mapping: which provider performs each kind of check,
/// and the custom providers it registers by name.
#[derive(Clone, Default)]
pub struct Integrations {
    by_store: HashMap<(SfId, ProviderKind), Provider>,
    custom: HashMap<(SfId, String), Arc<dyn CustomProvider>>,
}

impl fmt::Debug for Integrations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Which (store, kind) and (store, name) are mapped, sorted; not the providers, which
        // are trait objects and may hold secrets.
        let mut by_store: Vec<_> = self.by_store.keys().collect();
        by_store.sort();
        let mut custom: Vec<_> = self.custom.keys().collect();
        custom.sort();
        f.debug_struct("Integrations")
            .field("by_store", &by_store)
            .field("custom", &custom)
            .finish_non_exhaustive()
    }
}

/// A template's custom step runs a provider that a store does not register: no checkout of
/// that store could pass the step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "step {step:?} runs the custom provider {provider:?}, which store {store} does not register \
     (give it a \"Custom\" entry named {provider:?} in the integrations)"
)]
pub struct UnregisteredProvider {
    /// The custom step's State.
    pub step: String,
    /// The provider's name, as the step gives it.
    pub provider: String,
    /// The store without it.
    pub store: SfId,
}

impl Integrations {
    /// No mappings: every check uses internal data.
    pub fn new() -> Integrations {
        Integrations::default()
    }

    /// Maps a store's checks of the provider's kind to `provider`, replacing any mapping
    /// (`Provider::Internal` has no kind and maps nothing; a custom provider is found by its
    /// name, so `Provider::Custom` maps nothing here either: use [`Integrations::set_custom`]).
    pub fn set(&mut self, store: SfId, provider: Provider) -> &mut Self {
        if let Some(kind) = provider.kind().filter(|k| *k != ProviderKind::Custom) {
            self.by_store.insert((store, kind), provider);
        }
        self
    }

    /// Registers `provider` as the store's custom provider named `name` (the name a
    /// template's custom step gives in [`Step::provider`](crate::machine::Step::provider)),
    /// replacing any of that name.
    pub fn set_custom(
        &mut self,
        store: SfId,
        name: &str,
        provider: Arc<dyn CustomProvider>,
    ) -> &mut Self {
        self.custom.insert((store, name.to_owned()), provider);
        self
    }

    /// The store's custom provider named `name`, if it registers one.
    pub fn custom(&self, store: SfId, name: &str) -> Option<Provider> {
        self.custom
            .get(&(store, name.to_owned()))
            .map(|p| Provider::Custom(Arc::clone(p)))
    }

    /// Checks that each of `stores` registers the provider of every custom step of
    /// `template`; the first step and store without it is the error. Run it before anything
    /// runs: an unregistered provider would fail that step of every checkout of the store.
    pub fn check_template(
        &self,
        template: &Template,
        stores: impl IntoIterator<Item = SfId>,
    ) -> Result<(), UnregisteredProvider> {
        let stores: Vec<SfId> = stores.into_iter().collect();
        for (_, step) in template.custom_steps() {
            let Some(provider) = &step.provider else {
                continue;
            };
            if let Some(store) = stores.iter().find(|s| self.custom(**s, provider).is_none()) {
                return Err(UnregisteredProvider {
                    step: step.state.to_string(),
                    provider: provider.clone(),
                    store: *store,
                });
            }
        }
        Ok(())
    }

    /// Maps a store's Inventory checks to `provider`.
    pub fn set_inventory(
        &mut self,
        store: SfId,
        provider: Arc<dyn InventoryProvider>,
    ) -> &mut Self {
        self.set(store, Provider::Inventory(provider))
    }

    /// The provider of `kind` for `store`.
    pub fn provider(&self, store: SfId, kind: ProviderKind) -> Provider {
        self.by_store
            .get(&(store, kind))
            .cloned()
            .unwrap_or(Provider::Internal)
    }

    /// Maps each store to the built-in providers its configuration names, after validating
    /// every one (a configuration that cannot work is refused whole, nothing mapped).
    pub fn configure(&mut self, config: &ProviderConfig) -> Result<&mut Self, ProviderError> {
        for (store, providers) in config {
            let invalid = |kind: &str, e: ProviderError| {
                ProviderError(format!("the {kind} configuration of store {store}: {e}"))
            };
            if let Some(p) = &providers.price {
                p.validate().map_err(|e| invalid("Price", e))?;
            }
            if let Some(p) = &providers.promotions {
                p.validate().map_err(|e| invalid("Promotions", e))?;
            }
            if let Some(p) = &providers.shipment {
                p.validate().map_err(|e| invalid("Shipment", e))?;
            }
            if let Some(p) = &providers.tax {
                p.validate().map_err(|e| invalid("Tax", e))?;
            }
            if let Some(p) = &providers.payment {
                p.validate().map_err(|e| invalid("Payment", e))?;
            }
            check_http(providers).map_err(|e| invalid("Http", e))?;
            for (name, p) in &providers.custom {
                if name.trim().is_empty() {
                    return Err(invalid(
                        "Custom",
                        ProviderError("a provider's name is blank".into()),
                    ));
                }
                p.validate()
                    .map_err(|e| invalid(&format!("Custom {name:?}"), e))?;
            }
        }
        for (store, providers) in config {
            let store = *store;
            if let Some(p) = &providers.price {
                self.set(store, Provider::Price(Arc::new(p.clone())));
            }
            if let Some(p) = &providers.promotions {
                self.set(store, Provider::Promotions(Arc::new(p.clone())));
            }
            if let Some(p) = &providers.shipment {
                self.set(store, Provider::Shipment(Arc::new(p.clone())));
            }
            if let Some(p) = &providers.tax {
                self.set(store, Provider::Tax(Arc::new(p.clone())));
            }
            if let Some(p) = &providers.payment {
                self.set(store, Provider::Payment(Arc::new(p.clone())));
            }
            for (name, p) in &providers.custom {
                self.set_custom(store, name, p.provider()?);
            }
            for (kind, config) in &providers.http {
                self.set(store, http_provider(*kind, config)?);
            }
        }
        Ok(self)
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

#[cfg(test)]
mod patch_tests {
    use super::*;
    use crate::model::{CartItemType, CartStatus, KeyPrefix};

    fn cart_and_lines() -> (WebCart, Vec<CartItem>) {
        let id = |kind, n| SfId::from_number(kind, n);
        let cart = WebCart::new(
            id(KeyPrefix::WebCart, 1),
            id(KeyPrefix::WebStore, 1),
            id(KeyPrefix::Account, 1),
            id(KeyPrefix::User, 1),
            CartStatus::Checkout,
        );
        let lines = (0..2)
            .map(|n| {
                CartItem::product(
                    id(KeyPrefix::CartItem, n),
                    cart.id,
                    Some("A".into()),
                    Decimal::ONE,
                )
            })
            .collect();
        (cart, lines)
    }

    #[test]
    fn totals_add_up_from_every_line() {
        let (cart, lines) = cart_and_lines();
        let patch = CartPatch {
            items: lines
                .iter()
                .map(|l| ItemAmounts {
                    total_price: Some(Decimal::new(1050, 2)),
                    adjustment_amount: Some(Decimal::new(-50, 2)),
                    ..ItemAmounts::of(l.id)
                })
                .collect(),
            ..CartPatch::default()
        };
        let update = apply_patch(&cart, &lines, &patch, &context(None)).unwrap();
        assert_eq!(update.total_product_amount, Some(Decimal::new(2100, 2)));
        assert_eq!(update.total_adjustment_amount, Some(Decimal::new(-100, 2)));
        assert_eq!(update.grand_total_amount, Some(Decimal::new(2000, 2)));
        assert_eq!(update.items.len(), 2);
    }

    /// Mints Ids numbered from 50 within their kind.
    fn mint(kind: KeyPrefix) -> SfId {
        SfId::from_number(kind, 50)
    }

    fn context(kind: Option<ProviderKind>) -> PatchContext<'static> {
        PatchContext {
            kind,
            now: chrono::DateTime::UNIX_EPOCH,
            new_id: &mint,
        }
    }

    fn option(id: &str, amount: i64) -> DeliveryOption {
        DeliveryOption {
            id: None,
            delivery_method_id: id.into(),
            name: id.into(),
            amount: Decimal::new(amount, 2),
        }
    }

    #[test]
    fn new_options_keep_a_choice_still_offered_and_drop_one_that_is_not() {
        let (mut cart, lines) = cart_and_lines();
        cart.delivery_method_id = Some("GROUND".into());
        let charge_id = mint(KeyPrefix::CartItem);
        let offering = |options| CartPatch {
            delivery_options: Some(options),
            ..CartPatch::default()
        };
        let kept = apply_patch(
            &cart,
            &lines,
            &offering(vec![option("GROUND", 990)]),
            &context(Some(ProviderKind::Shipment)),
        )
        .unwrap();
        let offered = kept.delivery_options.as_ref().unwrap();
        assert_eq!(
            offered[0].id,
            Some(mint(KeyPrefix::CartDeliveryGroupMethod))
        );
        assert_eq!(kept.delivery_method_id.as_deref(), Some("GROUND"));
        assert_eq!(kept.total_charge_amount, Some(Decimal::new(990, 2)));
        let charge = kept.items.iter().find(|l| l.id == charge_id).unwrap();
        assert_eq!(charge.item_type, CartItemType::Charge);

        let mut with_charge = lines.clone();
        with_charge.push(charge.clone());
        let dropped = apply_patch(
            &cart,
            &with_charge,
            &offering(vec![option("FREIGHT", 6000)]),
            &context(Some(ProviderKind::Shipment)),
        )
        .unwrap();
        assert_eq!(dropped.delivery_method_id, None);
        assert_eq!(dropped.removed_items, vec![charge_id]);
        assert_eq!(dropped.total_charge_amount, None);
    }

    #[test]
    fn a_tax_answer_replaces_every_lines_tax() {
        let (cart, mut lines) = cart_and_lines();
        for line in &mut lines {
            line.total_price = Some(Decimal::TEN);
            line.tax_amount = Some(Decimal::ONE);
        }
        let patch = CartPatch {
            items: vec![ItemAmounts {
                tax_amount: Some(Decimal::new(50, 2)),
                ..ItemAmounts::of(lines[0].id)
            }],
            ..CartPatch::default()
        };
        let update = apply_patch(&cart, &lines, &patch, &context(Some(ProviderKind::Tax))).unwrap();
        assert_eq!(update.total_tax_amount, Some(Decimal::new(50, 2)));
        assert_eq!(update.items[1].tax_amount, None);
        assert!(update.items[1].taxes.is_empty());
        let row = &update.items[0].taxes;
        assert_eq!(row.len(), 1);
        assert_eq!(row[0].id, mint(KeyPrefix::CartTax));
        assert_eq!(row[0].amount, Decimal::new(50, 2));
        assert_eq!(row[0].cart_item_id, lines[0].id);
    }

    #[test]
    fn overflowing_amounts_are_a_provider_error_not_a_panic() {
        let (cart, lines) = cart_and_lines();
        let patch = CartPatch {
            items: lines
                .iter()
                .map(|l| ItemAmounts {
                    total_price: Some(Decimal::MAX),
                    ..ItemAmounts::of(l.id)
                })
                .collect(),
            ..CartPatch::default()
        };
        assert!(apply_patch(&cart, &lines, &patch, &context(None)).is_err());
    }

    #[test]
    fn a_patch_naming_a_foreign_line_is_refused() {
        let (cart, lines) = cart_and_lines();
        let patch = CartPatch {
            items: vec![ItemAmounts::of(SfId::from_number(KeyPrefix::CartItem, 99))],
            ..CartPatch::default()
        };
        assert!(apply_patch(&cart, &lines, &patch, &context(None)).is_err());
    }
}

#[cfg(test)]
mod custom_tests {
    use super::*;
    use crate::machine::{CustomAction, Step};
    use crate::model::{KeyPrefix, SessionState};

    fn store(n: u64) -> SfId {
        SfId::from_number(KeyPrefix::WebStore, n)
    }

    /// The standard template with a "Credit Check" step after Taxes, run by `credit-limit`.
    fn credit_check() -> Template {
        let mut template = Template::standard();
        let step = Step::custom(
            SessionState::new("Credit Check").unwrap(),
            CustomAction::new("CreditCheck").unwrap(),
            "CheckCredit",
            "credit-limit",
        );
        assert!(template.insert_step(SessionState::Taxes, step));
        template
    }

    fn passing() -> Arc<dyn CustomProvider> {
        Arc::new(|_: &IntegrationRequest| Ok(Verdict::Passed))
    }

    #[test]
    fn a_template_is_refused_for_the_first_store_without_its_custom_provider() {
        let mut integrations = Integrations::new();
        // The standard template has no custom step: nothing to register.
        assert_eq!(
            integrations.check_template(&Template::standard(), [store(1)]),
            Ok(())
        );
        integrations.set_custom(store(1), "credit-limit", passing());
        // Another name, or another store's registration, does not count.
        integrations.set_custom(store(2), "credit-limits", passing());
        let refused = integrations
            .check_template(&credit_check(), [store(1), store(2)])
            .unwrap_err();
        assert_eq!(
            refused,
            UnregisteredProvider {
                step: "Credit Check".into(),
                provider: "credit-limit".into(),
                store: store(2),
            }
        );
        let message = refused.to_string();
        for part in [
            "\"Credit Check\"",
            "\"credit-limit\"",
            &store(2).to_string(),
        ] {
            assert!(message.contains(part), "{message}");
        }
        integrations.set_custom(store(2), "credit-limit", passing());
        assert_eq!(
            integrations.check_template(&credit_check(), [store(1), store(2)]),
            Ok(())
        );
    }

    #[test]
    fn a_custom_provider_is_found_by_name_and_not_by_kind() {
        let mut integrations = Integrations::new();
        integrations.set(store(1), Provider::Custom(passing()));
        assert!(integrations.custom(store(1), "credit-limit").is_none());
        assert!(matches!(
            integrations.provider(store(1), ProviderKind::Custom),
            Provider::Internal
        ));
        integrations.set_custom(store(1), "credit-limit", passing());
        let found = integrations.custom(store(1), "credit-limit").unwrap();
        assert_eq!(found.kind(), Some(ProviderKind::Custom));
        assert!(integrations.custom(store(2), "credit-limit").is_none());
    }

    fn config(custom: serde_json::Value) -> ProviderConfig {
        serde_json::from_value(serde_json::json!({ store(1).to_string(): { "Custom": custom } }))
            .unwrap()
    }

    #[test]
    fn the_custom_map_of_a_configuration_registers_built_in_providers_by_name() {
        let mut integrations = Integrations::new();
        integrations
            .configure(&config(serde_json::json!({
                "credit-limit": {"CreditLimit": {"DefaultLimit": "100.00"}}
            })))
            .unwrap();
        assert!(integrations.custom(store(1), "credit-limit").is_some());
        assert_eq!(
            integrations.check_template(&credit_check(), [store(1)]),
            Ok(())
        );
    }

    #[test]
    fn a_custom_map_that_cannot_work_is_refused_whole() {
        for (custom, expected) in [
            (
                serde_json::json!({
                    "credit-limit": {"CreditLimit": {"DefaultLimit": "-1"}}
                }),
                "the Custom \"credit-limit\" configuration of store",
            ),
            (
                serde_json::json!({" ": {"CreditLimit": {"DefaultLimit": "1"}}}),
                "a provider's name is blank",
            ),
        ] {
            let mut integrations = Integrations::new();
            let Err(err) = integrations.configure(&config(custom)) else {
                panic!("{expected}: accepted");
            };
            assert!(err.0.contains(expected), "{err}");
            assert!(integrations.custom.is_empty());
        }
    }
}
