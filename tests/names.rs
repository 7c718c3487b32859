//! Actions display as the API names Salesforce gives them, in messages and logs alike.

use cartflow::machine::{Action, ProviderAction};

#[test]
fn every_action_displays_as_its_api_name() {
    for action in Action::ALL {
        assert_eq!(action.to_string(), action.api_name());
    }
    assert_eq!(Action::ALL[0].to_string(), "checkoutSessionAction");
}

#[test]
fn every_provider_action_displays_as_its_actions_api_name() {
    for step in ProviderAction::ALL {
        assert_eq!(step.to_string(), step.action().api_name());
    }
    assert_eq!(ProviderAction::ALL[1].to_string(), "priceCart");
}

/// A custom action debugs as its quoted name, so a message that prints it names the action.
#[test]
fn a_custom_action_debugs_as_its_quoted_name() {
    let action = cartflow::machine::CustomAction::new("creditCheck").unwrap();
    assert_eq!(format!("{action:?}"), "\"creditCheck\"");
}
