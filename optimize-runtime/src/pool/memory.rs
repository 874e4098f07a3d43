//! The memory budget: `memory` calls are admitted by weight (bytes) against a budget, and wait
//! while system memory use is above a threshold.
//!
//! A sampler thread reads system memory with sysinfo on an interval. Above the threshold the
//! budget holds new admissions (while anything is admitted: an idle budget still admits one
//! call, so a process squeezed by others keeps making progress) and expired L1 entries are
//! purged. A memory call made inside an admitted memory or cpu body (same thread, or polled by
//! the same admitted future) runs without a second admission: it does not wait on the budget
//! its caller already holds (rule 1 of [`super::chain`]).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::gate::{Gate, Refused};
use super::{blocking, chain, PoolConfig, Priority, PurgeHook, Rejected};
use crate::meta::Kind;

/// The memory budget. See the module documentation.
pub struct MemoryBudget {
    gate: Arc<Gate>,
    threshold: f64,
    default_weight: u64,
    /// Last sampled system memory use (f64 bits), 0..1.
    pressure: AtomicU64,
    /// Frees expired cache entries under pressure (given by the layer above).
    purge: Option<PurgeHook>,
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("gate", &self.gate)
            .field("threshold", &self.threshold)
            .field("default_weight", &self.default_weight)
            .field("pressure", &self.pressure())
            .finish_non_exhaustive()
    }
}

impl MemoryBudget {
    /// A budget of `capacity` bytes holding admissions above `threshold` (0..1) of system
    /// memory use, with no sampler: feed it with [`MemoryBudget::observe`].
    pub fn new(capacity: u64, threshold: f64, default_weight: u64) -> Arc<Self> {
        Self::with_purge(capacity, threshold, default_weight, None)
    }

    fn with_purge(
        capacity: u64,
        threshold: f64,
        default_weight: u64,
        purge: Option<PurgeHook>,
    ) -> Arc<Self> {
        Arc::new(Self {
            gate: Gate::new(capacity),
            threshold,
            default_weight,
            pressure: AtomicU64::new(0f64.to_bits()),
            purge,
        })
    }

    /// The process's budget: sized from `config`, sampled by a background thread, calling
    /// `purge` under pressure.
    pub(crate) fn start(config: &PoolConfig, purge: PurgeHook) -> Arc<Self> {
        let system = sysinfo::System::new().map(|mut system| {
            system.refresh_memory();
            system
        });
        let total = match &system {
            Ok(system) => system.total_memory(),
            Err(e) => {
                tracing::error!(error = %e, "optimize: system memory cannot be read; the memory budget assumes 4 GiB and pressure is not watched");
                4 << 30
            }
        };
        let capacity = config.memory_budget.unwrap_or_else(|| {
            (total as f64 * config.memory_budget_fraction.clamp(0.0, 1.0)) as u64
        });
        let budget = Self::with_purge(
            capacity,
            config.memory_pressure_threshold,
            config.memory_default_weight,
            Some(purge),
        );
        let Ok(mut system) = system else {
            return budget;
        };
        let sampled = Arc::downgrade(&budget);
        let interval = config.memory_sample_interval.max(Duration::from_millis(10));
        let spawned = std::thread::Builder::new()
            .name("optimize-memory".into())
            .spawn(move || loop {
                system.refresh_memory();
                let Some(budget) = sampled.upgrade() else {
                    return;
                };
                budget.observe(system_pressure(&system));
                drop(budget);
                std::thread::sleep(interval);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "optimize: memory sampler not started; pressure is not watched");
        }
        budget
    }

    /// The admission gate (units are bytes).
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Weight of a call that names none.
    pub fn default_weight(&self) -> u64 {
        self.default_weight
    }

    /// The last observed system memory use, 0..1.
    pub fn pressure(&self) -> f64 {
        f64::from_bits(self.pressure.load(Relaxed))
    }

    /// Records system memory use (0..1): above the threshold admissions are held and expired
    /// L1 entries purged; at or below it they resume.
    pub fn observe(&self, pressure: f64) {
        self.pressure.store(pressure.to_bits(), Relaxed);
        let over = pressure > self.threshold;
        if over != self.gate.is_held() {
            if over {
                tracing::warn!(
                    pressure,
                    threshold = self.threshold,
                    "optimize: memory pressure; holding memory calls"
                );
            } else {
                tracing::info!(pressure, "optimize: memory pressure eased");
            }
        }
        self.gate.set_held(over);
        if let (true, Some(purge)) = (over, &self.purge) {
            let purged = purge();
            if purged > 0 {
                tracing::debug!(purged, "optimize: purged expired L1 entries under pressure");
            }
        }
    }

    /// Runs `f` once `weight` bytes (or the default) are admitted; blocks while waiting (under
    /// `block_in_place` on a multi-thread tokio worker). Nested calls run at once.
    ///
    /// ```
    /// use optimize_runtime::pool::{memory::MemoryBudget, Priority};
    ///
    /// let budget = MemoryBudget::new(1 << 30, 0.8, 64 << 20);
    /// let v = budget.run(Some(256 << 20), Priority::Normal, || vec![0u8; 16].len());
    /// assert_eq!(v, 16);
    /// ```
    pub fn run<R>(&self, weight: Option<u64>, priority: Priority, f: impl FnOnce() -> R) -> R {
        self.run_or_reject(weight, priority, None::<fn(Rejected) -> R>, f)
    }

    /// [`MemoryBudget::run`], answered by `on_rejected` instead when the queue is full (with
    /// `None`, the caller waits however long the queue).
    pub fn run_or_reject<R>(
        &self,
        weight: Option<u64>,
        priority: Priority,
        on_rejected: Option<impl FnOnce(Rejected) -> R>,
        f: impl FnOnce() -> R,
    ) -> R {
        if !chain::needs_admission(Kind::Memory) {
            chain::admitted(Kind::Memory);
            return f();
        }
        let weight = weight.unwrap_or(self.default_weight);
        blocking(|| {
            let admission = match on_rejected.is_some() {
                true => self.gate.acquire_blocking_within_bound(weight, priority),
                false => self
                    .gate
                    .acquire_blocking(weight, priority)
                    .map_err(|_| Refused::Closed),
            };
            let _permit = match (admission, on_rejected) {
                (Err(Refused::Full), Some(reject)) => return reject(self.rejected()),
                (admission, _) => admission.ok(),
            };
            chain::admitted(Kind::Memory);
            let _chain = chain::Scope::enter(Kind::Memory, 0);
            f()
        })
    }

    fn rejected(&self) -> Rejected {
        Rejected {
            function: String::new(),
            pool: "memory budget",
            queue_capacity: self.gate.queue_capacity().unwrap_or(0),
        }
    }

    /// Awaits `fut` once `weight` bytes (or the default) are admitted. Nested calls made
    /// while `fut` is polled run at once.
    pub async fn run_async<F: Future>(
        &self,
        weight: Option<u64>,
        priority: Priority,
        fut: F,
    ) -> F::Output {
        self.run_async_or_reject(weight, priority, None::<fn(Rejected) -> F::Output>, fut)
            .await
    }

    /// [`MemoryBudget::run_async`], answered by `on_rejected` instead when the queue is full.
    pub async fn run_async_or_reject<F: Future>(
        &self,
        weight: Option<u64>,
        priority: Priority,
        on_rejected: Option<impl FnOnce(Rejected) -> F::Output>,
        fut: F,
    ) -> F::Output {
        if !chain::needs_admission(Kind::Memory) {
            chain::admitted(Kind::Memory);
            return fut.await;
        }
        let weight = weight.unwrap_or(self.default_weight);
        // Admitted at once, nothing is awaited; a queued admission's state is boxed, so it
        // does not enlarge the future of every call (see the io pool's `admit`).
        let admission = match (self.gate.try_acquire(weight), on_rejected.is_some()) {
            (Some(permit), _) => Ok(permit),
            (None, true) => Box::pin(self.gate.acquire_within_bound(weight, priority)).await,
            (None, false) => Box::pin(self.gate.acquire(weight, priority))
                .await
                .map_err(|_| Refused::Closed),
        };
        let _permit = match (admission, on_rejected) {
            (Err(Refused::Full), Some(reject)) => return reject(self.rejected()),
            (admission, _) => admission.ok(),
        };
        chain::admitted(Kind::Memory);
        chain::InChain::new(Kind::Memory, fut).await
    }
}

fn system_pressure(system: &sysinfo::System) -> f64 {
    let total = system.total_memory();
    if total == 0 {
        return 0.0;
    }
    1.0 - system.available_memory() as f64 / total as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::SeqCst;

    #[test]
    fn reservations_never_exceed_the_budget() {
        let budget = MemoryBudget::new(1000, 0.8, 100);
        let held = AtomicU64::new(0);
        let peak = AtomicU64::new(0);
        std::thread::scope(|s| {
            for t in 0..6u64 {
                let (budget, held, peak) = (&budget, &held, &peak);
                s.spawn(move || {
                    for i in 0..100u64 {
                        let w = 100 + (t * 37 + i * 11) % 400;
                        budget.run(Some(w), Priority::Normal, || {
                            let now = held.fetch_add(w, SeqCst) + w;
                            peak.fetch_max(now, SeqCst);
                            std::thread::yield_now();
                            held.fetch_sub(w, SeqCst);
                        });
                    }
                });
            }
        });
        assert!(peak.load(SeqCst) <= 1000, "peak {}", peak.load(SeqCst));
        assert_eq!(budget.gate().stats().in_use, 0);
    }

    #[test]
    fn a_nested_call_does_not_wait_on_its_callers_budget() {
        let budget = MemoryBudget::new(100, 0.8, 100);
        // The outer call takes the whole budget; the inner one would wait forever.
        let v = budget.run(Some(100), Priority::Normal, || {
            budget.run(Some(100), Priority::Normal, || 42)
        });
        assert_eq!(v, 42);
    }

    #[tokio::test]
    async fn a_nested_async_call_does_not_wait_either() {
        let budget = MemoryBudget::new(100, 0.8, 100);
        let v = budget
            .run_async(Some(100), Priority::Normal, async {
                tokio::task::yield_now().await;
                budget
                    .run_async(Some(100), Priority::Normal, async { 7 })
                    .await
            })
            .await;
        assert_eq!(v, 7);
    }

    #[test]
    fn pressure_above_the_threshold_holds_calls_until_it_eases() {
        let budget = MemoryBudget::new(1000, 0.8, 10);
        budget.observe(0.95);
        let ran = AtomicUsize::new(0);
        std::thread::scope(|s| {
            // One call is admitted even under pressure (the budget was idle)...
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let (budget, ran) = (&budget, &ran);
            s.spawn(move || budget.run(None, Priority::Normal, || rx.recv().unwrap()));
            while budget.gate().stats().active == 0 {
                std::thread::yield_now();
            }
            // ...but a second one waits while pressure stays high.
            s.spawn(move || budget.run(None, Priority::Normal, || ran.fetch_add(1, SeqCst)));
            while budget.gate().stats().queued_total() == 0 {
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(ran.load(SeqCst), 0);
            budget.observe(0.5);
            while ran.load(SeqCst) == 0 {
                std::thread::yield_now();
            }
            tx.send(()).unwrap();
        });
        assert_eq!(budget.pressure(), 0.5);
    }
}
