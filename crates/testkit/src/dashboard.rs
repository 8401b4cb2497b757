//! The metric names a Grafana dashboard's queries use, and whether an exposition serves them: so a test can
//! hold the dashboard in `deploy/dashboards/` to what the running binaries really expose.

use std::collections::BTreeSet;
use std::path::Path;

/// PromQL's aggregation operators, which may be followed by `by (…)` before their `(`.
const AGGREGATIONS: [&str; 12] = [
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
];

/// PromQL words that are not metric names: aggregation modifiers and the like (functions are recognised by
/// the `(` after them).
const KEYWORDS: [&str; 10] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
];

/// The dashboard at `path`: every `expr` of every panel's targets.
pub fn queries(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut exprs = Vec::new();
    collect(&dashboard, &mut exprs);
    exprs
}

fn collect(value: &serde_json::Value, exprs: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => exprs.push(expr.clone()),
                    _ => collect(value, exprs),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, exprs)),
        _ => {}
    }
}

/// The metric names in one PromQL expression.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    // Drop what holds no metric name: strings, label matchers, ranges, `by (…)` lists, dashboard variables.
    let mut cleaned = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                for d in chars.by_ref() {
                    if d == '"' {
                        break;
                    }
                }
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                for d in chars.by_ref() {
                    if d == close {
                        break;
                    }
                }
                cleaned.push(' ');
            }
            '$' => {
                while chars
                    .peek()
                    .is_some_and(|d| d.is_alphanumeric() || *d == '_')
                {
                    chars.next();
                }
            }
            _ => cleaned.push(c),
        }
    }
    let mut names = BTreeSet::new();
    let mut rest = cleaned.as_str();
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':') {
        let word_end = rest[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(rest.len(), |e| start + e);
        let word = &rest[start..word_end];
        let after = rest[word_end..].trim_start();
        let preceded_by_digit = start > 0 && rest.as_bytes()[start - 1].is_ascii_digit();
        if KEYWORDS.contains(&word) {
            // `by (a, b)`: the labels listed are not metrics.
            if let Some(list) = after.strip_prefix('(') {
                rest = list.split_once(')').map_or("", |(_, tail)| tail);
                continue;
            }
        } else if !after.starts_with('(') && !preceded_by_digit && !AGGREGATIONS.contains(&word) {
            names.insert(word.to_owned());
        }
        rest = &rest[word_end..];
    }
    names
}

/// Whether a Prometheus text exposition serves `name`: as a sample, or as a declared family whose samples
/// would carry that name (a counter's `_total`, a histogram's `_bucket`, `_sum`, `_count`) even before its
/// first labelled sample exists.
pub fn serves(exposition: &str, name: &str) -> bool {
    exposition.lines().any(|line| {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut words = declared.split_whitespace();
            let (Some(family), Some(kind)) = (words.next(), words.next()) else {
                return false;
            };
            let suffixes: &[&str] = match kind {
                // PromQL sees a counter only as `<family>_total`.
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            suffixes.iter().any(|s| format!("{family}{s}") == name)
        } else {
            !line.starts_with('#')
                && line
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_and_functions_labels_and_variables_are_not() {
        let names = metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(medicine_order_latency_seconds_bucket[$__rate_interval]))) - $making_time",
        );
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["medicine_order_latency_seconds_bucket"]
        );
        let names = metric_names(
            r#"sum(keda_scaler_metrics_value{scaledObject="medicine-maker-0"}) + count(up) / 2e3"#,
        );
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["keda_scaler_metrics_value", "up"]
        );
    }

    #[test]
    fn an_exposition_serves_samples_and_declared_families() {
        let exposition =
            "# TYPE medicine_dead_letters counter\n# TYPE medicine_orders_done counter\n\
             medicine_orders_done_total 3\n# TYPE lat histogram\nlat_bucket{le=\"1\"} 0\n";
        assert!(serves(exposition, "medicine_orders_done_total"));
        assert!(
            serves(exposition, "medicine_dead_letters_total"),
            "declared, no sample yet"
        );
        assert!(serves(exposition, "lat_bucket"));
        assert!(serves(exposition, "lat_count"));
        assert!(!serves(exposition, "medicine_orders_made_total"));
        assert!(!serves(exposition, "medicine_orders"));
        assert!(
            !serves(exposition, "medicine_dead_letters"),
            "a counter is queried as _total"
        );
    }
}
