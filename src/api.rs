//! The Salesforce REST shape of an invocable action (`POST .../actions/standard/{name}`):
//! inputs in, one result element out.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::Engine;
use crate::error::CheckoutError;
use crate::machine::{Action, Command, CustomAction, Output, PAYMENT_OPERATION, ProviderAction};

/// The message of an action that failed inside cartflow (a store failure, an undeclared
/// move): the cause is logged, not answered.
pub const INTERNAL_ERROR_MESSAGE: &str =
    "An unexpected error occurred; the server's log has the details";

/// One error of a result element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionError {
    /// The errorCode, e.g. `ALREADY_IN_PROCESS`.
    #[serde(rename = "statusCode")]
    pub status_code: String,
    /// What went wrong.
    pub message: String,
    /// Input fields involved.
    pub fields: Vec<String>,
}

/// One result element, exactly as Salesforce answers an invocable action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionResult {
    /// The action's API name.
    pub action_name: String,
    /// `null` on success.
    pub errors: Option<Vec<ActionError>>,
    /// Whether the action succeeded.
    pub is_success: bool,
    /// The outputs on success (`null` when the action has none).
    pub output_values: Option<Map<String, Value>>,
    /// The HTTP status this element stands for (not part of the Salesforce element).
    #[serde(skip)]
    pub http_status: u16,
}

impl ActionResult {
    /// A success with these outputs.
    pub fn success(action_name: &str, output: &Output) -> ActionResult {
        let output_values = match output {
            Output::RequestId(id) => Some(single("requestId", id.to_string())),
            Output::BackgroundOperationId(id) => {
                Some(single("backgroundOperationId", id.to_string()))
            }
            Output::Nothing => None,
        };
        ActionResult {
            action_name: action_name.to_owned(),
            errors: None,
            is_success: true,
            output_values,
            http_status: 200,
        }
    }

    /// A failure carrying the error's code, message and status. A failure inside cartflow
    /// (the store failed, or the engine computed an undeclared move) answers
    /// [`INTERNAL_ERROR_MESSAGE`] instead: its cause goes to the log (`tracing::error`), never
    /// to the caller, since it may name files, hosts or the state of the database.
    pub fn failure(action_name: &str, error: &CheckoutError) -> ActionResult {
        let message = match error {
            CheckoutError::Store(_) | CheckoutError::Undeclared(_) => {
                tracing::error!(action = action_name, error = %error, "action failed inside cartflow");
                INTERNAL_ERROR_MESSAGE.to_owned()
            }
            _ => error.to_string(),
        };
        ActionResult::error(
            action_name,
            error.code().as_str(),
            &message,
            error.http_status(),
        )
    }

    /// A failure with an explicit code (for codes outside [`CheckoutError`], e.g. `NOT_FOUND`).
    pub fn error(action_name: &str, code: &str, message: &str, http_status: u16) -> ActionResult {
        ActionResult {
            action_name: action_name.to_owned(),
            errors: Some(vec![ActionError {
                status_code: code.to_owned(),
                message: message.to_owned(),
                fields: Vec::new(),
            }]),
            is_success: false,
            output_values: None,
            http_status,
        }
    }
}

fn single(key: &str, value: String) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert(key.to_owned(), Value::String(value));
    map
}

/// The inputs each action takes, as Salesforce documents them.
pub fn input_names(action: Action) -> &'static [&'static str] {
    match action {
        Action::CheckoutSession => &["cartId", "initialState"],
        Action::UpdateCheckoutSessionState => {
            &["checkoutSessionId", "nextState", "expCurrentState"]
        }
        Action::CartToOrder => &["cartId", "runAsync"],
        Action::ActivateOrder => &["cartId", "orderStatus", "orderLifeCycleType", "runAsync"],
        Action::SetCheckoutDeliveryMethod => &["cartId", "deliveryMethodId"],
        _ => &["cartId"],
    }
}

/// Turns one input object of an action call into a command. Unknown keys and non-object
/// inputs are `INVALID_INPUT`; a missing or non-text ID is kept as given so that the
/// documented invalid-ID error applies.
pub fn command_from_input(action: Action, input: &Value) -> Result<Command, CheckoutError> {
    let Value::Object(fields) = input else {
        return Err(CheckoutError::InvalidInput(format!(
            "each input of {action} must be a JSON object"
        )));
    };
    let allowed = input_names(action);
    if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(CheckoutError::InvalidInput(format!(
            "{action} has no input {unknown:?}; its inputs are {}",
            allowed.join(", ")
        )));
    }
    let text = |key: &str| -> Option<String> {
        fields.get(key).and_then(|v| match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        })
    };
    let cart_id = || text("cartId").unwrap_or_default();
    let run_async = || match fields.get("runAsync") {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(CheckoutError::InvalidInput(format!(
            "runAsync must be true or false, not {other}"
        ))),
    };
    Ok(match action {
        Action::CheckoutSession => Command::StartSession {
            cart_id: cart_id(),
            initial_state: text("initialState"),
        },
        Action::UpdateCheckoutSessionState => Command::UpdateSession {
            session_id: text("checkoutSessionId").unwrap_or_default(),
            next_state: text("nextState").unwrap_or_default(),
            exp_current_state: text("expCurrentState"),
        },
        Action::CancelCartAsyncOperation => Command::Cancel { cart_id: cart_id() },
        Action::SetCheckoutDeliveryMethod => Command::SetDeliveryMethod {
            cart_id: cart_id(),
            delivery_method_id: text("deliveryMethodId").unwrap_or_default(),
        },
        Action::CartToOrder => Command::CartToOrder {
            cart_id: cart_id(),
            run_async: run_async()?,
        },
        Action::ActivateOrder => Command::ActivateOrder {
            cart_id: cart_id(),
            order_status: text("orderStatus"),
            order_life_cycle_type: text("orderLifeCycleType"),
            run_async: run_async()?,
        },
        _ => match ProviderAction::of(action) {
            Some(action) => Command::RunStep {
                action,
                cart_id: cart_id(),
            },
            None => return Err(CheckoutError::Unsupported(action)),
        },
    })
}

/// The inputs a custom step's action takes.
pub const CUSTOM_INPUTS: &[&str] = &["cartId"];

/// The cartId of a custom action's input object; any other key, or an input that is not an
/// object, is `INVALID_INPUT`. A missing or non-text cartId is kept as given (empty), so that
/// the documented invalid-ID error applies.
fn custom_cart_id(action: CustomAction, input: &Value) -> Result<String, CheckoutError> {
    let bad = || {
        CheckoutError::InvalidInput(format!(
            "{action} takes one input object with cartId and nothing else"
        ))
    };
    let Value::Object(fields) = input else {
        return Err(bad());
    };
    if fields.keys().any(|k| !CUSTOM_INPUTS.contains(&k.as_str())) {
        return Err(bad());
    }
    Ok(fields
        .get("cartId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned())
}

impl Engine {
    /// Invokes the template's custom action `action_name` (a custom async step, which
    /// Salesforce serves as an invocable Apex action) with one input object (`cartId`) as
    /// `actor`, answering the Salesforce result element: the async actions' rules and codes,
    /// and `backgroundOperationId` on success. A name that is no custom action of the
    /// template answers `NOT_FOUND` 404, as an unknown standard action does.
    pub fn invoke_custom(&self, action_name: &str, input: &Value, actor: &str) -> ActionResult {
        let action = CustomAction::new(action_name)
            .ok()
            .filter(|action| self.table().template().custom_step(*action).is_some());
        let Some(action) = action else {
            return ActionResult::error(
                action_name,
                "NOT_FOUND",
                &format!("no custom action named {action_name:?} in this checkout"),
                404,
            );
        };
        let command =
            custom_cart_id(action, input).map(|cart_id| Command::RunCustom { action, cart_id });
        match command.and_then(|cmd| self.execute(actor, cmd)) {
            Ok(output) => ActionResult::success(action.as_str(), &output),
            Err(e) => ActionResult::failure(action.as_str(), &e),
        }
    }

    /// Invokes an action by API name with one input object as `actor`, answering the
    /// Salesforce result element. Never panics on bad input.
    ///
    /// Besides the ten core actions it answers `authorizePayment` (input `cartId`): the
    /// Authorize Payment step, which Salesforce's template runs through a payment
    /// integration rather than a core action.
    pub fn invoke(&self, action_name: &str, input: &Value, actor: &str) -> ActionResult {
        if action_name == PAYMENT_OPERATION {
            let command = match input {
                Value::Object(fields) if fields.keys().all(|k| k == "cartId") => {
                    Ok(Command::AuthorizePayment {
                        cart_id: fields
                            .get("cartId")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    })
                }
                _ => Err(CheckoutError::InvalidInput(format!(
                    "{PAYMENT_OPERATION} takes one input object with cartId"
                ))),
            };
            return match command.and_then(|cmd| self.execute(actor, cmd)) {
                Ok(output) => ActionResult::success(action_name, &output),
                Err(e) => ActionResult::failure(action_name, &e),
            };
        }
        let Some(action) = Action::from_api_name(action_name) else {
            return ActionResult::error(
                action_name,
                "NOT_FOUND",
                &format!("no standard action named {action_name:?}"),
                404,
            );
        };
        let name = action.api_name();
        match command_from_input(action, input).and_then(|cmd| self.execute(actor, cmd)) {
            Ok(output) => ActionResult::success(name, &output),
            Err(e) => ActionResult::failure(name, &e),
        }
    }
}
