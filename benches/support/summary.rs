//! Reads criterion's results back, so a benchmark can print ratios against its baselines.

/// The median (ns) criterion recorded for `group/id` in this run, if it ran.
pub(crate) fn median_ns(group: &str, id: &str) -> Option<f64> {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let path = format!("{target}/criterion/{group}/{id}/new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let rest = &text[text.find("\"median\"")?..];
    let pe = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
    let end = rest[pe..].find(',')?;
    rest[pe..pe + end].trim().parse().ok()
}
