//! The environment of a container: `env` entries from values, fields of the pod, Secret and ConfigMap keys,
//! and `$(VAR)` expansion as the kubelet does it.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use k8s_openapi::api::core::v1::{EnvVar, Pod};

/// The Secrets and ConfigMaps of a pod's namespace that its spec refers to.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

pub(super) fn utf8(value: &[u8], object: &str, key: &str) -> anyhow::Result<String> {
    String::from_utf8(value.to_vec()).with_context(|| format!("{object}/{key} is not UTF-8"))
}

/// The value of one `env` entry, or `None` for an optional reference to something absent.
pub(super) fn env_value(
    pod: &Pod,
    var: &EnvVar,
    objects: &Objects,
) -> anyhow::Result<Option<String>> {
    let Some(from) = &var.value_from else {
        return Ok(Some(var.value.clone().unwrap_or_default()));
    };
    if let Some(field) = &from.field_ref {
        return field_value(pod, &field.field_path)
            .map(Some)
            .with_context(|| format!("env {}", var.name));
    }
    if let Some(key) = &from.secret_key_ref {
        let value = objects.secrets.get(&key.name).and_then(|d| d.get(&key.key));
        return match value {
            Some(value) => utf8(value, &key.name, &key.key).map(Some),
            None if key.optional == Some(true) => Ok(None),
            None => bail!(
                "env {}: secret {} has no key {}",
                var.name,
                key.name,
                key.key
            ),
        };
    }
    if let Some(key) = &from.config_map_key_ref {
        let value = objects
            .config_maps
            .get(&key.name)
            .and_then(|d| d.get(&key.key));
        return match value {
            Some(value) => Ok(Some(value.clone())),
            None if key.optional == Some(true) => Ok(None),
            None => bail!(
                "env {}: configmap {} has no key {}",
                var.name,
                key.name,
                key.key
            ),
        };
    }
    bail!(
        "env {}: only fieldRef, secretKeyRef and configMapKeyRef are supported here",
        var.name
    )
}

/// The downward API: the pod fields a container's environment may name.
pub(super) fn field_value(pod: &Pod, path: &str) -> anyhow::Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let lookup = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default()
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        // Every pod of the agent shares the machine's loopback.
        "status.podIP" | "status.hostIP" | "status.podIPs" | "status.hostIPs" => "127.0.0.1".into(),
        other => {
            if let Some(key) = bracketed(other, "metadata.labels") {
                lookup(&meta.labels, key)
            } else if let Some(key) = bracketed(other, "metadata.annotations") {
                lookup(&meta.annotations, key)
            } else {
                bail!("fieldRef {other} is not supported")
            }
        }
    };
    Ok(value)
}

pub(super) fn bracketed<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)?
        .strip_prefix("['")?
        .strip_suffix("']")
}

/// Kubernetes' `$(VAR)` expansion of values, commands and arguments: names defined earlier are replaced, `$$`
/// is a literal `$`, anything else stays as written.
pub(super) fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.iter().rev().find(|(n, _)| n == name) {
                        Some((_, value)) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}
