//! Salesforce-shaped error answers: a JSON array of `{"errorCode", "message", "fields"?}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::CheckoutError;

/// The message Salesforce gives for a missing or bad token.
pub(crate) const INVALID_SESSION_MESSAGE: &str = "Session expired or invalid";

/// The message of every 404: it never says whether a record exists.
pub(crate) const NOT_FOUND_MESSAGE: &str = "The requested resource does not exist";

/// One error answer: its HTTP status and the single element of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The Salesforce errorCode, e.g. `NOT_FOUND`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// The fields involved (omitted from the body when empty).
    pub fields: Vec<String>,
}

impl SfError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> SfError {
        SfError {
            status,
            code: code.to_owned(),
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// Names the fields involved.
    pub fn with_fields(mut self, fields: Vec<String>) -> SfError {
        self.fields = fields;
        self
    }

    /// 401 `INVALID_SESSION_ID`.
    pub fn invalid_session() -> SfError {
        SfError::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            INVALID_SESSION_MESSAGE,
        )
    }

    /// 404 `NOT_FOUND`, with the one message that reveals nothing.
    pub fn not_found() -> SfError {
        SfError::new(StatusCode::NOT_FOUND, "NOT_FOUND", NOT_FOUND_MESSAGE)
    }

    /// 400 `JSON_PARSER_ERROR`.
    pub fn parser(message: impl Into<String>) -> SfError {
        SfError::new(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", message)
    }

    /// 400 `INVALID_FIELD` naming `field`.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> SfError {
        SfError::new(StatusCode::BAD_REQUEST, "INVALID_FIELD", message)
            .with_fields(vec![field.to_owned()])
    }

    /// 500 `UNKNOWN_EXCEPTION` for a failure inside the server. The cause goes to the log,
    /// not to the caller (it may name files or database hosts).
    pub fn internal(cause: &dyn std::fmt::Display) -> SfError {
        tracing::error!(error = %cause, "request failed inside the server");
        SfError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN_EXCEPTION",
            "An unexpected error occurred; the server's log has the details",
        )
    }

    /// The errorCode and status a refused command documents. Failures inside cartflow (the
    /// store, an undeclared move) are answered as [`SfError::internal`].
    pub fn from_checkout(error: &CheckoutError) -> SfError {
        if matches!(
            error,
            CheckoutError::Store(_) | CheckoutError::Undeclared(_)
        ) {
            return SfError::internal(error);
        }
        let status =
            StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        SfError::new(status, error.code().as_str(), error.to_string())
    }

    /// The body: a one-element array, as Salesforce answers.
    pub fn body(&self) -> Value {
        let mut element = json!({"errorCode": self.code, "message": self.message});
        if !self.fields.is_empty() {
            element["fields"] = json!(self.fields);
        }
        json!([element])
    }
}

impl IntoResponse for SfError {
    fn into_response(self) -> Response {
        json_response(self.status, &self.body())
    }
}

/// A JSON answer with this status.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    // Serializing a `Value` cannot fail.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    response
}
