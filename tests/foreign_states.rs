//! A session whose State is no step of the template its engine runs (the template changed
//! under a checkout, or the data was imported): the buyer can still leave it, and nothing
//! else moves it.

use std::sync::Arc;

mod support;

use cartflow::engine::Engine;
use cartflow::machine::{Command, Template, TransitionTable};
use cartflow::model::{CartCheckoutSession, CartStatus, KeyPrefix, SessionState, SfId};
use cartflow::sample::{self, SampleCart};
use cartflow::store::{MemoryStore, Store};
use cartflow::{CheckoutError, ErrorCode};

fn session_id() -> SfId {
    SfId::from_number(KeyPrefix::CartCheckoutSession, 900)
}

/// The sample world with the in-stock cart in checkout at `state`, run by the template
/// without Calculate Promotions.
fn engine_at(state: SessionState, processing: bool) -> Engine {
    let data = support::data::in_checkout_at(session_id(), state, processing);
    let store = Arc::new(MemoryStore::from_dataset(data).unwrap());
    Engine::new(store as Arc<dyn Store>)
        .with_integrations(sample::integrations(&sample::dataset()))
        .with_table(TransitionTable::build(Template::without_promotions()).unwrap())
}

fn cart() -> String {
    SampleCart::InStock.id().to_string()
}

fn buyer() -> String {
    sample::buyer_id().to_string()
}

fn session(engine: &Engine) -> CartCheckoutSession {
    engine.store().session(&session_id()).unwrap().unwrap()
}

#[test]
fn a_session_at_a_state_its_template_lacks_can_be_cancelled() {
    for processing in [false, true] {
        let engine = engine_at(SessionState::CalculatePromotions, processing);
        engine
            .execute(&buyer(), Command::Cancel { cart_id: cart() })
            .unwrap();
        assert!(session(&engine).is_archived, "processing {processing}");
        let cart = engine
            .store()
            .cart(&SampleCart::InStock.id())
            .unwrap()
            .unwrap();
        assert_eq!(cart.status, CartStatus::Active);
    }
}

#[test]
fn a_session_at_a_state_its_template_lacks_moves_no_further_and_is_refused_with_a_documented_code()
{
    let engine = engine_at(SessionState::CalculatePromotions, false);
    let before = session(&engine);
    let advance = Command::Advance {
        session_id: session_id().to_string(),
        state: "Shipping Cost".into(),
        exp_current_state: None,
    };
    let error = engine.execute(&buyer(), advance).unwrap_err();
    match &error {
        CheckoutError::Refused { code, status, .. } => {
            assert_eq!(*code, ErrorCode::InvalidOperation, "{error}");
            assert_eq!(*status, 403, "{error}");
        }
        other => panic!("not a documented refusal: {other:?}"),
    }
    assert_eq!(session(&engine), before);
}

#[test]
fn a_restart_archives_a_session_at_a_state_its_template_lacks() {
    let engine = engine_at(SessionState::CalculatePromotions, false);
    let start = Command::StartSession {
        cart_id: cart(),
        initial_state: None,
    };
    engine.execute(&buyer(), start).unwrap();
    assert!(session(&engine).is_archived);
    let sessions = engine
        .store()
        .sessions_of(&SampleCart::InStock.id())
        .unwrap();
    let active: Vec<_> = sessions.iter().filter(|s| !s.is_archived).collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].state, Some(SessionState::Start));
}
