//! Salesforce record IDs: 15-character case-sensitive and 18-character case-safe forms.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SUFFIX_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// Why a string is not a Salesforce ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not 15 or 18 characters long.
    #[error("an ID has 15 or 18 characters, {0:?} has {1}")]
    Length(String, usize),
    /// A character outside `[0-9A-Za-z]` in the first 15 characters.
    #[error("an ID is base-62 (0-9, A-Z, a-z): {0:?} is not")]
    Character(String),
    /// The 18-character form's last three characters do not match the first fifteen.
    #[error("the checksum of {0:?} should be {1}")]
    Checksum(String, String),
    /// The ID is valid but names another kind of record.
    #[error("{id} is not a {expected} ID (key prefix {prefix}, expected {expected_prefix})")]
    WrongPrefix {
        /// The ID as given.
        id: String,
        /// The key prefix found.
        prefix: String,
        /// The object the caller asked for.
        expected: &'static str,
        /// The object's key prefix.
        expected_prefix: &'static str,
    },
}

/// A validated Salesforce record ID, always held in its 18-character form.
///
/// Parsing accepts the 15-character form (case-sensitive) and the 18-character form
/// (whose checksum must match, compared without regard to case); equality, ordering and
/// hashing use the 18-character form, as Salesforce advises.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SfId([u8; 18]);

impl SfId {
    /// Parses a 15- or 18-character ID. Never panics: malformed input is an [`IdError`].
    pub fn parse(input: &str) -> Result<SfId, IdError> {
        if !input.is_ascii() {
            return Err(IdError::Character(input.to_owned()));
        }
        let bytes = input.as_bytes();
        if bytes.len() != 15 && bytes.len() != 18 {
            return Err(IdError::Length(input.to_owned(), input.chars().count()));
        }
        if !bytes.iter().all(u8::is_ascii_alphanumeric) {
            return Err(IdError::Character(input.to_owned()));
        }
        let mut id = [0u8; 18];
        id[..15].copy_from_slice(&bytes[..15]);
        id[15..].copy_from_slice(&checksum(&bytes[..15]));
        if bytes.len() == 18 && !bytes[15..].eq_ignore_ascii_case(&id[15..]) {
            let expected = String::from_utf8_lossy(&id[15..]).into_owned();
            return Err(IdError::Checksum(input.to_owned(), expected));
        }
        Ok(SfId(id))
    }

    /// Parses an ID and checks that it carries the key prefix of `kind`.
    pub fn parse_kind(input: &str, kind: KeyPrefix) -> Result<SfId, IdError> {
        let id = SfId::parse(input)?;
        if id.key_prefix() != kind.prefix() {
            return Err(IdError::WrongPrefix {
                id: input.to_owned(),
                prefix: id.key_prefix().to_owned(),
                expected: kind.object_name(),
                expected_prefix: kind.prefix(),
            });
        }
        Ok(id)
    }

    /// Builds the ID of record number `number` for an object kind (numbers wrap at 62^12).
    pub fn from_number(kind: KeyPrefix, number: u64) -> SfId {
        let mut fifteen = [b'0'; 15];
        fifteen[..3].copy_from_slice(kind.prefix().as_bytes());
        let mut n = number;
        for slot in fifteen[3..].iter_mut().rev() {
            *slot = BASE62[(n % 62) as usize];
            n /= 62;
        }
        let mut id = [0u8; 18];
        id[..15].copy_from_slice(&fifteen);
        id[15..].copy_from_slice(&checksum(&fifteen));
        SfId(id)
    }

    /// The ID with the same record part under the key prefix of `kind`: how a record that
    /// exists exactly once per another (a cart's delivery group) is named after it.
    pub fn rekeyed(&self, kind: KeyPrefix) -> SfId {
        let mut fifteen = [0u8; 15];
        fifteen.copy_from_slice(&self.0[..15]);
        fifteen[..3].copy_from_slice(kind.prefix().as_bytes());
        let mut id = [0u8; 18];
        id[..15].copy_from_slice(&fifteen);
        id[15..].copy_from_slice(&checksum(&fifteen));
        SfId(id)
    }

    /// The 18-character form.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The 15-character, case-sensitive form.
    pub fn to_15(&self) -> &str {
        &self.as_str()[..15]
    }

    /// The three-character key prefix naming the object type.
    pub fn key_prefix(&self) -> &str {
        &self.as_str()[..3]
    }

    /// The object kind this ID's key prefix names, where cartflow knows it.
    pub fn kind(&self) -> Option<KeyPrefix> {
        KeyPrefix::ALL
            .iter()
            .copied()
            .find(|k| k.prefix() == self.key_prefix())
    }
}

/// The checksum suffix of a 15-character ID.
fn checksum(fifteen: &[u8]) -> [u8; 3] {
    let mut suffix = [0u8; 3];
    for (chunk, out) in fifteen.chunks(5).zip(suffix.iter_mut()) {
        let bits = chunk
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_ascii_uppercase())
            .fold(0usize, |acc, (j, _)| acc | (1 << j));
        *out = SUFFIX_ALPHABET[bits];
    }
    suffix
}

impl fmt::Display for SfId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SfId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SfId({})", self.as_str())
    }
}

impl FromStr for SfId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SfId::parse(s)
    }
}

impl Serialize for SfId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SfId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        SfId::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The object kinds cartflow stores, with their key prefixes.
///
/// `001` (Account), `005` (User), `0a6` (WebCart) and `801` (Order) are the platform's own
/// prefixes; the others are cartflow's choice, documented in `docs/architecture.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyPrefix {
    /// `Account`, prefix `001`.
    Account,
    /// `User`, prefix `005`.
    User,
    /// `WebStore`, prefix `0ZE`.
    WebStore,
    /// `WebCart`, prefix `0a6`.
    WebCart,
    /// `CartItem`, prefix `0a9`.
    CartItem,
    /// `CartCheckoutSession`, prefix `2z9`.
    CartCheckoutSession,
    /// `BackgroundOperation`, prefix `0bO`.
    BackgroundOperation,
    /// `CartValidationOutput`, prefix `0a7`.
    CartValidationOutput,
    /// `Order`, prefix `801`.
    Order,
    /// `OrderSummary`, prefix `1Os`.
    OrderSummary,
    /// `CartDeliveryGroup`, prefix `0aB`: a cart's one delivery group, whose Id is the
    /// cart's under this prefix.
    CartDeliveryGroup,
    /// `CartDeliveryGroupMethod`, prefix `2Cm`: a delivery option offered for the group.
    CartDeliveryGroupMethod,
    /// `CartTax`, prefix `0aT`: a tax on one cart line.
    CartTax,
    /// `OrderItem`, prefix `802`.
    OrderItem,
    /// `OrderDeliveryGroup`, prefix `2dg`: where an order ships, and how.
    OrderDeliveryGroup,
    /// `PaymentAuthorization`, prefix `0Xc`: the authorisation of an order's payment.
    PaymentAuthorization,
}

impl KeyPrefix {
    /// Every kind, in declaration order.
    pub const ALL: [KeyPrefix; 16] = [
        KeyPrefix::Account,
        KeyPrefix::User,
        KeyPrefix::WebStore,
        KeyPrefix::WebCart,
        KeyPrefix::CartItem,
        KeyPrefix::CartCheckoutSession,
        KeyPrefix::BackgroundOperation,
        KeyPrefix::CartValidationOutput,
        KeyPrefix::Order,
        KeyPrefix::OrderSummary,
        KeyPrefix::CartDeliveryGroup,
        KeyPrefix::CartDeliveryGroupMethod,
        KeyPrefix::CartTax,
        KeyPrefix::OrderItem,
        KeyPrefix::OrderDeliveryGroup,
        KeyPrefix::PaymentAuthorization,
    ];

    /// The three-character key prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyPrefix::Account => "001",
            KeyPrefix::User => "005",
            KeyPrefix::WebStore => "0ZE",
            KeyPrefix::WebCart => "0a6",
            KeyPrefix::CartItem => "0a9",
            KeyPrefix::CartCheckoutSession => "2z9",
            KeyPrefix::BackgroundOperation => "0bO",
            KeyPrefix::CartValidationOutput => "0a7",
            KeyPrefix::Order => "801",
            KeyPrefix::OrderSummary => "1Os",
            KeyPrefix::CartDeliveryGroup => "0aB",
            KeyPrefix::CartDeliveryGroupMethod => "2Cm",
            KeyPrefix::CartTax => "0aT",
            KeyPrefix::OrderItem => "802",
            KeyPrefix::OrderDeliveryGroup => "2dg",
            KeyPrefix::PaymentAuthorization => "0Xc",
        }
    }

    /// The Salesforce object name.
    pub fn object_name(self) -> &'static str {
        match self {
            KeyPrefix::Account => "Account",
            KeyPrefix::User => "User",
            KeyPrefix::WebStore => "WebStore",
            KeyPrefix::WebCart => "WebCart",
            KeyPrefix::CartItem => "CartItem",
            KeyPrefix::CartCheckoutSession => "CartCheckoutSession",
            KeyPrefix::BackgroundOperation => "BackgroundOperation",
            KeyPrefix::CartValidationOutput => "CartValidationOutput",
            KeyPrefix::Order => "Order",
            KeyPrefix::OrderSummary => "OrderSummary",
            KeyPrefix::CartDeliveryGroup => "CartDeliveryGroup",
            KeyPrefix::CartDeliveryGroupMethod => "CartDeliveryGroupMethod",
            KeyPrefix::CartTax => "CartTax",
            KeyPrefix::OrderItem => "OrderItem",
            KeyPrefix::OrderDeliveryGroup => "OrderDeliveryGroup",
            KeyPrefix::PaymentAuthorization => "PaymentAuthorization",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_checksum_vectors() {
        for (fifteen, suffix) in [
            ("0a6RM0000004GLz", "YAM"),
            ("0a6S700000000Am", "IAI"),
            ("0a6456789012345", "AAA"),
            ("801xx000003GlM3", "AAK"),
            ("aBcDEfgHIJKLMNO", "025"),
            ("AbCdEfGhIjKlMnO", "VKV"),
            ("aaaaaaaaaaaaaaa", "AAA"),
        ] {
            let id = SfId::parse(fifteen).unwrap();
            assert_eq!(id.as_str(), format!("{fifteen}{suffix}"));
            assert_eq!(id.to_15(), fifteen);
            assert_eq!(SfId::parse(id.as_str()).unwrap(), id);
        }
    }

    #[test]
    fn eighteen_character_suffix_is_case_insensitive_but_must_match() {
        let id = SfId::parse("0a6RM0000004GLzyam").unwrap();
        assert_eq!(id.as_str(), "0a6RM0000004GLzYAM");
        assert!(matches!(
            SfId::parse("0a6RM0000004GLzYAA"),
            Err(IdError::Checksum(_, s)) if s == "YAM"
        ));
    }

    #[test]
    fn malformed_ids_are_errors() {
        assert!(matches!(SfId::parse(""), Err(IdError::Length(_, 0))));
        assert!(matches!(
            SfId::parse("0a6RM0000004GL"),
            Err(IdError::Length(_, 14))
        ));
        assert!(matches!(
            SfId::parse("0a6RM0000004GL-"),
            Err(IdError::Character(_))
        ));
        assert!(matches!(
            SfId::parse("0a6RM0000004GLé"),
            Err(IdError::Character(_))
        ));
        assert!(matches!(
            SfId::parse_kind("801xx000003GlM3", KeyPrefix::WebCart),
            Err(IdError::WrongPrefix { .. })
        ));
    }

    #[test]
    fn generated_ids_round_trip_with_their_prefix() {
        for kind in KeyPrefix::ALL {
            for n in [0, 1, 61, 62, 3_843, u64::MAX] {
                let id = SfId::from_number(kind, n);
                assert_eq!(id.kind(), Some(kind));
                assert_eq!(SfId::parse(id.to_15()).unwrap(), id);
                assert_eq!(SfId::parse_kind(id.as_str(), kind).unwrap(), id);
            }
        }
        assert_ne!(
            SfId::from_number(KeyPrefix::WebCart, 1),
            SfId::from_number(KeyPrefix::WebCart, 2)
        );
    }
}
