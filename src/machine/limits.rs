//! The limits of buyer-written text: the longest value each field takes and the characters
//! it refuses. The engine checks every user command against this table before it reads or
//! writes anything, so an over-long value or a control character gets the same answer on
//! every store (PostgreSQL cannot store a NUL; SQLite and memory would).

use crate::error::CheckoutError;
use crate::machine::{CartEdit, CheckoutDetails, Command};

/// One buyer-written field: the name callers know it by and the longest value it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldLimit {
    /// The field as callers name it (a record field, `DeliverTo.Street`, or an action input).
    pub field: &'static str,
    /// The most characters (Unicode scalar values) the field holds.
    pub max_chars: usize,
    /// Whether line breaks (`\n`, `\r`) are allowed: only in a text area (the street).
    pub multiline: bool,
}

const fn limit(field: &'static str, max_chars: usize) -> FieldLimit {
    FieldLimit {
        field,
        max_chars,
        multiline: false,
    }
}

/// `DeliverTo.Street`: Salesforce's Address Street, a text area of 255 characters.
pub const STREET: FieldLimit = FieldLimit {
    field: "DeliverTo.Street",
    max_chars: 255,
    multiline: true,
};
/// `DeliverTo.City`: Salesforce's Address City, 40 characters.
pub const CITY: FieldLimit = limit("DeliverTo.City", 40);
/// `DeliverTo.StateCode`: room for an ISO 3166-2 subdivision code.
pub const STATE_CODE: FieldLimit = limit("DeliverTo.StateCode", 10);
/// `DeliverTo.PostalCode`: Salesforce's Address PostalCode, 20 characters.
pub const POSTAL_CODE: FieldLimit = limit("DeliverTo.PostalCode", 20);
/// `DeliverTo.CountryCode`: room for an ISO 3166 country code.
pub const COUNTRY_CODE: FieldLimit = limit("DeliverTo.CountryCode", 10);
/// `DeliveryMethodId`: an Id, 18 characters.
pub const DELIVERY_METHOD_ID: FieldLimit = limit("DeliveryMethodId", 18);
/// `PaymentToken`: a gateway token, 255 characters (the length of a Salesforce text field).
pub const PAYMENT_TOKEN: FieldLimit = limit("PaymentToken", 255);
/// A session's `State` (a screen step's PATCH): Salesforce's 30 characters.
pub const STATE: FieldLimit = limit("State", 30);
/// `checkoutSessionAction`'s `initialState`: a State, 30 characters.
pub const INITIAL_STATE: FieldLimit = limit("initialState", 30);
/// `updateCheckoutSessionStateAction`'s `nextState`: a NextState, 30 characters.
pub const NEXT_STATE: FieldLimit = limit("nextState", 30);
/// `expCurrentState` of a session update or a screen step: a State, 30 characters.
pub const EXP_CURRENT_STATE: FieldLimit = limit("expCurrentState", 30);
/// `activateOrderAction`'s `orderStatus`: an Order Status value, 40 characters.
pub const ORDER_STATUS: FieldLimit = limit("orderStatus", 40);
/// `activateOrderAction`'s `orderLifeCycleType`: a picklist value, 40 characters, as
/// `orderStatus`.
pub const ORDER_LIFE_CYCLE_TYPE: FieldLimit = limit("orderLifeCycleType", 40);
/// A new cart line's `Sku`: 255 characters.
pub const SKU: FieldLimit = limit("Sku", 255);
/// The `CartItemId` a line edit names: an Id, 18 characters.
pub const CART_ITEM_ID: FieldLimit = limit("CartItemId", 18);

/// Every limited field, in the order they are checked.
pub const FIELD_LIMITS: [FieldLimit; 15] = [
    STREET,
    CITY,
    STATE_CODE,
    POSTAL_CODE,
    COUNTRY_CODE,
    DELIVERY_METHOD_ID,
    PAYMENT_TOKEN,
    STATE,
    INITIAL_STATE,
    NEXT_STATE,
    EXP_CURRENT_STATE,
    ORDER_STATUS,
    ORDER_LIFE_CYCLE_TYPE,
    SKU,
    CART_ITEM_ID,
];

/// Checks every buyer-written text of `command`: the first field over its maximum is
/// `STRING_TOO_LONG`, the first holding a control character `INVALID_INPUT`; both name the
/// field. Record IDs of the target are not checked here: a malformed one keeps its
/// documented invalid-ID refusal.
pub fn check(command: &Command) -> Result<(), CheckoutError> {
    texts_of(command)
        .into_iter()
        .try_for_each(|(limit, value)| check_text(limit, value))
}

/// One value against its field's limit.
pub fn check_text(limit: FieldLimit, value: &str) -> Result<(), CheckoutError> {
    if value.chars().count() > limit.max_chars {
        return Err(CheckoutError::StringTooLong {
            field: limit.field,
            max_chars: limit.max_chars,
        });
    }
    let refused = |c: char| c.is_control() && !(limit.multiline && matches!(c, '\n' | '\r'));
    if value.chars().any(refused) {
        return Err(CheckoutError::ControlCharacter { field: limit.field });
    }
    Ok(())
}

/// The buyer-written texts a command carries, each with its field's limit.
fn texts_of(command: &Command) -> Vec<(FieldLimit, &str)> {
    let given: Vec<(FieldLimit, Option<&String>)> = match command {
        Command::StartSession { initial_state, .. } => {
            vec![(INITIAL_STATE, initial_state.as_ref())]
        }
        Command::UpdateSession {
            next_state,
            exp_current_state,
            ..
        } => vec![
            (NEXT_STATE, Some(next_state)),
            (EXP_CURRENT_STATE, exp_current_state.as_ref()),
        ],
        Command::Advance {
            state,
            exp_current_state,
            ..
        } => vec![
            (STATE, Some(state)),
            (EXP_CURRENT_STATE, exp_current_state.as_ref()),
        ],
        Command::SetDetails { details, .. } => return details_texts(details),
        Command::EditCart { edit, .. } => match edit {
            CartEdit::AddItem { sku, .. } => vec![(SKU, Some(sku))],
            CartEdit::SetQuantity { item_id, .. } | CartEdit::RemoveItem { item_id } => {
                vec![(CART_ITEM_ID, Some(item_id))]
            }
        },
        Command::ActivateOrder {
            order_status,
            order_life_cycle_type,
            ..
        } => vec![
            (ORDER_STATUS, order_status.as_ref()),
            (ORDER_LIFE_CYCLE_TYPE, order_life_cycle_type.as_ref()),
        ],
        _ => Vec::new(),
    };
    given
        .into_iter()
        .filter_map(|(limit, value)| value.map(|v| (limit, v.as_str())))
        .collect()
}

fn details_texts(details: &CheckoutDetails) -> Vec<(FieldLimit, &str)> {
    let mut texts = Vec::new();
    if let Some(address) = &details.deliver_to {
        texts.push((STREET, address.street.as_str()));
        texts.push((CITY, address.city.as_str()));
        if let Some(code) = &address.state_code {
            texts.push((STATE_CODE, code.as_str()));
        }
        texts.push((POSTAL_CODE, address.postal_code.as_str()));
        texts.push((COUNTRY_CODE, address.country_code.as_str()));
    }
    if let Some(method) = &details.delivery_method_id {
        texts.push((DELIVERY_METHOD_ID, method.as_str()));
    }
    if let Some(token) = &details.payment_token {
        texts.push((PAYMENT_TOKEN, token.as_str()));
    }
    texts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn a_value_at_its_maximum_passes_and_one_more_character_does_not() {
        for limit in FIELD_LIMITS {
            let at = "é".repeat(limit.max_chars);
            assert_eq!(check_text(limit, &at), Ok(()), "{}", limit.field);
            let over = check_text(limit, &format!("{at}x")).unwrap_err();
            assert_eq!(over.code(), ErrorCode::StringTooLong, "{}", limit.field);
            assert_eq!(over.field(), Some(limit.field));
        }
    }

    #[test]
    fn control_characters_are_refused_and_line_breaks_only_outside_the_street() {
        for limit in FIELD_LIMITS {
            for bad in ["a\0b", "a\tb", "\u{7f}", "\u{9b}"] {
                let err = check_text(limit, bad).unwrap_err();
                assert_eq!(err.code(), ErrorCode::InvalidInput, "{}", limit.field);
                assert_eq!(err.field(), Some(limit.field));
            }
            assert_eq!(check_text(limit, "a\nb").is_ok(), limit.multiline);
        }
        assert!(STREET.multiline && FIELD_LIMITS.iter().filter(|l| l.multiline).count() == 1);
    }
}
