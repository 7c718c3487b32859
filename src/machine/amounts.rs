//! A cart's amounts, derived in one place from its lines, so that every total always adds up
//! to what the lines say, and the delivery charge line, which follows the buyer's chosen
//! delivery method.

use rust_decimal::Decimal;

use crate::model::{CartItem, CartItemType, SfId, WebCart};

/// The cart's amounts would overflow what a decimal holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cart's amounts exceed what cartflow can total")]
pub struct AmountOverflow;

/// Sums `field` over `lines` (`None` when no line has it).
fn sum(
    lines: &[CartItem],
    field: impl Fn(&CartItem) -> Option<Decimal>,
) -> Result<Option<Decimal>, AmountOverflow> {
    lines
        .iter()
        .filter_map(field)
        .try_fold(None, |total: Option<Decimal>, amount| {
            total.unwrap_or_default().checked_add(amount).map(Some)
        })
        .ok_or(AmountOverflow)
}

/// The total price of the lines of one type.
fn total_of(lines: &[CartItem], kind: CartItemType) -> Result<Option<Decimal>, AmountOverflow> {
    sum(lines, |l| l.total_price.filter(|_| l.item_type == kind))
}

/// Writes the cart's totals from its lines: products = Σ TotalPrice of the product lines,
/// charges = Σ TotalPrice of the charge lines, adjustments = Σ AdjustmentAmount, taxes =
/// Σ TaxAmount, and the grand total = products + adjustments + charges + taxes (none before
/// the products are priced).
pub fn total_cart(cart: &mut WebCart, lines: &[CartItem]) -> Result<(), AmountOverflow> {
    let products = total_of(lines, CartItemType::Product)?;
    let charges = total_of(lines, CartItemType::Charge)?;
    let adjustments = sum(lines, |l| l.adjustment_amount)?;
    let taxes = sum(lines, |l| l.tax_amount)?;
    let grand = match products {
        None => None,
        Some(products) => Some(
            [adjustments, charges, taxes]
                .into_iter()
                .try_fold(products, |total, part| {
                    total.checked_add(part.unwrap_or_default())
                })
                .ok_or(AmountOverflow)?,
        ),
    };
    cart.total_product_amount = products;
    cart.total_charge_amount = charges;
    cart.total_adjustment_amount = adjustments;
    cart.total_tax_amount = taxes;
    cart.grand_total_amount = grand;
    Ok(())
}

/// The fee of the cart's chosen delivery method, when it is among the options offered.
pub fn delivery_fee(cart: &WebCart) -> Option<Decimal> {
    let chosen = cart.delivery_method_id.as_ref()?;
    cart.delivery_options
        .iter()
        .find(|option| &option.delivery_method_id == chosen)
        .map(|option| option.amount)
}

/// Makes the cart's charge line match its chosen delivery method: one `Charge` line of
/// quantity 1 priced at the method's fee (its tax dropped when the fee changes), or none
/// when no offered method is chosen. A new line takes its Id from `new_id`. Returns the Ids
/// of the charge lines removed.
pub fn sync_charge_line(
    cart: &WebCart,
    lines: &mut Vec<CartItem>,
    new_id: impl FnOnce() -> SfId,
) -> Vec<SfId> {
    let fee = delivery_fee(cart);
    let mut removed = Vec::new();
    let mut kept = false;
    lines.retain(|line| {
        let keep = line.item_type == CartItemType::Charge && fee.is_some() && !kept;
        if line.item_type == CartItemType::Charge && !keep {
            removed.push(line.id);
        }
        kept |= keep;
        line.item_type != CartItemType::Charge || keep
    });
    let Some(fee) = fee else {
        return removed;
    };
    match lines
        .iter_mut()
        .find(|l| l.item_type == CartItemType::Charge)
    {
        Some(line) if line.total_price == Some(fee) => {}
        Some(line) => price_charge(line, fee),
        None => {
            let mut line = CartItem::product(new_id(), cart.id, None, Decimal::ONE);
            line.item_type = CartItemType::Charge;
            price_charge(&mut line, fee);
            lines.push(line);
        }
    }
    removed
}

/// Prices a charge line at `fee`, dropping a tax computed on another amount.
fn price_charge(line: &mut CartItem, fee: Decimal) {
    line.quantity = Decimal::ONE;
    line.list_price = Some(fee);
    line.sales_price = Some(fee);
    line.total_price = Some(fee);
    line.adjustment_amount = None;
    line.clear_tax();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CartStatus, DeliveryOption, KeyPrefix};

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn cart() -> WebCart {
        let id = |kind, n| SfId::from_number(kind, n);
        let mut cart = WebCart::new(
            id(KeyPrefix::WebCart, 1),
            id(KeyPrefix::WebStore, 1),
            id(KeyPrefix::Account, 1),
            id(KeyPrefix::User, 1),
            CartStatus::Checkout,
        );
        cart.delivery_options = vec![
            DeliveryOption {
                id: None,
                delivery_method_id: "GROUND".into(),
                name: "Ground".into(),
                amount: d("19.90"),
            },
            DeliveryOption {
                id: None,
                delivery_method_id: "FREIGHT".into(),
                name: "Freight".into(),
                amount: d("60.00"),
            },
        ];
        cart
    }

    fn product(n: u64, total: &str, tax: &str) -> CartItem {
        let mut line = CartItem::product(
            SfId::from_number(KeyPrefix::CartItem, n),
            SfId::from_number(KeyPrefix::WebCart, 1),
            Some("SKU".into()),
            Decimal::ONE,
        );
        line.total_price = Some(d(total));
        line.tax_amount = Some(d(tax));
        line
    }

    fn new_line_id() -> SfId {
        SfId::from_number(KeyPrefix::CartItem, 99)
    }

    #[test]
    fn the_charge_line_follows_the_chosen_method_and_the_totals_follow_the_lines() {
        let mut cart = cart();
        let mut lines = vec![product(1, "100.00", "5.00")];
        cart.delivery_method_id = Some("GROUND".into());
        assert!(sync_charge_line(&cart, &mut lines, new_line_id).is_empty());
        total_cart(&mut cart, &lines).unwrap();
        assert_eq!(cart.total_charge_amount, Some(d("19.90")));
        assert_eq!(cart.grand_total_amount, Some(d("124.90")));

        // Another method reprices the same line; no method (or one not offered) removes it.
        cart.delivery_method_id = Some("FREIGHT".into());
        assert!(sync_charge_line(&cart, &mut lines, || unreachable!()).is_empty());
        assert_eq!(lines.len(), 2);
        total_cart(&mut cart, &lines).unwrap();
        assert_eq!(cart.grand_total_amount, Some(d("165.00")));
        cart.delivery_method_id = Some("DRONE".into());
        assert_eq!(
            sync_charge_line(&cart, &mut lines, || unreachable!()),
            vec![new_line_id()]
        );
        total_cart(&mut cart, &lines).unwrap();
        assert_eq!(cart.total_charge_amount, None);
        assert_eq!(cart.grand_total_amount, Some(d("105.00")));
    }

    #[test]
    fn a_repriced_charge_line_loses_the_tax_of_its_old_fee() {
        let mut cart = cart();
        cart.delivery_method_id = Some("GROUND".into());
        let mut lines = vec![product(1, "10", "0")];
        sync_charge_line(&cart, &mut lines, new_line_id);
        lines[1].tax_amount = Some(d("1.00"));
        cart.delivery_method_id = Some("FREIGHT".into());
        sync_charge_line(&cart, &mut lines, || unreachable!());
        assert_eq!(lines[1].tax_amount, None);
        assert_eq!(lines[1].total_price, Some(d("60.00")));
    }

    #[test]
    fn overflowing_lines_are_an_error_and_unpriced_products_have_no_grand_total() {
        let mut cart = cart();
        let huge = [product(1, "1", "0"), product(2, "1", "0")].map(|mut l| {
            l.total_price = Some(Decimal::MAX);
            l
        });
        assert_eq!(total_cart(&mut cart, &huge), Err(AmountOverflow));
        let mut unpriced = product(1, "1", "0");
        unpriced.total_price = None;
        unpriced.tax_amount = None;
        total_cart(&mut cart, &[unpriced]).unwrap();
        assert_eq!(cart.grand_total_amount, None);
    }
}
