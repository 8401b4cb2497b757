//! A pod's volumes as directories of its pod directory: Secrets, ConfigMaps, emptyDirs and the projected
//! service-account volume (a token from the TokenRequest API, the cluster CA, the namespace). Secrets and
//! ConfigMaps are refreshed while the pod runs, as a kubelet does (KEDA waits for the certificates it writes to
//! its own Secret to appear in its mounted volume).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount, Volume};
use kube::api::{Api, PostParams};
use kube::Client;

use super::env::field_value;
use super::env::Objects;
use super::spec::VolumeDirs;

/// Where Kubernetes mounts a pod's API credentials.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Lifetime asked for service-account tokens (the control plane allows up to 48 h); the end-to-end test is over
/// long before, so tokens are not rotated.
const TOKEN_SECONDS: i64 = 24 * 3600;

/// Creates every volume of `pod` under `dir/volumes`, returns their directories.
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    dir: &Path,
    objects: &Objects,
) -> anyhow::Result<VolumeDirs> {
    let mut dirs = VolumeDirs::new();
    let Some(spec) = &pod.spec else {
        return Ok(dirs);
    };
    for volume in spec.volumes.iter().flatten() {
        let path = dir.join("volumes").join(&volume.name);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let files = files_of(client, pod, volume, objects).await?;
        if volume.empty_dir.is_some() {
            // Writable by whatever user the container runs as, as an emptyDir is.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))?;
        }
        write_files(&path, &files)?;
        dirs.insert(volume.name.clone(), path);
    }
    Ok(dirs)
}

/// Rewrites the Secret and ConfigMap volumes of a running pod from fresh `objects`.
pub fn refresh(pod: &Pod, dirs: &VolumeDirs, objects: &Objects) -> anyhow::Result<()> {
    let Some(spec) = &pod.spec else {
        return Ok(());
    };
    for volume in spec.volumes.iter().flatten() {
        if volume.secret.is_none() && volume.config_map.is_none() {
            continue;
        }
        if let Some(path) = dirs.get(&volume.name) {
            write_files(path, &object_files(volume, objects)?)?;
        }
    }
    Ok(())
}

/// The kubeconfig a container with API credentials uses, or `None` when it has none mounted
/// (`automountServiceAccountToken: false`, as the project's own pods).
pub fn kubeconfig(
    pod: &Pod,
    container: &str,
    dirs: &VolumeDirs,
    dir: &Path,
    api_server: &str,
) -> anyhow::Result<Option<PathBuf>> {
    let Some(spec) = &pod.spec else {
        return Ok(None);
    };
    let mount = spec
        .containers
        .iter()
        .filter(|c| c.name == container)
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .find(|m| m.mount_path == SERVICE_ACCOUNT_MOUNT);
    let Some(mount) = mount else {
        return Ok(None);
    };
    let credentials = dirs
        .get(&mount.name)
        .ok_or_else(|| anyhow!("volume {} is not prepared", mount.name))?;
    let path = dir.join(format!("{container}.kubeconfig"));
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": {
            "server": api_server,
            "certificate-authority": credentials.join("ca.crt"),
        }}],
        "users": [{"name": "pod", "user": {"tokenFile": credentials.join("token")}}],
        "contexts": [{"name": "pod", "context": {
            "cluster": "cluster",
            "user": "pod",
            "namespace": pod.metadata.namespace.clone().unwrap_or_default(),
        }}],
        "current-context": "pod",
    });
    write_file(&path, serde_json::to_string_pretty(&config)?.as_bytes())?;
    Ok(Some(path))
}

/// The files of one volume, relative path → content.
async fn files_of(
    client: &Client,
    pod: &Pod,
    volume: &Volume,
    objects: &Objects,
) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    if volume.empty_dir.is_some() || volume.secret.is_some() || volume.config_map.is_some() {
        return object_files(volume, objects);
    }
    let Some(projected) = &volume.projected else {
        bail!(
            "volume {}: only secret, configMap, emptyDir and projected volumes are supported here",
            volume.name
        );
    };
    let mut files = BTreeMap::new();
    for source in projected.sources.iter().flatten() {
        if let Some(token) = &source.service_account_token {
            let value = request_token(client, pod, token.audience.clone()).await?;
            files.insert(token.path.clone(), value.into_bytes());
        }
        if let Some(map) = &source.config_map {
            let data = objects.config_maps.get(&map.name);
            match data {
                Some(data) => {
                    for (path, value) in
                        select(&map.items, data.iter().map(|(k, v)| (k, v.as_bytes())))?
                    {
                        files.insert(path, value.to_vec());
                    }
                }
                None if map.optional == Some(true) => {}
                None => bail!("configmap {} (projected) does not exist", map.name),
            }
        }
        if let Some(secret) = &source.secret {
            match objects.secrets.get(&secret.name) {
                Some(data) => {
                    for (path, value) in
                        select(&secret.items, data.iter().map(|(k, v)| (k, v.as_slice())))?
                    {
                        files.insert(path, value.to_vec());
                    }
                }
                None if secret.optional == Some(true) => {}
                None => bail!("secret {} (projected) does not exist", secret.name),
            }
        }
        if let Some(downward) = &source.downward_api {
            for item in downward.items.iter().flatten() {
                let field = item.field_ref.as_ref().ok_or_else(|| {
                    anyhow!("downwardAPI {}: only fieldRef is supported", item.path)
                })?;
                files.insert(
                    item.path.clone(),
                    field_value(pod, &field.field_path)?.into_bytes(),
                );
            }
        }
    }
    Ok(files)
}

/// Files of a Secret, ConfigMap or emptyDir volume.
fn object_files(volume: &Volume, objects: &Objects) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        match objects.secrets.get(&name) {
            Some(data) => {
                for (path, value) in
                    select(&secret.items, data.iter().map(|(k, v)| (k, v.as_slice())))?
                {
                    files.insert(path, value.to_vec());
                }
            }
            // Optional and not there (yet): an empty directory, filled once the Secret exists.
            None if secret.optional == Some(true) => {}
            None => bail!("secret {name} (volume {}) does not exist", volume.name),
        }
    }
    if let Some(map) = &volume.config_map {
        match objects.config_maps.get(&map.name) {
            Some(data) => {
                for (path, value) in
                    select(&map.items, data.iter().map(|(k, v)| (k, v.as_bytes())))?
                {
                    files.insert(path, value.to_vec());
                }
            }
            None if map.optional == Some(true) => {}
            None => bail!(
                "configmap {} (volume {}) does not exist",
                map.name,
                volume.name
            ),
        }
    }
    Ok(files)
}

/// The (path, content) pairs of an object's data, restricted and renamed by `items` when given.
fn select<'a>(
    items: &Option<Vec<k8s_openapi::api::core::v1::KeyToPath>>,
    data: impl Iterator<Item = (&'a String, &'a [u8])>,
) -> anyhow::Result<Vec<(String, &'a [u8])>> {
    let data: Vec<(&String, &[u8])> = data.collect();
    match items {
        None => Ok(data.into_iter().map(|(k, v)| (k.clone(), v)).collect()),
        Some(items) => items
            .iter()
            .map(|item| {
                data.iter()
                    .find(|(k, _)| **k == item.key)
                    .map(|(_, v)| (item.path.clone(), *v))
                    .ok_or_else(|| anyhow!("key {} is not in the object", item.key))
            })
            .collect(),
    }
}

/// A token of the pod's service account, bound to the pod (it stops working once the pod is gone).
async fn request_token(
    client: &Client,
    pod: &Pod,
    audience: Option<String>,
) -> anyhow::Result<String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: Some(TOKEN_SECONDS),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let response: TokenRequest = accounts
        .create_subresource("token", &account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token for service account {namespace}/{account}"))?;
    response
        .status
        .map(|s| s.token)
        .ok_or_else(|| anyhow!("the token request for {namespace}/{account} returned no token"))
}

fn write_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
    for (name, content) in files {
        if name.split('/').any(|part| part == ".." || part.is_empty()) {
            bail!("refusing the volume path {name}");
        }
        let path = dir.join(name);
        if std::fs::read(&path).is_ok_and(|existing| existing == *content) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        write_file(&path, content)?;
    }
    Ok(())
}

/// Writes a file readable by any user (the container's may not be the agent's), atomically.
fn write_file(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    let temporary = path.with_extension("writing");
    std::fs::write(&temporary, content)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
