//! The built-in providers end to end: the sample store mapped to a price book, promotions,
//! shipping rates, a tax table and a token gateway (its stock table kept for Inventory), and
//! a checkout walked through every step from Inventory to Payment And Billing Address on the
//! in-memory store, with the cart's amounts checked against figures worked out by hand.

use std::str::FromStr;
use std::sync::Arc;

use cartflow::ids::SequentialIds;
use cartflow::integrations::{
    DeliveryMethod, Integrations, PriceBook, PromotionRule, Promotions, Provider, RateBand,
    RateBasis, ShippingRates, TaxTable, TokenGateway,
};
use cartflow::machine::{CheckoutDetails, Command, Output};
use cartflow::model::{
    Address, CartItem, CartValidationOutput, Level, OutputType, SessionState, SfId, WebCart,
};
use cartflow::sample::{self, SampleCart};
use cartflow::{Engine, MemoryStore};
use rust_decimal::Decimal;
use serde_json::json;

fn d(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

/// The providers the sample store is mapped to; each failure test changes one of them.
struct Providers {
    price: PriceBook,
    promotions: Promotions,
    shipping: ShippingRates,
    tax: TaxTable,
    payment: TokenGateway,
}

impl Providers {
    fn standard() -> Providers {
        let band = |from: &str, below: Option<&str>, price: &str| {
            RateBand::new(d(from), below.map(d), d(price))
        };
        Providers {
            price: PriceBook::new()
                .list("TENT-4P", d("249.99"))
                .list("ROPE-60M", d("89.90"))
                .negotiated(sample::account_id(), "TENT-4P", d("229.50")),
            promotions: Promotions::new()
                .rule(PromotionRule::Percentage {
                    sku: Some("ROPE-60M".into()),
                    percent: d("10"),
                })
                .rule(PromotionRule::Threshold {
                    min_subtotal: d("1000"),
                    amount_off: d("25"),
                }),
            shipping: ShippingRates::new(vec![
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
                    vec![band("0", Some("30"), "39.00")],
                ),
                DeliveryMethod::new(
                    "FREIGHT",
                    "Freight",
                    RateBasis::Amount,
                    vec![band("0", Some("2000"), "60.00"), band("2000", None, "0")],
                ),
            ])
            .weight("TENT-4P", d("4.2"))
            .weight("ROPE-60M", d("3.8")),
            tax: TaxTable::new()
                .rate("US", None, d("0.05"))
                .rate("US", Some("CO"), d("0.029")),
            payment: TokenGateway::new()
                .issue("tok_visa", sample::account_id())
                .decline("tok_declined")
                .limit(d("5000")),
        }
    }

    fn engine(self) -> Engine {
        let data = sample::dataset();
        let mut integrations = Integrations::with_stock_tables(&data.stock);
        let store = sample::store_id();
        integrations
            .set(store, Provider::Price(Arc::new(self.price)))
            .set(store, Provider::Promotions(Arc::new(self.promotions)))
            .set(store, Provider::Shipment(Arc::new(self.shipping)))
            .set(store, Provider::Tax(Arc::new(self.tax)))
            .set(store, Provider::Payment(Arc::new(self.payment)));
        Engine::new(Arc::new(MemoryStore::from_dataset(data).unwrap()))
            .with_ids(Arc::new(SequentialIds::default()))
            .with_integrations(integrations)
    }
}

fn denver() -> Address {
    Address {
        street: "1701 Wynkoop St".into(),
        city: "Denver".into(),
        state_code: Some("CO".into()),
        postal_code: "80202".into(),
        country_code: "US".into(),
    }
}

/// A checkout of the in-stock sample cart by the sample buyer.
struct Checkout {
    engine: Engine,
    session: String,
    buyer: String,
    cart: SfId,
}

impl Checkout {
    fn start(providers: Providers) -> Checkout {
        let engine = providers.engine();
        let buyer = sample::buyer_id().to_string();
        let cart = SampleCart::InStock.id();
        let result = engine.invoke(
            "checkoutSessionAction",
            &json!({"cartId": cart.to_string(), "initialState": "Start"}),
            &buyer,
        );
        assert!(result.is_success, "{result:?}");
        let session = result.output_values.unwrap()["requestId"]
            .as_str()
            .unwrap()
            .to_owned();
        let checkout = Checkout {
            engine,
            session,
            buyer,
            cart,
        };
        checkout.advance("Start", "Shipping Address");
        checkout
    }

    /// A screen step: the flow writes the next State onto the session.
    fn advance(&self, from: &str, to: &str) {
        self.engine
            .execute(
                &self.buyer,
                Command::Advance {
                    session_id: self.session.clone(),
                    state: to.into(),
                    exp_current_state: Some(from.into()),
                },
            )
            .unwrap();
        assert_eq!(self.state().as_str(), to);
    }

    /// A screen step's write of the buyer's input onto the cart.
    fn details(&self, details: CheckoutDetails) {
        self.engine
            .execute(
                &self.buyer,
                Command::SetDetails {
                    cart_id: self.cart.to_string(),
                    details,
                },
            )
            .unwrap();
    }

    /// An async step: lock the session for `to`, call `action`, let a worker run it.
    /// Returns the State the session ends in.
    fn step(&self, from: &str, to: &str, action: &str) -> SessionState {
        let update = self.engine.invoke(
            "updateCheckoutSessionStateAction",
            &json!({"checkoutSessionId": self.session, "nextState": to, "expCurrentState": from}),
            &self.buyer,
        );
        assert!(update.is_success, "{update:?}");
        let run = self.engine.invoke(
            action,
            &json!({"cartId": self.cart.to_string()}),
            &self.buyer,
        );
        assert!(run.is_success, "{run:?}");
        assert_eq!(self.engine.run_until_idle().unwrap(), 1);
        self.state()
    }

    fn state(&self) -> SessionState {
        let session = self
            .engine
            .store()
            .session(&self.session.parse().unwrap())
            .unwrap()
            .unwrap();
        session.state.unwrap()
    }

    fn cart(&self) -> WebCart {
        self.engine.store().cart(&self.cart).unwrap().unwrap()
    }

    /// The line of `sku` with `quantity` (the sample cart has two TENT-4P lines).
    fn line(&self, sku: &str, quantity: u32) -> CartItem {
        let items = self.engine.store().cart_items(&self.cart).unwrap();
        items
            .into_iter()
            .find(|i| i.sku.as_deref() == Some(sku) && i.quantity == Decimal::from(quantity))
            .unwrap()
    }

    fn outputs(&self) -> Vec<CartValidationOutput> {
        self.engine.store().validation_outputs(&self.cart).unwrap()
    }

    /// Inventory, Confirm Price and Calculate Promotions, each expected to pass.
    fn through_promotions(&self) {
        self.advance("Shipping Address", "Inventory");
        let steps = [
            ("Inventory", "Confirm Price", "checkCartInventoryAction"),
            ("Confirm Price", "Calculate Promotions", "priceCart"),
            (
                "Calculate Promotions",
                "Shipping Cost",
                "calcCartPromotionsAction",
            ),
        ];
        for (from, to, action) in steps {
            assert_eq!(
                self.step(from, to, action).as_str(),
                to,
                "{:?}",
                self.outputs()
            );
        }
    }

    /// Through Shipping Cost and the Delivery Method screen (choosing Ground), up to Taxes.
    fn through_delivery_method(&self) {
        self.through_promotions();
        let state = self.step("Shipping Cost", "Delivery Method", "calcCartShipmentAction");
        assert_eq!(state, SessionState::DeliveryMethod, "{:?}", self.outputs());
        self.details(CheckoutDetails {
            delivery_method_id: Some("GROUND".into()),
            ..CheckoutDetails::default()
        });
        self.advance("Delivery Method", "Taxes");
    }

    /// From Checkout Summary through Cart To Order, to a session at Authorize Payment.
    fn to_authorize_payment(&self) {
        self.advance("Checkout Summary", "Cart To Order");
        let state = self.step("Cart To Order", "Authorize Payment", "cartToOrderAction");
        assert_eq!(
            state,
            SessionState::AuthorizePayment,
            "{:?}",
            self.outputs()
        );
    }

    /// The Authorize Payment step: lock the session, submit the payment, let a worker run
    /// it. Returns the State the session ends in and the payment operation.
    fn authorize(&self) -> (SessionState, SfId) {
        let update = self.engine.invoke(
            "updateCheckoutSessionStateAction",
            &json!({"checkoutSessionId": self.session, "nextState": "Activate Order", "expCurrentState": "Authorize Payment"}),
            &self.buyer,
        );
        assert!(update.is_success, "{update:?}");
        let output = self
            .engine
            .execute(
                &self.buyer,
                Command::AuthorizePayment {
                    cart_id: self.cart.to_string(),
                },
            )
            .unwrap();
        let Output::BackgroundOperationId(operation) = output else {
            panic!("the payment step answered {output:?}");
        };
        assert_eq!(self.engine.run_until_idle().unwrap(), 1);
        (self.state(), operation)
    }

    /// Every step up to Authorize Payment, paying with `token`.
    fn through_payment_details(&self, token: &str) {
        self.details(CheckoutDetails {
            deliver_to: Some(denver()),
            ..CheckoutDetails::default()
        });
        self.through_delivery_method();
        let state = self.step(
            "Taxes",
            "Payment And Billing Address",
            "calcCartTaxesAction",
        );
        assert_eq!(state, SessionState::PaymentAndBillingAddress);
        self.details(CheckoutDetails {
            payment_token: Some(token.into()),
            ..CheckoutDetails::default()
        });
        self.advance("Payment And Billing Address", "Checkout Summary");
        self.to_authorize_payment();
    }

    /// Asserts the session failed, leaving exactly `expected` outputs (Type, related line or
    /// cart, a piece of the message).
    fn assert_failed(&self, expected: &[(OutputType, SfId, &str)]) {
        let session = self
            .engine
            .store()
            .session(&self.session.parse().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(session.state, Some(SessionState::Error));
        assert!(session.is_error && !session.is_processing);
        let outputs = self.outputs();
        assert_eq!(outputs.len(), expected.len(), "{outputs:?}");
        for (output_type, related, text) in expected {
            assert!(
                outputs.iter().any(|o| o.output_type == *output_type
                    && o.related_entity_id == Some(*related)
                    && o.level == Level::Error
                    && o.message.contains(text)),
                "no {output_type:?} output about {related} saying {text:?} in {outputs:?}"
            );
        }
    }
}

/// Asserts the cart's five amounts (`None` for an amount not computed yet).
fn assert_totals(cart: &WebCart, totals: [Option<&str>; 5]) {
    let actual = [
        cart.total_product_amount,
        cart.total_adjustment_amount,
        cart.total_charge_amount,
        cart.total_tax_amount,
        cart.grand_total_amount,
    ];
    assert_eq!(
        actual,
        totals.map(|t| t.map(d)),
        "products, adjustments, charges, taxes, grand"
    );
}

#[test]
fn a_checkout_walks_every_priced_step_and_the_amounts_add_up() {
    let checkout = Checkout::start(Providers::standard());
    checkout.details(CheckoutDetails {
        deliver_to: Some(denver()),
        ..CheckoutDetails::default()
    });
    checkout.advance("Shipping Address", "Inventory");

    let state = checkout.step("Inventory", "Confirm Price", "checkCartInventoryAction");
    assert_eq!(state, SessionState::ConfirmPrice);
    assert_totals(&checkout.cart(), [None; 5]);

    // Prices: the account's negotiated 229.50 for TENT-4P, the list 89.90 for ROPE-60M.
    // 2 × 229.50 = 459.00, 5 × 89.90 = 449.50, 1 × 229.50 = 229.50; products 1138.00.
    let state = checkout.step("Confirm Price", "Calculate Promotions", "priceCart");
    assert_eq!(state, SessionState::CalculatePromotions);
    let tent2 = checkout.line("TENT-4P", 2);
    assert_eq!(tent2.list_price, Some(d("249.99")));
    assert_eq!(tent2.sales_price, Some(d("229.50")));
    assert_eq!(tent2.total_price, Some(d("459.00")));
    let rope = checkout.line("ROPE-60M", 5);
    assert_eq!(rope.list_price, Some(d("89.90")));
    assert_eq!(rope.sales_price, Some(d("89.90")));
    assert_eq!(rope.total_price, Some(d("449.50")));
    assert_eq!(checkout.line("TENT-4P", 1).total_price, Some(d("229.50")));
    assert_totals(
        &checkout.cart(),
        [Some("1138.00"), None, None, None, Some("1138.00")],
    );

    // Promotions: 10 % off ROPE-60M = 44.95. 1138.00 reaches the 1000 threshold: 25 off,
    // spread by TotalPrice: 25 × 459/1138 = 10.0835 -> 10.08, 25 × 449.5/1138 = 9.8748 ->
    // 9.87, 25 × 229.5/1138 = 5.0417 -> 5.04; 24.99 assigned, the 0.01 left goes to the
    // largest line: 10.09. Adjustments −10.09, −(44.95 + 9.87) = −54.82, −5.04: −69.95.
    let state = checkout.step(
        "Calculate Promotions",
        "Shipping Cost",
        "calcCartPromotionsAction",
    );
    assert_eq!(state, SessionState::ShippingCost);
    assert_eq!(
        checkout.line("TENT-4P", 2).adjustment_amount,
        Some(d("-10.09"))
    );
    assert_eq!(
        checkout.line("ROPE-60M", 5).adjustment_amount,
        Some(d("-54.82"))
    );
    assert_eq!(
        checkout.line("TENT-4P", 1).adjustment_amount,
        Some(d("-5.04"))
    );
    assert_totals(
        &checkout.cart(),
        [Some("1138.00"), Some("-69.95"), None, None, Some("1068.05")],
    );

    // Shipping: 3 × 4.2 + 5 × 3.8 = 31.6 kg: Ground 19.90 (10–50 kg band), too heavy for
    // Express (below 30 kg); 1068.05 after promotions: Freight 60.00 (below 2000).
    let state = checkout.step("Shipping Cost", "Delivery Method", "calcCartShipmentAction");
    assert_eq!(state, SessionState::DeliveryMethod);
    let cart = checkout.cart();
    let offered: Vec<_> = cart
        .delivery_options
        .iter()
        .map(|o| (o.delivery_method_id.as_str(), o.amount))
        .collect();
    assert_eq!(offered, [("GROUND", d("19.90")), ("FREIGHT", d("60.00"))]);
    assert_totals(
        &cart,
        [Some("1138.00"), Some("-69.95"), None, None, Some("1068.05")],
    );

    // The buyer picks Ground: 1068.05 + 19.90 = 1087.95.
    checkout.details(CheckoutDetails {
        delivery_method_id: Some("GROUND".into()),
        ..CheckoutDetails::default()
    });
    checkout.advance("Delivery Method", "Taxes");
    assert_totals(
        &checkout.cart(),
        [
            Some("1138.00"),
            Some("-69.95"),
            Some("19.90"),
            None,
            Some("1087.95"),
        ],
    );

    // Taxes: Colorado's 0.029 wins over the US 0.05. (459.00 − 10.09) × 0.029 = 13.01839
    // -> 13.02; (449.50 − 54.82) × 0.029 = 11.44572 -> 11.45; (229.50 − 5.04) × 0.029 =
    // 6.50934 -> 6.51; taxes 30.98; grand 1138.00 − 69.95 + 19.90 + 30.98 = 1118.93.
    let state = checkout.step(
        "Taxes",
        "Payment And Billing Address",
        "calcCartTaxesAction",
    );
    assert_eq!(state, SessionState::PaymentAndBillingAddress);
    assert_eq!(checkout.line("TENT-4P", 2).tax_amount, Some(d("13.02")));
    assert_eq!(checkout.line("ROPE-60M", 5).tax_amount, Some(d("11.45")));
    assert_eq!(checkout.line("TENT-4P", 1).tax_amount, Some(d("6.51")));
    assert_totals(
        &checkout.cart(),
        [
            Some("1138.00"),
            Some("-69.95"),
            Some("19.90"),
            Some("30.98"),
            Some("1118.93"),
        ],
    );

    checkout.details(CheckoutDetails {
        payment_token: Some("tok_visa".into()),
        ..CheckoutDetails::default()
    });
    checkout.advance("Payment And Billing Address", "Checkout Summary");
    assert_eq!(checkout.cart().payment_token.as_deref(), Some("tok_visa"));
    assert!(checkout.outputs().is_empty());

    // Cart To Order, then Authorize Payment: the gateway authorises the 1118.93 the walk
    // arrived at and writes its reference.
    checkout.to_authorize_payment();
    let (state, operation) = checkout.authorize();
    assert_eq!(
        state,
        SessionState::ActivateOrder,
        "{:?}",
        checkout.outputs()
    );
    let cart = checkout.cart();
    assert_eq!(
        cart.payment_authorization_id,
        Some(format!("AUTH-{operation}"))
    );
    assert_totals(
        &cart,
        [
            Some("1138.00"),
            Some("-69.95"),
            Some("19.90"),
            Some("30.98"),
            Some("1118.93"),
        ],
    );
}

#[test]
fn an_unpriced_sku_fails_the_price_step_once_per_line() {
    let mut providers = Providers::standard();
    providers.price = PriceBook::new().list("ROPE-60M", d("89.90"));
    let checkout = Checkout::start(providers);
    checkout.advance("Shipping Address", "Inventory");
    checkout.step("Inventory", "Confirm Price", "checkCartInventoryAction");
    let state = checkout.step("Confirm Price", "Calculate Promotions", "priceCart");
    assert_eq!(state, SessionState::Error);
    checkout.assert_failed(&[
        (
            OutputType::Pricing,
            checkout.line("TENT-4P", 2).id,
            "SKU TENT-4P has no price",
        ),
        (
            OutputType::Pricing,
            checkout.line("TENT-4P", 1).id,
            "SKU TENT-4P has no price",
        ),
    ]);
    // A failed step writes no amounts.
    assert_eq!(checkout.line("ROPE-60M", 5).total_price, None);
    assert_eq!(checkout.cart().grand_total_amount, None);
}

#[test]
fn no_method_that_can_ship_fails_the_shipping_step() {
    let mut providers = Providers::standard();
    providers.shipping.methods.retain(|m| m.id == "EXPRESS");
    let checkout = Checkout::start(providers);
    checkout.through_promotions();
    let state = checkout.step("Shipping Cost", "Delivery Method", "calcCartShipmentAction");
    assert_eq!(state, SessionState::Error);
    checkout.assert_failed(&[(
        OutputType::Shipping,
        checkout.cart,
        "Express cannot ship this order: its weight of 31.6",
    )]);
    assert!(checkout.cart().delivery_options.is_empty());
}

#[test]
fn a_sku_without_weight_fails_the_shipping_step_when_only_weight_methods_exist() {
    let mut providers = Providers::standard();
    providers
        .shipping
        .methods
        .retain(|m| m.basis == RateBasis::Weight);
    providers.shipping.unit_weights.remove("ROPE-60M");
    let checkout = Checkout::start(providers);
    checkout.through_promotions();
    let state = checkout.step("Shipping Cost", "Delivery Method", "calcCartShipmentAction");
    assert_eq!(state, SessionState::Error);
    checkout.assert_failed(&[(
        OutputType::Shipping,
        checkout.line("ROPE-60M", 5).id,
        "SKU ROPE-60M has no shipping weight",
    )]);
}

#[test]
fn a_destination_without_a_tax_rate_fails_the_tax_step() {
    let checkout = Checkout::start(Providers::standard());
    checkout.details(CheckoutDetails {
        deliver_to: Some(Address {
            state_code: Some("ON".into()),
            country_code: "CA".into(),
            ..denver()
        }),
        ..CheckoutDetails::default()
    });
    checkout.through_delivery_method();
    let state = checkout.step(
        "Taxes",
        "Payment And Billing Address",
        "calcCartTaxesAction",
    );
    assert_eq!(state, SessionState::Error);
    checkout.assert_failed(&[(
        OutputType::Taxes,
        checkout.cart,
        "There is no tax rate for deliveries to CA-ON.",
    )]);
    assert_eq!(checkout.cart().total_tax_amount, None);
}

#[test]
fn a_missing_address_fails_the_tax_step() {
    let checkout = Checkout::start(Providers::standard());
    checkout.through_delivery_method();
    let state = checkout.step(
        "Taxes",
        "Payment And Billing Address",
        "calcCartTaxesAction",
    );
    assert_eq!(state, SessionState::Error);
    checkout.assert_failed(&[(
        OutputType::Taxes,
        checkout.cart,
        "The cart has no delivery address",
    )]);
}

#[test]
fn a_declined_token_fails_the_payment_step() {
    let checkout = Checkout::start(Providers::standard());
    checkout.through_payment_details("tok_declined");
    let (state, _) = checkout.authorize();
    assert_eq!(state, SessionState::Error);
    checkout.assert_failed(&[(
        OutputType::Other,
        checkout.cart,
        "The payment method was declined",
    )]);
    assert_eq!(checkout.cart().payment_authorization_id, None);
}

#[test]
fn a_total_above_the_gateway_limit_fails_the_payment_step() {
    let mut providers = Providers::standard();
    providers.payment = TokenGateway::new()
        .issue("tok_visa", sample::account_id())
        .limit(d("1000"));
    let checkout = Checkout::start(providers);
    checkout.through_payment_details("tok_visa");
    let (state, _) = checkout.authorize();
    assert_eq!(state, SessionState::Error);
    checkout.assert_failed(&[(
        OutputType::Other,
        checkout.cart,
        "The order total 1118.93 is above the payment limit of 1000",
    )]);
}

#[test]
fn the_documented_configurations_parse() {
    let doc = include_str!("../docs/providers.md");
    let blocks: Vec<&str> = doc
        .split("```json")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect();
    // Six built-in configurations, then the HTTP providers' configuration, request and answers.
    assert_eq!(blocks.len(), 9);
    let book: PriceBook = serde_json::from_str(blocks[0]).unwrap();
    book.validate().unwrap();
    // The example's account is the sample buyers' account.
    assert_eq!(book.negotiated_prices[0].account_id, sample::account_id());
    let promotions: Promotions = serde_json::from_str(blocks[1]).unwrap();
    promotions.validate().unwrap();
    assert_eq!(promotions.rules.len(), 4);
    let shipping: ShippingRates = serde_json::from_str(blocks[2]).unwrap();
    shipping.validate().unwrap();
    assert_eq!(shipping.methods[1].bands[0].from, Decimal::ZERO);
    let tax: TaxTable = serde_json::from_str(blocks[3]).unwrap();
    tax.validate().unwrap();
    let gateway: TokenGateway = serde_json::from_str(blocks[4]).unwrap();
    assert_eq!(gateway.limit, Some(d("5000.00")));
    let credit: cartflow::integrations::CreditLimit = serde_json::from_str(blocks[5]).unwrap();
    credit.validate().unwrap();
    assert_eq!(credit.limit_for(&sample::account_id()), d("20000.00"));
    let http: cartflow::integrations::ProviderConfig = serde_json::from_str(blocks[6]).unwrap();
    let store = &http[&sample::store_id()];
    assert_eq!(store.http.len(), 2);
    assert!(store.http.values().all(|c| c.validate().is_ok()));
    assert!(store.custom["credit-check"].validate().is_ok());
    // Plain JSON numbers are read too.
    let numeric: TokenGateway = serde_json::from_str(r#"{"Limit": 1000.5}"#).unwrap();
    assert_eq!(numeric.limit, Some(d("1000.5")));
}
