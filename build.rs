//! Build facts for `eci-profile version` and `eci_profile_build_info`: the
//! git revision, the build date and the compiler. Each is "unknown" when it
//! cannot be found (a source tarball without `.git`, no `git` installed).
//! `SOURCE_DATE_EPOCH`, when set, fixes the build date (reproducible builds).

use std::process::Command;

fn main() {
    let revision = std::env::var("ECI_PROFILE_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(git_revision)
        .unwrap_or_else(unknown);
    let date = build_date().unwrap_or_else(unknown);
    let rustc = rustc_version().unwrap_or_else(unknown);
    println!("cargo:rustc-env=ECI_PROFILE_REVISION={revision}");
    println!("cargo:rustc-env=ECI_PROFILE_BUILD_DATE={date}");
    println!("cargo:rustc-env=ECI_PROFILE_RUSTC={rustc}");
    println!("cargo:rerun-if-env-changed=ECI_PROFILE_REVISION");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // A new commit or checkout moves HEAD or the ref it points to (a
    // worktree keeps its HEAD apart from the refs).
    if is_repository_root() {
        let mut paths = vec!["HEAD".to_string(), "packed-refs".to_string()];
        paths.extend(git(&["symbolic-ref", "-q", "HEAD"]));
        for path in paths {
            // A path that does not exist would make cargo run this every build.
            let file = git(&["rev-parse", "--path-format=absolute", "--git-path", &path]);
            if let Some(file) = file.filter(|f| std::path::Path::new(f).exists()) {
                println!("cargo:rerun-if-changed={file}");
            }
        }
    }
}

fn unknown() -> String {
    "unknown".to_string()
}

/// `git args` in this package's directory: its trimmed output, if it succeeded.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_string())
}

/// Whether this package is the top of a git checkout (not a source tarball,
/// which may be unpacked inside some other repository).
fn is_repository_root() -> bool {
    let (Some(top), Some(dir)) = (
        git(&["rev-parse", "--show-toplevel"]),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return false;
    };
    let canonical = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    canonical(top.as_ref()).is_some_and(|top| Some(top) == canonical(dir.as_ref()))
}

/// The commit checked out, abbreviated.
fn git_revision() -> Option<String> {
    is_repository_root()
        .then(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .flatten()
}

/// The build's UTC date (`YYYY-MM-DD`), from `SOURCE_DATE_EPOCH` if set.
fn build_date() -> Option<String> {
    let seconds = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(epoch) => epoch.trim().parse::<u64>().ok()?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs(),
    };
    let (year, month, day) = civil_date(seconds / 86_400);
    Some(format!("{year:04}-{month:02}-{day:02}"))
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `rustc -V` of the compiler cargo builds with (`RUSTC`).
fn rustc_version() -> Option<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc).arg("-V").output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_string())
}
