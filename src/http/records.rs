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
use crate::engine::Engine;
use crate::error::{CheckoutError, StoreError};
use crate::machine::{CheckoutDetails, Command};
use crate::model::{Address, KeyPrefix, SfId, User};

/// The objects the facade serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Object {
    CartCheckoutSession,
    BackgroundOperation,
    WebCart,
    CartItem,
    CartValidationOutput,
    Order,
}

impl Object {
    const ALL: [Object; 6] = [
        Object::CartCheckoutSession,
        Object::BackgroundOperation,
        Object::WebCart,
        Object::CartItem,
        Object::CartValidationOutput,
        Object::Order,
    ];

    fn kind(self) -> KeyPrefix {
        match self {
            Object::CartCheckoutSession => KeyPrefix::CartCheckoutSession,
            Object::BackgroundOperation => KeyPrefix::BackgroundOperation,
            Object::WebCart => KeyPrefix::WebCart,
            Object::CartItem => KeyPrefix::CartItem,
            Object::CartValidationOutput => KeyPrefix::CartValidationOutput,
            Object::Order => KeyPrefix::Order,
        }
    }

    fn name(self) -> &'static str {
        self.kind().object_name()
    }

    /// Object names in URLs are case-insensitive, as Salesforce's are.
    fn parse(name: &str) -> Option<Object> {
        Object::ALL
            .into_iter()
            .find(|o| o.name().eq_ignore_ascii_case(name))
    }

    /// The fields a PATCH may set.
    fn updatable(self) -> &'static [&'static str] {
        match self {
            Object::CartCheckoutSession => &["State"],
            Object::WebCart => &["DeliverTo", "DeliveryMethodId", "PaymentToken"],
            _ => &[],
        }
    }
}

/// A record in Salesforce's shape: its fields plus `attributes: {type, url}`.
fn record_json(object: Object, version: &str, id: &SfId, record: &impl Serialize) -> Value {
    with_attributes(object, version, id, to_value(record))
}

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
    let store = engine.store();
    let found =
        |record: Value, cart: SfId| Some((with_attributes(object, version, id, record), cart));
    Ok(match object {
        Object::CartCheckoutSession => store
            .session(id)?
            .and_then(|s| found(to_value(&s), s.web_cart_id)),
        Object::BackgroundOperation => store
            .operation(id)?
            .and_then(|o| found(to_value(&o), o.cart_id)),
        // The payment token is write-only: readers get `PaymentTokenSet` instead.
        Object::WebCart => store.cart(id)?.and_then(|c| found(c.shown(), c.id)),
        Object::Order => store
            .order(id)?
            .and_then(|o| found(to_value(&o), o.cart_id)),
        Object::CartItem => store
            .cart_item(id)?
            .and_then(|l| found(to_value(&l), l.cart_id)),
        Object::CartValidationOutput => store
            .validation_output(id)?
            .and_then(|o| found(to_value(&o), o.cart_id)),
    })
}

fn to_value(record: &impl Serialize) -> Value {
    serde_json::to_value(record).unwrap_or(Value::Null)
}

/// `GET .../sobjects/{Object}/{Id}`.
pub(super) async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Response, SfError> {
    let user = authenticate(&state, &headers).await?;
    let Path(segments) = path.map_err(|_| SfError::not_found())?;
    let (version, object, id) = target(segments)?;
    let engine = state.0.engine.clone();
    let record = blocking(move || -> Result<Option<Value>, StoreError> {
        match locate(&engine, object, &version, &id)? {
            Some((record, cart)) if can_read(&engine, &user, &cart)? => Ok(Some(record)),
            _ => Ok(None),
        }
    })
    .await?
    .map_err(|e| SfError::internal(&e))?
    .ok_or_else(SfError::not_found)?;
    Ok(json_response(StatusCode::OK, &record))
}

/// `GET .../sobjects/WebCart/{Id}/CartItems` and `.../CartValidationOutputs`: a query
/// result, `{"totalSize", "done": true, "records"}`.
pub(super) async fn related(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<(String, String, String, String)>, PathRejection>,
) -> Result<Response, SfError> {
    let user = authenticate(&state, &headers).await?;
    let Path((version, object, id, relationship)) = path.map_err(|_| SfError::not_found())?;
    let (version, object, cart_id) = target((version, object, id))?;
    let child = match (object, relationship.to_ascii_lowercase().as_str()) {
        (Object::WebCart, "cartitems") => Object::CartItem,
        (Object::WebCart, "cartvalidationoutputs") => Object::CartValidationOutput,
        _ => return Err(SfError::not_found()),
    };
    let engine = state.0.engine.clone();
    let records = blocking(move || -> Result<Option<Vec<Value>>, StoreError> {
        if !can_read(&engine, &user, &cart_id)? {
            return Ok(None);
        }
        let store = engine.store();
        Ok(Some(match child {
            Object::CartItem => store
                .cart_items(&cart_id)?
                .iter()
                .map(|item| record_json(child, &version, &item.id, item))
                .collect(),
            _ => store
                .validation_outputs(&cart_id)?
                .iter()
                .map(|output| record_json(child, &version, &output.id, output))
                .collect(),
        }))
    })
    .await?
    .map_err(|e| SfError::internal(&e))?
    .ok_or_else(SfError::not_found)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"totalSize": records.len(), "done": true, "records": records}),
    ))
}

/// What a PATCH asks for, once its fields are checked.
enum Update {
    /// A screen step: the session's new State.
    Advance(String),
    /// A screen's input onto the cart.
    Details(CheckoutDetails),
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
fn parse_update(object: Object, body: Value) -> Result<Update, SfError> {
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
