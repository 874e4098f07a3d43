//! A real Prometheus (Debian's `prometheus`) scraping the running demo, with the rule file
//! the `optimize rules` command prints: the scrape is healthy, `optimize_calls_total` has the
//! demo's functions, the demo's alert shows in Prometheus's own `/api/v1/alerts`, and every
//! PromQL expression of the shipped Grafana dashboard (docs/grafana/optimize.json) returns
//! data.

#[path = "support/demo.rs"]
mod demo;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use demo::{Demo, TOKEN};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Prometheus {
    child: Child,
    base: String,
    http: reqwest::blocking::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &std::path::Path, target: &str, rules: &str) -> Prometheus {
        std::fs::write(dir.join("rules.yml"), rules).unwrap();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
                 rule_files:\n  - rules.yml\n\
                 scrape_configs:\n  - job_name: demo\n    authorization:\n      credentials: {TOKEN}\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .current_dir(dir)
            .args([
                "--config.file=prometheus.yml",
                "--storage.tsdb.path=data",
                &format!("--web.listen-address=127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus runs (scripts/test.sh installs Debian's prometheus)");
        let p = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        };
        p.until("Prometheus to be ready", || {
            p.http
                .get(format!("{}/-/ready", p.base))
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        p
    }

    fn api(&self, path: &str, query: &[(&str, &str)]) -> serde_json::Value {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .unwrap();
        let body: serde_json::Value = res.json().unwrap();
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        self.api("/api/v1/query", &[("query", promql)])["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within 60 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Every `expr` in the Grafana dashboard, with the dashboard's variables given values.
fn dashboard_expressions() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/optimize.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            out.push((
                panel["title"].as_str().unwrap().to_owned(),
                expr.replace("$__rate_interval", "1m").replace("$fn", ".+"),
            ));
        }
    }
    out
}

#[test]
fn a_real_prometheus_scrapes_the_demo_and_the_dashboard_queries_return_data() {
    let expressions = dashboard_expressions();
    assert!(expressions.len() >= 16, "{expressions:?}");

    let addr = format!("127.0.0.1:{}", free_port());
    // The backlog alert's condition holds for 20 s before the run, for Prometheus to see.
    let mut demo = Demo::start(
        &[("OPTIMIZE_DEMO_ADDR", &addr), ("OPTIMIZE_DEMO_HOLD", "20")],
        180,
        false,
    );
    demo.wait_for_line("holding the backlog");
    let rules = Command::new(env!("CARGO_BIN_EXE_optimize"))
        .args(["--url", &demo.base, "--token", TOKEN, "rules"])
        .output()
        .unwrap();
    assert!(rules.status.success(), "{rules:?}");
    let rules = String::from_utf8(rules.stdout).unwrap();
    assert!(rules.contains("DemoBacklogDeep"), "{rules}");

    let dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(dir.path(), demo.addr(), &rules);
    let log = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();

    // Prometheus loaded the rule file and evaluates the demo's rule to firing.
    prometheus.until("DemoBacklogDeep in /api/v1/alerts", || {
        prometheus.api("/api/v1/alerts", &[])["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["alertname"] == "DemoBacklogDeep" && a["state"] == "firing")
    });
    let groups = prometheus.api("/api/v1/rules", &[])["groups"].clone();
    assert_eq!(groups[0]["name"], "optimize", "{groups}");

    // The scrape is healthy.
    let targets = prometheus.api("/api/v1/targets", &[]);
    let target = &targets["activeTargets"][0];
    assert_eq!(target["health"], "up", "{target}\n{}", log());
    assert_eq!(target["labels"]["job"], "demo");

    // After the run, with a few scrapes of it.
    demo.wait_for_line("monitor: serving for");
    std::thread::sleep(Duration::from_secs(5));
    let calls = prometheus.query("sum by (fn) (optimize_calls_total)");
    let functions: Vec<&str> = calls
        .iter()
        .map(|s| s["metric"]["fn"].as_str().unwrap())
        .collect();
    for f in [
        "demo::optimized::fetch_profile",
        "demo::optimized::risk_score",
    ] {
        assert!(functions.contains(&f), "{f} missing from {functions:?}");
    }
    let values = prometheus.api(
        "/api/v1/label/fn/values",
        &[("match[]", "optimize_calls_total")],
    );
    assert_eq!(
        values.as_array().unwrap().len(),
        2,
        "the dashboard's $fn choices: {values}"
    );

    let mut empty = Vec::new();
    for (panel, expr) in &expressions {
        if prometheus.query(expr).is_empty() {
            empty.push(format!("{panel}: {expr}"));
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard expressions that returned no data:\n{}",
        empty.join("\n")
    );
}
