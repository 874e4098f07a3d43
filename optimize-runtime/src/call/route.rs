//! Routing a managed function's body by its kind (docs/pools.md): the glue between a [`Site`]'s
//! options and the [`pool`](crate::pool)s. Generated code calls these; each takes the body
//! the attribute wrapped and decides where and when it runs.

use std::cell::Cell;
use std::future::Future;

use crate::pool::io::{self, AttemptObserver, Attempts, IoGates, TimedOut};
use crate::pool::Rejected;
use crate::site::Site;

impl AttemptObserver for Site {
    fn timed_out(&self) {
        self.recorder.record_timeout();
        tracing::info!(function = %self.path, "optimize: attempt timed out");
    }
    fn retrying(&self, retry: u32) {
        self.recorder.record_retry();
        tracing::debug!(function = %self.path, retry, "optimize: retrying after an error");
    }
}

impl Site {
    /// The priority this call waits for admission with: the function's, or the lowest for a
    /// warming, prefetch or background refresh, which nobody is waiting for.
    fn admission_priority(&self) -> crate::meta::Priority {
        if crate::warm::behind_callers() {
            crate::meta::Priority::Batch
        } else {
            self.settings.priority
        }
    }

    fn io_gates(&self) -> IoGates<'_> {
        IoGates {
            global: self.env.pools.io().gate(),
            local: self.concurrency.as_ref(),
            local_adaptive: self.adaptive.as_ref(),
            global_adaptive: self.env.pools.io().adaptive_limit(),
            priority: self.admission_priority(),
        }
    }

    /// How a call refused by a full queue answers: `on_rejected` (from the return type, see
    /// [`RejectProbe`](crate::pool::RejectProbe)) with this function's name, the refusal
    /// noted for the call's outcome. `None` (a type that cannot say it): the call waits.
    fn rejecting<'s, R: 's>(
        &'s self,
        on_rejected: Option<fn(Rejected) -> R>,
    ) -> Option<impl FnOnce(Rejected) -> R + 's> {
        on_rejected.map(|answer| {
            move |rejected: Rejected| {
                REJECTED.with(|r| r.set(true));
                tracing::debug!(r#fn = %self.path, pool = rejected.pool, "optimize: call rejected, the queue is full");
                answer(Rejected {
                    function: self.path.clone(),
                    ..rejected
                })
            }
        })
    }

    /// A sync io body run once: admitted by the io limits, under `block_in_place` on a
    /// multi-thread tokio worker.
    #[doc(hidden)]
    #[inline]
    pub fn io_sync_once<R>(
        &self,
        on_rejected: Option<fn(Rejected) -> R>,
        body: impl FnOnce() -> R,
    ) -> R {
        if !self.settings.enabled {
            return body();
        }
        // Retries are off, so the body runs once.
        self.io_sync_attempts(
            on_rejected,
            Attempts::default(),
            None,
            &mut super::once(body),
        )
    }

    /// A sync io body retried while `should_retry` says so.
    #[doc(hidden)]
    #[inline]
    pub fn io_sync<R>(
        &self,
        on_rejected: Option<fn(Rejected) -> R>,
        should_retry: fn(&R) -> bool,
        mut attempt: impl FnMut() -> R,
    ) -> R {
        if !self.settings.enabled {
            return attempt();
        }
        self.io_sync_attempts(
            on_rejected,
            self.settings.attempts,
            Some(should_retry),
            &mut attempt,
        )
    }

    /// The sync io route past the wrapper, compiled once per return type (the body behind a
    /// `dyn`, as in the call engine's `Body`).
    fn io_sync_attempts<R>(
        &self,
        on_rejected: Option<fn(Rejected) -> R>,
        attempts: Attempts,
        should_retry: Option<fn(&R) -> bool>,
        attempt: &mut dyn FnMut() -> R,
    ) -> R {
        io::run_sync(
            self.io_gates(),
            attempts,
            self.rejecting(on_rejected),
            should_retry,
            self,
            attempt,
        )
    }

    /// An async io body run once, within the timeout when there is one.
    #[doc(hidden)]
    pub async fn io_async_once<R>(
        &self,
        on_rejected: Option<fn(Rejected) -> R>,
        on_timeout: Option<fn(TimedOut) -> R>,
        body: impl Future<Output = R>,
    ) -> R {
        if !self.settings.enabled {
            return body.await;
        }
        let mut body = Some(body);
        let attempts = Attempts {
            retries: 0,
            ..self.settings.attempts
        };
        io::run_async(
            self.io_gates(),
            attempts,
            &self.path,
            on_timeout,
            self.rejecting(on_rejected),
            None,
            self,
            || body.take().expect("retries are off, so the body runs once"),
        )
        .await
    }

    /// An async io body, a fresh future per attempt, retried while `should_retry` says so.
    #[doc(hidden)]
    pub async fn io_async<R, Fut: Future<Output = R>>(
        &self,
        on_rejected: Option<fn(Rejected) -> R>,
        on_timeout: Option<fn(TimedOut) -> R>,
        should_retry: fn(&R) -> bool,
        mut attempt: impl FnMut() -> Fut,
    ) -> R {
        if !self.settings.enabled {
            return attempt().await;
        }
        io::run_async(
            self.io_gates(),
            self.settings.attempts,
            &self.path,
            on_timeout,
            self.rejecting(on_rejected),
            Some(should_retry),
            self,
            attempt,
        )
        .await
    }

    /// A sync cpu body: run on the CPU pool while the caller blocks; in place on a pool
    /// thread.
    #[doc(hidden)]
    #[inline]
    pub fn cpu_sync<R: Send>(
        &self,
        on_rejected: Option<fn(Rejected) -> R>,
        body: impl FnOnce() -> R + Send,
    ) -> R {
        if !self.settings.enabled {
            return body();
        }
        self.cpu_sync_erased(on_rejected, &mut super::once(crate::spans::carried(body)))
    }

    /// [`Site::cpu_sync`] past the wrapper, compiled once per return type.
    fn cpu_sync_erased<R: Send>(
        &self,
        on_rejected: Option<fn(Rejected) -> R>,
        body: &mut (dyn FnMut() -> R + Send),
    ) -> R {
        self.env.pools.cpu().run_or_reject(
            self.admission_priority(),
            self.rejecting(on_rejected),
            body,
        )
    }

    /// An async cpu body with owned arguments: run on the CPU pool while the caller's task
    /// awaits without holding its worker.
    #[doc(hidden)]
    pub async fn cpu_async<R: Send + 'static>(
        &self,
        on_rejected: Option<fn(Rejected) -> R>,
        body: impl FnOnce() -> R + Send + 'static,
    ) -> R {
        if !self.settings.enabled {
            return body();
        }
        self.env
            .pools
            .cpu()
            .run_async_or_reject(
                self.admission_priority(),
                self.rejecting(on_rejected),
                crate::spans::carried(body),
            )
            .await
    }

    /// An async cpu body that borrows its arguments: it cannot outlive the call, so the
    /// caller's thread waits for it (under `block_in_place` on a multi-thread runtime).
    #[doc(hidden)]
    pub async fn cpu_async_borrowed<R: Send>(
        &self,
        on_rejected: Option<fn(Rejected) -> R>,
        body: impl FnOnce() -> R + Send,
    ) -> R {
        self.cpu_sync(on_rejected, body)
    }

    /// A sync memory body: run in place once the memory budget admits it.
    #[doc(hidden)]
    #[inline]
    pub fn memory_sync<R>(
        &self,
        on_rejected: Option<fn(Rejected) -> R>,
        body: impl FnOnce() -> R,
    ) -> R {
        if !self.settings.enabled {
            return body();
        }
        self.memory_sync_erased(on_rejected, &mut super::once(body))
    }

    /// [`Site::memory_sync`] past the wrapper, compiled once per return type.
    fn memory_sync_erased<R>(
        &self,
        on_rejected: Option<fn(Rejected) -> R>,
        body: &mut dyn FnMut() -> R,
    ) -> R {
        self.env.pools.memory().run_or_reject(
            Some(self.settings.mem),
            self.admission_priority(),
            self.rejecting(on_rejected),
            body,
        )
    }

    /// An async memory body: awaited once the memory budget admits it.
    #[doc(hidden)]
    pub async fn memory_async<F: Future>(
        &self,
        on_rejected: Option<fn(Rejected) -> F::Output>,
        body: F,
    ) -> F::Output {
        if !self.settings.enabled {
            return body.await;
        }
        self.env
            .pools
            .memory()
            .run_async_or_reject(
                Some(self.settings.mem),
                self.admission_priority(),
                self.rejecting(on_rejected),
                body,
            )
            .await
    }
}

thread_local! {
    /// Set when this thread's call was refused by a full queue, until the call engine
    /// records the call's outcome.
    static REJECTED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the call that just finished on this thread was rejected (and forgets it). The
/// rejection and the recording happen in one poll of the call, so on one thread.
pub(crate) fn take_rejected() -> bool {
    REJECTED.with(|r| r.replace(false))
}
