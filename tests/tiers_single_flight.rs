//! Single-flight covers the whole miss path: 1,000 concurrent callers of a cold key cause one
//! L2 probe, one L3 probe and one execution in this process.

#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/skip.rs"]
mod skip;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use optimize::cache::Tier;
use optimize::Outcome;
use redis_server::RedisServer;

static EXECUTIONS: AtomicUsize = AtomicUsize::new(0);

#[optimize::io]
async fn report(id: u64) -> Vec<u64> {
    EXECUTIONS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(30)).await;
    vec![id; 16]
}

#[test]
fn one_probe_per_tier_and_one_execution_per_key() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let guard = optimize::install(
        optimize::config::Config::builder()
            .without_file()
            .environment(Vec::<(String, String)>::new())
            .set("l2.url", &redis.url())
            .set("l3.dir", &dir.path().display().to_string()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tiers = guard.runtime().tiers();
    // Configuration happens once, before the first managed call; a second install says so.
    let again = optimize::install(optimize::config::Config::builder().without_file());
    assert!(matches!(
        again,
        Err(optimize::InstallError::AlreadyInstalled)
    ));
    assert!(again.unwrap_err().to_string().contains("already running"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let gets = |tier| tiers.counters(tier).timing("get").0;

    let burst = |id: u64| {
        rt.block_on(async {
            let calls: Vec<_> = (0..1000).map(|_| tokio::spawn(report(id))).collect();
            for c in calls {
                assert_eq!(c.await.unwrap(), vec![id; 16]);
            }
        })
    };

    // Cold everywhere: one probe of each shared tier, one execution.
    burst(1);
    assert_eq!(EXECUTIONS.load(SeqCst), 1);
    assert_eq!((gets(Tier::L2), gets(Tier::L3)), (1, 1));

    // Cold in L1 only (as after a restart): one L2 probe, served from it, no execution.
    optimize::flush();
    report_cache().clear_l1();
    burst(1);
    assert_eq!(EXECUTIONS.load(SeqCst), 1);
    assert_eq!((gets(Tier::L2), gets(Tier::L3)), (2, 1));
    let s = report_cache().stats();
    assert_eq!(s.count(Outcome::HitL2), 1);
    assert_eq!(s.calls(), 2000);
    optimize::shutdown();
}
