//! Profile bytes to a compiled profile (manifests: a ConfigMap and
//! Selector objects, several documents or a List; else the text of
//! `selectors`), then decisions on the captured requests with it.
#![no_main]

use eci_profile::profile::{self, Manifests, ProfileData};
use eci_profile::review::Context;
use eci_profile_fuzz::{EXCLUSIONS, FIXTURE_REQUESTS, NAMESPACES, check_diagnostics, check_review};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let manifests = match Manifests::read("profile.yaml", text) {
        Ok((manifests, notes)) => {
            check_diagnostics(&notes);
            manifests
        }
        Err(diagnostics) => {
            check_diagnostics(&diagnostics);
            Manifests {
                configmap: Some(ProfileData::from_map([(
                    "selectors".to_string(),
                    text.to_string(),
                )])),
                selectors: Vec::new(),
            }
        }
    };
    let compiled = profile::compile_manifests(&manifests);
    check_diagnostics(&compiled.diagnostics);
    let Some(profile) = compiled.profile else {
        return;
    };
    let context = Context {
        profile: &profile,
        exclusions: &EXCLUSIONS,
        namespaces: &*NAMESPACES,
        budgets: &eci_profile::budgets::Unlimited,
    };
    for body in FIXTURE_REQUESTS.iter() {
        check_review(body, context);
    }
});
