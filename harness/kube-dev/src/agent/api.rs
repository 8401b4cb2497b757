//! What a pod task reads from and writes to the API server besides the pod's status: the Secrets and ConfigMaps
//! its spec refers to, and the kwok Logs resource that serves `kubectl logs`.

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::Client;

use super::env::Objects;
use super::spec;

/// Tells kwok, which serves the Node's kubelet API, where this pod's output is: `kubectl logs` then reads it
/// through the API server. The Logs resource is owned by the pod, so it goes with it.
pub(super) async fn publish_logs(
    client: &Client,
    pod: &Pod,
    container: &str,
    log: &std::path::Path,
    previous: &std::path::Path,
) -> anyhow::Result<()> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kwok.x-k8s.io", "v1alpha1", "Logs"),
        "logs",
    );
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
    let logs = serde_json::json!({
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Logs",
        "metadata": {
            "name": &name,
            "namespace": namespace,
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Pod",
                "name": &name,
                "uid": pod.metadata.uid,
            }],
        },
        "spec": {"logs": [{
            "containers": [container],
            "logsFile": log,
            "previousLogsFile": previous,
            "follow": true,
        }]},
    });
    let object: DynamicObject = serde_json::from_value(logs)?;
    api.patch(
        &name,
        &PatchParams::apply("kube-dev-agent").force(),
        &Patch::Apply(&object),
    )
    .await?;
    Ok(())
}

/// Fetches the Secrets and ConfigMaps the pod refers to (those that exist).
pub(super) async fn objects(client: &Client, pod: &Pod) -> anyhow::Result<Objects> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let (secret_names, map_names) = spec::referenced(pod);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let mut objects = Objects::default();
    for name in secret_names {
        if let Some(secret) = secrets.get_opt(&name).await? {
            let data = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            objects.secrets.insert(name, data);
        }
    }
    for name in map_names {
        if let Some(map) = maps.get_opt(&name).await? {
            objects
                .config_maps
                .insert(name, map.data.unwrap_or_default());
        }
    }
    Ok(objects)
}
