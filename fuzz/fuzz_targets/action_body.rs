//! The body of `POST .../actions/standard/{name}`: the facade reads `{"inputs": [...]}` or
//! refuses it with a documented 400, and each input is, for every action, a command or
//! `INVALID_INPUT`.
#![no_main]

use cartflow::ErrorCode;
use cartflow::api::command_from_input;
use cartflow::http::MAX_INPUTS;
use cartflow::http::fuzzing::action_inputs;
use cartflow::machine::Action;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let inputs = match action_inputs(data) {
        Ok(inputs) => inputs,
        Err(e) => {
            assert_eq!(e.status.as_u16(), 400, "{e:?}");
            assert!(
                ["JSON_PARSER_ERROR", "INVALID_INPUT", "LIMIT_EXCEEDED"].contains(&e.code.as_str()),
                "undocumented refusal of an action body: {e:?}"
            );
            return;
        }
    };
    assert!((1..=MAX_INPUTS).contains(&inputs.len()));
    for input in &inputs {
        for action in Action::ALL {
            if let Err(e) = command_from_input(action, input) {
                assert_eq!(e.code(), ErrorCode::InvalidInput, "{action}: {e:?}");
                assert_eq!(e.http_status(), 400, "{action}: {e:?}");
            }
        }
    }
});
