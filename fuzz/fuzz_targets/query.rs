//! The `q` of `GET .../query`: any text is answered (over the sample data, as the sample
//! buyer) or refused with a documented 400 whose message locates the error as Salesforce's
//! do (`ERROR at Row:R:Column:C`); nothing panics.
#![no_main]

use cartflow::http::fuzzing::query;
use libfuzzer_sys::fuzz_target;

const DOCUMENTED: [&str; 5] = [
    "MALFORMED_QUERY",
    "INVALID_TYPE",
    "INVALID_FIELD",
    "INVALID_QUERY_FILTER_OPERATOR",
    "NUMBER_OUTSIDE_VALID_RANGE",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = query(text) {
        assert_eq!(e.status.as_u16(), 400, "{text:?}: {e:?}");
        assert!(DOCUMENTED.contains(&e.code.as_str()), "undocumented refusal of {text:?}: {e:?}");
        assert!(e.message.contains("\nERROR at Row:"), "{text:?}: {e:?}");
    }
});
