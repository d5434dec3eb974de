//! The README stays true: every connector option is in its table, with its default.

use cdc_sink::connector::COMMON_OPTIONS;
use cdc_sink::sink::druid::config::OPTIONS as DRUID_OPTIONS;
use cdc_sink::sink::elasticsearch::config::OPTIONS;

#[test]
fn readme_lists_every_connector_option_with_its_default() {
    let readme =
        std::fs::read_to_string(crate::support::servers::repo().join("README.md")).unwrap();
    for o in COMMON_OPTIONS.iter().chain(OPTIONS).chain(DRUID_OPTIONS) {
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
