//! The built-in promotions provider: percentage discounts and order-threshold amounts off.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::integrations::price_book::{config_error, problem, product_lines, round_money, sku_of};
use crate::integrations::{
    CartPatch, IntegrationRequest, ItemAmounts, PromotionsProvider, ProviderError, Verdict,
};

/// Promotion rules applied to a priced cart. Writes each product line's AdjustmentAmount
/// (zero or negative):
///
/// - every [`PromotionRule::Percentage`] that matches a line takes `Percent` of the line's
///   TotalPrice off it, rounded by [`round_money`] per line and rule;
/// - of the [`PromotionRule::Threshold`]s whose `MinSubtotal` the product subtotal (Σ
///   TotalPrice) reaches, the one with the largest `AmountOff` applies (tiers do not stack);
///   its amount is spread over the product lines in proportion to their TotalPrice, each
///   share rounded, with the rounding remainder on the largest line, so the shares add up to
///   the amount exactly.
///
/// A line's adjustment never exceeds its TotalPrice: percentages are capped at it, and a
/// threshold amount is cut to what the percentages left, a share that would pass its line's
/// rest moving on to the next largest line. Fails each product line that is not priced yet
/// (no TotalPrice) or has a negative TotalPrice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Promotions {
    /// The rules, all of which are considered for every cart.
    #[serde(default)]
    pub rules: Vec<PromotionRule>,
}

/// One promotion rule; in JSON an object whose `Type` names the variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Type", rename_all_fields = "PascalCase", deny_unknown_fields)]
pub enum PromotionRule {
    /// `percent` % off every product line, or only the lines of `sku`.
    Percentage {
        /// The SKU it applies to; the whole cart when absent.
        #[serde(default)]
        sku: Option<String>,
        /// Percent off, more than 0 and at most 100.
        percent: Decimal,
    },
    /// `amount_off` off the order once the product subtotal reaches `min_subtotal`.
    Threshold {
        /// The product subtotal (Σ TotalPrice) from which the rule applies.
        min_subtotal: Decimal,
        /// The amount taken off, more than 0.
        amount_off: Decimal,
    },
}

impl Promotions {
    /// No rules: every adjustment is zero.
    pub fn new() -> Promotions {
        Promotions::default()
    }

    /// Adds a rule.
    pub fn rule(mut self, rule: PromotionRule) -> Promotions {
        self.rules.push(rule);
        self
    }

    /// Checks the configuration: percents in (0, 100], a rule's SKU not blank, minimum
    /// subtotals not negative, amounts off positive.
    pub fn validate(&self) -> Result<(), ProviderError> {
        let fail = |m: String| Err(config_error("Promotions", m));
        for (n, rule) in self.rules.iter().enumerate() {
            match rule {
                PromotionRule::Percentage { sku, percent } => {
                    if sku.as_deref().is_some_and(|s| s.trim().is_empty()) {
                        return fail(format!("rule {n} has a blank SKU"));
                    }
                    if *percent <= Decimal::ZERO || *percent > Decimal::ONE_HUNDRED {
                        return fail(format!(
                            "rule {n}: {percent} % is not a percentage in (0, 100]"
                        ));
                    }
                }
                PromotionRule::Threshold {
                    min_subtotal,
                    amount_off,
                } => {
                    if *min_subtotal < Decimal::ZERO {
                        return fail(format!(
                            "rule {n}: the minimum subtotal {min_subtotal} is negative"
                        ));
                    }
                    if *amount_off <= Decimal::ZERO {
                        return fail(format!(
                            "rule {n}: the amount off {amount_off} is not positive"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A product line being discounted.
struct Line {
    total: Decimal,
    /// What the percentages take off (capped at `total`).
    percentage_off: Decimal,
}

impl PromotionsProvider for Promotions {
    /// A table lookup in memory: run on the worker's own thread.
    fn computes_in_memory(&self) -> bool {
        true
    }

    fn apply_promotions(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        self.validate()?;
        let mut problems = Vec::new();
        let mut lines = Vec::new();
        let mut ids = Vec::new();
        for item in product_lines(&request.items) {
            match item.total_price {
                None => problems.push(problem(
                    format!(
                        "Cart item {} ({}) is not priced yet, so promotions cannot apply.",
                        item.id,
                        sku_of(item).unwrap_or("no SKU")
                    ),
                    item.id,
                )),
                Some(total) if total < Decimal::ZERO => problems.push(problem(
                    format!(
                        "Cart item {} has a negative total price ({total}), so promotions cannot apply.",
                        item.id
                    ),
                    item.id,
                )),
                Some(total) => {
                    let mut off = Decimal::ZERO;
                    for rule in &self.rules {
                        if let PromotionRule::Percentage { sku, percent } = rule {
                            let applies = match sku {
                                None => true,
                                Some(sku) => sku_of(item) == Some(sku.trim()),
                            };
                            if applies {
                                // percent ≤ 100: each share is at most the total, and a sum
                                // too large to hold is past the cap anyway.
                                let share =
                                    round_money(total * (*percent / Decimal::ONE_HUNDRED));
                                off = off.checked_add(share).map_or(total, |s| s.min(total));
                            }
                        }
                    }
                    lines.push(Line {
                        total,
                        percentage_off: off,
                    });
                    ids.push(item.id);
                }
            }
        }
        if !problems.is_empty() {
            return Ok(Verdict::Failed(problems));
        }
        let Some(threshold_off) = self.threshold_off(&lines) else {
            return Ok(Verdict::Failed(vec![problem(
                "The cart's amounts are too large to apply promotions to.".into(),
                request.cart.id,
            )]));
        };
        let patch = CartPatch {
            items: ids
                .into_iter()
                .zip(&lines)
                .zip(threshold_off)
                .map(|((id, line), share)| {
                    // Both parts are rounded already, or capped at a TotalPrice given with
                    // more decimals, which rounding again could push past the line.
                    let mut adjustment = Decimal::ZERO - (line.percentage_off + share);
                    if adjustment.scale() < 2 {
                        adjustment.rescale(2);
                    }
                    if adjustment.is_zero() {
                        adjustment.set_sign_positive(true);
                    }
                    ItemAmounts {
                        adjustment_amount: Some(adjustment),
                        ..ItemAmounts::of(id)
                    }
                })
                .collect(),
            ..CartPatch::default()
        };
        Ok(Verdict::Updated(patch))
    }
}

impl Promotions {
    /// Each line's share of the best threshold reached; `None` on arithmetic overflow.
    fn threshold_off(&self, lines: &[Line]) -> Option<Vec<Decimal>> {
        let mut subtotal = Decimal::ZERO;
        let mut rest = Decimal::ZERO;
        for line in lines {
            subtotal = subtotal.checked_add(line.total)?;
            rest = rest.checked_add(line.total - line.percentage_off)?;
        }
        let best = self
            .rules
            .iter()
            .filter_map(|rule| match rule {
                PromotionRule::Threshold {
                    min_subtotal,
                    amount_off,
                } if subtotal >= *min_subtotal => Some(*amount_off),
                _ => None,
            })
            .max()
            .unwrap_or_default();
        let weights: Vec<Decimal> = lines.iter().map(|l| l.total).collect();
        let caps: Vec<Decimal> = lines.iter().map(|l| l.total - l.percentage_off).collect();
        spread(best.min(rest), &weights, &caps)
    }
}

/// Splits `amount` over lines in proportion to `weights`, each share rounded by
/// [`round_money`], the rounding remainder on the largest weight (the first of equals). A
/// share is kept within `0..=cap`; what a cap cuts off (or a negative remainder leaves
/// missing) moves to the next largest lines. The shares add up to `amount` exactly when
/// `0 <= amount <= Σ caps`. `None` on arithmetic overflow.
pub(super) fn spread(
    amount: Decimal,
    weights: &[Decimal],
    caps: &[Decimal],
) -> Option<Vec<Decimal>> {
    let mut shares = vec![Decimal::ZERO; weights.len()];
    let total_weight = weights
        .iter()
        .try_fold(Decimal::ZERO, |acc, w| acc.checked_add(*w))?;
    if amount.is_zero() || total_weight <= Decimal::ZERO {
        return Some(shares);
    }
    // Largest weight first; ties keep the lines' order.
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|a, b| weights[*b].cmp(&weights[*a]).then(a.cmp(b)));
    for (share, weight) in shares.iter_mut().zip(weights) {
        // amount × weight / total is exact where it fits; the ratio first where it does not.
        let exact = amount
            .checked_mul(*weight)
            .and_then(|p| p.checked_div(total_weight));
        let proportional = match exact {
            Some(value) => value,
            None => weight.checked_div(total_weight)?.checked_mul(amount)?,
        };
        *share = round_money(proportional);
    }
    let assigned = shares
        .iter()
        .try_fold(Decimal::ZERO, |acc, s| acc.checked_add(*s))?;
    shares[order[0]] = shares[order[0]].checked_add(amount.checked_sub(assigned)?)?;
    // Keep each share within its line; carry the difference to the largest lines first.
    let mut carry = Decimal::ZERO;
    for (share, cap) in shares.iter_mut().zip(caps) {
        let kept = (*share).clamp(Decimal::ZERO, (*cap).max(Decimal::ZERO));
        carry += *share - kept;
        *share = kept;
    }
    for &i in &order {
        if carry > Decimal::ZERO {
            let take = (caps[i] - shares[i]).max(Decimal::ZERO).min(carry);
            shares[i] += take;
            carry -= take;
        } else if carry < Decimal::ZERO {
            let take = shares[i].min(-carry);
            shares[i] -= take;
            carry += take;
        }
    }
    Some(shares)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::price_book::testing::*;
    use crate::model::{CartItem, Level};

    fn adjustments(promotions: &Promotions, items: Vec<CartItem>) -> Vec<Decimal> {
        let out = patch(
            promotions
                .apply_promotions(&request(cart(), items))
                .unwrap(),
        );
        out.items
            .into_iter()
            .map(|a| a.adjustment_amount.unwrap())
            .collect()
    }

    fn percentage(sku: Option<&str>, percent: &str) -> PromotionRule {
        PromotionRule::Percentage {
            sku: sku.map(str::to_owned),
            percent: d(percent),
        }
    }

    fn threshold(min: &str, off: &str) -> PromotionRule {
        PromotionRule::Threshold {
            min_subtotal: d(min),
            amount_off: d(off),
        }
    }

    #[test]
    fn no_rules_write_zero_adjustments() {
        let got = adjustments(
            &Promotions::new(),
            vec![priced(1, "A", "10.00", None), priced(2, "B", "5.00", None)],
        );
        assert_eq!(got, [d("0"), d("0")]);
        assert!(got.iter().all(|a| !a.is_sign_negative()));
    }

    #[test]
    fn percentages_apply_to_the_cart_or_one_sku_and_round_per_line() {
        let promotions = Promotions::new()
            .rule(percentage(Some("ROPE"), "10"))
            .rule(percentage(None, "5"));
        let got = adjustments(
            &promotions,
            vec![
                priced(1, "ROPE", "449.50", None),
                priced(2, "TENT", "0.30", None),
            ],
        );
        // ROPE: 44.95 + 22.475 -> 22.48 = 67.43; TENT: 0.015 -> 0.02.
        assert_eq!(got, [d("-67.43"), d("-0.02")]);
    }

    #[test]
    fn a_line_priced_in_fractions_of_a_cent_is_never_discounted_past_its_total() {
        let got = adjustments(
            &Promotions::new().rule(percentage(None, "100")),
            vec![priced(1, "A", "0.125", None)],
        );
        assert_eq!(got, [d("-0.125")]);
    }

    #[test]
    fn stacked_percentages_never_exceed_the_line() {
        let promotions = Promotions::new()
            .rule(percentage(None, "80"))
            .rule(percentage(Some("A"), "50"));
        let got = adjustments(&promotions, vec![priced(1, "A", "20.00", None)]);
        assert_eq!(got, [d("-20.00")]);
    }

    #[test]
    fn a_threshold_applies_once_the_subtotal_reaches_it_and_the_best_tier_wins() {
        let promotions = Promotions::new()
            .rule(threshold("100", "10"))
            .rule(threshold("200", "25"));
        let below = adjustments(&promotions, vec![priced(1, "A", "99.99", None)]);
        assert_eq!(below, [d("0")]);
        let at = adjustments(&promotions, vec![priced(1, "A", "100.00", None)]);
        assert_eq!(at, [d("-10.00")]);
        let above = adjustments(
            &promotions,
            vec![
                priced(1, "A", "150.00", None),
                priced(2, "B", "50.00", None),
            ],
        );
        // 25 × 150/200 = 18.75, 25 × 50/200 = 6.25.
        assert_eq!(above, [d("-18.75"), d("-6.25")]);
    }

    #[test]
    fn a_threshold_spread_adds_up_exactly_with_the_remainder_on_the_largest_line() {
        let promotions = Promotions::new().rule(threshold("0", "10"));
        // Three equal lines: 3.333… each rounds to 3.33; the 0.01 left goes to the first
        // of the largest.
        let equal = adjustments(
            &promotions,
            vec![
                priced(1, "A", "30.00", None),
                priced(2, "B", "30.00", None),
                priced(3, "C", "30.00", None),
            ],
        );
        assert_eq!(equal, [d("-3.34"), d("-3.33"), d("-3.33")]);
        // 10 × 10/60 = 1.666… -> 1.67 (twice) and 10 × 40/60 = 6.666… -> 6.67: 10.01
        // assigned, the largest line gives back the 0.01.
        let over = adjustments(
            &promotions,
            vec![
                priced(1, "A", "10.00", None),
                priced(2, "B", "10.00", None),
                priced(3, "C", "40.00", None),
            ],
        );
        assert_eq!(over, [d("-1.67"), d("-1.67"), d("-6.66")]);
        assert_eq!(over.iter().sum::<Decimal>(), d("-10"));
    }

    #[test]
    fn spreading_is_exact_for_many_shapes() {
        // A deterministic sweep of amounts and line mixes, including shares that round to
        // zero and remainders larger than a cent.
        let totals = [
            "0.01", "0.02", "0.03", "1.00", "7.77", "19.99", "33.33", "250.00",
        ];
        for lines in 1..=totals.len() {
            for start in 0..totals.len() {
                let weights: Vec<Decimal> = (0..lines)
                    .map(|k| d(totals[(start + k * 3) % totals.len()]))
                    .collect();
                let sum: Decimal = weights.iter().sum();
                for amount in ["0.01", "0.05", "1.00", "9.99", "100.00"] {
                    let amount = d(amount).min(sum);
                    let shares = spread(amount, &weights, &weights).unwrap();
                    assert_eq!(shares.iter().sum::<Decimal>(), amount, "{weights:?}");
                    for (share, weight) in shares.iter().zip(&weights) {
                        assert!(*share >= Decimal::ZERO && share <= weight, "{shares:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_negative_remainder_larger_than_the_largest_share_moves_on() {
        // Ten lines of 0.01 share 0.05: each 0.005 rounds up to 0.01, so 0.10 is assigned
        // and 0.05 must come back; the largest (first) line cannot give more than its 0.01.
        let weights = vec![d("0.01"); 10];
        let shares = spread(d("0.05"), &weights, &weights).unwrap();
        assert_eq!(shares.iter().sum::<Decimal>(), d("0.05"));
        assert_eq!(shares.iter().filter(|s| s.is_zero()).count(), 5);
        assert!(shares.iter().all(|s| *s == d("0") || *s == d("0.01")));
    }

    #[test]
    fn a_threshold_never_takes_a_line_below_zero() {
        let promotions = Promotions::new()
            .rule(percentage(Some("A"), "100"))
            .rule(threshold("0", "50"));
        let got = adjustments(
            &promotions,
            vec![priced(1, "A", "40.00", None), priced(2, "B", "20.00", None)],
        );
        // A is already free; of the 50 off, only B's 20 remains to take.
        assert_eq!(got, [d("-40.00"), d("-20.00")]);
        let lines = vec![priced(1, "A", "40.00", None), priced(2, "B", "20.00", None)];
        for (adjustment, line) in got.iter().zip(&lines) {
            assert!(-*adjustment <= line.total_price.unwrap());
        }
    }

    #[test]
    fn unpriced_and_negative_lines_fail_one_message_each_and_charges_are_ignored() {
        let items = vec![
            product(1, Some("A"), "1"),
            priced(2, "B", "10.00", None),
            priced(3, "C", "-1.00", None),
            product(4, None, "1"),
            charge(5, "12.00"),
        ];
        let found = failures(
            Promotions::new()
                .rule(percentage(None, "10"))
                .apply_promotions(&request(cart(), items))
                .unwrap(),
        );
        let related: Vec<_> = found.iter().map(|m| m.related_entity_id).collect();
        assert_eq!(related, [Some(line(1)), Some(line(3)), Some(line(4))]);
        assert!(found.iter().all(|m| m.level == Level::Error));
        assert!(found[0].message.contains("not priced yet"));
        assert!(found[1].message.contains("negative total price"));

        let passed = patch(
            Promotions::new()
                .apply_promotions(&request(
                    cart(),
                    vec![priced(1, "A", "1.00", None), charge(2, "12.00")],
                ))
                .unwrap(),
        );
        assert_eq!(passed.items.len(), 1);
    }

    #[test]
    fn huge_amounts_fail_instead_of_panicking() {
        let items = vec![
            priced(1, "A", &Decimal::MAX.to_string(), None),
            priced(2, "B", &Decimal::MAX.to_string(), None),
        ];
        let found = failures(
            Promotions::new()
                .rule(threshold("0", "5"))
                .apply_promotions(&request(cart(), items))
                .unwrap(),
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].related_entity_id, Some(cart().id));
    }

    #[test]
    fn impossible_rules_are_a_provider_error() {
        for bad in [
            percentage(None, "0"),
            percentage(None, "100.01"),
            percentage(Some(" "), "5"),
            threshold("-1", "5"),
            threshold("10", "0"),
        ] {
            let err = Promotions::new()
                .rule(bad)
                .apply_promotions(&request(cart(), vec![priced(1, "A", "1.00", None)]))
                .unwrap_err();
            assert!(err.0.starts_with("Promotions configuration"), "{err}");
        }
    }

    #[test]
    fn rules_round_trip_through_json() {
        let json = serde_json::json!({"Rules": [
            {"Type": "Percentage", "Sku": "ROPE-60M", "Percent": "10"},
            {"Type": "Percentage", "Percent": "2.5"},
            {"Type": "Threshold", "MinSubtotal": "1000", "AmountOff": "50"}
        ]});
        let parsed: Promotions = serde_json::from_value(json).unwrap();
        assert_eq!(parsed.rules.len(), 3);
        assert_eq!(parsed.rules[1], percentage(None, "2.5"));
        let back: Promotions =
            serde_json::from_value(serde_json::to_value(&parsed).unwrap()).unwrap();
        assert_eq!(back, parsed);
        let unknown = serde_json::json!({"Rules": [{"Type": "Threshold", "MinSubtotal": "1", "AmountOff": "1", "Code": "X"}]});
        assert!(serde_json::from_value::<Promotions>(unknown).is_err());
    }
}
