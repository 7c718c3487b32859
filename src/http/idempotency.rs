//! `Idempotency-Key`: an opt-in replay of a write. A request that carries the header (on
//! `POST .../actions/standard/{name}` and `PATCH .../sobjects/...`) is answered, when the same
//! caller repeats it with the same key, route and body, with the first answer (status and
//! body) without running anything again. The same key on another route or with another body
//! answers 422, a repeat while the first still runs 409. Keys are per user and kept in the
//! store (so every process sharing a database sees them) for [`DEFAULT_KEY_TTL`] or the
//! server's configured time; after that the key is new again.

use std::future::Future;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::error::SfError;
use super::{AppState, blocking};
use crate::model::User;
use crate::store::{KeptAnswer, KeyState, KeyedRequest};

/// The request header that asks for an idempotent replay.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The header a replayed answer carries (`true`).
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The longest key accepted, in characters (printable ASCII).
pub const MAX_KEY_LENGTH: usize = 255;

/// How long a key and its answer are kept by default: 24 hours.
pub const DEFAULT_KEY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The largest answer kept for a replay; a larger one is answered but not kept.
const MAX_KEPT_ANSWER: usize = 16 << 20;

/// Runs `work` for `user`'s request on `route` with `body`, honouring its
/// `Idempotency-Key`, if any: a first request runs and its answer is kept (a 5xx answer is
/// not: the key is freed so that a retry runs again, and the engine's requirements still
/// refuse a duplicate); a repeat gets the kept answer.
pub(super) async fn keyed<F>(
    state: &AppState,
    user: &User,
    headers: &HeaderMap,
    route: String,
    body: &[u8],
    work: F,
) -> Result<Response, SfError>
where
    F: Future<Output = Result<Response, SfError>>,
{
    let Some(key) = key_of(headers)? else {
        return work.await;
    };
    let request = KeyedRequest {
        user: user.id,
        key,
        fingerprint: fingerprint(&route, body),
    };
    match begin(state, &request).await? {
        KeyState::Reserved => {}
        KeyState::Answered(answer) => return Ok(replayed(&answer)),
        KeyState::InFlight => return Err(in_flight()),
        KeyState::Mismatch => return Err(reused()),
    }
    let reservation = Reservation(Some((state.clone(), request)));
    let response = work
        .await
        .unwrap_or_else(axum::response::IntoResponse::into_response);
    finish(reservation, response).await
}

/// A reserved key whose answer is not kept yet. Dropped unkept (the client went away and the
/// request was cancelled), it frees the key, so that it does not answer 409 until it expires.
struct Reservation(Option<(AppState, KeyedRequest)>);

impl Reservation {
    fn take(mut self) -> Option<(AppState, KeyedRequest)> {
        self.0.take()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some((state, request)) = self.0.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn_blocking(move || {
            if let Err(e) = state.0.engine.store().release_key(&request) {
                tracing::error!(error = %e, "cannot free an idempotency key");
            }
        });
    }
}

/// The request's key: `None` without the header; 400 when it is not 1 to 255 printable
/// ASCII characters or is given twice.
fn key_of(headers: &HeaderMap) -> Result<Option<String>, SfError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = |why: &str| {
        SfError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_IDEMPOTENCY_KEY",
            format!("The Idempotency-Key header {why}"),
        )
    };
    if values.next().is_some() {
        return Err(bad("is given more than once"));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_LENGTH {
        return Err(bad(&format!(
            "must hold 1 to {MAX_KEY_LENGTH} characters, not {}",
            bytes.len()
        )));
    }
    if !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(bad("must be printable ASCII"));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// What the request asks: its route and a digest of its body, byte for byte.
fn fingerprint(route: &str, body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{route} sha256:{hex}")
}

async fn begin(state: &AppState, request: &KeyedRequest) -> Result<KeyState, SfError> {
    let engine = state.0.engine.clone();
    let ttl = chrono::Duration::from_std(state.0.key_ttl).unwrap_or(chrono::Duration::MAX);
    let request = request.clone();
    blocking(move || {
        let now = engine.now();
        let expires_at = now
            .checked_add_signed(ttl)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        engine.store().begin_keyed(&request, now, expires_at)
    })
    .await?
    .map_err(|e| SfError::internal(&e))
}

/// Keeps (or, for a 5xx answer, frees) the key, then answers. A failure to keep it is
/// logged: the caller still gets the answer of the work that ran.
async fn finish(reservation: Reservation, response: Response) -> Result<Response, SfError> {
    let (parts, body) = response.into_parts();
    // An answer too large to keep drops the reservation, which frees the key.
    let bytes = to_bytes(body, MAX_KEPT_ANSWER)
        .await
        .map_err(|e| SfError::internal(&e))?;
    let Some((state, request)) = reservation.take() else {
        return Ok(Response::from_parts(parts, Body::from(bytes)));
    };
    let status = parts.status.as_u16();
    let keep = !parts.status.is_server_error();
    let answer = KeptAnswer {
        status,
        body: bytes.to_vec(),
    };
    let engine = state.0.engine.clone();
    let stored = blocking(move || {
        if keep {
            engine.store().keep_answer(&request, &answer)
        } else {
            engine.store().release_key(&request)
        }
    })
    .await;
    match stored {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot keep an idempotent answer"),
        Err(e) => tracing::error!(error = ?e, "cannot keep an idempotent answer"),
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// The kept answer, as it was first given.
fn replayed(answer: &KeptAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = Response::new(Body::from(answer.body.clone()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if !answer.body.is_empty() {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=UTF-8"),
        );
    }
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

fn in_flight() -> SfError {
    SfError::new(
        StatusCode::CONFLICT,
        "IDEMPOTENCY_KEY_IN_USE",
        "A request with this Idempotency-Key is still running; retry once it has answered",
    )
}

fn reused() -> SfError {
    SfError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
        "This Idempotency-Key was used for another request (another route or body); use a new key",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(IDEMPOTENCY_KEY_HEADER, HeaderValue::from_bytes(v).unwrap());
        }
        headers
    }

    #[test]
    fn keys_are_one_to_255_printable_ascii_characters_given_once() {
        assert_eq!(key_of(&HeaderMap::new()).unwrap(), None);
        assert_eq!(
            key_of(&headers(&[b"order-42"])).unwrap().as_deref(),
            Some("order-42")
        );
        let longest = "k".repeat(MAX_KEY_LENGTH);
        assert!(key_of(&headers(&[longest.as_bytes()])).unwrap().is_some());
        let code = |h: HeaderMap| key_of(&h).unwrap_err().code;
        let too_long = "k".repeat(MAX_KEY_LENGTH + 1);
        assert_eq!(
            code(headers(&[too_long.as_bytes()])),
            "INVALID_IDEMPOTENCY_KEY"
        );
        assert_eq!(code(headers(&[b""])), "INVALID_IDEMPOTENCY_KEY");
        assert_eq!(code(headers(&[b"caf\xc3\xa9"])), "INVALID_IDEMPOTENCY_KEY");
        assert_eq!(code(headers(&[b"a\tb"])), "INVALID_IDEMPOTENCY_KEY");
        assert_eq!(code(headers(&[b"a", b"b"])), "INVALID_IDEMPOTENCY_KEY");
    }

    #[test]
    fn the_fingerprint_tells_routes_and_bodies_apart() {
        let a = fingerprint("POST /a", b"{}");
        assert_eq!(a, fingerprint("POST /a", b"{}"));
        assert_ne!(a, fingerprint("POST /b", b"{}"));
        assert_ne!(a, fingerprint("POST /a", b"{ }"));
    }
}
