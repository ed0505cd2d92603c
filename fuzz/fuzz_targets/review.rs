//! Request bytes to response bytes through the server's paths (`/mutate`,
//! then `/validate`), with the example profile and the fixture namespaces.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let context = eci_profile_fuzz::example_context();
    eci_profile_fuzz::check_review(body, context);
    eci_profile_fuzz::check_validation(body, context.profile);
});
