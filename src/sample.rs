//! A small, fixed world of records for the demo, examples, tests and benchmarks: one store,
//! its buyer accounts and users with every combination of permission and access that the
//! requirements distinguish, and carts ready to check out.
//!
//! Hidden from the documentation: it serves cartflow's own tests, examples and demo, and
//! changes whenever they need it to, so it is not part of the API a release keeps stable.

use rust_decimal::Decimal;

use crate::integrations::{
    CreditLimit, CustomConfig, DeliveryMethod, Integrations, PriceBook, PromotionRule, Promotions,
    ProviderConfig, RateBand, RateBasis, ShippingRates, StoreProviders, TaxTable, TokenGateway,
};

use crate::model::{
    Access, Account, Address, CartItem, CartShare, CartStatus, KeyPrefix, Permission, SessionState,
    SfId, User, WebCart, WebStore,
};
use crate::store::{DataSet, StockLevel};

/// The record number every sample ID is built from, so sample IDs are stable.
fn id(kind: KeyPrefix, n: u64) -> SfId {
    SfId::from_number(kind, 1_000 + n)
}

/// The sample store.
pub fn store_id() -> SfId {
    id(KeyPrefix::WebStore, 1)
}
/// A store the buyers' account is not a member of.
pub fn other_store_id() -> SfId {
    id(KeyPrefix::WebStore, 2)
}
/// The buyers' account (active, a member of the sample store).
pub fn account_id() -> SfId {
    id(KeyPrefix::Account, 1)
}
/// An inactive account.
pub fn inactive_account_id() -> SfId {
    id(KeyPrefix::Account, 2)
}
/// An account ID with no record.
pub fn missing_account_id() -> SfId {
    id(KeyPrefix::Account, 3)
}
/// The buyer: owns the sample carts, holds the B2B buyer permission.
pub fn buyer_id() -> SfId {
    id(KeyPrefix::User, 1)
}
/// A colleague with an Edit share on the sample carts.
pub fn colleague_id() -> SfId {
    id(KeyPrefix::User, 2)
}
/// A colleague with only a Read share.
pub fn reader_id() -> SfId {
    id(KeyPrefix::User, 3)
}
/// A user of the same account without any checkout permission.
pub fn no_permission_id() -> SfId {
    id(KeyPrefix::User, 4)
}
/// A buyer of the same account with no share of the sample carts.
pub fn stranger_id() -> SfId {
    id(KeyPrefix::User, 5)
}
/// An integration user (B2BCommerceIntegrator, Modify All Data, no account).
pub fn integrator_id() -> SfId {
    id(KeyPrefix::User, 6)
}

/// The sample carts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleCart {
    /// Two lines of one SKU and one of another, all in stock.
    InStock,
    /// Wants more of a SKU than the stock table holds.
    ShortStock,
    /// Closed: nothing may change it.
    Closed,
    /// Its effective account is inactive.
    InactiveAccount,
    /// Its store does not list the buyers' account.
    ForeignStore,
    /// A second in-stock cart of the buyer's, like `InStock`.
    Reorder,
}

impl SampleCart {
    /// Every sample cart.
    pub const ALL: [SampleCart; 6] = [
        SampleCart::InStock,
        SampleCart::ShortStock,
        SampleCart::Closed,
        SampleCart::InactiveAccount,
        SampleCart::ForeignStore,
        SampleCart::Reorder,
    ];

    /// The cart's ID.
    pub fn id(self) -> SfId {
        id(KeyPrefix::WebCart, 1 + self as u64)
    }
}

fn user(n: SfId, name: &str, account: Option<SfId>, permissions: &[Permission]) -> User {
    User {
        id: n,
        name: name.to_owned(),
        account_id: account,
        permissions: permissions.iter().copied().collect(),
    }
}

fn item(n: u64, cart: SfId, sku: &str, quantity: u32) -> CartItem {
    CartItem::product(
        id(KeyPrefix::CartItem, n),
        cart,
        Some(sku.to_owned()),
        Decimal::from(quantity),
    )
}

/// A cart of `lines` product lines for the sample buyer in the sample store, each wanting
/// one unit of SKU `SKU-{n % skus}`, with stock for all of them: for benchmarks and load.
pub fn bulk_cart(cart_number: u64, lines: u64, skus: u64) -> (WebCart, Vec<CartItem>) {
    let cart = WebCart::new(
        id(KeyPrefix::WebCart, 100_000 + cart_number),
        store_id(),
        account_id(),
        buyer_id(),
        CartStatus::Active,
    );
    let items = (0..lines)
        .map(|n| {
            item(
                1_000_000 + cart_number * 10_000 + n,
                cart.id,
                &format!("SKU-{}", n % skus.max(1)),
                1,
            )
        })
        .collect();
    (cart, items)
}

/// Stock for [`bulk_cart`]: `units` of each of `skus` SKUs.
pub fn bulk_stock(skus: u64, units: u32) -> Vec<StockLevel> {
    (0..skus.max(1))
        .map(|n| StockLevel {
            store_id: store_id(),
            sku: format!("SKU-{n}"),
            quantity: Decimal::from(units),
        })
        .collect()
}

/// The sample world.
pub fn dataset() -> DataSet {
    let members = [account_id(), inactive_account_id()].into_iter().collect();
    let stores = vec![
        WebStore {
            id: store_id(),
            name: "Alpine Supply B2B".into(),
            checkout_time_to_live: Some(2880),
            buyer_accounts: members,
        },
        WebStore {
            id: other_store_id(),
            name: "Harbour Wholesale".into(),
            checkout_time_to_live: Some(2880),
            buyer_accounts: Default::default(),
        },
    ];
    let accounts = vec![
        Account {
            id: account_id(),
            name: "Summit Outfitters".into(),
            is_active: true,
        },
        Account {
            id: inactive_account_id(),
            name: "Dormant Traders".into(),
            is_active: false,
        },
    ];
    let buyer_perm = [Permission::B2BBuyer];
    let users = vec![
        user(buyer_id(), "Bea Buyer", Some(account_id()), &buyer_perm),
        user(
            colleague_id(),
            "Cole Colleague",
            Some(account_id()),
            &buyer_perm,
        ),
        user(reader_id(), "Rae Reader", Some(account_id()), &buyer_perm),
        user(no_permission_id(), "Nate NoPerm", Some(account_id()), &[]),
        user(
            stranger_id(),
            "Stan Stranger",
            Some(account_id()),
            &buyer_perm,
        ),
        user(
            integrator_id(),
            "Ivy Integrator",
            None,
            &[Permission::B2BCommerceIntegrator, Permission::ModifyAllData],
        ),
    ];
    let shares = vec![
        CartShare {
            user_id: colleague_id(),
            access: Access::Edit,
        },
        CartShare {
            user_id: reader_id(),
            access: Access::Read,
        },
    ];
    let cart = |which: SampleCart, store: SfId, account: SfId, status: CartStatus| WebCart {
        shares: shares.clone(),
        ..WebCart::new(which.id(), store, account, buyer_id(), status)
    };
    let carts = vec![
        cart(
            SampleCart::InStock,
            store_id(),
            account_id(),
            CartStatus::Active,
        ),
        cart(
            SampleCart::ShortStock,
            store_id(),
            account_id(),
            CartStatus::Active,
        ),
        cart(
            SampleCart::Closed,
            store_id(),
            account_id(),
            CartStatus::Closed,
        ),
        cart(
            SampleCart::InactiveAccount,
            store_id(),
            inactive_account_id(),
            CartStatus::Active,
        ),
        cart(
            SampleCart::ForeignStore,
            other_store_id(),
            account_id(),
            CartStatus::Active,
        ),
        cart(
            SampleCart::Reorder,
            store_id(),
            account_id(),
            CartStatus::Active,
        ),
    ];
    let mut items = Vec::new();
    let mut n = 0;
    for which in SampleCart::ALL {
        let lines: &[(&str, u32)] = match which {
            SampleCart::ShortStock => &[("TENT-4P", 3), ("STOVE-X", 2), ("TENT-4P", 2)],
            _ => &[("TENT-4P", 2), ("ROPE-60M", 5), ("TENT-4P", 1)],
        };
        for (sku, quantity) in lines {
            n += 1;
            items.push(item(n, which.id(), sku, *quantity));
        }
    }
    let stock = [("TENT-4P", 4), ("ROPE-60M", 40), ("STOVE-X", 1)]
        .into_iter()
        .map(|(sku, units)| StockLevel {
            store_id: store_id(),
            sku: sku.into(),
            quantity: Decimal::from(units),
        })
        .collect();
    DataSet {
        stores,
        accounts,
        users,
        carts,
        items,
        stock,
        ..DataSet::default()
    }
}

/// A payment token the sample gateway declines.
pub const DECLINED_TOKEN: &str = "tok_declined";

/// A payment token the sample gateway authorises on the buyers' account's carts (it was
/// issued to that account).
pub const GOOD_TOKEN: &str = "tok_visa_4242";

/// A shipping address the sample tax table has a rate for (Colorado, 2.9 %).
pub fn denver() -> Address {
    Address {
        street: "1701 Wynkoop St".into(),
        city: "Denver".into(),
        state_code: Some("CO".into()),
        postal_code: "80202".into(),
        country_code: "US".into(),
    }
}

/// A shipping address the sample tax table taxes at the United States' rate (5 %).
pub fn new_york() -> Address {
    Address {
        street: "350 5th Ave".into(),
        city: "New York".into(),
        state_code: Some("NY".into()),
        postal_code: "10118".into(),
        country_code: "US".into(),
    }
}

fn money(units: i64, cents: u32) -> Decimal {
    Decimal::new(units * 100 + i64::from(cents), 2)
}

/// The sample store's built-in providers: a price book (with a negotiated price for the
/// buyers' account), promotions (10 % off rope, 25 off orders of 1,000 or more), weight- and
/// amount-based shipping rates, a tax table and a token gateway that issued [`GOOD_TOKEN`] to
/// the buyers' account and declines [`DECLINED_TOKEN`] and amounts over 5,000. `examples/data/integrations.json` is this, as
/// JSON.
pub fn provider_config() -> ProviderConfig {
    let band = |from: i64, below: Option<i64>, price: Decimal| {
        RateBand::new(Decimal::from(from), below.map(Decimal::from), price)
    };
    let price = PriceBook::new()
        .list("TENT-4P", money(249, 99))
        .list("ROPE-60M", money(89, 90))
        .list("STOVE-X", money(129, 0))
        .negotiated(account_id(), "TENT-4P", money(229, 50));
    let promotions = Promotions::new()
        .rule(PromotionRule::Percentage {
            sku: Some("ROPE-60M".into()),
            percent: Decimal::from(10),
        })
        .rule(PromotionRule::Threshold {
            min_subtotal: Decimal::from(1000),
            amount_off: Decimal::from(25),
        });
    let shipping = ShippingRates::new(vec![
        DeliveryMethod::new(
            "GROUND",
            "Ground",
            RateBasis::Weight,
            vec![
                band(0, Some(10), money(9, 90)),
                band(10, Some(50), money(19, 90)),
            ],
        ),
        DeliveryMethod::new(
            "FREIGHT",
            "Freight",
            RateBasis::Amount,
            vec![
                band(0, Some(2000), money(60, 0)),
                band(2000, None, Decimal::ZERO),
            ],
        ),
    ])
    .weight("TENT-4P", Decimal::new(42, 1))
    .weight("ROPE-60M", Decimal::new(38, 1))
    .weight("STOVE-X", Decimal::new(12, 1));
    let tax = TaxTable::new().rate("US", None, Decimal::new(5, 2)).rate(
        "US",
        Some("CO"),
        Decimal::new(29, 3),
    );
    let payment = TokenGateway::new()
        .issue(GOOD_TOKEN, account_id())
        .decline(DECLINED_TOKEN)
        .limit(Decimal::from(5000));
    [
        (
            store_id(),
            StoreProviders {
                price: Some(price),
                promotions: Some(promotions),
                shipment: Some(shipping),
                tax: Some(tax),
                payment: Some(payment),
                custom: credit_limit(),
                http: Default::default(),
            },
        ),
        (
            other_store_id(),
            StoreProviders {
                custom: credit_limit(),
                ..StoreProviders::default()
            },
        ),
    ]
    .into_iter()
    .collect()
}

/// The `credit-limit` provider the credit-check example template names: 5,000.00 for every
/// account, so the sample carts pass it.
fn credit_limit() -> std::collections::BTreeMap<String, CustomConfig> {
    let limit = CustomConfig::CreditLimit(CreditLimit::new(Decimal::from(5000)));
    [("credit-limit".to_owned(), limit)].into_iter().collect()
}

/// What the sample buyer enters on every screen: the Denver address, the cheapest offered
/// delivery method, [`GOOD_TOKEN`], and the order placed. A whole checkout of an in-stock
/// cart completes with it.
pub fn buyer_input() -> crate::flow::BuyerInput {
    crate::flow::BuyerInput {
        deliver_to: Some(denver()),
        delivery_method_id: None,
        payment_token: Some(GOOD_TOKEN.into()),
        place_order: true,
    }
}

/// The sample store's integrations: the stock table of `data` and [`provider_config`].
pub fn integrations(data: &DataSet) -> Integrations {
    let mut integrations = Integrations::with_stock_tables(&data.stock);
    integrations
        .configure(&provider_config())
        .expect("the sample configuration is valid");
    integrations
}

/// Starts checkout of `cart` as `actor` and walks it to a locked Inventory step, as the
/// standard template does: `checkoutSessionAction`, the two screen steps, then
/// `updateCheckoutSessionStateAction`. Returns the session. For examples, tests and
/// benchmarks that start at the inventory check.
pub fn lock_inventory_step(
    engine: &crate::Engine,
    actor: &str,
    cart: SfId,
) -> Result<SfId, crate::CheckoutError> {
    use crate::machine::{Command, Output};
    let started = engine.execute(
        actor,
        Command::StartSession {
            cart_id: cart.to_string(),
            initial_state: None,
        },
    )?;
    let Output::RequestId(session) = started else {
        return Err(crate::CheckoutError::Stale(crate::Stale::Vanished(
            crate::RecordKind::Session,
        )));
    };
    for (from, to) in [
        (SessionState::Start, SessionState::ShippingAddress),
        (SessionState::ShippingAddress, SessionState::Inventory),
    ] {
        engine.execute(
            actor,
            Command::Advance {
                session_id: session.to_string(),
                state: to.as_str().into(),
                exp_current_state: Some(from.as_str().into()),
            },
        )?;
    }
    engine.execute(
        actor,
        Command::UpdateSession {
            session_id: session.to_string(),
            next_state: SessionState::ConfirmPrice.as_str().into(),
            exp_current_state: Some(SessionState::Inventory.as_str().into()),
        },
    )?;
    Ok(session)
}

/// Adds `count` copies of the in-stock cart, with its three lines, to `data` under cart
/// numbers `first..first + count` (line `j` of cart `n` is record number `n * 8 + j`).
/// Returns the new carts. For benchmarks and load tests.
pub fn add_in_stock_copies(data: &mut DataSet, first: u64, count: u64) -> Vec<SfId> {
    let Some(template) = data
        .carts
        .iter()
        .find(|c| c.id == SampleCart::InStock.id())
        .cloned()
    else {
        return Vec::new();
    };
    let lines: Vec<CartItem> = data
        .items
        .iter()
        .filter(|i| i.cart_id == template.id)
        .cloned()
        .collect();
    let mut carts = Vec::new();
    for number in first..first.saturating_add(count) {
        let id = SfId::from_number(KeyPrefix::WebCart, number);
        data.carts.push(WebCart {
            id,
            ..template.clone()
        });
        for (j, line) in (0_u64..).zip(&lines) {
            data.items.push(CartItem {
                id: SfId::from_number(KeyPrefix::CartItem, number.wrapping_mul(8).wrapping_add(j)),
                cart_id: id,
                ..line.clone()
            });
        }
        carts.push(id);
    }
    carts
}
