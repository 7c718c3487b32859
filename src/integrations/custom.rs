//! The built-in custom provider, `CreditLimit`, and the configuration of the custom providers
//! a store registers by name (the `Custom` map of `integrations.json`).

use std::collections::BTreeMap;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::integrations::price_book::{config_error, problem};
use crate::integrations::{
    CustomProvider, HttpProviderConfig, IntegrationRequest, ProviderError, Verdict,
};
use crate::model::{ProviderKind, SfId, WebCart};

/// Refuses a cart whose amount is above its buyer account's credit limit: the account's own
/// limit when it has one, else the default. The amount is the cart's grand total once the
/// cart is taxed (TotalTaxAmount set), and its product total before that, so the check works
/// before or after the Taxes step. A cart with no amount yet (not priced) fails too: its
/// credit cannot be checked. The failure's message tells the buyer the limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CreditLimit {
    /// The limit of an account with none of its own.
    pub default_limit: Decimal,
    /// Each account's own limit, replacing the default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub account_limits: BTreeMap<SfId, Decimal>,
}

impl CreditLimit {
    /// Every account's limit is `default_limit`.
    pub fn new(default_limit: Decimal) -> CreditLimit {
        CreditLimit {
            default_limit,
            account_limits: BTreeMap::new(),
        }
    }

    /// Gives `account_id` a limit of its own.
    pub fn with_account(mut self, account_id: SfId, limit: Decimal) -> CreditLimit {
        self.account_limits.insert(account_id, limit);
        self
    }

    /// The credit limit of `account_id`.
    pub fn limit_for(&self, account_id: &SfId) -> Decimal {
        self.account_limits
            .get(account_id)
            .copied()
            .unwrap_or(self.default_limit)
    }

    /// Checks the configuration: no limit is negative.
    pub fn validate(&self) -> Result<(), ProviderError> {
        if self.default_limit < Decimal::ZERO {
            return Err(config_error(
                "CreditLimit",
                format!("the default limit {} is negative", self.default_limit),
            ));
        }
        match self
            .account_limits
            .iter()
            .find(|(_, l)| **l < Decimal::ZERO)
        {
            Some((account, limit)) => Err(config_error(
                "CreditLimit",
                format!("the limit {limit} of account {account} is negative"),
            )),
            None => Ok(()),
        }
    }

    /// The amount the limit applies to: the grand total of a taxed cart, else its products.
    fn amount(cart: &WebCart) -> Option<Decimal> {
        if cart.total_tax_amount.is_some() {
            cart.grand_total_amount
        } else {
            cart.total_product_amount
        }
    }
}

impl CustomProvider for CreditLimit {
    /// A table lookup in memory: run on the worker's own thread.
    fn computes_in_memory(&self) -> bool {
        true
    }

    fn run_step(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        self.validate()?;
        let cart = &request.cart;
        let limit = self.limit_for(&cart.account_id);
        let message = match CreditLimit::amount(cart) {
            None => "The cart has no total yet, so its credit cannot be checked.".to_owned(),
            Some(amount) if amount > limit => format!(
                "The order total {amount} is above your account's credit limit of {limit}: \
                 reduce the order or ask us to raise the limit."
            ),
            Some(_) => return Ok(Verdict::Passed),
        };
        Ok(Verdict::Failed(vec![problem(message, cart.id)]))
    }
}

/// A built-in custom provider's configuration, under the provider's kind:
/// `{"CreditLimit": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomConfig {
    /// A [`CreditLimit`].
    CreditLimit(CreditLimit),
    /// A service answering over HTTP ([`HttpProviderConfig`]).
    Http(HttpProviderConfig),
}

impl CustomConfig {
    /// Checks the configuration, as the provider's own `validate` does.
    pub fn validate(&self) -> Result<(), ProviderError> {
        match self {
            CustomConfig::CreditLimit(p) => p.validate(),
            CustomConfig::Http(p) => p.validate(),
        }
    }

    /// The provider it configures (an HTTP one needs the `http` feature).
    pub fn provider(&self) -> Result<Arc<dyn CustomProvider>, ProviderError> {
        match self {
            CustomConfig::CreditLimit(p) => Ok(Arc::new(p.clone())),
            CustomConfig::Http(config) => match super::http_provider(ProviderKind::Custom, config)?
            {
                super::Provider::Custom(p) => Ok(p),
                _ => unreachable!("a Custom HTTP provider is a custom provider"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::price_book::testing::*;
    use crate::model::{KeyPrefix, Level};

    fn taxed(grand: &str, products: &str) -> WebCart {
        WebCart {
            total_product_amount: Some(d(products)),
            total_tax_amount: Some(d("1.00")),
            grand_total_amount: Some(d(grand)),
            ..cart()
        }
    }

    fn messages(provider: &CreditLimit, checked: WebCart) -> Vec<String> {
        let found = failures(provider.run_step(&request(checked, vec![])).unwrap());
        assert!(found.iter().all(|m| m.level == Level::Error));
        assert!(found.iter().all(|m| m.related_entity_id == Some(cart().id)));
        found.into_iter().map(|m| m.message).collect()
    }

    fn passes(provider: &CreditLimit, cart: WebCart) -> bool {
        matches!(
            provider.run_step(&request(cart, vec![])).unwrap(),
            Verdict::Passed
        )
    }

    #[test]
    fn a_taxed_cart_is_held_to_its_grand_total() {
        let limit = CreditLimit::new(d("500.00"));
        assert!(passes(&limit, taxed("500.00", "400.00")));
        assert_eq!(
            messages(&limit, taxed("500.01", "400.00")),
            [
                "The order total 500.01 is above your account's credit limit of 500.00: \
              reduce the order or ask us to raise the limit."
            ]
        );
    }

    #[test]
    fn an_untaxed_cart_is_held_to_its_product_total() {
        let limit = CreditLimit::new(d("500.00"));
        let untaxed = |products: &str| WebCart {
            total_product_amount: Some(d(products)),
            // A charge already counts in the grand total, but the cart is not taxed yet.
            grand_total_amount: Some(d("900.00")),
            ..cart()
        };
        assert!(passes(&limit, untaxed("499.99")));
        let found = messages(&limit, untaxed("600.00"));
        assert!(found[0].contains("600.00 is above"), "{found:?}");
    }

    #[test]
    fn an_unpriced_cart_cannot_be_checked() {
        let found = messages(&CreditLimit::new(d("500.00")), cart());
        assert_eq!(
            found,
            ["The cart has no total yet, so its credit cannot be checked."]
        );
    }

    #[test]
    fn an_account_of_its_own_limit_replaces_the_default() {
        let other = SfId::from_number(KeyPrefix::Account, 2);
        let limits = CreditLimit::new(d("100.00"))
            .with_account(account(), d("1000.00"))
            .with_account(other, d("5.00"));
        assert_eq!(limits.limit_for(&account()), d("1000.00"));
        assert_eq!(limits.limit_for(&other), d("5.00"));
        assert_eq!(
            limits.limit_for(&SfId::from_number(KeyPrefix::Account, 3)),
            d("100.00")
        );
        assert!(passes(&limits, taxed("999.00", "900.00")));
    }

    #[test]
    fn a_negative_limit_is_a_configuration_error() {
        let default = CreditLimit::new(d("-1"));
        assert!(
            default
                .validate()
                .unwrap_err()
                .0
                .contains("default limit -1")
        );
        let account_limit = CreditLimit::new(d("1")).with_account(account(), d("-2"));
        let err = account_limit.validate().unwrap_err();
        assert!(err.0.starts_with("CreditLimit configuration"), "{err}");
        // The provider refuses to run on it, whatever the cart.
        assert!(
            account_limit
                .run_step(&request(taxed("0", "0"), vec![]))
                .is_err()
        );
    }

    #[test]
    fn the_configuration_round_trips_through_json() {
        let json = serde_json::json!({"CreditLimit": {
            "DefaultLimit": "500.00",
            "AccountLimits": {account().to_string(): "1000.00"}
        }});
        let parsed: CustomConfig = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(
            parsed,
            CustomConfig::CreditLimit(
                CreditLimit::new(d("500.00")).with_account(account(), d("1000.00"))
            )
        );
        assert_eq!(serde_json::to_value(&parsed).unwrap(), json);
        let misspelt = serde_json::json!({"CreditLimit": {"DefaultLimt": "1"}});
        assert!(serde_json::from_value::<CustomConfig>(misspelt).is_err());
        let unknown = serde_json::json!({"CreditScore": {"DefaultLimit": "1"}});
        assert!(serde_json::from_value::<CustomConfig>(unknown).is_err());
    }
}
