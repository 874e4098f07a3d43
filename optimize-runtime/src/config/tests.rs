//! Sources, precedence, levels and validation. Every case resolves from a temporary file
//! and an explicit environment, never the process's.

use std::io::Write;

use super::*;
use crate::meta::{Priority, TierSet};

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn resolve_file(text: &str) -> Result<Config, ConfigError> {
    let f = file(text);
    Config::builder()
        .file(f.path())
        .environment(no_env())
        .resolve()
}

/// The one problem `text` has, as displayed.
fn problem(text: &str) -> String {
    let err = resolve_file(text).expect_err("invalid configuration");
    assert_eq!(err.0.len(), 1, "{err}");
    err.0[0].to_string()
}

#[track_caller]
fn says(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}

#[test]
fn later_sources_win() {
    let f = file("[pools]\ncpu_threads = 2\nio_concurrency = 7\n");
    let env = [("OPTIMIZE_POOLS_CPU_THREADS", "3")];
    let both = || Config::builder().file(f.path()).environment(env);
    assert_eq!(
        both().resolve().unwrap().pools.cpu_threads,
        3,
        "env over file"
    );
    let c = both().set("pools.cpu_threads", "4").resolve().unwrap();
    assert_eq!(c.pools.cpu_threads, 4, "builder over env");
    assert_eq!(c.pools.io_concurrency, 7, "file over defaults");
    assert_eq!(
        c.origins["pools.io_concurrency"],
        f.path().display().to_string()
    );
    assert_eq!(c.origins["pools.cpu_threads"], "builder");
    let file_only = Config::builder()
        .file(f.path())
        .environment(no_env())
        .resolve()
        .unwrap();
    assert_eq!(file_only.pools.cpu_threads, 2);
}

#[test]
fn explicit_keys_win_over_the_level_preset() {
    let c = resolve_file("level = \"basic\"\n[metrics]\nrecording = \"full\"\n").unwrap();
    assert_eq!(c.level, Level::Basic);
    assert_eq!(
        c.recording,
        Recording::Full,
        "the file's key over the preset"
    );
    assert!(!c.l3_enabled, "the preset's other keys stay");
    let c = Config::builder()
        .file(file("level = \"basic\"\n").path())
        .environment([("OPTIMIZE_LEVEL", "ultra")])
        .resolve()
        .unwrap();
    assert_eq!(
        c.level,
        Level::Ultra,
        "the environment's level over the file's"
    );
    assert!(c.monitor_enabled);
}

#[test]
fn each_level_configures_its_row() {
    // (level, L2 with a URL, L3, compress_above, demote, recording, monitor, system+rules, history)
    let rows = [
        (
            Level::Basic,
            false,
            false,
            1024,
            false,
            Recording::Counters,
            false,
            false,
            240,
        ),
        (
            Level::Advanced,
            true,
            true,
            1024,
            false,
            Recording::Full,
            false,
            false,
            240,
        ),
        (
            Level::Ultra,
            true,
            true,
            1024,
            true,
            Recording::Full,
            true,
            true,
            240,
        ),
        (
            Level::Extreme,
            true,
            true,
            0,
            true,
            Recording::Full,
            true,
            true,
            1440,
        ),
    ];
    for (level, l2, l3, compress, demote, recording, monitor, system, history) in rows {
        let c = Config::builder()
            .without_file()
            .environment(no_env())
            .level(level)
            .set("l2.url", "redis://127.0.0.1:6379")
            .resolve()
            .unwrap();
        let t = c.tier_config();
        assert_eq!(t.redis.is_some(), l2, "{level}: L2");
        assert_eq!(t.l3.is_some(), l3, "{level}: L3");
        assert_eq!(t.envelope.compress_threshold as u64, compress, "{level}");
        assert_eq!(c.demote_on_evict, demote, "{level}");
        assert_eq!(c.recording, recording, "{level}");
        assert_eq!(c.monitor_enabled, monitor, "{level}");
        let m = c.monitor_config();
        assert_eq!(m.system, system, "{level}: system metrics");
        assert_eq!(!m.rules.is_empty(), system, "{level}: default alert rules");
        assert_eq!(m.history, history, "{level}");
    }
}

#[test]
fn the_lazy_default_keeps_everything_in_memory() {
    let c = Config::builder()
        .without_file()
        .environment(no_env())
        .resolve_as(false)
        .unwrap();
    assert_eq!(c.level, Level::Advanced);
    assert!(!c.l3_enabled, "no install, no file: nothing persists");
    let c = Config::builder()
        .without_file()
        .environment([("OPTIMIZE_L3_DIR", "/tmp/x")])
        .resolve_as(false)
        .unwrap();
    assert!(c.l3_enabled, "a directory turns L3 on");
    let lazy = Config::builder()
        .without_file()
        .environment([("OPTIMIZE_SOMETHING_ELSE", "1")])
        .resolve_as(false);
    assert!(
        lazy.is_ok(),
        "the lazy default warns about variables it does not own"
    );
}

#[test]
fn function_tables_override_the_attribute() {
    let c = resolve_file(
        r#"
        [functions."app::fetch"]
        ttl = "30s"
        tiers = ["l1", "l3"]
        capacity = "64MiB"
        priority = "high"
        concurrency = 4
        level = "extreme"

        [functions."app::legacy"]
        enabled = false
        "#,
    )
    .unwrap();
    let o = c.function("app::fetch").unwrap();
    assert_eq!(o.ttl, Some(Duration::from_secs(30)));
    assert_eq!(
        o.tiers,
        Some(TierSet {
            l1: true,
            l2: false,
            l3: true
        })
    );
    assert_eq!((o.capacity, o.capacity_bytes), (None, Some(64 << 20)));
    assert_eq!(o.priority, Some(Priority::High));
    assert_eq!(o.concurrency, Some(4));
    assert_eq!(o.level, Some(Level::Extreme));
    assert_eq!(c.function("app::legacy").unwrap().enabled, Some(false));
}

#[test]
fn unknown_keys_suggest_the_closest() {
    says(
        &problem("[l3]\ndirr = \"/x\"\n"),
        &[".toml: l3.dirr: unknown key", "did you mean `dir`?"],
    );
    says(&problem("levle = \"basic\"\n"), &["did you mean `level`?"]);
    says(
        &problem("[functions.\"a::b\"]\nttll = \"5m\"\n"),
        &["functions.\"a::b\".ttll", "did you mean `ttl`?"],
    );
    says(
        &problem("[pools]\ncolour = 1\n"),
        &["pools.colour", "the keys here are: cpu_threads"],
    );
}

#[test]
fn bad_durations_name_the_key_and_form() {
    says(
        &problem("[l2]\ntimeout = \"fast\"\n"),
        &[
            "l2.timeout",
            "\"fast\"",
            "expected a duration such as \"100ms\"",
        ],
    );
}

#[test]
fn bad_sizes_name_the_key_and_form() {
    says(
        &problem("[l3]\nmax_size = \"lots\"\n"),
        &["l3.max_size", "expected a size such as \"512MiB\""],
    );
}

#[test]
fn wrong_types_name_the_key_and_form() {
    says(
        &problem("[pools]\ncpu_threads = \"four\"\n"),
        &["pools.cpu_threads", "expected a whole number"],
    );
    says(&problem("l3 = true\n"), &["`l3` must be a table ([l3])"]);
}

#[test]
fn bad_names_list_the_choices() {
    says(
        &problem("level = \"turbo\"\n"),
        &["level", "\"basic\", \"advanced\", \"ultra\", \"extreme\""],
    );
    says(
        &problem("[functions.\"f\"]\npriority = \"urgent\"\n"),
        &["functions.\"f\".priority", "\"critical\", \"high\""],
    );
    says(
        &problem("[functions.\"f\"]\ntiers = \"l1,l4\"\n"),
        &["functions.\"f\".tiers", "l1, l2, l3"],
    );
}

#[test]
fn ratios_must_be_between_0_and_1() {
    says(
        &problem("[pools]\nmemory_pressure_threshold = 1.5\n"),
        &["pools.memory_pressure_threshold", "from 0 to 1"],
    );
}

#[test]
fn impossible_combinations_are_refused() {
    says(
        &problem("[pools]\nmemory_budget = \"1GiB\"\nmemory_budget_fraction = 0.3\n"),
        &[
            "pools.memory_budget_fraction",
            "cannot be set together with pools.memory_budget",
        ],
    );
    says(
        &problem("level = \"ultra\"\n[monitor]\ntoken = \"s\"\n"),
        &["monitor.token", "monitor.addr is not"],
    );
    says(
        &problem("[monitor]\naddr = \"127.0.0.1:9464\"\n"),
        &[
            "monitor.addr",
            "the monitor is off",
            "monitor.enabled = true",
        ],
    );
    says(
        &problem("[pools]\ncpu_threads = 0\n"),
        &["pools.cpu_threads", "at least 1"],
    );
    says(
        &problem("[l2]\nurl = \"http://user:hunter2@cache:6379\"\n"),
        &["l2.url", "redis://"],
    );
    assert!(!problem("[l2]\nurl = \"http://user:hunter2@cache:6379\"\n").contains("hunter2"));
    says(
        &problem("[functions.\"f\"]\nconcurrency = 0\n"),
        &["functions.\"f\".concurrency", "at least 1"],
    );
}

#[test]
fn cluster_urls_are_checked() {
    let list = "url = \"redis://:hunter2@a:7000,redis://:hunter2@b:7001\"";
    says(
        &problem(&format!("[l2]\n{list}\n")),
        &["l2.url", "lists 2 nodes", "l2.cluster = true"],
    );
    assert!(!problem(&format!("[l2]\n{list}\n")).contains("hunter2"));
    says(
        &problem("[l2]\ncluster = true\nurl = \"redis+unix:///tmp/r.sock\"\n"),
        &[
            "l2.url",
            "not a Redis Cluster node URL",
            "redis://host:port",
        ],
    );
    says(
        &problem("[l2]\ncluster = true\nurl = \"redis://a:7000,rediss://b:7001\"\n"),
        &["l2.url", "mixes redis:// and rediss://"],
    );
    says(
        &problem("level = \"ultra\"\n[l2]\ncluster = true\n"),
        &["l2.cluster", "l2.url is not"],
    );
    says(
        &problem("namespace = \"shop{1}\"\n"),
        &["namespace", "braces"],
    );
    let c = Config::builder()
        .without_file()
        .environment([
            ("OPTIMIZE_L2_CLUSTER", "true"),
            ("OPTIMIZE_REDIS_URL", "redis://a:7000, redis://b:7001"),
        ])
        .level(Level::Advanced)
        .resolve()
        .unwrap();
    let redis = c.tier_config().redis.unwrap();
    assert!(redis.cluster);
    assert_eq!(redis.url.nodes(), ["redis://a:7000", "redis://b:7001"]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let err =
        resolve_file("levle = 1\n[l2]\ntimeout = \"x\"\n[l3]\nmax_size = \"y\"\n").unwrap_err();
    assert_eq!(err.0.len(), 3, "{err}");
}

#[test]
fn environment_problems_name_the_variable() {
    let err = Config::builder()
        .without_file()
        .environment([("OPTIMIZE_LEVEL", "turbo"), ("OPTIMIZE_L3_DIRR", "/x")])
        .resolve()
        .unwrap_err()
        .to_string();
    says(
        &err,
        &[
            "environment: OPTIMIZE_LEVEL (level): \"turbo\" is not valid",
            "environment: OPTIMIZE_L3_DIRR: unknown variable; did you mean OPTIMIZE_L3_DIR?",
        ],
    );
    let err = Config::builder()
        .without_file()
        .environment([("OPTIMIZE_MONITOR_TOKEN", "")])
        .resolve();
    assert!(err.is_ok(), "empty variables are unset");
}

#[test]
fn builder_problems_name_the_builder() {
    let err = Config::builder()
        .without_file()
        .environment(no_env())
        .set("pools.cpu_thread", "4")
        .set("l3.max_size", "huge")
        .resolve()
        .unwrap_err()
        .to_string();
    says(
        &err,
        &[
            "builder: pools.cpu_thread: unknown key; did you mean `pools.cpu_threads`?",
            "builder: l3.max_size: \"huge\" is not valid",
        ],
    );
}

#[test]
fn a_named_file_must_exist_and_parse() {
    let err = Config::builder()
        .file("/nonexistent/optimize.toml")
        .environment(no_env())
        .resolve()
        .unwrap_err()
        .to_string();
    says(&err, &["/nonexistent/optimize.toml: cannot be read"]);
    says(&problem("[l3\n"), &["not valid TOML"]);
    let err = Config::builder()
        .environment([("OPTIMIZE_CONFIG", "/nonexistent/o.toml")])
        .resolve()
        .unwrap_err()
        .to_string();
    says(&err, &["/nonexistent/o.toml: cannot be read"]);
}

#[test]
fn alert_rules_come_from_the_file() {
    let c = resolve_file(
        "[[alerts]]\nname = \"Deep\"\nkind = \"value\"\nmetric = \"q\"\nwhen = \">\"\nthreshold = 3\n",
    )
    .unwrap();
    assert_eq!(c.alerts.len(), 1);
    assert!(c.monitor_config().rules.iter().any(|r| r.name == "Deep"));
    says(
        &problem("[[alerts]]\nname = \"Deep\"\nkind = \"avg\"\nmetric = \"q\"\nwhen = \">\"\nthreshold = 3\n"),
        &["alerts[0].kind"],
    );
}

#[test]
fn secrets_stay_out_of_debug() {
    let c = Config::builder()
        .without_file()
        .environment(no_env())
        .level(Level::Ultra)
        .set("l2.url", "redis://:hunter2@cache:6379")
        .set("monitor.addr", "127.0.0.1:9464")
        .set("monitor.token", "s3cret-token")
        .resolve()
        .unwrap();
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("s3cret"),
        "{shown}"
    );
}

#[test]
fn the_example_file_is_valid_and_complete() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/optimize.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let c = Config::builder()
        .file(path)
        .environment(no_env())
        .resolve()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.functions.is_empty());
    // Every key appears in it, commented or not.
    for key in keys::KEYS {
        let leaf = key.path.rsplit('.').next().unwrap();
        assert!(
            text.contains(&format!("{leaf} =")),
            "examples/optimize.toml lacks {}",
            key.path
        );
    }
}

#[test]
fn every_key_is_documented() {
    let docs = include_str!("../../../docs/configuration.md");
    for key in keys::KEYS {
        assert!(
            docs.contains(&format!("| `{}` |", key.path)),
            "docs/configuration.md has no row for `{}`",
            key.path
        );
        assert!(
            docs.contains(&keys::env_name(key)),
            "docs/configuration.md does not name {}",
            keys::env_name(key)
        );
    }
    for key in keys::FUNCTION_KEYS {
        assert!(
            docs.contains(&format!("| `functions.\"path\".{}` |", key.path)),
            "docs/configuration.md has no row for functions.\"path\".{}",
            key.path
        );
    }
}

#[test]
fn durations_outside_their_range_are_refused() {
    for (text, key, range) in [
        ("[l2]\ntimeout = \"1h\"\n", "l2.timeout", "from 1ms to 30s"),
        (
            "[monitor]\ninterval = \"1ns\"\n",
            "monitor.interval",
            "from 100ms to 1day",
        ),
        (
            "[l3]\nsweep_interval = \"0s\"\n",
            "l3.sweep_interval",
            "from 1s to 1day",
        ),
        (
            "[functions.\"app::f\"]\nttl = \"300000000000d\"\n",
            "functions.\"app::f\".ttl",
            "from 1ms to 3650days",
        ),
    ] {
        says(&problem(text), &[key, "is out of range", range]);
    }
    // The same checks for the environment and the builder.
    let err = Config::builder()
        .without_file()
        .environment([("OPTIMIZE_L2_TIMEOUT", "2h")])
        .set("l3.sweep_interval", "0s")
        .function(
            "app::f",
            FnOverride {
                ttl: Some(Duration::from_secs(u64::MAX / 4)),
                ..FnOverride::default()
            },
        )
        .resolve()
        .unwrap_err()
        .to_string();
    says(
        &err,
        &[
            "OPTIMIZE_L2_TIMEOUT (l2.timeout): \"2h\" is out of range",
            "builder: l3.sweep_interval: \"0s\" is out of range",
            "functions.\"app::f\".ttl",
        ],
    );
}

#[test]
fn the_file_must_be_a_small_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = Config::builder()
        .file(dir.path())
        .environment(no_env())
        .resolve()
        .unwrap_err()
        .to_string();
    says(&err, &["not a regular file"]);
    #[cfg(unix)]
    {
        let err = Config::builder()
            .file("/dev/zero")
            .environment(no_env())
            .resolve()
            .unwrap_err()
            .to_string();
        says(&err, &["/dev/zero", "not a regular file"]);
    }
    let big = file(&format!("# {}\n", "x".repeat(MAX_FILE_BYTES as usize)));
    let err = Config::builder()
        .file(big.path())
        .environment(no_env())
        .resolve()
        .unwrap_err()
        .to_string();
    says(&err, &["larger than 1 MiB"]);
}

#[test]
fn secrets_of_the_wrong_type_are_not_echoed() {
    let err = resolve_file("[monitor]\ntoken = 918273645\n[l2]\nurl = [\"redis://:hunter2@h\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        !err.contains("918273645") && !err.contains("hunter2"),
        "{err}"
    );
    says(
        &err,
        &["monitor.token", "l2.url", "not shown: it is a secret"],
    );
    let err = Config::builder()
        .without_file()
        .environment([("OPTIMIZE_MONITOR_TOKEN", "")])
        .set("l2.url", "http://:hunter2@h")
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_public_monitor_address_needs_a_token_or_consent() {
    let open = |extra: &[(&str, &str)]| {
        let mut b = Config::builder()
            .without_file()
            .environment(no_env())
            .set("monitor.enabled", "true")
            .set("monitor.addr", "0.0.0.0:9464");
        for (k, v) in extra {
            b = b.set(k, v);
        }
        b.resolve()
    };
    says(
        &open(&[]).unwrap_err().to_string(),
        &[
            "monitor.addr",
            "0.0.0.0:9464",
            "set monitor.token",
            "monitor.allow_public",
        ],
    );
    assert!(open(&[("monitor.token", "t")]).is_ok());
    assert!(open(&[("monitor.allow_public", "true")]).is_ok());
    assert!(Config::builder()
        .without_file()
        .environment(no_env())
        .set("monitor.enabled", "true")
        .set("monitor.addr", "127.0.0.1:9464")
        .resolve()
        .is_ok());
}

#[test]
fn a_function_capacity_is_entries_or_bytes() {
    let c = resolve_file(
        "[functions.\"app::a\"]\ncapacity = 5000\n[functions.\"app::b\"]\ncapacity = \"64MiB\"\n",
    )
    .unwrap();
    let a = c.function("app::a").unwrap();
    assert_eq!((a.capacity, a.capacity_bytes), (Some(5000), None));
    let b = c.function("app::b").unwrap();
    assert_eq!((b.capacity, b.capacity_bytes), (None, Some(64 << 20)));
}

#[test]
fn history_and_span_keys() {
    let dir = tempfile::tempdir().unwrap();
    let c = resolve_file(&format!(
        "[l3]\nenabled = true\ndir = {:?}\n[metrics]\nspans = \"info\"\n[monitor]\nhistory_retention = \"30d\"\nhistory_max_size = \"1MiB\"\n",
        dir.path().display().to_string()
    ))
    .unwrap();
    assert_eq!(c.spans, crate::spans::SpanLevel::Info);
    let persist = c.monitor_config().persist.expect("persisted next to L3");
    assert_eq!(persist.dir, dir.path().join("history"));
    assert_eq!(
        persist.retention,
        std::time::Duration::from_secs(30 * 86_400)
    );
    assert_eq!(persist.max_bytes, 1 << 20);
    let off = resolve_file("[l3]\nenabled = false\n").unwrap();
    assert!(
        off.monitor_config().persist.is_none(),
        "no L3, no dir: memory only"
    );
    let named =
        resolve_file("[l3]\nenabled = false\n[monitor]\nhistory_dir = \"/tmp/h\"\n").unwrap();
    assert_eq!(
        named.monitor_config().persist.unwrap().dir,
        std::path::Path::new("/tmp/h")
    );
    let not =
        resolve_file("[monitor]\nhistory_persist = false\nhistory_dir = \"/tmp/h\"\n").unwrap();
    assert!(not.monitor_config().persist.is_none());
    says(
        &problem("[metrics]\nspans = \"loud\"\n"),
        &["metrics.spans", "\"off\", \"trace\", \"debug\", \"info\""],
    );
    says(
        &problem("[monitor]\nhistory_retention = \"10s\"\n"),
        &["monitor.history_retention"],
    );
}
