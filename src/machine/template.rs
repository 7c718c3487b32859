//! The checkout template: the ordered steps a session walks, as data.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::machine::{Action, CustomAction, Event};
use crate::model::SessionState;

/// What a step of the template does when the session is in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StepKind {
    /// The entry state a new session starts in; the flow moves on at once.
    Entry,
    /// The buyer fills in a screen; the flow then writes the next State onto the session.
    Screen,
    /// An async core action: lock with Update Checkout Session, invoke the action, wait for
    /// its background operation.
    Async(Action),
    /// The payment integration (not a core action): authorises the buyer's payment token.
    Payment,
    /// A store's own async step: invoked as the custom action it names, run by the provider
    /// the step's [`Step::provider`] names, with the same lock, operation and outcome as an
    /// async core action.
    Custom(CustomAction),
    /// The checkout is finished.
    Terminal,
}

/// Something the buyer gives during checkout that a step computes its result from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepInput {
    /// The cart's lines: products, quantities and prices.
    Lines,
    /// Where the order is delivered.
    DeliveryAddress,
    /// The delivery method the buyer chose among those offered.
    DeliveryMethod,
    /// The buyer's payment token (and billing details).
    Payment,
}

impl StepInput {
    /// The inputs a buyer changes without leaving checkout (a change of the lines is an
    /// edit of the cart, which takes it out of checkout).
    pub const CHANGEABLE: [StepInput; 3] = [
        StepInput::DeliveryAddress,
        StepInput::DeliveryMethod,
        StepInput::Payment,
    ];

    /// All four, in the order a checkout collects them.
    pub const ALL: [StepInput; 4] = [
        StepInput::Lines,
        StepInput::DeliveryAddress,
        StepInput::DeliveryMethod,
        StepInput::Payment,
    ];

    /// The name a template file gives it (`delivery_address`).
    pub fn as_str(self) -> &'static str {
        match self {
            StepInput::Lines => "lines",
            StepInput::DeliveryAddress => "delivery_address",
            StepInput::DeliveryMethod => "delivery_method",
            StepInput::Payment => "payment",
        }
    }

    /// The input a template file's name names.
    pub fn from_name(name: &str) -> Option<StepInput> {
        StepInput::ALL
            .into_iter()
            .find(|input| input.as_str() == name)
    }
}

impl fmt::Display for StepInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StepKind {
    /// The inputs a step of this kind must consume at least: what its core action (or the
    /// payment integration) reads. Empty for custom steps, which declare their own, and for
    /// the steps that compute nothing.
    pub fn required_inputs(self) -> &'static [StepInput] {
        use StepInput as I;
        match self {
            StepKind::Async(
                Action::CheckCartInventory | Action::PriceCart | Action::CalcCartPromotions,
            ) => &[I::Lines],
            StepKind::Async(Action::CalcCartShipment) => &[I::Lines, I::DeliveryAddress],
            StepKind::Async(Action::CalcCartTaxes) => {
                &[I::Lines, I::DeliveryAddress, I::DeliveryMethod]
            }
            StepKind::Async(Action::CartToOrder) => &StepInput::ALL,
            StepKind::Payment => &[I::Payment],
            StepKind::Async(_)
            | StepKind::Custom(_)
            | StepKind::Entry
            | StepKind::Screen
            | StepKind::Terminal => &[],
        }
    }

    /// Whether a step of this kind computes something (an async, payment or custom step),
    /// and so may consume inputs.
    pub fn computes(self) -> bool {
        matches!(
            self,
            StepKind::Async(_) | StepKind::Payment | StepKind::Custom(_)
        )
    }
}

/// One step: the State that names it, what it does, the name of its transition, the inputs
/// it consumes, and the State that follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The session State while in this step.
    pub state: SessionState,
    /// What the step does.
    pub kind: StepKind,
    /// The name of the transition the step's own event fires (`CheckInventory` for the
    /// inventory step): set on the async and payment steps, and only there. Diagrams show it
    /// beside the event's API name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<String>,
    /// The name a custom step's provider is registered under (in the library's
    /// [`Integrations`](crate::integrations::Integrations) or in `integrations.json`): set on
    /// custom steps, and only there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The inputs the step computes its result from: declared on async, payment and custom
    /// steps (a core step at least those of [`StepKind::required_inputs`]), never on the
    /// entry, screen or terminal step. A change of one of them after the step has run makes
    /// its result stale.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub consumes: BTreeSet<StepInput>,
    /// The inputs a screen step asks the buyer for: declared on screens only. The screen
    /// refuses to move on while one of them is missing (a delivery method only when options
    /// were offered, a payment only when the cart's total is not zero).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub collects: BTreeSet<StepInput>,
    /// The State after the step (`None` only for the terminal step).
    pub next: Option<SessionState>,
}

impl Step {
    /// A step of `kind` in `state`, with no transition name, no inputs and no next step yet.
    pub fn new(state: SessionState, kind: StepKind) -> Step {
        Step {
            state,
            kind,
            transition: None,
            provider: None,
            consumes: BTreeSet::new(),
            collects: BTreeSet::new(),
            next: None,
        }
    }

    /// The screen step asking for `inputs` (in place of any it asked for before).
    pub fn collecting(self, inputs: &[StepInput]) -> Step {
        Step {
            collects: inputs.iter().copied().collect(),
            ..self
        }
    }

    /// The step consuming `inputs` (in place of any it consumed before).
    pub fn consuming(self, inputs: &[StepInput]) -> Step {
        Step {
            consumes: inputs.iter().copied().collect(),
            ..self
        }
    }

    /// A custom async step in `state`: invoked as `action`, its transition named `transition`,
    /// run by the provider registered as `provider`.
    pub fn custom(
        state: SessionState,
        action: CustomAction,
        transition: &str,
        provider: &str,
    ) -> Step {
        Step {
            provider: Some(provider.to_owned()),
            ..Step::new(state, StepKind::Custom(action)).named(transition)
        }
    }

    /// The step with its transition named `name`.
    pub fn named(self, name: &str) -> Step {
        Step {
            transition: Some(name.to_owned()),
            ..self
        }
    }

    /// The event the step fires of its own: its async action, or the payment step's
    /// authorisation. `None` for the entry, screen and terminal steps.
    pub fn own_event(&self) -> Option<Event> {
        match self.kind {
            StepKind::Async(action) => Some(Event::Action(action)),
            StepKind::Payment => Some(Event::Authorize),
            StepKind::Custom(action) => Some(Event::Custom(action)),
            StepKind::Entry | StepKind::Screen | StepKind::Terminal => None,
        }
    }

    /// The step leading to `next`.
    pub fn then(self, next: SessionState) -> Step {
        Step {
            next: Some(next),
            ..self
        }
    }
}

/// A checkout template: a named list of steps. Build a
/// [`TransitionTable`](crate::machine::TransitionTable) from it to validate and run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// A name for diagrams and errors.
    pub name: String,
    /// The steps, entry first.
    pub steps: Vec<Step>,
}

impl Template {
    /// The standard B2B checkout template, with `Calculate Promotions`.
    pub fn standard() -> Template {
        use SessionState as S;
        use StepInput as I;
        use StepKind as K;
        Template {
            name: "standard".to_owned(),
            steps: vec![
                Step::new(S::Start, K::Entry).then(S::ShippingAddress),
                Step::new(S::ShippingAddress, K::Screen).then(S::Inventory),
                Step::new(S::Inventory, K::Async(Action::CheckCartInventory))
                    .named("CheckInventory")
                    .consuming(&[I::Lines])
                    .then(S::ConfirmPrice),
                Step::new(S::ConfirmPrice, K::Async(Action::PriceCart))
                    .named("PriceCart")
                    .consuming(&[I::Lines])
                    .then(S::CalculatePromotions),
                Step::new(S::CalculatePromotions, K::Async(Action::CalcCartPromotions))
                    .named("CalculatePromotions")
                    .consuming(&[I::Lines])
                    .then(S::ShippingCost),
                Step::new(S::ShippingCost, K::Async(Action::CalcCartShipment))
                    .named("CalculateShipping")
                    .consuming(&[I::Lines, I::DeliveryAddress])
                    .then(S::DeliveryMethod),
                Step::new(S::DeliveryMethod, K::Screen)
                    .collecting(&[I::DeliveryMethod])
                    .then(S::Taxes),
                Step::new(S::Taxes, K::Async(Action::CalcCartTaxes))
                    .named("CalculateTaxes")
                    .consuming(&[I::Lines, I::DeliveryAddress, I::DeliveryMethod])
                    .then(S::PaymentAndBillingAddress),
                Step::new(S::PaymentAndBillingAddress, K::Screen)
                    .collecting(&[I::Payment])
                    .then(S::CheckoutSummary),
                Step::new(S::CheckoutSummary, K::Screen).then(S::CartToOrder),
                Step::new(S::CartToOrder, K::Async(Action::CartToOrder))
                    .named("CartToOrder")
                    .consuming(&StepInput::ALL)
                    .then(S::AuthorizePayment),
                Step::new(S::AuthorizePayment, K::Payment)
                    .named("AuthorizePayment")
                    .consuming(&[I::Payment])
                    .then(S::ActivateOrder),
                Step::new(S::ActivateOrder, K::Async(Action::ActivateOrder))
                    .named("ActivateOrder")
                    .then(S::OrderConfirmation),
                Step::new(S::OrderConfirmation, K::Screen).then(S::Complete),
                Step::new(S::Complete, K::Terminal),
            ],
        }
    }

    /// The older template, without the `Calculate Promotions` step.
    pub fn without_promotions() -> Template {
        let mut template = Template::standard();
        template.name = "standard (no promotions)".to_owned();
        template.remove_step(SessionState::CalculatePromotions);
        template
    }

    /// Removes a step, joining its predecessors to its successor. Returns false when absent.
    pub fn remove_step(&mut self, state: SessionState) -> bool {
        let Some(index) = self.steps.iter().position(|s| s.state == state) else {
            return false;
        };
        let removed = self.steps.remove(index);
        for step in &mut self.steps {
            if step.next == Some(state) {
                step.next = removed.next;
            }
        }
        true
    }

    /// Inserts `step` after the step `after`: `after` leads to the new step, which leads
    /// where `after` led (whatever `next` `step` had is replaced). The table built from the
    /// template validates the result. Returns false when `after` is no step of the template
    /// or `step`'s State already is one.
    pub fn insert_step(&mut self, after: SessionState, mut step: Step) -> bool {
        if self.step(step.state).is_some() {
            return false;
        }
        let Some(index) = self.steps.iter().position(|s| s.state == after) else {
            return false;
        };
        step.next = self.steps[index].next.replace(step.state);
        self.steps.insert(index + 1, step);
        true
    }

    /// The step a State names.
    pub fn step(&self, state: SessionState) -> Option<&Step> {
        self.steps.iter().find(|s| s.state == state)
    }

    /// The custom step invoked as `action`.
    pub fn custom_step(&self, action: CustomAction) -> Option<&Step> {
        self.steps
            .iter()
            .find(|s| s.kind == StepKind::Custom(action))
    }

    /// The template's custom steps, in order, each with the custom action it is invoked as.
    pub fn custom_steps(&self) -> impl Iterator<Item = (CustomAction, &Step)> {
        self.steps.iter().filter_map(|step| match step.kind {
            StepKind::Custom(action) => Some((action, step)),
            _ => None,
        })
    }

    /// The step whose async action is `action`.
    pub fn step_of(&self, action: Action) -> Option<&Step> {
        self.steps
            .iter()
            .find(|s| s.kind == StepKind::Async(action))
    }

    /// The name of the transition `event` fires, when a step of the template names it.
    pub fn transition_name(&self, event: Event) -> Option<&str> {
        self.steps
            .iter()
            .find(|s| s.own_event() == Some(event))
            .and_then(|s| s.transition.as_deref())
    }

    /// The steps in the order a session walks them: from the entry, each step's `next`
    /// after it, until the terminal step (or a step already walked, or a `next` the template
    /// lacks, which a validated template never has).
    pub fn walk(&self) -> Vec<&Step> {
        let mut walked: Vec<&Step> = Vec::new();
        let mut at = self.entry();
        while let Some(step) = at.and_then(|state| self.step(state)) {
            if walked.iter().any(|s| s.state == step.state) {
                break;
            }
            walked.push(step);
            at = step.next;
        }
        walked
    }

    /// The steps a session walks before an order exists: from the entry through the step
    /// that makes the order (which has not run while the session is at it), or every
    /// step but the terminal one when none makes an order. The buyer's input may change
    /// only here: afterwards the order is what the buyer pays for.
    pub fn before_order(&self) -> Vec<&Step> {
        let walked = self.walk();
        let makes_order = walked
            .iter()
            .position(|s| s.kind == StepKind::Async(Action::CartToOrder));
        walked
            .into_iter()
            .enumerate()
            .take_while(|(index, _)| makes_order.is_none_or(|order| *index <= order))
            .map(|(_, step)| step)
            .filter(|step| step.kind != StepKind::Terminal)
            .collect()
    }

    /// The entry step's State.
    pub fn entry(&self) -> Option<SessionState> {
        self.steps
            .iter()
            .find(|s| s.kind == StepKind::Entry)
            .map(|s| s.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn promotions() -> Step {
        Step::new(
            SessionState::CalculatePromotions,
            StepKind::Async(Action::CalcCartPromotions),
        )
        .named("CalculatePromotions")
        .consuming(&[StepInput::Lines])
    }

    #[test]
    fn a_store_can_insert_a_step_back() {
        let mut template = Template::without_promotions();
        assert!(template.insert_step(SessionState::ConfirmPrice, promotions()));
        assert_eq!(template.steps, Template::standard().steps);
        // Not twice, and not after a step the template lacks.
        assert!(!template.insert_step(
            SessionState::ConfirmPrice,
            Step::new(SessionState::CalculatePromotions, StepKind::Screen),
        ));
        let mut older = Template::without_promotions();
        assert!(!older.insert_step(
            SessionState::CalculatePromotions,
            Step::new(SessionState::Error, StepKind::Screen),
        ));
    }

    #[test]
    fn an_inserted_step_that_breaks_the_template_is_refused_by_the_table() {
        let mut template = Template::standard();
        // A second step running the inventory action.
        template.remove_step(SessionState::CalculatePromotions);
        assert!(
            template.insert_step(
                SessionState::ConfirmPrice,
                Step::new(
                    SessionState::CalculatePromotions,
                    StepKind::Async(Action::CheckCartInventory),
                )
                .named("CheckInventoryAgain")
                .consuming(&[StepInput::Lines]),
            )
        );
        assert_eq!(
            crate::machine::TransitionTable::build(template).unwrap_err(),
            crate::machine::TableError::Duplicate("checkCartInventoryAction".into())
        );
    }

    #[test]
    fn the_older_template_skips_promotions() {
        let older = Template::without_promotions();
        assert!(older.step(SessionState::CalculatePromotions).is_none());
        assert_eq!(
            older.step(SessionState::ConfirmPrice).unwrap().next,
            Some(SessionState::ShippingCost)
        );
    }
}
