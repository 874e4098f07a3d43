//! Leases: one computation per key across every instance sharing a Redis (distributed
//! single-flight; docs/architecture.md, "Leases").
//!
//! A miss in L2 takes the key's lease in the same round trip as the read (one Lua script:
//! `GETRANGE` of the value, the generations, and `SET {key}:lease{{key}} token NX PX ttl` when
//! the value is absent; the lease keys carry the value's key as their hash tag, so on a Redis
//! Cluster the script's keys share one slot, and the generations are read beside it). The holder computes and writes the value; the write and the lease's
//! release are one script again, which also publishes on `{ns}:leases` when another instance
//! waited. A waiter subscribes (one pub/sub connection per process), reads again when told or
//! when the lease would expire, and takes the lease over when its holder died.
//!
//! Fencing: a key's invalidation replaces its lease by a tombstone, so a holder that started
//! before the invalidation cannot write what it computed from the old data; the next miss
//! takes the lease over the tombstone at once.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use crate::cache::tiered::Tiers;
use crate::cache::writeback::WriteOp;

/// The lease's value after its key was invalidated.
pub const TOMBSTONE: &str = "x";

/// A lease this process holds on a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The value's key.
    pub key: String,
    /// Unique to this holding: only it can write the value or release the lease.
    pub token: u64,
}

impl Lease {
    /// A lease on `key` with a fresh token.
    pub fn new(key: &str) -> Self {
        Self {
            key: key.to_owned(),
            token: rand::random::<u64>().max(1),
        }
    }

    /// The lease's Redis key, in the value's cluster slot (the scripts take both).
    pub fn lease_key(key: &str) -> String {
        crate::cache::redis_conn::beside(key, ":lease")
    }

    /// The key marking that another instance waits for the lease (the value's slot too).
    pub fn waited_key(key: &str) -> String {
        crate::cache::redis_conn::beside(key, ":lease:w")
    }
}

/// A lease this process took, until it is handed to the value's write (which releases it)
/// or dropped (which releases it: the computation failed, panicked, was cancelled, or its
/// value is not shared), so the other instances never wait longer than it takes.
pub struct HeldLease {
    lease: Option<Lease>,
    tiers: Arc<Tiers>,
}

impl std::fmt::Debug for HeldLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLease")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl HeldLease {
    /// Holds `lease`, to be released through `tiers`' write-behind queue.
    pub fn new(lease: Lease, tiers: Arc<Tiers>) -> Self {
        Self {
            lease: Some(lease),
            tiers,
        }
    }

    /// The token, while the lease is still held here.
    pub fn token(&self) -> Option<u64> {
        self.lease.as_ref().map(|l| l.token)
    }

    /// The lease went with a queued write, which releases it.
    pub fn handed_over(&mut self) {
        self.lease = None;
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.tiers.enqueue(WriteOp::ReleaseLease(lease));
        }
    }
}

/// What a read found about the key's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Not asked for (the value was there, or leases are off).
    NotAsked,
    /// Taken: this process computes the value.
    Acquired,
    /// Another instance holds it; it expires within this long.
    Held(Duration),
}

/// `GETRANGE` of the value, `GET` of each generation, and (when the value is absent and a
/// lease is wanted) the lease: taken when free or a tombstone, else marked as waited for.
/// KEYS: value, lease, waited, generations…; ARGV: last byte, token, lease ms, want (0/1).
/// Returns {value, state (0 none, 1 acquired, 2 held), ms left, generations}.
pub(crate) static LOOKUP: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local v = redis.call('GETRANGE', KEYS[1], 0, ARGV[1])
local gens = {}
for i = 4, #KEYS do gens[#gens + 1] = redis.call('GET', KEYS[i]) or '0' end
local state, left = 0, 0
if v == '' and ARGV[4] == '1' then
  local cur = redis.call('GET', KEYS[2])
  if (not cur) or cur == 'x' then
    redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
    state = 1
  else
    state = 2
    left = redis.call('PTTL', KEYS[2])
    redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
  end
end
return {v, state, left, gens}
",
    )
});

/// Takes the lease (after a read found only a retired value). KEYS: lease, waited; ARGV:
/// token, lease ms. Returns {state, ms left} as [`LOOKUP`].
pub(crate) static ACQUIRE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == 'x' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, 0}
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return {2, redis.call('PTTL', KEYS[1])}
",
    )
});

/// Writes the value unless another holder or a tombstone has the lease, releases it, and
/// publishes the key when someone waited. KEYS: value, lease, waited; ARGV: bytes, px (0 =
/// none), token, channel. Returns 1 when written, 0 when fenced out.
pub(crate) static WRITE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local cur = redis.call('GET', KEYS[2])
if cur and cur ~= ARGV[3] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
if cur then redis.call('DEL', KEYS[2]) end
if redis.call('DEL', KEYS[3]) == 1 then redis.call('PUBLISH', ARGV[4], KEYS[1]) end
return 1
",
    )
});

/// Releases the lease without a value (the computation failed or is not shared), publishing
/// when someone waited. KEYS: lease, waited; ARGV: token, channel, value key.
pub(crate) static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if redis.call('DEL', KEYS[2]) == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
end
return 1
",
    )
});

/// Counters of leases.
#[derive(Debug, Default)]
pub struct LeaseStats {
    /// Leases taken by this process (it computed the value).
    pub acquired: AtomicU64,
    /// Misses that waited for another instance's lease.
    pub waited: AtomicU64,
    /// Of those, served the value the holder wrote.
    pub served: AtomicU64,
    /// Leases taken over after their holder released them without a value, died, or let
    /// them expire.
    pub taken_over: AtomicU64,
    /// Values not written because the lease had passed on (an invalidation, or a holder that
    /// took over).
    pub fenced: AtomicU64,
}

/// Waiters for other instances' leases, woken by the `{ns}:leases` channel.
#[derive(Default)]
pub struct LeaseWaiters {
    waiting: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
}

impl std::fmt::Debug for LeaseWaiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseWaiters").finish_non_exhaustive()
    }
}

impl LeaseWaiters {
    /// Waits (at most `bound`) until the key's lease is announced released.
    pub async fn wait(&self, key: &str, bound: Duration) {
        let notify = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_owned())
            .or_default()
            .clone();
        let _ = tokio::time::timeout(bound, notify.notified()).await;
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's reference and this one: nobody else waits for the key.
        if waiting.get(key).is_some_and(|n| Arc::strong_count(n) == 2) {
            waiting.remove(key);
        }
    }

    /// Wakes the waiters of `key`.
    pub fn released(&self, key: &str) {
        if let Some(n) = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            n.notify_waiters();
        }
    }

    /// Wakes every waiter (the subscription was lost: they read again).
    pub fn wake_all(&self) {
        for n in self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            n.notify_waiters();
        }
    }

    /// Listens on `channel` until the runtime stops, reconnecting with backoff; on a cluster
    /// (several `nodes`), each attempt goes to the next node, so a dead one is left behind.
    pub async fn listen(self: Arc<Self>, nodes: Vec<redis::Client>, channel: String) {
        use futures_util::StreamExt;
        let mut delay = Duration::from_millis(100);
        for client in nodes.iter().cycle() {
            if let Ok(mut pubsub) = client.get_async_pubsub().await {
                if pubsub.subscribe(&channel).await.is_ok() {
                    delay = Duration::from_millis(100);
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        if let Ok(key) = msg.get_payload::<String>() {
                            self.released(&key);
                        }
                    }
                }
            }
            // Whatever was published meanwhile is lost: the waiters read again.
            self.wake_all();
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ() {
        let (a, b) = (Lease::new("k"), Lease::new("k"));
        assert_ne!(a.token, b.token);
        assert_eq!(Lease::lease_key("ns:f:1"), "ns:f:1:lease{ns:f:1}");
    }
}
