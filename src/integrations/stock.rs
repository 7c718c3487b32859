//! The built-in inventory provider: a stock table per store.

use std::collections::HashMap;

use rust_decimal::Decimal;

use crate::integrations::{IntegrationRequest, InventoryProvider, ProviderError, Verdict};
use crate::machine::ValidationMessage;
use crate::model::{CartItemType, Level, SfId};

/// Units available per SKU. Fails a cart whose product line has a blank SKU, that has no
/// product lines, that names a SKU the table does not know, or that wants more of a SKU
/// (summed over every line carrying it) than the table holds: one message per problem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StockTable {
    levels: HashMap<String, Decimal>,
}

impl StockTable {
    /// A table of `(sku, units)` pairs.
    pub fn new<S: Into<String>>(levels: impl IntoIterator<Item = (S, Decimal)>) -> StockTable {
        StockTable {
            levels: levels.into_iter().map(|(s, q)| (s.into(), q)).collect(),
        }
    }

    /// Sets the units available of a SKU.
    pub fn set(&mut self, sku: &str, units: Decimal) {
        self.levels.insert(sku.to_owned(), units);
    }

    /// The units available of a SKU.
    pub fn available(&self, sku: &str) -> Option<Decimal> {
        self.levels.get(sku).copied()
    }
}

fn problem(message: String, related: SfId) -> ValidationMessage {
    ValidationMessage {
        level: Level::Error,
        message,
        related_entity_id: Some(related),
    }
}

impl InventoryProvider for StockTable {
    /// A table lookup in memory: run on the worker's own thread.
    fn computes_in_memory(&self) -> bool {
        true
    }

    fn check_inventory(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        let products: Vec<_> = request
            .items
            .iter()
            .filter(|i| i.item_type == CartItemType::Product)
            .collect();
        if products.is_empty() {
            return Ok(Verdict::Failed(vec![problem(
                "The cart is empty: there is nothing to check out.".into(),
                request.cart.id,
            )]));
        }
        let mut problems = Vec::new();
        // Lines sharing a SKU are summed before comparing with stock: a map from SKU to its
        // place in `wanted`, in the order of the lines.
        let mut place: HashMap<&str, usize> = HashMap::with_capacity(products.len());
        let mut wanted: Vec<(&str, Decimal, SfId)> = Vec::with_capacity(products.len());
        for item in products {
            let sku = item.sku.as_deref().map(str::trim).unwrap_or_default();
            if sku.is_empty() {
                problems.push(problem(
                    format!(
                        "Cart item {} has no SKU, so its stock cannot be checked.",
                        item.id
                    ),
                    item.id,
                ));
                continue;
            }
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
            let at = *place.entry(sku).or_insert_with(|| {
                wanted.push((sku, Decimal::ZERO, item.id));
                wanted.len() - 1
            });
            wanted[at].1 += item.quantity;
        }
        problems.extend(self.short_stock(wanted));
        Ok(if problems.is_empty() {
            Verdict::Passed
        } else {
            Verdict::Failed(problems)
        })
    }
}

impl StockTable {
    /// One problem per SKU that is unknown or short of what its lines want, in SKU order.
    fn short_stock(&self, wanted: Vec<(&str, Decimal, SfId)>) -> Vec<ValidationMessage> {
        let mut problems: Vec<(&str, ValidationMessage)> = Vec::new();
        for (sku, quantity, first_line) in wanted {
            let quantity = quantity.normalize();
            match self.available(sku) {
                None => problems.push((
                    sku,
                    problem(
                        format!(
                            "SKU {sku}: {quantity} wanted, 0 available (unknown to the stock \
                             source)."
                        ),
                        first_line,
                    ),
                )),
                Some(available) if available < quantity => problems.push((
                    sku,
                    problem(
                        format!(
                            "SKU {sku}: {quantity} wanted, only {} available.",
                            available.normalize()
                        ),
                        first_line,
                    ),
                )),
                Some(_) => {}
            }
        }
        // Sorting the few problems, not the many SKUs: the order is the SKUs' either way.
        problems.sort_by(|a, b| a.0.cmp(b.0));
        problems.into_iter().map(|(_, problem)| problem).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CartItem, CartStatus, KeyPrefix, WebCart};

    fn id(kind: KeyPrefix, n: u64) -> SfId {
        SfId::from_number(kind, n)
    }

    fn request(lines: &[(Option<&str>, i64, CartItemType)]) -> IntegrationRequest {
        let cart = WebCart::new(
            id(KeyPrefix::WebCart, 1),
            id(KeyPrefix::WebStore, 1),
            id(KeyPrefix::Account, 1),
            id(KeyPrefix::User, 1),
            CartStatus::Checkout,
        );
        let items: Vec<_> = lines
            .iter()
            .enumerate()
            .map(|(n, (sku, qty, kind))| CartItem {
                item_type: *kind,
                ..CartItem::product(
                    id(KeyPrefix::CartItem, n as u64),
                    cart.id,
                    sku.map(str::to_owned),
                    Decimal::from(*qty),
                )
            })
            .collect();
        IntegrationRequest {
            operation_id: id(KeyPrefix::BackgroundOperation, 1),
            cart,
            items: items.into(),
            order: None,
        }
    }

    fn messages(verdict: Verdict) -> Vec<String> {
        match verdict {
            Verdict::Passed | Verdict::Updated(_) => vec![],
            Verdict::Failed(m) => m.into_iter().map(|m| m.message).collect(),
        }
    }

    #[test]
    fn lines_sharing_a_sku_are_summed() {
        let stock = StockTable::new([("A", Decimal::from(5))]);
        let fits = request(&[
            (Some("A"), 2, CartItemType::Product),
            (Some("A"), 3, CartItemType::Product),
        ]);
        assert_eq!(stock.check_inventory(&fits).unwrap(), Verdict::Passed);
        let short = request(&[
            (Some("A"), 3, CartItemType::Product),
            (Some("A"), 3, CartItemType::Product),
        ]);
        assert_eq!(
            messages(stock.check_inventory(&short).unwrap()),
            ["SKU A: 6 wanted, only 5 available."]
        );
    }

    #[test]
    fn every_problem_gets_its_own_message() {
        let stock = StockTable::new([("A", Decimal::from(1))]);
        let cart = request(&[
            (Some("A"), 2, CartItemType::Product),
            (Some("  "), 1, CartItemType::Product),
            (None, 1, CartItemType::Product),
            (Some("Z"), 4, CartItemType::Product),
            (Some("SHIP"), 1, CartItemType::Charge),
        ]);
        let found = messages(stock.check_inventory(&cart).unwrap());
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(
            found
                .iter()
                .any(|m| m.contains("SKU Z: 4 wanted, 0 available"))
        );
        assert!(found.iter().any(|m| m.contains("SKU A: 2 wanted, only 1")));
        assert_eq!(found.iter().filter(|m| m.contains("has no SKU")).count(), 2);
    }

    #[test]
    fn the_lines_problems_come_first_then_each_short_sku_in_sku_order() {
        let stock = StockTable::new([("A", Decimal::from(1)), ("M", Decimal::from(9))]);
        let cart = request(&[
            (Some("Z"), 1, CartItemType::Product),
            (Some("M"), 2, CartItemType::Product),
            (Some(" A"), 1, CartItemType::Product),
            (None, 1, CartItemType::Product),
            (Some("A "), 1, CartItemType::Product),
        ]);
        let line = id(KeyPrefix::CartItem, 3);
        assert_eq!(
            messages(stock.check_inventory(&cart).unwrap()),
            [
                format!("Cart item {line} has no SKU, so its stock cannot be checked."),
                "SKU A: 2 wanted, only 1 available.".to_owned(),
                "SKU Z: 1 wanted, 0 available (unknown to the stock source).".to_owned(),
            ]
        );
    }

    #[test]
    fn a_cart_without_product_lines_is_empty() {
        let stock = StockTable::default();
        for lines in [vec![], vec![(Some("SHIP"), 1, CartItemType::Charge)]] {
            let found = messages(stock.check_inventory(&request(&lines)).unwrap());
            assert_eq!(found.len(), 1);
            assert!(found[0].contains("empty"));
        }
    }
}
