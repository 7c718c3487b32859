//! What a Salesforce client asks before and besides a query: the objects served
//! (`GET .../sobjects`), an object's fields and related lists (`GET
//! .../sobjects/{Object}/describe`), a record's chosen fields (`?fields=a,b` on a record read)
//! and several records at once (`GET .../composite/sobjects/{Object}?ids=...&fields=...`).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::error::{SfError, json_response};
use super::query::query_param;
use super::records::{self, Object};
use super::schema::{self, CHILD_RELATIONSHIPS, Field, FieldType};
use super::{AppState, api_version, authenticate, blocking};
use crate::error::StoreError;
use crate::model::{SfId, User};

/// The most records one composite retrieve answers.
pub(crate) const MAX_RETRIEVE_IDS: usize = 2_000;

/// `GET .../sobjects`: every object served, with its key prefix and URLs.
pub(super) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, SfError> {
    authenticate(&state, &headers).await?;
    let Path(version) = path.map_err(|_| SfError::not_found())?;
    let version = api_version(&version)?.number();
    let objects: Vec<Value> = Object::ALL
        .into_iter()
        .map(|o| {
            let mut summary = summary(o);
            summary["urls"] = urls(o, &version);
            summary
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": objects}),
    ))
}

/// `GET .../sobjects/{Object}/describe`: the object's fields, with their types, and its
/// related lists.
pub(super) async fn describe(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, SfError> {
    authenticate(&state, &headers).await?;
    let Path((version, object)) = path.map_err(|_| SfError::not_found())?;
    let version = api_version(&version)?.number();
    let object = Object::parse(&object).ok_or_else(SfError::not_found)?;
    let mut description = summary(object);
    description["fields"] = schema::fields(object)
        .iter()
        .map(|f| field_json(object, f))
        .collect();
    description["childRelationships"] = CHILD_RELATIONSHIPS
        .iter()
        .filter(|r| r.parent == object)
        .map(|r| {
            json!({"childSObject": r.child.name(), "field": r.field, "relationshipName": r.name})
        })
        .collect();
    description["urls"] = urls(object, &version);
    Ok(json_response(StatusCode::OK, &description))
}

fn summary(object: Object) -> Value {
    json!({
        "name": object.name(),
        "label": label(object.name()),
        "keyPrefix": object.kind().prefix(),
        "queryable": true,
        "retrieveable": true,
        "updateable": !object.updatable().is_empty(),
        "createable": false,
        "deletable": false,
    })
}

fn urls(object: Object, version: &str) -> Value {
    let base = format!("/services/data/v{version}/sobjects/{}", object.name());
    json!({
        "sobject": base,
        "describe": format!("{base}/describe"),
        "rowTemplate": format!("{base}/{{ID}}"),
    })
}

/// A name's words: `CartCheckoutSession` is labelled `Cart Checkout Session`.
fn label(name: &str) -> String {
    let mut label = String::new();
    for (i, c) in name.char_indices() {
        if i > 0 && c.is_ascii_uppercase() {
            label.push(' ');
        }
        label.push(c);
    }
    label
}

fn field_json(object: Object, field: &Field) -> Value {
    let (kind, length) = match field.kind {
        FieldType::Id => ("id", 18),
        FieldType::Reference(_) => ("reference", 18),
        FieldType::Text => ("string", 255),
        FieldType::Picklist => ("picklist", 255),
        FieldType::Boolean => ("boolean", 0),
        FieldType::Number => ("double", 0),
        FieldType::Currency => ("currency", 0),
        FieldType::Int => ("int", 0),
        FieldType::DateTime => ("datetime", 0),
        FieldType::Compound => ("anyType", 0),
    };
    let reference = match field.kind {
        FieldType::Reference(Some(parent)) => Some(parent),
        _ => None,
    };
    let comparable = field.kind != FieldType::Compound;
    json!({
        "name": field.name,
        "label": label(field.name),
        "type": kind,
        "length": length,
        "nillable": field.nillable,
        "updateable": object.updatable().contains(&field.name),
        "filterable": comparable,
        "sortable": comparable,
        "referenceTo": reference.map(|o| vec![o.name()]).unwrap_or_default(),
        "relationshipName": reference.and(field.name.strip_suffix("Id")),
    })
}

/// The fields `?fields=a,b` asks of `object`, by their names in records; `None` when the
/// query string has no `fields`. An unknown field is 400 `INVALID_FIELD`.
pub(super) fn requested_fields(
    object: Object,
    query_string: &str,
) -> Result<Option<Vec<&'static str>>, SfError> {
    let Some(list) = query_param(query_string, "fields") else {
        return Ok(None);
    };
    let list = list.map_err(|_| SfError::parser("fields is not UTF-8 text"))?;
    let mut names = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let field = schema::field(object, name).ok_or_else(|| {
            SfError::invalid_field(
                name,
                format!(
                    "No such column '{name}' on sobject of type {}",
                    object.name()
                ),
            )
        })?;
        if !names.contains(&field.name) {
            names.push(field.name);
        }
    }
    Ok(Some(names))
}

/// `record` with only `fields` (and its attributes).
pub(super) fn only(record: Value, fields: &[&str]) -> Value {
    let Value::Object(all) = record else {
        return record;
    };
    let mut kept = Map::new();
    for (name, value) in all {
        if name == "attributes" || fields.contains(&name.as_str()) {
            kept.insert(name, value);
        }
    }
    for field in fields {
        kept.entry(*field).or_insert(Value::Null);
    }
    Value::Object(kept)
}

/// `GET .../composite/sobjects/{Object}?ids=a,b&fields=x,y`: the records, in the order of
/// their Ids, each with the fields asked for; `null` in the place of an Id that names no
/// record the caller can read.
pub(super) async fn retrieve(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, SfError> {
    let user = authenticate(&state, &headers).await?;
    let Path((version, object)) = path.map_err(|_| SfError::not_found())?;
    let version = api_version(&version)?.number();
    let object = Object::parse(&object).ok_or_else(SfError::not_found)?;
    let query_string = uri.query().unwrap_or_default();
    let fields = requested_fields(object, query_string)?
        .filter(|f| !f.is_empty())
        .ok_or_else(|| missing("fields"))?;
    let ids = retrieve_ids(query_string)?;
    let engine = state.0.engine.clone();
    let records = blocking(move || -> Result<Vec<Value>, StoreError> {
        ids.iter()
            .map(|id| {
                let record = readable(&engine, &user, object, &version, id.as_ref())?;
                Ok(record.map_or(Value::Null, |r| only(r, &fields)))
            })
            .collect()
    })
    .await?
    .map_err(|e| SfError::internal(&e))?;
    Ok(json_response(StatusCode::OK, &Value::Array(records)))
}

/// The `ids` of a composite retrieve, each parsed (`None` for one that is no Id).
fn retrieve_ids(query_string: &str) -> Result<Vec<Option<SfId>>, SfError> {
    let list = query_param(query_string, "ids")
        .ok_or_else(|| missing("ids"))?
        .map_err(|_| SfError::parser("ids is not UTF-8 text"))?;
    let ids: Vec<Option<SfId>> = list
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(|id| SfId::parse(id).ok())
        .collect();
    if ids.is_empty() {
        return Err(missing("ids"));
    }
    if ids.len() > MAX_RETRIEVE_IDS {
        return Err(SfError::new(
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
            format!("A retrieve may name at most {MAX_RETRIEVE_IDS} Ids"),
        ));
    }
    Ok(ids)
}

/// The record `id` of `object` when `user` may read it.
fn readable(
    engine: &crate::engine::Engine,
    user: &User,
    object: Object,
    version: &str,
    id: Option<&SfId>,
) -> Result<Option<Value>, StoreError> {
    let Some(id) = id.filter(|id| id.kind() == Some(object.kind())) else {
        return Ok(None);
    };
    records::readable(engine, user, object, version, id)
}

fn missing(parameter: &str) -> SfError {
    SfError::new(
        StatusCode::BAD_REQUEST,
        "MISSING_ARGUMENT",
        format!("{parameter} is required: ?ids=<Id>,<Id>&fields=<field>,<field>"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_names_words() {
        assert_eq!(label("CartCheckoutSession"), "Cart Checkout Session");
        assert_eq!(label("Id"), "Id");
        assert_eq!(label("WebCartId"), "Web Cart Id");
    }

    #[test]
    fn fields_are_named_checked_and_kept_in_their_record_names() {
        let fields = |q: &str| requested_fields(Object::WebCart, q);
        assert_eq!(fields("").unwrap(), None);
        assert_eq!(
            fields("fields=status,Id,STATUS").unwrap(),
            Some(vec!["Status", "Id"])
        );
        let error = fields("fields=Id,Nope").unwrap_err();
        assert_eq!(
            (error.status, error.code.as_str()),
            (StatusCode::BAD_REQUEST, "INVALID_FIELD")
        );
        let record = json!({"attributes": {"type": "WebCart"}, "Id": "x", "Status": "Active", "OwnerId": "y"});
        assert_eq!(
            only(record, &["Status", "GrandTotalAmount"]),
            json!({"attributes": {"type": "WebCart"}, "Status": "Active", "GrandTotalAmount": null})
        );
    }

    #[test]
    fn a_retrieve_names_its_ids_within_the_limit() {
        assert_eq!(retrieve_ids("").unwrap_err().code, "MISSING_ARGUMENT");
        assert_eq!(retrieve_ids("ids=").unwrap_err().code, "MISSING_ARGUMENT");
        let ids = retrieve_ids("ids=0a60000000000GE,nope").unwrap();
        assert_eq!(ids.len(), 2);
        assert!(ids[0].is_some() && ids[1].is_none());
        let many = format!(
            "ids={}",
            vec!["0a60000000000GE"; MAX_RETRIEVE_IDS + 1].join(",")
        );
        assert_eq!(retrieve_ids(&many).unwrap_err().code, "LIMIT_EXCEEDED");
    }
}
