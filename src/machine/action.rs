//! The eleven checkout core actions and the other events the table knows.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::machine::StepInput;
use crate::model::ProviderKind;
use crate::model::inline::InlineStr;

/// One of the eleven checkout core actions, by its invocable-action API name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Action {
    /// `checkoutSessionAction`: start (or resume) a checkout.
    #[serde(rename = "checkoutSessionAction")]
    CheckoutSession,
    /// `updateCheckoutSessionStateAction`: the compare-and-set that locks the session.
    #[serde(rename = "updateCheckoutSessionStateAction")]
    UpdateCheckoutSessionState,
    /// `checkCartInventoryAction`: the `CheckInventory` transition.
    #[serde(rename = "checkCartInventoryAction")]
    CheckCartInventory,
    /// `priceCart`.
    #[serde(rename = "priceCart")]
    PriceCart,
    /// `calcCartPromotionsAction`.
    #[serde(rename = "calcCartPromotionsAction")]
    CalcCartPromotions,
    /// `calcCartShipmentAction`.
    #[serde(rename = "calcCartShipmentAction")]
    CalcCartShipment,
    /// `calcCartTaxesAction`.
    #[serde(rename = "calcCartTaxesAction")]
    CalcCartTaxes,
    /// `cartToOrderAction`.
    #[serde(rename = "cartToOrderAction")]
    CartToOrder,
    /// `activateOrderAction`.
    #[serde(rename = "activateOrderAction")]
    ActivateOrder,
    /// `cancelCartAsyncOperation`.
    #[serde(rename = "cancelCartAsyncOperation")]
    CancelCartAsyncOperation,
    /// `setCheckoutDeliveryMethod`: the buyer's choice among the offered delivery methods,
    /// whose fee becomes the cart's charge line (synchronous).
    #[serde(rename = "setCheckoutDeliveryMethod")]
    SetCheckoutDeliveryMethod,
}

impl Action {
    /// All eleven: the ten of Salesforce's documentation, in its order, then
    /// `setCheckoutDeliveryMethod`, which the current templates call between the Delivery
    /// Method screen and the Taxes step.
    pub const ALL: [Action; 11] = [
        Action::CheckoutSession,
        Action::UpdateCheckoutSessionState,
        Action::CheckCartInventory,
        Action::PriceCart,
        Action::CalcCartPromotions,
        Action::CalcCartShipment,
        Action::CalcCartTaxes,
        Action::CartToOrder,
        Action::ActivateOrder,
        Action::CancelCartAsyncOperation,
        Action::SetCheckoutDeliveryMethod,
    ];

    /// The invocable action's API name.
    pub fn api_name(self) -> &'static str {
        match self {
            Action::CheckoutSession => "checkoutSessionAction",
            Action::UpdateCheckoutSessionState => "updateCheckoutSessionStateAction",
            Action::CheckCartInventory => "checkCartInventoryAction",
            Action::PriceCart => "priceCart",
            Action::CalcCartPromotions => "calcCartPromotionsAction",
            Action::CalcCartShipment => "calcCartShipmentAction",
            Action::CalcCartTaxes => "calcCartTaxesAction",
            Action::CartToOrder => "cartToOrderAction",
            Action::ActivateOrder => "activateOrderAction",
            Action::CancelCartAsyncOperation => "cancelCartAsyncOperation",
            Action::SetCheckoutDeliveryMethod => "setCheckoutDeliveryMethod",
        }
    }

    /// Looks an action up by API name; also takes the `updateCheckoutSessionAction` spelling
    /// that one help page uses.
    pub fn from_api_name(name: &str) -> Option<Action> {
        if name == "updateCheckoutSessionAction" {
            return Some(Action::UpdateCheckoutSessionState);
        }
        Action::ALL.into_iter().find(|a| a.api_name() == name)
    }

    /// The provider kind an async cart action runs, if it is one.
    pub fn provider_kind(self) -> Option<ProviderKind> {
        ProviderAction::of(self).map(ProviderAction::kind)
    }
}

/// An async cart action that runs a provider of its kind: the actions
/// [`Command::RunStep`](crate::machine::Command::RunStep) takes. The order actions are not
/// among them: `cartToOrderAction` and `activateOrderAction` each have a command of their own,
/// so their inputs (`orderStatus`, `runAsync`) are checked on every path that fires them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ProviderAction {
    /// `checkCartInventoryAction`.
    #[serde(rename = "checkCartInventoryAction")]
    CheckCartInventory,
    /// `priceCart`.
    #[serde(rename = "priceCart")]
    PriceCart,
    /// `calcCartPromotionsAction`.
    #[serde(rename = "calcCartPromotionsAction")]
    CalcCartPromotions,
    /// `calcCartShipmentAction`.
    #[serde(rename = "calcCartShipmentAction")]
    CalcCartShipment,
    /// `calcCartTaxesAction`.
    #[serde(rename = "calcCartTaxesAction")]
    CalcCartTaxes,
}

impl ProviderAction {
    /// All five, in the order of [`Action::ALL`].
    pub const ALL: [ProviderAction; 5] = [
        ProviderAction::CheckCartInventory,
        ProviderAction::PriceCart,
        ProviderAction::CalcCartPromotions,
        ProviderAction::CalcCartShipment,
        ProviderAction::CalcCartTaxes,
    ];

    /// The core action it is.
    pub fn action(self) -> Action {
        match self {
            ProviderAction::CheckCartInventory => Action::CheckCartInventory,
            ProviderAction::PriceCart => Action::PriceCart,
            ProviderAction::CalcCartPromotions => Action::CalcCartPromotions,
            ProviderAction::CalcCartShipment => Action::CalcCartShipment,
            ProviderAction::CalcCartTaxes => Action::CalcCartTaxes,
        }
    }

    /// The provider action `action` is, if it is one.
    pub fn of(action: Action) -> Option<ProviderAction> {
        ProviderAction::ALL
            .into_iter()
            .find(|p| p.action() == action)
    }

    /// The kind of provider it runs.
    pub fn kind(self) -> ProviderKind {
        match self {
            ProviderAction::CheckCartInventory => ProviderKind::Inventory,
            ProviderAction::PriceCart => ProviderKind::Price,
            ProviderAction::CalcCartPromotions => ProviderKind::Promotions,
            ProviderAction::CalcCartShipment => ProviderKind::Shipment,
            ProviderAction::CalcCartTaxes => ProviderKind::Tax,
        }
    }
}

impl fmt::Display for ProviderAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.action().fmt(f)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.api_name())
    }
}

/// The longest name a custom action may have (Salesforce's limit on an Apex class name).
pub const CUSTOM_ACTION_MAX_CHARS: usize = 40;

/// The name of a custom async step's action, as callers invoke it at
/// `/actions/custom/apex/{name}` (where Salesforce serves invocable Apex actions): an ASCII
/// letter, then at most 39 ASCII letters, digits or `_`. A template names it; the step's
/// provider is registered under a name of its own.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomAction(InlineStr<CUSTOM_ACTION_MAX_CHARS>);

/// Why a string cannot be a custom action's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a custom action name: an ASCII letter, then at most 39 ASCII letters, digits or _"
)]
pub struct CustomActionNameError(pub String);

impl CustomAction {
    /// A custom action's name, checked.
    pub fn new(name: &str) -> Result<CustomAction, CustomActionNameError> {
        if is_identifier(name, CUSTOM_ACTION_MAX_CHARS) {
            Ok(CustomAction(InlineStr::new(name)))
        } else {
            Err(CustomActionNameError(name.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// Whether `name` is an ASCII letter, then ASCII letters, digits or `_`, `max` in all.
pub(crate) fn is_identifier(name: &str, max: usize) -> bool {
    name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Display for CustomAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CustomAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::str::FromStr for CustomAction {
    type Err = CustomActionNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CustomAction::new(s)
    }
}

impl Serialize for CustomAction {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CustomAction {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        CustomAction::new(&text).map_err(serde::de::Error::custom)
    }
}

/// What fires a transition: an action, a screen step's write, or a worker's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Event {
    /// A core action invoked by a user.
    Action(Action),
    /// A custom async step's action, invoked by a user.
    Custom(CustomAction),
    /// A screen step writes the next State onto the session.
    Advance,
    /// The buyer changes the cart's lines; a cart in checkout leaves it first, as a cancel
    /// would (Salesforce documents that an edit during checkout cancels it).
    Edit,
    /// The last screen step (Order Confirmation) completes the checkout: the cart closes and
    /// the session is archived at `Complete`.
    Close,
    /// A screen step writes the buyer's input (address, delivery method, payment token) onto
    /// the cart; no state moves.
    Input,
    /// The buyer's input changes an input that a step the session has passed consumed: the
    /// session goes back to the first such step, and what was computed from the old value
    /// is dropped. Fired in place of [`Event::Input`] (or of `setCheckoutDeliveryMethod`)
    /// when the change moves the session.
    Change(StepInput),
    /// The payment step submits the buyer's payment token for authorisation.
    Authorize,
    /// A worker claims a New operation.
    Claim,
    /// A worker extends the lease of the operation it runs.
    Heartbeat,
    /// A sweeper returns an operation whose lease ran out to New, for another attempt.
    Requeue,
    /// A worker reports the integration passed.
    Succeed,
    /// A worker reports the integration failed (or the provider errored, panicked, timed out).
    Fail,
}

impl Event {
    /// The label used in diagrams and history.
    pub fn label(&self) -> &str {
        match self {
            Event::Action(action) => action.api_name(),
            Event::Custom(action) => action.as_str(),
            Event::Advance => "advance (screen)",
            Event::Input => "buyer input (screen)",
            Event::Change(StepInput::Lines) => "lines changed",
            Event::Change(StepInput::DeliveryAddress) => "delivery address changed",
            Event::Change(StepInput::DeliveryMethod) => "delivery method changed",
            Event::Change(StepInput::Payment) => "payment changed",
            Event::Close => "complete checkout (screen)",
            Event::Edit => "edit cart",
            Event::Authorize => "authorize payment",
            Event::Claim => "claim",
            Event::Heartbeat => "heartbeat",
            Event::Requeue => "lease expired (retry)",
            Event::Succeed => "complete",
            Event::Fail => "fail",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_actions_are_the_five_provider_steps_and_no_order_action() {
        let kinds: Vec<ProviderKind> = ProviderAction::ALL.iter().map(|p| p.kind()).collect();
        assert_eq!(
            kinds,
            [
                ProviderKind::Inventory,
                ProviderKind::Price,
                ProviderKind::Promotions,
                ProviderKind::Shipment,
                ProviderKind::Tax,
            ]
        );
        for provider in ProviderAction::ALL {
            assert_eq!(ProviderAction::of(provider.action()), Some(provider));
            // Serialised (in commands) exactly as the action it is.
            assert_eq!(
                serde_json::to_value(provider).unwrap(),
                serde_json::to_value(provider.action()).unwrap()
            );
        }
        for action in [
            Action::CheckoutSession,
            Action::UpdateCheckoutSessionState,
            Action::CartToOrder,
            Action::ActivateOrder,
            Action::CancelCartAsyncOperation,
        ] {
            assert_eq!(ProviderAction::of(action), None, "{action}");
            assert_eq!(action.provider_kind(), None, "{action}");
        }
    }
}
