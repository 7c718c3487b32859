//! The async API from a multi-threaded tokio runtime: concurrent checkouts of distinct carts
//! all complete with orders of their own, and two tasks starting one cart's checkout at once
//! get one session between them.

#![cfg(feature = "http")]

use std::collections::BTreeSet;
use std::sync::Arc;

use cartflow::asynchronous::AsyncEngine;
use cartflow::flow::{BuyerInput, Drive, Waiting};
use cartflow::machine::{Command, Output};
use cartflow::{Engine, MemoryStore, sample};

const CARTS: u64 = 8;

fn engine() -> (AsyncEngine, Vec<cartflow::model::SfId>) {
    let mut data = sample::dataset();
    let carts = sample::add_in_stock_copies(&mut data, 700, CARTS);
    // Enough stock for every copy.
    for level in &mut data.stock {
        level.quantity = level.quantity.max(rust_decimal::Decimal::from(1_000));
    }
    let integrations = sample::integrations(&data);
    let engine = Engine::new(Arc::new(MemoryStore::from_dataset(data).unwrap()))
        .with_integrations(integrations);
    (AsyncEngine::new(engine), carts)
}

fn input() -> BuyerInput {
    sample::buyer_input()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkouts_of_distinct_carts_all_complete() {
    let (engine, carts) = engine();
    let buyer = sample::buyer_id().to_string();
    let tasks: Vec<_> = carts
        .iter()
        .map(|cart| {
            let (engine, buyer, cart) = (engine.clone(), buyer.clone(), *cart);
            tokio::spawn(async move {
                engine
                    .drive(&buyer, &cart, input(), Waiting::RunInline)
                    .await
            })
        })
        .collect();
    let mut orders = BTreeSet::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Drive::Complete { order_id, .. } => assert!(orders.insert(order_id)),
            other => panic!("a checkout did not complete: {other:?}"),
        }
    }
    assert_eq!(orders.len() as u64, CARTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tasks_starting_one_checkout_get_one_session() {
    let (engine, carts) = engine();
    let buyer = sample::buyer_id().to_string();
    let start = |engine: AsyncEngine| {
        let (buyer, cart_id) = (buyer.clone(), carts[0]);
        tokio::spawn(async move {
            let command = Command::StartSession {
                cart_id: cart_id.to_string(),
                initial_state: None,
            };
            engine.execute(&buyer, command).await
        })
    };
    let (a, b) = (start(engine.clone()), start(engine.clone()));
    let sessions: BTreeSet<_> = [a.await.unwrap(), b.await.unwrap()]
        .into_iter()
        .map(|answer| match answer {
            Ok(Output::RequestId(id)) => id,
            other => panic!("a start was not answered with a session: {other:?}"),
        })
        .collect();
    let stored = engine
        .run(move |e| e.store().sessions_of(&carts[0]).unwrap())
        .await;
    let active: Vec<_> = stored.iter().filter(|s| !s.is_archived).collect();
    assert_eq!(active.len(), 1, "{stored:?}");
    assert!(sessions.contains(&active[0].id));
}
