//! The facade's one route table: each route's path, its handlers and the description of each
//! of its methods. The router is built from it ([`all`]), and so is the OpenAPI 3.1 document
//! served at `/services/data/openapi.json` ([`document`]), so the two cannot disagree.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{MethodRouter, get};
use serde_json::{Map, Value, json};

use super::{AppState, LATEST_VERSION, MAX_INPUTS, MIN_VERSION, actions, describe, inspector};
use super::{error::json_response, list_versions, ops, query, records};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/services/data/openapi.json";

/// One path of the facade.
pub(super) struct Route {
    /// The path, in axum's syntax, which is also OpenAPI's (`/a/{b}`).
    pub(super) path: &'static str,
    /// What answers it.
    pub(super) handlers: MethodRouter<AppState>,
    /// Each method it answers.
    pub(super) operations: Vec<Operation>,
}

impl Route {
    pub(super) fn new(
        path: &'static str,
        handlers: MethodRouter<AppState>,
        operations: Vec<Operation>,
    ) -> Route {
        Route {
            path,
            handlers,
            operations,
        }
    }
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Anyone: no token.
    Public,
    /// A bearer token (`INVALID_SESSION_ID` without one).
    Token,
    /// A bearer token whose user may open the inspector.
    Inspector,
}

/// One method of a route, as the document describes it.
pub(super) struct Operation {
    method: &'static str,
    id: &'static str,
    summary: &'static str,
    tag: &'static str,
    access: Access,
    query: &'static [(&'static str, &'static str)],
    body: Option<&'static str>,
    answer: (StatusCode, &'static str, Option<&'static str>),
}

impl Operation {
    /// A `method` operation named `id`, tagged `tag`, needing a token, answering 200 with
    /// `schema` (a component schema's name).
    pub(super) fn new(
        method: &'static str,
        id: &'static str,
        tag: &'static str,
        summary: &'static str,
    ) -> Operation {
        Operation {
            method,
            id,
            summary,
            tag,
            access: Access::Token,
            query: &[],
            body: None,
            answer: (StatusCode::OK, "application/json", None),
        }
    }

    /// Who may call it.
    pub(super) fn access(mut self, access: Access) -> Operation {
        self.access = access;
        self
    }

    /// Its query parameters: name and meaning.
    pub(super) fn query(mut self, query: &'static [(&'static str, &'static str)]) -> Operation {
        self.query = query;
        self
    }

    /// Its JSON body, by component schema.
    pub(super) fn body(mut self, schema: &'static str) -> Operation {
        self.body = Some(schema);
        self
    }

    /// Its answer when it succeeds: status, media type and component schema (none: no body
    /// or no schema).
    pub(super) fn answers(
        mut self,
        status: StatusCode,
        media: &'static str,
        schema: Option<&'static str>,
    ) -> Operation {
        self.answer = (status, media, schema);
        self
    }

    /// Answers 200 JSON of `schema`.
    pub(super) fn json(self, schema: &'static str) -> Operation {
        self.answers(StatusCode::OK, "application/json", Some(schema))
    }
}

fn get_op(id: &'static str, tag: &'static str, summary: &'static str) -> Operation {
    Operation::new("get", id, tag, summary)
}

/// A path under `/services/data/{version}`.
macro_rules! v {
    ($rest:literal) => {
        concat!("/services/data/{version}", $rest)
    };
}

/// Every route of the facade.
pub(super) fn all() -> Vec<Route> {
    let mut routes = vec![
        Route::new(
            "/services/data",
            get(list_versions),
            vec![
                get_op("listVersionsNoSlash", "Versions", "The API versions")
                    .access(Access::Public)
                    .json("Versions"),
            ],
        ),
        Route::new(
            "/services/data/",
            get(list_versions),
            vec![
                get_op("listVersions", "Versions", "The API versions")
                    .access(Access::Public)
                    .json("Versions"),
            ],
        ),
        Route::new(
            OPENAPI_PATH,
            get(openapi),
            vec![
                get_op("openApi", "Versions", "This document")
                    .access(Access::Public)
                    .json("OpenApi"),
            ],
        ),
    ];
    routes.extend(action_routes());
    routes.extend(record_routes());
    routes.extend(operator_routes());
    routes.extend(inspector::routes());
    routes
}

fn action_routes() -> Vec<Route> {
    let invoke = |id, summary| {
        Operation::new("post", id, "Actions", summary)
            .body("ActionInputs")
            .json("ActionResults")
    };
    vec![
        Route::new(
            v!("/actions/standard"),
            get(actions::list),
            vec![
                get_op("listStandardActions", "Actions", "The standard actions").json("ActionList"),
            ],
        ),
        Route::new(
            v!("/actions/standard/{name}"),
            get(actions::describe).post(actions::invoke),
            vec![
                get_op(
                    "describeStandardAction",
                    "Actions",
                    "One action's inputs and outputs",
                )
                .json("ActionDescription"),
                invoke(
                    "invokeStandardAction",
                    "Invoke a standard action: one result per input, in order",
                ),
            ],
        ),
        Route::new(
            v!("/actions/custom/apex"),
            get(actions::list_custom),
            vec![
                get_op(
                    "listCustomActions",
                    "Actions",
                    "The template's custom actions",
                )
                .json("ActionList"),
            ],
        ),
        Route::new(
            v!("/actions/custom/apex/{name}"),
            get(actions::describe_custom).post(actions::invoke_custom),
            vec![
                get_op(
                    "describeCustomAction",
                    "Actions",
                    "One custom action's inputs and outputs",
                )
                .json("ActionDescription"),
                invoke(
                    "invokeCustomAction",
                    "Invoke a custom step's action: one result per input, in order",
                ),
            ],
        ),
    ]
}

const FIELDS: (&str, &str) = ("fields", "Only these fields, comma-separated");

fn record_routes() -> Vec<Route> {
    vec![
        Route::new(
            v!("/sobjects"),
            get(describe::list),
            vec![get_op("listObjects", "Describe", "The objects served").json("Object")],
        ),
        Route::new(
            v!("/sobjects/{object}/describe"),
            get(describe::describe),
            vec![get_op("describeObject", "Describe", "One object's fields").json("Object")],
        ),
        Route::new(
            v!("/sobjects/{object}/{id}"),
            get(records::read).patch(records::update),
            vec![
                get_op("readRecord", "Records", "A record the caller may read")
                    .query(&[FIELDS])
                    .json("Record"),
                Operation::new(
                    "patch",
                    "updateRecord",
                    "Records",
                    "A screen step (CartCheckoutSession State) or a screen's input (WebCart \
                     DeliverTo, DeliveryMethodId, PaymentToken)",
                )
                .body("RecordUpdate")
                .answers(StatusCode::NO_CONTENT, "application/json", None),
            ],
        ),
        Route::new(
            v!("/composite/sobjects/{object}"),
            get(describe::retrieve),
            vec![
                get_op(
                    "retrieveRecords",
                    "Records",
                    "Several records by Id, null where unreadable",
                )
                .query(&[("ids", "Record Ids, comma-separated"), FIELDS])
                .json("Records"),
            ],
        ),
        Route::new(
            v!("/sobjects/{object}/{id}/{relationship}"),
            get(records::related),
            vec![
                get_op("relatedRecords", "Records", "A record's related list").json("QueryResult"),
            ],
        ),
        Route::new(
            v!("/query"),
            get(query::run),
            vec![
                get_op("query", "Query", "A SOQL query's first batch")
                    .query(&[("q", "The SOQL query")])
                    .json("QueryResult"),
            ],
        ),
        Route::new(
            v!("/query/{locator}"),
            get(query::more),
            vec![get_op("queryMore", "Query", "A query's next batch").json("QueryResult")],
        ),
    ]
}

fn operator_routes() -> Vec<Route> {
    let public = |id, summary| get_op(id, "Operator", summary).access(Access::Public);
    vec![
        Route::new(
            "/healthz",
            get(ops::healthz),
            vec![
                public("health", "200 when the store answers a read, 503 otherwise").json("Status"),
            ],
        ),
        Route::new(
            "/readyz",
            get(ops::readyz),
            vec![public("ready", "200 while serving, 503 once stopping").json("Status")],
        ),
        Route::new(
            "/metrics",
            get(ops::scrape),
            vec![public("metrics", "Prometheus metrics").answers(
                StatusCode::OK,
                "text/plain",
                None,
            )],
        ),
    ]
}

async fn openapi() -> Response {
    json_response(StatusCode::OK, document())
}

/// The OpenAPI 3.1 document of every route the facade serves, built once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| build(&all()))
}

fn build(routes: &[Route]) -> Value {
    let mut paths = Map::new();
    for route in routes {
        let mut item = Map::new();
        for op in &route.operations {
            item.insert(op.method.into(), operation(route.path, op));
        }
        paths.insert(route.path.into(), Value::Object(item));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "cartflow",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "The Salesforce B2B Commerce checkout flow, behind Salesforce's REST shape",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
    })
}

/// The path parameters of `path`, in order.
fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            let (description, schema) = path_parameter(name);
            json!({"name": name, "in": "path", "required": true,
                   "description": description, "schema": schema})
        })
        .collect()
}

fn path_parameter(name: &str) -> (String, Value) {
    match name {
        "version" => (
            format!("The API version, v{MIN_VERSION}.0 to v{LATEST_VERSION}.0"),
            json!({"type": "string", "pattern": "^v[0-9]{2}\\.[0-9]$"}),
        ),
        "name" => ("The action's API name".into(), json!({"type": "string"})),
        "object" => (
            "The object's API name, e.g. WebCart".into(),
            json!({"type": "string"}),
        ),
        "id" => (
            "A record Id (15 or 18 characters)".into(),
            json!({"type": "string", "minLength": 15, "maxLength": 18}),
        ),
        "relationship" => (
            "The related list, e.g. CartItems".into(),
            json!({"type": "string"}),
        ),
        "locator" => (
            "The nextRecordsUrl's last segment".into(),
            json!({"type": "string"}),
        ),
        other => (format!("The {other}"), json!({"type": "string"})),
    }
}

fn operation(path: &str, op: &Operation) -> Value {
    let mut parameters = path_parameters(path);
    parameters.extend(op.query.iter().map(|(name, description)| {
        json!({"name": name, "in": "query", "required": false,
               "description": description, "schema": {"type": "string"}})
    }));
    let (status, media, schema) = op.answer;
    let mut success = json!({"description": status.canonical_reason().unwrap_or("Success")});
    if status != StatusCode::NO_CONTENT {
        let schema = schema.map_or_else(|| json!({"type": "string"}), schema_ref);
        success["content"] = json!({ media: {"schema": schema} });
    }
    let mut responses = Map::new();
    responses.insert(status.as_u16().to_string(), success);
    for (code, why) in errors(op.access) {
        responses.insert(
            code.into(),
            json!({"description": why, "content": {"application/json": {"schema": schema_ref("Errors")}}}),
        );
    }
    let mut value = json!({
        "operationId": op.id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": parameters,
        "responses": responses,
        "security": match op.access {
            Access::Public => json!([]),
            Access::Token | Access::Inspector => json!([{"bearer": []}]),
        },
    });
    if let Some(body) = op.body {
        value["requestBody"] = json!({"required": true,
            "content": {"application/json": {"schema": schema_ref(body)}}});
    }
    value
}

/// The error answers every operation with this access may give.
fn errors(access: Access) -> Vec<(&'static str, &'static str)> {
    let mut errors = vec![(
        "default",
        "An error: its errorCode and status are documented in docs/http.md",
    )];
    match access {
        Access::Public => {}
        Access::Token => errors.push(("401", "INVALID_SESSION_ID: no known bearer token")),
        Access::Inspector => {
            errors.push(("401", "INVALID_SESSION_ID: no known bearer token"));
            errors.push((
                "403",
                "INSUFFICIENT_ACCESS: the user may not open the inspector",
            ));
        }
    }
    errors
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn schemas() -> Value {
    let object = json!({"type": "object"});
    json!({
        "Errors": {
            "type": "array",
            "items": {"type": "object", "required": ["errorCode", "message"], "properties": {
                "errorCode": {"type": "string"},
                "message": {"type": "string"},
                "fields": {"type": "array", "items": {"type": "string"}},
            }},
        },
        "Versions": {"type": "array", "items": {"type": "object", "properties": {
            "label": {"type": "string"}, "url": {"type": "string"}, "version": {"type": "string"},
        }}},
        "OpenApi": object,
        "ActionList": {"type": "object", "properties": {"actions": {"type": "array", "items": {
            "type": "object", "properties": {
                "label": {"type": "string"}, "name": {"type": "string"},
                "type": {"type": "string"}, "url": {"type": "string"},
            }}}}},
        "ActionDescription": {"type": "object", "properties": {
            "name": {"type": "string"}, "label": {"type": "string"}, "type": {"type": "string"},
            "inputs": {"type": "array", "items": object}, "outputs": {"type": "array", "items": object},
        }},
        "ActionInputs": {"type": "object", "required": ["inputs"], "properties": {
            "inputs": {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS, "items": object},
        }},
        "ActionResults": {"type": "array", "items": {"type": "object", "properties": {
            "actionName": {"type": "string"},
            "isSuccess": {"type": "boolean"},
            "outputValues": {"type": ["object", "null"]},
            "errors": {"type": ["array", "null"], "items": {"type": "object", "properties": {
                "statusCode": {"type": "string"}, "message": {"type": "string"},
                "fields": {"type": "array", "items": {"type": "string"}},
            }}},
        }}},
        "Record": {"type": "object", "properties": {"attributes": {"type": "object", "properties": {
            "type": {"type": "string"}, "url": {"type": "string"},
        }}}},
        "Records": {"type": "array", "items": {"oneOf": [schema_ref("Record"), {"type": "null"}]}},
        "RecordUpdate": object,
        "Object": object,
        "QueryResult": {"type": "object", "required": ["totalSize", "done", "records"], "properties": {
            "totalSize": {"type": "integer"},
            "done": {"type": "boolean"},
            "records": {"type": "array", "items": schema_ref("Record")},
            "nextRecordsUrl": {"type": "string"},
        }},
        "Status": {"type": "object", "properties": {
            "status": {"type": "string"}, "reason": {"type": "string"},
        }},
        "InspectorView": object,
    })
}
