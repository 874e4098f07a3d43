//! The `optimize` command against the running demo: every subcommand as documented, and
//! `top` in a real terminal (tmux), read back with `capture-pane`.

#[path = "support/demo.rs"]
mod demo;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use demo::{Demo, TOKEN};

fn optimize(demo: &Demo, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_optimize"))
        .env_remove("OPTIMIZE_CLI_URL")
        .env_remove("OPTIMIZE_MONITOR_TOKEN")
        .args(["--url", &demo.base, "--token", TOKEN])
        .args(args)
        .output()
        .unwrap()
}

fn stdout_of(demo: &Demo, args: &[&str]) -> String {
    let out = optimize(demo, args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "optimize {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

const FETCH: &str = "demo::optimized::fetch_profile";
const SCORE: &str = "demo::optimized::risk_score";

#[test]
fn every_subcommand_against_the_demo() {
    let demo = Demo::start(&[], 120, true);

    let stats = stdout_of(&demo, &["stats"]);
    for expected in [
        FETCH,
        SCORE,
        "POOL",
        "cpu",
        "io",
        "tiers: L2 off",
        "L3 on",
        "alerts firing",
    ] {
        assert!(
            stats.contains(expected),
            "{expected:?} missing from:\n{stats}"
        );
    }

    let functions: serde_json::Value =
        serde_json::from_str(&stdout_of(&demo, &["functions", "--json"])).unwrap();
    let names: Vec<&str> = functions
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fn"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&FETCH) && names.contains(&SCORE),
        "{names:?}"
    );
    let table = stdout_of(&demo, &["functions"]);
    assert!(table.starts_with("FN"), "{table}");

    let alerts = stdout_of(&demo, &["alerts"]);
    assert!(
        alerts
            .lines()
            .any(|l| l.starts_with("resolved") && l.contains("DemoBacklogDeep")),
        "{alerts}"
    );

    let history = stdout_of(&demo, &["history", "--from", "10m", "--fn", FETCH]);
    let rows = history.lines().count();
    assert!(rows >= 3, "a header, points and a summary:\n{history}");
    assert!(history.contains("points from raw (persisted)"), "{history}");
    let json: serde_json::Value = serde_json::from_str(&stdout_of(
        &demo,
        &[
            "history", "--from", "10m", "--step", "1m", "--fn", FETCH, "--json",
        ],
    ))
    .unwrap();
    assert_eq!(json["source"], "minutes");
    let calls: u64 = json["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["calls"].as_u64().unwrap())
        .sum();
    assert!(
        calls >= 600,
        "two runs of 300 requests (and the trickle since): {calls}"
    );

    let rules = stdout_of(&demo, &["rules"]);
    assert!(rules.contains("- alert: \"DemoBacklogDeep\""), "{rules}");
    assert!(
        rules.contains("- alert: \"OptimizeLowHitRatio\""),
        "{rules}"
    );

    let done = stdout_of(&demo, &["invalidate", "--fn", FETCH, "--args", "7"]);
    assert!(
        done.starts_with(&format!("invalidated one entry of {FETCH}")),
        "{done}"
    );
    let done = stdout_of(&demo, &["invalidate", "--fn", SCORE]);
    assert_eq!(done.trim(), format!("invalidated every entry of {SCORE}"));
    let done = stdout_of(&demo, &["invalidate", "--tag", "tenant:1"]);
    assert_eq!(done.trim(), "invalidated every entry tagged tenant:1");

    // Failures say why, with their exit codes.
    let out = optimize(&demo, &["invalidate", "--fn", "demo::nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no managed function is named `demo::nope`")
    );
    let out = optimize(
        &demo,
        &["invalidate", "--fn", FETCH, "--args", "{\"ids\": 7}"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("do not match the parameters (id)"));
    let out = Command::new(env!("CARGO_BIN_EXE_optimize"))
        .env_remove("OPTIMIZE_MONITOR_TOKEN")
        .args(["--url", &demo.base, "stats"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pass --token or set OPTIMIZE_MONITOR_TOKEN")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_optimize"))
        .args(["--url", "http://127.0.0.1:9", "stats"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the monitor"));
}

#[test]
fn usage_errors_exit_64_and_help_succeeds() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_optimize"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["invalidate"]);
    assert_eq!(out.status.code(), Some(64), "neither --fn nor --tag");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fn"));
    assert_eq!(
        run(&["invalidate", "--fn", "a", "--tag", "b"])
            .status
            .code(),
        Some(64)
    );
    assert_eq!(run(&["top", "--interval", "soon"]).status.code(), Some(64));
    assert_eq!(run(&["frobnicate"]).status.code(), Some(64));
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("invalidate"));
    let out = Command::new(env!("CARGO_BIN_EXE_optimize"))
        .args([
            "--url",
            "http://127.0.0.1:9",
            "invalidate",
            "--fn",
            "f",
            "--args",
            "{oops",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "--args that is not JSON");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--args is not JSON"));
}

#[test]
fn rules_from_a_configuration_file_offline() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("optimize.toml");
    std::fs::write(
        &file,
        "[monitor]\ndefault_rules = false\n[[alerts]]\nname = \"QueueDeep\"\nkind = \"value\"\nmetric = \"jobs_waiting\"\nwhen = \">\"\nthreshold = 100\nseverity = \"warning\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_optimize"))
        .args(["rules", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{yaml}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(yaml.contains("- alert: \"QueueDeep\""), "{yaml}");
    assert!(
        !yaml.contains("OptimizeLowHitRatio"),
        "default rules are off: {yaml}"
    );
    std::fs::write(&file, "[monitor]\ndefualt_rules = true\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_optimize"))
        .args(["rules", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("default_rules"));
}

fn tmux(args: &[&str]) -> Output {
    Command::new("tmux").args(args).output().expect(
        "tmux runs (scripts/test.sh installs Debian's tmux): `top` is tested in a real terminal",
    )
}

#[test]
fn top_draws_the_live_view_in_a_terminal() {
    let demo = Demo::start(&[], 120, true);
    let session = format!("optimize-top-{}", std::process::id());
    let command = format!(
        "{} --url {} --token {TOKEN} top --interval 300ms",
        env!("CARGO_BIN_EXE_optimize"),
        demo.base
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "180",
        "-y",
        "45",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["kill-session", "-t", &self.0])
                .output();
        }
    }
    let _kill = Kill(session.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let screen = loop {
        let out = tmux(&["capture-pane", "-p", "-t", &session]);
        let screen = String::from_utf8_lossy(&out.stdout).into_owned();
        // Two refreshes: calls per second are known from the second on.
        let ready = screen.contains(FETCH)
            && screen.contains(SCORE)
            && screen.contains("DemoBacklogDeep")
            && screen.contains("healthy");
        if ready {
            break screen;
        }
        assert!(
            Instant::now() < deadline,
            "top did not draw the view:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for expected in [
        "optimize top",
        "functions",
        "CALLS/S",
        "pools",
        "tiers",
        "alerts",
        "resolved",
    ] {
        assert!(
            screen.contains(expected),
            "{expected:?} missing from:\n{screen}"
        );
    }
    // `q` quits and gives the terminal back.
    tmux(&["send-keys", "-t", &session, "q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux(&["has-session", "-t", &session]).status.success() {
        assert!(Instant::now() < deadline, "top did not quit on q");
        std::thread::sleep(Duration::from_millis(100));
    }
}
