//! The image build, rehearsed. No Docker engine runs here, so the build context is made exactly as Docker makes
//! it (the `.dockerignore` applied by moby/patternmatcher, Docker's own matcher: `scripts/docker-context`) and the
//! Dockerfile's planner and builder stages are played in it: their `WORKDIR`, `COPY` and `RUN` instructions, with
//! the cargo-chef version the Dockerfile pins. What is not rehearsed: the Alpine/musl toolchain of the image (the
//! host's is used) and the distroless runtime stages. The stages build into the repository's own `target/` (the
//! context never holds one, as Docker's would not), so the dependencies a release build of the workspace already
//! compiled are not compiled again.

use std::path::{Path, PathBuf};
use std::process::Command;

use deploy_check::repo_root;

/// One instruction of a Dockerfile stage.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Instruction {
    Copy {
        from: Option<String>,
        source: String,
        target: String,
    },
    Run(String),
    Other(String),
}

/// The stages of a Dockerfile: name, base, instructions. Line continuations are joined, comments dropped.
fn stages(dockerfile: &str) -> Vec<(String, String, Vec<Instruction>)> {
    let mut joined: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head.trim_end());
            current.push(' ');
        } else {
            current.push_str(trimmed);
            joined.push(std::mem::take(&mut current));
        }
    }
    let mut stages = Vec::new();
    for line in joined {
        let (keyword, rest) = line.split_once(' ').unwrap_or((&line, ""));
        match keyword.to_ascii_uppercase().as_str() {
            "FROM" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => (*name).to_owned(),
                    _ => String::new(),
                };
                stages.push((name, words[0].to_owned(), Vec::new()));
            }
            "COPY" => {
                let mut words: Vec<&str> = rest.split_whitespace().collect();
                let from = words
                    .first()
                    .and_then(|w| w.strip_prefix("--from="))
                    .map(str::to_owned);
                if from.is_some() {
                    words.remove(0);
                }
                let instruction = Instruction::Copy {
                    from,
                    source: words[0].to_owned(),
                    target: words[1].to_owned(),
                };
                stages.last_mut().expect("FROM first").2.push(instruction);
            }
            "RUN" => stages
                .last_mut()
                .expect("FROM first")
                .2
                .push(Instruction::Run(rest.to_owned())),
            _ => stages
                .last_mut()
                .expect("FROM first")
                .2
                .push(Instruction::Other(line.clone())),
        }
    }
    stages
}

/// The cargo-chef version the chef stage installs.
fn pinned_chef(stages: &[(String, String, Vec<Instruction>)]) -> String {
    stages
        .iter()
        .flat_map(|(_, _, instructions)| instructions)
        .find_map(|i| match i {
            Instruction::Run(command) if command.contains("cargo install cargo-chef") => {
                let words: Vec<&str> = command.split_whitespace().collect();
                let at = words.iter().position(|w| *w == "--version")?;
                Some(words[at + 1].to_owned())
            }
            _ => None,
        })
        .expect("the Dockerfile pins cargo-chef with --version")
}

fn copy_tree(source: &Path, target: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", source.display()))
        .arg(target)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "copying {} to {}",
        source.display(),
        target.display()
    );
}

/// Builds Docker's view of the context of `source` into `destination`.
fn docker_context(source: &Path, destination: &Path) {
    static TOOL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let tool = TOOL.get_or_init(|| {
        let tool = repo_root().join("target/docker-context");
        let built = Command::new("go")
            .args(["build", "-o"])
            .arg(&tool)
            .arg(".")
            .current_dir(repo_root().join("scripts/docker-context"))
            .output()
            .expect("go runs");
        assert!(
            built.status.success(),
            "building scripts/docker-context: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        tool
    });
    let _ = std::fs::remove_dir_all(destination);
    std::fs::create_dir_all(destination).unwrap();
    let copied = Command::new(tool)
        .arg(source)
        .arg(destination)
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
}

/// Plays the planner and builder stages in `context` (Docker's view of the repository). Returns the failing
/// instruction and its output, if one fails.
fn rehearse(context: &Path, work: &Path) -> Result<(), String> {
    let dockerfile = std::fs::read_to_string(context.join("docker/Dockerfile"))
        .map_err(|e| format!("docker/Dockerfile is not in the context: {e}"))?;
    let stages = stages(&dockerfile);
    let target = repo_root().join("target");
    for stage in ["planner", "builder"] {
        let (_, base, instructions) = stages
            .iter()
            .find(|(name, _, _)| name == stage)
            .unwrap_or_else(|| panic!("no stage {stage} in docker/Dockerfile"));
        assert_eq!(
            base, "chef",
            "{stage} builds on the chef stage (WORKDIR /src)"
        );
        // The stage's /src: empty at first, building into the repository's target/.
        let dir = work.join(stage);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(&target, dir.join("target")).unwrap();
        for instruction in instructions {
            match instruction {
                Instruction::Copy {
                    from: None,
                    source,
                    target,
                } if source == "." && target == "." => {
                    copy_tree(context, &dir);
                }
                Instruction::Copy {
                    from: Some(from),
                    source,
                    target,
                } => {
                    let source = source.strip_prefix("/src/").expect("a path of /src");
                    std::fs::copy(work.join(from).join(source), dir.join(target))
                        .map_err(|e| format!("COPY --from={from} {source}: {e}"))?;
                }
                Instruction::Run(command) => {
                    eprintln!("[{stage}] RUN {command}");
                    let output = Command::new("sh")
                        .args(["-c", command])
                        .current_dir(&dir)
                        .output()
                        .unwrap();
                    if !output.status.success() {
                        return Err(format!(
                            "[{stage}] RUN {command} failed:\n{}{}",
                            String::from_utf8_lossy(&output.stdout),
                            String::from_utf8_lossy(&output.stderr)
                        ));
                    }
                }
                other => panic!("[{stage}] the rehearsal does not know {other:?}"),
            }
        }
    }
    Ok(())
}

/// Whether the pinned cargo-chef is installed; in CI it must be (make_test.sh installs it).
fn chef_installed(version: &str) -> bool {
    let output = Command::new("cargo").args(["chef", "--version"]).output();
    let found = output
        .as_ref()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if found.contains(version) {
        return true;
    }
    let hint = format!("cargo install cargo-chef --locked --version {version} (found: {found:?})");
    assert!(
        std::env::var_os("CI").is_none(),
        "the pinned cargo-chef is missing: {hint}"
    );
    eprintln!("SKIPPED: {hint}");
    false
}

#[test]
fn the_dockerfile_is_read_as_docker_reads_it() {
    let text = "FROM a AS chef\nRUN x \\\n  && y\n# c\nFROM chef AS builder\nCOPY --from=planner /src/r.json r.json\nCOPY . .\n";
    let parsed = stages(text);
    assert_eq!(parsed[0].2, [Instruction::Run("x && y".into())]);
    assert_eq!(parsed[1].0, "builder");
    assert_eq!(
        parsed[1].2[0],
        Instruction::Copy {
            from: Some("planner".into()),
            source: "/src/r.json".into(),
            target: "r.json".into()
        }
    );
}

#[test]
fn the_image_builds_from_the_context_docker_would_send() {
    let dockerfile = std::fs::read_to_string(repo_root().join("docker/Dockerfile")).unwrap();
    if !chef_installed(&pinned_chef(&stages(&dockerfile))) {
        return;
    }
    let work = repo_root().join("target/image-rehearsal");
    let context = work.join("context");
    docker_context(&repo_root(), &context);
    // What a .dockerignore must never drop: every workspace member's manifest (cargo metadata reads them all).
    for member in [
        "Cargo.toml",
        "Cargo.lock",
        "bench/Cargo.toml",
        "crates/medicine/Cargo.toml",
        "docker/Dockerfile",
    ] {
        assert!(
            context.join(member).is_file(),
            "{member} is not in the Docker context"
        );
    }
    assert!(!context.join("target").exists() && !context.join(".git").exists());
    rehearse(&context, &work).unwrap_or_else(|failure| panic!("{failure}"));
    for binary in ["patient", "medicine"] {
        assert!(work.join("builder/target/release").join(binary).is_file());
    }
}

#[test]
fn a_dockerignore_that_drops_a_workspace_member_fails_the_rehearsal() {
    let dockerfile = std::fs::read_to_string(repo_root().join("docker/Dockerfile")).unwrap();
    if !chef_installed(&pinned_chef(&stages(&dockerfile))) {
        return;
    }
    // The .dockerignore that broke `./make_build.sh`: bench/ (a workspace member) left out.
    let work = repo_root().join("target/image-rehearsal-broken");
    let source = work.join("source");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&source).unwrap();
    for entry in ["Cargo.toml", "Cargo.lock", "crates", "bench", "docker"] {
        let status = Command::new("cp")
            .arg("-a")
            .arg(repo_root().join(entry))
            .arg(&source)
            .status()
            .unwrap();
        assert!(status.success());
    }
    std::fs::write(source.join(".dockerignore"), "target/\nbench/\n").unwrap();
    let context = work.join("context");
    docker_context(&source, &context);
    let failure = rehearse(&context, &work).expect_err("a context without bench/ cannot build");
    assert!(
        failure.contains("cargo chef prepare") && failure.contains("bench"),
        "{failure}"
    );
    let _ = std::fs::remove_dir_all(&work);
}
