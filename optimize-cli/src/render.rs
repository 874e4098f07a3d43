//! Plain-text tables of the monitor's JSON, for the one-shot commands (and the rows `top`
//! shows).

use serde_json::Value;

/// Columns aligned by their widest cell; numbers to the right.
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let numeric = |col: usize| {
            !self.rows.is_empty()
                && self.rows.iter().all(|r| {
                    r.get(col)
                        .is_some_and(|c| c.starts_with(|ch: char| ch.is_ascii_digit() || ch == '-'))
                })
        };
        let line = |cells: Vec<&str>, f: &mut std::fmt::Formatter<'_>| {
            let mut out = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                if numeric(i) {
                    out.push_str(&format!("{cell:>w$}"));
                } else {
                    out.push_str(&format!("{cell:<w$}"));
                }
            }
            writeln!(f, "{}", out.trim_end())
        };
        line(self.header.clone(), f)?;
        for row in &self.rows {
            line(row.iter().map(String::as_str).collect(), f)?;
        }
        Ok(())
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

pub(crate) fn percent(v: &Value) -> String {
    format!("{:.1}%", num(v) * 100.0)
}

pub(crate) fn millis(v: &Value) -> String {
    let ms = num(v);
    if ms < 1.0 {
        format!("{:.0}µs", ms * 1000.0)
    } else {
        format!("{ms:.1}ms")
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The functions of a `/stats` answer.
pub(crate) fn function_table(stats: &Value) -> Table {
    let mut t = Table::new(&[
        "FN", "KIND", "CALLS", "HIT", "L1", "L2", "L3", "P50", "P99", "ERRORS", "STALE",
    ]);
    for f in stats["functions"].as_array().into_iter().flatten() {
        t.row(vec![
            text(&f["fn"]),
            text(&f["kind"]),
            text(&f["calls"]),
            percent(&f["hit_ratio"]),
            percent(&f["tier_hit_ratio"]["l1"]),
            percent(&f["tier_hit_ratio"]["l2"]),
            percent(&f["tier_hit_ratio"]["l3"]),
            millis(&f["p50_ms"]),
            millis(&f["p99_ms"]),
            text(&f["errors"]),
            text(&f["stale"]),
        ]);
    }
    t
}

/// The pools of a `/stats` answer.
pub(crate) fn pool_table(stats: &Value) -> Table {
    let mut t = Table::new(&[
        "POOL", "CAPACITY", "ACTIVE", "QUEUED", "DONE", "REJECTED", "WAIT P99",
    ]);
    for p in stats["pools"].as_array().into_iter().flatten() {
        t.row(vec![
            text(&p["pool"]),
            text(&p["capacity"]),
            text(&p["active"]),
            text(&p["queued"]),
            text(&p["completed"]),
            format!("{}", num(&p["rejected"]) + num(&p["refused_full"])),
            millis(&p["wait_p99_ms"]),
        ]);
    }
    t
}

/// One line on the shared tiers.
pub(crate) fn tiers_line(stats: &Value) -> String {
    let t = &stats["tiers"];
    if t.is_null() {
        return "tiers: -".into();
    }
    let l2 = if !t["l2_enabled"].as_bool().unwrap_or(false) {
        "off"
    } else if t["l2_circuit_open"].as_bool().unwrap_or(false) {
        "circuit open"
    } else if t["l2_connected"].as_bool().unwrap_or(false) {
        "connected"
    } else {
        "not connected"
    };
    let backplane = if !t["backplane_enabled"].as_bool().unwrap_or(false) {
        "off"
    } else if t["backplane_connected"].as_bool().unwrap_or(false) {
        "connected"
    } else {
        "not connected"
    };
    let l3 = if t["l3_enabled"].as_bool().unwrap_or(false) {
        "on"
    } else {
        "off"
    };
    format!(
        "tiers: L2 {l2}, backplane {backplane}, L3 {l3}; write-behind {} queued, {} dropped",
        text(&t["writeback_depth"]),
        text(&t["writeback_dropped"])
    )
}

pub(crate) fn stats(stats: &Value) -> String {
    let tasks = &stats["tasks"];
    format!(
        "{}\n{}\n{}\ntasks: {} processed, {} running, {} queued, {} waiting; alerts firing: {}\n",
        function_table(stats),
        pool_table(stats),
        tiers_line(stats),
        text(&tasks["processed"]),
        text(&tasks["running"]),
        text(&tasks["queued"]),
        text(&tasks["waiting"]),
        text(&stats["alerts_firing"]),
    )
}

pub(crate) fn functions(stats: &Value) -> String {
    let mut t = Table::new(&["FN", "KIND", "CALLS", "HIT", "P99"]);
    for f in stats["functions"].as_array().into_iter().flatten() {
        t.row(vec![
            text(&f["fn"]),
            text(&f["kind"]),
            text(&f["calls"]),
            percent(&f["hit_ratio"]),
            millis(&f["p99_ms"]),
        ]);
    }
    t.to_string()
}

/// The alert instances of an `/alerts` answer.
pub(crate) fn alert_table(alerts: &Value) -> Table {
    let mut t = Table::new(&["STATE", "SEVERITY", "RULE", "LABELS", "MESSAGE"]);
    for a in alerts["alerts"].as_array().into_iter().flatten() {
        let labels = a["labels"]
            .as_object()
            .map(|l| {
                l.iter()
                    .filter(|(k, _)| k.as_str() != "severity" && k.as_str() != "alertname")
                    .map(|(k, v)| format!("{k}={}", text(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        t.row(vec![
            text(&a["state"]),
            text(&a["severity"]),
            text(&a["rule"]),
            if labels.is_empty() {
                "-".into()
            } else {
                labels
            },
            text(&a["message"]),
        ]);
    }
    t
}

pub(crate) fn alerts(alerts: &Value) -> String {
    let rules = alerts["rules"].as_array().map_or(0, Vec::len);
    format!("{}{rules} rules in force\n", alert_table(alerts))
}

pub(crate) fn history(history: &Value) -> String {
    let mut t = Table::new(&[
        "END (UTC)",
        "SPAN",
        "CALLS",
        "CALLS/S",
        "HIT",
        "P50",
        "P99",
        "ERRORS",
    ]);
    for p in history["points"].as_array().into_iter().flatten() {
        t.row(vec![
            utc(p["at_unix_ms"].as_u64().unwrap_or(0)),
            format!("{:.1}s", num(&p["span_ms"]) / 1000.0),
            text(&p["calls"]),
            format!("{:.1}", num(&p["calls_per_s"])),
            percent(&p["hit_ratio"]),
            millis(&p["p50_ms"]),
            millis(&p["p99_ms"]),
            text(&p["errors"]),
        ]);
    }
    format!(
        "{}{} points from {} ({})\n",
        t,
        t.rows().len(),
        text(&history["source"]),
        if history["persisted"].as_bool().unwrap_or(false) {
            "persisted"
        } else {
            "in memory only"
        }
    )
}

/// `HH:MM:SS` of a Unix time in milliseconds (UTC), with the date when it is not today's.
fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let time = format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    if days == today {
        time
    } else {
        format!("{}d ago {time}", today.saturating_sub(days))
    }
}

pub(crate) fn invalidated(answer: &Value) -> String {
    match answer["invalidated"].as_str() {
        Some("key") => format!(
            "invalidated one entry of {} (key {}{})",
            text(&answer["fn"]),
            text(&answer["key"]),
            if answer["was_in_l1"].as_bool().unwrap_or(false) {
                ", it was in this instance's L1"
            } else {
                ""
            }
        ),
        Some("function") => format!("invalidated every entry of {}", text(&answer["fn"])),
        Some("tag") => format!("invalidated every entry tagged {}", text(&answer["tag"])),
        _ => answer.to_string(),
    }
}
