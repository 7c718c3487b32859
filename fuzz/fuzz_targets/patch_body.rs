//! The body of `PATCH /sobjects/{Object}/{Id}`: for every object the facade serves (the first
//! byte picks it), the body is an update or a documented 400 (`JSON_PARSER_ERROR`,
//! `INVALID_FIELD` with the fields named).
#![no_main]

use cartflow::http::fuzzing::{patch_body, patch_objects};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let objects: Vec<&str> = patch_objects().collect();
    let object = objects[usize::from(pick) % objects.len()];
    let outcome = patch_body(object, body).expect("the facade serves every object it lists");
    if let Err(e) = outcome {
        assert_eq!(e.status.as_u16(), 400, "{object}: {e:?}");
        match e.code.as_str() {
            "JSON_PARSER_ERROR" => {}
            "INVALID_FIELD" => assert!(!e.fields.is_empty(), "{object}: {e:?}"),
            _ => panic!("undocumented refusal of a PATCH of {object}: {e:?}"),
        }
    }
});
