//! Providers answered over HTTP, so that a check can be written in any language: cartflow
//! POSTs the cart as signed JSON and reads back the verdict. `docs/providers.md` documents the
//! exchange.
//!
//! Every way the exchange can go wrong is a [`ProviderError`], which ends the operation in
//! Error with a SystemError output, as a Rust provider's error does:
//!
//! - no connection;
//! - no answer within the timeout;
//! - a status other than 200;
//! - a body that is not the documented JSON;
//! - a verdict that names a line the cart does not have.

use std::collections::BTreeSet;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{CartPatch, IntegrationRequest, ItemAmounts, ProviderError, Verdict};
use crate::machine::ValidationMessage;
use crate::model::{DeliveryOption, Level, ProviderKind, SfId};

/// The header carrying when the request was signed, in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Cartflow-Timestamp";

/// The header carrying the signature: `sha256=` and the hex HMAC-SHA256, keyed with the
/// provider's secret, of the timestamp, a `.`, and the body.
pub const SIGNATURE_HEADER: &str = "X-Cartflow-Signature";

/// The timeout when the configuration gives none.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// The longest timeout a configuration may give (10 minutes).
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// The largest answer read, in bytes (16 MiB); a larger one is a provider error.
#[cfg(feature = "http")]
const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// Where and how to call an HTTP provider: `{"Url": ..., "TimeoutMs": ..., "Secret": ...}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct HttpProviderConfig {
    /// `http://host:port/path`. Only plain HTTP is spoken: put a TLS proxy in front of a
    /// provider elsewhere on the network.
    pub url: String,
    /// How long one call may take, connecting included ([`DEFAULT_TIMEOUT_MS`] when absent).
    /// The operation's own timeout still applies.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// The key the requests are signed with; the provider checks the signature with it.
    pub secret: String,
}

impl std::fmt::Debug for HttpProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("HttpProviderConfig")
            .field("url", &self.url)
            .field("timeout_ms", &self.timeout_ms)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl HttpProviderConfig {
    /// Checks the configuration: a plain `http://` URL with a host, a timeout from 1 ms to
    /// [`MAX_TIMEOUT_MS`], a secret of at least 16 characters.
    pub fn validate(&self) -> Result<(), ProviderError> {
        let rest = self.url.strip_prefix("http://").ok_or_else(|| {
            ProviderError(format!(
                "the URL {:?} is not http://host[:port]/path (only plain HTTP is spoken)",
                self.url
            ))
        })?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() || host.contains('@') || host.chars().any(char::is_whitespace) {
            return Err(ProviderError(format!("the URL {:?} has no host", self.url)));
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(ProviderError(format!(
                "TimeoutMs is {}; it must be from 1 to {MAX_TIMEOUT_MS}",
                self.timeout_ms
            )));
        }
        if self.secret.chars().count() < 16 {
            return Err(ProviderError(
                "the Secret must have at least 16 characters".into(),
            ));
        }
        Ok(())
    }
}

/// A provider of one kind whose answers come from an HTTP service (the `http` feature).
#[cfg(feature = "http")]
#[derive(Debug, Clone)]
pub struct HttpProvider {
    config: HttpProviderConfig,
    kind: ProviderKind,
    agent: ureq::Agent,
}

#[cfg(feature = "http")]
impl HttpProvider {
    /// A provider of `kind` calling the service `config` names. The configuration is
    /// checked first ([`HttpProviderConfig::validate`]).
    pub fn new(config: HttpProviderConfig, kind: ProviderKind) -> Result<Self, ProviderError> {
        config.validate()?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_millis(config.timeout_ms)))
            .max_redirects(0)
            .build()
            .new_agent();
        Ok(HttpProvider {
            config,
            kind,
            agent,
        })
    }

    /// Asks the service about `request`.
    pub fn call(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
        let body = request_body(self.kind, request).to_string();
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let signature = sign(&self.config.secret, &timestamp, &body);
        let answer = self
            .agent
            .post(&self.config.url)
            .header("Content-Type", "application/json")
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(SIGNATURE_HEADER, &signature)
            .send(&body)
            .map_err(|e| self.error(&format!("no answer: {e}")))?;
        let status = answer.status().as_u16();
        let text = answer
            .into_body()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| self.error(&format!("the answer could not be read: {e}")))?;
        if status != 200 {
            return Err(self.error(&format!("it answered HTTP {status}")));
        }
        verdict(&text, request).map_err(|why| self.error(&why))
    }

    fn error(&self, why: &str) -> ProviderError {
        ProviderError(format!(
            "the {:?} provider at {} failed: {why}",
            self.kind, self.config.url
        ))
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `timestamp.body` under `secret`.
#[cfg(feature = "http")]
pub fn sign(secret: &str, timestamp: &str, body: &str) -> String {
    use hmac::{KeyInit, Mac};
    // An HMAC takes a key of any length, so this cannot fail.
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC keys may have any length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg_attr(not(feature = "http"), allow(dead_code))]
/// The JSON cartflow sends: the kind of check, the operation, the cart, its lines and (for the
/// payment step) the order. The payment token is sent to the payment provider only.
fn request_body(kind: ProviderKind, request: &IntegrationRequest) -> Value {
    let cart = if kind == ProviderKind::Payment {
        serde_json::to_value(&request.cart).unwrap_or(Value::Null)
    } else {
        request.cart.shown()
    };
    json!({
        "kind": kind,
        "operationId": request.operation_id,
        "cart": cart,
        "items": request.items,
        "order": request.order,
    })
}

#[cfg_attr(not(feature = "http"), allow(dead_code))]
/// A provider's answer: `{"verdict": "Passed" | "Updated" | "Failed", ...}`.
#[derive(Debug, Deserialize)]
#[serde(tag = "verdict", deny_unknown_fields)]
enum Answer {
    // A struct variant, so that its unknown fields are refused too.
    Passed {},
    Updated(Patch),
    Failed { messages: Vec<Message> },
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Patch {
    #[serde(default)]
    items: Vec<LineAmounts>,
    #[serde(default)]
    delivery_options: Option<Vec<DeliveryOption>>,
    #[serde(default)]
    payment_authorization_id: Option<String>,
    #[serde(default)]
    authorized_amount: Option<Decimal>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LineAmounts {
    item_id: SfId,
    #[serde(default)]
    list_price: Option<Decimal>,
    #[serde(default)]
    sales_price: Option<Decimal>,
    #[serde(default)]
    total_price: Option<Decimal>,
    #[serde(default)]
    adjustment_amount: Option<Decimal>,
    #[serde(default)]
    tax_amount: Option<Decimal>,
    #[serde(default)]
    tax_rate: Option<Decimal>,
    #[serde(default)]
    tax_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Message {
    message: String,
    #[serde(default = "error_level")]
    level: Level,
    #[serde(default)]
    related_entity_id: Option<SfId>,
}

fn error_level() -> Level {
    Level::Error
}

#[cfg_attr(not(feature = "http"), allow(dead_code))]
/// Reads an answer into a verdict about `request`'s cart; why it cannot be read otherwise.
fn verdict(text: &str, request: &IntegrationRequest) -> Result<Verdict, String> {
    let answer: Answer =
        serde_json::from_str(text).map_err(|e| format!("the answer is not a verdict: {e}"))?;
    match answer {
        Answer::Passed {} => Ok(Verdict::Passed),
        Answer::Updated(patch) => updated(patch, request),
        Answer::Failed { messages } if messages.is_empty() => {
            Err("a Failed verdict has no messages".into())
        }
        Answer::Failed { messages } => Ok(Verdict::Failed(
            messages
                .into_iter()
                .map(|m| ValidationMessage {
                    level: m.level,
                    message: m.message,
                    related_entity_id: m.related_entity_id,
                })
                .collect(),
        )),
    }
}

#[cfg_attr(not(feature = "http"), allow(dead_code))]
/// An Updated verdict, once every line it prices is one of the cart's, each at most once.
fn updated(patch: Patch, request: &IntegrationRequest) -> Result<Verdict, String> {
    let lines: BTreeSet<SfId> = request.items.iter().map(|i| i.id).collect();
    let mut seen = BTreeSet::new();
    for line in &patch.items {
        if !lines.contains(&line.item_id) {
            return Err(format!(
                "the answer prices line {}, which the cart does not have",
                line.item_id
            ));
        }
        if !seen.insert(line.item_id) {
            return Err(format!("the answer prices line {} twice", line.item_id));
        }
    }
    Ok(Verdict::Updated(CartPatch {
        items: patch
            .items
            .into_iter()
            .map(|l| ItemAmounts {
                list_price: l.list_price,
                sales_price: l.sales_price,
                total_price: l.total_price,
                adjustment_amount: l.adjustment_amount,
                tax_amount: l.tax_amount,
                tax_rate: l.tax_rate,
                tax_name: l.tax_name,
                ..ItemAmounts::of(l.item_id)
            })
            .collect(),
        delivery_options: patch.delivery_options,
        payment_authorization_id: patch.payment_authorization_id,
        authorized_amount: patch.authorized_amount,
    }))
}

#[cfg(feature = "http")]
macro_rules! http_provider_impl {
    ($($trait:ident :: $method:ident),*) => {
        $(impl super::$trait for HttpProvider {
            fn $method(&self, request: &IntegrationRequest) -> Result<Verdict, ProviderError> {
                self.call(request)
            }
        })*
    };
}

#[cfg(feature = "http")]
http_provider_impl!(
    InventoryProvider::check_inventory,
    PriceProvider::price_cart,
    PromotionsProvider::apply_promotions,
    ShipmentProvider::calculate_shipment,
    TaxProvider::calculate_taxes,
    PaymentProvider::authorize_payment,
    CustomProvider::run_step
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{self, SampleCart};

    fn request() -> IntegrationRequest {
        let data = sample::dataset();
        let cart = data
            .carts
            .iter()
            .find(|c| c.id == SampleCart::InStock.id())
            .cloned()
            .unwrap();
        let items: Vec<_> = data
            .items
            .iter()
            .filter(|i| i.cart_id == cart.id)
            .cloned()
            .collect();
        IntegrationRequest {
            operation_id: SfId::from_number(crate::model::KeyPrefix::BackgroundOperation, 1),
            cart,
            items: items.into(),
            order: None,
        }
    }

    #[test]
    fn answers_are_read_into_verdicts_and_anything_else_is_refused() {
        let r = request();
        let line = r.items[0].id;
        assert_eq!(verdict(r#"{"verdict": "Passed"}"#, &r), Ok(Verdict::Passed));
        let priced = format!(
            r#"{{"verdict": "Updated", "items": [{{"itemId": "{line}", "taxAmount": "1.25", "taxRate": "0.05"}}]}}"#
        );
        let Ok(Verdict::Updated(patch)) = verdict(&priced, &r) else {
            panic!("not an update");
        };
        assert_eq!(patch.items.len(), 1);
        assert_eq!(patch.items[0].tax_amount, Some(Decimal::new(125, 2)));
        assert_eq!(patch.items[0].sales_price, None);
        let failed = r#"{"verdict": "Failed", "messages": [{"message": "out of stock"}]}"#;
        let Ok(Verdict::Failed(messages)) = verdict(failed, &r) else {
            panic!("not a failure");
        };
        assert_eq!(
            (messages[0].level, messages[0].message.as_str()),
            (Level::Error, "out of stock")
        );
        let other = SfId::from_number(crate::model::KeyPrefix::CartItem, 999_999);
        let twice = format!(
            r#"{{"verdict": "Updated", "items": [{{"itemId": "{line}"}}, {{"itemId": "{line}"}}]}}"#
        );
        let stranger = format!(r#"{{"verdict": "Updated", "items": [{{"itemId": "{other}"}}]}}"#);
        for bad in [
            "",
            "null",
            r#"{"verdict": "Maybe"}"#,
            r#"{"verdict": "Passed", "extra": 1}"#,
            r#"{"verdict": "Failed", "messages": []}"#,
            r#"{"verdict": "Updated", "items": [{"itemId": "x"}]}"#,
            r#"{"verdict": "Updated", "authorizedAmount": "twelve"}"#,
            &twice,
            &stranger,
        ] {
            assert!(verdict(bad, &r).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_payment_provider_is_sent_the_payment_token() {
        let mut r = request();
        r.cart.payment_token = Some("tok_secret".into());
        for kind in [
            ProviderKind::Inventory,
            ProviderKind::Tax,
            ProviderKind::Custom,
        ] {
            let body = request_body(kind, &r).to_string();
            assert!(!body.contains("tok_secret"), "{kind:?}: {body}");
        }
        assert!(
            request_body(ProviderKind::Payment, &r)
                .to_string()
                .contains("tok_secret")
        );
    }

    fn config(url: &str) -> HttpProviderConfig {
        HttpProviderConfig {
            url: url.into(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            secret: "0123456789abcdef".into(),
        }
    }

    #[test]
    fn a_configuration_needs_plain_http_a_host_a_bounded_timeout_and_a_long_secret() {
        assert!(config("http://127.0.0.1:9000/tax").validate().is_ok());
        assert!(config("http://tax.internal/").validate().is_ok());
        for bad in [
            "https://tax.internal/",
            "http:///tax",
            "ftp://x/",
            "tax.internal",
            "http://a b/",
        ] {
            assert!(config(bad).validate().is_err(), "{bad}");
        }
        let mut slow = config("http://x/");
        slow.timeout_ms = 0;
        assert!(slow.validate().is_err());
        slow.timeout_ms = MAX_TIMEOUT_MS + 1;
        assert!(slow.validate().is_err());
        let mut short = config("http://x/");
        short.secret = "short".into();
        assert!(short.validate().is_err());
    }

    #[cfg(feature = "http")]
    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // Computed independently, with Python's hmac module:
        // hmac.new(b"0123456789abcdef", b"1700000000.{}", "sha256").hexdigest()
        assert_eq!(
            sign("0123456789abcdef", "1700000000", "{}"),
            "sha256=e4f8e2ecae2295b2ddb2f0b5584c8275e226c0ebe9b3b819e70156bb67122e3e"
        );
    }
}
