//! Persisted history: one process records calls and exits; the next one, with the same L3
//! directory, answers `/history` over a range, a step and a function with the first one's
//! calls, and `/stats` shows them in its trends.

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/child.rs"]
mod child;

use optimize::config::Config;

#[optimize::io(ttl = "1h")]
fn work(id: u64) -> u64 {
    id * 2
}

#[optimize::cpu(cache = false)]
fn other(id: u64) -> u64 {
    id + 1
}

fn install() -> optimize::RuntimeGuard {
    optimize::install(
        Config::builder()
            .without_file()
            .set("l3.enabled", "true")
            .set("monitor.enabled", "true")
            .set("monitor.system", "false")
            .set("monitor.interval", "1h")
            .set("monitor.addr", "127.0.0.1:0"),
    )
    .unwrap()
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let res = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[test]
#[ignore = "run in child processes by the test below"]
fn child() {
    assert!(
        std::env::var_os("HISTORY_CHILD").is_some(),
        "run as a child only"
    );
    let guard = install();
    let monitor = guard.runtime().monitor().unwrap().clone();
    assert!(
        monitor.history_persisted(),
        "history is persisted next to L3"
    );
    if std::env::var_os("HISTORY_WRITE").is_some() {
        for i in 0..30 {
            work(i % 10);
        }
        // Recorded at shutdown: the interval since the last evaluation is not lost.
        drop(guard);
        println!("RESULT wrote=1");
        return;
    }
    other(1);
    monitor.tick();
    let addr = monitor.http_addr().unwrap();
    let path = work_cache().path().to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (status, body) = get(addr, &format!("/history?from=1h&fn={path}")).await;
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["source"], "raw", "{answer}");
        assert_eq!(answer["persisted"], true);
        let points = answer["points"].as_array().unwrap();
        let calls: u64 = points.iter().map(|p| p["calls"].as_u64().unwrap()).sum();
        let hits: u64 = points
            .iter()
            .flat_map(|p| p["functions"].as_array().unwrap())
            .map(|f| f["hits_l1"].as_u64().unwrap())
            .sum();
        assert!(
            points
                .iter()
                .flat_map(|p| p["functions"].as_array().unwrap())
                .all(|f| f["fn"] == path.as_str()),
            "only the function asked for: {answer}"
        );

        let (_, body) = get(addr, "/history?from=1h&step=1m").await;
        let minutes: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(minutes["source"], "minutes", "{minutes}");
        assert_eq!(minutes["step_ms"], 60_000);

        let (status, body) = get(addr, "/history?from=yesterday").await;
        assert_eq!(status, 400);
        assert!(body.contains("from=\"yesterday\""), "{body}");

        let (_, body) = get(addr, "/stats").await;
        let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
        let trend = stats["trends"]["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["fn"] == path.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("no trend for {path}: {stats}"));
        println!(
            "RESULT calls={calls} hits={hits} trend_calls={} trend_before={} window={}",
            trend["now"]["calls"], trend["before"], stats["trends"]["window_s"]
        );
    });
}

#[test]
fn history_survives_a_restart_and_answers_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let l3 = dir.path().join("l3").display().to_string();
    let env = [("OPTIMIZE_L3_DIR", l3.as_str())];
    let (out, _) = bounded::within("the writing process", {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("HISTORY_WRITE".into(), "1".into())])
            .collect();
        move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            child::run("child", "HISTORY_CHILD", &env)
        }
    });
    assert_eq!(child::result_field(&out, "wrote"), "1");
    assert!(
        dir.path().join("l3").join("history").is_dir(),
        "the store lives inside the L3 directory"
    );
    let (out, _) = bounded::within("the reading process", {
        let l3 = l3.clone();
        move || {
            child::run(
                "child",
                "HISTORY_CHILD",
                &[("OPTIMIZE_L3_DIR", l3.as_str())],
            )
        }
    });
    let field = |name: &str| child::result_field(&out, name);
    assert_eq!(field("calls"), "30", "the first process's calls, from disk");
    assert_eq!(field("hits"), "20", "10 distinct ids, 20 L1 hits");
    assert_eq!(field("trend_calls"), "30");
    assert_eq!(field("trend_before"), "null", "nothing in the hour before");
    assert_eq!(field("window"), "3600");
}
