//! The README stays true: every connector option is in its table, with its default.

use cdc_sink::connector::COMMON_OPTIONS;
use cdc_sink::connector::errors::OPTIONS as ERROR_OPTIONS;
use cdc_sink::sink::druid::config::OPTIONS as DRUID_OPTIONS;
use cdc_sink::sink::elasticsearch::config::OPTIONS;

#[test]
fn readme_lists_every_connector_option_with_its_default() {
    let readme =
        std::fs::read_to_string(crate::support::servers::repo().join("README.md")).unwrap();
    for o in COMMON_OPTIONS
        .iter()
        .chain(ERROR_OPTIONS)
        .chain(OPTIONS)
        .chain(DRUID_OPTIONS)
    {
        let row = match o.default {
            Some(d) => format!("| `{}` | `{}` |", o.name, d.replace('|', "\\|")),
            None => format!("| `{}` | |", o.name),
        };
        assert!(
            readme.contains(&row),
            "README.md has no row starting `{row}`"
        );
    }
}

/// The metric families, as `cdc_sink::metrics` registers them.
fn metric_names() -> std::collections::BTreeSet<String> {
    cdc_sink::metrics::Registry::new()
        .names()
        .into_iter()
        .collect()
}

#[test]
fn readme_lists_every_metric_and_no_other() {
    let readme =
        std::fs::read_to_string(crate::support::servers::repo().join("README.md")).unwrap();
    let listed: std::collections::BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `cdc_sink_"))
        .filter_map(|l| l.split('`').next())
        .map(|n| format!("cdc_sink_{n}"))
        .collect();
    assert_eq!(listed, metric_names());
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_that_exist() {
    let path = crate::support::servers::repo().join("ops/grafana/cdc-sink.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let names = metric_names();
    let re = regex::Regex::new(r"cdc_sink_[a-z_]+").unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut used = std::collections::BTreeSet::new();
    for p in panels {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            for m in re.find_iter(expr) {
                let n = m.as_str();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| n.strip_suffix(s).filter(|f| names.contains(*f)))
                    .unwrap_or(n);
                assert!(names.contains(family), "{n} in {expr}: no such metric");
                used.insert(family.to_string());
            }
        }
    }
    let unused: Vec<&String> = names.difference(&used).collect();
    assert!(unused.is_empty(), "metrics without a panel: {unused:?}");
}
