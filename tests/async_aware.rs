//! Waiting for the shared tiers or the pools never stalls an async runtime: a ticker task
//! keeps ticking while a sync call waits for a frozen Redis on a one-worker runtime, while
//! the async forms of invalidation, flush and shutdown wait on a current-thread runtime, and
//! while a cpu task's future waits (it gives the CPU pool back).
//!
//! Redis is a real `redis-server`, frozen with SIGSTOP for the waits. One test runs the
//! scenarios in order, since they share the runtime and the server.

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/skip.rs"]
mod skip;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use optimize::config::Config;
use optimize::{Task, TaskStatus};
use redis_server::RedisServer;

#[optimize::io(tiers = "l1,l2")]
fn lookup(id: u64) -> u64 {
    id * 2
}

#[optimize::cpu]
fn crunch(n: u64) -> u64 {
    (0..n).sum()
}

/// Counts ticks of a 1 ms interval on the runtime it is spawned on.
fn start_ticker() -> Arc<AtomicU64> {
    let ticks = Arc::new(AtomicU64::new(0));
    let t = ticks.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(1));
        loop {
            every.tick().await;
            t.fetch_add(1, SeqCst);
        }
    });
    ticks
}

/// Runs `wait` on `rt` beside a ticker; whether the ticker advanced while `wait` ran.
fn ticked_during<F: std::future::Future>(rt: &tokio::runtime::Runtime, wait: F) -> bool {
    rt.block_on(async {
        let ticks = start_ticker();
        // Let the ticker start.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let before = ticks.load(SeqCst);
        wait.await;
        ticks.load(SeqCst) > before
    })
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn waits_never_stall_the_runtime() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let guard = optimize::install(
        Config::builder()
            .without_file()
            .environment(Vec::<(String, String)>::new())
            .set("l2.url", &redis.url())
            .set("l3.enabled", "false")
            .set("namespace", &format!("async-aware-{}", std::process::id()))
            // Every operation on a frozen server waits this long; the breaker never opens.
            .set("l2.timeout", "300ms")
            .set("l2.breaker_threshold", "1000")
            .set("pools.cpu_threads", "1"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let runtime = guard.runtime();
    // Connected, and the first value stored.
    assert_eq!(lookup(1), 2);
    runtime.flush();
    assert!(runtime.tiers().status().l2_connected);

    // A sync call's L2 lookup on a one-worker multi-thread runtime: the ticks are read on the
    // worker itself, before and after the call, so they only advance if the call let the
    // ticker run elsewhere meanwhile.
    let one_worker = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    redis.pause();
    let (value, ticked) = one_worker.block_on(async {
        let ticks = start_ticker();
        tokio::time::sleep(Duration::from_millis(5)).await;
        tokio::spawn(async move {
            let before = ticks.load(SeqCst);
            let value = lookup(2);
            (value, ticks.load(SeqCst) > before)
        })
        .await
        .unwrap()
    });
    redis.resume();
    assert_eq!(value, 4, "computed after the L2 timeout");
    assert!(ticked, "the sync call blocked the runtime's only worker");

    // The async forms on a current-thread runtime.
    let rt = current_thread();
    redis.pause();
    let ticked = ticked_during(&rt, lookup_cache().invalidate_all_async());
    redis.resume();
    assert!(ticked, "invalidate_all_async blocked the runtime");

    let key = {
        let mut h = optimize::key::KeyHasher::new();
        h.push(&1u64);
        h.finish().unwrap()
    };
    redis.pause();
    let ticked = ticked_during(&rt, lookup_cache().invalidate_async(key));
    redis.resume();
    assert!(ticked, "invalidate_async blocked the runtime");

    // A write for the flush to wait on: computed while Redis is frozen (its L2 read times
    // out first), so its L2 write is still ahead of the flush, waiting on Redis.
    redis.pause();
    assert_eq!(lookup(3), 6);
    let ticked = ticked_during(&rt, optimize::flush_async());
    redis.resume();
    assert!(ticked, "flush_async blocked the runtime");

    // A cpu task's future waiting for a channel leaves the one CPU thread to others.
    rt.block_on(async {
        let (tx, rx) = tokio::sync::oneshot::channel::<u64>();
        let rx = std::sync::Mutex::new(Some(rx));
        let task = Task::cpu().spawn_async(move || {
            let rx = rx.lock().unwrap().take();
            async move {
                match rx {
                    Some(rx) => rx.await.map_err(|_| "sender dropped"),
                    None => Err("one attempt only"),
                }
            }
        });
        let waiting = async {
            while task.status() != TaskStatus::Running {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(bounded::BOUND, waiting)
            .await
            .expect("the task's first poll");
        let cpu_call = tokio::task::spawn_blocking(|| crunch(10));
        let sum = tokio::time::timeout(bounded::BOUND, cpu_call)
            .await
            .expect("a cpu call ran while the task's future waited")
            .unwrap();
        assert_eq!(sum, 45);
        tx.send(7).unwrap();
        assert_eq!(task.join().await.unwrap(), 7);
    });

    // Shutdown from async code on a current-thread runtime.
    let slow = Task::io().spawn_async(|| async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok::<_, ()>(())
    });
    let ticked = ticked_during(&rt, async {
        let report = optimize::shutdown_async(Duration::from_secs(10)).await;
        assert!(report.drained);
    });
    assert!(ticked, "shutdown_async blocked the runtime");
    assert!(rt.block_on(slow.join()).is_ok());
    drop(guard);
}
