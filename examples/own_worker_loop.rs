//! A worker loop of your own: claim an operation, keep its claim alive, do its work, report
//! it, as separate calls, for a worker that runs on a scheduler of its own or wants to decide
//! what happens between the steps.
//!
//! Run with `cargo run --example own_worker_loop`.

use std::sync::Arc;

use cartflow::integrations::Integrations;
use cartflow::sample::{self, SampleCart};
use cartflow::{Engine, MemoryStore};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = sample::dataset();
    let integrations = Integrations::with_stock_tables(&data.stock);
    let engine =
        Engine::new(Arc::new(MemoryStore::from_dataset(data)?)).with_integrations(integrations);

    // A buyer locks the Inventory step and asks for the check: one New operation.
    let buyer = sample::buyer_id().to_string();
    sample::lock_inventory_step(&engine, &buyer, SampleCart::InStock.id())?;
    let cart = json!({"cartId": SampleCart::InStock.id().to_string()});
    engine.invoke("checkCartInventoryAction", &cart, &buyer);

    while let Some(claim) = engine.claim_operation()? {
        println!(
            "claimed {} ({}), attempt {}",
            claim.operation().id,
            claim.operation().name,
            claim.operation().attempt
        );
        // Renew the lease whenever the work takes longer than it lasts; a claim that was
        // lost (cancelled, expired) answers Fenced, and the worker stops working for it.
        engine.heartbeat(&claim)?;
        let performed = engine.perform(&claim)?;
        println!("the provider answered {:?}", performed.outcome());
        let report = engine.report(performed.clone())?;
        println!("reported; applied: {}", report.applied);
        // A report made twice is applied once: the second is fenced.
        println!("again; applied: {}", engine.report(performed)?.applied);
    }
    let session = engine
        .store()
        .sessions_of(&SampleCart::InStock.id())?
        .pop()
        .ok_or("no session")?;
    println!("the session is at {:?}", session.state);
    Ok(())
}
