//! io routing: bodies run in the caller's task (async) or thread (sync), limited globally and
//! per function, with per-attempt timeouts and retries of `Err` results.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::adaptive::AdaptiveLimit;
use super::gate::{Gate, Permit, Refused};
use super::{blocking, chain, Priority, Rejected};
use crate::meta::Kind;

/// The global io limit.
#[derive(Debug)]
pub struct IoPool {
    gate: Arc<Gate>,
    adaptive: Option<AdaptiveLimit>,
}

impl IoPool {
    /// A limit of `concurrency` io calls at once.
    pub fn new(concurrency: u64) -> Self {
        Self {
            gate: Gate::new(concurrency),
            adaptive: None,
        }
    }

    /// A limit that follows the calls' latency, between 1 and `max` io calls at once
    /// (`pools.io_adaptive`).
    pub fn adaptive(max: u64) -> Self {
        let gate = Gate::new(AdaptiveLimit::initial(1, max));
        Self {
            adaptive: Some(AdaptiveLimit::new(gate.clone(), 1, max)),
            gate,
        }
    }

    /// The admission gate.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// The adaptive limit, when the pool has one.
    pub fn adaptive_limit(&self) -> Option<&AdaptiveLimit> {
        self.adaptive.as_ref()
    }
}

/// A managed call did not finish within its `timeout`.
///
/// A function with `timeout = "..."` returns it through its error type, which must implement
/// `From<TimedOut>` (`std::io::Error`, `Box<dyn Error + Send + Sync>` and `anyhow::Error`
/// already do); an `Option` function returns `None`.
///
/// ```
/// use std::time::Duration;
/// use optimize_runtime::pool::io::TimedOut;
///
/// let e = TimedOut { function: "app::fetch".into(), after: Duration::from_secs(2) };
/// assert_eq!(e.to_string(), "`app::fetch` timed out after 2s");
/// let io: std::io::Error = e.into();
/// assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{function}` timed out after {}", humantime::format_duration(*.after))]
pub struct TimedOut {
    /// The managed function's path.
    pub function: String,
    /// The timeout that elapsed.
    pub after: Duration,
}

impl From<TimedOut> for std::io::Error {
    fn from(e: TimedOut) -> Self {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }
}

/// A return type that can report a timeout: `Result<T, E>` with `E: From<TimedOut>`
/// (returns `Err`), or `Option<T>` (returns `None`).
#[diagnostic::on_unimplemented(
    message = "`timeout` needs a return type that can report it; `{Self}` cannot",
    label = "a timed-out call must return something of this type",
    note = "return `Result<T, E>` where `E: From<optimize::TimedOut>` (e.g. `std::io::Error`, `Box<dyn Error + Send + Sync>`, `anyhow::Error`), or `Option<T>`"
)]
pub trait TimeoutOutput: Sized {
    /// The value a timed-out call returns.
    fn timed_out(e: TimedOut) -> Self;
}

impl<T, E: From<TimedOut>> TimeoutOutput for Result<T, E> {
    fn timed_out(e: TimedOut) -> Self {
        Err(E::from(e))
    }
}

impl<T> TimeoutOutput for Option<T> {
    fn timed_out(_: TimedOut) -> Self {
        None
    }
}

/// A return type whose failures can be retried: `Result<T, E>`, retried on `Err`.
#[diagnostic::on_unimplemented(
    message = "`retries` needs a `Result` return type; `{Self}` has no `Err` to retry on",
    label = "retries happen when this is an `Err`",
    note = "return `Result<T, E>`, or remove `retries`"
)]
pub trait RetryOutput {
    /// Whether this output is a failure worth another attempt.
    fn should_retry(&self) -> bool;
}

impl<T, E> RetryOutput for Result<T, E> {
    fn should_retry(&self) -> bool {
        self.is_err()
    }
}

/// How a function's attempts are run: its limits, timeout and retries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attempts {
    /// Per-attempt deadline.
    pub timeout: Option<Duration>,
    /// Extra attempts after an `Err`.
    pub retries: u32,
    /// First backoff; doubled each retry, capped at [`Attempts::MAX_BACKOFF`], with full
    /// jitter (a uniform draw between zero and the cap).
    pub backoff: Duration,
}

impl Attempts {
    /// Backoff used when a function sets `retries` without `backoff`.
    pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(100);
    /// Upper bound of one backoff.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

    /// The delay before retry number `retry` (1-based): uniform in `[0, min(cap, base·2^(retry-1))]`.
    pub fn backoff_before(&self, retry: u32) -> Duration {
        let base = if self.backoff.is_zero() {
            Self::DEFAULT_BACKOFF
        } else {
            self.backoff
        };
        let ceiling = base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(Self::MAX_BACKOFF);
        let nanos = ceiling.as_nanos() as u64;
        Duration::from_nanos(rand::random_range(0..=nanos))
    }
}

/// What a caller learns about each attempt (to count timeouts and retries).
pub trait AttemptObserver {
    /// An attempt hit its deadline.
    fn timed_out(&self) {}
    /// A failed attempt is about to be retried.
    fn retrying(&self, _retry: u32) {}
}

impl AttemptObserver for () {}

/// The gates an io call passes: the function's own limit, then the global one.
#[derive(Clone, Copy, Debug)]
pub struct IoGates<'a> {
    /// The global io limit.
    pub global: &'a Arc<Gate>,
    /// The function's `concurrency` limit, if any.
    pub local: Option<&'a Arc<Gate>>,
    /// The function's limit's adaptation, when it is `"adaptive"`.
    pub local_adaptive: Option<&'a AdaptiveLimit>,
    /// The io pool's, when `pools.io_adaptive` is on.
    pub global_adaptive: Option<&'a AdaptiveLimit>,
    /// Where the call queues when a limit is reached.
    pub priority: Priority,
}

/// The permits of an admitted io attempt (none for a nested call, which runs under its
/// chain's admission).
type Admitted = (Option<Permit>, Option<Permit>);

/// When an admitted attempt started, for the adaptive limits (`None`: no limit adapts).
/// Kept small: it lives in every io call's future.
type Timing = Option<tokio::time::Instant>;

impl IoGates<'_> {
    /// Starts timing an admitted attempt, if a limit adapts (and the attempt was admitted
    /// here, not nested under its chain's admission).
    fn time(&self, admitted: &Admitted) -> Timing {
        let adapts = (self.local_adaptive.is_some() && admitted.0.is_some())
            || (self.global_adaptive.is_some() && admitted.1.is_some());
        adapts.then(tokio::time::Instant::now)
    }

    /// Tells the adaptive limits how the attempt went (how busy each gate is as it ends
    /// stands for how busy it was while it ran).
    fn learn(&self, timing: Timing, timed_out: bool) {
        let Some(start) = timing else {
            return;
        };
        let took = start.elapsed();
        if let (Some(l), Some(g)) = (self.local_adaptive, self.local) {
            l.sample(took, g.active(), timed_out);
        }
        if let Some(l) = self.global_adaptive {
            l.sample(took, self.global.active(), timed_out);
        }
    }

    /// What a full queue answers: which limit it was.
    fn rejected(&self, gate: &Gate, local: bool) -> Rejected {
        Rejected {
            function: String::new(),
            pool: if local {
                "concurrency limit"
            } else {
                "io pool"
            },
            queue_capacity: gate.queue_capacity().unwrap_or(0),
        }
    }

    /// Admits an attempt, blocking: the narrow limit first, so a call queued behind a
    /// saturated function holds nothing that unrelated calls need. A closed gate (shutdown)
    /// still lets the call run: it never fails the caller. `bounded`: a full queue refuses.
    fn admit_blocking(&self, bounded: bool) -> Result<Admitted, Rejected> {
        if !chain::needs_admission(Kind::Io) {
            return Ok((None, None));
        }
        let ask = |gate: &Arc<Gate>| match bounded {
            true => gate.acquire_blocking_within_bound(1, self.priority),
            false => gate
                .acquire_blocking(1, self.priority)
                .map_err(|_| Refused::Closed),
        };
        let local = match self.local.map(|g| (g, ask(g))) {
            Some((g, Err(Refused::Full))) => return Err(self.rejected(g, true)),
            Some((_, admitted)) => admitted.ok(),
            None => None,
        };
        let global = match ask(self.global) {
            Err(Refused::Full) => return Err(self.rejected(self.global, false)),
            admitted => admitted.ok(),
        };
        Ok((local, global))
    }

    /// The admission of an async call when it is free now (or not needed): no future is
    /// involved, so a call admitted at once keeps its future small (recursive async
    /// functions nest them); `None` means it must queue ([`IoGates::admit_queued`], boxed).
    fn admit_now(&self) -> Option<Admitted> {
        if !chain::needs_admission(Kind::Io) {
            return Some((None, None));
        }
        let local = match self.local {
            Some(g) => Some(g.try_acquire(1)?),
            None => None,
        };
        Some((local, Some(self.global.try_acquire(1)?)))
    }

    /// Queues for admission; `Err(local)` when a full queue refused it (which one: a small
    /// value, since it is held across the await).
    async fn admit_queued(&self, bounded: bool) -> Result<Admitted, bool> {
        let priority = self.priority;
        async fn ask(
            gate: &Arc<Gate>,
            priority: Priority,
            bounded: bool,
        ) -> Result<Permit, Refused> {
            match bounded {
                true => gate.acquire_within_bound(1, priority).await,
                false => gate.acquire(1, priority).await.map_err(|_| Refused::Closed),
            }
        }
        let local = match self.local {
            Some(g) => match ask(g, priority, bounded).await {
                Err(Refused::Full) => return Err(true),
                admitted => admitted.ok(),
            },
            None => None,
        };
        let global = match ask(self.global, priority, bounded).await {
            Err(Refused::Full) => return Err(false),
            admitted => admitted.ok(),
        };
        Ok((local, global))
    }

    /// The rejection of a call refused by the function's own limit (`local`) or the pool's.
    fn refused(&self, local: bool) -> Rejected {
        match (local, self.local) {
            (true, Some(g)) => self.rejected(g, true),
            _ => self.rejected(self.global, false),
        }
    }
}

/// Runs an async io call: each attempt is admitted by the gates, bounded by the timeout, and
/// retried with backoff while `should_retry` says so. `attempt` makes a fresh future per
/// attempt. Timers need a tokio runtime with time enabled when a timeout or retries are set.
#[allow(clippy::too_many_arguments)] // each is one independent choice of the call's
pub async fn run_async<R, Fut>(
    gates: IoGates<'_>,
    attempts: Attempts,
    function: &str,
    on_timeout: Option<fn(TimedOut) -> R>,
    on_rejected: Option<impl FnOnce(Rejected) -> R>,
    should_retry: Option<fn(&R) -> bool>,
    observer: &impl AttemptObserver,
    mut attempt: impl FnMut() -> Fut,
) -> R
where
    Fut: Future<Output = R>,
{
    let mut on_rejected = on_rejected;
    let mut retry = 0;
    loop {
        let out = {
            let admission = match gates.admit_now() {
                Some(admitted) => Ok(admitted),
                None => Box::pin(gates.admit_queued(on_rejected.is_some())).await,
            };
            let admitted = match admission {
                Ok(admitted) => admitted,
                Err(local) => match on_rejected.take() {
                    Some(reject) => return reject(gates.refused(local)),
                    None => unreachable!("only a bounded admission is refused"),
                },
            };
            let timing = gates.time(&admitted);
            chain::admitted(Kind::Io);
            let attempt = chain::InChain::new(Kind::Io, attempt());
            let (out, timed_out) = match (attempts.timeout, on_timeout) {
                (Some(after), Some(on_timeout)) => {
                    match tokio::time::timeout(after, attempt).await {
                        Ok(out) => (out, false),
                        Err(_) => {
                            observer.timed_out();
                            let out = on_timeout(TimedOut {
                                function: function.to_owned(),
                                after,
                            });
                            (out, true)
                        }
                    }
                }
                _ => (attempt.await, false),
            };
            gates.learn(timing, timed_out);
            drop(admitted);
            out
        };
        match should_retry {
            Some(failed) if retry < attempts.retries && failed(&out) => {
                retry += 1;
                observer.retrying(retry);
                tokio::time::sleep(attempts.backoff_before(retry)).await;
            }
            _ => return out,
        }
    }
}

/// Runs a sync io call: under `block_in_place` on a multi-thread tokio worker, in place
/// elsewhere; admitted by the gates and retried like [`run_async`]. Sync bodies cannot be
/// interrupted, so they have no timeout.
pub fn run_sync<R>(
    gates: IoGates<'_>,
    attempts: Attempts,
    on_rejected: Option<impl FnOnce(Rejected) -> R>,
    should_retry: Option<fn(&R) -> bool>,
    observer: &impl AttemptObserver,
    mut attempt: impl FnMut() -> R,
) -> R {
    let mut on_rejected = on_rejected;
    blocking(|| {
        let mut retry = 0;
        loop {
            let out = {
                let admitted = match gates.admit_blocking(on_rejected.is_some()) {
                    Ok(admitted) => admitted,
                    Err(rejected) => match on_rejected.take() {
                        Some(reject) => return reject(rejected),
                        None => unreachable!("only a bounded admission is refused"),
                    },
                };
                let timing = gates.time(&admitted);
                chain::admitted(Kind::Io);
                let out = {
                    let _chain = chain::Scope::enter(Kind::Io, 0);
                    attempt()
                };
                gates.learn(timing, false);
                drop(admitted);
                out
            };
            match should_retry {
                Some(failed) if retry < attempts.retries && failed(&out) => {
                    retry += 1;
                    observer.retrying(retry);
                    std::thread::sleep(attempts.backoff_before(retry));
                }
                _ => return out,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_rejection<R>() -> Option<fn(Rejected) -> R> {
        None
    }
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

    fn gates(global: &Arc<Gate>) -> IoGates<'_> {
        IoGates {
            global,
            local: None,
            local_adaptive: None,
            global_adaptive: None,
            priority: Priority::Normal,
        }
    }

    #[test]
    fn backoff_grows_and_stays_within_its_ceiling() {
        let a = Attempts {
            timeout: None,
            retries: 10,
            backoff: Duration::from_millis(10),
        };
        for retry in 1..=12 {
            let ceiling =
                (Duration::from_millis(10) * (1 << (retry - 1))).min(Attempts::MAX_BACKOFF);
            for _ in 0..50 {
                assert!(a.backoff_before(retry) <= ceiling);
            }
        }
        // Jitter: not every draw is the same.
        let draws: std::collections::HashSet<_> = (0..20).map(|_| a.backoff_before(5)).collect();
        assert!(draws.len() > 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_err_until_ok_and_stops_at_the_limit() {
        let global = Gate::new(4);
        let calls = AtomicU32::new(0);
        let attempts = Attempts {
            timeout: None,
            retries: 3,
            backoff: Duration::from_millis(5),
        };
        let out: Result<u32, String> = run_async(
            gates(&global),
            attempts,
            "f",
            None,
            no_rejection(),
            Some(Result::is_err),
            &(),
            || {
                let n = calls.fetch_add(1, SeqCst);
                async move {
                    if n < 2 {
                        Err(format!("fail {n}"))
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(out, Ok(2));
        assert_eq!(calls.swap(0, SeqCst), 3);

        let out: Result<u32, String> = run_async(
            gates(&global),
            attempts,
            "f",
            None,
            no_rejection(),
            Some(Result::is_err),
            &(),
            || {
                calls.fetch_add(1, SeqCst);
                async { Err("always".to_owned()) }
            },
        )
        .await;
        assert_eq!(out, Err("always".to_owned()));
        assert_eq!(calls.load(SeqCst), 4, "one attempt plus three retries");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_becomes_the_declared_error_and_is_retried() {
        let global = Gate::new(4);
        let calls = AtomicU32::new(0);
        let out: Result<u32, std::io::Error> = run_async(
            gates(&global),
            Attempts {
                timeout: Some(Duration::from_millis(50)),
                retries: 1,
                backoff: Duration::from_millis(1),
            },
            "app::slow",
            Some(<Result<u32, std::io::Error> as TimeoutOutput>::timed_out),
            no_rejection(),
            Some(Result::is_err),
            &(),
            || {
                let n = calls.fetch_add(1, SeqCst);
                async move {
                    if n == 0 {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                    Ok(n)
                }
            },
        )
        .await;
        assert_eq!(out.unwrap(), 1, "the second attempt succeeded");

        let out: Option<u32> = run_async(
            gates(&global),
            Attempts {
                timeout: Some(Duration::from_millis(50)),
                ..Attempts::default()
            },
            "app::slow",
            Some(<Option<u32> as TimeoutOutput>::timed_out),
            no_rejection(),
            None,
            &(),
            || async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Some(1)
            },
        )
        .await;
        assert_eq!(out, None);
    }

    #[test]
    fn sync_calls_respect_the_function_limit() {
        let global = Gate::new(100);
        let local = Gate::new(2);
        let running = Arc::new(AtomicU32::new(0));
        let peak = Arc::new(AtomicU32::new(0));
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    run_sync(
                        IoGates {
                            global: &global,
                            local: Some(&local),
                            local_adaptive: None,
                            global_adaptive: None,
                            priority: Priority::Normal,
                        },
                        Attempts::default(),
                        no_rejection(),
                        None,
                        &(),
                        || {
                            let now = running.fetch_add(1, SeqCst) + 1;
                            peak.fetch_max(now, SeqCst);
                            std::thread::sleep(Duration::from_millis(5));
                            running.fetch_sub(1, SeqCst);
                        },
                    )
                });
            }
        });
        assert!(peak.load(SeqCst) <= 2);
        assert_eq!(local.stats().completed, 6);
    }
}
