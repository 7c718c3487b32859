//! The built-in price provider: list prices by SKU and negotiated prices per account, plus
//! the money helpers every built-in provider shares.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::integrations::{
    CartPatch, IntegrationRequest, ItemAmounts, PriceProvider, ProviderError, Verdict,
};
use crate::machine::ValidationMessage;
use crate::model::{CartItem, CartItemType, Level, SfId};

/// Rounds an amount to cents, halves away from zero (2.345 -> 2.35, -2.345 -> -2.35), and
/// writes it with exactly two decimals. Every built-in provider applies this rule to each
/// amount it computes by multiplying, dividing or taking a percentage.
pub fn round_money(amount: Decimal) -> Decimal {
    let mut rounded = amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(2);
    if rounded.is_zero() {
        // A rounded-away negative amount would otherwise read "-0.00".
        rounded.set_sign_positive(true);
    }
    rounded
}

/// An Error-level message for the buyer about `related` (a cart line or the cart).
pub(super) fn problem(message: String, related: SfId) -> ValidationMessage {
    ValidationMessage {
        level: Level::Error,
        message,
        related_entity_id: Some(related),
    }
}

/// The product lines of a cart: charge lines belong to no built-in provider.
pub(super) fn product_lines(items: &[CartItem]) -> impl Iterator<Item = &CartItem> {
    items
        .iter()
        .filter(|i| i.item_type == CartItemType::Product)
}

/// A line's SKU without surrounding blanks; `None` when missing or blank.
pub(super) fn sku_of(item: &CartItem) -> Option<&str> {
    item.sku.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A configuration problem that stops a provider from working at all.
pub(super) fn config_error(provider: &str, message: String) -> ProviderError {
    ProviderError(format!("{provider} configuration: {message}"))
}

/// Prices by SKU. A line's SalesPrice is the account's negotiated price for its SKU when
/// there is one, else the list price; its ListPrice is the list price (the negotiated price
/// when the SKU has no list price); TotalPrice = SalesPrice × Quantity, rounded by
/// [`round_money`]. Fails each product line with a blank SKU, a SKU without a price, or a
/// quantity that is not positive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PriceBook {
    /// Unit list price per SKU.
    #[serde(default)]
    pub list_prices: BTreeMap<String, Decimal>,
    /// Contract prices: each overrides the list price of one SKU in one account's carts.
    #[serde(default)]
    pub negotiated_prices: Vec<NegotiatedPrice>,
}

/// One account's contract price for one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct NegotiatedPrice {
    /// The buyer account (a cart's effective account).
    pub account_id: SfId,
    /// The SKU.
    pub sku: String,
    /// The unit price the account pays.
    pub price: Decimal,
}

impl PriceBook {
    /// An empty price book.
    pub fn new() -> PriceBook {
        PriceBook::default()
    }

    /// Sets the list price of `sku`.
    pub fn list(mut self, sku: &str, price: Decimal) -> PriceBook {
        self.list_prices.insert(sku.to_owned(), price);
        self
    }

    /// Adds `account`'s negotiated price for `sku`.
    pub fn negotiated(mut self, account: SfId, sku: &str, price: Decimal) -> PriceBook {
        self.negotiated_prices.push(NegotiatedPrice {
            account_id: account,
            sku: sku.to_owned(),
            price,
        });
        self
    }

    /// The unit price `account` pays for `sku`, and the list price shown beside it.
    pub fn price_of(&self, account: SfId, sku: &str) -> Option<(Decimal, Decimal)> {
        let list = self.list_prices.get(sku).copied();
        let negotiated = self
            .negotiated_prices
            .iter()
            .find(|n| n.account_id == account && n.sku == sku)
            .map(|n| n.price);
        let sales = negotiated.or(list)?;
        Some((list.unwrap_or(sales), sales))
    }

    /// Checks the configuration: SKUs are not blank, prices are not negative, and no
    /// (account, SKU) has two negotiated prices.
    pub fn validate(&self) -> Result<(), ProviderError> {
        let fail = |m: String| Err(config_error("PriceBook", m));
        for (sku, price) in &self.list_prices {
            if sku.trim().is_empty() {
                return fail("a list price has a blank SKU".into());
            }
            if *price < Decimal::ZERO {
                return fail(format!("the list price of SKU {sku} is negative ({price})"));
            }
        }
        let mut seen = BTreeSet::new();
        for n in &self.negotiated_prices {
            if n.sku.trim().is_empty() {
                return fail(format!(
                    "a negotiated price of account {} has a blank SKU",
                    n.account_id
                ));
            }
            if n.price < Decimal::ZERO {
                return fail(format!(
                    "the negotiated price of SKU {} for account {} is negative ({})",
                    n.sku, n.account_id, n.price
                ));
            }
            if !seen.insert((n.account_id, n.sku.as_str())) {
                return fail(format!(
                    "SKU {} has two negotiated prices for account {}",
                    n.sku, n.account_id
                ));
            }
        }
        Ok(())
    }
}

impl PriceProvider for PriceBook {
    /// A table lookup in memory: run on the worker's own thread.
    fn computes_in_memory(&self) -> bool {
        true
    }

    fn price_cart(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        self.validate()?;
        let account = request.cart.account_id;
        let mut problems = Vec::new();
        let mut patch = CartPatch::default();
        for item in product_lines(&request.items) {
            let Some(sku) = sku_of(item) else {
                problems.push(problem(
                    format!("Cart item {} has no SKU, so it cannot be priced.", item.id),
                    item.id,
                ));
                continue;
            };
            if item.quantity <= Decimal::ZERO {
                problems.push(problem(
                    format!(
                        "SKU {sku}: quantity {} is not a positive number.",
                        item.quantity.normalize()
                    ),
                    item.id,
                ));
                continue;
            }
            let Some((list, sales)) = self.price_of(account, sku) else {
                problems.push(problem(
                    format!("SKU {sku} has no price in the store's price book."),
                    item.id,
                ));
                continue;
            };
            let Some(total) = sales.checked_mul(item.quantity).map(round_money) else {
                problems.push(problem(
                    format!(
                        "SKU {sku}: {} units at {sales} is too large an amount to price.",
                        item.quantity.normalize()
                    ),
                    item.id,
                ));
                continue;
            };
            patch.items.push(ItemAmounts {
                list_price: Some(list),
                sales_price: Some(sales),
                total_price: Some(total),
                ..ItemAmounts::of(item.id)
            });
        }
        Ok(if problems.is_empty() {
            Verdict::Updated(patch)
        } else {
            Verdict::Failed(problems)
        })
    }
}

/// Requests, amounts and verdict readers shared by the built-in providers' unit tests.
#[cfg(test)]
pub(super) mod testing {
    use std::str::FromStr;

    use rust_decimal::Decimal;

    use crate::integrations::{CartPatch, IntegrationRequest, Verdict};
    use crate::machine::ValidationMessage;
    use crate::model::{CartItem, CartItemType, CartStatus, KeyPrefix, SfId, WebCart};

    /// A decimal from its text.
    pub(crate) fn d(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    /// The account of [`cart`]'s carts.
    pub(crate) fn account() -> SfId {
        SfId::from_number(KeyPrefix::Account, 1)
    }

    /// The ID of line `n`.
    pub(crate) fn line(n: u64) -> SfId {
        SfId::from_number(KeyPrefix::CartItem, n)
    }

    /// A checkout cart of [`account`] with no lines.
    pub(crate) fn cart() -> WebCart {
        WebCart::new(
            SfId::from_number(KeyPrefix::WebCart, 1),
            SfId::from_number(KeyPrefix::WebStore, 1),
            account(),
            SfId::from_number(KeyPrefix::User, 1),
            CartStatus::Checkout,
        )
    }

    /// An unpriced product line `n` of [`cart`].
    pub(crate) fn product(n: u64, sku: Option<&str>, quantity: &str) -> CartItem {
        CartItem::product(line(n), cart().id, sku.map(str::to_owned), d(quantity))
    }

    /// Product line `n` priced at `total` (TotalPrice), optionally with an adjustment.
    pub(crate) fn priced(n: u64, sku: &str, total: &str, adjustment: Option<&str>) -> CartItem {
        CartItem {
            total_price: Some(d(total)),
            adjustment_amount: adjustment.map(d),
            ..product(n, Some(sku), "1")
        }
    }

    /// A charge line `n` (shipping already on the cart as a line).
    pub(crate) fn charge(n: u64, total: &str) -> CartItem {
        CartItem {
            item_type: CartItemType::Charge,
            total_price: Some(d(total)),
            ..product(n, Some("SHIPPING"), "1")
        }
    }

    /// A request for `cart` with `items`.
    pub(crate) fn request(cart: WebCart, items: Vec<CartItem>) -> IntegrationRequest {
        IntegrationRequest {
            operation_id: SfId::from_number(KeyPrefix::BackgroundOperation, 7),
            cart,
            items: items.into(),
            order: None,
        }
    }

    /// The patch of an `Updated` verdict; panics (fails the test) on any other verdict.
    pub(crate) fn patch(verdict: Verdict) -> CartPatch {
        match verdict {
            Verdict::Updated(patch) => patch,
            other => panic!("expected Updated, got {other:?}"),
        }
    }

    /// The messages of a `Failed` verdict; panics (fails the test) on any other verdict.
    pub(crate) fn failures(verdict: Verdict) -> Vec<ValidationMessage> {
        match verdict {
            Verdict::Failed(messages) => messages,
            other => panic!("expected Failed, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::model::KeyPrefix;

    fn book() -> PriceBook {
        PriceBook::new()
            .list("TENT-4P", d("249.99"))
            .list("ROPE-60M", d("89.90"))
            .negotiated(account(), "TENT-4P", d("229.50"))
            .negotiated(
                SfId::from_number(KeyPrefix::Account, 2),
                "ROPE-60M",
                d("80"),
            )
    }

    fn amounts(patch: &CartPatch, n: u64) -> &ItemAmounts {
        patch.items.iter().find(|a| a.item_id == line(n)).unwrap()
    }

    #[test]
    fn money_rounds_half_away_from_zero_to_two_places() {
        for (input, expected) in [
            ("2.345", "2.35"),
            ("2.344999", "2.34"),
            ("-2.345", "-2.35"),
            ("0.005", "0.01"),
            ("-0.004", "0.00"),
            ("7", "7.00"),
        ] {
            let rounded = round_money(d(input));
            assert_eq!(rounded.to_string(), expected, "{input}");
        }
    }

    #[test]
    fn negotiated_price_overrides_the_list_price_for_its_account_only() {
        let items = vec![
            product(1, Some("TENT-4P"), "2"),
            product(2, Some("ROPE-60M"), "3"),
        ];
        let ours = patch(book().price_cart(&request(cart(), items.clone())).unwrap());
        let tent = amounts(&ours, 1);
        assert_eq!(tent.list_price, Some(d("249.99")));
        assert_eq!(tent.sales_price, Some(d("229.50")));
        assert_eq!(tent.total_price, Some(d("459.00")));
        // Account 2's rope price does not apply to account 1's cart.
        let rope = amounts(&ours, 2);
        assert_eq!(rope.sales_price, Some(d("89.90")));
        assert_eq!(rope.total_price, Some(d("269.70")));

        let mut other = cart();
        other.account_id = SfId::from_number(KeyPrefix::Account, 2);
        let theirs = patch(book().price_cart(&request(other, items)).unwrap());
        assert_eq!(amounts(&theirs, 1).sales_price, Some(d("249.99")));
        assert_eq!(amounts(&theirs, 2).sales_price, Some(d("80")));
        assert_eq!(amounts(&theirs, 2).list_price, Some(d("89.90")));
        assert_eq!(amounts(&theirs, 2).total_price, Some(d("240.00")));
    }

    #[test]
    fn a_negotiated_only_sku_shows_its_price_as_list_price() {
        let book = PriceBook::new().negotiated(account(), "CUSTOM-1", d("12"));
        let out = patch(
            book.price_cart(&request(cart(), vec![product(1, Some("CUSTOM-1"), "1")]))
                .unwrap(),
        );
        assert_eq!(out.items[0].list_price, Some(d("12")));
        assert_eq!(out.items[0].sales_price, Some(d("12")));
    }

    #[test]
    fn fractional_quantities_round_the_total_to_cents() {
        let book = PriceBook::new().list("CABLE-M", d("1.99"));
        let out = patch(
            book.price_cart(&request(cart(), vec![product(1, Some("CABLE-M"), "2.5")]))
                .unwrap(),
        );
        // 1.99 × 2.5 = 4.975 -> 4.98 (half away from zero).
        assert_eq!(out.items[0].total_price.unwrap().to_string(), "4.98");
    }

    #[test]
    fn each_unpriceable_line_fails_on_its_own() {
        let items = vec![
            product(1, Some("TENT-4P"), "1"),
            product(2, Some("UNKNOWN"), "1"),
            product(3, Some("   "), "1"),
            product(4, None, "1"),
            product(5, Some("ROPE-60M"), "0"),
            charge(6, "10"),
        ];
        let found = failures(book().price_cart(&request(cart(), items)).unwrap());
        let related: Vec<_> = found.iter().map(|m| m.related_entity_id).collect();
        assert_eq!(
            related,
            [Some(line(2)), Some(line(3)), Some(line(4)), Some(line(5))]
        );
        assert!(found.iter().all(|m| m.level == Level::Error));
        assert!(found[0].message.contains("SKU UNKNOWN has no price"));
        assert!(found[1].message.contains("has no SKU"));
        assert!(found[3].message.contains("quantity 0"));
    }

    #[test]
    fn charge_lines_are_left_alone() {
        let out = patch(
            book()
                .price_cart(&request(
                    cart(),
                    vec![product(1, Some("ROPE-60M"), "1"), charge(2, "10")],
                ))
                .unwrap(),
        );
        assert_eq!(out.items.len(), 1);
        assert_eq!(out.items[0].item_id, line(1));
    }

    #[test]
    fn an_overflowing_line_fails_instead_of_panicking() {
        let book = PriceBook::new().list("BIG", Decimal::MAX);
        let found = failures(
            book.price_cart(&request(cart(), vec![product(1, Some("BIG"), "1000")]))
                .unwrap(),
        );
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("too large"));
    }

    #[test]
    fn a_self_contradictory_book_is_a_provider_error() {
        let items = vec![product(1, Some("TENT-4P"), "1")];
        let twice = book().negotiated(account(), "TENT-4P", d("1"));
        let negative = PriceBook::new().list("TENT-4P", d("-1"));
        let blank = PriceBook::new().list(" ", d("1"));
        for bad in [twice, negative, blank] {
            let err = bad.price_cart(&request(cart(), items.clone())).unwrap_err();
            assert!(err.0.starts_with("PriceBook configuration"), "{err}");
        }
    }

    #[test]
    fn the_book_round_trips_through_json() {
        let json = serde_json::json!({
            "ListPrices": {"TENT-4P": "249.99"},
            "NegotiatedPrices": [
                {"AccountId": account().to_string(), "Sku": "TENT-4P", "Price": "229.50"}
            ]
        });
        let parsed: PriceBook = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(
            parsed.price_of(account(), "TENT-4P"),
            Some((d("249.99"), d("229.50")))
        );
        assert_eq!(serde_json::to_value(&parsed).unwrap(), json);
        let unknown = serde_json::json!({"ListPrices": {}, "Discounts": []});
        assert!(serde_json::from_value::<PriceBook>(unknown).is_err());
    }
}
