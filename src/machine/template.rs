//! The checkout template: the ordered steps a session walks, as data.

use serde::{Deserialize, Serialize};

use crate::machine::Action;
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
    /// The checkout is finished.
    Terminal,
}

/// One step: the State that names it, what it does, and the State that follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The session State while in this step.
    pub state: SessionState,
    /// What the step does.
    pub kind: StepKind,
    /// The State after the step (`None` only for the terminal step).
    pub next: Option<SessionState>,
}

impl Step {
    const fn new(state: SessionState, kind: StepKind, next: SessionState) -> Step {
        Step {
            state,
            kind,
            next: Some(next),
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
        use StepKind as K;
        Template {
            name: "standard".to_owned(),
            steps: vec![
                Step::new(S::Start, K::Entry, S::ShippingAddress),
                Step::new(S::ShippingAddress, K::Screen, S::Inventory),
                Step::new(
                    S::Inventory,
                    K::Async(Action::CheckCartInventory),
                    S::ConfirmPrice,
                ),
                Step::new(
                    S::ConfirmPrice,
                    K::Async(Action::PriceCart),
                    S::CalculatePromotions,
                ),
                Step::new(
                    S::CalculatePromotions,
                    K::Async(Action::CalcCartPromotions),
                    S::ShippingCost,
                ),
                Step::new(
                    S::ShippingCost,
                    K::Async(Action::CalcCartShipment),
                    S::DeliveryMethod,
                ),
                Step::new(S::DeliveryMethod, K::Screen, S::Taxes),
                Step::new(
                    S::Taxes,
                    K::Async(Action::CalcCartTaxes),
                    S::PaymentAndBillingAddress,
                ),
                Step::new(S::PaymentAndBillingAddress, K::Screen, S::CheckoutSummary),
                Step::new(S::CheckoutSummary, K::Screen, S::CartToOrder),
                Step::new(
                    S::CartToOrder,
                    K::Async(Action::CartToOrder),
                    S::AuthorizePayment,
                ),
                Step::new(S::AuthorizePayment, K::Payment, S::ActivateOrder),
                Step::new(
                    S::ActivateOrder,
                    K::Async(Action::ActivateOrder),
                    S::OrderConfirmation,
                ),
                Step::new(S::OrderConfirmation, K::Screen, S::Complete),
                Step {
                    state: S::Complete,
                    kind: K::Terminal,
                    next: None,
                },
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
    /// where `after` led. The table built from the template validates the result. Returns
    /// false when `after` is no step of the template or `step`'s State already is one.
    pub fn insert_step(
        &mut self,
        after: SessionState,
        state: SessionState,
        kind: StepKind,
    ) -> bool {
        if self.step(state).is_some() {
            return false;
        }
        let Some(index) = self.steps.iter().position(|s| s.state == after) else {
            return false;
        };
        let next = self.steps[index].next;
        self.steps[index].next = Some(state);
        self.steps.insert(index + 1, Step { state, kind, next });
        true
    }

    /// The step a State names.
    pub fn step(&self, state: SessionState) -> Option<&Step> {
        self.steps.iter().find(|s| s.state == state)
    }

    /// The step whose async action is `action`.
    pub fn step_of(&self, action: Action) -> Option<&Step> {
        self.steps
            .iter()
            .find(|s| s.kind == StepKind::Async(action))
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

    #[test]
    fn a_store_can_insert_a_step_back() {
        let mut template = Template::without_promotions();
        assert!(template.insert_step(
            SessionState::ConfirmPrice,
            SessionState::CalculatePromotions,
            StepKind::Async(Action::CalcCartPromotions),
        ));
        assert_eq!(template.steps, Template::standard().steps);
        // Not twice, and not after a step the template lacks.
        assert!(!template.insert_step(
            SessionState::ConfirmPrice,
            SessionState::CalculatePromotions,
            StepKind::Screen,
        ));
        let mut older = Template::without_promotions();
        assert!(!older.insert_step(
            SessionState::CalculatePromotions,
            SessionState::Error,
            StepKind::Screen,
        ));
    }

    #[test]
    fn an_inserted_step_that_breaks_the_template_is_refused_by_the_table() {
        let mut template = Template::standard();
        // A second step running the inventory action.
        template.remove_step(SessionState::CalculatePromotions);
        assert!(template.insert_step(
            SessionState::ConfirmPrice,
            SessionState::CalculatePromotions,
            StepKind::Async(Action::CheckCartInventory),
        ));
        assert!(crate::machine::TransitionTable::build(template).is_err());
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
