//! Request bytes to response bytes through the server's path, with the
//! example profile and the fixture namespaces.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    eci_profile_fuzz::check_review(body, eci_profile_fuzz::example_context());
});
