//! `states.dot` at the repository root is the diagram of the standard table, kept fresh.

use cartflow::diagram;
use cartflow::machine::TransitionTable;

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
