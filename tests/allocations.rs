//! Heap allocations on the request path, counted per thread by a counting
//! global allocator: answering a request must not copy per patch operation
//! or per selector.

#[path = "../benches/data.rs"]
mod data;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use eci_profile::decision::{Exclusions, Outcome};
use eci_profile::namespaces::StaticNamespaces;
use eci_profile::profile::{self, Profile, ProfileData};
use eci_profile::review::{self, Context};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// `f`'s result and the allocations it made on this thread.
fn counted<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (out, ALLOCATIONS.with(Cell::get) - before)
}

fn profile(selectors: usize) -> Profile {
    let data = ProfileData::from_manifest("bench", &data::profile_manifest(selectors)).unwrap();
    profile::compile(&data).into_result().unwrap().0
}

/// Allocations of deciding and answering an already parsed request, and
/// the number of patch operations.
fn answering(body: &[u8], profile: &Profile) -> (usize, usize) {
    let namespaces = StaticNamespaces::from_manifests(&data::namespaces_manifest(10)).unwrap();
    let exclusions = Exclusions::default();
    let context = Context {
        profile,
        exclusions: &exclusions,
        namespaces: &namespaces,
        budgets: &eci_profile::budgets::Unlimited,
    };
    let request = review::parse_request(body).unwrap();
    let (reviewed, allocations) = counted(|| review::respond(request, context));
    assert_eq!(reviewed.evaluation.decision.outcome, Outcome::Mutated);
    (allocations, reviewed.evaluation.decision.patch.len())
}

#[test]
fn answering_allocates_a_fixed_few_times() {
    let bodies = [
        data::minimal_pod_request(),
        data::fixture("create-deployment-pod"),
        data::large_pod_request(),
    ];
    let small = profile(100);
    let big = profile(10_000);
    let counts: Vec<(usize, usize)> = bodies.iter().map(|b| answering(b, &small)).collect();
    // The pods get patches of different lengths, at the same cost.
    let operations: Vec<usize> = counts.iter().map(|c| c.1).collect();
    assert!(
        operations.windows(2).any(|w| w[0] != w[1]),
        "{operations:?}"
    );
    assert!(counts.windows(2).all(|w| w[0].0 == w[1].0), "{counts:?}");
    // A hundred times the selectors, the same cost.
    for body in &bodies {
        assert_eq!(answering(body, &big).0, answering(body, &small).0);
    }
    // Namespace, candidate and selection lists, the applied rules and their
    // annotation, the operations, the patch and the response: nothing per
    // operation, nothing per value copied from the profile.
    assert!(counts[0].0 <= 16, "{counts:?}");
}

#[test]
fn parsing_allocates_for_what_the_decision_reads() {
    // The typical pod: strings are copied only where the decision reads
    // them (names, labels, owner, tolerations, volume and container names);
    // the request's own strings are borrowed, everything else is skipped.
    let body = data::fixture("create-deployment-pod");
    let (request, allocations) = counted(|| review::parse_request(&body).unwrap());
    assert_eq!(request.uid(), "62de17f5-252e-4633-904d-e0ddfc211615");
    assert!(allocations <= 40, "{allocations}");
}
