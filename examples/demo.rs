//! The main job: a small service workload run once plain and once annotated.
//!
//! Each request looks up a user profile over the "network" (an `io` function, ~20 ms) and
//! scores it (a `cpu` function, ~0.5 ms of arithmetic). User ids follow a Zipf distribution, as
//! real traffic does: a few users are very popular. The annotated run serves repeats from the
//! cache and shares concurrent lookups of one user.
//!
//! ```text
//! cargo run --release --example demo
//! ```

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::Zipf;
use serde::{Deserialize, Serialize};

const REQUESTS: usize = 3_000;
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

fn workload() -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(42);
    let zipf = Zipf::new(USERS as f64, ZIPF_EXPONENT).expect("valid Zipf parameters");
    (0..REQUESTS).map(|_| rng.sample(zipf) as u64).collect()
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

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let ids = workload();
    let distinct: HashSet<u64> = ids.iter().copied().collect();
    println!(
        "optimize demo: {REQUESTS} requests, {CONCURRENCY} concurrent, Zipf(s = {ZIPF_EXPONENT}) \
         over {USERS} user ids ({} distinct)\n",
        distinct.len()
    );

    let (plain_wall, mut plain) = run(&ids, false).await;
    let (opt_wall, _) = run(&ids, true).await;

    let (f_mean, f_p99) = mean_p99(&mut plain.fetch);
    let (s_mean, s_p99) = mean_p99(&mut plain.score);
    println!(
        "{:<34} {:>6} {:>9} {:>11} {:>11}",
        "function", "calls", "hit ratio", "mean", "p99"
    );
    println!(
        "{:<34} {:>6} {:>9} {:>11} {:>11}",
        "plain fetch_profile",
        plain.fetch.len(),
        "-",
        ms(f_mean),
        ms(f_p99)
    );
    println!(
        "{:<34} {:>6} {:>9} {:>11} {:>11}",
        "plain risk_score",
        plain.score.len(),
        "-",
        ms(s_mean),
        ms(s_p99)
    );
    for site in [
        optimized::fetch_profile_cache(),
        optimized::risk_score_cache(),
    ] {
        let s = site.stats();
        println!(
            "{:<34} {:>6} {:>8.1}% {:>11} {:>11}",
            site.path().trim_start_matches("demo::"),
            s.calls(),
            s.hit_ratio() * 100.0,
            ms(s.mean()),
            ms(s.latency.quantile(0.99))
        );
    }

    let fetch = optimized::fetch_profile_cache().stats();
    println!(
        "\nfetch_profile: {} executions for {} distinct ids ({} shared a concurrent call, {} errors not cached)",
        fetch.executions(),
        distinct.len(),
        fetch.count(optimize::Outcome::Coalesced),
        fetch.errors(),
    );
    println!(
        "wall time: plain {:.2} s, optimized {:.2} s -> speedup {:.1}x",
        plain_wall.as_secs_f64(),
        opt_wall.as_secs_f64(),
        plain_wall.as_secs_f64() / opt_wall.as_secs_f64()
    );
    println!("(every kind runs its body in place for now; pools arrive with the pools work)");

    // Behaviour, not timing: each id that exists is fetched exactly once; ids that fail are
    // fetched once per request (errors are never cached).
    let failing_requests = ids.iter().filter(|id| id.is_multiple_of(101)).count() as u64;
    let failing_distinct = distinct.iter().filter(|id| id.is_multiple_of(101)).count() as u64;
    let expected = distinct.len() as u64 - failing_distinct + failing_requests;
    if fetch.executions() > expected {
        eprintln!(
            "demo: {} executions of fetch_profile, expected at most {expected}",
            fetch.executions()
        );
        std::process::exit(1);
    }
}
