//! The built-in shipment provider: delivery methods priced by bands of order weight or
//! order amount.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::integrations::price_book::{config_error, problem, product_lines, round_money, sku_of};
use crate::integrations::{
    CartPatch, IntegrationRequest, ProviderError, ShipmentProvider, Verdict,
};
use crate::machine::ValidationMessage;
use crate::model::DeliveryOption;

/// Delivery methods, each priced by bands of one measure of the order. Offers every method
/// that can ship the cart as the cart's delivery options, sorted by price then ID (the
/// engine keeps the buyer's earlier choice when it is still offered, repricing its charge
/// line, and drops it when it is not: the buyer chooses again). Fails when no
/// method can ship the cart, with one message per reason: a product line whose SKU has no
/// unit weight (weight-based methods), a product line not priced yet (amount-based
/// methods), a method whose bands do not cover the order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ShippingRates {
    /// The delivery methods on offer.
    pub methods: Vec<DeliveryMethod>,
    /// Weight of one unit per SKU, in the unit the weight bands use (e.g. kg).
    #[serde(default)]
    pub unit_weights: BTreeMap<String, Decimal>,
}

/// A delivery method and its price bands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DeliveryMethod {
    /// Identifier (the cart's DeliveryMethodId).
    pub id: String,
    /// Display name.
    pub name: String,
    /// What the bands measure.
    pub basis: RateBasis,
    /// Price bands; they must not overlap, and gaps are orders the method does not ship.
    pub bands: Vec<RateBand>,
}

/// The measure of the order a method's bands are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RateBasis {
    /// Σ Quantity × unit weight over the product lines.
    Weight,
    /// Σ (TotalPrice + AdjustmentAmount) over the product lines: the priced order after
    /// promotions.
    Amount,
}

/// One band: orders whose measure is at least `from` and below `below` cost `price`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RateBand {
    /// Lower bound, included (0 when absent).
    #[serde(default)]
    pub from: Decimal,
    /// Upper bound, excluded; no upper bound when absent.
    #[serde(default)]
    pub below: Option<Decimal>,
    /// The shipping price, rounded to cents when offered.
    pub price: Decimal,
}

impl RateBand {
    /// A band from `from` (included) to `below` (excluded; open when `None`).
    pub fn new(from: Decimal, below: Option<Decimal>, price: Decimal) -> RateBand {
        RateBand { from, below, price }
    }

    fn covers(&self, measure: Decimal) -> bool {
        measure >= self.from && self.below.is_none_or(|below| measure < below)
    }
}

impl DeliveryMethod {
    /// A method priced on `basis` by `bands`.
    pub fn new(id: &str, name: &str, basis: RateBasis, bands: Vec<RateBand>) -> DeliveryMethod {
        DeliveryMethod {
            id: id.to_owned(),
            name: name.to_owned(),
            basis,
            bands,
        }
    }

    /// The price of shipping an order of `measure`, if a band covers it.
    pub fn price_for(&self, measure: Decimal) -> Option<Decimal> {
        self.bands
            .iter()
            .find(|b| b.covers(measure))
            .map(|b| round_money(b.price))
    }
}

impl ShippingRates {
    /// Rates with `methods` and no unit weights yet.
    pub fn new(methods: Vec<DeliveryMethod>) -> ShippingRates {
        ShippingRates {
            methods,
            unit_weights: BTreeMap::new(),
        }
    }

    /// Sets the weight of one unit of `sku`.
    pub fn weight(mut self, sku: &str, unit_weight: Decimal) -> ShippingRates {
        self.unit_weights.insert(sku.to_owned(), unit_weight);
        self
    }

    /// Checks the configuration: at least one method; IDs and names not blank, IDs unique;
    /// every method has bands, bounds and prices are not negative, each band's `Below` is
    /// above its `From`, and a method's bands do not overlap; weights are not negative.
    pub fn validate(&self) -> Result<(), ProviderError> {
        let fail = |m: String| Err(config_error("ShippingRates", m));
        if self.methods.is_empty() {
            return fail("there are no delivery methods".into());
        }
        let mut ids = BTreeSet::new();
        for method in &self.methods {
            let id = &method.id;
            if id.trim().is_empty() || method.name.trim().is_empty() {
                return fail(format!("method {id:?} has a blank ID or name"));
            }
            if !ids.insert(id.as_str()) {
                return fail(format!("two methods have the ID {id}"));
            }
            if method.bands.is_empty() {
                return fail(format!("method {id} has no rate bands"));
            }
            let mut bands: Vec<&RateBand> = method.bands.iter().collect();
            bands.sort_by_key(|b| b.from);
            let mut reached = Some(Decimal::ZERO);
            for band in bands {
                if band.from < Decimal::ZERO || band.price < Decimal::ZERO {
                    return fail(format!("method {id} has a negative band bound or price"));
                }
                if band.below.is_some_and(|below| below <= band.from) {
                    return fail(format!(
                        "method {id} has a band whose Below is not above its From ({})",
                        band.from
                    ));
                }
                match reached {
                    Some(end) if band.from >= end => reached = band.below,
                    _ => {
                        return fail(format!(
                            "method {id} has overlapping bands at {}",
                            band.from
                        ));
                    }
                }
            }
        }
        for (sku, weight) in &self.unit_weights {
            if sku.trim().is_empty() || *weight < Decimal::ZERO {
                return fail(format!(
                    "the unit weight of SKU {sku:?} is blank or negative"
                ));
            }
        }
        Ok(())
    }

    /// The order's weight, or one message per product line that has no known weight.
    fn order_weight(
        &self,
        request: &IntegrationRequest,
    ) -> Result<Decimal, Vec<ValidationMessage>> {
        let mut problems = Vec::new();
        let mut weight = Some(Decimal::ZERO);
        for item in product_lines(&request.items) {
            let Some(sku) = sku_of(item) else {
                problems.push(problem(
                    format!(
                        "Cart item {} has no SKU, so its weight is unknown to weight-based delivery methods.",
                        item.id
                    ),
                    item.id,
                ));
                continue;
            };
            let Some(unit) = self.unit_weights.get(sku) else {
                problems.push(problem(
                    format!("SKU {sku} has no shipping weight, so weight-based delivery methods cannot ship it."),
                    item.id,
                ));
                continue;
            };
            weight = weight
                .zip(unit.checked_mul(item.quantity))
                .and_then(|(w, line)| w.checked_add(line));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        weight.ok_or_else(|| {
            vec![problem(
                "The order is too heavy to weigh.".into(),
                request.cart.id,
            )]
        })
    }

    /// The priced order after promotions, or one message per product line not priced yet.
    fn order_amount(
        &self,
        request: &IntegrationRequest,
    ) -> Result<Decimal, Vec<ValidationMessage>> {
        let mut problems = Vec::new();
        let mut amount = Some(Decimal::ZERO);
        for item in product_lines(&request.items) {
            let Some(total) = item.total_price else {
                problems.push(problem(
                    format!(
                        "Cart item {} is not priced yet, so amount-based delivery methods cannot price it.",
                        item.id
                    ),
                    item.id,
                ));
                continue;
            };
            let line = total.checked_add(item.adjustment_amount.unwrap_or_default());
            amount = amount.zip(line).and_then(|(a, l)| a.checked_add(l));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        amount.ok_or_else(|| {
            vec![problem(
                "The order's amount is too large to price shipping for.".into(),
                request.cart.id,
            )]
        })
    }
}

impl ShipmentProvider for ShippingRates {
    /// A table lookup in memory: run on the worker's own thread.
    fn computes_in_memory(&self) -> bool {
        true
    }

    fn calculate_shipment(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        self.validate()?;
        let uses = |basis| self.methods.iter().any(|m| m.basis == basis);
        let weight = uses(RateBasis::Weight).then(|| self.order_weight(request));
        let amount = uses(RateBasis::Amount).then(|| self.order_amount(request));
        let mut options = Vec::new();
        let mut out_of_band = Vec::new();
        for method in &self.methods {
            let (measure, what) = match method.basis {
                RateBasis::Weight => (&weight, "weight"),
                RateBasis::Amount => (&amount, "amount"),
            };
            // A measure that could not be taken is reported once, below.
            let Some(Ok(measure)) = measure else {
                continue;
            };
            match method.price_for(*measure) {
                Some(price) => options.push(DeliveryOption {
                    id: None,
                    delivery_method_id: method.id.clone(),
                    name: method.name.clone(),
                    amount: price,
                }),
                None => out_of_band.push(problem(
                    format!(
                        "{} cannot ship this order: its {what} of {} is outside the method's rates.",
                        method.name,
                        measure.normalize()
                    ),
                    request.cart.id,
                )),
            }
        }
        if options.is_empty() {
            let mut problems = Vec::new();
            for measured in [weight, amount].into_iter().flatten() {
                if let Err(found) = measured {
                    problems.extend(found);
                }
            }
            problems.extend(out_of_band);
            return Ok(Verdict::Failed(problems));
        }
        options.sort_by(|a, b| {
            a.amount
                .cmp(&b.amount)
                .then_with(|| a.delivery_method_id.cmp(&b.delivery_method_id))
        });
        Ok(Verdict::Updated(CartPatch {
            delivery_options: Some(options),
            ..CartPatch::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::price_book::testing::*;
    use crate::model::{CartItem, Level};

    fn band(from: &str, below: Option<&str>, price: &str) -> RateBand {
        RateBand::new(d(from), below.map(d), d(price))
    }

    /// Ground and Express by weight, Freight by amount (free from 500).
    fn rates() -> ShippingRates {
        ShippingRates::new(vec![
            DeliveryMethod::new(
                "GROUND",
                "Ground",
                RateBasis::Weight,
                vec![
                    band("0", Some("10"), "9.90"),
                    band("10", Some("50"), "19.90"),
                ],
            ),
            DeliveryMethod::new(
                "EXPRESS",
                "Express",
                RateBasis::Weight,
                vec![band("0", Some("30"), "39")],
            ),
            DeliveryMethod::new(
                "FREIGHT",
                "Freight",
                RateBasis::Amount,
                vec![band("0", Some("500"), "45"), band("500", None, "0")],
            ),
        ])
        .weight("TENT", d("4.2"))
        .weight("ROPE", d("3.8"))
    }

    fn weighed(n: u64, sku: &str, quantity: &str, total: &str) -> CartItem {
        CartItem {
            quantity: d(quantity),
            ..priced(n, sku, total, Some("0"))
        }
    }

    fn ids(options: &[DeliveryOption]) -> Vec<&str> {
        options
            .iter()
            .map(|o| o.delivery_method_id.as_str())
            .collect()
    }

    #[test]
    fn every_method_that_can_ship_is_offered_cheapest_first() {
        // 3 × 4.2 + 5 × 3.8 = 31.6 kg: Ground's second band, too heavy for Express;
        // 600 after promotions: Freight is free.
        let items = vec![
            weighed(1, "TENT", "3", "400.00"),
            CartItem {
                adjustment_amount: Some(d("-50.00")),
                ..weighed(2, "ROPE", "5", "250.00")
            },
        ];
        let out = patch(rates().calculate_shipment(&request(cart(), items)).unwrap());
        let options = out.delivery_options.unwrap();
        assert_eq!(ids(&options), ["FREIGHT", "GROUND"]);
        assert_eq!(options[0].amount, d("0"));
        assert_eq!(options[1].amount, d("19.90"));
    }

    #[test]
    fn bands_include_their_from_and_exclude_their_below() {
        let ground = &rates().methods[0];
        assert_eq!(ground.price_for(d("0")), Some(d("9.90")));
        assert_eq!(ground.price_for(d("9.999")), Some(d("9.90")));
        assert_eq!(ground.price_for(d("10")), Some(d("19.90")));
        assert_eq!(ground.price_for(d("50")), None);
    }

    #[test]
    fn equal_prices_sort_by_id() {
        let flat =
            |id: &str| DeliveryMethod::new(id, id, RateBasis::Amount, vec![band("0", None, "5")]);
        let rates = ShippingRates::new(vec![flat("B"), flat("A"), flat("C")]);
        let out = patch(
            rates
                .calculate_shipment(&request(cart(), vec![priced(1, "X", "1.00", None)]))
                .unwrap(),
        );
        assert_eq!(ids(&out.delivery_options.unwrap()), ["A", "B", "C"]);
    }

    #[test]
    fn a_sku_without_weight_only_rules_out_weight_based_methods() {
        let items = vec![
            weighed(1, "TENT", "1", "100.00"),
            weighed(2, "LAMP", "1", "20.00"),
        ];
        let out = patch(rates().calculate_shipment(&request(cart(), items)).unwrap());
        assert_eq!(ids(&out.delivery_options.unwrap()), ["FREIGHT"]);
    }

    #[test]
    fn no_method_can_ship_fails_with_one_message_per_reason() {
        let weight_only = ShippingRates {
            methods: rates().methods[..2].to_vec(),
            ..rates()
        };
        let items = vec![
            weighed(1, "TENT", "1", "100.00"),
            weighed(2, "LAMP", "1", "20.00"),
            product(3, None, "1"),
            charge(4, "5.00"),
        ];
        let found = failures(
            weight_only
                .calculate_shipment(&request(cart(), items))
                .unwrap(),
        );
        let related: Vec<_> = found.iter().map(|m| m.related_entity_id).collect();
        assert_eq!(related, [Some(line(2)), Some(line(3))]);
        assert!(found[0].message.contains("SKU LAMP has no shipping weight"));
        assert!(found.iter().all(|m| m.level == Level::Error));

        // 20 × 4.2 + 3.8 = 87.8 kg: above every weight band; the unpriced line rules out
        // Freight.
        let heavy = vec![
            weighed(1, "TENT", "20", "100.00"),
            product(2, Some("ROPE"), "1"),
        ];
        let found = failures(rates().calculate_shipment(&request(cart(), heavy)).unwrap());
        let text: Vec<_> = found.iter().map(|m| m.message.as_str()).collect();
        assert_eq!(found.len(), 3, "{text:?}");
        assert_eq!(found[0].related_entity_id, Some(line(2)));
        assert!(text[0].contains("not priced yet"));
        assert!(text[1].starts_with("Ground cannot ship this order: its weight of 87.8"));
        assert!(text[2].starts_with("Express cannot ship"));
        assert_eq!(found[1].related_entity_id, Some(cart().id));
    }

    #[test]
    fn an_order_below_every_amount_band_cannot_ship() {
        let rates = ShippingRates::new(vec![DeliveryMethod::new(
            "MIN",
            "Minimum order",
            RateBasis::Amount,
            vec![band("100", None, "0")],
        )]);
        let found = failures(
            rates
                .calculate_shipment(&request(cart(), vec![priced(1, "A", "99.99", None)]))
                .unwrap(),
        );
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("amount of 99.99"));
    }

    #[test]
    fn huge_orders_fail_instead_of_panicking() {
        let rates = rates().weight("HEAVY", Decimal::MAX);
        let items = vec![
            weighed(1, "HEAVY", "2", &Decimal::MAX.to_string()),
            weighed(2, "HEAVY", "2", &Decimal::MAX.to_string()),
        ];
        let found = failures(rates.calculate_shipment(&request(cart(), items)).unwrap());
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|m| m.related_entity_id == Some(cart().id)));
    }

    #[test]
    fn a_self_contradictory_configuration_is_a_provider_error() {
        let method = |bands| DeliveryMethod::new("M", "M", RateBasis::Weight, bands);
        let bad = [
            ShippingRates::new(vec![]),
            ShippingRates::new(vec![method(vec![])]),
            ShippingRates::new(vec![
                method(vec![band("0", None, "1")]),
                method(vec![band("0", None, "2")]),
            ]),
            ShippingRates::new(vec![method(vec![
                band("0", Some("10"), "1"),
                band("5", None, "2"),
            ])]),
            ShippingRates::new(vec![method(vec![
                band("0", None, "1"),
                band("5", Some("9"), "2"),
            ])]),
            ShippingRates::new(vec![method(vec![band("5", Some("5"), "1")])]),
            ShippingRates::new(vec![method(vec![band("0", None, "-1")])]),
            ShippingRates::new(vec![method(vec![band("0", None, "1")])]).weight("A", d("-1")),
        ];
        for rates in bad {
            let err = rates
                .calculate_shipment(&request(cart(), vec![weighed(1, "A", "1", "1")]))
                .unwrap_err();
            assert!(err.0.starts_with("ShippingRates configuration"), "{err}");
        }
        // Gaps between bands are allowed.
        let gap = ShippingRates::new(vec![method(vec![
            band("0", Some("1"), "1"),
            band("2", None, "2"),
        ])]);
        assert!(gap.validate().is_ok());
    }

    #[test]
    fn rates_round_trip_through_json() {
        let json = serde_json::json!({
            "Methods": [{
                "Id": "GROUND", "Name": "Ground", "Basis": "Weight",
                "Bands": [{"From": "0", "Below": "10", "Price": "9.90"}, {"From": "10", "Price": "19.90"}]
            }],
            "UnitWeights": {"TENT-4P": "4.2"}
        });
        let parsed: ShippingRates = serde_json::from_value(json).unwrap();
        assert_eq!(parsed.methods[0].bands[1].below, None);
        assert_eq!(parsed.unit_weights["TENT-4P"], d("4.2"));
        let back: ShippingRates =
            serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
        assert_eq!(back, parsed);
        let unknown = serde_json::json!({"Methods": [], "Zones": []});
        assert!(serde_json::from_value::<ShippingRates>(unknown).is_err());
    }
}
