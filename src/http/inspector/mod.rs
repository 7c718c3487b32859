//! The inspector: a page at `/inspector` that shows, live, how many sessions, carts and
//! operations are on each node of the transition table, the sessions and operations that need
//! a look, and one session's timeline. `docs/inspector.md` documents the page and its JSON
//! views.
//!
//! The page, its styles and its script are compiled into the binary and fetch nothing from
//! elsewhere; they hold no data and need no token. Every JSON view behind them needs a bearer
//! token whose user holds [`Permission::CheckoutInspector`] or Modify All Data: 401
//! `INVALID_SESSION_ID` without a known token, 403 `INSUFFICIENT_ACCESS` without the
//! permission. The page asks for the token once and keeps it in the tab's session storage.

mod view;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

pub use view::{
    CartFilter, DEFAULT_ROWS, DEFAULT_STUCK_SECONDS, MAX_ROWS, OperationFilter, SCAN_LIMIT,
    SessionFilter,
};

use super::query::query_param;
use super::routes::{Access, Operation, Route};
use super::{AppState, SfError, authenticate, blocking, error::json_response};
use crate::engine::Engine;
use crate::error::StoreError;
use crate::model::{KeyPrefix, Permission, SfId, User};

const PAGE: &str = include_str!("assets/inspector.html");
const SCRIPT: &str = include_str!("assets/inspector.js");
const STYLE: &str = include_str!("assets/inspector.css");

/// What the page may load: its own script, styles and JSON views, nothing from elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The inspector's routes, for the facade's route table.
pub(super) fn routes() -> Vec<Route> {
    let asset = |id, summary, media| {
        Operation::new("get", id, "Inspector", summary)
            .access(Access::Public)
            .answers(StatusCode::OK, media, None)
    };
    let view = |id, summary| {
        Operation::new("get", id, "Inspector", summary)
            .access(Access::Inspector)
            .json("InspectorView")
    };
    vec![
        Route::new(
            "/inspector",
            get(page),
            vec![asset("inspectorPage", "The inspector page", "text/html")],
        ),
        Route::new(
            "/inspector/",
            get(page),
            vec![asset(
                "inspectorPageSlash",
                "The inspector page",
                "text/html",
            )],
        ),
        Route::new(
            "/inspector/inspector.js",
            get(script),
            vec![asset(
                "inspectorScript",
                "The page's script",
                "text/javascript",
            )],
        ),
        Route::new(
            "/inspector/inspector.css",
            get(style),
            vec![asset("inspectorStyle", "The page's styles", "text/css")],
        ),
        Route::new(
            "/inspector/api/table",
            get(table),
            vec![view(
                "inspectorTable",
                "The drawing of the transition table",
            )],
        ),
        Route::new(
            "/inspector/api/counts",
            get(counts),
            vec![view(
                "inspectorCounts",
                "How many records are on each node now",
            )],
        ),
        Route::new(
            "/inspector/api/carts",
            get(carts),
            vec![view("inspectorCarts", "Carts by status and store").query(&[
                ("status", "A cart status: Active, Checkout, Closed, ..."),
                ("store", "A WebStore Id"),
                ("limit", "The most rows, 1 to 1000 (default 100)"),
            ])],
        ),
        Route::new(
            "/inspector/api/sessions",
            get(sessions),
            vec![
                view(
                    "inspectorSessions",
                    "Sessions by state, store, failure and processing time",
                )
                .query(&[
                    ("state", "A State, or a node such as `Inventory (running)`"),
                    ("store", "A WebStore Id"),
                    ("failed", "`true`: only failed sessions"),
                    (
                        "processing_over",
                        "Only sessions processing for at least this many seconds",
                    ),
                    ("limit", "The most rows, 1 to 1000 (default 100)"),
                ]),
            ],
        ),
        Route::new(
            "/inspector/api/sessions/{id}",
            get(session),
            vec![view(
                "inspectorSession",
                "One session, its records and its timeline",
            )],
        ),
        Route::new(
            "/inspector/api/operations",
            get(operations),
            vec![
                view("inspectorOperations", "Stuck or failed operations").query(&[
                    ("kind", "`stuck` (default) or `failed`"),
                    (
                        "older_than",
                        "Stuck: active for at least this many seconds (default 60)",
                    ),
                    ("limit", "The most rows, 1 to 1000 (default 100)"),
                ]),
            ],
        ),
    ]
}

/// Whether `user` may open the inspector's views.
pub fn may_inspect(user: &User) -> bool {
    user.has(Permission::CheckoutInspector) || user.has(Permission::ModifyAllData)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// The caller, when it may open the inspector: 401 without a known token, 403 without the
/// permission.
async fn inspector(state: &AppState, headers: &HeaderMap) -> Result<User, SfError> {
    let user = authenticate(state, headers).await?;
    if may_inspect(&user) {
        Ok(user)
    } else {
        Err(SfError::new(
            StatusCode::FORBIDDEN,
            "INSUFFICIENT_ACCESS",
            "The inspector needs the CheckoutInspector permission or Modify All Data",
        ))
    }
}

/// Checks the caller may inspect, then runs `view` on the blocking pool; `None` is 404.
/// The answer is never cached: it is a reading of the store now.
async fn gated<F>(state: &AppState, headers: &HeaderMap, view: F) -> Result<Response, SfError>
where
    F: FnOnce(&Engine) -> Result<Option<Value>, StoreError> + Send + 'static,
{
    inspector(state, headers).await?;
    let engine = state.0.engine.clone();
    let body = blocking(move || view(&engine))
        .await?
        .map_err(|e| SfError::internal(&e))?
        .ok_or_else(SfError::not_found)?;
    let mut response = json_response(StatusCode::OK, &body);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn table(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, SfError> {
    gated(&state, &headers, |engine| Ok(Some(view::table(engine)))).await
}

async fn counts(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, SfError> {
    gated(&state, &headers, |engine| view::counts(engine).map(Some)).await
}

async fn carts(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, SfError> {
    let filter = cart_filter(uri.query().unwrap_or_default())?;
    gated(&state, &headers, move |engine| {
        view::carts(engine, &filter).map(Some)
    })
    .await
}

async fn sessions(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, SfError> {
    let filter = session_filter(uri.query().unwrap_or_default())?;
    gated(&state, &headers, move |engine| {
        view::sessions(engine, &filter).map(Some)
    })
    .await
}

async fn operations(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, SfError> {
    let query = uri.query().unwrap_or_default();
    let filter = operation_filter(query)?;
    let limit = limit(query)?;
    gated(&state, &headers, move |engine| {
        view::operations(engine, filter, limit).map(Some)
    })
    .await
}

async fn session(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, SfError> {
    // The caller first: a stranger learns nothing, not even whether an Id is well formed.
    inspector(&state, &headers).await?;
    let id = SfId::parse_kind(&id, KeyPrefix::CartCheckoutSession).map_err(|e| {
        SfError::new(
            StatusCode::BAD_REQUEST,
            "MALFORMED_ID",
            format!("{id:?} is not a CartCheckoutSession Id: {e}"),
        )
    })?;
    gated(&state, &headers, move |engine| view::session(engine, &id)).await
}

/// A query parameter, decoded; `None` when absent or empty.
fn param(query: &str, name: &str) -> Result<Option<String>, SfError> {
    match query_param(query, name) {
        None => Ok(None),
        Some(Ok(value)) if value.is_empty() => Ok(None),
        Some(Ok(value)) => Ok(Some(value)),
        Some(Err(_)) => Err(bad_parameter(name, "is not UTF-8 text")),
    }
}

fn bad_parameter(name: &str, why: &str) -> SfError {
    SfError::new(
        StatusCode::BAD_REQUEST,
        "INVALID_QUERY_FILTER_OPERATOR",
        format!("The parameter {name} {why}"),
    )
}

/// A parameter that is a whole number of at most `max`.
fn number(query: &str, name: &str, max: u64) -> Result<Option<u64>, SfError> {
    let Some(text) = param(query, name)? else {
        return Ok(None);
    };
    match text.parse::<u64>() {
        Ok(n) if n <= max => Ok(Some(n)),
        _ => Err(bad_parameter(
            name,
            &format!("must be a whole number from 0 to {max}"),
        )),
    }
}

/// `limit`: 1 to [`MAX_ROWS`], [`DEFAULT_ROWS`] when absent.
fn limit(query: &str) -> Result<usize, SfError> {
    match number(query, "limit", MAX_ROWS as u64)? {
        None => Ok(DEFAULT_ROWS),
        Some(0) => Err(bad_parameter(
            "limit",
            &format!("must be from 1 to {MAX_ROWS}"),
        )),
        Some(n) => Ok(usize::try_from(n).unwrap_or(MAX_ROWS)),
    }
}

/// A yes-or-no parameter: `true` or `false`, false when absent.
fn flag(query: &str, name: &str) -> Result<bool, SfError> {
    match param(query, name)?.as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(bad_parameter(name, "must be true or false")),
    }
}

/// The most seconds a duration parameter takes (a year).
const MAX_SECONDS: u64 = 366 * 24 * 3600;

/// `store`: a WebStore Id, or none.
fn store_param(query: &str) -> Result<Option<SfId>, SfError> {
    match param(query, "store")? {
        None => Ok(None),
        Some(text) => SfId::parse_kind(&text, KeyPrefix::WebStore)
            .map(Some)
            .map_err(|_| bad_parameter("store", "is not a WebStore Id")),
    }
}

fn cart_filter(query: &str) -> Result<CartFilter, SfError> {
    Ok(CartFilter {
        status: param(query, "status")?,
        store: store_param(query)?,
        limit: limit(query)?,
    })
}

fn session_filter(query: &str) -> Result<SessionFilter, SfError> {
    Ok(SessionFilter {
        state: param(query, "state")?,
        store: store_param(query)?,
        failed: flag(query, "failed")?,
        processing_over: number(query, "processing_over", MAX_SECONDS)?,
        limit: limit(query)?,
    })
}

fn operation_filter(query: &str) -> Result<OperationFilter, SfError> {
    let older_than = number(query, "older_than", MAX_SECONDS)?;
    match param(query, "kind")?.as_deref() {
        None | Some("stuck") => Ok(OperationFilter::Stuck {
            older_than: older_than.unwrap_or(DEFAULT_STUCK_SECONDS),
        }),
        Some("failed") if older_than.is_none() => Ok(OperationFilter::Failed),
        Some("failed") => Err(bad_parameter("older_than", "applies to kind=stuck only")),
        Some(_) => Err(bad_parameter("kind", "must be stuck or failed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_filters_parse_and_refuse_what_they_cannot_read() {
        let f =
            session_filter("state=Inventory+%28running%29&failed=true&processing_over=30").unwrap();
        assert_eq!(f.state.as_deref(), Some("Inventory (running)"));
        assert!(f.failed);
        assert_eq!(f.processing_over, Some(30));
        assert_eq!(f.limit, DEFAULT_ROWS);
        assert_eq!(
            session_filter("").unwrap(),
            SessionFilter {
                limit: DEFAULT_ROWS,
                ..SessionFilter::default()
            }
        );
        for bad in [
            "failed=yes",
            "processing_over=-1",
            "limit=0",
            "limit=1001",
            "store=005000000000001",
            "state=%FF",
        ] {
            let e = session_filter(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn operation_filters_default_to_stuck_for_a_minute() {
        assert_eq!(
            operation_filter("").unwrap(),
            OperationFilter::Stuck {
                older_than: DEFAULT_STUCK_SECONDS
            }
        );
        assert_eq!(
            operation_filter("kind=stuck&older_than=5").unwrap(),
            OperationFilter::Stuck { older_than: 5 }
        );
        assert_eq!(
            operation_filter("kind=failed").unwrap(),
            OperationFilter::Failed
        );
        assert!(operation_filter("kind=failed&older_than=5").is_err());
        assert!(operation_filter("kind=late").is_err());
    }

    #[test]
    fn the_permission_or_modify_all_data_opens_the_inspector() {
        let user = |permissions: &[Permission]| User {
            id: SfId::parse("005000000000001").unwrap(),
            name: String::new(),
            account_id: None,
            permissions: permissions.iter().copied().collect(),
        };
        assert!(may_inspect(&user(&[Permission::CheckoutInspector])));
        assert!(may_inspect(&user(&[Permission::ModifyAllData])));
        assert!(!may_inspect(&user(&[Permission::B2BBuyer])));
        assert!(!may_inspect(&user(&[Permission::B2BCommerceIntegrator])));
    }
}
