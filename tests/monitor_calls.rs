//! What each call leaves behind without a running monitor: tracing events (one per call at
//! debug, slow calls at info) and the recording levels.

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use optimize::stats::{set_recording, set_slow_call_threshold, Recording};

/// The tests share process-wide state (recording level, subscriber), so they run one by one.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

fn captured() -> &'static Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(|| {
        let c = Captured::default();
        let writer = c.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        c
    })
}

#[optimize::io]
fn traced(x: u32) -> u32 {
    x + 1
}

#[optimize::io(cache = false)]
fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn each_call_is_a_debug_event_and_slow_calls_are_info() {
    let _serial = serial();
    let log = captured();
    log.take();
    traced(1);
    traced(1);
    let text = log.take();
    let path = traced_cache().path();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(path)).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("DEBUG") && lines[0].contains("outcome=\"computed\""),
        "{text}"
    );
    assert!(lines[1].contains("outcome=\"hit_l1\""), "{text}");
    assert!(lines[0].contains("kind=\"io\""), "{text}");

    set_slow_call_threshold(Duration::from_millis(5));
    sleepy(20);
    sleepy(0);
    set_slow_call_threshold(Duration::from_secs(1));
    let text = log.take();
    let slow: Vec<&str> = text.lines().filter(|l| l.contains("slow call")).collect();
    assert_eq!(slow.len(), 1, "{text}");
    assert!(
        slow[0].contains(" INFO ") && slow[0].contains("outcome=\"executed\""),
        "{text}"
    );
}

#[optimize::io]
fn counted(x: u32) -> u32 {
    x
}

#[test]
fn recording_levels() {
    let _serial = serial();
    let site = || counted_cache();
    counted(0);
    site().reset_stats();

    set_recording(Recording::Off);
    counted(1);
    counted(1);
    assert_eq!(site().stats().calls(), 0, "off records nothing");

    set_recording(Recording::Counters);
    counted(2);
    counted(2);
    let s = site().stats();
    assert_eq!((s.calls(), s.hits()), (2, 1));
    assert_eq!(s.latency.count(), 0, "counters do not time");
    assert_eq!(s.total_time, Duration::ZERO);

    set_recording(Recording::Full);
    counted(3);
    assert_eq!(site().stats().latency.count(), 1);
}
