//! Following `--profile-file` on a real filesystem: only the profile's own
//! files count, content already tried is not reported again, the
//! reload-failing gauge tells the truth, and a directory removed and created
//! again is followed again at once (not at the 60 s periodic check).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eci_profile::metrics::Metrics;
use eci_profile::profile::Profile;
use eci_profile::published::Published;
use eci_profile::sources::file::{follow_profile, load_profile};

/// A ConfigMap manifest with one rule named `rule`.
fn manifest(rule: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: eci-profile\n  namespace: kube-system\ndata:\n  selectors: |\n    [{{\"name\": \"{rule}\", \"objectSelector\": {{\"matchLabels\": {{\"app\": \"{rule}\"}}}}}}]\n"
    )
}

/// A manifest whose rule has an unknown policy (refused).
fn invalid(policy: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: eci-profile\ndata:\n  selectors: '[{{\"name\": \"x\", \"policy\": \"{policy}\", \"objectSelector\": {{}}}}]'\n"
    )
}

struct Follower {
    published: Arc<Published<Profile>>,
    metrics: Arc<Metrics>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Loads `path` as `serve` does at start, then follows it.
fn follow(path: &Path) -> Follower {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("eci_profile=debug")
        .with_test_writer()
        .try_init();
    let (profile, _) = load_profile(path).unwrap();
    let metrics = Arc::new(Metrics::default());
    metrics.profile_loaded(Some((profile.digest(), profile.rule_count())));
    let published = Arc::new(Published::new(profile));
    let task = tokio::spawn(follow_profile(
        path.to_path_buf(),
        published.clone(),
        metrics.clone(),
    ));
    Follower {
        published,
        metrics,
        task,
    }
}

impl Follower {
    fn rule(&self) -> Option<String> {
        let profile = self.published.get();
        profile.selecting_rules().first().map(|r| r.name.clone())
    }

    /// The value of a metric line (`name{labels}`), 0 when absent.
    fn metric(&self, line: &str) -> u64 {
        let text = self.metrics.encode();
        text.lines()
            .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }

    fn failures(&self) -> u64 {
        self.metric(r#"eci_profile_profile_reloads_total{result="failure"}"#)
    }

    fn failing(&self) -> u64 {
        self.metric("eci_profile_profile_reload_failing")
    }

    /// Waits (at most `limit`) until the rule in use is `rule`; the time it took.
    async fn until_rule(&self, rule: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        while self.rule().as_deref() != Some(rule) {
            assert!(
                started.elapsed() < limit,
                "{rule} not in use after {limit:?} (in use: {:?})",
                self.rule()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }

    async fn until_failures(&self, n: u64) {
        let started = Instant::now();
        while self.failures() < n {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{n} failures expected, {} counted",
                self.failures()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Longer than the debounce and the watcher's latency: a change not
/// reported by then was ignored.
const SETTLE: Duration = Duration::from_millis(1200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_profiles_own_files_count_and_each_invalid_content_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.yaml");
    std::fs::write(&path, manifest("first")).unwrap();
    let f = follow(&path);
    assert_eq!(f.rule().as_deref(), Some("first"));
    assert_eq!((f.failures(), f.failing()), (0, 0));

    std::fs::write(&path, invalid("sometimes")).unwrap();
    f.until_failures(1).await;
    assert_eq!(f.failing(), 1, "a refused profile is pending");
    assert_eq!(
        f.rule().as_deref(),
        Some("first"),
        "the last good one stays"
    );

    // A log file next to the profile, written again and again: not the profile.
    let log = dir.path().join("eci-profile.log");
    for n in 0..50 {
        std::fs::write(&log, format!("line {n}\n").repeat(n + 1)).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same invalid content, written again: already reported.
    std::fs::write(&path, invalid("sometimes")).unwrap();
    tokio::time::sleep(SETTLE).await;
    assert_eq!(f.failures(), 1, "one report for one invalid content");
    assert_eq!(f.failing(), 1, "still pending while the file is invalid");

    // Another invalid content is reported.
    std::fs::write(&path, invalid("never")).unwrap();
    f.until_failures(2).await;
    assert_eq!(f.failing(), 1);

    // Back to the content in use: nothing pending any more, nothing loaded.
    let generation = f.metric("eci_profile_profile_generation");
    std::fs::write(&path, manifest("first")).unwrap();
    let started = Instant::now();
    while f.failing() != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "gauge not cleared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(f.metric("eci_profile_profile_generation"), generation);
    assert_eq!(f.failures(), 2);

    // And a valid new one is loaded.
    std::fs::write(&path, manifest("second")).unwrap();
    f.until_rule("second", Duration::from_secs(5)).await;
    assert_eq!((f.failures(), f.failing()), (2, 0));
}

/// Makes each change (to a profile whose rule is named as given) and waits
/// for it to be in use: the time each took.
async fn changed(follower: &Follower, rules: &[&str], change: impl Fn(&str)) -> Vec<Duration> {
    let mut took = Vec::new();
    for rule in rules {
        assert_ne!(follower.rule().as_deref(), Some(*rule));
        let started = Instant::now();
        change(rule);
        // 5 s is generous for a 2 s target on a busy machine, and far below
        // the 60 s periodic check.
        follower.until_rule(rule, Duration::from_secs(5)).await;
        took.push(started.elapsed());
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_and_recreated_directory_is_followed_again() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("config");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("profile.yaml");
    std::fs::write(&path, manifest("first")).unwrap();
    let f = follow(&path);

    std::fs::remove_dir_all(&dir).unwrap();
    tokio::time::sleep(SETTLE).await;
    assert_eq!(
        f.rule().as_deref(),
        Some("first"),
        "the last good one stays"
    );
    assert_eq!(
        (f.failures(), f.failing()),
        (1, 1),
        "a missing profile is reported once"
    );
    let mut took = changed(&f, &["second"], |rule| {
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(&path, manifest(rule)).unwrap();
    })
    .await;
    // Every later change in it is seen too.
    let write = |rule: &str| std::fs::write(&path, manifest(rule)).unwrap();
    took.extend(changed(&f, &["third", "fourth"], write).await);
    // Removed and created again at once, twice in a row, then changed.
    let recreate = |rule: &str| {
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(&path, manifest(rule)).unwrap();
    };
    took.extend(changed(&f, &["first", "second"], recreate).await);
    took.extend(changed(&f, &["third"], write).await);
    println!("seen after {took:?}");
    assert_eq!(f.failing(), 0);
    assert!(f.failures() <= 3, "at most one report per removal");
}

/// A mounted ConfigMap directory (`--profile-file /etc/eci-profile`) whose
/// parent is removed and created again: the grandparent's watch sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_configmap_directory_and_its_parent_are_followed_again() {
    let root = tempfile::tempdir().unwrap();
    let parent = root.path().join("etc");
    let mount: PathBuf = parent.join("eci-profile");
    let write_keys = |rule: &str| {
        std::fs::create_dir_all(&mount).unwrap();
        let text = manifest(rule);
        let selectors = text.split("selectors: |\n").nth(1).unwrap().trim();
        std::fs::write(mount.join("selectors"), selectors).unwrap();
        std::fs::write(mount.join("vpcId"), "vpc-1").unwrap();
    };
    write_keys("first");
    let f = follow(&mount);
    assert_eq!(f.rule().as_deref(), Some("first"));

    let mut took = changed(&f, &["second", "third"], |rule| {
        std::fs::remove_dir_all(&parent).unwrap();
        write_keys(rule);
    })
    .await;
    // Later changes of a key, after the re-creation.
    took.extend(changed(&f, &["fourth"], write_keys).await);
    println!("seen after {took:?}");
    // A dotfile in the directory is not a key.
    let failures = f.failures();
    for n in 0..20 {
        std::fs::write(mount.join(".editor.swp"), n.to_string()).unwrap();
    }
    tokio::time::sleep(SETTLE).await;
    assert_eq!(f.failures(), failures);
}
