//! The cart's charge line follows its chosen delivery method: one line at the method's fee,
//! products never touched, extra charge lines removed, a line already at the fee left as it
//! is (its tax kept).

use cartflow::machine::amounts::sync_charge_line;
use cartflow::model::{CartItem, CartItemType, DeliveryOption, KeyPrefix, SfId, WebCart};
use cartflow::sample::{self, SampleCart};
use rust_decimal::Decimal;

fn d(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn id(kind: KeyPrefix, n: u64) -> SfId {
    SfId::from_number(kind, n)
}

/// The sample in-stock cart offering ground at 9.99, with `chosen` chosen.
fn cart(chosen: Option<&str>) -> WebCart {
    let mut cart = sample::dataset()
        .carts
        .into_iter()
        .find(|c| c.id == SampleCart::InStock.id())
        .unwrap();
    cart.delivery_options = vec![DeliveryOption {
        id: None,
        delivery_method_id: "ground".into(),
        name: "Ground".into(),
        amount: d("9.99"),
    }];
    cart.delivery_method_id = chosen.map(str::to_owned);
    cart
}

fn product(cart: &WebCart, n: u64) -> CartItem {
    let mut line = CartItem::product(
        id(KeyPrefix::CartItem, n),
        cart.id,
        Some("TENT-4P".into()),
        d("2"),
    );
    line.total_price = Some(d("100.00"));
    line
}

fn charge(cart: &WebCart, n: u64, fee: &str) -> CartItem {
    let mut line = CartItem::product(id(KeyPrefix::CartItem, n), cart.id, None, Decimal::ONE);
    line.item_type = CartItemType::Charge;
    line.total_price = Some(d(fee));
    line.sales_price = Some(d(fee));
    line.list_price = Some(d(fee));
    line.tax_amount = Some(d("0.80"));
    line
}

fn never() -> SfId {
    panic!("no new line was needed")
}

#[test]
fn a_second_charge_line_is_removed_and_products_are_never_touched() {
    let cart = cart(Some("ground"));
    let mut lines = vec![
        product(&cart, 1),
        charge(&cart, 2, "9.99"),
        charge(&cart, 3, "9.99"),
        product(&cart, 4),
    ];
    let before = lines.clone();
    let removed = sync_charge_line(&cart, &mut lines, never);
    assert_eq!(removed, [id(KeyPrefix::CartItem, 3)]);
    assert_eq!(
        lines,
        [before[0].clone(), before[1].clone(), before[3].clone()]
    );
}

#[test]
fn a_charge_line_already_at_the_fee_keeps_its_tax() {
    let cart = cart(Some("ground"));
    let mut lines = vec![product(&cart, 1), charge(&cart, 2, "9.99")];
    let removed = sync_charge_line(&cart, &mut lines, never);
    assert!(removed.is_empty());
    assert_eq!(lines[1].tax_amount, Some(d("0.80")));
}

#[test]
fn a_charge_line_at_another_fee_is_repriced_and_its_tax_dropped() {
    let cart = cart(Some("ground"));
    let mut lines = vec![product(&cart, 1), charge(&cart, 2, "4.00")];
    let removed = sync_charge_line(&cart, &mut lines, never);
    assert!(removed.is_empty());
    assert_eq!(lines[1].total_price, Some(d("9.99")));
    assert_eq!(lines[1].tax_amount, None);
}

#[test]
fn without_a_chosen_method_only_the_charge_lines_are_removed() {
    let cart = cart(None);
    let mut lines = vec![
        product(&cart, 1),
        charge(&cart, 2, "9.99"),
        product(&cart, 3),
    ];
    let removed = sync_charge_line(&cart, &mut lines, never);
    assert_eq!(removed, [id(KeyPrefix::CartItem, 2)]);
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l.item_type == CartItemType::Product));
}

#[test]
fn a_chosen_method_without_a_charge_line_gets_one() {
    let cart = cart(Some("ground"));
    let mut lines = vec![product(&cart, 1)];
    let removed = sync_charge_line(&cart, &mut lines, || id(KeyPrefix::CartItem, 9));
    assert!(removed.is_empty());
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[1].id, lines[1].item_type),
        (id(KeyPrefix::CartItem, 9), CartItemType::Charge)
    );
    assert_eq!(lines[1].total_price, Some(d("9.99")));
}
