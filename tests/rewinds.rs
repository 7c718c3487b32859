//! What a changed input drops: a new address drops what the steps consuming it computed
//! (the shipping options and the taxes; the prices and promotions too in a template whose
//! pricing consumes it); an edited line drops the prices and promotions. What no step
//! computed from the input stays.

use std::sync::Arc;

use cartflow::flow::{self, BuyerInput, Drive, Waiting};
use cartflow::machine::{
    Action, CartEdit, CheckoutDetails, Command, StepInput, StepKind, Template, TransitionTable,
};
use cartflow::model::{CartItem, CartItemType, SessionState, WebCart};
use cartflow::sample::{self, SampleCart};
use cartflow::{Engine, MemoryStore};
use rust_decimal::Decimal;

fn buyer() -> String {
    sample::buyer_id().to_string()
}

/// The in-stock cart's checkout, walked to the payment screen: priced, promoted, shipping
/// offered and chosen, taxed.
fn at_payment() -> Engine {
    at_payment_under(TransitionTable::standard())
}

fn cart_and_lines(engine: &Engine) -> (WebCart, Vec<CartItem>) {
    let id = SampleCart::InStock.id();
    let store = engine.store();
    (
        store.cart(&id).unwrap().unwrap(),
        store.cart_items(&id).unwrap(),
    )
}

/// Every product line lost its prices and its promotion.
fn assert_unpriced(lines: &[CartItem]) {
    for now in products(lines) {
        assert_eq!(
            (now.list_price, now.sales_price, now.total_price),
            (None, None, None),
            "{now:?}"
        );
        assert_eq!(now.adjustment_amount, None, "{now:?}");
    }
}

fn products(lines: &[CartItem]) -> impl Iterator<Item = &CartItem> {
    lines
        .iter()
        .filter(|l| l.item_type == CartItemType::Product)
}

#[test]
fn a_new_address_drops_the_shipping_options_and_the_taxes() {
    let engine = at_payment();
    let (cart, lines) = cart_and_lines(&engine);
    assert!(!cart.delivery_options.is_empty());
    assert!(products(&lines).all(|l| l.tax_amount.is_some()));
    let details = CheckoutDetails {
        deliver_to: Some(sample::new_york()),
        ..CheckoutDetails::default()
    };
    let command = Command::SetDetails {
        cart_id: cart.id.to_string(),
        details,
    };
    engine.execute(&buyer(), command).unwrap();
    let (after, after_lines) = cart_and_lines(&engine);
    assert!(
        after.delivery_options.is_empty(),
        "{:?}",
        after.delivery_options
    );
    assert!(
        after_lines
            .iter()
            .all(|l| l.tax_amount.is_none() && l.taxes.is_empty())
    );
    // The address moves no price: the lines keep theirs and their promotions.
    for (before, now) in products(&lines).zip(products(&after_lines)) {
        assert_eq!(before.total_price, now.total_price);
        assert_eq!(before.adjustment_amount, now.adjustment_amount);
    }
}

#[test]
fn an_edited_line_drops_the_prices_and_promotions() {
    let engine = at_payment();
    let (cart, lines) = cart_and_lines(&engine);
    assert!(products(&lines).all(|l| l.total_price.is_some()));
    assert!(products(&lines).any(|l| l.adjustment_amount.is_some_and(|a| a != Decimal::ZERO)));
    let line = products(&lines).next().unwrap();
    let command = Command::EditCart {
        cart_id: cart.id.to_string(),
        edit: CartEdit::SetQuantity {
            item_id: line.id.to_string(),
            quantity: line.quantity + Decimal::ONE,
        },
    };
    engine.execute(&buyer(), command).unwrap();
    assert_unpriced(&cart_and_lines(&engine).1);
}

/// The standard template, named `name`, with the steps running `actions` consuming `input`
/// too.
fn consuming_more(name: &str, actions: &[Action], input: StepInput) -> TransitionTable {
    let mut template = Template::standard();
    template.name = name.into();
    for step in &mut template.steps {
        if matches!(step.kind, StepKind::Async(action) if actions.contains(&action)) {
            step.consumes.insert(input);
        }
    }
    TransitionTable::build(template).expect("a valid template")
}

/// A template whose pricing and promotions depend on where the goods go (regional prices):
/// their steps consume the delivery address too.
fn regional_prices() -> TransitionTable {
    consuming_more(
        "regional prices",
        &[Action::PriceCart, Action::CalcCartPromotions],
        StepInput::DeliveryAddress,
    )
}

/// `table`'s checkout of the in-stock cart, walked to the payment screen (no token given).
fn at_payment_under(table: TransitionTable) -> Engine {
    let data = sample::dataset();
    let integrations = sample::integrations(&data);
    let engine = Engine::new(Arc::new(MemoryStore::from_dataset(data).unwrap()))
        .with_table(table)
        .with_integrations(integrations);
    let input = BuyerInput {
        payment_token: None,
        ..sample::buyer_input()
    };
    let cart = SampleCart::InStock.id();
    let drive = flow::drive(&engine, &buyer(), &cart, &input, Waiting::RunInline);
    assert!(
        matches!(
            drive,
            Ok(Drive::NeedsInput {
                state: SessionState::PaymentAndBillingAddress,
                ..
            })
        ),
        "{drive:?}"
    );
    engine
}

#[test]
fn a_new_address_drops_prices_and_promotions_that_consumed_it() {
    let engine = at_payment_under(regional_prices());
    let cart = SampleCart::InStock.id();
    let (_, lines) = cart_and_lines(&engine);
    assert!(products(&lines).all(|l| l.total_price.is_some()));
    assert!(products(&lines).any(|l| l.adjustment_amount.is_some_and(|a| a != Decimal::ZERO)));
    let details = CheckoutDetails {
        deliver_to: Some(sample::new_york()),
        ..CheckoutDetails::default()
    };
    let command = Command::SetDetails {
        cart_id: cart.to_string(),
        details,
    };
    engine.execute(&buyer(), command).unwrap();
    assert_unpriced(&cart_and_lines(&engine).1);
}

#[test]
fn a_removed_line_is_gone_and_the_others_lose_their_prices() {
    let engine = at_payment();
    let (cart, lines) = cart_and_lines(&engine);
    let gone = products(&lines).next().unwrap().id;
    let command = Command::EditCart {
        cart_id: cart.id.to_string(),
        edit: CartEdit::RemoveItem {
            item_id: gone.to_string(),
        },
    };
    engine.execute(&buyer(), command).unwrap();
    let (_, after_lines) = cart_and_lines(&engine);
    assert!(after_lines.iter().all(|l| l.id != gone), "{after_lines:?}");
    assert_eq!(products(&after_lines).count(), products(&lines).count() - 1);
    for now in products(&after_lines) {
        assert_eq!(
            (now.total_price, now.adjustment_amount),
            (None, None),
            "{now:?}"
        );
    }
}

/// A template whose prices depend on how the buyer pays (a discount for paying by invoice):
/// pricing consumes the payment, so a change of it goes back further than a new address.
#[test]
fn two_changed_inputs_go_back_to_the_earliest_step_consuming_either() {
    let table = consuming_more(
        "prices by payment",
        &[Action::PriceCart],
        StepInput::Payment,
    );
    let engine = at_payment_under(table);
    let cart = SampleCart::InStock.id();
    // The address alone goes back to the shipping step, the payment to pricing, earlier;
    // given together, the earlier wins whatever order the inputs are listed in.
    let details = CheckoutDetails {
        deliver_to: Some(sample::new_york()),
        payment_token: Some("tok_invoice".into()),
        ..CheckoutDetails::default()
    };
    let command = Command::SetDetails {
        cart_id: cart.to_string(),
        details,
    };
    engine.execute(&buyer(), command).unwrap();
    let sessions = engine.store().sessions_of(&cart).unwrap();
    let active: Vec<_> = sessions.iter().filter(|s| !s.is_archived).collect();
    assert_eq!(active.len(), 1, "{sessions:?}");
    assert_eq!(
        active[0].state,
        Some(SessionState::ConfirmPrice),
        "{active:?}"
    );
}
