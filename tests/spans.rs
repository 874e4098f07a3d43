//! One `tracing` span per managed call, with `fn`, `kind`, `outcome` and `tier`, that the
//! body runs inside: on the CPU pool, through io retries, and in tasks; none when
//! `metrics.spans` is off.

#[path = "support/bounded.rs"]
mod bounded;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use optimize::spans::{set_span_level, SpanLevel};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

#[derive(Clone, Debug, Default)]
struct SpanSeen {
    name: String,
    fields: BTreeMap<String, String>,
    parent: Option<u64>,
}

#[derive(Default)]
struct Seen {
    spans: BTreeMap<u64, SpanSeen>,
    /// Each event's message and the `optimize.call` span it happened in.
    events: Vec<(String, Option<u64>)>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

struct Recorder(Arc<Mutex<Seen>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut seen = SpanSeen {
            name: attrs.metadata().name().to_owned(),
            parent: ctx
                .span(id)
                .and_then(|s| s.parent())
                .map(|p| p.id().into_u64()),
            ..Default::default()
        };
        attrs.record(&mut Fields(&mut seen.fields));
        self.0.lock().unwrap().spans.insert(id.into_u64(), seen);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(span) = self.0.lock().unwrap().spans.get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let Some(message) = fields.remove("message") else {
            return;
        };
        let call = ctx.event_scope(event).and_then(|scope| {
            scope
                .into_iter()
                .find(|s| s.name() == "optimize.call")
                .map(|s| s.id().into_u64())
        });
        self.0.lock().unwrap().events.push((message, call));
    }
}

/// The recorder, installed once as the global subscriber (pool threads see it too), and a
/// lock that runs this file's tests one at a time (one changes the span level).
fn seen() -> (MutexGuard<'static, ()>, Arc<Mutex<Seen>>) {
    static SEEN: OnceLock<Arc<Mutex<Seen>>> = OnceLock::new();
    static ONE: Mutex<()> = Mutex::new(());
    let seen = SEEN
        .get_or_init(|| {
            let seen = Arc::new(Mutex::new(Seen::default()));
            let subscriber = tracing_subscriber::registry().with(Recorder(seen.clone()));
            tracing::subscriber::set_global_default(subscriber).unwrap();
            seen
        })
        .clone();
    (ONE.lock().unwrap_or_else(|e| e.into_inner()), seen)
}

/// The `optimize.call` span an event with `message` happened in.
fn span_of(seen: &Arc<Mutex<Seen>>, message: &str) -> SpanSeen {
    let seen = seen.lock().unwrap();
    let (_, id) = seen
        .events
        .iter()
        .find(|(m, _)| m == message)
        .unwrap_or_else(|| panic!("no event {message:?}"));
    let id = id.unwrap_or_else(|| panic!("event {message:?} is in no optimize.call span"));
    seen.spans[&id].clone()
}

/// The spans of `path`'s calls, in creation order.
fn calls_of(seen: &Arc<Mutex<Seen>>, path: &str) -> Vec<SpanSeen> {
    seen.lock()
        .unwrap()
        .spans
        .values()
        .filter(|s| {
            s.name == "optimize.call" && s.fields.get("fn").map(String::as_str) == Some(path)
        })
        .cloned()
        .collect()
}

#[optimize::io(ttl = "1m")]
fn lookup(id: u32) -> u32 {
    tracing::info!("lookup body {id}");
    id + 1
}

#[optimize::cpu(ttl = "1m")]
fn crunch(n: u64) -> u64 {
    tracing::info!("crunch body on {:?}", std::thread::current().name());
    (0..n).sum()
}

static FLAKY: AtomicU32 = AtomicU32::new(0);

#[optimize::io(retries = 2, backoff = "1ms", cache = false)]
async fn flaky(id: u32) -> Result<u32, String> {
    let attempt = FLAKY.fetch_add(1, SeqCst);
    tracing::info!("flaky attempt {attempt}");
    if attempt == 0 {
        Err("first attempt fails".into())
    } else {
        Ok(id)
    }
}

#[optimize::io(ttl = "1m")]
fn quiet(id: u32) -> u32 {
    tracing::info!("quiet body");
    id
}

#[test]
fn a_sync_call_has_a_span_its_body_runs_in() {
    let (_one, seen) = seen();
    let path = lookup_cache().path().to_owned();
    assert_eq!(bounded::within("lookup", || lookup(7)), 8);
    let span = span_of(&seen, "lookup body 7");
    assert_eq!(span.fields["fn"], path);
    assert_eq!(span.fields["kind"], "io");
    assert_eq!(span.fields["outcome"], "computed");
    assert!(!span.fields.contains_key("tier"), "{span:?}");

    assert_eq!(bounded::within("lookup hit", || lookup(7)), 8);
    let calls = calls_of(&seen, &path);
    assert_eq!(calls.len(), 2, "one span per call: {calls:?}");
    assert_eq!(calls[1].fields["outcome"], "hit_l1");
    assert_eq!(calls[1].fields["tier"], "l1");
}

#[test]
fn a_cpu_body_runs_in_the_span_on_the_pool_thread() {
    let (_one, seen) = seen();
    assert_eq!(bounded::within("crunch", || crunch(10)), 45);
    let seen_lock = seen.lock().unwrap();
    let (message, id) = seen_lock
        .events
        .iter()
        .find(|(m, _)| m.starts_with("crunch body"))
        .cloned()
        .expect("the body's event");
    drop(seen_lock);
    assert!(
        message.contains("optimize-cpu"),
        "ran on a pool thread: {message}"
    );
    let span = seen.lock().unwrap().spans[&id.expect("inside the call's span")].clone();
    assert_eq!(span.fields["kind"], "cpu");
    assert_eq!(span.fields["outcome"], "computed");
}

#[test]
fn io_retries_run_in_one_span() {
    let (_one, seen) = seen();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let out = runtime.block_on(bounded::within_async("flaky", async {
        let parent = tracing::info_span!("request");
        tracing::Instrument::instrument(flaky(3), parent).await
    }));
    assert_eq!(out, Ok(3));
    let first = span_of(&seen, "flaky attempt 0");
    let second = span_of(&seen, "flaky attempt 1");
    assert_eq!(first.fields, second.fields, "both attempts in one span");
    assert_eq!(first.fields["outcome"], "executed");
    let parent = first.parent.expect("the caller's span is its parent");
    assert_eq!(seen.lock().unwrap().spans[&parent].name, "request");
}

#[test]
fn a_task_runs_in_the_submitters_span() {
    let (_one, seen) = seen();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let out = runtime.block_on(bounded::within_async("task", async {
        let submitter = tracing::info_span!("submitter");
        let handle = submitter.in_scope(|| {
            optimize::task::Task::cpu().spawn(|| {
                tracing::info!("task body");
                Ok::<_, String>(lookup(41))
            })
        });
        handle.join().await
    }));
    drop(runtime);
    assert_eq!(out.unwrap(), 42);
    let seen_lock = seen.lock().unwrap();
    let (_, call) = seen_lock
        .events
        .iter()
        .find(|(m, _)| m == "lookup body 41")
        .cloned()
        .unwrap();
    let call = &seen_lock.spans[&call.unwrap()];
    let parent = &seen_lock.spans[&call.parent.expect("the call has a parent")];
    assert_eq!(
        parent.name, "submitter",
        "the task carried its submitter's span"
    );
}

#[test]
fn no_spans_when_turned_off() {
    let (_one, seen) = seen();
    set_span_level(SpanLevel::Off);
    let out = bounded::within("quiet", || quiet(5));
    set_span_level(SpanLevel::Debug);
    assert_eq!(out, 5);
    let seen = seen.lock().unwrap();
    let (_, span) = seen.events.iter().find(|(m, _)| m == "quiet body").unwrap();
    assert_eq!(*span, None, "no optimize.call span");
}
