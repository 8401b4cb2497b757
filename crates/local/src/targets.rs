//! The running children's metrics endpoints: for the panel, and for Prometheus' file discovery
//! (`prometheus-targets.json` in the report directory, in the `file_sd_configs` format).

use std::path::Path;

use crate::children::Child;

/// (name, address) of each child that serves metrics.
pub fn endpoints<'a>(children: impl Iterator<Item = &'a Child>) -> Vec<(String, String)> {
    children
        .filter_map(|c| c.metrics_addr.clone().map(|a| (c.name.clone(), a)))
        .collect()
}

/// Rewrites `path` with one target group per child that serves metrics, labelled with the run, the child and
/// its program. Written whole, then renamed: Prometheus never reads half a file.
pub fn write<'a>(path: &Path, run_id: &str, children: impl Iterator<Item = &'a Child>) {
    let groups: Vec<serde_json::Value> = children
        .filter_map(|c| {
            let addr = c.metrics_addr.as_ref()?;
            Some(serde_json::json!({
                "targets": [addr],
                "labels": {
                    "job": "medicine-pubsub-local",
                    "run_id": run_id,
                    "child": c.name,
                    "program": c.kind.program(),
                }
            }))
        })
        .collect();
    let partial = path.with_extension("json.partial");
    if let Ok(text) = serde_json::to_vec_pretty(&groups) {
        if std::fs::write(&partial, text).is_ok() {
            let _ = std::fs::rename(&partial, path);
        }
    }
}
