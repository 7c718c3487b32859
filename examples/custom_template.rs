//! A checkout template of the store's own, built in code: the standard steps without
//! promotions, and a "Review Terms" screen before the summary. The table built from it is
//! checked (a template breaking a rule is refused, with the step and the rule named), saved
//! as the JSON file `cartflow --template` reads, and run: the checkout walks the new screen
//! on its way to the order.
//!
//! Run with `cargo run --example custom_template`.

use std::sync::Arc;

use cartflow::flow::{self, Drive, Waiting};
use cartflow::machine::{Step, StepKind, Template, TransitionTable};
use cartflow::model::SessionState;
use cartflow::sample::{self, SampleCart};
use cartflow::{Engine, MemoryStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut template = Template::without_promotions();
    template.name = "terms before summary".into();
    let terms: SessionState = "Review Terms".parse()?;
    let inserted = template.insert_step(
        SessionState::PaymentAndBillingAddress,
        Step::new(terms, StepKind::Screen),
    );
    assert!(inserted, "the payment screen is a step of the template");

    // A template that breaks a rule is refused: here, a step no path reaches.
    let mut broken = template.clone();
    broken
        .steps
        .push(Step::new("Nowhere".parse()?, StepKind::Screen).then(terms));
    match TransitionTable::build(broken) {
        Err(refused) => println!("refused: {refused}"),
        Ok(_) => return Err("a template with an unreachable step was accepted".into()),
    }

    let table = TransitionTable::build(template.clone())?;
    let file = std::env::temp_dir().join(format!("cartflow-template-{}.json", std::process::id()));
    std::fs::write(&file, template.to_json())?;
    println!("saved as {} (cartflow --template reads it)", file.display());
    // What the file says is what was built.
    assert_eq!(
        TransitionTable::from_json(&std::fs::read_to_string(&file)?)?.template(),
        table.template()
    );
    std::fs::remove_file(&file)?;

    let data = sample::dataset();
    let integrations = sample::integrations(&data);
    let engine = Engine::new(Arc::new(MemoryStore::from_dataset(data)?))
        .with_table(table)
        .with_integrations(integrations);
    let buyer = sample::buyer_id().to_string();
    let cart = SampleCart::InStock.id();
    let drive = flow::drive(
        &engine,
        &buyer,
        &cart,
        &sample::buyer_input(),
        Waiting::RunInline,
    )?;
    assert!(matches!(drive, Drive::Complete { .. }), "{drive:?}");
    let walked: Vec<String> = engine
        .store()
        .history(&cart)?
        .into_iter()
        .filter(|h| h.machine == cartflow::machine::Machine::Session && !h.to.contains('('))
        .map(|h| h.to)
        .collect();
    println!("the session went through: {}", walked.join(" -> "));
    assert!(walked.iter().any(|s| s == "Review Terms"));
    Ok(())
}
