//! The checkout session's State strings: open names, with the standard ones as constants.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::inline::InlineStr;

/// A string that names none of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {what}; expected one of: {expected}")]
pub struct ParseEnumError {
    /// What was being parsed.
    pub what: &'static str,
    /// The input.
    pub value: String,
    /// The accepted values, comma-separated.
    pub expected: String,
}

/// The most characters a State may have (Salesforce's limit on CartCheckoutSession.State).
pub const STATE_MAX_CHARS: usize = 30;

/// Room for [`STATE_MAX_CHARS`] characters of up to four UTF-8 bytes each.
const STATE_MAX_BYTES: usize = STATE_MAX_CHARS * 4;

/// Why a string cannot be a State.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateNameError {
    /// The string is empty or only whitespace.
    #[error("a State cannot be blank")]
    Blank,
    /// The string is over [`STATE_MAX_CHARS`] characters.
    #[error("{0:?} is {1} characters long; a State has at most 30")]
    TooLong(String, usize),
    /// The string holds a control character (a line break, a tab, ...).
    #[error("{0:?} holds a control character, which a State cannot")]
    ControlCharacter(String),
    /// The string starts or ends with whitespace, which a caller could not tell apart from
    /// the same name without it.
    #[error("{0:?} starts or ends with whitespace")]
    PaddedWithWhitespace(String),
}

/// CartCheckoutSession.State and NextState: the name of a template's step, or `Error`.
///
/// Any string of 1 to [`STATE_MAX_CHARS`] characters with no control character and no
/// leading or trailing whitespace: a store's own template names its own steps. The standard
/// template's names are constants (`SessionState::Inventory` is `"Inventory"`,
/// `SessionState::ConfirmPrice` is `"Confirm Price"`), and [`SessionState::STANDARD`] lists
/// them. Held inline, so a State is `Copy` like the small values it sits beside in the
/// transition table. Serializes as the string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionState(InlineStr<STATE_MAX_BYTES>);

impl SessionState {
    /// A State from a string, checked.
    pub fn new(name: &str) -> Result<SessionState, StateNameError> {
        if name.trim().is_empty() {
            return Err(StateNameError::Blank);
        }
        let chars = name.chars().count();
        if chars > STATE_MAX_CHARS {
            return Err(StateNameError::TooLong(name.to_owned(), chars));
        }
        if name.chars().any(char::is_control) {
            return Err(StateNameError::ControlCharacter(name.to_owned()));
        }
        if name.trim() != name {
            return Err(StateNameError::PaddedWithWhitespace(name.to_owned()));
        }
        Ok(SessionState(InlineStr::new(name)))
    }

    /// The State's string.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Whether this is one of the standard template's States (or `Error`).
    pub fn is_standard(&self) -> bool {
        SessionState::STANDARD.contains(self)
    }
}

macro_rules! standard_states {
    ($($name:ident => $text:literal),+ $(,)?) => {
        #[allow(non_upper_case_globals)]
        impl SessionState {
            $(
                #[doc = concat!("`", $text, "`, a State of the standard template.")]
                pub const $name: SessionState = SessionState(InlineStr::new($text));
            )+

            /// The standard template's States in its order, `Error` last.
            pub const STANDARD: &'static [SessionState] = &[$(SessionState::$name),+];
        }
    };
}

standard_states! {
    Start => "Start",
    ShippingAddress => "Shipping Address",
    Inventory => "Inventory",
    ConfirmPrice => "Confirm Price",
    CalculatePromotions => "Calculate Promotions",
    ShippingCost => "Shipping Cost",
    DeliveryMethod => "Delivery Method",
    Taxes => "Taxes",
    PaymentAndBillingAddress => "Payment And Billing Address",
    CheckoutSummary => "Checkout Summary",
    CartToOrder => "Cart To Order",
    AuthorizePayment => "Authorize Payment",
    ActivateOrder => "Activate Order",
    OrderConfirmation => "Order Confirmation",
    Complete => "Complete",
    Error => "Error",
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl FromStr for SessionState {
    type Err = StateNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionState::new(s)
    }
}

impl TryFrom<&str> for SessionState {
    type Error = StateNameError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        SessionState::new(s)
    }
}

impl PartialEq<str> for SessionState {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for SessionState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for SessionState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SessionState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sixteen_standard_states_round_trip_through_their_strings() {
        assert_eq!(SessionState::STANDARD.len(), 16);
        for &state in SessionState::STANDARD {
            assert!(state.as_str().chars().count() <= STATE_MAX_CHARS);
            assert_eq!(state.as_str().parse::<SessionState>(), Ok(state));
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(serde_json::from_str::<SessionState>(&json).unwrap(), state);
            assert!(state.is_standard());
        }
        assert_eq!(SessionState::ConfirmPrice.as_str(), "Confirm Price");
        assert_eq!(format!("{:?}", SessionState::Inventory), "\"Inventory\"");
    }

    #[test]
    fn any_name_of_one_to_thirty_characters_is_a_state() {
        for name in [
            "Credit Check",
            "Approval",
            "inventory",
            "Ü",
            &"é".repeat(30),
        ] {
            let state = SessionState::new(name).unwrap();
            assert_eq!(state.as_str(), name);
            assert!(!state.is_standard());
        }
        assert!(matches!(
            SessionState::new("This State Name Is Longer Than Thirty"),
            Err(StateNameError::TooLong(_, 37))
        ));
        assert!(matches!(
            SessionState::new(&"é".repeat(31)),
            Err(StateNameError::TooLong(_, 31))
        ));
        assert_eq!(SessionState::new(""), Err(StateNameError::Blank));
        assert_eq!(SessionState::new("   "), Err(StateNameError::Blank));
        assert!(matches!(
            SessionState::new("Credit\nCheck"),
            Err(StateNameError::ControlCharacter(_))
        ));
        assert!(matches!(
            SessionState::new(" Approval"),
            Err(StateNameError::PaddedWithWhitespace(_))
        ));
    }

    #[test]
    fn states_order_and_compare_as_their_strings() {
        let mut names = [
            "Taxes",
            "Approval",
            "Approvals",
            "Appro",
            "Credit Check",
            "Ü",
        ];
        let mut states: Vec<SessionState> = names.iter().map(|n| n.parse().unwrap()).collect();
        names.sort();
        states.sort();
        let sorted: Vec<&str> = states.iter().map(SessionState::as_str).collect();
        assert_eq!(sorted, names);
        assert_eq!(SessionState::Taxes, "Taxes");
    }
}
