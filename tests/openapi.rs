//! The OpenAPI document at `/services/data/openapi.json`, checked against the routes the
//! server really has: every documented path is routed (another method answers 405, not 404),
//! every documented method is answered, and no undocumented method is.

#![cfg(feature = "http")]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cartflow::http::{OPENAPI_PATH, Server, ServerConfig, Tokens};
use cartflow::sample::{self, SampleCart};
use cartflow::{Engine, MemoryStore};
use serde_json::Value;

#[path = "support/mod.rs"]
mod support;

const ADMIN: &str = "admin-token";
const METHODS: [&str; 5] = ["get", "post", "patch", "put", "delete"];

fn server() -> Server {
    let data = sample::dataset();
    let integrations = sample::integrations(&data);
    let engine = Engine::new(Arc::new(MemoryStore::from_dataset(data).unwrap()))
        .with_integrations(integrations);
    // The integration user holds Modify All Data, so every route's caller check passes.
    let tokens = Tokens::new().with(ADMIN, sample::integrator_id());
    let config = ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        workers: 0,
        ..ServerConfig::default()
    };
    Server::start(engine, tokens, &config).unwrap()
}

/// `path` with each `{parameter}` replaced by a value the server knows.
fn concrete(path: &str, session: &str) -> String {
    let cart = SampleCart::InStock.id().to_string();
    let is_apex = path.contains("/apex/");
    path.split('/')
        .map(|segment| match segment {
            "{version}" => "v64.0".to_owned(),
            "{name}" if is_apex => "creditCheck".to_owned(),
            "{name}" => "checkCartInventoryAction".to_owned(),
            "{object}" => "WebCart".to_owned(),
            "{id}" if path.starts_with("/inspector") => session.to_owned(),
            "{id}" => cart.clone(),
            "{relationship}" => "CartItems".to_owned(),
            "{locator}" => "01g0000000000001-2000".to_owned(),
            other => other.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn call(agent: &ureq::Agent, method: &str, url: &str) -> u16 {
    let auth = format!("Bearer {ADMIN}");
    let response = match method {
        "get" => agent.get(url).header("Authorization", &auth).call(),
        "delete" => agent.delete(url).header("Authorization", &auth).call(),
        "post" => agent
            .post(url)
            .header("Authorization", &auth)
            .send(r#"{"inputs": []}"#),
        "patch" => agent.patch(url).header("Authorization", &auth).send("{}"),
        "put" => agent.put(url).header("Authorization", &auth).send("{}"),
        other => panic!("no such method {other}"),
    };
    response.expect("the server answers").status().as_u16()
}

fn document(agent: &ureq::Agent, base: &str) -> Value {
    let response = agent.get(format!("{base}{OPENAPI_PATH}")).call().unwrap();
    assert_eq!(response.status().as_u16(), 200, "no token is needed");
    serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap()
}

#[test]
fn every_documented_route_and_method_is_served_and_nothing_else() {
    let server = server();
    let base = format!("http://{}", server.local_addr());
    let agent = support::server::agent(Duration::from_secs(60));
    let doc = document(&agent, &base);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 25, "{} paths", paths.len());
    let mut checked = 0;
    for (path, item) in paths {
        let url = format!("{base}{}", concrete(path, "2z9000000000001"));
        let documented: BTreeSet<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for method in METHODS {
            let status = call(&agent, method, &url);
            if documented.contains(method) {
                assert_ne!(status, 405, "{method} {path} is documented but not routed");
                checked += 1;
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {path}: a route answers it, undocumented"
                );
            }
        }
    }
    // A path the document does not have is not routed.
    for missing in [
        "/services/data/v64.0/nothing",
        "/inspector/api/nothing",
        "/openapi.json",
    ] {
        assert_eq!(
            call(&agent, "delete", &format!("{base}{missing}")),
            404,
            "{missing}"
        );
    }
    println!(
        "openapi: {checked} documented operations answered, {} paths",
        paths.len()
    );
    server.shutdown();
}

/// Every `$ref` in `value`.
fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => found.push(r),
                    _ => refs(v, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

#[test]
fn the_document_is_consistent() {
    let server = server();
    let base = format!("http://{}", server.local_addr());
    let agent = support::server::agent(Duration::from_secs(60));
    let doc = document(&agent, &base);
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            let in_path: BTreeSet<&str> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(in_path, templated, "{method} {path}");
            assert!(!op["responses"].as_object().unwrap().is_empty());
            let public = op["security"].as_array().unwrap().is_empty();
            let needs_token = op["responses"].get("401").is_some();
            assert_eq!(public, !needs_token, "{method} {path}");
        }
    }
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for r in found {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} resolves to nothing"
        );
    }
    // A documented public operation answers without a token, a token one does not.
    let no_token = |path: &str| {
        agent
            .get(format!("{base}{path}"))
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(no_token("/services/data/"), 200);
    assert_eq!(no_token("/services/data/v64.0/sobjects"), 401);
    assert_eq!(no_token("/inspector/api/counts"), 401);
    server.shutdown();
}
