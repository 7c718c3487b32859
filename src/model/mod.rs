//! Plain data: the Salesforce objects a checkout reads and writes.
//!
//! Field names serialize in Salesforce's own spelling (`WebCartId`, `IsProcessing`, ...) and
//! every status is an enum that serializes as the exact Salesforce string.

mod delivery;
mod id;
pub(crate) mod inline;
mod state;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub use delivery::{
    AuthorizationStatus, CartDeliveryGroup, CartDeliveryGroupMethod, CartTax, DELIVERY_GROUP_NAME,
    OrderDeliveryGroup, PaymentAuthorization, TaxType,
};
pub use id::{IdError, KeyPrefix, SfId};
pub use state::{ParseEnumError, STATE_MAX_CHARS, SessionState, StateNameError};

/// Longest CartValidationOutput message Salesforce stores.
pub const MAX_MESSAGE_LEN: usize = 255;

/// A store: the context every cart and checkout belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct WebStore {
    /// Record ID (`0ZE`).
    pub id: SfId,
    /// Display name.
    pub name: String,
    /// Minutes a checkout may live; `None` never expires, `0` disables checkout.
    #[serde(default = "default_ttl")]
    pub checkout_time_to_live: Option<u32>,
    /// Buyer accounts that are members of the store (through its buyer groups).
    #[serde(default)]
    pub buyer_accounts: BTreeSet<SfId>,
}

fn default_ttl() -> Option<u32> {
    Some(DEFAULT_CHECKOUT_TTL_MINUTES)
}

/// The platform's default checkout time-to-live: 48 hours.
pub const DEFAULT_CHECKOUT_TTL_MINUTES: u32 = 2880;

/// The longest checkout time-to-live the platform accepts: a year.
pub const MAX_CHECKOUT_TTL_MINUTES: u32 = 525_600;

impl WebStore {
    /// Whether the store lets buyers check out at all (a time-to-live of 0 disables it).
    pub fn checkout_enabled(&self) -> bool {
        self.checkout_time_to_live != Some(0)
    }

    /// When a session created at `created` expires; `None` never.
    pub fn checkout_expiry(&self, created: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let minutes = self.checkout_time_to_live?.min(MAX_CHECKOUT_TTL_MINUTES);
        created.checked_add_signed(chrono::Duration::minutes(i64::from(minutes)))
    }
}

/// A buyer account: a cart's effective account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Account {
    /// Record ID (`001`).
    pub id: SfId,
    /// Display name.
    pub name: String,
    /// Whether the account is active (enabled as a buyer).
    #[serde(default = "yes")]
    pub is_active: bool,
}

fn yes() -> bool {
    true
}

/// A permission that decides who may invoke checkout actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    /// The buyer's permission to check out (the B2B buyer permission set).
    #[serde(rename = "B2BBuyer")]
    B2BBuyer,
    /// An integration user acting for a store.
    #[serde(rename = "B2BCommerceIntegrator")]
    B2BCommerceIntegrator,
    /// Modify All Data: an administrator, who also sees every cart.
    #[serde(rename = "ModifyAllData")]
    ModifyAllData,
    /// May open the inspector (`/inspector`) and its JSON views, which show every cart's
    /// checkout read-only. It grants no action and no record read of the REST facade.
    #[serde(rename = "CheckoutInspector")]
    CheckoutInspector,
}

/// A user: the actor of every command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct User {
    /// Record ID (`005`).
    pub id: SfId,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// The buyer account of an external (buyer) user; `None` for internal users.
    #[serde(default)]
    pub account_id: Option<SfId>,
    /// Permissions held.
    #[serde(default)]
    pub permissions: BTreeSet<Permission>,
}

impl User {
    /// Whether the user holds `permission`.
    pub fn has(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }
}

/// WebCart.Status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CartStatus {
    /// Open for edits.
    Active,
    /// In checkout: locked against edits.
    Checkout,
    /// Ordered; nothing may change it.
    Closed,
    /// Being closed.
    PendingClosed,
    /// Being deleted.
    PendingDelete,
    /// Busy with a platform process.
    Processing,
}

impl CartStatus {
    /// Every status, in declaration order.
    pub const ALL: [CartStatus; 6] = [
        CartStatus::Active,
        CartStatus::Checkout,
        CartStatus::Closed,
        CartStatus::PendingClosed,
        CartStatus::PendingDelete,
        CartStatus::Processing,
    ];

    /// The Salesforce string.
    pub fn as_str(self) -> &'static str {
        match self {
            CartStatus::Active => "Active",
            CartStatus::Checkout => "Checkout",
            CartStatus::Closed => "Closed",
            CartStatus::PendingClosed => "PendingClosed",
            CartStatus::PendingDelete => "PendingDelete",
            CartStatus::Processing => "Processing",
        }
    }
}

/// The level of access a share grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Access {
    /// May read the cart.
    Read,
    /// May read and change the cart.
    Edit,
}

/// A share of a cart with another user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CartShare {
    /// The user the cart is shared with.
    pub user_id: SfId,
    /// What the share allows.
    pub access: Access,
}

/// The field shown in place of a cart's write-only `PaymentToken`: whether one is on file.
pub const PAYMENT_TOKEN_SET: &str = "PaymentTokenSet";

/// A cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct WebCart {
    /// Record ID (`0a6`).
    pub id: SfId,
    /// The store the cart belongs to.
    pub web_store_id: SfId,
    /// The effective (buyer) account.
    pub account_id: SfId,
    /// The owning user.
    pub owner_id: SfId,
    /// Cart status.
    pub status: CartStatus,
    /// Other users the cart is shared with.
    #[serde(default)]
    pub shares: Vec<CartShare>,
    /// Where the order ships (written by the Shipping Address screen).
    #[serde(default)]
    pub deliver_to: Option<Address>,
    /// The shipping options the Shipment integration offers (written by it).
    #[serde(default)]
    pub delivery_options: Vec<DeliveryOption>,
    /// The chosen delivery method (written by the Delivery Method screen).
    #[serde(default)]
    pub delivery_method_id: Option<String>,
    /// The tokenized payment method (written by the Payment And Billing Address screen).
    #[serde(default)]
    pub payment_token: Option<String>,
    /// The payment gateway's authorisation reference, once authorised.
    #[serde(default)]
    pub payment_authorization_id: Option<String>,
    /// The amount the payment authorisation covers: the order's grand total.
    #[serde(default)]
    pub authorized_amount: Option<Decimal>,
    /// Sum of the product lines' TotalPrice.
    #[serde(default)]
    pub total_product_amount: Option<Decimal>,
    /// Sum of the promotion adjustments (zero or negative).
    #[serde(default)]
    pub total_adjustment_amount: Option<Decimal>,
    /// Shipping and other charges.
    #[serde(default)]
    pub total_charge_amount: Option<Decimal>,
    /// Taxes.
    #[serde(default)]
    pub total_tax_amount: Option<Decimal>,
    /// Products + adjustments + charges + taxes.
    #[serde(default)]
    pub grand_total_amount: Option<Decimal>,
    /// Optimistic-concurrency version, bumped by every committed change.
    #[serde(default)]
    pub version: u64,
}

impl WebCart {
    /// A cart with no shares, no checkout details and no amounts yet, at version 0.
    pub fn new(
        id: SfId,
        web_store_id: SfId,
        account_id: SfId,
        owner_id: SfId,
        status: CartStatus,
    ) -> WebCart {
        WebCart {
            id,
            web_store_id,
            account_id,
            owner_id,
            status,
            shares: Vec::new(),
            deliver_to: None,
            delivery_options: Vec::new(),
            delivery_method_id: None,
            payment_token: None,
            payment_authorization_id: None,
            authorized_amount: None,
            total_product_amount: None,
            total_adjustment_amount: None,
            total_charge_amount: None,
            total_tax_amount: None,
            grand_total_amount: None,
            version: 0,
        }
    }

    /// The Ids of the records the cart holds: its delivery group's offered methods.
    pub fn child_ids(&self) -> Vec<SfId> {
        self.delivery_options.iter().filter_map(|o| o.id).collect()
    }

    /// The cart as it is shown to anyone who reads it (the HTTP facade, `cartflow inspect`):
    /// every field but the write-only `PaymentToken`, which gives way to
    /// [`PAYMENT_TOKEN_SET`], whether a token is on file. The stores keep the token for the
    /// payment step; no reader, the owner included, ever gets it back.
    pub fn shown(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(fields) = &mut value {
            fields.remove("PaymentToken");
            fields.insert(
                PAYMENT_TOKEN_SET.into(),
                serde_json::Value::Bool(self.payment_token.is_some()),
            );
        }
        value
    }

    /// The access `user` has to this cart through ownership, sharing or Modify All Data.
    pub fn access_of(&self, user: &User) -> Option<Access> {
        if user.id == self.owner_id || user.has(Permission::ModifyAllData) {
            return Some(Access::Edit);
        }
        self.shares
            .iter()
            .filter(|s| s.user_id == user.id)
            .map(|s| s.access)
            .max()
    }
}

/// CartItem.Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum CartItemType {
    /// A product line: stock applies.
    #[default]
    Product,
    /// A charge line (shipping, fees): no stock.
    Charge,
}

/// A cart line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CartItem {
    /// Record ID (`0a9`).
    pub id: SfId,
    /// The cart.
    pub cart_id: SfId,
    /// Stock keeping unit; blank or missing fails the inventory check.
    #[serde(default)]
    pub sku: Option<String>,
    /// The product, where known.
    #[serde(default, rename = "Product2Id")]
    pub product2_id: Option<String>,
    /// Quantity ordered.
    pub quantity: Decimal,
    /// Product or charge.
    #[serde(default, rename = "Type")]
    pub item_type: CartItemType,
    /// Unit price, once priced.
    #[serde(default)]
    pub sales_price: Option<Decimal>,
    /// Unit list price, once priced.
    #[serde(default)]
    pub list_price: Option<Decimal>,
    /// SalesPrice × Quantity, once priced.
    #[serde(default)]
    pub total_price: Option<Decimal>,
    /// Promotion adjustment of the line (zero or negative).
    #[serde(default)]
    pub adjustment_amount: Option<Decimal>,
    /// Tax on the line: the sum of its [`CartTax`] rows.
    #[serde(default)]
    pub tax_amount: Option<Decimal>,
    /// The line's taxes, as the tax integration's last answer wrote them (served as CartTax
    /// records).
    #[serde(default, rename = "CartTaxes", skip_serializing_if = "Vec::is_empty")]
    pub taxes: Vec<CartTax>,
}

/// A postal address (Salesforce's compound Address fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Address {
    /// Street and number.
    #[serde(default)]
    pub street: String,
    /// City.
    #[serde(default)]
    pub city: String,
    /// State or province code.
    #[serde(default)]
    pub state_code: Option<String>,
    /// Postal code.
    #[serde(default)]
    pub postal_code: String,
    /// ISO 3166 country code.
    pub country_code: String,
}

/// A shipping option with its price, as the Shipment integration offers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DeliveryOption {
    /// The CartDeliveryGroupMethod record this option is served as, once the engine wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<SfId>,
    /// The delivery method's identifier.
    pub delivery_method_id: String,
    /// Its display name.
    pub name: String,
    /// What it costs.
    pub amount: Decimal,
}

impl CartItem {
    /// An unpriced product line.
    pub fn product(id: SfId, cart_id: SfId, sku: Option<String>, quantity: Decimal) -> CartItem {
        CartItem {
            id,
            cart_id,
            sku,
            product2_id: None,
            quantity,
            item_type: CartItemType::Product,
            sales_price: None,
            list_price: None,
            total_price: None,
            adjustment_amount: None,
            tax_amount: None,
            taxes: Vec::new(),
        }
    }

    /// The Ids of the records the line holds: its CartTax rows.
    pub fn child_ids(&self) -> Vec<SfId> {
        self.taxes.iter().map(|t| t.id).collect()
    }

    /// Drops the line's tax, rows and sum.
    pub fn clear_tax(&mut self) {
        self.tax_amount = None;
        self.taxes.clear();
    }
}

/// A cart's checkout session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CartCheckoutSession {
    /// Record ID (`2z9`).
    pub id: SfId,
    /// The cart.
    pub web_cart_id: SfId,
    /// The step the session is in; `None` is the empty State that the requirements refuse.
    pub state: Option<SessionState>,
    /// What State becomes when the running async step succeeds.
    #[serde(default)]
    pub next_state: Option<SessionState>,
    /// True while the session is locked for an async step.
    #[serde(default)]
    pub is_processing: bool,
    /// True once a step failed.
    #[serde(default)]
    pub is_error: bool,
    /// True once the session is finished or cancelled.
    #[serde(default)]
    pub is_archived: bool,
    /// The session's current background operation.
    #[serde(default)]
    pub background_operation_id: Option<SfId>,
    /// The order made from the cart.
    #[serde(default)]
    pub order_id: Option<SfId>,
    /// When the session was created; the store's checkout time-to-live counts from here
    /// (`None`, for imported sessions without it, never expires).
    #[serde(default)]
    pub created_date: Option<DateTime<Utc>>,
    /// Optimistic-concurrency version, bumped by every committed change.
    #[serde(default)]
    pub version: u64,
}

/// BackgroundOperation.Status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OperationStatus {
    /// Waiting for a worker.
    New,
    /// Claimed by a worker.
    Running,
    /// Finished successfully.
    Complete,
    /// Finished with a failure.
    Error,
    /// Cancelled before it finished.
    Canceled,
}

impl OperationStatus {
    /// Every status, in declaration order.
    pub const ALL: [OperationStatus; 5] = [
        OperationStatus::New,
        OperationStatus::Running,
        OperationStatus::Complete,
        OperationStatus::Error,
        OperationStatus::Canceled,
    ];

    /// New or Running: the operation still holds the cart's one integration slot.
    pub fn is_active(self) -> bool {
        matches!(self, OperationStatus::New | OperationStatus::Running)
    }

    /// The Salesforce string.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationStatus::New => "New",
            OperationStatus::Running => "Running",
            OperationStatus::Complete => "Complete",
            OperationStatus::Error => "Error",
            OperationStatus::Canceled => "Canceled",
        }
    }
}

/// The kind of check a provider performs (StoreIntegratedService.ServiceProviderType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ProviderKind {
    /// Stock availability.
    Inventory,
    /// Prices.
    Price,
    /// Promotions.
    Promotions,
    /// Shipping cost.
    Shipment,
    /// Taxes.
    Tax,
    /// Payment authorisation.
    Payment,
    /// A custom async step's provider, registered by name; the operation's name is the
    /// step's custom action, which names the step and so its provider.
    Custom,
}

impl ProviderKind {
    /// The CartValidationOutput type a failure of this kind writes.
    pub fn output_type(self) -> OutputType {
        match self {
            ProviderKind::Inventory => OutputType::Inventory,
            ProviderKind::Price => OutputType::Pricing,
            ProviderKind::Promotions => OutputType::Promotions,
            ProviderKind::Shipment => OutputType::Shipping,
            ProviderKind::Tax => OutputType::Taxes,
            // No documented Type is about payment or a store's own checks.
            ProviderKind::Payment | ProviderKind::Custom => OutputType::Other,
        }
    }
}

/// A background operation: one run of an integration for a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct BackgroundOperation {
    /// Record ID (`0bO`).
    pub id: SfId,
    /// The action that created it, e.g. `checkCartInventoryAction`.
    pub name: String,
    /// The cart it works on.
    pub cart_id: SfId,
    /// The session that waits for it.
    pub checkout_session_id: SfId,
    /// The kind of provider it runs; `None` for the engine's own work (making and
    /// activating the order).
    #[serde(default)]
    pub provider_kind: Option<ProviderKind>,
    /// Lifecycle status.
    pub status: OperationStatus,
    /// Why it ended in Error.
    #[serde(default)]
    pub error: Option<String>,
    /// When it was created.
    pub submitted_at: DateTime<Utc>,
    /// When a worker last claimed it.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// When the current claim's lease runs out.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Claims so far (the first claim makes it 1); a completion must carry the current one
    /// (the fencing token). Served as Salesforce's `RetryCount`; `Attempt` is still read.
    #[serde(default, rename = "RetryCount", alias = "Attempt")]
    pub attempt: u32,
    /// Claims after the first that a sweeper may make.
    #[serde(default)]
    pub retry_limit: u32,
    /// Longest a provider call may take, in milliseconds. Served as Salesforce's `Timeout`;
    /// `TimeoutMs` is still read.
    #[serde(rename = "Timeout", alias = "TimeoutMs")]
    pub timeout_ms: u64,
    /// The `orderLifeCycleType` the `activateOrderAction` call that created it chose, kept
    /// here until the worker's activation writes it onto the order; no other operation has
    /// one, so it is written only where set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_life_cycle_type: Option<OrderLifeCycleType>,
    /// Optimistic-concurrency version, bumped by every committed change.
    #[serde(default)]
    pub version: u64,
}

/// CartValidationOutput.Level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Level {
    /// For information.
    Info,
    /// Blocks the checkout.
    Error,
    /// Worth showing, does not block.
    Warning,
}

/// CartValidationOutput.Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OutputType {
    /// The integration itself failed (error, panic, timeout).
    SystemError,
    /// Stock.
    Inventory,
    /// Prices.
    Pricing,
    /// Promotions.
    Promotions,
    /// Shipping.
    Shipping,
    /// Taxes.
    Taxes,
    /// Entitlements.
    Entitlement,
    /// Anything else.
    Other,
}

/// A message from an integration to the buyer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CartValidationOutput {
    /// Record ID (`0a7`).
    pub id: SfId,
    /// The cart.
    pub cart_id: SfId,
    /// The operation that wrote it.
    #[serde(default)]
    pub background_operation_id: Option<SfId>,
    /// Severity.
    pub level: Level,
    /// Which kind of check wrote it.
    #[serde(rename = "Type")]
    pub output_type: OutputType,
    /// The text for the buyer, at most 255 characters.
    pub message: String,
    /// The cart or cart item it is about.
    #[serde(default)]
    pub related_entity_id: Option<SfId>,
    /// Whether the buyer dismissed it.
    #[serde(default)]
    pub is_dismissed: bool,
}

/// Order.Status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Made from the cart; still editable.
    Draft,
    /// Activated: read-only, with an OrderSummary.
    Activated,
}

impl OrderStatus {
    /// The Salesforce string.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Draft => "Draft",
            OrderStatus::Activated => "Activated",
        }
    }
}

/// Order.OrderLifeCycleType: whether Order Management processes the order (`MANAGED`) or an
/// external system does (`UNMANAGED`), as `activateOrderAction`'s `orderLifeCycleType` input
/// chose. cartflow has no Order Management, so an order is `UNMANAGED` unless the call said
/// otherwise; a stored order written before the field existed reads as `UNMANAGED` too.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderLifeCycleType {
    /// Processed by an external system (or not at all).
    #[default]
    Unmanaged,
    /// Processed by Order Management.
    Managed,
}

impl OrderLifeCycleType {
    /// Both values, in the order the action's describe lists them.
    pub const ALL: [OrderLifeCycleType; 2] =
        [OrderLifeCycleType::Unmanaged, OrderLifeCycleType::Managed];

    /// The Salesforce string.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderLifeCycleType::Unmanaged => "UNMANAGED",
            OrderLifeCycleType::Managed => "MANAGED",
        }
    }

    /// The value an input names exactly (`UNMANAGED` or `MANAGED`), if it names one.
    pub fn parse(text: &str) -> Option<OrderLifeCycleType> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

/// A line of an order, copied from a cart line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct OrderItem {
    /// Record ID (`802`); `None` on orders stored before order items had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<SfId>,
    /// The cart line it was made from.
    pub cart_item_id: SfId,
    /// Stock keeping unit.
    #[serde(default)]
    pub sku: Option<String>,
    /// The product, where known.
    #[serde(default, rename = "Product2Id")]
    pub product2_id: Option<String>,
    /// Quantity.
    pub quantity: Decimal,
    /// `Order Product` for a product line, `Delivery Charge` for the delivery charge line.
    #[serde(rename = "Type", with = "order_item_type")]
    pub item_type: CartItemType,
    /// Unit price.
    #[serde(default)]
    pub unit_price: Option<Decimal>,
    /// Total price of the line.
    #[serde(default)]
    pub total_price: Option<Decimal>,
    /// Promotion adjustment.
    #[serde(default)]
    pub adjustment_amount: Option<Decimal>,
    /// Tax.
    #[serde(default)]
    pub tax_amount: Option<Decimal>,
}

/// An order made from a cart by `cartToOrderAction`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Order {
    /// Record ID (`801`).
    pub id: SfId,
    /// The cart it was made from.
    pub cart_id: SfId,
    /// The store.
    pub web_store_id: SfId,
    /// The buyer account.
    pub account_id: SfId,
    /// The buyer.
    pub owner_id: SfId,
    /// Draft, then Activated.
    pub status: OrderStatus,
    /// The lines.
    pub items: Vec<OrderItem>,
    /// Where it ships.
    #[serde(default)]
    pub deliver_to: Option<Address>,
    /// The delivery method.
    #[serde(default)]
    pub delivery_method_id: Option<String>,
    /// Where it ships and by which method (made with the order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_group: Option<OrderDeliveryGroup>,
    /// The payment's authorisation, once the payment step passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_authorization: Option<PaymentAuthorization>,
    /// The payment authorisation reference.
    #[serde(default)]
    pub payment_authorization_id: Option<String>,
    /// The amount the payment authorisation covers, equal to the grand total.
    #[serde(default)]
    pub authorized_amount: Option<Decimal>,
    /// Products + adjustments + charges + taxes, as the cart had it.
    #[serde(default)]
    pub grand_total_amount: Option<Decimal>,
    /// When it was made.
    pub created_date: DateTime<Utc>,
    /// When it was activated.
    #[serde(default)]
    pub activated_date: Option<DateTime<Utc>>,
    /// The OrderSummary made at activation.
    #[serde(default)]
    pub order_summary_id: Option<SfId>,
    /// Who processes the order after activation: the `orderLifeCycleType` the activation
    /// carried (`UNMANAGED` until then, and for orders stored before the field existed).
    #[serde(default)]
    pub order_life_cycle_type: OrderLifeCycleType,
    /// Optimistic-concurrency version, bumped by every committed change.
    #[serde(default)]
    pub version: u64,
}

impl Order {
    /// A Draft order of `cart` for `owner`, with no lines, amounts, delivery or payment yet,
    /// never stored (version 0).
    pub fn draft(id: SfId, cart: &WebCart, owner: SfId, created: DateTime<Utc>) -> Order {
        Order {
            id,
            cart_id: cart.id,
            web_store_id: cart.web_store_id,
            account_id: cart.account_id,
            owner_id: owner,
            status: OrderStatus::Draft,
            items: Vec::new(),
            deliver_to: None,
            delivery_method_id: None,
            delivery_group: None,
            payment_authorization: None,
            payment_authorization_id: None,
            authorized_amount: None,
            grand_total_amount: None,
            created_date: created,
            activated_date: None,
            order_summary_id: None,
            order_life_cycle_type: OrderLifeCycleType::default(),
            version: 0,
        }
    }
}

/// OrderItem.Type in Salesforce's words; the cart's words (`Product`, `Charge`) are read too.
mod order_item_type {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::CartItemType;

    pub(super) fn serialize<S: Serializer>(kind: &CartItemType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match kind {
            CartItemType::Product => "Order Product",
            CartItemType::Charge => "Delivery Charge",
        })
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CartItemType, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        match &*text {
            "Order Product" | "Product" => Ok(CartItemType::Product),
            "Delivery Charge" | "Charge" => Ok(CartItemType::Charge),
            other => Err(serde::de::Error::custom(format!(
                "unknown OrderItem Type {other:?}: Order Product or Delivery Charge"
            ))),
        }
    }
}

impl Order {
    /// The Ids of the records the order holds: its items, its delivery group and its payment
    /// authorisation.
    pub fn child_ids(&self) -> Vec<SfId> {
        self.items
            .iter()
            .filter_map(|item| item.id)
            .chain(self.delivery_group.as_ref().map(|g| g.id))
            .chain(self.payment_authorization.as_ref().map(|a| a.id))
            .collect()
    }
}

/// Cuts `message` to at most [`MAX_MESSAGE_LEN`] characters.
pub fn clip_message(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_LEN) {
        Some((cut, _)) => message[..cut].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_serialize_as_salesforce_strings() {
        for status in CartStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        for status in OperationStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }

    #[test]
    fn life_cycle_types_serialize_as_salesforce_strings_and_parse_only_those() {
        for kind in OrderLifeCycleType::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            assert_eq!(OrderLifeCycleType::parse(kind.as_str()), Some(kind));
        }
        for other in ["", "managed", "Managed", " MANAGED", "UNMANAGED ", "NONE"] {
            assert_eq!(OrderLifeCycleType::parse(other), None, "{other:?}");
        }
    }

    #[test]
    fn an_order_stored_without_a_life_cycle_type_reads_as_unmanaged() {
        let stored = serde_json::json!({
            "Id": SfId::from_number(KeyPrefix::Order, 1).to_string(),
            "CartId": SfId::from_number(KeyPrefix::WebCart, 1).to_string(),
            "WebStoreId": SfId::from_number(KeyPrefix::WebStore, 1).to_string(),
            "AccountId": SfId::from_number(KeyPrefix::Account, 1).to_string(),
            "OwnerId": SfId::from_number(KeyPrefix::User, 1).to_string(),
            "Status": "Activated",
            "Items": [],
            "CreatedDate": "2026-01-01T09:00:00Z",
        });
        let order: Order = serde_json::from_value(stored).unwrap();
        assert_eq!(order.order_life_cycle_type, OrderLifeCycleType::Unmanaged);
        let written = serde_json::to_value(&order).unwrap();
        assert_eq!(written["OrderLifeCycleType"], "UNMANAGED");
    }

    #[test]
    fn messages_are_clipped_on_character_boundaries() {
        let long = "é".repeat(300);
        assert_eq!(clip_message(&long).chars().count(), MAX_MESSAGE_LEN);
        assert_eq!(clip_message("short"), "short");
    }
}
