//! The monitor through its HTTP endpoint: a live scrape checked by promtool, JSON views,
//! the bearer token, and an alert that fires and resolves through a closure and a webhook,
//! all on a mock clock.

#[path = "support/promtool.rs"]
mod promtool;
#[path = "support/skip.rs"]
mod skip;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use optimize::config::Config;
use optimize::monitor::alert::{AlertState, Rule, Selector, Severity, WebhookHandler};
use optimize::monitor::{self, metrics, Monitor};
use optimize::time::{Clock, MockClock};

const TOKEN: &str = "t0ken-for-tests";

#[optimize::io(ttl = "1m")]
fn lookup(id: u32) -> Option<String> {
    (id != 0).then(|| format!("item {id}"))
}

/// Called by one test only, so its counts are exact whatever runs beside it.
#[optimize::io(ttl = "1m")]
fn scraped(id: u32) -> u32 {
    id
}

#[optimize::cpu(cache = false)]
fn crunch(n: u64) -> u64 {
    (0..n).sum()
}

struct Harness {
    monitor: &'static Arc<Monitor>,
    mock: MockClock,
    events: Arc<Mutex<Vec<(String, AlertState)>>>,
    webhook: mpsc::Receiver<String>,
    queue: metrics::Gauge,
}

/// A one-request-at-a-time HTTP server that hands each request body to the channel.
fn webhook_receiver() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            use std::io::Write;
            stream
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .unwrap();
            tx.send(String::from_utf8(body).unwrap()).unwrap();
        }
    });
    (url, rx)
}

fn harness() -> &'static Mutex<Harness> {
    static H: OnceLock<Mutex<Harness>> = OnceLock::new();
    H.get_or_init(|| {
        let (clock, mock) = Clock::mock();
        mock.increment(Duration::from_secs(1));
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let (url, webhook) = webhook_receiver();
        let queue = metrics::gauge("test_queue_depth", "Jobs waiting in the test.").unwrap();
        let guard = optimize::install(
            Config::builder()
                .without_file()
                .environment(Vec::<(String, String)>::new())
                .clock(clock)
                .set("l3.enabled", "false")
                .set("monitor.enabled", "true")
                .set("monitor.system", "true")
                .set("monitor.default_rules", "true")
                // Ticks are driven by the tests.
                .set("monitor.interval", "1h")
                .set("monitor.addr", "127.0.0.1:0")
                .set("monitor.token", TOKEN)
                .alert(
                    Rule::value("TestQueueDeep", Selector::metric("test_queue_depth"))
                        .above(10.0)
                        .for_(Duration::from_secs(30))
                        .severity(Severity::Critical)
                        .message("{{ $value }} jobs waiting"),
                )
                .alert_handler(move |e: &optimize::monitor::alert::AlertEvent| {
                    seen.lock()
                        .unwrap()
                        .push((e.alert.rule.clone(), e.alert.state));
                })
                .alert_handler(WebhookHandler::new(url, Duration::from_secs(5))),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let monitor = guard.runtime().monitor().expect("the monitor is on");
        // The harness lives for the whole test binary, and so does the runtime.
        std::mem::forget(guard);
        Mutex::new(Harness {
            monitor,
            mock,
            events,
            webhook,
            queue,
        })
    })
}

fn lock() -> std::sync::MutexGuard<'static, Harness> {
    harness().lock().unwrap_or_else(|e| e.into_inner())
}

async fn get(path: &str, token: Option<&str>, accept: Option<&str>) -> reqwest::Response {
    let addr = lock().monitor.http_addr().unwrap();
    let mut req = reqwest::Client::new().get(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    req.send().await.unwrap()
}

fn exercise() {
    lookup(1);
    lookup(1);
    lookup(0);
    crunch(1000);
    metrics::counter_vec("test_jobs_total", "Jobs done.", &["queue"])
        .unwrap()
        .with(&["a \"quoted\" name"])
        .inc();
    metrics::histogram("test_job_seconds", "Job time.")
        .unwrap()
        .observe(Duration::from_millis(3));
}

#[tokio::test]
async fn live_scrape_passes_promtool_check_metrics() {
    exercise();
    scraped(1);
    scraped(1);
    lock().monitor.tick();
    let res = get("/metrics", Some(TOKEN), None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = res.text().await.unwrap();
    for name in [
        "optimize_calls_total",
        "optimize_call_duration_seconds_bucket",
        "optimize_compute_duration_seconds_count",
        "optimize_cache_entries",
        "optimize_pool_queue_depth",
        "optimize_pool_wait_seconds_bucket",
        "optimize_memory_budget_bytes",
        "optimize_system_cpu_usage_ratio",
        "optimize_process_resident_memory_bytes",
        "optimize_system_load_average",
        "optimize_alerts_firing",
        "test_jobs_total",
        "test_job_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    let path = scraped_cache().path().to_owned();
    assert!(
        text.contains(&format!(
            "optimize_calls_total{{fn=\"{path}\",kind=\"io\",outcome=\"hit_l1\"}} 1"
        )),
        "{text}"
    );
    // Every metric of ours has a row in docs/metrics.md.
    let docs = include_str!("../docs/metrics.md");
    for line in text.lines().filter(|l| l.starts_with("# TYPE optimize_")) {
        let name = line.split(' ').nth(2).unwrap();
        assert!(
            docs.contains(&format!("| `{name}` |")),
            "{name} is exported but has no row in docs/metrics.md"
        );
    }
    if promtool::available() {
        promtool::check_metrics(&text).unwrap();
    }
}

#[tokio::test]
async fn openmetrics_when_asked_for() {
    let res = get(
        "/metrics",
        Some(TOKEN),
        Some("application/openmetrics-text"),
    )
    .await;
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(res.text().await.unwrap().ends_with("# EOF\n"));
}

#[tokio::test]
async fn every_path_needs_the_token() {
    for path in [
        "/metrics", "/stats", "/alerts", "/health", "/history", "/rules",
    ] {
        assert_eq!(get(path, None, None).await.status(), 401, "{path}");
        assert_eq!(get(path, Some("wrong"), None).await.status(), 401, "{path}");
        assert_ne!(get(path, Some(TOKEN), None).await.status(), 401, "{path}");
    }
}

#[tokio::test]
async fn stats_report_each_function() {
    exercise();
    let stats: serde_json::Value = get("/stats", Some(TOKEN), None).await.json().await.unwrap();
    let path = lookup_cache().path();
    let f = stats["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fn"] == path)
        .unwrap();
    assert!(f["calls"].as_u64().unwrap() >= 3);
    assert!(f["hit_ratio"].as_f64().unwrap() > 0.0);
    assert!(f["tier_hit_ratio"]["l1"].as_f64().unwrap() > 0.0);
    assert!(f["errors"].as_u64().unwrap() >= 1, "lookup(0) is None");
    assert!(f["p99_ms"].as_f64().unwrap() >= f["p50_ms"].as_f64().unwrap());
    let crunch = stats["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fn"] == crunch_cache().path())
        .unwrap();
    assert_eq!(crunch["hits"], 0);
    assert_eq!(crunch["hit_ratio"], 0.0, "cache = false is measured only");
    assert!(stats["pools"].as_array().unwrap().len() == 3);
}

#[tokio::test]
async fn an_alert_fires_and_resolves_through_every_handler() {
    let (monitor, mock) = {
        let h = lock();
        (h.monitor, h.mock.clone())
    };
    let firing_now = |monitor: &Monitor| {
        monitor
            .alerts()
            .into_iter()
            .find(|a| a.rule == "TestQueueDeep")
            .map(|a| a.state)
    };
    lock().queue.set(50.0);
    monitor.tick();
    assert_eq!(firing_now(monitor), Some(AlertState::Pending));
    mock.increment(Duration::from_secs(30));
    monitor.tick();
    assert_eq!(firing_now(monitor), Some(AlertState::Firing));

    let alerts: serde_json::Value = get("/alerts", Some(TOKEN), None)
        .await
        .json()
        .await
        .unwrap();
    let a = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule"] == "TestQueueDeep")
        .unwrap();
    assert_eq!(a["state"], "firing");
    assert_eq!(a["message"], "50 jobs waiting");
    let health = get("/health", Some(TOKEN), None).await;
    assert_eq!(health.status(), 503, "a critical alert is firing");
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["status"], "unhealthy");

    lock().queue.set(0.0);
    mock.increment(Duration::from_secs(15));
    monitor.tick();
    assert_eq!(firing_now(monitor), Some(AlertState::Resolved));
    assert_ne!(get("/health", Some(TOKEN), None).await.status(), 503);

    let mine: Vec<AlertState> = lock()
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|(r, _)| r == "TestQueueDeep")
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(
        mine,
        vec![
            AlertState::Pending,
            AlertState::Firing,
            AlertState::Resolved
        ]
    );
    let h = lock();
    let first = h.webhook.recv_timeout(Duration::from_secs(10)).unwrap();
    let second = h.webhook.recv_timeout(Duration::from_secs(10)).unwrap();
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(
        (
            first["alert"]["state"].as_str(),
            second["alert"]["state"].as_str()
        ),
        (Some("firing"), Some("resolved")),
        "the webhook gets firing and resolved, not pending"
    );
    assert_eq!(first["alert"]["labels"]["severity"], "critical");
}

#[tokio::test]
async fn history_keeps_one_entry_per_evaluation() {
    let monitor = lock().monitor;
    monitor.tick();
    monitor.tick();
    let all: serde_json::Value = get("/history", Some(TOKEN), None)
        .await
        .json()
        .await
        .unwrap();
    assert!(all["points"].as_array().unwrap().len() >= 2, "{all}");
    let last: serde_json::Value = get("/history?limit=1", Some(TOKEN), None)
        .await
        .json()
        .await
        .unwrap();
    let points = last["points"].as_array().unwrap();
    assert_eq!(points.len(), 1);
    assert!(points[0]["system"]["memory_total"].as_f64().unwrap() > 0.0);
    let bad = get("/history?step=soon", Some(TOKEN), None).await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("step=\"soon\""));
}

#[test]
fn a_second_install_is_refused() {
    drop(lock());
    let err = optimize::install(Config::builder().without_file()).unwrap_err();
    assert!(matches!(err, optimize::InstallError::AlreadyInstalled));
    assert!(err.to_string().contains("already running"), "{err}");
}

#[test]
fn rule_file_passes_promtool_check_rules() {
    let mut rules = monitor::alert::default_rules();
    rules.push(
        Rule::quantile(
            "CheckoutSlow",
            Selector::metric("optimize_call_duration_seconds")
                .label("fn", "shop::checkout")
                .by(["fn"]),
            0.99,
            Duration::from_secs(300),
        )
        .above(0.25)
        .for_(Duration::from_secs(120))
        .keep_firing_for(Duration::from_secs(60))
        .severity(Severity::Error)
        .label("team", "shop")
        .message("p99 of {{ $labels.fn }} is {{ $value | humanizeDuration }}"),
    );
    let yaml = monitor::alert::promfile::rule_file("optimize", &rules);
    if promtool::available() {
        let out = promtool::check_rules(&yaml).unwrap();
        assert!(out.contains("SUCCESS: 11 rules found"), "{out}");
    }
}

static PRICED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Called by one test only.
#[optimize::io(ttl = "1h", tags = ["sku:{sku}"])]
fn price(sku: &str, qty: u32) -> u64 {
    PRICED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    u64::from(qty) * 10
}

async fn post(path: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let addr = lock().monitor.http_addr().unwrap();
    let mut req = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .post(format!("http://{addr}{path}"))
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

#[tokio::test]
async fn invalidation_over_http_by_key_function_and_tag() {
    use std::sync::atomic::Ordering::SeqCst;
    let path = price_cache().path().to_owned();
    let priced = || PRICED.load(SeqCst);
    let call = |sku: &'static str, qty| tokio::task::spawn_blocking(move || price(sku, qty));
    call("apple", 3).await.unwrap();
    call("pear", 1).await.unwrap();
    call("apple", 3).await.unwrap();
    assert_eq!(priced(), 2);

    // One call's entry, by its arguments as JSON: only that entry goes.
    let body = format!(r#"{{"fn": "{path}", "args": {{"sku": "apple", "qty": 3}}}}"#);
    let (status, answer) = post("/invalidate", Some(TOKEN), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["invalidated"], "key");
    assert_eq!(answer["was_in_l1"], true);
    call("apple", 3).await.unwrap();
    call("pear", 1).await.unwrap();
    assert_eq!(priced(), 3, "apple ran again, pear is still cached");

    // The same entry by an array of arguments.
    let body = format!(r#"{{"fn": "{path}", "args": ["apple", 3]}}"#);
    assert_eq!(
        post("/invalidate", Some(TOKEN), &body).await.1["was_in_l1"],
        true
    );

    // A tag.
    let (status, answer) = post("/invalidate", Some(TOKEN), r#"{"tag": "sku:pear"}"#).await;
    assert_eq!((status, answer["invalidated"].as_str()), (200, Some("tag")));
    call("pear", 1).await.unwrap();
    assert_eq!(priced(), 4, "pear ran again after its tag was invalidated");

    // The whole function.
    let body = format!(r#"{{"fn": "{path}"}}"#);
    assert_eq!(post("/invalidate", Some(TOKEN), &body).await.0, 200);
    assert_eq!(price_cache().len(), 0);

    // Refusals say why.
    let (status, _) = post("/invalidate", None, &body).await;
    assert_eq!(status, 401, "the token is required");
    let (status, answer) = post("/invalidate", Some(TOKEN), r#"{"fn": "no::such"}"#).await;
    assert_eq!(status, 404);
    assert!(answer["error"].as_str().unwrap().contains("no::such"));
    let body = format!(r#"{{"fn": "{path}", "args": {{"sku": "apple"}}}}"#);
    let (status, answer) = post("/invalidate", Some(TOKEN), &body).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("`qty` is missing"),
        "{answer}"
    );
    let (status, _) = post("/invalidate", Some(TOKEN), r#"{"fn": "a", "tag": "b"}"#).await;
    assert_eq!(status, 400);
    let (status, _) = post("/invalidate", Some(TOKEN), "not json").await;
    assert_eq!(status, 400);
    let huge = format!(r#"{{"tag": "{}"}}"#, "x".repeat(100_000));
    assert_eq!(post("/invalidate", Some(TOKEN), &huge).await.0, 413);
}

#[test]
fn invalidation_over_http_needs_a_token() {
    drop(lock());
    let monitor = Monitor::start(
        monitor::MonitorConfig::default()
            .system(false)
            .serve("127.0.0.1:0".parse().unwrap()),
        optimize::runtime().sources(),
    )
    .unwrap();
    let addr = monitor.http_addr().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = runtime.block_on(async {
        let res = reqwest::Client::new()
            .post(format!("http://{addr}/invalidate"))
            .body(r#"{"tag": "x"}"#)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    });
    monitor.stop();
    assert_eq!(status, 403);
    assert!(body.contains("set monitor.token"), "{body}");
}

#[tokio::test]
async fn the_rules_in_force_as_a_prometheus_rule_file() {
    let res = get("/rules", Some(TOKEN), None).await;
    assert_eq!(res.status(), 200);
    let yaml = res.text().await.unwrap();
    assert!(yaml.contains("- alert: \"TestQueueDeep\""), "{yaml}");
    assert!(
        yaml.contains("expr: \"sum(test_queue_depth) > 10\""),
        "{yaml}"
    );
    if promtool::available() {
        let out = promtool::check_rules(&yaml).unwrap();
        assert!(out.contains("SUCCESS: 11 rules found"), "{out}");
    }
}
