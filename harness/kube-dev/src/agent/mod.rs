//! The node agent: a kubelet for the pods of the configured images (the KEDA operator's), on one Node that
//! kwok keeps alive. It watches the pods bound to that Node; a pod whose image it knows runs as a local process
//! (see [`pod`]), every other pod is kwok's.

mod api;
pub mod config;
mod env;
pub mod pod;
mod probe;
pub mod process;
pub mod spec;
pub mod status;
pub mod volumes;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::Client;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::AgentConfig;
use pod::{Command, Context};

/// Runs the agent until `shutdown`; the pods it runs are then stopped as if deleted.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to the API server (KUBECONFIG)")?;
    std::fs::create_dir_all(config.state_dir.join("pods"))?;
    let node = config.node.clone();
    let context = Arc::new(Context {
        client: client.clone(),
        config,
    });
    let pods: Api<Pod> = Api::all(client);
    let stream = watcher::watcher(
        pods,
        watcher::Config::default().fields(&format!("spec.nodeName={node}")),
    );
    let mut stream = std::pin::pin!(stream.map_err(anyhow::Error::from));
    let mut running: HashMap<String, mpsc::Sender<Command>> = HashMap::new();
    // Pods whose container ran to its end here: never started again, even if an event older than their final
    // status arrives after it.
    let mut done: HashSet<String> = HashSet::new();
    let tasks = TaskTracker::new();
    info!(node = %node, images = context.config.images.len(), "node agent running");
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            event = stream.next() => event,
        };
        match event {
            Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => {
                on_pod(&context, &tasks, &mut running, &done, pod).await;
            }
            Some(Ok(Event::Delete(pod))) => {
                // Gone from the API: whatever still runs for it stops at once.
                if let Some(uid) = &pod.metadata.uid {
                    done.remove(uid);
                    if let Some(sender) = running.remove(uid) {
                        let _ = sender
                            .send(Command::Stop {
                                grace: Duration::ZERO,
                            })
                            .await;
                    }
                }
            }
            Some(Ok(Event::Init | Event::InitDone)) => {}
            Some(Err(err)) => {
                warn!(error = format!("{err:#}"), "pod watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None => break,
        }
        running.retain(|uid, sender| {
            let ended = sender.is_closed();
            if ended {
                done.insert(uid.clone());
            }
            !ended
        });
    }
    info!(
        pods = running.len(),
        "node agent stopping; stopping its pods"
    );
    for sender in running.values() {
        let _ = sender
            .send(Command::Stop {
                grace: Duration::from_secs(5),
            })
            .await;
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// Whether the agent runs `pod`: one of its containers has an image the agent knows.
fn is_ours(config: &AgentConfig, pod: &Pod) -> bool {
    pod.spec.iter().flat_map(|s| s.containers.iter()).any(|c| {
        c.image
            .as_deref()
            .is_some_and(|image| config.image(image).is_some())
    })
}

async fn on_pod(
    context: &Arc<Context>,
    tasks: &TaskTracker,
    running: &mut HashMap<String, mpsc::Sender<Command>>,
    done: &HashSet<String>,
    pod: Pod,
) {
    if !is_ours(&context.config, &pod) {
        return;
    }
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let grace = Duration::from_secs(
        pod.metadata
            .deletion_grace_period_seconds
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0),
    );
    if let Some(sender) = running.get(&uid) {
        if deleting {
            let _ = sender.send(Command::Stop { grace }).await;
        }
        return;
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let finished = phase == "Succeeded" || phase == "Failed";
    if deleting
        && (finished
            || pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_none())
    {
        // Nothing runs for it (it ended, or never started): the API server may forget it now.
        finalize(context, &pod).await;
        return;
    }
    if finished || done.contains(&uid) {
        if deleting {
            finalize(context, &pod).await;
        }
        return;
    }
    let (sender, receiver) = mpsc::channel(4);
    if deleting {
        let _ = sender.send(Command::Stop { grace }).await;
    }
    running.insert(uid, sender);
    tasks.spawn(pod::run(Arc::clone(context), pod, receiver));
}

/// Deletes a pod for good (grace period 0), as a kubelet does once its containers are gone.
async fn finalize(context: &Context, pod: &Pod) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(
        context.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    if let Err(err) = api.delete(&name, &params).await {
        warn!(pod = %name, error = %err, "could not remove a deleted pod");
    }
}
