//! The main job: a small service workload run once plain and once annotated.
//!
//! Each request looks up a user profile over the "network" (an `io` function, ~20 ms) and
//! scores it (a `cpu` function, ~0.5 ms of arithmetic). User ids follow a Zipf distribution, as
//! real traffic does: a few users are very popular. The annotated run serves repeats from the
//! cache and shares concurrent lookups of one user. A third run empties L1, as a restart
//! would, and is served from the shared tiers.
//!
//! ```text
//! cargo run --release --example demo                                           # L1 + L3
//! OPTIMIZE_REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example demo # L1 + L2 + L3
//! ```
//!
//! L3 lives in a fresh temporary directory unless `OPTIMIZE_L3_DIR` is set; keys go under a
//! fresh namespace unless `OPTIMIZE_NAMESPACE` is set, so runs never see each other's entries.
//!
//! The monitor serves its HTTP endpoint and dashboard during the run (addresses printed at
//! the start; `OPTIMIZE_DEMO_ADDR` picks the address). `OPTIMIZE_DEMO_LINGER=60` keeps it up
//! 60 s after the run, with a trickle of requests (20 a second) so the dashboard moves.
//! A `demo_backlog` gauge counts requests not yet answered, and a rule on it (above a third
//! of the requests) fires while the first run's backlog is deep and resolves once it
//! drains: one alert seen to fire and resolve. `OPTIMIZE_DEMO_HOLD=3` holds that backlog for
//! 3 s before the run starts, so that a Prometheus scraping the demo sees the alert too.
//! `OPTIMIZE_DEMO_REQUESTS` sets the requests per run (3,000).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use optimize::Outcome;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::Zipf;
use serde::{Deserialize, Serialize};

const DEFAULT_REQUESTS: usize = 3_000;
const CONCURRENCY: usize = 32;
const USERS: u64 = 10_000;
const ZIPF_EXPONENT: f64 = 1.1;
const NETWORK_DELAY: Duration = Duration::from_millis(20);

/// What the remote user service returns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Profile {
    id: u64,
    name: String,
    tier: u8,
}

/// The remote service has no such user.
#[derive(Debug)]
pub(crate) struct FetchError;

/// The functions as written before anyone optimized them.
mod plain {
    use super::*;

    pub(crate) async fn fetch_profile(id: u64) -> Result<Profile, FetchError> {
        tokio::time::sleep(NETWORK_DELAY).await;
        if id.is_multiple_of(101) {
            return Err(FetchError); // some users do not exist
        }
        Ok(Profile {
            id,
            name: format!("user-{id}"),
            tier: (id % 4) as u8,
        })
    }

    pub(crate) fn risk_score(profile: &Profile) -> u64 {
        // Stand-in for a model evaluation: ~0.5 ms of dependent arithmetic.
        let mut x = profile.id ^ 0x9E37_79B9_7F4A_7C15;
        for i in 0..400_000u64 {
            x = std::hint::black_box(x.rotate_left(7) ^ i).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        }
        x % 1000 + u64::from(profile.tier)
    }
}

/// The same functions, annotated. Only the attribute differs.
mod optimized {
    use super::*;

    #[optimize::io(ttl = "5m", capacity = 50_000)]
    pub(crate) async fn fetch_profile(id: u64) -> Result<Profile, FetchError> {
        plain::fetch_profile(id).await
    }

    #[optimize::cpu(ttl = "5m")]
    pub(crate) fn risk_score(profile: &Profile) -> u64 {
        plain::risk_score(profile)
    }
}

#[derive(Default)]
struct Timings {
    fetch: Vec<Duration>,
    score: Vec<Duration>,
}

/// A whole number from the environment variable `name`, or `default`.
fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text.parse().unwrap_or_else(|_| {
            eprintln!("demo: {name}={text:?} is not a whole number");
            std::process::exit(2);
        }),
        Err(_) => default,
    }
}

fn requests() -> usize {
    env_number("OPTIMIZE_DEMO_REQUESTS", DEFAULT_REQUESTS as u64).max(1) as usize
}

fn workload() -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(42);
    let zipf = Zipf::new(USERS as f64, ZIPF_EXPONENT).expect("valid Zipf parameters");
    (0..requests()).map(|_| rng.sample(zipf) as u64).collect()
}

/// Runs every request with `CONCURRENCY` workers; returns the wall time and per-call timings.
async fn run(ids: &[u64], use_optimized: bool) -> (Duration, Timings) {
    let queue = Arc::new(Mutex::new(ids.to_vec()));
    let timings = Arc::new(Mutex::new(Timings::default()));
    let start = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (queue, timings) = (queue.clone(), timings.clone());
            tokio::spawn(async move {
                loop {
                    let Some(id) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    let t = Instant::now();
                    let profile = if use_optimized {
                        optimized::fetch_profile(id).await
                    } else {
                        plain::fetch_profile(id).await
                    };
                    let fetch_time = t.elapsed();
                    let score_time = profile.ok().map(|p| {
                        let t = Instant::now();
                        let score = if use_optimized {
                            optimized::risk_score(&p)
                        } else {
                            plain::risk_score(&p)
                        };
                        std::hint::black_box(score);
                        t.elapsed()
                    });
                    let mut tm = timings.lock().unwrap();
                    tm.fetch.push(fetch_time);
                    tm.score.extend(score_time);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker panicked");
    }
    let elapsed = start.elapsed();
    let timings = std::mem::take(&mut *timings.lock().unwrap());
    (elapsed, timings)
}

fn mean_p99(samples: &mut [Duration]) -> (Duration, Duration) {
    if samples.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    let p99 = samples[((samples.len() as f64 * 0.99).ceil() as usize).min(samples.len()) - 1];
    (mean, p99)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn print_header() {
    println!(
        "{:<30} {:>6} {:>9} {:>7} {:>7} {:>7} {:>10} {:>10}",
        "function", "calls", "hit ratio", "L1", "L2", "L3", "mean", "p99"
    );
}

fn print_plain(name: &str, samples: &mut [Duration]) {
    let (mean, p99) = mean_p99(samples);
    println!(
        "{:<30} {:>6} {:>9} {:>7} {:>7} {:>7} {:>10} {:>10}",
        name,
        samples.len(),
        "-",
        "-",
        "-",
        "-",
        ms(mean),
        ms(p99)
    );
}

fn print_sites() {
    for site in [
        optimized::fetch_profile_cache(),
        optimized::risk_score_cache(),
    ] {
        let s = site.stats();
        println!(
            "{:<30} {:>6} {:>8.1}% {:>7} {:>7} {:>7} {:>10} {:>10}",
            site.path().trim_start_matches("demo::"),
            s.calls(),
            s.hit_ratio() * 100.0,
            s.count(Outcome::HitL1),
            s.count(Outcome::HitL2),
            s.count(Outcome::HitL3),
            ms(s.mean()),
            ms(s.latency.quantile(0.99))
        );
    }
}

/// The demo's configuration: `optimize.toml` (or `$OPTIMIZE_CONFIG`) and `OPTIMIZE_*`
/// variables as usual, plus L3 in a temporary directory and a namespace of its own unless
/// those sources set them, and the monitor with the demo's alert on the backlog gauge. A bad
/// configuration stops the demo with every problem found.
fn configure() -> (optimize::config::ConfigBuilder, Option<tempfile::TempDir>) {
    use optimize::config::Config;
    use optimize::monitor::alert::{AlertEvent, AlertState, Rule, Selector, Severity};
    let addr = std::env::var("OPTIMIZE_DEMO_ADDR").unwrap_or_else(|_| "127.0.0.1:0".into());
    // Where the file and the environment leave L3 and the namespace (a token given in the
    // environment needs the address the demo sets).
    let resolved = Config::builder()
        .set("monitor.enabled", "true")
        .set("monitor.addr", &addr)
        .resolve()
        .unwrap_or_else(|e| {
            eprintln!("demo: {e}");
            std::process::exit(2);
        });
    let mut builder = Config::builder()
        .set("monitor.enabled", "true")
        .set("monitor.system", "true")
        .set("monitor.default_rules", "true")
        .set("monitor.interval", "250ms")
        .set("monitor.addr", &addr)
        .alert(
            Rule::value("DemoBacklogDeep", Selector::metric("demo_backlog"))
                .above((requests() / 3) as f64)
                .severity(Severity::Warning)
                .message("{{ $value }} requests waiting"),
        )
        .alert_handler(|e: &AlertEvent| {
            if matches!(e.alert.state, AlertState::Firing | AlertState::Resolved) {
                println!(
                    "  [alert] {} {}: {}",
                    e.alert.rule,
                    e.alert.state.as_str(),
                    e.alert.message
                );
            }
        });
    let mut temp = None;
    let configured = |key: &str| {
        resolved
            .origins
            .get(key)
            .is_some_and(|origin| !origin.starts_with("level") && origin != "defaults")
    };
    if !configured("l3.dir") {
        let dir = tempfile::tempdir().expect("a temporary directory");
        builder = builder.set("l3.dir", &dir.path().display().to_string());
        temp = Some(dir);
    }
    if !configured("namespace") {
        builder = builder.set(
            "namespace",
            &format!("optimize-demo-{}", std::process::id()),
        );
    }
    (builder, temp)
}

async fn http_get(url: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let res = request.send().await.ok()?;
    let status = res.status().as_u16();
    Some((status, res.text().await.ok()?))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let (config, _l3_dir) = configure();
    let guard = optimize::install(config).unwrap_or_else(|e| {
        eprintln!("demo: {e}");
        std::process::exit(2);
    });
    let tiers = guard.runtime().tiers();
    let tiers_line = format!(
        "tiers: L1 + {}L3 ({})",
        if tiers.has_l2() { "L2 (redis) + " } else { "" },
        tiers
            .config()
            .l3
            .as_ref()
            .map_or(String::new(), |l3| l3.dir.display().to_string())
    );
    let monitor = guard
        .runtime()
        .monitor()
        .expect("the demo runs the monitor");
    let base = format!(
        "http://{}",
        monitor.http_addr().expect("the demo serves HTTP")
    );
    println!("monitor: {base}/metrics  {base}/stats  {base}/alerts  {base}/health  {base}/history");
    println!("dashboard: {base}/dashboard");
    let backlog = optimize::monitor::metrics::gauge(
        "demo_backlog",
        "Requests of the current run not yet answered.",
    )
    .expect("a valid metric name");

    let ids = workload();
    let distinct: HashSet<u64> = ids.iter().copied().collect();
    println!(
        "optimize demo: {} requests, {CONCURRENCY} concurrent, Zipf(s = {ZIPF_EXPONENT}) \
         over {USERS} user ids ({} distinct)\n{tiers_line}\n",
        ids.len(),
        distinct.len()
    );

    // The backlog is deep when the run starts: the alert fires at this evaluation...
    backlog.set(ids.len() as f64);
    monitor.tick();
    let hold = env_number("OPTIMIZE_DEMO_HOLD", 0);
    if hold > 0 {
        println!("holding the backlog for {hold} s (OPTIMIZE_DEMO_HOLD)");
        tokio::time::sleep(Duration::from_secs(hold)).await;
    }
    let (plain_wall, mut plain) = run(&ids, false).await;
    // ...and resolves once it has drained.
    backlog.set(0.0);
    monitor.tick();
    let (opt_wall, _) = run(&ids, true).await;

    println!("run 1: plain, then annotated with cold caches");
    print_header();
    print_plain("plain fetch_profile", &mut plain.fetch);
    print_plain("plain risk_score", &mut plain.score);
    print_sites();
    let fetch = optimized::fetch_profile_cache().stats();
    println!(
        "fetch_profile: {} executions for {} distinct ids ({} shared a concurrent call, {} errors not cached)",
        fetch.executions(),
        distinct.len(),
        fetch.count(Outcome::Coalesced),
        fetch.errors(),
    );
    println!(
        "wall time: plain {:.2} s, annotated {:.2} s -> speedup {:.1}x\n",
        plain_wall.as_secs_f64(),
        opt_wall.as_secs_f64(),
        plain_wall.as_secs_f64() / opt_wall.as_secs_f64()
    );

    // What a restart looks like: L1 is empty, the shared tiers are not.
    optimize::flush();
    for site in [
        optimized::fetch_profile_cache(),
        optimized::risk_score_cache(),
    ] {
        site.clear_l1();
        site.reset_stats();
    }
    let (restart_wall, _) = run(&ids, true).await;
    println!("run 2: annotated again after emptying L1 (a restart), served by the shared tiers");
    print_header();
    print_sites();
    let after = optimized::fetch_profile_cache().stats();
    println!(
        "wall time {:.2} s -> speedup {:.1}x over plain",
        restart_wall.as_secs_f64(),
        plain_wall.as_secs_f64() / restart_wall.as_secs_f64()
    );
    let status = tiers.status();
    println!(
        "write-behind: {} queued, {} dropped; L2 circuit {}",
        status.writeback_depth,
        status.writeback_dropped,
        if status.l2_circuit_open {
            "open"
        } else {
            "closed"
        }
    );
    let pools = optimize::runtime().pools().stats();
    println!(
        "pools: cpu {} threads, {} cpu bodies run, admission wait p99 {:?}; io {} bodies run",
        pools.cpu_threads,
        pools.cpu.completed,
        pools.cpu.wait.quantile(0.99),
        pools.io.completed
    );
    monitor.tick();
    // The token `monitor.token` sets, if any (from the file or the environment).
    let token = guard
        .runtime()
        .config()
        .monitor_config()
        .http
        .and_then(|h| h.token);
    let scrape = http_get(&format!("{base}/metrics"), token.as_deref()).await;
    let health = http_get(&format!("{base}/health"), token.as_deref()).await;
    match (&scrape, &health) {
        (Some((200, metrics)), Some((_, health))) => println!(
            "monitor: /metrics served {} lines ({} series of optimize_calls_total); /health {health}",
            metrics.lines().count(),
            metrics.lines().filter(|l| l.starts_with("optimize_calls_total{")).count(),
        ),
        _ => {
            eprintln!("demo: the monitor's endpoint did not answer: {scrape:?} {health:?}");
            std::process::exit(1);
        }
    }
    let fired = monitor.alerts().iter().any(|a| {
        a.rule == "DemoBacklogDeep" && a.state == optimize::monitor::alert::AlertState::Resolved
    });
    if let Some(secs) = std::env::var("OPTIMIZE_DEMO_LINGER")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        println!("monitor: serving for {secs} s more (OPTIMIZE_DEMO_LINGER), 20 requests a second");
        let until = Instant::now() + Duration::from_secs(secs);
        for id in ids.iter().cycle() {
            if Instant::now() >= until {
                break;
            }
            if let Ok(profile) = optimized::fetch_profile(*id).await {
                std::hint::black_box(optimized::risk_score(&profile));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(guard); // flushes queued writes and shuts the pools and monitor down
    if !fired {
        eprintln!("demo: the DemoBacklogDeep alert did not fire and resolve");
        std::process::exit(1);
    }

    // Behaviour, not timing: each id that exists is fetched once in run 1; ids that fail are
    // fetched once per request (errors are never cached); in run 2 only the failing ids run.
    let failing_requests = ids.iter().filter(|id| id.is_multiple_of(101)).count() as u64;
    let failing_distinct = distinct.iter().filter(|id| id.is_multiple_of(101)).count() as u64;
    let expected = distinct.len() as u64 - failing_distinct + failing_requests;
    if fetch.executions() > expected || after.executions() > failing_requests {
        eprintln!(
            "demo: fetch_profile ran {} times (expected at most {expected}) and {} times after the restart (expected at most {failing_requests})",
            fetch.executions(),
            after.executions()
        );
        std::process::exit(1);
    }
}
