//! The queries of a Grafana dashboard, ready for Prometheus: so a test can have the real Prometheus evaluate every
//! panel of the dashboard in `deploy/dashboards/` against a live run (see [`crate::prometheus`]).

use std::path::Path;

/// One query of one panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub panel: String,
    pub legend: String,
    /// As the dashboard holds it, with Grafana's variables.
    pub expr: String,
}

impl Query {
    /// The query as Grafana would send it to Prometheus, its `$__rate_interval` given as `rate_interval` (Grafana
    /// takes four scrape intervals).
    ///
    /// # Panics
    /// On any other variable: the dashboard must not grow one the tests cannot give.
    pub fn for_prometheus(&self, rate_interval: &str) -> String {
        let expr = self.expr.replace("$__rate_interval", rate_interval);
        assert!(
            !expr.contains('$'),
            "panel {:?} uses a variable the tests do not know: {}",
            self.panel,
            self.expr
        );
        expr
    }
}

/// Every target's query of every panel of the dashboard at `path`.
pub fn queries(path: &Path) -> Vec<Query> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    panels
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            panel["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |target| Query {
                    panel: title.clone(),
                    legend: target["legendFormat"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    expr: target["expr"].as_str().unwrap_or_default().to_owned(),
                })
        })
        .collect()
}

/// The dashboard that ships.
pub fn shipped() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/dashboards/medicine-pubsub.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_panel_of_the_shipped_dashboard_has_a_query_for_prometheus() {
        let queries = queries(&shipped());
        assert!(queries.len() >= 10, "{queries:?}");
        for query in &queries {
            assert!(!query.expr.is_empty(), "{query:?}");
            assert!(!query.for_prometheus("4s").contains('$'), "{query:?}");
        }
    }

    #[test]
    #[should_panic(expected = "a variable the tests do not know")]
    fn an_unknown_variable_is_refused() {
        Query {
            panel: "p".into(),
            legend: String::new(),
            expr: "rate(x[$__interval])".into(),
        }
        .for_prometheus("4s");
    }
}
