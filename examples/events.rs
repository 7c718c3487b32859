//! Events: follow every committed move of a checkout as it happens. A subscriber thread reads
//! the event log from the last position the store had when it started, while the main thread
//! drives one checkout to its order on SQLite; the subscriber prints each move and the
//! position a consumer would keep to carry on after a restart.
//!
//! Run with `cargo run --example events`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cartflow::flow::{self, Drive, Waiting};
use cartflow::sample::{self, SampleCart};
use cartflow::store::{Durability, SqliteStore};
use cartflow::{Engine, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("cartflow-events-{}", std::process::id()));
    let data = sample::dataset();
    let integrations = sample::integrations(&data);
    std::fs::create_dir_all(&dir)?;
    let store = SqliteStore::open(dir.join("cartflow.db"), Durability::Normal)?;
    store.import(&data)?;
    let store: Arc<dyn Store> = Arc::new(store);
    let engine = Engine::new(store).with_integrations(integrations);

    // Only what is committed from now on: the imported history is left behind.
    let mut subscription = engine.subscribe(engine.last_event()?);
    let done = Arc::new(AtomicBool::new(false));
    let follower = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || -> Result<usize, cartflow::StoreError> {
            let mut count = 0;
            loop {
                let finished = done.load(Ordering::Acquire);
                let batch = subscription.next_batch(Duration::from_millis(100))?;
                if batch.is_empty() && finished {
                    println!("caught up at {:?}", subscription.position());
                    return Ok(count);
                }
                for event in batch {
                    count += 1;
                    let e = &event.entry;
                    println!(
                        "{} {:?} {}: {} -> {}",
                        event.position, e.machine, e.event, e.from, e.to
                    );
                }
            }
        })
    };

    let buyer = sample::buyer_id().to_string();
    let cart = SampleCart::InStock.id();
    let input = sample::buyer_input();
    let drive = flow::drive(&engine, &buyer, &cart, &input, Waiting::RunInline)?;
    assert!(matches!(drive, Drive::Complete { .. }), "{drive:?}");
    done.store(true, Ordering::Release);
    let count = follower.join().map_err(|_| "the subscriber panicked")??;
    let moves = engine.store().history(&cart)?.len();
    println!("{count} events for the checkout's {moves} moves");
    assert_eq!(count, moves);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
