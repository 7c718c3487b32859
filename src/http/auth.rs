//! Bearer tokens: which user a request acts as.
//!
//! The token file is one JSON object mapping each token to the ID of the user it acts as:
//!
//! ```json
//! {
//!   "buyer-token-change-me": "005000000000FJ9AAM",
//!   "integration-token-change-me": "005000000000FJEAA2"
//! }
//! ```
//!
//! Tokens are compared exactly. No token ever appears in a log line or an error message.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, header};

use crate::model::{KeyPrefix, SfId};

/// The tokens a server accepts and the user each acts as.
#[derive(Clone, Default)]
pub struct Tokens {
    users: HashMap<String, SfId>,
}

// Hand-written so that no token is ever printed.
impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.users.len())
            .finish()
    }
}

/// Why a token file cannot be used. No variant carries a token.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read.
    #[error("cannot read the token file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The file is not a JSON object of strings.
    #[error(
        "the token file is not a JSON object mapping tokens to user IDs (line {line}, column {column})"
    )]
    Malformed {
        /// Where the JSON broke.
        line: usize,
        /// Where the JSON broke.
        column: usize,
    },
    /// A token is empty or holds characters an Authorization header cannot carry.
    #[error(
        "the token of user {0} is empty or holds spaces or control characters; tokens are \
         printable ASCII"
    )]
    BadToken(String),
    /// A user ID is not a valid User ID (`005...`).
    #[error("{0:?} is not a valid User ID (15 or 18 characters, key prefix 005)")]
    BadUser(String),
}

impl Tokens {
    /// No tokens: every call that needs one answers 401.
    pub fn new() -> Tokens {
        Tokens::default()
    }

    /// Accepts `token` for `user`. Panics on a token an `Authorization` header cannot carry
    /// (empty, spaces, non-ASCII): that is a programming error, not input.
    pub fn with(mut self, token: impl Into<String>, user: SfId) -> Tokens {
        let token = token.into();
        assert!(valid_token(&token), "tokens are non-empty printable ASCII");
        self.users.insert(token, user);
        self
    }

    /// Parses the token file format (see the module documentation).
    pub fn from_json(text: &str) -> Result<Tokens, TokensError> {
        let raw: HashMap<String, String> =
            serde_json::from_str(text).map_err(|e| TokensError::Malformed {
                line: e.line(),
                column: e.column(),
            })?;
        let mut users = HashMap::with_capacity(raw.len());
        for (token, user) in raw {
            let id = SfId::parse_kind(&user, KeyPrefix::User)
                .map_err(|_| TokensError::BadUser(user.clone()))?;
            if !valid_token(&token) {
                return Err(TokensError::BadToken(user));
            }
            users.insert(token, id);
        }
        Ok(Tokens { users })
    }

    /// Reads a token file.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| TokensError::Read(path.to_owned(), e))?;
        Tokens::from_json(&text)
    }

    /// The user a token acts as.
    pub fn user_of(&self, token: &str) -> Option<SfId> {
        self.users.get(token).copied()
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user of the request's `Authorization: Bearer <token>` header, if it names a known
    /// token. The scheme is matched case-insensitively, as HTTP specifies.
    pub fn user_of_request(&self, headers: &HeaderMap) -> Option<SfId> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("Bearer") {
            return None;
        }
        self.user_of(token.trim())
    }
}

fn valid_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn user(n: u64) -> SfId {
        SfId::from_number(KeyPrefix::User, n)
    }

    #[test]
    fn the_file_maps_tokens_to_users() {
        let text = format!(
            r#"{{"alpha": "{}", "beta": "{}"}}"#,
            user(1),
            user(2).to_15()
        );
        let tokens = Tokens::from_json(&text).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.user_of("alpha"), Some(user(1)));
        assert_eq!(tokens.user_of("beta"), Some(user(2)));
        assert_eq!(tokens.user_of("gamma"), None);
    }

    #[test]
    fn bad_files_are_refused_without_echoing_tokens() {
        let wrong_kind = format!(
            r#"{{"secret-1": "{}"}}"#,
            SfId::from_number(KeyPrefix::WebCart, 1)
        );
        let spaced = format!(r#"{{"secret 2": "{}"}}"#, user(1));
        for text in [
            "[]".to_owned(),
            r#"{"secret-3": 5}"#.to_owned(),
            wrong_kind,
            spaced,
        ] {
            let error = Tokens::from_json(&text).unwrap_err().to_string();
            assert!(!error.contains("secret"), "{error}");
        }
    }

    #[test]
    fn only_bearer_headers_with_known_tokens_name_a_user() {
        let tokens = Tokens::new().with("s3cr3t", user(7));
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            tokens.user_of_request(&headers)
        };
        assert_eq!(with("Bearer s3cr3t"), Some(user(7)));
        assert_eq!(with("bearer s3cr3t"), Some(user(7)));
        assert_eq!(with("Bearer other"), None);
        assert_eq!(with("Basic s3cr3t"), None);
        assert_eq!(with("s3cr3t"), None);
        assert_eq!(tokens.user_of_request(&HeaderMap::new()), None);
        assert!(!format!("{tokens:?}").contains("s3cr3t"));
    }
}
