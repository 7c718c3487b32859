//! A store's own checkout step: the credit-check template (`examples/templates/credit-check.json`)
//! adds a custom async step, "Credit Check", run by a provider the store registers by name.
//! The provider here refuses the first call and passes the second: the buyer's first checkout
//! ends in Error with the provider's message, the restarted one reaches an activated order.
//!
//! Run with `cargo run --example custom_step`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cartflow::flow::{BuyerInput, Drive, Waiting, drive};
use cartflow::integrations::{IntegrationRequest, ProviderError, Verdict};
use cartflow::machine::{Command, TransitionTable, ValidationMessage};
use cartflow::model::Level;
use cartflow::sample::{self, SampleCart};
use cartflow::{Engine, MemoryStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let table = TransitionTable::from_json(include_str!("templates/credit-check.json"))?;
    // The template's Credit Check step names the provider `credit-limit`; register one of our
    // own under that name, for the sample store.
    let calls = Arc::new(AtomicUsize::new(0));
    let credit_check = {
        let calls = Arc::clone(&calls);
        move |request: &IntegrationRequest| -> Result<Verdict, ProviderError> {
            if calls.fetch_add(1, Ordering::SeqCst) > 0 {
                return Ok(Verdict::Passed);
            }
            Ok(Verdict::Failed(vec![ValidationMessage {
                level: Level::Error,
                message: "Your account's credit is under review: try again in a moment.".into(),
                related_entity_id: Some(request.cart.id),
            }]))
        }
    };
    let data = sample::dataset();
    let mut integrations = sample::integrations(&data);
    integrations.set_custom(sample::store_id(), "credit-limit", Arc::new(credit_check));
    integrations.check_template(table.template(), [sample::store_id()])?;
    let engine = Engine::new(Arc::new(MemoryStore::from_dataset(data)?))
        .with_integrations(integrations)
        .with_table(table);

    let buyer = sample::buyer_id().to_string();
    let cart = SampleCart::InStock.id();
    let input = BuyerInput {
        deliver_to: Some(sample::denver()),
        delivery_method_id: None,
        payment_token: Some(sample::GOOD_TOKEN.into()),
        place_order: true,
    };
    for attempt in 1..=2 {
        match drive(&engine, &buyer, &cart, &input, Waiting::RunInline)? {
            Drive::Failed { outputs, .. } => {
                for output in outputs {
                    println!("attempt {attempt}: refused: {}", output.message);
                }
                // The buyer tries again: a start archives the failed session and opens a
                // new one at the template's entry.
                let start = Command::StartSession {
                    cart_id: cart.to_string(),
                    initial_state: None,
                };
                engine.execute(&buyer, start)?;
            }
            Drive::Complete { order_id, .. } => {
                println!("attempt {attempt}: order {order_id} is activated");
                return Ok(());
            }
            other => println!("attempt {attempt}: {other:?}"),
        }
    }
    Err("the checkout did not complete".into())
}
