//! Every configuration key, its type and how its values are read, from the file (TOML
//! values) and from the environment (strings). One table, so the file reader, the
//! environment reader, the builder and the documentation test cannot disagree.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Level;
use crate::cache::l1::EngineKind;
use crate::cache::Tier;
use crate::meta::PredictModel;
use crate::pool::Priority;
use crate::site::TierSet;
use crate::stats::Recording;

/// The type of a key's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Type {
    Bool,
    Int,
    Ratio,
    Duration,
    Size,
    /// An integer, or a size string (function capacities: entries, or bytes for memory).
    IntOrSize,
    Text,
    Secret,
    Path,
    Addr,
    Level,
    Engine,
    Order,
    Tiers,
    Priority,
    Recording,
    Spans,
    Predict,
    /// An integer, or `"adaptive"` / `"adaptive(min..max)"`.
    Concurrency,
}

impl Type {
    /// The expected form, for error messages.
    pub(crate) fn expected(self) -> &'static str {
        match self {
            Type::Bool => "true or false",
            Type::Int => "a whole number such as 8",
            Type::Ratio => "a number from 0 to 1 such as 0.8",
            Type::Duration => "a duration such as \"100ms\", \"30s\" or \"5m\"",
            Type::Size => "a size such as \"512MiB\", \"1GiB\" or a number of bytes",
            Type::IntOrSize => {
                "a number of entries such as 10000, or a size in bytes such as \"512MiB\""
            }
            Type::Text => "a string",
            Type::Secret => "a string",
            Type::Path => "a path string",
            Type::Addr => "an address such as \"127.0.0.1:9464\"",
            Type::Level => "one of \"basic\", \"advanced\", \"ultra\", \"extreme\"",
            Type::Engine => "\"quick\", \"moka\" or \"clock\"",
            Type::Order => "\"l2,l3\" or \"l3,l2\"",
            Type::Tiers => "a list of tiers such as \"l1,l3\" (l1, l2, l3)",
            Type::Priority => "one of \"critical\", \"high\", \"normal\", \"low\", \"batch\"",
            Type::Recording => "one of \"full\", \"counters\", \"off\"",
            Type::Spans => "one of \"off\", \"trace\", \"debug\", \"info\"",
            Type::Predict => "one of \"markov\", \"sequential\", \"off\"",
            Type::Concurrency => "a whole number such as 8, \"adaptive\" or \"adaptive(2..64)\"",
        }
    }
}

/// A parsed value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Bool(bool),
    Int(u64),
    /// A size written with a unit, where a bare number means something else (a count).
    Bytes(u64),
    Float(f64),
    Duration(Duration),
    Text(String),
    Path(PathBuf),
    Addr(SocketAddr),
    Level(Level),
    Engine(EngineKind),
    Order([Tier; 2]),
    Tiers(TierSet),
    Priority(Priority),
    Recording(Recording),
    Spans(crate::spans::SpanLevel),
    /// A prediction model; `None` is "off".
    Predict(Option<PredictModel>),
    /// An adaptive limit's bounds.
    Adaptive(u64, u64),
}

/// One key: its dotted path (`functions.*` keys apply per function), type and alias in the
/// environment besides the derived `OPTIMIZE_<PATH>` name.
#[derive(Debug)]
pub(crate) struct Key {
    pub(crate) path: &'static str,
    pub(crate) ty: Type,
    pub(crate) env_alias: Option<&'static str>,
    /// For durations: the range that makes sense (a value outside hurts: a 1 h Redis timeout
    /// turns an outage into hour-long hangs, a 0 s sweep interval burns a core).
    pub(crate) range: Option<(Duration, Duration)>,
}

const fn key(path: &'static str, ty: Type) -> Key {
    Key {
        path,
        ty,
        env_alias: None,
        range: None,
    }
}

const fn aliased(path: &'static str, ty: Type, alias: &'static str) -> Key {
    Key {
        path,
        ty,
        env_alias: Some(alias),
        range: None,
    }
}

/// A duration key accepted between `min` and `max`.
const fn duration(path: &'static str, min: Duration, max: Duration) -> Key {
    Key {
        path,
        ty: Type::Duration,
        env_alias: None,
        range: Some((min, max)),
    }
}

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

/// The longest TTL: ten years (Redis expiries are milliseconds in a signed 64-bit integer,
/// and no cache entry needs more).
pub(crate) const MAX_TTL: Duration = Duration::from_secs(3650 * 86_400);

/// Every global key.
pub(crate) const KEYS: &[Key] = &[
    key("level", Type::Level),
    key("namespace", Type::Text),
    key("l1.engine", Type::Engine),
    key("l1.capacity", Type::Int),
    key("l1.max_size", Type::Size),
    key("l2.enabled", Type::Bool),
    aliased("l2.url", Type::Secret, "OPTIMIZE_REDIS_URL"),
    duration("l2.timeout", MS, Duration::from_secs(30)),
    key("l2.breaker_threshold", Type::Int),
    key("l2.backplane", Type::Bool),
    key("l2.cluster", Type::Bool),
    key("l2.tls_ca_file", Type::Path),
    key("l2.tls_client_cert", Type::Path),
    key("l2.tls_client_key", Type::Path),
    key("l2.tls_insecure", Type::Bool),
    key("l2.lease", Type::Bool),
    duration(
        "l2.lease_ttl",
        Duration::from_millis(100),
        Duration::from_secs(3600),
    ),
    duration(
        "l2.breaker_cooldown",
        Duration::from_millis(10),
        Duration::from_secs(600),
    ),
    aliased("l3.enabled", Type::Bool, "OPTIMIZE_L3"),
    key("l3.dir", Type::Path),
    key("l3.max_size", Type::Size),
    duration("l3.sweep_interval", SECOND, DAY),
    key("l3.warm_l1", Type::Int),
    aliased("tiers.lookup_order", Type::Order, "OPTIMIZE_LOOKUP_ORDER"),
    key("tiers.writeback_capacity", Type::Int),
    key("tiers.compress_above", Type::Size),
    key("tiers.demote_on_evict", Type::Bool),
    key("tiers.signing_key", Type::Secret),
    key("tiers.signing_key_previous", Type::Secret),
    duration("resilience.fail_safe", Duration::ZERO, MAX_TTL),
    duration("resilience.fail_safe_throttle", MS, DAY),
    key("resilience.stale_if_busy", Type::Int),
    key("resilience.predict_confidence", Type::Ratio),
    key("resilience.predict_depth", Type::Int),
    key("pools.cpu_threads", Type::Int),
    key("pools.io_concurrency", Type::Int),
    key("pools.io_adaptive", Type::Bool),
    key("pools.memory_budget", Type::Size),
    key("pools.memory_budget_fraction", Type::Ratio),
    key("pools.memory_default_weight", Type::Size),
    key("pools.memory_pressure_threshold", Type::Ratio),
    key("pools.queue_capacity", Type::Int),
    key("pools.cpu_queue_capacity", Type::Int),
    key("pools.io_queue_capacity", Type::Int),
    key("pools.memory_queue_capacity", Type::Int),
    duration(
        "pools.memory_sample_interval",
        Duration::from_millis(10),
        MINUTE,
    ),
    key("metrics.recording", Type::Recording),
    key("metrics.spans", Type::Spans),
    duration("metrics.slow_call", MS, DAY),
    key("monitor.enabled", Type::Bool),
    duration("monitor.interval", Duration::from_millis(100), DAY),
    key("monitor.history", Type::Int),
    key("monitor.history_persist", Type::Bool),
    key("monitor.history_dir", Type::Path),
    duration(
        "monitor.history_retention",
        MINUTE,
        Duration::from_secs(366 * 86_400),
    ),
    key("monitor.history_max_size", Type::Size),
    key("monitor.system", Type::Bool),
    key("monitor.default_rules", Type::Bool),
    key("monitor.addr", Type::Addr),
    key("monitor.token", Type::Secret),
    key("monitor.allow_public", Type::Bool),
];

/// Keys of a `[functions."path::fn"]` table.
pub(crate) const FUNCTION_KEYS: &[Key] = &[
    key("enabled", Type::Bool),
    key("level", Type::Level),
    duration("ttl", MS, MAX_TTL),
    key("tiers", Type::Tiers),
    key("capacity", Type::IntOrSize),
    key("priority", Type::Priority),
    key("concurrency", Type::Concurrency),
    duration("fail_safe", Duration::ZERO, MAX_TTL),
    duration("fail_safe_throttle", MS, DAY),
    duration("soft_timeout", Duration::ZERO, DAY),
    key("refresh_ahead", Type::Ratio),
    key("stale_if_busy", Type::Int),
    key("predict", Type::Predict),
    key("predict_confidence", Type::Ratio),
    key("predict_depth", Type::Int),
];

/// Top-level tables and arrays that are not keys of [`KEYS`] themselves.
pub(crate) const SECTIONS: &[&str] = &[
    "l1",
    "l2",
    "l3",
    "tiers",
    "resilience",
    "pools",
    "metrics",
    "monitor",
    "functions",
    "alerts",
];

pub(crate) fn find(keys: &'static [Key], path: &str) -> Option<&'static Key> {
    keys.iter().find(|k| k.path == path)
}

/// The environment variable of a global key.
pub(crate) fn env_name(key: &Key) -> String {
    format!(
        "OPTIMIZE_{}",
        key.path.replace('.', "_").to_ascii_uppercase()
    )
}

/// Edit distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The closest of `candidates` to `word`, when close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Parses a size: a number of bytes, or a number with B, KB/KiB, MB/MiB, GB/GiB, TB/TiB.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1 << 10,
        "mb" => 1000 * 1000,
        "mib" | "m" => 1 << 20,
        "gb" => 1000 * 1000 * 1000,
        "gib" | "g" => 1 << 30,
        "tb" => 1000u64.pow(4),
        "tib" | "t" => 1 << 40,
        _ => return None,
    };
    let bytes = number * scale as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Some(true),
        "false" | "off" | "no" | "0" => Some(false),
        _ => None,
    }
}

fn parse_tiers(text: &str) -> Option<TierSet> {
    let mut set = TierSet {
        l1: false,
        l2: false,
        l3: false,
    };
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "l1" => set.l1 = true,
            "l2" => set.l2 = true,
            "l3" => set.l3 = true,
            "all" => set = TierSet::ALL,
            _ => return None,
        }
    }
    (set.l1 || set.l2 || set.l3).then_some(set)
}

/// How a written value may appear in an error: never for a secret, whatever its type.
fn shown(key: &Key, written: impl FnOnce() -> String) -> String {
    if key.ty == Type::Secret {
        "the value (not shown: it is a secret)".to_owned()
    } else {
        written()
    }
}

/// A parsed value checked against the key's range, or the message saying what is wrong.
fn checked(key: &Key, parsed: Option<Value>, shown: String) -> Result<Value, String> {
    match (parsed, key.range) {
        (None, _) => Err(format!(
            "{shown} is not valid: expected {}",
            key.ty.expected()
        )),
        (Some(Value::Duration(d)), Some((min, max))) if d < min || d > max => Err(format!(
            "{shown} is out of range: expected a duration from {} to {}",
            human(min),
            human(max)
        )),
        (Some(v), _) => Ok(v),
    }
}

/// A duration as configuration would write it: whole days as `Ndays` (humantime would say
/// "9years 11months ...", which nobody writes), else humantime's form.
pub(crate) fn human(d: Duration) -> String {
    match d.as_secs() {
        s if s > 86_400 && s % 86_400 == 0 && d.subsec_nanos() == 0 => {
            format!("{}days", s / 86_400)
        }
        _ => humantime::format_duration(d).to_string(),
    }
}

/// Reads `key`'s value written as a string (the environment, the builder).
pub(crate) fn read_str(key: &Key, text: &str) -> Result<Value, String> {
    checked(
        key,
        parse_str(key.ty, text),
        shown(key, || format!("{text:?}")),
    )
}

/// Reads `key`'s value from the file.
pub(crate) fn read_toml(key: &Key, value: &toml::Value) -> Result<Value, String> {
    let written = || match value {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Table(_) => "a table".into(),
        other => other.to_string(),
    };
    checked(key, parse_toml(key.ty, value), shown(key, written))
}

/// Parses a value written as a string (the environment, the builder, and string values of
/// the file).
pub(crate) fn parse_str(ty: Type, text: &str) -> Option<Value> {
    let t = text.trim();
    Some(match ty {
        Type::Bool => Value::Bool(parse_bool(t)?),
        Type::Int => Value::Int(t.replace('_', "").parse().ok()?),
        Type::Ratio => {
            let v: f64 = t.parse().ok()?;
            if !(0.0..=1.0).contains(&v) {
                return None;
            }
            Value::Float(v)
        }
        Type::Duration => Value::Duration(humantime::parse_duration(t).ok()?),
        Type::Size => Value::Int(parse_size(t)?),
        // A bare number is a count; with a unit, bytes.
        Type::IntOrSize => match t.replace('_', "").parse() {
            Ok(n) => Value::Int(n),
            Err(_) => Value::Bytes(parse_size(t)?),
        },
        Type::Text | Type::Secret => Value::Text(text.to_owned()),
        Type::Path => Value::Path(PathBuf::from(text)),
        Type::Addr => Value::Addr(t.parse().ok()?),
        Type::Level => Value::Level(Level::parse(t)?),
        Type::Engine => Value::Engine(EngineKind::parse(t)?),
        Type::Order => Value::Order(match t.replace(' ', "").as_str() {
            "l2,l3" => [Tier::L2, Tier::L3],
            "l3,l2" => [Tier::L3, Tier::L2],
            _ => return None,
        }),
        Type::Tiers => Value::Tiers(parse_tiers(t)?),
        Type::Priority => Value::Priority(t.parse().ok()?),
        Type::Recording => Value::Recording(match t {
            "full" => Recording::Full,
            "counters" => Recording::Counters,
            "off" => Recording::Off,
            _ => return None,
        }),
        Type::Spans => Value::Spans(crate::spans::SpanLevel::parse(t)?),
        Type::Concurrency => match t.replace('_', "").parse() {
            Ok(n) => Value::Int(n),
            Err(_) => {
                let (min, max) = parse_adaptive(t)?;
                Value::Adaptive(min, max)
            }
        },
        Type::Predict => Value::Predict(match t {
            "markov" => Some(PredictModel::Markov),
            "sequential" => Some(PredictModel::Sequential),
            "off" => None,
            _ => return None,
        }),
    })
}

/// The most calls an adaptive limit admits when its bounds are not written.
pub(crate) const ADAPTIVE_MAX: u64 = 1024;

/// `adaptive` (1 to [`ADAPTIVE_MAX`]) or `adaptive(min..max)`, with `1 <= min <= max`.
pub(crate) fn parse_adaptive(text: &str) -> Option<(u64, u64)> {
    let rest = text.trim().strip_prefix("adaptive")?.trim();
    if rest.is_empty() {
        return Some((1, ADAPTIVE_MAX));
    }
    let (min, max) = rest
        .strip_prefix('(')?
        .strip_suffix(')')?
        .split_once("..")?;
    let (min, max): (u64, u64) = (min.trim().parse().ok()?, max.trim().parse().ok()?);
    (min >= 1 && min <= max).then_some((min, max))
}

/// Parses a TOML value.
pub(crate) fn parse_toml(ty: Type, value: &toml::Value) -> Option<Value> {
    match (ty, value) {
        (Type::Bool, toml::Value::Boolean(b)) => Some(Value::Bool(*b)),
        (Type::Int | Type::Size | Type::IntOrSize | Type::Concurrency, toml::Value::Integer(n)) => {
            u64::try_from(*n).ok().map(Value::Int)
        }
        (Type::Ratio, toml::Value::Float(f)) => parse_str(ty, &f.to_string()),
        (Type::Ratio, toml::Value::Integer(n)) => parse_str(ty, &n.to_string()),
        (Type::Order | Type::Tiers, toml::Value::Array(items)) => {
            let parts: Option<Vec<&str>> = items.iter().map(toml::Value::as_str).collect();
            parse_str(ty, &parts?.join(","))
        }
        (Type::Bool | Type::Int | Type::Ratio, _) => None,
        (_, toml::Value::String(s)) => parse_str(ty, s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_only() {
        let keys = ["dir", "enabled", "max_size", "sweep_interval"];
        assert_eq!(did_you_mean("dirr", keys), Some("dir"));
        assert_eq!(did_you_mean("max_szie", keys), Some("max_size"));
        assert_eq!(did_you_mean("colour", keys), None);
    }

    #[test]
    fn sizes_and_values() {
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("1.5 KiB"), Some(1536));
        assert_eq!(parse_size("2GB"), Some(2_000_000_000));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_str(Type::Ratio, "1.5"), None);
        assert_eq!(parse_str(Type::Bool, "on"), Some(Value::Bool(true)));
        assert_eq!(
            parse_str(Type::Tiers, "l1, l3"),
            Some(Value::Tiers(TierSet {
                l1: true,
                l2: false,
                l3: true
            }))
        );
        assert_eq!(parse_str(Type::Tiers, "l4"), None);
        assert_eq!(
            env_name(find(KEYS, "pools.cpu_threads").unwrap()),
            "OPTIMIZE_POOLS_CPU_THREADS"
        );
    }
}
