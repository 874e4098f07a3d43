//! Routing a managed function's body by its kind (docs/pools.md): the glue between a [`Site`]'s
//! options and the [`pool`](crate::pool)s. Generated code calls these; each takes the body
//! the attribute wrapped and decides where and when it runs.

use std::future::Future;

use crate::pool::io::{self, AttemptObserver, Attempts, IoGates, TimedOut};
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
            priority: self.admission_priority(),
        }
    }

    /// A sync io body run once: admitted by the io limits, under `block_in_place` on a
    /// multi-thread tokio worker.
    #[doc(hidden)]
    pub fn io_sync_once<R>(&self, body: impl FnOnce() -> R) -> R {
        if !self.settings.enabled {
            return body();
        }
        let mut body = Some(body);
        io::run_sync(self.io_gates(), Attempts::default(), None, self, || {
            (body.take().expect("retries are off, so the body runs once"))()
        })
    }

    /// A sync io body retried while `should_retry` says so.
    #[doc(hidden)]
    pub fn io_sync<R>(&self, should_retry: fn(&R) -> bool, mut attempt: impl FnMut() -> R) -> R {
        if !self.settings.enabled {
            return attempt();
        }
        io::run_sync(
            self.io_gates(),
            self.settings.attempts,
            Some(should_retry),
            self,
            attempt,
        )
    }

    /// An async io body run once, within the timeout when there is one.
    #[doc(hidden)]
    pub async fn io_async_once<R>(
        &self,
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
            Some(should_retry),
            self,
            attempt,
        )
        .await
    }

    /// A sync cpu body: run on the CPU pool while the caller blocks; in place on a pool
    /// thread.
    #[doc(hidden)]
    pub fn cpu_sync<R: Send>(&self, body: impl FnOnce() -> R + Send) -> R {
        if !self.settings.enabled {
            return body();
        }
        self.env.pools.cpu().run(self.admission_priority(), body)
    }

    /// An async cpu body with owned arguments: run on the CPU pool while the caller's task
    /// awaits without holding its worker.
    #[doc(hidden)]
    pub async fn cpu_async<R: Send + 'static>(
        &self,
        body: impl FnOnce() -> R + Send + 'static,
    ) -> R {
        if !self.settings.enabled {
            return body();
        }
        self.env
            .pools
            .cpu()
            .run_async(self.admission_priority(), body)
            .await
    }

    /// An async cpu body that borrows its arguments: it cannot outlive the call, so the
    /// caller's thread waits for it (under `block_in_place` on a multi-thread runtime).
    #[doc(hidden)]
    pub async fn cpu_async_borrowed<R: Send>(&self, body: impl FnOnce() -> R + Send) -> R {
        self.cpu_sync(body)
    }

    /// A sync memory body: run in place once the memory budget admits it.
    #[doc(hidden)]
    pub fn memory_sync<R>(&self, body: impl FnOnce() -> R) -> R {
        if !self.settings.enabled {
            return body();
        }
        self.env
            .pools
            .memory()
            .run(Some(self.settings.mem), self.admission_priority(), body)
    }

    /// An async memory body: awaited once the memory budget admits it.
    #[doc(hidden)]
    pub async fn memory_async<F: Future>(&self, body: F) -> F::Output {
        if !self.settings.enabled {
            return body.await;
        }
        self.env
            .pools
            .memory()
            .run_async(Some(self.settings.mem), self.admission_priority(), body)
            .await
    }
}
