//! The checkout session's State strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

macro_rules! session_states {
    ($($variant:ident => $text:literal),+ $(,)?) => {
        /// CartCheckoutSession.State and NextState: the standard template's step names.
        ///
        /// Serializes as the exact Salesforce string (`"Shipping Address"`, `"Confirm Price"`, ...).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum SessionState {
            $(
                #[doc = concat!("`", $text, "`")]
                $variant,
            )+
        }

        impl SessionState {
            /// Every state, in the standard template's order (`Error` last).
            pub const ALL: &'static [SessionState] = &[$(SessionState::$variant),+];

            /// The exact Salesforce string.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(SessionState::$variant => $text,)+
                }
            }
        }
    };
}

session_states! {
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

impl FromStr for SessionState {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionState::ALL
            .iter()
            .copied()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| ParseEnumError {
                what: "checkout session state",
                value: s.to_owned(),
                expected: SessionState::ALL
                    .iter()
                    .map(|state| state.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl Serialize for SessionState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SessionState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_states_round_trip_through_their_strings() {
        assert_eq!(SessionState::ALL.len(), 16);
        for &state in SessionState::ALL {
            assert!(state.as_str().len() <= 30);
            assert_eq!(state.as_str().parse::<SessionState>(), Ok(state));
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(serde_json::from_str::<SessionState>(&json).unwrap(), state);
        }
        assert!("inventory".parse::<SessionState>().is_err());
    }
}
