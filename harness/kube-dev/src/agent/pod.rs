//! The life of one pod on the agent: prepare its volumes and environment, run its container, probe it, restart it
//! as its `restartPolicy` says, and on deletion stop it within its grace period and let the API server forget it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::Client;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::config::AgentConfig;
use super::probe::ProbeState;
use super::process::{rfc3339_nanos, Exit, Process};
use super::spec::{self, Launch, VolumeDirs};
use super::status::{pod_status, ContainerReport, State};
use super::volumes;

/// What the watch loop tells a running pod.
#[derive(Debug)]
pub enum Command {
    /// The pod is being deleted: stop within this grace period.
    Stop { grace: Duration },
}

/// Shared by every pod task.
pub struct Context {
    pub client: Client,
    pub config: AgentConfig,
}

/// The most a crashing container waits before it is started again (a kubelet waits up to 5 minutes; tests
/// cannot).
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often Secret and ConfigMap volumes are refreshed.
const VOLUME_REFRESH: Duration = Duration::from_secs(2);

fn now() -> String {
    rfc3339_nanos(std::time::SystemTime::now())
}

/// Runs `pod` until it ends or is deleted, then reports its last status (and, if deleted, removes it).
pub async fn run(context: Arc<Context>, pod: Pod, mut commands: mpsc::Receiver<Command>) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let mut runner = Runner {
        context,
        api: api.clone(),
        pod,
        report: None,
    };
    let deleted = match runner.lifecycle(&mut commands).await {
        Ok(deleted) => deleted,
        Err(err) => {
            warn!(pod = %name, namespace = %namespace, error = format!("{err:#}"), "pod failed in the agent");
            runner.fail(&format!("{err:#}")).await;
            // Wait for the deletion that follows a failure (a Job's), so the pod is finalised here too.
            matches!(commands.recv().await, Some(Command::Stop { .. }))
        }
    };
    if deleted {
        let uid = runner.pod.metadata.uid.clone();
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(err) = api.delete(&name, &params).await {
            warn!(pod = %name, error = %err, "could not remove the deleted pod");
        }
    }
}

struct Runner {
    context: Arc<Context>,
    api: Api<Pod>,
    pod: Pod,
    report: Option<ContainerReport>,
}

impl Runner {
    fn name(&self) -> String {
        self.pod.metadata.name.clone().unwrap_or_default()
    }

    /// Returns whether the pod was deleted (rather than ending by itself).
    async fn lifecycle(&mut self, commands: &mut mpsc::Receiver<Command>) -> anyhow::Result<bool> {
        let spec = self
            .pod
            .spec
            .clone()
            .ok_or_else(|| anyhow!("the pod has no spec"))?;
        if spec.containers.len() != 1
            || spec.init_containers.as_ref().is_some_and(|c| !c.is_empty())
        {
            anyhow::bail!("the agent runs pods of exactly one container and no init containers");
        }
        let container = spec.containers[0].clone();
        let image_name = container.image.clone().unwrap_or_default();
        let image = self
            .context
            .config
            .image(&image_name)
            .cloned()
            .ok_or_else(|| anyhow!("image {image_name} is not one the agent runs"))?;
        let dir = spec::pod_dir(&self.context.config.state_dir, &self.pod);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join(format!("{}.log", container.name));
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let grace = Duration::from_secs(
            spec.termination_grace_period_seconds
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(30),
        );

        // Configuration first: a missing Secret keeps the pod waiting, as on a kubelet.
        let (volumes, launch) = loop {
            match self.prepare(&container, &image, &dir).await {
                Ok(prepared) => break prepared,
                Err(err) => {
                    let message = format!("{err:#}");
                    self.report(
                        State::Waiting {
                            reason: "CreateContainerConfigError".into(),
                            message,
                        },
                        None,
                        0,
                        None,
                        false,
                    )
                    .await;
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(2)) => {}
                        Some(Command::Stop { .. }) = commands.recv() => return Ok(true),
                    }
                }
            }
        };
        let kubeconfig = volumes::kubeconfig(
            &self.pod,
            &container.name,
            &volumes,
            &dir,
            &self.context.config.api_server,
        )?;
        std::fs::write(dir.join("ports"), ports_text(&launch))?;
        let previous_log = dir.join(format!("{}.previous.log", container.name));
        if let Err(err) = super::api::publish_logs(
            &self.context.client,
            &self.pod,
            &container.name,
            &log,
            &previous_log,
        )
        .await
        {
            warn!(pod = %self.name(), error = format!("{err:#}"), "`kubectl logs` will not find this pod's output");
        }

        let mut restarts = 0;
        let mut last: Option<State> = None;
        let mut backoff = Duration::from_secs(1);
        loop {
            let mut process = Process::start(&launch, &dir, &log, kubeconfig.as_ref())?;
            let started_at = now();
            info!(pod = %self.name(), pid = process.pid(), program = %launch.program.display(), "container started");
            let started = Instant::now();
            let mut ready = launch.readiness.is_none();
            self.report(
                State::Running {
                    started_at: started_at.clone(),
                    ready,
                },
                Some(process.pid()),
                restarts,
                last.clone(),
                false,
            )
            .await;

            let (exit, stopped) = self
                .watch(
                    &mut process,
                    &launch,
                    &volumes,
                    commands,
                    &mut ready,
                    &started_at,
                    restarts,
                    &last,
                    grace,
                )
                .await?;
            let terminated = State::Terminated {
                exit,
                started_at,
                finished_at: now(),
            };
            info!(pod = %self.name(), code = exit.code, "container exited");
            let restart = !stopped
                && match policy.as_str() {
                    "Always" => true,
                    "OnFailure" => exit.code != 0,
                    _ => false,
                };
            if !restart {
                self.report(terminated, Some(process.pid()), restarts, last, true)
                    .await;
                return Ok(stopped);
            }
            // A container that ran a while starts again at once; one that keeps crashing backs off.
            if started.elapsed() > MAX_BACKOFF * 2 {
                backoff = Duration::from_secs(1);
            }
            self.report(
                State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: format!(
                        "back-off {}s restarting failed container",
                        backoff.as_secs()
                    ),
                },
                None,
                restarts,
                Some(terminated.clone()),
                false,
            )
            .await;
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                Some(Command::Stop { .. }) = commands.recv() => {
                    self.report(terminated, None, restarts, last, true).await;
                    return Ok(true);
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            restarts += 1;
            // `kubectl logs --previous` reads the run before.
            let _ = std::fs::rename(&log, &previous_log);
            last = Some(terminated);
        }
    }

    async fn prepare(
        &self,
        container: &k8s_openapi::api::core::v1::Container,
        image: &super::config::Image,
        dir: &std::path::Path,
    ) -> anyhow::Result<(VolumeDirs, Launch)> {
        let objects = super::api::objects(&self.context.client, &self.pod).await?;
        let volumes = volumes::prepare(&self.context.client, &self.pod, dir, &objects).await?;
        let launch = spec::plan(
            &self.pod,
            container,
            image,
            &objects,
            &volumes,
            &mut free_port,
        )?;
        Ok((volumes, launch))
    }

    /// Watches the running container: its exit, its probes, deletion, volume refreshes. Returns how it ended
    /// and whether it was stopped (deletion).
    #[allow(clippy::too_many_arguments)]
    async fn watch(
        &mut self,
        process: &mut Process,
        launch: &Launch,
        volumes: &VolumeDirs,
        commands: &mut mpsc::Receiver<Command>,
        ready: &mut bool,
        started_at: &str,
        restarts: u32,
        last: &Option<State>,
        grace: Duration,
    ) -> anyhow::Result<(Exit, bool)> {
        let http = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let mut readiness = ProbeState::new(launch.readiness.clone());
        let mut liveness = ProbeState::new(launch.liveness.clone());
        let mut refresh = tokio::time::interval(VOLUME_REFRESH);
        let refresh_volumes = volumes_to_refresh(&self.pod);
        loop {
            tokio::select! {
                exit = process.wait() => return Ok((exit?, false)),
                Some(Command::Stop { grace }) = commands.recv() => {
                    info!(pod = %self.name(), grace_s = grace.as_secs(), "stopping (pod deleted)");
                    return Ok((process.stop(grace).await?, true));
                }
                () = readiness.due() => {
                    // Ready at the first success; not ready after failureThreshold failures in a row.
                    let ok = readiness.check(&http).await;
                    let now_ready = ok || (*ready && !readiness.failed());
                    if now_ready != *ready {
                        *ready = now_ready;
                        self.report(State::Running { started_at: started_at.to_owned(), ready: now_ready }, Some(process.pid()), restarts, last.clone(), false).await;
                    }
                }
                () = liveness.due() => {
                    liveness.check(&http).await;
                    if liveness.failed() {
                        warn!(pod = %self.name(), "liveness probe failed; restarting the container");
                        return Ok((process.stop(grace).await?, false));
                    }
                }
                _ = refresh.tick(), if refresh_volumes => {
                    match super::api::objects(&self.context.client, &self.pod).await {
                        Ok(objects) => {
                            if let Err(err) = volumes::refresh(&self.pod, volumes, &objects) {
                                warn!(pod = %self.name(), error = format!("{err:#}"), "could not refresh volumes");
                            }
                        }
                        Err(err) => warn!(pod = %self.name(), error = format!("{err:#}"), "could not read the pod's Secrets"),
                    }
                }
            }
        }
    }

    async fn report(
        &mut self,
        state: State,
        pid: Option<i32>,
        restarts: u32,
        last: Option<State>,
        finished: bool,
    ) {
        let container = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .cloned()
            .unwrap_or_default();
        let report = ContainerReport {
            name: container.name,
            image: container.image.unwrap_or_default(),
            pid,
            state,
            restarts,
            last,
        };
        let status = pod_status(&self.pod, &report, finished, &now());
        self.report = Some(report);
        let patch = serde_json::json!({ "status": status });
        match self
            .api
            .patch_status(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => self.pod.status = updated.status,
            Err(err) => {
                warn!(pod = %self.name(), error = %err, "could not report the pod's status")
            }
        }
    }

    /// Reports a pod the agent cannot run as Failed, with the reason in its container's state.
    async fn fail(&mut self, message: &str) {
        let now = now();
        self.report(
            State::Terminated {
                exit: Exit {
                    code: 128,
                    signal: None,
                },
                started_at: now.clone(),
                finished_at: now,
            },
            None,
            0,
            Some(State::Waiting {
                reason: "AgentError".into(),
                message: message.to_owned(),
            }),
            true,
        )
        .await;
    }
}

/// Whether the pod has Secret or ConfigMap volumes to keep fresh.
fn volumes_to_refresh(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| v.secret.is_some() || v.config_map.is_some())
}

/// `name containerPort hostPort` per line: where a test reaches a pod's ports.
fn ports_text(launch: &Launch) -> String {
    launch
        .ports
        .iter()
        .map(|p| {
            format!(
                "{} {} {}\n",
                p.name.as_deref().unwrap_or("-"),
                p.container_port,
                p.host_port
            )
        })
        .collect()
}

/// A free port on loopback.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
