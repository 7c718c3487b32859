//! The template file: any text is a `Template` or a `TemplateFileError` (and so is the
//! table built from it); an accepted template writes and reads back as itself.
#![no_main]

use cartflow::machine::{Template, TemplateFileError, TransitionTable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let template = Template::from_json(text);
    let table = TransitionTable::from_json(text);
    match (&template, &table) {
        (Ok(template), Ok(table)) => assert_eq!(table.template(), template),
        (Err(a), Err(b)) => assert_eq!(a, b, "the table refuses what the template refuses"),
        (Err(e), Ok(_)) => panic!("a table built from a refused template: {e}"),
        (Ok(_), Err(e)) => assert!(
            matches!(e, TemplateFileError::Table { .. }),
            "a template the format accepts is refused only by a table rule: {e}"
        ),
    }
    if let Ok(template) = template {
        let written = template.to_json();
        assert_eq!(Template::from_json(&written), Ok(template), "{written}");
    }
});
