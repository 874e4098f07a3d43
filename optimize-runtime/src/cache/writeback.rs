//! Write-behind: the one queue through which L2 and L3 writes happen (docs/architecture.md).
//!
//! Calls never wait for a shared-tier write. Writes go into one queue, drained by a background
//! task that pipelines L2 writes and batches L3 writes. Puts are bounded: when the queue holds
//! `capacity` puts, a new put is dropped and counted. Deletions and flushes are never dropped,
//! and the queue keeps order, so an invalidation cannot be overtaken by an older write.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::cache::backplane::{BackplaneStats, Channel, Notice};
use crate::cache::l2_redis::{L2Result, RedisTier};
use crate::cache::l3_sled::SledTier;

/// Bytes of one encoded entry, shared between the tiers it is written to.
pub type Bytes = Arc<[u8]>;

/// Produces a demoted entry's key and bytes; run by the drainer, never by the L1 engine.
pub type Demotion = Box<dyn FnOnce() -> Option<(String, Bytes)> + Send>;

/// One queued operation.
pub enum WriteOp {
    /// Store an entry.
    Put {
        /// Full shared-tier key.
        key: String,
        /// The envelope.
        bytes: Bytes,
        /// Expiry to set in Redis.
        l2_ttl: Option<Duration>,
        /// Write to L2.
        l2: bool,
        /// Write to L3.
        l3: bool,
    },
    /// An entry evicted from L1 by capacity: written to L3 if absent there.
    Demote(Demotion),
    /// Remove a key from the tiers named.
    Delete {
        /// Full shared-tier key.
        key: String,
        /// From L2.
        l2: bool,
        /// From L3.
        l3: bool,
        /// What to tell other instances (through the backplane), if anything.
        notice: Option<Notice>,
    },
    /// Remove every key with this prefix from both tiers.
    DeletePrefix {
        /// The prefix.
        prefix: String,
        /// Delete from L2 and L3 (`false`: only announce, for a function kept in L1).
        shared: bool,
        /// What to tell other instances (through the backplane), if anything.
        notice: Option<Notice>,
    },
    /// Answer once every earlier operation has been applied (a barrier; no fsync).
    Flush(oneshot::Sender<()>),
}

/// Counters of the queue.
#[derive(Debug, Default)]
pub struct WriteBackStats {
    /// Puts waiting in the queue.
    pub depth: AtomicUsize,
    /// Puts dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Puts applied.
    pub written: AtomicU64,
    /// Deletions Redis did not take (down, or its breaker open), waiting to be replayed.
    pub invalidations_pending: AtomicUsize,
    /// Deletions replayed once Redis answered again.
    pub invalidations_replayed: AtomicU64,
    /// Deletions given up because too many were waiting ([`MISSED_CAPACITY`]).
    pub invalidations_dropped: AtomicU64,
}

/// How many deletions Redis missed are kept for replay; beyond, the oldest are dropped and
/// counted (those keys then live in Redis until their TTL).
pub const MISSED_CAPACITY: usize = 10_000;

/// How often a drainer holding missed deletions tries Redis again when nothing else comes.
const REPLAY_EVERY: Duration = Duration::from_millis(200);

/// A deletion Redis did not take (or whose announcement it did not take).
enum Missed {
    Key(Option<String>, Option<Notice>),
    Prefix(String, Option<Notice>),
}

/// Deletions Redis missed, in order: replayed before anything else reaches Redis once it
/// answers, so an invalidation made during an outage still takes effect there.
#[derive(Default)]
struct MissedDeletions(std::collections::VecDeque<Missed>);

impl MissedDeletions {
    fn push(&mut self, missed: Missed, stats: &WriteBackStats) {
        if self.0.len() == MISSED_CAPACITY {
            self.0.pop_front();
            stats.invalidations_dropped.fetch_add(1, Relaxed);
        }
        self.0.push_back(missed);
        stats.invalidations_pending.store(self.0.len(), Relaxed);
    }

    /// Replays in order until one fails (Redis still away) or none is left.
    async fn replay(&mut self, l2: &RedisTier, stats: &WriteBackStats, bp: Option<&Announcer>) {
        while let Some(next) = self.0.front() {
            let done = match next {
                Missed::Key(key, notice) => delete_key(l2, key.as_ref(), notice.as_ref(), bp).await,
                Missed::Prefix(prefix, notice) => {
                    delete_prefix(l2, prefix, notice.as_ref(), bp).await
                }
            };
            if !matches!(done, L2Result::Done(())) {
                break;
            }
            self.0.pop_front();
            stats.invalidations_replayed.fetch_add(1, Relaxed);
        }
        stats.invalidations_pending.store(self.0.len(), Relaxed);
    }
}

/// The backplane's sending side: where announcements go, and their counter.
#[derive(Clone)]
pub struct Announcer {
    /// The stream and this instance's origin.
    pub channel: Arc<Channel>,
    /// Counts what is sent.
    pub stats: Arc<BackplaneStats>,
}

/// Deletes `key` from Redis (when given) and announces `notice` (when the backplane runs).
async fn delete_key(
    l2: &RedisTier,
    key: Option<&String>,
    notice: Option<&Notice>,
    bp: Option<&Announcer>,
) -> L2Result<()> {
    let keys = key.map(std::slice::from_ref).unwrap_or_default();
    let announce = bp.zip(notice);
    let done = l2
        .delete_and_announce(keys, announce.map(|(bp, n)| (&*bp.channel, n)))
        .await;
    if let (L2Result::Done(()), Some((bp, _))) = (&done, announce) {
        bp.stats.count_sent();
    }
    done
}

/// Deletes every key under `prefix` from Redis, then announces `notice`.
async fn delete_prefix(
    l2: &RedisTier,
    prefix: &str,
    notice: Option<&Notice>,
    bp: Option<&Announcer>,
) -> L2Result<()> {
    match l2.delete_prefix(prefix).await {
        L2Result::Done(()) => delete_key(l2, None, notice, bp).await,
        other => other,
    }
}

/// Sending side of the queue.
pub struct WriteBack {
    tx: mpsc::UnboundedSender<WriteOp>,
    capacity: usize,
    stats: Arc<WriteBackStats>,
}

impl WriteBack {
    /// Starts the drainer on `runtime`.
    pub fn start(
        capacity: usize,
        l2: Option<Arc<RedisTier>>,
        l3: Option<Arc<SledTier>>,
        backplane: Option<Announcer>,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(WriteBackStats::default());
        runtime.spawn(drain(rx, stats.clone(), l2, l3, backplane));
        Self {
            tx,
            capacity,
            stats,
        }
    }

    /// The queue's counters.
    pub fn stats(&self) -> &WriteBackStats {
        &self.stats
    }

    /// Queues `op`. A put or demotion over capacity is dropped and counted (`false`).
    pub fn push(&self, op: WriteOp) -> bool {
        let bounded = matches!(op, WriteOp::Put { .. } | WriteOp::Demote(_));
        if bounded && self.stats.depth.fetch_add(1, AcqRel) >= self.capacity {
            self.stats.depth.fetch_sub(1, AcqRel);
            self.stats.dropped.fetch_add(1, Relaxed);
            return false;
        }
        if self.tx.send(op).is_err() {
            // The drainer is gone (shutdown): nothing will apply this write.
            if bounded {
                self.stats.depth.fetch_sub(1, AcqRel);
                self.stats.dropped.fetch_add(1, Relaxed);
            }
            return false;
        }
        true
    }

    /// A receiver that resolves once everything queued before it has been applied.
    pub fn flush_marker(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        // If the drainer is gone, the receiver resolves (with an error) at once.
        let _ = self.tx.send(WriteOp::Flush(tx));
        rx
    }
}

#[derive(Default)]
struct Pending {
    l2: Vec<crate::cache::l2_redis::L2Write>,
    l3: Vec<(String, Bytes)>,
}

impl Pending {
    async fn apply(
        &mut self,
        l2: Option<&RedisTier>,
        l3: Option<&SledTier>,
        stats: &WriteBackStats,
    ) {
        let n = self.l2.len().max(self.l3.len()) as u64;
        if let Some(l2) = l2 {
            // A failed or skipped L2 write is counted by the tier; the value stays in L1/L3.
            let _ = l2.set_many(&self.l2).await;
        }
        if let Some(l3) = l3 {
            l3.apply(&self.l3, &[]);
        }
        self.l2.clear();
        self.l3.clear();
        stats.written.fetch_add(n, Relaxed);
    }
}

async fn drain(
    mut rx: mpsc::UnboundedReceiver<WriteOp>,
    stats: Arc<WriteBackStats>,
    l2: Option<Arc<RedisTier>>,
    l3: Option<Arc<SledTier>>,
    backplane: Option<Announcer>,
) {
    let (l2, l3, bp) = (l2.as_deref(), l3.as_deref(), backplane.as_ref());
    let mut batch = Vec::with_capacity(512);
    let mut pending = Pending::default();
    let mut missed = MissedDeletions::default();
    loop {
        let received = if missed.0.is_empty() {
            rx.recv_many(&mut batch, 512).await
        } else {
            // Wake up now and then to replay even when nothing else is written.
            match tokio::time::timeout(REPLAY_EVERY, rx.recv_many(&mut batch, 512)).await {
                Ok(n) => n,
                Err(_) => {
                    if let Some(l2) = l2 {
                        missed.replay(l2, &stats, bp).await;
                    }
                    continue;
                }
            }
        };
        if received == 0 {
            break;
        }
        if let (Some(l2), false) = (l2, missed.0.is_empty()) {
            missed.replay(l2, &stats, bp).await;
        }
        for op in batch.drain(..) {
            match op {
                WriteOp::Put {
                    key,
                    bytes,
                    l2_ttl,
                    l2: to_l2,
                    l3: to_l3,
                } => {
                    stats.depth.fetch_sub(1, AcqRel);
                    if to_l2 && l2.is_some() {
                        pending.l2.push((key.clone(), bytes.clone(), l2_ttl));
                    }
                    if to_l3 && l3.is_some() {
                        pending.l3.push((key, bytes));
                    }
                }
                WriteOp::Demote(produce) => {
                    stats.depth.fetch_sub(1, AcqRel);
                    if let Some(l3) = l3 {
                        if let Some((key, bytes)) = produce() {
                            if !l3.contains(&key) && !pending.l3.iter().any(|(k, _)| *k == key) {
                                pending.l3.push((key, bytes));
                            }
                        }
                    }
                }
                WriteOp::Delete {
                    key,
                    l2: from_l2,
                    l3: from_l3,
                    notice,
                } => {
                    pending.apply(l2, l3, &stats).await;
                    if let Some(l3) = l3.filter(|_| from_l3) {
                        l3.remove(&key);
                    }
                    let notice = notice.filter(|_| bp.is_some());
                    if let Some(l2) = l2.filter(|_| from_l2 || notice.is_some()) {
                        let key = from_l2.then_some(key);
                        if !matches!(
                            delete_key(l2, key.as_ref(), notice.as_ref(), bp).await,
                            L2Result::Done(())
                        ) {
                            missed.push(Missed::Key(key, notice), &stats);
                        }
                    }
                }
                WriteOp::DeletePrefix {
                    prefix,
                    shared,
                    notice,
                } => {
                    pending.apply(l2, l3, &stats).await;
                    if let Some(l3) = l3.filter(|_| shared) {
                        l3.remove_prefix(&prefix);
                    }
                    let notice = notice.filter(|_| bp.is_some());
                    if let Some(l2) = l2.filter(|_| shared || notice.is_some()) {
                        let done = match shared {
                            true => delete_prefix(l2, &prefix, notice.as_ref(), bp).await,
                            false => delete_key(l2, None, notice.as_ref(), bp).await,
                        };
                        if !matches!(done, L2Result::Done(())) {
                            let missed_op = match shared {
                                true => Missed::Prefix(prefix, notice),
                                false => Missed::Key(None, notice),
                            };
                            missed.push(missed_op, &stats);
                        }
                    }
                }
                WriteOp::Flush(done) => {
                    pending.apply(l2, l3, &stats).await;
                    let _ = done.send(());
                }
            }
        }
        pending.apply(l2, l3, &stats).await;
    }
}
