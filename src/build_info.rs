//! What this binary was built from (set by build.rs; "unknown" where it
//! could not be found, e.g. a source tarball without `.git`).

/// The package version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit built, abbreviated.
pub const REVISION: &str = match option_env!("ECI_PROFILE_REVISION") {
    Some(revision) => revision,
    None => "unknown",
};
/// The UTC date of the build, `YYYY-MM-DD`.
pub const DATE: &str = match option_env!("ECI_PROFILE_BUILD_DATE") {
    Some(date) => date,
    None => "unknown",
};
/// `rustc -V` of the compiler used.
pub const RUSTC: &str = match option_env!("ECI_PROFILE_RUSTC") {
    Some(rustc) => rustc,
    None => "unknown",
};
