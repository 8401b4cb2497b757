//! deploy/ validates strictly against the pinned schemas, and the check does catch broken manifests.

use std::path::Path;
use std::process::{Command, Output};

use deploy_check::repo_root;

fn check(args: &[&Path]) -> Output {
    Command::new(repo_root().join("scripts/check-manifests.sh"))
        .args(args)
        .output()
        .expect("scripts/check-manifests.sh runs")
}

/// Whether kubeconform can run; without it the test fails in CI and is skipped (with a message) elsewhere.
fn kubeconform_available(output: &Output) -> bool {
    let missing = text(output).contains("kubeconform is missing");
    if missing && std::env::var_os("CI").is_none() {
        eprintln!("SKIPPED: kubeconform is not installed (go install github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0)");
        return false;
    }
    true
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn schemas_present() -> bool {
    let present = repo_root().join("../shared/k8s-schemas").is_dir()
        || std::env::var_os("K8S_SCHEMAS").is_some();
    if !present {
        eprintln!(
            "SKIPPED: ../shared/k8s-schemas is absent; manifests cannot be validated offline"
        );
    }
    present
}

#[test]
fn deploy_manifests_validate_strictly() {
    if !schemas_present() {
        return;
    }
    let output = check(&[]);
    if !kubeconform_available(&output) {
        return;
    }
    let text = text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("Invalid: 0, Errors: 0"), "{text}");
    assert!(
        !text.contains("Valid: 0,"),
        "something was validated: {text}"
    );
}

#[test]
fn each_broken_manifest_is_rejected() {
    if !schemas_present() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/broken");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 4);
    for fixture in fixtures {
        let output = check(&[&fixture]);
        if !kubeconform_available(&output) {
            return;
        }
        assert!(
            !output.status.success(),
            "{} passed the check:\n{}",
            fixture.display(),
            text(&output)
        );
    }
}
