//! Shared by the property and concurrency tests.

use std::sync::Once;

/// The message every deliberately panicking test provider panics with.
pub const PROVIDER_PANIC: &str = "the test provider panics on purpose";

/// Keeps deliberate provider panics out of the test output. Providers run on threads named
/// `cartflow-provider`; a panic there whose message is [`PROVIDER_PANIC`] is expected (the
/// engine turns it into a SystemError), every other panic goes to the default hook.
pub fn quiet_provider_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let on_provider = std::thread::current().name() == Some("cartflow-provider");
            let deliberate = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| *m == PROVIDER_PANIC);
            if !(on_provider && deliberate) {
                default(info);
            }
        }));
    });
}
