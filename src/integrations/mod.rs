//! Integrations: the providers that perform each kind of check, and each store's mapping
//! of kind to provider (StoreIntegratedService).

mod payment;
mod price_book;
mod promotions;
mod shipping;
mod stock;
mod tax;

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

pub use payment::TokenGateway;
pub use price_book::{NegotiatedPrice, PriceBook, round_money};
pub use promotions::{PromotionRule, Promotions};
pub use shipping::{DeliveryMethod, RateBand, RateBasis, ShippingRates};
pub use stock::StockTable;
pub use tax::{TaxRate, TaxTable};

use rust_decimal::Decimal;

use crate::machine::{CartUpdate, ValidationMessage};
use crate::model::{CartItem, CartItemType, DeliveryOption, ProviderKind, SfId, WebCart};

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
    /// The check passed and computed amounts for the cart (prices, adjustments, options, ...).
    Updated(CartPatch),
    /// The check failed: one message per problem, written as CartValidationOutputs.
    Failed(Vec<ValidationMessage>),
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
        }
    }
}

/// What a passed provider computed. The engine applies it to the lines the provider saw and
/// derives the cart's totals from all lines, so totals always add up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CartPatch {
    /// New amounts per line.
    pub items: Vec<ItemAmounts>,
    /// Shipping options to offer the buyer.
    pub delivery_options: Option<Vec<DeliveryOption>>,
    /// The cart's charges (e.g. the chosen delivery method's price).
    pub total_charge_amount: Option<Decimal>,
    /// The payment authorisation reference.
    pub payment_authorization_id: Option<String>,
}

/// Applies a patch to the lines a provider saw, and totals the cart:
/// products = Σ TotalPrice of product lines, adjustments = Σ AdjustmentAmount,
/// taxes = Σ TaxAmount, grand total = products + adjustments + charges + taxes.
/// A patch naming a line the cart does not have is a provider error.
pub fn apply_patch(
    cart: &WebCart,
    items: &[CartItem],
    patch: &CartPatch,
) -> Result<CartUpdate, ProviderError> {
    let mut lines: Vec<CartItem> = items.to_vec();
    let mut changed = std::collections::BTreeSet::new();
    for amounts in &patch.items {
        let Some(line) = lines.iter_mut().find(|l| l.id == amounts.item_id) else {
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
        changed.insert(line.id);
    }
    let overflow = || ProviderError("the cart's amounts exceed what cartflow can total".into());
    let sum = |field: fn(&CartItem) -> Option<Decimal>, products_only: bool| {
        lines
            .iter()
            .filter(|l| !products_only || l.item_type == CartItemType::Product)
            .filter_map(field)
            .try_fold(None, |acc: Option<Decimal>, v| {
                acc.unwrap_or_default().checked_add(v).map(Some)
            })
            .ok_or_else(overflow)
    };
    let products = sum(|l| l.total_price, true)?;
    let adjustments = sum(|l| l.adjustment_amount, false)?;
    let taxes = sum(|l| l.tax_amount, false)?;
    let charges = patch.total_charge_amount.or(cart.total_charge_amount);
    let grand = match products {
        None => None,
        Some(p) => Some(grand_total(p, adjustments, charges, taxes).ok_or_else(overflow)?),
    };
    Ok(CartUpdate {
        items: lines
            .into_iter()
            .filter(|l| changed.contains(&l.id))
            .collect(),
        delivery_options: patch.delivery_options.clone(),
        payment_authorization_id: patch.payment_authorization_id.clone(),
        total_product_amount: products,
        total_adjustment_amount: adjustments,
        total_charge_amount: charges,
        total_tax_amount: taxes,
        grand_total_amount: grand,
    })
}

/// Products + adjustments + charges + taxes, or `None` when the sum overflows.
pub fn grand_total(
    products: Decimal,
    adjustments: Option<Decimal>,
    charges: Option<Decimal>,
    taxes: Option<Decimal>,
) -> Option<Decimal> {
    [adjustments, charges, taxes]
        .into_iter()
        .try_fold(products, |total, part| {
            total.checked_add(part.unwrap_or_default())
        })
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
    /// No mapping: the platform's internal data is used, which for cartflow means the
    /// step passes without an external check.
    Internal,
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
            Provider::Internal => Ok(Verdict::Passed),
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
}

/// Built-in providers per store, by store ID.
pub type ProviderConfig = std::collections::BTreeMap<SfId, StoreProviders>;

/// Each store's StoreIntegratedService mapping: which provider performs each kind of check.
#[derive(Clone, Default)]
pub struct Integrations {
    by_store: HashMap<(SfId, ProviderKind), Provider>,
}

impl Integrations {
    /// No mappings: every check uses internal data.
    pub fn new() -> Integrations {
        Integrations::default()
    }

    /// Maps a store's checks of the provider's kind to `provider`, replacing any mapping
    /// (`Provider::Internal` has no kind and maps nothing).
    pub fn set(&mut self, store: SfId, provider: Provider) -> &mut Self {
        if let Some(kind) = provider.kind() {
            self.by_store.insert((store, kind), provider);
        }
        self
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
    use crate::model::{CartStatus, KeyPrefix};

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
            total_charge_amount: Some(Decimal::new(500, 2)),
            ..CartPatch::default()
        };
        let update = apply_patch(&cart, &lines, &patch).unwrap();
        assert_eq!(update.total_product_amount, Some(Decimal::new(2100, 2)));
        assert_eq!(update.total_adjustment_amount, Some(Decimal::new(-100, 2)));
        assert_eq!(update.grand_total_amount, Some(Decimal::new(2500, 2)));
        assert_eq!(update.items.len(), 2);
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
        assert!(apply_patch(&cart, &lines, &patch).is_err());
    }

    #[test]
    fn a_patch_naming_a_foreign_line_is_refused() {
        let (cart, lines) = cart_and_lines();
        let patch = CartPatch {
            items: vec![ItemAmounts::of(SfId::from_number(KeyPrefix::CartItem, 99))],
            ..CartPatch::default()
        };
        assert!(apply_patch(&cart, &lines, &patch).is_err());
    }
}
