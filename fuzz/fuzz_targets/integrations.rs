//! The integrations file: any text is a `ProviderConfig` or a JSON error, and configuring
//! the stores with it succeeds or is a `ProviderError`, never a panic.
#![no_main]

use cartflow::integrations::{Integrations, ProviderConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = serde_json::from_slice::<ProviderConfig>(data) else {
        return;
    };
    let mut integrations = Integrations::new();
    if let Err(e) = integrations.configure(&config) {
        assert!(!e.0.is_empty(), "a refusal says why");
    }
});
