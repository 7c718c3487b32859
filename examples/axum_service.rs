//! Embedding cartflow in an axum service of your own, through the async API.
//!
//! The service has one route of its own: `POST /checkout/{cart}` drives the cart's whole
//! checkout for the sample buyer and answers what came of it. The example starts the
//! service on a free loopback port, sends it one request, prints the answer and stops.
//!
//! Run it with `cargo run --example axum_service`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cartflow::asynchronous::AsyncEngine;
use cartflow::flow::{Drive, Waiting};
use cartflow::model::SfId;
use cartflow::{Engine, MemoryStore, sample};
use serde_json::json;

#[tokio::main]
async fn main() {
    let data = sample::dataset();
    let integrations = sample::integrations(&data);
    let engine = AsyncEngine::new(
        Engine::new(Arc::new(MemoryStore::from_dataset(data).unwrap()))
            .with_integrations(integrations),
    );
    let app = Router::new()
        .route("/checkout/{cart}", post(checkout))
        .with_state(engine);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/checkout/{}",
        listener.local_addr().unwrap(),
        sample::SampleCart::InStock.id()
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // A client of the service: a blocking one, so it runs off the runtime.
    let answer = tokio::task::spawn_blocking(move || {
        let response = ureq::post(&url).send_empty().expect("the service answers");
        response.into_body().read_to_string().unwrap()
    })
    .await
    .unwrap();
    println!("POST /checkout/<cart> answered: {answer}");
    server.abort();
}

/// The service's own route: the whole checkout, as the sample buyer.
async fn checkout(State(engine): State<AsyncEngine>, Path(cart): Path<String>) -> Response {
    let Ok(cart) = cart.parse::<SfId>() else {
        return (StatusCode::BAD_REQUEST, "not a cart Id").into_response();
    };
    let input = sample::buyer_input();
    let buyer = sample::buyer_id().to_string();
    let body = match engine.drive(&buyer, &cart, input, Waiting::RunInline).await {
        Ok(Drive::Complete { order_id, .. }) => json!({"outcome": "ordered", "orderId": order_id}),
        Ok(Drive::NeedsInput { .. }) => json!({"outcome": "needs input"}),
        Ok(Drive::Failed { outputs, .. }) => {
            let messages: Vec<String> = outputs.into_iter().map(|o| o.message).collect();
            json!({"outcome": "failed", "messages": messages})
        }
        Err(e) => json!({"outcome": "refused", "error": e.to_string()}),
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
