//! `/actions/standard`: list, describe and invoke the checkout actions; `/actions/custom/apex`:
//! the same for the template's custom async steps.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use super::error::{SfError, json_response};
use super::{AppState, MAX_INPUTS, api_version, authenticate, blocking, parse_json, read_body};
use crate::api::{ActionResult, CUSTOM_INPUTS, input_names};
use crate::engine::Engine;
use crate::machine::{Action, CustomAction, PAYMENT_OPERATION, Step, Template};

/// An action the facade answers: the eleven core actions and the payment step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Core(Action),
    AuthorizePayment,
}

impl Known {
    fn all() -> impl Iterator<Item = Known> {
        Action::ALL
            .into_iter()
            .map(Known::Core)
            .chain([Known::AuthorizePayment])
    }

    fn lookup(name: &str) -> Option<Known> {
        if name == PAYMENT_OPERATION {
            return Some(Known::AuthorizePayment);
        }
        Action::from_api_name(name).map(Known::Core)
    }

    fn name(self) -> &'static str {
        match self {
            Known::Core(action) => action.api_name(),
            Known::AuthorizePayment => PAYMENT_OPERATION,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Known::Core(action) => match action {
                Action::CheckoutSession => "Checkout Session",
                Action::UpdateCheckoutSessionState => "Update Checkout Session",
                Action::CheckCartInventory => "Check Cart Inventory",
                Action::PriceCart => "Price Cart",
                Action::CalcCartPromotions => "Calculate Cart Promotions",
                Action::CalcCartShipment => "Calculate Cart Shipment Costs",
                Action::CalcCartTaxes => "Calculate Cart Taxes",
                Action::CartToOrder => "Cart to Order",
                Action::ActivateOrder => "Activate Order",
                Action::CancelCartAsyncOperation => "Cancel Cart Async Operation",
                Action::SetCheckoutDeliveryMethod => "Set Checkout Delivery Method",
            },
            Known::AuthorizePayment => "Authorize Payment",
        }
    }

    /// Salesforce types standard actions by their name in capitals (`chatterPost` is
    /// `CHATTERPOST`).
    fn kind(self) -> String {
        self.name().to_ascii_uppercase()
    }

    fn inputs(self) -> &'static [&'static str] {
        match self {
            Known::Core(action) => input_names(action),
            Known::AuthorizePayment => &["cartId"],
        }
    }

    fn output(self) -> Option<&'static str> {
        match self {
            Known::Core(Action::CheckoutSession | Action::UpdateCheckoutSessionState) => {
                Some("requestId")
            }
            Known::Core(Action::CancelCartAsyncOperation | Action::SetCheckoutDeliveryMethod) => {
                None
            }
            _ => Some("backgroundOperationId"),
        }
    }
}

/// An input's type, whether it is required, and what it is.
fn input_description(name: &str) -> (&'static str, bool, &'static str) {
    match name {
        "cartId" => ("ID", true, "The WebCart's Id."),
        "checkoutSessionId" => ("ID", true, "The CartCheckoutSession's Id."),
        "initialState" => (
            "STRING",
            false,
            "The State to start in; the template's first step when absent.",
        ),
        "nextState" => (
            "STRING",
            true,
            "The State the async step that follows leads to.",
        ),
        "expCurrentState" => (
            "STRING",
            true,
            "The State the session must be in (compare-and-set).",
        ),
        "runAsync" => (
            "BOOLEAN",
            false,
            "False runs the operation before the call answers; true by default.",
        ),
        "orderStatus" => ("STRING", true, "Must be Activated."),
        "deliveryMethodId" => (
            "STRING",
            true,
            "One of the delivery methods offered for the cart (a DeliveryMethodId of its delivery options).",
        ),
        "orderLifeCycleType" => (
            "STRING",
            false,
            "UNMANAGED (an external system processes the order) or MANAGED (Order Management does); UNMANAGED when absent.",
        ),
        _ => ("STRING", false, ""),
    }
}

fn output_description(name: &str) -> &'static str {
    match name {
        "requestId" => "The CartCheckoutSession's Id.",
        _ => {
            "The BackgroundOperation that runs the step; poll the session until IsProcessing is false."
        }
    }
}

fn action_url(version: &str, name: &str) -> String {
    format!("/services/data/v{version}/actions/standard/{name}")
}

/// `GET .../actions/standard`.
pub(super) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, SfError> {
    authenticate(&state, &headers).await?;
    let Path(version) = path.map_err(|_| SfError::not_found())?;
    let version = api_version(&version)?.number();
    let actions: Vec<Value> = Known::all()
        .map(|action| {
            json!({
                "label": action.label(),
                "name": action.name(),
                "type": action.kind(),
                "url": action_url(&version, action.name()),
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"actions": actions})))
}

/// `GET .../actions/standard/{name}`.
pub(super) async fn describe(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, SfError> {
    authenticate(&state, &headers).await?;
    let Path((version, name)) = path.map_err(|_| SfError::not_found())?;
    api_version(&version)?;
    let action = Known::lookup(&name).ok_or_else(|| unknown_action(&name))?;
    let description = json!({
        "name": action.name(),
        "label": action.label(),
        "type": action.kind(),
        "standard": true,
        "inputs": describe_inputs(action.inputs()),
        "outputs": describe_outputs(action.output()),
    });
    Ok(json_response(StatusCode::OK, &description))
}

/// The describe entries of an action's inputs.
fn describe_inputs(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|&input| {
            let (kind, required, description) = input_description(input);
            json!({
                "name": input,
                "label": input,
                "type": kind,
                "required": required,
                "description": description,
                "maxOccurs": 1,
            })
        })
        .collect()
}

/// The describe entries of an action's output, if it has one.
fn describe_outputs(output: Option<&str>) -> Vec<Value> {
    output
        .map(|output| {
            json!({
                "name": output,
                "label": output,
                "type": "ID",
                "description": output_description(output),
                "maxOccurs": 1,
            })
        })
        .into_iter()
        .collect()
}

fn unknown_action(name: &str) -> SfError {
    SfError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("No standard action named {name:?}"),
    )
}

/// `POST .../actions/standard/{name}` with `{"inputs": [...]}`: one result element per input,
/// in order. The status is 200 when any input succeeded; when every input failed, the
/// status of the first error.
pub(super) async fn invoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Response, SfError> {
    let user = authenticate(&state, &headers).await?;
    let Path((version, name)) = path.map_err(|_| SfError::not_found())?;
    api_version(&version)?;
    let action = Known::lookup(&name).ok_or_else(|| unknown_action(&name))?;
    let body = read_body(&headers, body).await?;
    let route = format!("POST {}", uri.path());
    let run = run_inputs(&state, &user, action.name(), &body, Engine::invoke);
    super::idempotency::keyed(&state, &user, &headers, route, &body, run).await
}

/// How one input of a call is run: [`Engine::invoke`] or [`Engine::invoke_custom`].
type Invoker = fn(&Engine, &str, &Value, &str) -> ActionResult;

/// Runs each input of an action call as `user`: one result element per input.
async fn run_inputs(
    state: &AppState,
    user: &crate::model::User,
    name: &str,
    body: &[u8],
    invoke: Invoker,
) -> Result<Response, SfError> {
    let inputs = parse_inputs(body)?;
    let engine = state.0.engine.clone();
    let actor = user.id.to_string();
    let name = name.to_owned();
    let results: Vec<ActionResult> = blocking(move || {
        inputs
            .iter()
            .map(|input| invoke(&engine, &name, input, &actor))
            .collect()
    })
    .await?;
    let status = status_of(&results);
    let body = serde_json::to_value(&results).map_err(|e| SfError::internal(&e))?;
    Ok(json_response(status, &body))
}

/// The custom step `name` of `template` names, if it has one.
fn custom_step<'t>(template: &'t Template, name: &str) -> Option<(CustomAction, &'t Step)> {
    let action = CustomAction::new(name).ok()?;
    template.custom_step(action).map(|step| (action, step))
}

fn unknown_custom_action(name: &str) -> SfError {
    SfError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("No Apex action named {name:?}"),
    )
}

fn custom_action_url(version: &str, name: &str) -> String {
    format!("/services/data/v{version}/actions/custom/apex/{name}")
}

/// Salesforce's type of an invocable Apex action.
const APEX: &str = "APEX";

/// `GET .../actions/custom/apex`: the template's custom actions, each labelled with its
/// step's State.
pub(super) async fn list_custom(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, SfError> {
    authenticate(&state, &headers).await?;
    let Path(version) = path.map_err(|_| SfError::not_found())?;
    let version = api_version(&version)?.number();
    let template = state.0.engine.table().template();
    let actions: Vec<Value> = template
        .custom_steps()
        .map(|(action, step)| {
            json!({
                "label": step.state.as_str(),
                "name": action.as_str(),
                "type": APEX,
                "url": custom_action_url(&version, action.as_str()),
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"actions": actions})))
}

/// `GET .../actions/custom/apex/{name}`: a custom action's inputs and output.
pub(super) async fn describe_custom(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, SfError> {
    authenticate(&state, &headers).await?;
    let Path((version, name)) = path.map_err(|_| SfError::not_found())?;
    api_version(&version)?;
    let template = state.0.engine.table().template();
    let (action, step) =
        custom_step(template, &name).ok_or_else(|| unknown_custom_action(&name))?;
    let description = json!({
        "name": action.as_str(),
        "label": step.state.as_str(),
        "type": APEX,
        "standard": false,
        "inputs": describe_inputs(CUSTOM_INPUTS),
        "outputs": describe_outputs(Some("backgroundOperationId")),
    });
    Ok(json_response(StatusCode::OK, &description))
}

/// `POST .../actions/custom/apex/{name}` with `{"inputs": [...]}`: as a standard action's
/// call (one result element per input, the same status rule and `Idempotency-Key`).
pub(super) async fn invoke_custom(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Response, SfError> {
    let user = authenticate(&state, &headers).await?;
    let Path((version, name)) = path.map_err(|_| SfError::not_found())?;
    api_version(&version)?;
    let template = state.0.engine.table().template();
    let (action, _) = custom_step(template, &name).ok_or_else(|| unknown_custom_action(&name))?;
    let body = read_body(&headers, body).await?;
    let route = format!("POST {}", uri.path());
    let run = run_inputs(&state, &user, action.as_str(), &body, Engine::invoke_custom);
    super::idempotency::keyed(&state, &user, &headers, route, &body, run).await
}

/// `{"inputs": [ ... ]}`, nothing else; at least one input and at most [`MAX_INPUTS`].
pub(super) fn parse_inputs(body: &[u8]) -> Result<Vec<Value>, SfError> {
    let Value::Object(mut fields) = parse_json(body)? else {
        return Err(SfError::parser(
            "The body must be a JSON object: {\"inputs\": [...]}",
        ));
    };
    if let Some(unknown) = fields.keys().find(|k| k.as_str() != "inputs") {
        return Err(SfError::parser(format!(
            "Unrecognized field {unknown:?}: the body takes only \"inputs\""
        )));
    }
    let inputs = match fields.remove("inputs") {
        None => {
            return Err(SfError::parser(
                "Missing field \"inputs\": the body must be {\"inputs\": [...]}",
            ));
        }
        Some(Value::Array(inputs)) => inputs,
        Some(_) => {
            return Err(SfError::parser(
                "\"inputs\" must be an array of input objects",
            ));
        }
    };
    if inputs.is_empty() {
        return Err(SfError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_INPUT",
            "\"inputs\" is empty: give at least one input",
        ));
    }
    if inputs.len() > MAX_INPUTS {
        return Err(SfError::new(
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
            format!(
                "{} inputs in one call; at most {MAX_INPUTS} are accepted",
                inputs.len()
            ),
        ));
    }
    Ok(inputs)
}

/// 200 when any element succeeded; otherwise the first element's status.
fn status_of(results: &[ActionResult]) -> StatusCode {
    if results.iter().any(|r| r.is_success) {
        return StatusCode::OK;
    }
    results
        .first()
        .and_then(|r| StatusCode::from_u16(r.http_status).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(status: u16) -> ActionResult {
        ActionResult::error("priceCart", "BAD_REQUEST", "no", status)
    }

    #[test]
    fn any_success_is_200_else_the_first_error_decides() {
        let success = ActionResult::success("priceCart", &crate::machine::Output::Nothing);
        assert_eq!(status_of(&[failure(500), success.clone()]), StatusCode::OK);
        assert_eq!(
            status_of(&[failure(403), failure(500)]),
            StatusCode::FORBIDDEN
        );
        assert_eq!(status_of(&[failure(500), failure(400)]).as_u16(), 500);
    }

    #[test]
    fn the_body_takes_a_non_empty_inputs_array_and_nothing_else() {
        let code = |body: &str| parse_inputs(body.as_bytes()).unwrap_err().code;
        assert_eq!(code("{"), "JSON_PARSER_ERROR");
        assert_eq!(code("[]"), "JSON_PARSER_ERROR");
        assert_eq!(code("{}"), "JSON_PARSER_ERROR");
        assert_eq!(code(r#"{"inputs": {}}"#), "JSON_PARSER_ERROR");
        assert_eq!(code(r#"{"inputs": [{}], "extra": 1}"#), "JSON_PARSER_ERROR");
        assert_eq!(code(r#"{"inputs": []}"#), "INVALID_INPUT");
        let many = format!(
            r#"{{"inputs": [{}]}}"#,
            vec!["{}"; MAX_INPUTS + 1].join(",")
        );
        assert_eq!(code(&many), "LIMIT_EXCEEDED");
        assert_eq!(
            parse_inputs(br#"{"inputs": [{"cartId": "x"}, 7]}"#)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn every_action_describes_the_inputs_the_engine_takes() {
        assert_eq!(Known::all().count(), 12);
        for action in Known::all() {
            assert_eq!(Known::lookup(action.name()), Some(action));
            for input in action.inputs() {
                assert!(!input_description(input).2.is_empty(), "{input}");
            }
        }
        assert_eq!(Known::lookup("noSuchAction"), None);
    }
}
