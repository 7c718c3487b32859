//! The delivery and tax objects of a cart and an order, with Salesforce's field names.
//!
//! A cart has exactly one delivery group: its address and chosen method live on the cart, and
//! [`CartDeliveryGroup::of`] shows them as the group, whose Id is the cart's under the group's
//! key prefix. The options the shipping integration offers are the group's
//! [`CartDeliveryGroupMethod`]s; each line's taxes are its [`CartTax`] rows. On the order, the
//! [`OrderDeliveryGroup`] and the [`PaymentAuthorization`] are records of their own, made once.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::model::{Address, DeliveryOption, KeyPrefix, SfId, WebCart};

/// CartTax.TaxType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TaxType {
    /// Computed during checkout, before the order is placed.
    #[default]
    Estimated,
    /// Reported by a tax authority's system as final.
    Actual,
}

/// A tax on one cart line, written from the tax integration's answer (one per taxed line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CartTax {
    /// Record ID (`0aT`).
    pub id: SfId,
    /// The cart line taxed.
    pub cart_item_id: SfId,
    /// The tax.
    pub amount: Decimal,
    /// The rate applied, when the integration gave it (a fraction: 0.05 is 5 %).
    #[serde(default)]
    pub tax_rate: Option<Decimal>,
    /// What the tax is called.
    pub name: String,
    /// Estimated or actual.
    #[serde(default)]
    pub tax_type: TaxType,
    /// When it was computed.
    pub tax_calculation_date: DateTime<Utc>,
}

/// A cart's delivery group: where its order ships and the chosen delivery method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CartDeliveryGroup {
    /// Record ID (`0aB`): the cart's Id under the group's key prefix.
    pub id: SfId,
    /// The cart.
    pub cart_id: SfId,
    /// The group's name.
    pub name: &'static str,
    /// Street and number.
    pub deliver_to_street: Option<String>,
    /// City.
    pub deliver_to_city: Option<String>,
    /// State or province code.
    pub deliver_to_state: Option<String>,
    /// Postal code.
    pub deliver_to_postal_code: Option<String>,
    /// ISO 3166 country code.
    pub deliver_to_country: Option<String>,
    /// The chosen delivery method (one of the group's methods' DeliveryMethodId).
    pub delivery_method_id: Option<String>,
}

/// The name every cart's one delivery group has.
pub const DELIVERY_GROUP_NAME: &str = "Default Delivery";

impl CartDeliveryGroup {
    /// The Id of `cart_id`'s delivery group.
    pub fn id_of(cart_id: &SfId) -> SfId {
        cart_id.rekeyed(KeyPrefix::CartDeliveryGroup)
    }

    /// The cart whose delivery group `group_id` is.
    pub fn cart_of(group_id: &SfId) -> SfId {
        group_id.rekeyed(KeyPrefix::WebCart)
    }

    /// The cart's delivery group.
    pub fn of(cart: &WebCart) -> CartDeliveryGroup {
        let to = cart.deliver_to.as_ref();
        let text = |field: fn(&Address) -> &str| {
            to.map(field).filter(|s| !s.is_empty()).map(str::to_owned)
        };
        CartDeliveryGroup {
            id: CartDeliveryGroup::id_of(&cart.id),
            cart_id: cart.id,
            name: DELIVERY_GROUP_NAME,
            deliver_to_street: text(|a| &a.street),
            deliver_to_city: text(|a| &a.city),
            deliver_to_state: to.and_then(|a| a.state_code.clone()),
            deliver_to_postal_code: text(|a| &a.postal_code),
            deliver_to_country: text(|a| &a.country_code),
            delivery_method_id: cart.delivery_method_id.clone(),
        }
    }
}

/// A delivery option the shipping integration offered for the cart's delivery group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CartDeliveryGroupMethod {
    /// Record ID (`2Cm`).
    pub id: SfId,
    /// The delivery group.
    pub cart_delivery_group_id: SfId,
    /// The cart.
    pub web_cart_id: SfId,
    /// The delivery method offered (what `setCheckoutDeliveryMethod` takes).
    pub delivery_method_id: String,
    /// Its display name.
    pub name: String,
    /// What it costs.
    pub shipping_fee: Decimal,
}

impl CartDeliveryGroupMethod {
    /// The cart's delivery options that have a record Id, as methods of its group.
    pub fn of(cart: &WebCart) -> Vec<CartDeliveryGroupMethod> {
        cart.delivery_options
            .iter()
            .filter_map(|option| CartDeliveryGroupMethod::from_option(cart, option))
            .collect()
    }

    fn from_option(cart: &WebCart, option: &DeliveryOption) -> Option<CartDeliveryGroupMethod> {
        Some(CartDeliveryGroupMethod {
            id: option.id?,
            cart_delivery_group_id: CartDeliveryGroup::id_of(&cart.id),
            web_cart_id: cart.id,
            delivery_method_id: option.delivery_method_id.clone(),
            name: option.name.clone(),
            shipping_fee: option.amount,
        })
    }
}

/// Where an order ships and how: made from the cart's delivery group when the order is drafted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct OrderDeliveryGroup {
    /// Record ID (`2dg`).
    pub id: SfId,
    /// The order.
    pub order_id: SfId,
    /// Street and number.
    #[serde(default)]
    pub deliver_to_street: Option<String>,
    /// City.
    #[serde(default)]
    pub deliver_to_city: Option<String>,
    /// State or province code.
    #[serde(default)]
    pub deliver_to_state: Option<String>,
    /// Postal code.
    #[serde(default)]
    pub deliver_to_postal_code: Option<String>,
    /// ISO 3166 country code.
    #[serde(default)]
    pub deliver_to_country: Option<String>,
    /// The delivery method the order ships by.
    #[serde(default)]
    pub order_delivery_method_id: Option<String>,
}

impl OrderDeliveryGroup {
    /// The delivery group of order `order_id`, as the cart's group stands.
    pub fn from_cart(id: SfId, order_id: SfId, cart: &WebCart) -> OrderDeliveryGroup {
        let group = CartDeliveryGroup::of(cart);
        OrderDeliveryGroup {
            id,
            order_id,
            deliver_to_street: group.deliver_to_street,
            deliver_to_city: group.deliver_to_city,
            deliver_to_state: group.deliver_to_state,
            deliver_to_postal_code: group.deliver_to_postal_code,
            deliver_to_country: group.deliver_to_country,
            order_delivery_method_id: group.delivery_method_id,
        }
    }
}

/// PaymentAuthorization.Status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum AuthorizationStatus {
    /// The gateway authorised the amount.
    #[default]
    Processed,
}

/// The authorisation of an order's payment, made when the payment step passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PaymentAuthorization {
    /// Record ID (`0Xc`).
    pub id: SfId,
    /// The buyer account.
    pub account_id: SfId,
    /// The amount authorised: the order's grand total.
    pub amount: Decimal,
    /// Processed.
    #[serde(default)]
    pub status: AuthorizationStatus,
    /// The gateway's reference for the authorisation.
    pub gateway_ref_number: String,
    /// When it was authorised.
    pub date: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CartStatus;

    #[test]
    fn a_carts_delivery_group_is_named_after_the_cart_and_leads_back_to_it() {
        let cart_id = SfId::from_number(KeyPrefix::WebCart, 42);
        let group = CartDeliveryGroup::id_of(&cart_id);
        assert_eq!(group.kind(), Some(KeyPrefix::CartDeliveryGroup));
        assert_eq!(&group.to_15()[3..], &cart_id.to_15()[3..]);
        assert_eq!(CartDeliveryGroup::cart_of(&group), cart_id);
        // The 18-character form is valid: it parses back to itself.
        assert_eq!(SfId::parse(group.as_str()), Ok(group));
    }

    #[test]
    fn the_group_shows_the_carts_address_and_choice_with_salesforce_names() {
        let id = |kind, n| SfId::from_number(kind, n);
        let mut cart = WebCart::new(
            id(KeyPrefix::WebCart, 1),
            id(KeyPrefix::WebStore, 1),
            id(KeyPrefix::Account, 1),
            id(KeyPrefix::User, 1),
            CartStatus::Checkout,
        );
        cart.deliver_to = Some(Address {
            street: "1 Main St".into(),
            city: "Denver".into(),
            state_code: Some("CO".into()),
            postal_code: "80202".into(),
            country_code: "US".into(),
        });
        cart.delivery_method_id = Some("GROUND".into());
        let shown = serde_json::to_value(CartDeliveryGroup::of(&cart)).unwrap();
        assert_eq!(shown["DeliverToCity"], "Denver");
        assert_eq!(shown["DeliverToState"], "CO");
        assert_eq!(shown["DeliverToCountry"], "US");
        assert_eq!(shown["DeliveryMethodId"], "GROUND");
        assert_eq!(shown["CartId"], cart.id.as_str());
    }
}
