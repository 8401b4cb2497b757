//! Shared by the end-to-end tests: the repository, and a sandbox of stand-in tools with a kubeconfig for the real
//! API server under a context name of the test's choosing.

#![allow(dead_code)] // each test binary uses its own part

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const STANDINS: [&str; 4] = ["minikube", "docker", "kind", "k3d"];

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("harness/kube-dev")
        .to_path_buf()
}

/// Inside the control plane's namespaces, or (outside CI) a skip that says so.
pub fn inside_control_plane() -> bool {
    if std::env::var_os("KUBE_DEV_DIR").is_some() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but this test runs outside the control plane: run it through ./make_test.sh"
    );
    eprintln!("SKIPPED: run inside scripts/kube-dev.sh exec (./make_test.sh does)");
    false
}

/// A PATH with the machine's tools (real kubectl among them) but stand-ins for some of [`STANDINS`], and a
/// kubeconfig for the real API server whose current context has the given name.
pub struct Sandbox {
    pub root: PathBuf,
}

impl Sandbox {
    pub fn new(context: &str, standins: &[&str]) -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "kube-dev-contexts-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let path = std::env::var("PATH").unwrap_or_default();
        for dir in path.split(':') {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let target = bin.join(&name);
                if STANDINS.iter().any(|s| name == *s) || target.exists() {
                    continue;
                }
                let _ = symlink(entry.path(), target);
            }
        }
        let standin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standin/standin.sh");
        for tool in standins {
            symlink(&standin, bin.join(tool)).unwrap();
        }
        let kubeconfig = root.join("kubeconfig");
        std::fs::copy(std::env::var("KUBECONFIG").unwrap(), &kubeconfig).unwrap();
        let renamed = Command::new("kubectl")
            .args(["config", "rename-context", "kube-dev", context])
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap();
        assert!(renamed.status.success(), "{renamed:?}");
        std::fs::write(root.join("calls.log"), "").unwrap();
        Self { root }
    }

    pub fn run(&self, script: &str, env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(repo_root().join(script));
        command
            .current_dir(repo_root())
            .env("PATH", self.root.join("bin"))
            .env("KUBECONFIG", self.root.join("kubeconfig"))
            .env("STANDIN_LOG", self.root.join("calls.log"))
            .env("TMPDIR", &self.root)
            .env_remove("DOCKER_HOST");
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().unwrap()
    }

    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join("calls.log"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Files the script left in its temporary directory (it must clean up, failing or not).
    pub fn leftovers(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.root)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                !["bin", "kubeconfig", "calls.log"]
                    .iter()
                    .any(|n| p.file_name().is_some_and(|f| f == *n))
            })
            .collect()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
