//! `/sobjects`: read records, list a cart's related records, and update the fields the
//! screen steps write. A caller reads a record only when they can read its cart (owner, a
//! share, or Modify All Data); any other record answers 404, exactly as a missing one does.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::error::{SfError, json_response};
use super::{AppState, api_version, authenticate, blocking, parse_json, read_body};
use super::{describe, schema};
use crate::engine::Engine;
use crate::error::{CheckoutError, StoreError};
use crate::machine::{CheckoutDetails, Command};
use crate::model::{
    Address, CartDeliveryGroup, CartDeliveryGroupMethod, CartItem, KeyPrefix, Order, OrderItem,
    SfId, User,
};
use crate::store::Store;

/// The objects the facade serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Object {
    CartCheckoutSession,
    BackgroundOperation,
    WebCart,
    CartItem,
    CartValidationOutput,
    Order,
    CartDeliveryGroup,
    CartDeliveryGroupMethod,
    CartTax,
    OrderItem,
    OrderDeliveryGroup,
    PaymentAuthorization,
}

impl Object {
    pub(super) const ALL: [Object; 12] = [
        Object::CartCheckoutSession,
        Object::BackgroundOperation,
        Object::WebCart,
        Object::CartItem,
        Object::CartValidationOutput,
        Object::Order,
        Object::CartDeliveryGroup,
        Object::CartDeliveryGroupMethod,
        Object::CartTax,
        Object::OrderItem,
        Object::OrderDeliveryGroup,
        Object::PaymentAuthorization,
    ];

    pub(super) fn kind(self) -> KeyPrefix {
        match self {
            Object::CartCheckoutSession => KeyPrefix::CartCheckoutSession,
            Object::BackgroundOperation => KeyPrefix::BackgroundOperation,
            Object::WebCart => KeyPrefix::WebCart,
            Object::CartItem => KeyPrefix::CartItem,
            Object::CartValidationOutput => KeyPrefix::CartValidationOutput,
            Object::Order => KeyPrefix::Order,
            Object::CartDeliveryGroup => KeyPrefix::CartDeliveryGroup,
            Object::CartDeliveryGroupMethod => KeyPrefix::CartDeliveryGroupMethod,
            Object::CartTax => KeyPrefix::CartTax,
            Object::OrderItem => KeyPrefix::OrderItem,
            Object::OrderDeliveryGroup => KeyPrefix::OrderDeliveryGroup,
            Object::PaymentAuthorization => KeyPrefix::PaymentAuthorization,
        }
    }

    pub(super) fn name(self) -> &'static str {
        self.kind().object_name()
    }

    /// Object names in URLs are case-insensitive, as Salesforce's are.
    pub(super) fn parse(name: &str) -> Option<Object> {
        Object::ALL
            .into_iter()
            .find(|o| o.name().eq_ignore_ascii_case(name))
    }

    /// The fields a PATCH may set.
    pub(super) fn updatable(self) -> &'static [&'static str] {
        match self {
            Object::CartCheckoutSession => &["State"],
            Object::WebCart => &["DeliverTo", "DeliveryMethodId", "PaymentToken"],
            Object::CartDeliveryGroup => &GROUP_FIELDS,
            _ => &[],
        }
    }
}

/// The fields of a cart's delivery group a PATCH may set: its address, and the method.
const GROUP_FIELDS: [&str; 6] = [
    "DeliverToStreet",
    "DeliverToCity",
    "DeliverToState",
    "DeliverToPostalCode",
    "DeliverToCountry",
    "DeliveryMethodId",
];

fn with_attributes(object: Object, version: &str, id: &SfId, mut value: Value) -> Value {
    if let Value::Object(fields) = &mut value {
        fields.insert(
            "attributes".into(),
            json!({
                "type": object.name(),
                "url": format!("/services/data/v{version}/sobjects/{}/{id}", object.name()),
            }),
        );
    }
    value
}

/// The path's version, object and Id; anything unknown or malformed is 404.
fn target(segments: (String, String, String)) -> Result<(String, Object, SfId), SfError> {
    let (version, object, id) = segments;
    let version = api_version(&version)?.number();
    let object = Object::parse(&object).ok_or_else(SfError::not_found)?;
    let id = SfId::parse_kind(&id, object.kind()).map_err(|_| SfError::not_found())?;
    Ok((version, object, id))
}

/// Whether `user` may read `cart_id`'s records.
fn can_read(engine: &Engine, user: &User, cart_id: &SfId) -> Result<bool, StoreError> {
    Ok(engine
        .store()
        .cart(cart_id)?
        .is_some_and(|cart| cart.access_of(user).is_some()))
}

/// A record and the cart it belongs to, or `None` when there is no such record.
fn locate(
    engine: &Engine,
    object: Object,
    version: &str,
    id: &SfId,
) -> Result<Option<(Value, SfId)>, StoreError> {
    let found = find(engine.store().as_ref(), object, id)?;
    Ok(found.map(|(record, cart)| (with_attributes(object, version, id, record), cart)))
}

/// A record's fields and its cart.
pub(super) fn find(
    store: &dyn Store,
    object: Object,
    id: &SfId,
) -> Result<Option<(Value, SfId)>, StoreError> {
    let with = |record: Value, cart: SfId| Some((record, cart));
    Ok(match object {
        Object::CartCheckoutSession => store
            .session(id)?
            .and_then(|s| with(to_value(&s), s.web_cart_id)),
        Object::BackgroundOperation => store
            .operation(id)?
            .and_then(|o| with(to_value(&o), o.cart_id)),
        // The payment token is write-only: readers get `PaymentTokenSet` instead.
        Object::WebCart => store.cart(id)?.and_then(|c| with(c.shown(), c.id)),
        Object::Order => store.order(id)?.and_then(|o| with(to_value(&o), o.cart_id)),
        Object::CartItem => store
            .cart_item(id)?
            .and_then(|l| with(line_json(&l), l.cart_id)),
        Object::CartValidationOutput => store
            .validation_output(id)?
            .and_then(|o| with(to_value(&o), o.cart_id)),
        Object::CartDeliveryGroup => store
            .cart(&CartDeliveryGroup::cart_of(id))?
            .and_then(|c| with(to_value(&CartDeliveryGroup::of(&c)), c.id)),
        _ => find_held(store, object, id)?,
    })
}

/// A record held inside another (found through the store's index of holders).
fn find_held(
    store: &dyn Store,
    object: Object,
    id: &SfId,
) -> Result<Option<(Value, SfId)>, StoreError> {
    let Some(holder) = store.owner_of(id)? else {
        return Ok(None);
    };
    Ok(match object {
        Object::CartDeliveryGroupMethod => store.cart(&holder)?.and_then(|cart| {
            let method = CartDeliveryGroupMethod::of(&cart)
                .into_iter()
                .find(|m| m.id == *id)?;
            Some((to_value(&method), cart.id))
        }),
        Object::CartTax => store.cart_item(&holder)?.and_then(|line| {
            let tax = line.taxes.iter().find(|t| t.id == *id)?;
            Some((to_value(tax), line.cart_id))
        }),
        Object::OrderItem => store.order(&holder)?.and_then(|order| {
            let item = order.items.iter().find(|i| i.id == Some(*id))?;
            Some((order_item_json(&order, item), order.cart_id))
        }),
        Object::OrderDeliveryGroup => store.order(&holder)?.and_then(|order| {
            let group = order.delivery_group.as_ref().filter(|g| g.id == *id)?;
            Some((to_value(group), order.cart_id))
        }),
        Object::PaymentAuthorization => store.order(&holder)?.and_then(|order| {
            let authorization = order
                .payment_authorization
                .as_ref()
                .filter(|a| a.id == *id)?;
            Some((to_value(authorization), order.cart_id))
        }),
        _ => None,
    })
}

/// A cart line's fields; its CartTax rows are records of their own.
fn line_json(line: &CartItem) -> Value {
    let mut value = to_value(line);
    if let Value::Object(fields) = &mut value {
        fields.remove("CartTaxes");
    }
    value
}

/// An order item's fields, with the order it belongs to.
fn order_item_json(order: &Order, item: &OrderItem) -> Value {
    let mut value = to_value(item);
    if let Value::Object(fields) = &mut value {
        fields.insert("OrderId".into(), Value::String(order.id.to_string()));
    }
    value
}

pub(super) fn to_value(record: &impl Serialize) -> Value {
    serde_json::to_value(record).unwrap_or(Value::Null)
}

/// `GET .../sobjects/{Object}/{Id}`, or only some of its fields with `?fields=a,b`.
pub(super) async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Response, SfError> {
    let user = authenticate(&state, &headers).await?;
    let Path(segments) = path.map_err(|_| SfError::not_found())?;
    let (version, object, id) = target(segments)?;
    let fields = describe::requested_fields(object, uri.query().unwrap_or_default())?;
    let engine = state.0.engine.clone();
    let record = blocking(move || readable(&engine, &user, object, &version, &id))
        .await?
        .map_err(|e| SfError::internal(&e))?
        .ok_or_else(SfError::not_found)?;
    let record = match fields {
        Some(fields) => describe::only(record, &fields),
        None => record,
    };
    Ok(json_response(StatusCode::OK, &record))
}

/// The record `id` of `object`, with its attributes, when there is one `user` may read.
pub(super) fn readable(
    engine: &Engine,
    user: &User,
    object: Object,
    version: &str,
    id: &SfId,
) -> Result<Option<Value>, StoreError> {
    match locate(engine, object, version, id)? {
        Some((record, cart)) if can_read(engine, user, &cart)? => Ok(Some(record)),
        _ => Ok(None),
    }
}

/// `GET .../sobjects/{Object}/{Id}/{Relationship}`: a record's related list, as a query
/// result `{"totalSize", "done": true, "records"}`. A cart lists its CartItems,
/// CartValidationOutputs, CartDeliveryGroups, CartDeliveryGroupMethods and CartTaxes; a
/// delivery group its CartDeliveryGroupMethods; a cart line its CartTaxes; an order its
/// OrderItems and OrderDeliveryGroups.
pub(super) async fn related(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<(String, String, String, String)>, PathRejection>,
) -> Result<Response, SfError> {
    let user = authenticate(&state, &headers).await?;
    let Path((version, object, id, relationship)) = path.map_err(|_| SfError::not_found())?;
    let (version, object, parent) = target((version, object, id))?;
    let child = schema::child_relationship(object, &relationship).ok_or_else(SfError::not_found)?;
    let engine = state.0.engine.clone();
    let records = blocking(move || -> Result<Option<Vec<Value>>, StoreError> {
        let store = engine.store().as_ref();
        match find(store, object, &parent)? {
            Some((_, cart)) if can_read(&engine, &user, &cart)? => {}
            _ => return Ok(None),
        }
        let children = children(store, object, &parent, child)?;
        Ok(Some(
            children
                .into_iter()
                .map(|(id, record)| with_attributes(child, &version, &id, record))
                .collect(),
        ))
    })
    .await?
    .map_err(|e| SfError::internal(&e))?
    .ok_or_else(SfError::not_found)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"totalSize": records.len(), "done": true, "records": records}),
    ))
}

/// The `child` records of the `object` record `parent`, each with its Id.
pub(super) fn children(
    store: &dyn Store,
    object: Object,
    parent: &SfId,
    child: Object,
) -> Result<Vec<(SfId, Value)>, StoreError> {
    let cart_id = match object {
        Object::CartDeliveryGroup => CartDeliveryGroup::cart_of(parent),
        _ => *parent,
    };
    let lines = || -> Result<Vec<CartItem>, StoreError> {
        match object {
            Object::CartItem => Ok(store.cart_item(parent)?.into_iter().collect()),
            _ => store.cart_items(&cart_id),
        }
    };
    Ok(match child {
        Object::CartItem => lines()?.iter().map(|l| (l.id, line_json(l))).collect(),
        Object::CartValidationOutput => store
            .validation_outputs(&cart_id)?
            .iter()
            .map(|o| (o.id, to_value(o)))
            .collect(),
        Object::CartDeliveryGroup | Object::CartDeliveryGroupMethod => {
            let Some(cart) = store.cart(&cart_id)? else {
                return Ok(Vec::new());
            };
            if child == Object::CartDeliveryGroup {
                let group = CartDeliveryGroup::of(&cart);
                vec![(group.id, to_value(&group))]
            } else {
                let methods = CartDeliveryGroupMethod::of(&cart);
                methods.iter().map(|m| (m.id, to_value(m))).collect()
            }
        }
        Object::CartTax => lines()?
            .iter()
            .flat_map(|l| l.taxes.iter().map(|t| (t.id, to_value(t))))
            .collect(),
        _ => order_children(store, parent, child)?,
    })
}

/// An order's items or delivery groups, each with its Id.
pub(super) fn order_children(
    store: &dyn Store,
    order_id: &SfId,
    child: Object,
) -> Result<Vec<(SfId, Value)>, StoreError> {
    let Some(order) = store.order(order_id)? else {
        return Ok(Vec::new());
    };
    Ok(match child {
        Object::OrderItem => order
            .items
            .iter()
            .filter_map(|item| Some((item.id?, order_item_json(&order, item))))
            .collect(),
        Object::OrderDeliveryGroup => order
            .delivery_group
            .iter()
            .map(|g| (g.id, to_value(g)))
            .collect(),
        _ => Vec::new(),
    })
}

/// What a PATCH asks for, once its fields are checked.
pub(super) enum Update {
    /// A screen step: the session's new State.
    Advance(String),
    /// A screen's input onto the cart.
    Details(CheckoutDetails),
    /// A screen's input onto the cart's delivery group: address fields (merged into the
    /// address the cart has) and the method.
    Group(GroupUpdate),
    /// No field: nothing changes.
    Nothing,
}

/// `PATCH .../sobjects/{Object}/{Id}`: a screen step. 204 on success; a refused move answers
/// the command's errorCode and status and changes nothing.
pub(super) async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<(String, String, String)>, PathRejection>,
    body: Body,
) -> Result<Response, SfError> {
    let user = authenticate(&state, &headers).await?;
    let Path(segments) = path.map_err(|_| SfError::not_found())?;
    let (version, object, id) = target(segments)?;
    let body = read_body(&headers, body).await?;
    let route = format!("PATCH {}", uri.path());
    let run = apply_update(&state, user.clone(), (version, object, id), &body);
    super::idempotency::keyed(&state, &user, &headers, route, &body, run).await
}

/// Carries out a PATCH of `target` as `user`: 204, or the command's refusal.
async fn apply_update(
    state: &AppState,
    user: User,
    target: (String, Object, SfId),
    body: &[u8],
) -> Result<Response, SfError> {
    let (version, object, id) = target;
    let update = parse_update(object, parse_json(body)?)?;
    let engine = state.0.engine.clone();
    let outcome = blocking(
        move || -> Result<Option<Result<(), CheckoutError>>, StoreError> {
            let Some((_, cart)) = locate(&engine, object, &version, &id)? else {
                return Ok(None);
            };
            if !can_read(&engine, &user, &cart)? {
                return Ok(None);
            }
            let actor = user.id.to_string();
            let command = match update {
                Update::Nothing => return Ok(Some(Ok(()))),
                Update::Advance(state) => Command::Advance {
                    session_id: id.to_string(),
                    state,
                    exp_current_state: None,
                },
                Update::Details(details) => Command::SetDetails {
                    cart_id: id.to_string(),
                    details,
                },
                Update::Group(group) => {
                    let cart_id = CartDeliveryGroup::cart_of(&id);
                    let current = engine.store().cart(&cart_id)?.and_then(|c| c.deliver_to);
                    Command::SetDetails {
                        cart_id: cart_id.to_string(),
                        details: group.onto(current),
                    }
                }
            };
            Ok(Some(engine.execute(&actor, command).map(|_| ())))
        },
    )
    .await?
    .map_err(|e| SfError::internal(&e))?
    .ok_or_else(SfError::not_found)?;
    outcome.map_err(|e| {
        let fields = e.field().map(str::to_owned).into_iter().collect();
        SfError::from_checkout(&e).with_fields(fields)
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Checks a PATCH body: a JSON object of updatable fields (names case-insensitive, as
/// Salesforce's are; `attributes` is ignored). Any other field is 400 `INVALID_FIELD`.
pub(super) fn parse_update(object: Object, body: Value) -> Result<Update, SfError> {
    let Value::Object(fields) = body else {
        return Err(SfError::parser(
            "The body must be a JSON object of the fields to change",
        ));
    };
    let allowed = object.updatable();
    let mut given = Map::new();
    let mut refused = Vec::new();
    for (name, value) in fields {
        if name == "attributes" {
            continue;
        }
        match allowed.iter().find(|a| a.eq_ignore_ascii_case(&name)) {
            Some(canonical) => {
                given.insert((*canonical).to_owned(), value);
            }
            None => refused.push(name),
        }
    }
    if !refused.is_empty() {
        let only = if allowed.is_empty() {
            format!("{} records are read-only", object.name())
        } else {
            format!("only {} can be set", allowed.join(", "))
        };
        let message = format!(
            "{} cannot be updated on {}: {only}",
            refused.join(", "),
            object.name()
        );
        return Err(
            SfError::new(StatusCode::BAD_REQUEST, "INVALID_FIELD", message).with_fields(refused),
        );
    }
    if let Some((name, _)) = given.iter().find(|(_, v)| v.is_null()) {
        return Err(SfError::invalid_field(
            name,
            format!("{}.{name} cannot be cleared", object.name()),
        ));
    }
    let text = |name: &str| -> Result<Option<String>, SfError> {
        match given.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(SfError::parser(format!("{name} must be a string"))),
        }
    };
    if given.is_empty() {
        return Ok(Update::Nothing);
    }
    Ok(match object {
        Object::CartCheckoutSession => Update::Advance(text("State")?.unwrap_or_default()),
        Object::CartDeliveryGroup => Update::Group(GroupUpdate {
            street: text("DeliverToStreet")?,
            city: text("DeliverToCity")?,
            state: text("DeliverToState")?,
            postal_code: text("DeliverToPostalCode")?,
            country: text("DeliverToCountry")?,
            delivery_method_id: text("DeliveryMethodId")?,
        }),
        _ => {
            let deliver_to = match given.get("DeliverTo") {
                None => None,
                Some(value) => Some(address(value)?),
            };
            Update::Details(CheckoutDetails {
                deliver_to,
                delivery_method_id: text("DeliveryMethodId")?,
                payment_token: text("PaymentToken")?,
            })
        }
    })
}

/// The fields a PATCH of a delivery group gives.
pub(super) struct GroupUpdate {
    street: Option<String>,
    city: Option<String>,
    state: Option<String>,
    postal_code: Option<String>,
    country: Option<String>,
    delivery_method_id: Option<String>,
}

impl GroupUpdate {
    /// The buyer's input: the given address fields over the cart's `current` address (an
    /// address only when a field of it is given), and the method.
    fn onto(self, current: Option<Address>) -> CheckoutDetails {
        let given = [
            &self.street,
            &self.city,
            &self.state,
            &self.postal_code,
            &self.country,
        ];
        let deliver_to = given.iter().any(|f| f.is_some()).then(|| {
            let mut address = current.unwrap_or_default();
            let set = |field: &mut String, value: Option<String>| {
                if let Some(value) = value {
                    *field = value;
                }
            };
            set(&mut address.street, self.street);
            set(&mut address.city, self.city);
            set(&mut address.postal_code, self.postal_code);
            set(&mut address.country_code, self.country);
            if self.state.is_some() {
                address.state_code = self.state;
            }
            address
        });
        CheckoutDetails {
            deliver_to,
            delivery_method_id: self.delivery_method_id,
            payment_token: None,
        }
    }
}

fn address(value: &Value) -> Result<Address, SfError> {
    Address::deserialize(value)
        .map_err(|e| SfError::parser(format!("DeliverTo is not an address: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_screen_fields_can_be_patched() {
        let code = |object, body: Value| parse_update(object, body).err().map(|e| e.code);
        assert_eq!(
            code(Object::CartCheckoutSession, json!({"State": "Inventory"})),
            None
        );
        assert_eq!(
            code(Object::CartCheckoutSession, json!({"state": "Inventory"})),
            None
        );
        assert_eq!(
            code(Object::CartCheckoutSession, json!({"IsProcessing": false})).as_deref(),
            Some("INVALID_FIELD")
        );
        assert_eq!(
            code(
                Object::WebCart,
                json!({"Status": "Active", "PaymentToken": "t"})
            )
            .as_deref(),
            Some("INVALID_FIELD")
        );
        assert_eq!(
            code(Object::WebCart, json!({"PaymentToken": null})).as_deref(),
            Some("INVALID_FIELD")
        );
        assert_eq!(
            code(Object::WebCart, json!({"PaymentToken": 5})).as_deref(),
            Some("JSON_PARSER_ERROR")
        );
        assert_eq!(
            code(Object::WebCart, json!({"DeliverTo": {"City": "Denver"}})).as_deref(),
            Some("JSON_PARSER_ERROR")
        );
        assert_eq!(
            code(Object::Order, json!({"Status": "Draft"})).as_deref(),
            Some("INVALID_FIELD")
        );
        assert_eq!(
            code(Object::WebCart, json!([])).as_deref(),
            Some("JSON_PARSER_ERROR")
        );
        assert!(matches!(
            parse_update(Object::WebCart, json!({"attributes": {"type": "WebCart"}})),
            Ok(Update::Nothing)
        ));
    }

    #[test]
    fn object_names_match_case_insensitively() {
        assert_eq!(Object::parse("webcart"), Some(Object::WebCart));
        assert_eq!(
            Object::parse("CartCheckoutSession"),
            Some(Object::CartCheckoutSession)
        );
        assert_eq!(Object::parse("Account"), None);
    }
}
