//! Tools installed once per target directory for the tests that need them:
//! Python packages from PyPI, installed under an OS file lock so that the
//! test processes nextest runs side by side install them once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `pip install packages` into `target`; the error carries pip's own message.
pub fn pip_install(target: &Path, packages: &[&str]) -> Result<(), String> {
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-script-location",
        ])
        .arg("--target")
        .arg(target)
        .args(packages)
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .output()
        .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
    Err(format!(
        "pip install {packages:?} failed ({}):\n{}",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    ))
}

/// A directory that several test processes need, installed by the first one
/// that takes `NAME.lock` (an OS file lock: the kernel releases it when its
/// holder exits, however it exits) and then marked `NAME/.ready`.
///
/// A failed install is recorded in `NAME.failed` with its error: the processes
/// of the same test run (or those that were waiting for that attempt) report
/// it at once instead of trying again; a later run tries again.
pub struct InstallOnce {
    pub dir: PathBuf,
    pub lock: PathBuf,
    pub failed: PathBuf,
    pub run: String,
    pub patience: Duration,
}

impl InstallOnce {
    pub fn new(base: &Path, name: &str) -> Self {
        let run = std::env::var("NEXTEST_RUN_ID")
            .unwrap_or_else(|_| format!("process {}", std::process::id()));
        Self {
            dir: base.join(name),
            lock: base.join(format!("{name}.lock")),
            failed: base.join(format!("{name}.failed")),
            run,
            patience: Duration::from_secs(600),
        }
    }

    /// The directory, installed by `install(staging)` if it is not ready.
    pub fn get(
        &self,
        install: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<PathBuf, String> {
        let ready = self.dir.join(".ready");
        if ready.exists() {
            return Ok(self.dir.clone());
        }
        let failure_before = std::fs::read_to_string(&self.failed).ok();
        let lock = self.hold_lock()?;
        if ready.exists() {
            return Ok(self.dir.clone());
        }
        if let Ok(record) = std::fs::read_to_string(&self.failed) {
            let (run, error) = record.split_once('\n').unwrap_or((&record, ""));
            if run == self.run || failure_before.as_deref() != Some(record.as_str()) {
                return Err(format!(
                    "installing {} failed in this test run ({}): {error}",
                    self.dir.display(),
                    self.failed.display()
                ));
            }
        }
        let staging = self.dir.with_extension(format!("{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let installed = install(&staging).and_then(|()| {
            let _ = std::fs::remove_dir_all(&self.dir);
            std::fs::rename(&staging, &self.dir)
                .and_then(|()| std::fs::write(&ready, ""))
                .map_err(|e| format!("cannot move {} into place: {e}", staging.display()))
        });
        match &installed {
            Ok(()) => {
                let _ = std::fs::remove_file(&self.failed);
            }
            Err(error) => {
                let _ = std::fs::remove_dir_all(&staging);
                std::fs::write(&self.failed, format!("{}\n{error}", self.run))
                    .map_err(|e| format!("{error} (and cannot record it: {e})"))?;
            }
        }
        drop(lock);
        installed.map(|()| self.dir.clone())
    }

    /// Takes the lock, waiting while another live process holds it; records this process as its owner.
    fn hold_lock(&self) -> Result<std::fs::File, String> {
        use std::io::{Seek as _, Write as _};
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.lock)
        };
        let mut file = match open() {
            // A lock directory left by an older version of this helper.
            Err(_) if self.lock.is_dir() => {
                std::fs::remove_dir(&self.lock)
                    .map_err(|e| format!("cannot remove {}: {e}", self.lock.display()))?;
                open()
            }
            other => other,
        }
        .map_err(|e| format!("cannot open {}: {e}", self.lock.display()))?;
        let deadline = Instant::now() + self.patience;
        let mut said = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let owner = std::fs::read_to_string(&self.lock).unwrap_or_default();
                    if Instant::now() > deadline {
                        return Err(format!(
                            "{} is still held by {owner} after {:?}",
                            self.lock.display(),
                            self.patience
                        ));
                    }
                    if !said {
                        eprintln!("waiting for {owner} to install {}", self.dir.display());
                        said = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(format!("cannot lock {}: {e}", self.lock.display()));
                }
            }
        }
        let owner = format!("process {} ({})", std::process::id(), self.run);
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(owner.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", self.lock.display()))?;
        Ok(file)
    }
}

/// jsonschema and cel-python from PyPI (schemas checked as the API server
/// and the JSON Schema tools would), installed once; for `PYTHONPATH`.
pub fn validators() -> PathBuf {
    InstallOnce::new(Path::new(env!("CARGO_TARGET_TMPDIR")), "crd-validators-v1")
        .get(|target| pip_install(target, &["jsonschema==4.26.0", "cel-python==0.5.0"]))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `command` with `input`, as JSON, on its standard input; its
/// standard output, read as JSON (a panic with its stderr if it fails).
pub fn run_with_json(command: &mut Command, input: &serde_json::Value) -> serde_json::Value {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
