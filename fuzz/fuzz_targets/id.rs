//! `SfId::parse` and `SfId::parse_kind`: any text is an ID or an `IdError`, never a panic;
//! an accepted ID reads back as itself in both its forms.
#![no_main]

use cartflow::model::{KeyPrefix, SfId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = SfId::parse(&text);
    for kind in KeyPrefix::ALL {
        // A kind check is the plain parse plus the key prefix: nothing else may differ.
        match (SfId::parse_kind(&text, kind), &parsed) {
            (Ok(id), Ok(plain)) => assert_eq!(id, *plain),
            (Err(_), Ok(plain)) => assert_ne!(plain.key_prefix(), kind.prefix()),
            (Ok(id), Err(e)) => panic!("parse_kind accepted {id} that parse refuses: {e}"),
            (Err(_), Err(_)) => {}
        }
    }
    if let Ok(id) = parsed {
        assert_eq!(id.as_str().len(), 18);
        assert_eq!(SfId::parse(id.as_str()), Ok(id));
        assert_eq!(SfId::parse(id.to_15()), Ok(id));
        assert!(text.starts_with(id.to_15()));
    }
});
