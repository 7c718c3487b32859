//! The built-in tax provider: a rate per destination country or state.

use std::collections::BTreeSet;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::integrations::price_book::{config_error, problem, product_lines, round_money};
use crate::integrations::{
    CartPatch, IntegrationRequest, ItemAmounts, ProviderError, TaxProvider, Verdict,
};
use crate::model::Address;

/// Tax rates by destination. The cart's delivery address picks the rate: the rate of its
/// (country, state) when the table has one, else the rate of its country. Each product
/// line's TaxAmount = (TotalPrice + AdjustmentAmount) × rate, rounded by
/// [`round_money`] per line; charges are not taxed. Fails when the cart has no delivery
/// address (or one without a country), when no rate covers the destination, and for each
/// product line not priced yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TaxTable {
    /// The rates; at most one per (country, state) and one per country alone.
    pub rates: Vec<TaxRate>,
}

/// The rate of one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TaxRate {
    /// ISO 3166 country code (compared without regard to case).
    pub country_code: String,
    /// State or province code; the rate of the whole country when absent.
    #[serde(default)]
    pub state_code: Option<String>,
    /// The rate as a fraction: `0.2` is 20 %. From 0 to 1.
    pub rate: Decimal,
}

/// A destination as the table compares it: trimmed, upper-case.
fn key(country: &str, state: Option<&str>) -> (String, Option<String>) {
    (
        country.trim().to_uppercase(),
        state.map(|s| s.trim().to_uppercase()),
    )
}

impl TaxTable {
    /// An empty table.
    pub fn new() -> TaxTable {
        TaxTable::default()
    }

    /// Adds the rate of a country (`state` `None`) or of one of its states.
    pub fn rate(mut self, country: &str, state: Option<&str>, rate: Decimal) -> TaxTable {
        self.rates.push(TaxRate {
            country_code: country.to_owned(),
            state_code: state.map(str::to_owned),
            rate,
        });
        self
    }

    /// The rate for an address: its state's when listed, else its country's.
    pub fn rate_for(&self, address: &Address) -> Option<Decimal> {
        let find = |wanted: (String, Option<String>)| {
            self.rates
                .iter()
                .find(|r| key(&r.country_code, r.state_code.as_deref()) == wanted)
                .map(|r| r.rate)
        };
        let state = address
            .state_code
            .as_deref()
            .filter(|s| !s.trim().is_empty());
        state
            .and_then(|s| find(key(&address.country_code, Some(s))))
            .or_else(|| find(key(&address.country_code, None)))
    }

    /// Checks the configuration: country codes (and state codes, when given) not blank,
    /// rates from 0 to 1, no destination listed twice.
    pub fn validate(&self) -> Result<(), ProviderError> {
        let fail = |m: String| Err(config_error("TaxTable", m));
        let mut seen = BTreeSet::new();
        for r in &self.rates {
            let (country, state) = key(&r.country_code, r.state_code.as_deref());
            let place = format!(
                "{country}{}",
                state
                    .as_deref()
                    .map(|s| format!("-{s}"))
                    .unwrap_or_default()
            );
            if country.is_empty() || state.as_deref().is_some_and(str::is_empty) {
                return fail(format!(
                    "a rate has a blank country or state code ({place:?})"
                ));
            }
            if r.rate < Decimal::ZERO || r.rate > Decimal::ONE {
                return fail(format!(
                    "the rate of {place} is {}, not a fraction from 0 to 1",
                    r.rate
                ));
            }
            if !seen.insert((country, state)) {
                return fail(format!("{place} has two rates"));
            }
        }
        Ok(())
    }
}

/// The name of the taxes the tax table computes (their CartTax rows' Name).
pub(crate) const SALES_TAX: &str = "Sales Tax";

impl TaxProvider for TaxTable {
    /// A table lookup in memory: run on the worker's own thread.
    fn computes_in_memory(&self) -> bool {
        true
    }

    fn calculate_taxes(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        self.validate()?;
        let cart = &request.cart;
        let mut problems = Vec::new();
        let rate = match &cart.deliver_to {
            None => {
                problems.push(problem(
                    "The cart has no delivery address, so taxes cannot be calculated.".into(),
                    cart.id,
                ));
                None
            }
            Some(address) if address.country_code.trim().is_empty() => {
                problems.push(problem(
                    "The delivery address has no country, so taxes cannot be calculated.".into(),
                    cart.id,
                ));
                None
            }
            Some(address) => {
                let rate = self.rate_for(address);
                if rate.is_none() {
                    let (country, state) =
                        key(&address.country_code, address.state_code.as_deref());
                    let place = match state.filter(|s| !s.is_empty()) {
                        Some(state) => format!("{country}-{state}"),
                        None => country,
                    };
                    problems.push(problem(
                        format!("There is no tax rate for deliveries to {place}."),
                        cart.id,
                    ));
                }
                rate
            }
        };
        let mut patch = CartPatch::default();
        for item in product_lines(&request.items) {
            let Some(total) = item.total_price else {
                problems.push(problem(
                    format!(
                        "Cart item {} is not priced yet, so its tax cannot be calculated.",
                        item.id
                    ),
                    item.id,
                ));
                continue;
            };
            let Some(rate) = rate else { continue };
            let tax = total
                .checked_add(item.adjustment_amount.unwrap_or_default())
                .and_then(|base| base.checked_mul(rate))
                .map(round_money);
            match tax {
                Some(tax) => patch.items.push(ItemAmounts {
                    tax_amount: Some(tax),
                    tax_rate: Some(rate),
                    tax_name: Some(SALES_TAX.to_owned()),
                    ..ItemAmounts::of(item.id)
                }),
                None => problems.push(problem(
                    format!("Cart item {} is too large an amount to tax.", item.id),
                    item.id,
                )),
            }
        }
        Ok(if problems.is_empty() {
            Verdict::Updated(patch)
        } else {
            Verdict::Failed(problems)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::price_book::testing::*;
    use crate::model::{CartItem, Level, WebCart};

    fn table() -> TaxTable {
        TaxTable::new()
            .rate("US", None, d("0.05"))
            .rate("US", Some("CO"), d("0.029"))
            .rate("DE", None, d("0.19"))
    }

    fn to(country: &str, state: Option<&str>) -> WebCart {
        WebCart {
            deliver_to: Some(Address {
                street: "1 Main St".into(),
                city: "Springfield".into(),
                state_code: state.map(str::to_owned),
                postal_code: "80202".into(),
                country_code: country.into(),
            }),
            ..cart()
        }
    }

    fn taxes(cart: WebCart, items: Vec<CartItem>) -> Vec<Decimal> {
        patch(table().calculate_taxes(&request(cart, items)).unwrap())
            .items
            .into_iter()
            .map(|a| a.tax_amount.unwrap())
            .collect()
    }

    #[test]
    fn tax_is_on_the_discounted_line_and_rounds_per_line() {
        let items = vec![
            priced(1, "A", "459.00", Some("-20.17")),
            priced(2, "B", "0.10", None),
            charge(3, "19.90"),
        ];
        // (459.00 − 20.17) × 0.19 = 83.3777 -> 83.38; 0.10 × 0.19 = 0.019 -> 0.02.
        assert_eq!(taxes(to("DE", None), items), [d("83.38"), d("0.02")]);
        // 0.10 × 0.05 = 0.005 and 0.50 × 0.05 = 0.025: half cents round away from zero
        // (banker's rounding would give 0.00 and 0.02).
        assert_eq!(
            taxes(
                to("US", None),
                vec![priced(1, "A", "0.10", None), priced(2, "B", "0.50", None)]
            ),
            [d("0.01"), d("0.03")]
        );
    }

    #[test]
    fn the_state_rate_wins_over_the_country_rate() {
        let items = || vec![priced(1, "A", "100.00", None)];
        assert_eq!(taxes(to("US", Some("CO")), items()), [d("2.90")]);
        assert_eq!(taxes(to("us", Some(" co ")), items()), [d("2.90")]);
        // A state without its own rate, or none at all, pays the country's.
        assert_eq!(taxes(to("US", Some("OR")), items()), [d("5.00")]);
        assert_eq!(taxes(to("US", None), items()), [d("5.00")]);
        assert_eq!(taxes(to("US", Some("")), items()), [d("5.00")]);
    }

    #[test]
    fn each_missing_piece_fails_with_its_own_message() {
        let unpriced = vec![product(1, Some("A"), "1"), priced(2, "B", "1.00", None)];
        for (which, expected) in [
            (cart(), "has no delivery address"),
            (to(" ", None), "has no country"),
            (to("FR", None), "no tax rate for deliveries to FR."),
            (to("CA", Some("qc")), "no tax rate for deliveries to CA-QC."),
        ] {
            let found = failures(
                table()
                    .calculate_taxes(&request(which, unpriced.clone()))
                    .unwrap(),
            );
            assert_eq!(found.len(), 2, "{found:?}");
            assert!(found[0].message.contains(expected), "{}", found[0].message);
            assert_eq!(found[0].related_entity_id, Some(cart().id));
            assert!(found[1].message.contains("not priced yet"));
            assert_eq!(found[1].related_entity_id, Some(line(1)));
            assert!(found.iter().all(|m| m.level == Level::Error));
        }
    }

    #[test]
    fn huge_lines_fail_instead_of_panicking() {
        let found = failures(
            table()
                .calculate_taxes(&request(
                    to("DE", None),
                    vec![priced(1, "A", &Decimal::MAX.to_string(), Some("1"))],
                ))
                .unwrap(),
        );
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("too large"));
        let ok = patch(
            TaxTable::new()
                .rate("DE", None, Decimal::ONE)
                .calculate_taxes(&request(to("DE", None), vec![priced(1, "A", "10", None)]))
                .unwrap(),
        );
        assert_eq!(ok.items[0].tax_amount, Some(d("10.00")));
    }

    #[test]
    fn a_self_contradictory_table_is_a_provider_error() {
        for bad in [
            table().rate("us", Some("co"), d("0.03")),
            table().rate("de", None, d("0.07")),
            TaxTable::new().rate("FR", None, d("20")),
            TaxTable::new().rate("FR", None, d("-0.1")),
            TaxTable::new().rate(" ", None, d("0.1")),
            TaxTable::new().rate("US", Some(" "), d("0.1")),
        ] {
            let err = bad
                .calculate_taxes(&request(to("US", None), vec![priced(1, "A", "1", None)]))
                .unwrap_err();
            assert!(err.0.starts_with("TaxTable configuration"), "{err}");
        }
    }

    #[test]
    fn the_table_round_trips_through_json() {
        let json = serde_json::json!({"Rates": [
            {"CountryCode": "US", "Rate": "0.05"},
            {"CountryCode": "US", "StateCode": "CO", "Rate": "0.029"}
        ]});
        let parsed: TaxTable = serde_json::from_value(json).unwrap();
        assert_eq!(
            parsed.rate_for(&to("US", Some("CO")).deliver_to.unwrap()),
            Some(d("0.029"))
        );
        let back: TaxTable =
            serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
        assert_eq!(back, parsed);
        let unknown =
            serde_json::json!({"Rates": [{"CountryCode": "US", "Rate": "0.05", "Zip": "1"}]});
        assert!(serde_json::from_value::<TaxTable>(unknown).is_err());
    }
}
