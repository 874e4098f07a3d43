//! Who may wait while holding what: the admissions a call chain holds, and the rule that
//! keeps nested calls, recursion and single-flight free of deadlock (docs/pools.md, "The
//! waiting rule").
//!
//! The kinds are ranked io < memory < cpu, the order a request usually flows in (fetch,
//! transform, compute). A call chain (a thread running admitted bodies, or a future being
//! polled inside one) holds the admissions of the bodies it is running. Then:
//!
//! 1. A call waits for its kind's admission only if its chain holds nothing of that rank or
//!    above; otherwise it runs under the admission its chain already has (a cpu body calling
//!    an io function runs it in place; an io body calling itself recursively skips every io
//!    limit, the function's own included). Waiting only ever goes up the ranks, so no two
//!    chains can wait for each other's admissions.
//! 2. Within io, the narrow per-function limit is taken before the shared global one, so a
//!    call queued behind a saturated function holds nothing that unrelated calls need.
//! 3. A call whose chain holds admissions waits on another caller's computation of the same
//!    key only when that leader's body is admitted at an equal or higher rank; otherwise it
//!    computes the value itself. So nobody waits on a leader that is queued for a slot the
//!    waiter occupies.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::meta::Kind;

/// The bit of each kind's admission in a chain's set (also its rank: higher bits rank higher).
pub const fn bit(kind: Kind) -> u8 {
    match kind {
        Kind::Io => 1,
        Kind::Memory => 2,
        Kind::Cpu => 4,
    }
}

thread_local! {
    /// The admissions held by the call chain running on this thread right now.
    static HELD: Cell<u8> = const { Cell::new(0) };
}

/// The admissions the current call chain holds.
pub fn held() -> u8 {
    HELD.with(Cell::get)
}

/// The highest bit of `held` (0 for none).
fn top(held: u8) -> u8 {
    match held {
        0 => 0,
        h => 1 << (7 - h.leading_zeros()),
    }
}

/// Rule 1: whether a call of `kind` must wait for its own admission, or already runs under
/// its chain's (which holds `kind` or a higher rank).
pub fn needs_admission(kind: Kind) -> bool {
    top(held()) < bit(kind)
}

/// Rule 3: whether a caller whose chain holds `held` may wait on a leader whose admission is
/// `leader` (`None`: not admitted yet).
pub fn may_wait_on(held: u8, leader: Option<u8>) -> bool {
    match (held, leader) {
        (0, _) => true,
        (_, None) => false,
        (held, Some(leader)) => top(held) <= top(leader),
    }
}

/// Records that a body of `kind` was admitted (or inherits its chain's admission) on this
/// thread: the flight this thread is leading, if any, is marked admitted (rule 3). Called on
/// the caller's thread, where the flight's leader runs, even when the body itself runs on a
/// pool thread.
pub fn admitted(kind: Kind) {
    crate::flight::mark_leader_admitted(held() | bit(kind));
}

/// The chain holds `kind`'s admission (added to what it held) while this lives.
#[must_use = "the admission lasts as long as the scope"]
pub struct Scope {
    before: u8,
}

impl Scope {
    /// Enters a body admitted (or inheriting admission) as `kind`, in a chain that held
    /// `inherited` (the caller's, when the body runs on another thread).
    pub fn enter(kind: Kind, inherited: u8) -> Self {
        let before = held();
        let now = before | inherited | bit(kind);
        HELD.with(|h| h.set(now));
        Self { before }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        HELD.with(|h| h.set(self.before));
    }
}

/// Polls a future as part of a chain holding `kind` (and what the chain held when the future
/// was admitted), so calls it makes follow the rule as nested calls.
pub struct InChain<F> {
    inner: Pin<Box<F>>,
    kind: Kind,
    inherited: u8,
}

impl<F> InChain<F> {
    /// `fut`, admitted as `kind`, in the current chain.
    pub fn new(kind: Kind, fut: F) -> Self {
        Self {
            inner: Box::pin(fut),
            kind,
            inherited: held(),
        }
    }
}

impl<F: Future> Future for InChain<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _scope = Scope::enter(self.kind, self.inherited);
        self.inner.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_only_goes_up_the_ranks() {
        assert!(needs_admission(Kind::Io));
        let _io = Scope::enter(Kind::Io, 0);
        assert!(!needs_admission(Kind::Io), "nested io inherits");
        assert!(needs_admission(Kind::Memory), "io may wait for memory");
        assert!(needs_admission(Kind::Cpu), "io may wait for cpu");
        {
            let _cpu = Scope::enter(Kind::Cpu, 0);
            assert!(!needs_admission(Kind::Io));
            assert!(!needs_admission(Kind::Memory));
            assert!(!needs_admission(Kind::Cpu));
        }
        assert_eq!(held(), bit(Kind::Io), "the inner scope restored the chain");
    }

    #[test]
    fn holders_wait_only_on_leaders_admitted_at_their_rank_or_above() {
        let (io, cpu) = (bit(Kind::Io), bit(Kind::Cpu));
        assert!(
            may_wait_on(0, None),
            "a caller holding nothing may always wait"
        );
        assert!(
            !may_wait_on(cpu, None),
            "not on a leader queued for admission"
        );
        assert!(may_wait_on(io, Some(cpu)));
        assert!(may_wait_on(cpu, Some(cpu | io)));
        assert!(!may_wait_on(cpu, Some(io)), "the leader may still need cpu");
    }
}
