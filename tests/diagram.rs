//! `states.dot` at the repository root is the diagram of the standard table, kept fresh.

use cartflow::diagram;
use cartflow::machine::{Template, TransitionTable};

#[test]
fn states_dot_is_the_drawing_of_the_standard_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/states.dot");
    let committed =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let drawn = diagram::dot(&TransitionTable::standard());
    assert!(
        committed == drawn,
        "states.dot is stale: the transition table changed. Regenerate it with\n\
         \n    cargo run -- diagram --format dot > states.dot\n\
         \nand render docs/states.svg with `dot -Tsvg states.dot -o docs/states.svg`."
    );
}

/// The standard template's names for the transitions of its async and payment steps.
const STANDARD_NAMES: [&str; 8] = [
    "CheckInventory",
    "PriceCart",
    "CalculatePromotions",
    "CalculateShipping",
    "CalculateTaxes",
    "CartToOrder",
    "AuthorizePayment",
    "ActivateOrder",
];

#[test]
fn every_async_step_transition_shows_its_name_and_api_name() {
    let older: Vec<&str> = STANDARD_NAMES
        .into_iter()
        .filter(|n| *n != "CalculatePromotions")
        .collect();
    for (template, expected) in [
        (Template::standard(), STANDARD_NAMES.to_vec()),
        (Template::without_promotions(), older),
    ] {
        let table = TransitionTable::build(template.clone()).unwrap();
        let (dot, mermaid) = (diagram::dot(&table), diagram::mermaid(&table));
        let mut named = Vec::new();
        for step in &template.steps {
            let Some(event) = step.own_event() else {
                assert_eq!(step.transition, None, "{}", step.state);
                continue;
            };
            let name = step
                .transition
                .as_deref()
                .expect("an async step names its transition");
            named.push(name);
            let label = format!("{name} ({})", event.label());
            // The step's own edge, from its locked node to its running node, in both writers.
            let dot_edges: Vec<&str> = dot
                .lines()
                .filter(|l| l.contains(" -> ") && l.contains(&format!("[label=\"{label}\"")))
                .collect();
            assert!(
                dot_edges
                    .iter()
                    .any(|l| l.contains("_locked -> ") && l.contains("_running [")),
                "DOT has no locked -> running edge labelled {label}: {dot_edges:?}"
            );
            let mermaid_edges: Vec<&str> = mermaid
                .lines()
                .filter(|l| l.contains(" --> ") && l.ends_with(&format!(" : {label}")))
                .collect();
            assert!(
                mermaid_edges
                    .iter()
                    .any(|l| l.contains("_locked --> ") && l.contains("_running : ")),
                "Mermaid has no locked --> running edge labelled {label}: {mermaid_edges:?}"
            );
            // The bare API name labels no edge any more: every edge of the event is named.
            assert!(!dot.contains(&format!("[label=\"{}\"", event.label())));
            assert!(!mermaid.contains(&format!(" : {}\n", event.label())));
        }
        assert_eq!(named, expected);
    }
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/states.dot"))
        .expect("states.dot");
    assert!(committed.contains("CheckInventory (checkCartInventoryAction)"));
}
