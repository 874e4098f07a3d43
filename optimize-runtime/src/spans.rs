//! One `tracing` span per managed call (docs/metrics.md, "Tracing"): named `optimize.call`,
//! target `optimize::call`, with the fields `fn`, `kind`, `outcome` and `tier` (the last two
//! recorded when the call ends). The body runs inside it — on the CPU pool too, and through
//! every io retry — so spans of the user's code are its children and `tracing-opentelemetry`
//! shows managed calls in traces.
//!
//! The level is set by `metrics.spans` (`debug` by default): a service whose subscriber is
//! at `info` creates no span, and a call then pays a few relaxed loads for it (the configured
//! level against the subscribers' most verbose one, when the call starts and when it ends).
//!
//! ```
//! use optimize_runtime::spans::{set_span_level, span_level, SpanLevel};
//!
//! set_span_level(SpanLevel::Info);
//! assert_eq!(span_level(), SpanLevel::Info);
//! set_span_level(SpanLevel::Debug);
//! ```

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

use tracing::field::Empty;
use tracing::{Level, Span};

use crate::stats::Outcome;

/// The level of the per-call spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SpanLevel {
    /// No spans.
    Off = 0,
    /// `trace`.
    Trace = 1,
    /// `debug` (the default).
    Debug = 2,
    /// `info`.
    Info = 3,
}

impl SpanLevel {
    /// Parses `off`, `trace`, `debug` or `info`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "off" => SpanLevel::Off,
            "trace" => SpanLevel::Trace,
            "debug" => SpanLevel::Debug,
            "info" => SpanLevel::Info,
            _ => return None,
        })
    }

    fn level(self) -> Option<Level> {
        match self {
            SpanLevel::Off => None,
            SpanLevel::Trace => Some(Level::TRACE),
            SpanLevel::Debug => Some(Level::DEBUG),
            SpanLevel::Info => Some(Level::INFO),
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(SpanLevel::Debug as u8);

/// Sets the level of the per-call spans (the `metrics.spans` key).
pub fn set_span_level(level: SpanLevel) {
    LEVEL.store(level as u8, Relaxed);
}

/// The level of the per-call spans.
#[inline]
pub fn span_level() -> SpanLevel {
    match LEVEL.load(Relaxed) {
        0 => SpanLevel::Off,
        1 => SpanLevel::Trace,
        3 => SpanLevel::Info,
        _ => SpanLevel::Debug,
    }
}

/// Whether a span at the configured level would be recorded by anyone: the configured level
/// against the most verbose level any subscriber wants (one relaxed load each).
#[inline(always)]
fn wanted() -> Option<Level> {
    let level = span_level().level()?;
    (level <= tracing::level_filters::LevelFilter::current()).then_some(level)
}

/// The span of one call of `path`, a `kind` function; disabled when nobody records it.
#[inline(always)]
pub(crate) fn call(path: &str, kind: &'static str) -> Span {
    match wanted() {
        None => Span::none(),
        Some(level) => new_call(level, path, kind),
    }
}

#[cold]
fn new_call(level: Level, path: &str, kind: &'static str) -> Span {
    match level {
        Level::INFO => {
            tracing::info_span!(target: "optimize::call", "optimize.call", r#fn = path, kind, outcome = Empty, tier = Empty)
        }
        Level::DEBUG => {
            tracing::debug_span!(target: "optimize::call", "optimize.call", r#fn = path, kind, outcome = Empty, tier = Empty)
        }
        _ => {
            tracing::trace_span!(target: "optimize::call", "optimize.call", r#fn = path, kind, outcome = Empty, tier = Empty)
        }
    }
}

/// Records how the current call ended on its span (and the tier that answered a hit).
#[inline(always)]
pub(crate) fn record_outcome(outcome: Outcome) {
    if wanted().is_some() {
        record_on_current(outcome);
    }
}

#[cold]
fn record_on_current(outcome: Outcome) {
    let span = Span::current();
    span.record("outcome", outcome.as_str());
    let tier = match outcome {
        Outcome::HitL1 => "l1",
        Outcome::HitL2 => "l2",
        Outcome::HitL3 => "l3",
        _ => return,
    };
    span.record("tier", tier);
}

/// `body` made to run inside the current span (the call's, or the caller's own) wherever
/// it runs: a pool thread.
#[inline]
pub(crate) fn carried<R>(body: impl FnOnce() -> R) -> impl FnOnce() -> R {
    let span = Span::current();
    move || span.in_scope(body)
}
