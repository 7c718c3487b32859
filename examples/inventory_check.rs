//! Check Cart Inventory end to end: start a checkout, walk to the Inventory step, lock it,
//! invoke `checkCartInventoryAction`, let a worker run the stock check, read the result.
//!
//! Run with `cargo run --example inventory_check`.

use std::sync::Arc;

use cartflow::integrations::Integrations;
use cartflow::machine::Command;
use cartflow::sample::{self, SampleCart};
use cartflow::{Engine, MemoryStore};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = sample::dataset();
    let integrations = Integrations::with_stock_tables(&data.stock);
    let engine =
        Engine::new(Arc::new(MemoryStore::from_dataset(data)?)).with_integrations(integrations);
    let workers = engine.start_workers(2);

    let buyer = sample::buyer_id().to_string();
    for cart in [SampleCart::InStock, SampleCart::ShortStock] {
        let cart_id = cart.id().to_string();
        let started = engine.invoke("checkoutSessionAction", &json!({"cartId": cart_id}), &buyer);
        let session = started.output_values.as_ref().ok_or("no session")?["requestId"]
            .as_str()
            .ok_or("no requestId")?
            .to_owned();
        // Screen steps write the next State straight onto the session.
        for (from, to) in [
            ("Start", "Shipping Address"),
            ("Shipping Address", "Inventory"),
        ] {
            engine.execute(
                &buyer,
                Command::Advance {
                    session_id: session.clone(),
                    state: to.into(),
                    exp_current_state: Some(from.into()),
                },
            )?;
        }
        let locked = engine.invoke(
            "updateCheckoutSessionStateAction",
            &json!({"checkoutSessionId": session, "nextState": "Confirm Price", "expCurrentState": "Inventory"}),
            &buyer,
        );
        assert!(locked.is_success, "{locked:?}");
        let started = engine.invoke(
            "checkCartInventoryAction",
            &json!({"cartId": cart_id}),
            &buyer,
        );
        println!("{cart:?}: {}", serde_json::to_string(&started)?);

        // Poll the session as the flow's hub does, until the operation has finished.
        let session_id = session.parse()?;
        let finished = loop {
            let s = engine
                .store()
                .session(&session_id)?
                .ok_or("session vanished")?;
            if !s.is_processing {
                break s;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        println!("  State is now {:?}", finished.state);
        for output in engine.store().validation_outputs(&cart.id())? {
            println!(
                "  {:?} {:?}: {}",
                output.level, output.output_type, output.message
            );
        }
    }
    workers.stop();
    Ok(())
}
