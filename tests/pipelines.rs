//! The task processor: a diamond graph (A → B, A → C, {B, C} → D) runs D once with both
//! inputs; B failing ends D with the cause; cancelling A cascades to B, C and D, none of which
//! starts, and cancelling A alone fails them with A as the cause; a 10,000-task batch returns
//! its results in order, the first success wins and cancels the rest, results stream as they
//! end; tags list, count and cancel; the processor's figures and the CPU workers' are kept.

#[path = "support/bounded.rs"]
mod bounded;
#[path = "support/install.rs"]
mod install;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::StreamExt;
use optimize::task::{self, Cause, Task, TaskError, TaskStatus, Upstream};

/// A task body that blocks until the test sends, within the bound.
fn blocker() -> (
    mpsc::Sender<()>,
    impl FnMut() -> Result<u64, String> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel::<()>();
    (tx, move || {
        rx.recv_timeout(bounded::BOUND)
            .map(|()| 1)
            .map_err(|e| e.to_string())
    })
}

#[test]
fn the_task_processor() {
    let _guard = optimize::install(
        install::quiet()
            .set("pools.cpu_threads", "2")
            .set("monitor.enabled", "true"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bounded::within_async("the pipelines", async {
        diamond().await;
        a_failure_ends_its_dependents_with_the_cause().await;
        cancelling_cascades().await;
        batches().await;
        tags().await;
    }));
    figures();
}

async fn diamond() {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let (release, hold) = blocker();
    let a = Task::io().spawn(hold);
    let b = Task::cpu().after(&a).spawn(|a: u64| {
        RUNS.fetch_add(1, SeqCst);
        Ok::<_, String>(a + 10)
    });
    let c = Task::cpu().after(&a).spawn(|a: u64| {
        RUNS.fetch_add(1, SeqCst);
        Ok::<_, String>(format!("c{a}"))
    });
    let d = Task::cpu().after((&b, &c)).spawn(|(b, c): (u64, String)| {
        RUNS.fetch_add(1, SeqCst);
        Ok::<_, String>(format!("{b}/{c}"))
    });
    assert_eq!(d.status(), TaskStatus::Waiting, "D waits for B and C");
    assert_eq!(b.status(), TaskStatus::Waiting);
    assert_eq!(RUNS.load(SeqCst), 0);
    release.send(()).unwrap();
    assert_eq!(
        d.join().await.unwrap(),
        "11/c1",
        "D ran once with both inputs"
    );
    assert_eq!(RUNS.load(SeqCst), 3);
    // The inputs were cloned: each handle still has its own result.
    assert_eq!(a.join().await.unwrap(), 1);
    assert_eq!(b.join().await.unwrap(), 11);
    assert_eq!(c.join().await.unwrap(), "c1");
}

async fn a_failure_ends_its_dependents_with_the_cause() {
    static D_RAN: AtomicU64 = AtomicU64::new(0);
    let a = Task::io().spawn(|| Ok::<_, String>(2u64));
    let b = Task::cpu()
        .after(&a)
        .spawn(|_: u64| Err::<u64, _>("b failed".to_owned()));
    let c = Task::cpu().after(&a).spawn(|a: u64| Ok::<_, String>(a * 3));
    let d = Task::cpu().after((&b, &c)).spawn(|(b, c): (u64, u64)| {
        D_RAN.fetch_add(1, SeqCst);
        Ok::<_, String>(b + c)
    });
    // And a task after D, which fails in turn, naming D.
    let e = Task::io()
        .after(&[&d as &dyn Upstream])
        .spawn(|()| Ok::<_, String>(()));
    let b_id = b.id();
    let d_id = d.id();
    let cause = Cause {
        task: b_id,
        ended: TaskStatus::Failed,
    };
    match d.join().await {
        Err(TaskError::DependencyFailed(c)) => assert_eq!(c, cause),
        other => panic!("D: {other:?}"),
    }
    assert!(matches!(b.join().await, Err(TaskError::Failed(_))));
    match e.join().await {
        Err(TaskError::DependencyFailed(c)) => assert_eq!(
            c,
            Cause {
                task: d_id,
                ended: TaskStatus::DependencyFailed
            }
        ),
        other => panic!("E: {other:?}"),
    }
    assert_eq!(D_RAN.load(SeqCst), 0, "D never ran");
}

async fn cancelling_cascades() {
    static RAN: AtomicU64 = AtomicU64::new(0);
    let ran = || {
        RAN.fetch_add(1, SeqCst);
        Ok::<_, String>(0u64)
    };
    // Cancel A: B, C and D are cancelled too, and none starts.
    let (_release, hold) = blocker();
    let a = Task::io().spawn_async({
        let mut hold = Some(hold);
        move || {
            let hold = hold.take().expect("one attempt");
            async move { tokio::task::spawn_blocking(hold).await.unwrap() }
        }
    });
    let b = Task::cpu().after(&a).spawn(move |_: u64| ran());
    let c = Task::cpu().after(&a).spawn(move |_: u64| ran());
    let d = Task::cpu()
        .after((&b, &c))
        .spawn(move |_: (u64, u64)| ran());
    bounded::until("A running", || a.status() == TaskStatus::Running);
    assert!(a.cancel());
    for (name, handle) in [("A", &a), ("B", &b), ("C", &c), ("D", &d)] {
        assert_eq!(handle.status(), TaskStatus::Cancelled, "{name}");
    }
    bounded::until("the cancelled tasks no longer wait", || {
        optimize::runtime()
            .pools()
            .tasks()
            .waiting(optimize::Kind::Cpu)
            == 0
    });
    assert!(!a.cancel(), "ended already");
    assert!(matches!(d.join().await, Err(TaskError::Cancelled)));
    assert!(matches!(b.join().await, Err(TaskError::Cancelled)));
    assert!(matches!(a.join().await, Err(TaskError::Cancelled)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(RAN.load(SeqCst), 0, "none of them started");

    // Cancel only A: B then ends naming A.
    let (_release, hold) = blocker();
    let a = Task::io().spawn(hold);
    let b = Task::cpu().after(&a).spawn(move |_: u64| ran());
    let a_id = a.id();
    assert!(a.cancel_only());
    match b.join().await {
        Err(TaskError::DependencyFailed(cause)) => assert_eq!(
            cause,
            Cause {
                task: a_id,
                ended: TaskStatus::Cancelled
            }
        ),
        other => panic!("B: {other:?}"),
    }
    assert_eq!(RAN.load(SeqCst), 0);
}

async fn batches() {
    // 10,000 tasks: results in submission order.
    let batch = Task::cpu().spawn_batch((0..10_000u64).map(|n| move || Ok::<_, String>(n * 2)));
    assert_eq!(batch.len(), 10_000);
    let results = batch.join_all().await;
    assert_eq!(results.len(), 10_000);
    for (n, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), n as u64 * 2);
    }

    // The first success wins; the rest are cancelled.
    static SLOW_RAN: AtomicU64 = AtomicU64::new(0);
    let batch = Task::io().spawn_batch_async((0..5u64).map(|n| {
        move || async move {
            if n == 3 {
                return Ok::<_, String>(n);
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
            SLOW_RAN.fetch_add(1, SeqCst);
            Err(format!("{n} was slow"))
        }
    }));
    assert_eq!(batch.first_ok().await.unwrap(), 3);
    bounded::until("the rest cancelled", || {
        optimize::runtime().pools().tasks().running() == 0
    });
    assert_eq!(SLOW_RAN.load(SeqCst), 0);

    // All failing: every error, in order.
    let batch = Task::io().spawn_batch((0..3u64).map(|n| move || Err::<u64, _>(n)));
    let errors = batch.first_ok().await.unwrap_err();
    let failed: Vec<u64> = errors
        .into_iter()
        .map(|e| match e {
            TaskError::Failed(n) => n,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(failed, [0, 1, 2]);

    // As they end.
    let batch = Task::io().spawn_batch_async((0..4u64).map(|n| {
        move || async move {
            tokio::time::sleep(Duration::from_millis(40 - n * 10)).await;
            Ok::<_, String>(n)
        }
    }));
    let mut seen: Vec<usize> = batch
        .into_stream()
        .map(|(i, r)| {
            assert_eq!(r.unwrap(), i as u64);
            i
        })
        .collect()
        .await;
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2, 3]);

    // A canceller stops what is left while the batch is awaited elsewhere.
    let (_release, hold) = blocker();
    let batch = Task::io().spawn_batch([hold]);
    let canceller = batch.canceller();
    assert_eq!(canceller.cancel(), 1);
    assert!(matches!(
        batch.join_all().await.pop().unwrap(),
        Err(TaskError::Cancelled)
    ));
}

async fn tags() {
    let mut holds = Vec::new();
    let mut handles = Vec::new();
    for n in 0..3 {
        let (release, hold) = blocker();
        holds.push(release);
        let tag = if n < 2 { "ingest" } else { "report" };
        handles.push(Task::io().tag(tag).tag("nightly").spawn(hold));
    }
    assert_eq!(task::count_tagged("ingest"), 2);
    assert_eq!(task::count_tagged("nightly"), 3);
    let listed = task::tagged("ingest");
    assert_eq!(
        listed.iter().map(|t| t.id).collect::<Vec<_>>(),
        [handles[0].id(), handles[1].id()]
    );
    assert_eq!(listed[0].tags, ["ingest", "nightly"]);
    assert_eq!(listed[0].kind, "io");
    assert_eq!(task::cancel_tagged("ingest"), 2);
    assert_eq!(task::count_tagged("ingest"), 0);
    assert_eq!(task::count_tagged("nightly"), 1);
    holds[2].send(()).unwrap();
    assert_eq!(handles.pop().unwrap().join().await.unwrap(), 1);
    for h in handles {
        assert!(matches!(h.join().await, Err(TaskError::Cancelled)));
    }
}

fn figures() {
    let pools = optimize::runtime().pools();
    let before = pools.stats().tasks;
    // A tagged CPU task shows its tag on its worker while it runs.
    let (release, hold) = blocker();
    let handle = Task::cpu().tag("crunch").spawn(hold);
    bounded::until("a worker shows the tag", || {
        pools
            .stats()
            .cpu_workers
            .iter()
            .any(|w| w.current_tag.as_deref() == Some("crunch"))
    });
    release.send(()).unwrap();
    assert_eq!(handle.wait().unwrap(), 1);
    let ok = Task::io().spawn(|| Ok::<_, String>(()));
    ok.wait().unwrap();
    let failed = Task::io().spawn(|| Err::<(), _>("no"));
    assert!(failed.wait().is_err());

    let after = pools.stats().tasks;
    assert_eq!(after.processed - before.processed, 3);
    assert_eq!(after.succeeded - before.succeeded, 2);
    assert!(after.success_rate > 0.0 && after.success_rate < 1.0);
    assert!(after.throughput_per_s > 0.0);
    assert!(after.p99_ms > 0.0 && after.mean_ms > 0.0);
    let workers = pools.stats().cpu_workers;
    assert_eq!(workers.len(), 2);
    assert!(workers.iter().map(|w| w.runs).sum::<u64>() >= 10_000);
    assert!(workers.iter().all(|w| w.current_tag.is_none()));
    assert_eq!(optimize::task::figures().processed, after.processed);

    // In /metrics and /stats.
    let text = optimize::monitor::export::prometheus_text(std::sync::Arc::new(
        optimize::runtime().snapshot(),
    ));
    let value = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(
        value("optimize_tasks_total{status=\"succeeded\"}"),
        after.succeeded as f64
    );
    assert!(value("optimize_cpu_worker_runs_total{worker=\"0\"}") > 0.0);
    assert!(value("optimize_tasks_throughput") > 0.0);
    assert_eq!(value("optimize_task_duration_seconds_count"), {
        let t = optimize::task::figures();
        t.execution.count() as f64
    });
    let report = optimize::runtime().monitor().expect("monitor on").stats();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["tasks"]["processed"], after.processed);
    assert!(json["tasks"]["success_rate"].as_f64().unwrap() > 0.0);
    assert!(json["cpu_workers"][0]["runs"].as_u64().unwrap() > 0);
    assert!(json["pools"][0]["queued_by_priority"].is_array());
}
