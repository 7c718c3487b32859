//! PostgreSQL: one engine and two worker threads on a database many processes may share. The
//! sample data is imported into the database (which must be empty), one checkout runs with
//! its background operations taken by the workers, and the order's total and the events the
//! checkout published are printed.
//!
//! Run with `CARTFLOW_DATABASE_URL=postgres://user@host/db cargo run --example postgres`
//! (the user needs rights to create tables; the schema is created on connect). Without the
//! variable the example says so and exits.

use std::sync::Arc;
use std::time::Duration;

use cartflow::flow::{self, Drive, Waiting};
use cartflow::sample::{self, SampleCart};
use cartflow::store::PostgresStore;
use cartflow::{Engine, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(url) = std::env::var("CARTFLOW_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        println!("set CARTFLOW_DATABASE_URL to an empty PostgreSQL database to run this example");
        return Ok(());
    };
    let store = PostgresStore::connect(&url)?;
    let data = sample::dataset();
    let integrations = sample::integrations(&data);
    // An import is one transaction, refused by a database that already holds a store.
    store.import(&data)?;
    let store: Arc<dyn Store> = Arc::new(store);
    let engine = Engine::new(Arc::clone(&store)).with_integrations(integrations);
    let since = engine.last_event()?;

    // Workers claim each operation under a lease; other processes' workers could share them.
    let workers = engine.start_workers(2);
    let buyer = sample::buyer_id().to_string();
    let cart = SampleCart::InStock.id();
    let waiting = Waiting::Poll(Duration::from_secs(30));
    let drive = flow::drive(&engine, &buyer, &cart, &sample::buyer_input(), waiting)?;
    workers.stop();
    let Drive::Complete { order_id, .. } = drive else {
        return Err(format!("the checkout stopped early: {drive:?}").into());
    };
    let order = store
        .order(&order_id)?
        .ok_or("the order is not in the store")?;
    println!(
        "order {order_id}: {:?}, total {:?}",
        order.status, order.grand_total_amount
    );
    let events = engine.events(since.as_ref(), 1_000)?;
    println!("the checkout published {} events", events.len());
    Ok(())
}
