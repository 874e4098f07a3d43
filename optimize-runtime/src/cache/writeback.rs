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
use crate::cache::generations::Generations;
use crate::cache::l2_redis::{L2Result, RedisTier};
use crate::cache::l3_sled::SledTier;
use crate::cache::lease::Lease;

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
        /// The token of the lease this process holds on the key: the L2 write is fenced by
        /// it and releases it.
        lease: Option<u64>,
    },
    /// Release a lease without writing a value.
    ReleaseLease(Lease),
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
    DeletePrefix(String),
    /// Retire every entry of a function: raise its generation in Redis, remove its entries
    /// from L3, announce it, and reclaim its Redis keys in the background.
    InvalidateFunction(FunctionInvalidation),
    /// Retire every entry of the namespace: raise its generation, remove everything under
    /// `prefix` from L3, announce it.
    InvalidateEverything {
        /// The namespace's key prefix (`{ns}:`).
        prefix: String,
        /// The namespace generation's Redis key.
        generation_key: String,
    },
    /// Retire every entry carrying a tag: raise the tag's generation, announce it.
    InvalidateTag {
        /// The tag's hash.
        tag: u64,
        /// Its generation's Redis key.
        generation_key: String,
    },
    /// Answer once every earlier operation has been applied (a barrier; no fsync).
    Flush(oneshot::Sender<()>),
}

/// What invalidating a whole function takes.
#[derive(Clone, Debug)]
pub struct FunctionInvalidation {
    /// The function's path.
    pub path: String,
    /// The prefix of its shared-tier keys.
    pub prefix: String,
    /// Its generation's Redis key, when it uses L2.
    pub generation_key: Option<String>,
    /// Whether it uses L3.
    pub l3: bool,
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
    /// Values not written to L2 because their lease had passed on (an invalidation, or an
    /// instance that took the lease over).
    pub leases_fenced: AtomicU64,
    /// L2 writes Redis did not take, waiting to be written once it answers again.
    pub unwritten: AtomicUsize,
    /// Of those, written once Redis answered again.
    pub rewritten: AtomicU64,
    /// Of those, given up: too many were waiting ([`MISSED_CAPACITY`]).
    pub unwritten_dropped: AtomicU64,
}

/// How many deletions Redis missed are kept for replay; beyond, the oldest are dropped and
/// counted (those keys then live in Redis until their TTL).
pub const MISSED_CAPACITY: usize = 10_000;

/// How often a drainer holding missed deletions tries Redis again when nothing else comes.
const REPLAY_EVERY: Duration = Duration::from_millis(200);

/// A deletion Redis did not take (or whose announcement it did not take).
enum Missed {
    Key(Option<String>, Option<Notice>),
    Prefix(String),
    Function(FunctionInvalidation),
    Tag(u64, String),
    Everything(String),
}

/// L2 writes Redis did not take (down, or its breaker open), written again once it answers:
/// as `SET NX` with the time they have left, so a value another instance wrote meanwhile is
/// never overwritten, and never after an invalidation of their key (which drops them here).
#[derive(Default)]
struct Unwritten(std::collections::VecDeque<(String, Bytes, Option<std::time::Instant>)>);

impl Unwritten {
    fn push(&mut self, writes: Vec<crate::cache::l2_redis::L2Write>, stats: &WriteBackStats) {
        let now = std::time::Instant::now();
        for (key, bytes, ttl) in writes {
            if self.0.len() >= MISSED_CAPACITY {
                self.0.pop_front();
                stats.unwritten_dropped.fetch_add(1, Relaxed);
            }
            self.0.push_back((key, bytes, ttl.map(|t| now + t)));
        }
        stats.unwritten.store(self.0.len(), Relaxed);
    }

    /// Drops the writes an invalidation retired.
    fn forget(&mut self, retired: impl Fn(&str) -> bool, stats: &WriteBackStats) {
        if self.0.is_empty() {
            return;
        }
        self.0.retain(|(key, _, _)| !retired(key));
        stats.unwritten.store(self.0.len(), Relaxed);
    }

    /// Writes a batch again; keeps them when Redis still does not answer.
    async fn rewrite(&mut self, l2: &RedisTier, stats: &WriteBackStats) {
        let now = std::time::Instant::now();
        self.0
            .retain(|(_, _, deadline)| deadline.is_none_or(|d| d > now + Duration::from_millis(1)));
        let batch: Vec<crate::cache::l2_redis::L2Write> = self
            .0
            .iter()
            .take(512)
            .map(|(key, bytes, deadline)| {
                (
                    key.clone(),
                    bytes.clone(),
                    deadline.map(|d| d.saturating_duration_since(now)),
                )
            })
            .collect();
        if batch.is_empty() {
            stats.unwritten.store(0, Relaxed);
            return;
        }
        if let L2Result::Done(()) = l2.set_many_if_absent(&batch).await {
            self.0.drain(..batch.len());
            stats.rewritten.fetch_add(batch.len() as u64, Relaxed);
        }
        stats.unwritten.store(self.0.len(), Relaxed);
    }
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
    async fn replay(&mut self, shared: &Shared<'_>, stats: &WriteBackStats) {
        let Some(l2) = shared.l2 else {
            return;
        };
        while let Some(next) = self.0.front() {
            let done = match next {
                Missed::Key(key, notice) => {
                    delete_key(l2, key.as_ref(), notice.as_ref(), shared.bp).await
                }
                Missed::Prefix(prefix) => l2.delete_prefix(prefix).await,
                Missed::Function(f) => invalidate_function(shared, f).await,
                Missed::Tag(tag, key) => invalidate_tag(shared, *tag, key).await,
                Missed::Everything(key) => invalidate_everything(shared, key).await,
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

/// What the drainer writes to, borrowed for one run.
struct Shared<'a> {
    l2: Option<&'a Arc<RedisTier>>,
    bp: Option<&'a Announcer>,
    generations: &'a Generations,
}

/// Raises a function's generation (when it uses L2), announces it, and starts reclaiming its
/// Redis keys (entries of an older generation are dead already; they are removed only to
/// free memory, in the background, so the queue does not wait for a scan).
async fn invalidate_function(shared: &Shared<'_>, f: &FunctionInvalidation) -> L2Result<()> {
    let Some(l2) = shared.l2 else {
        return L2Result::Done(());
    };
    let generation = match &f.generation_key {
        Some(key) => match l2.bump(key).await {
            L2Result::Done(g) => {
                shared.generations.learn_function(&f.path, g);
                g
            }
            other => return other.map(|_| ()),
        },
        None => 0,
    };
    let notice = Notice::Function {
        path: f.path.clone(),
        prefix: f.prefix.clone(),
        generation,
    };
    let announced = delete_key(l2, None, Some(&notice), shared.bp).await;
    if f.generation_key.is_some() {
        let (l2, prefix) = (l2.clone(), f.prefix.clone());
        tokio::spawn(async move { l2.delete_prefix(&prefix).await });
    }
    announced
}

/// Raises the namespace's generation and announces it.
async fn invalidate_everything(shared: &Shared<'_>, key: &str) -> L2Result<()> {
    let Some(l2) = shared.l2 else {
        return L2Result::Done(());
    };
    let generation = match l2.bump(key).await {
        L2Result::Done(g) => g,
        other => return other.map(|_| ()),
    };
    shared.generations.learn_everything(generation);
    let notice = Notice::Everything { generation };
    delete_key(l2, None, Some(&notice), shared.bp).await
}

/// Raises a tag's generation and announces it.
async fn invalidate_tag(shared: &Shared<'_>, tag: u64, key: &str) -> L2Result<()> {
    let Some(l2) = shared.l2 else {
        return L2Result::Done(());
    };
    let generation = match l2.bump(key).await {
        L2Result::Done(g) => g,
        other => return other.map(|_| ()),
    };
    shared.generations.learn_tag(tag, generation);
    let notice = Notice::Tag { tag, generation };
    delete_key(l2, None, Some(&notice), shared.bp).await
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
        generations: Arc<Generations>,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(WriteBackStats::default());
        runtime.spawn(drain(rx, stats.clone(), l2, l3, backplane, generations));
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
    /// L2 writes under a lease, each with its token.
    leased: Vec<(crate::cache::l2_redis::L2Write, u64)>,
    l3: Vec<(String, Bytes)>,
}

impl Pending {
    async fn apply(
        &mut self,
        l2: Option<&RedisTier>,
        l3: Option<&SledTier>,
        stats: &WriteBackStats,
        unwritten: &mut Unwritten,
    ) {
        let n = (self.l2.len() + self.leased.len()).max(self.l3.len()) as u64;
        if let Some(l2) = l2 {
            // A failed or skipped L2 write is counted by the tier, and written again once Redis
            // answers (a leased one is not: its lease is gone by then).
            if !self.l2.is_empty() && !matches!(l2.set_many(&self.l2).await, L2Result::Done(())) {
                unwritten.push(std::mem::take(&mut self.l2), stats);
            }
            for (write, token) in self.leased.drain(..) {
                if let L2Result::Done(false) = l2.write_leased(&write, token).await {
                    stats.leases_fenced.fetch_add(1, Relaxed);
                }
            }
        }
        self.leased.clear();
        if let Some(l3) = l3 {
            l3.apply(&self.l3, &[]);
        }
        self.l2.clear();
        self.l3.clear();
        stats.written.fetch_add(n, Relaxed);
    }
}

/// Once Redis answers: the deletions it missed first, then the writes it did not take.
async fn catch_up(
    missed: &mut MissedDeletions,
    unwritten: &mut Unwritten,
    shared: &Shared<'_>,
    l2: Option<&RedisTier>,
    stats: &WriteBackStats,
) {
    if !missed.0.is_empty() {
        missed.replay(shared, stats).await;
    }
    if let (true, false, Some(l2)) = (missed.0.is_empty(), unwritten.0.is_empty(), l2) {
        unwritten.rewrite(l2, stats).await;
    }
}

async fn drain(
    mut rx: mpsc::UnboundedReceiver<WriteOp>,
    stats: Arc<WriteBackStats>,
    l2: Option<Arc<RedisTier>>,
    l3: Option<Arc<SledTier>>,
    backplane: Option<Announcer>,
    generations: Arc<Generations>,
) {
    let shared = Shared {
        l2: l2.as_ref(),
        bp: backplane.as_ref(),
        generations: &generations,
    };
    let (l2, l3, bp) = (l2.as_deref(), l3.as_deref(), backplane.as_ref());
    let mut batch = Vec::with_capacity(512);
    let mut pending = Pending::default();
    let mut missed = MissedDeletions::default();
    let mut unwritten = Unwritten::default();
    loop {
        let received = if missed.0.is_empty() && unwritten.0.is_empty() {
            rx.recv_many(&mut batch, 512).await
        } else {
            // Wake up now and then to replay even when nothing else is written.
            match tokio::time::timeout(REPLAY_EVERY, rx.recv_many(&mut batch, 512)).await {
                Ok(n) => n,
                Err(_) => {
                    catch_up(&mut missed, &mut unwritten, &shared, l2, &stats).await;
                    continue;
                }
            }
        };
        if received == 0 {
            break;
        }
        catch_up(&mut missed, &mut unwritten, &shared, l2, &stats).await;
        for op in batch.drain(..) {
            match op {
                WriteOp::Put {
                    key,
                    bytes,
                    l2_ttl,
                    l2: to_l2,
                    l3: to_l3,
                    lease,
                } => {
                    stats.depth.fetch_sub(1, AcqRel);
                    if to_l2 && l2.is_some() {
                        let write = (key.clone(), bytes.clone(), l2_ttl);
                        match lease {
                            Some(token) => pending.leased.push((write, token)),
                            None => pending.l2.push(write),
                        }
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
                    pending.apply(l2, l3, &stats, &mut unwritten).await;
                    unwritten.forget(|k| k == key, &stats);
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
                WriteOp::DeletePrefix(prefix) => {
                    pending.apply(l2, l3, &stats, &mut unwritten).await;
                    unwritten.forget(|k| k.starts_with(prefix.as_str()), &stats);
                    if let Some(l3) = l3 {
                        l3.remove_prefix(&prefix);
                    }
                    if let Some(l2) = l2 {
                        if !matches!(l2.delete_prefix(&prefix).await, L2Result::Done(())) {
                            missed.push(Missed::Prefix(prefix), &stats);
                        }
                    }
                }
                WriteOp::InvalidateFunction(f) => {
                    pending.apply(l2, l3, &stats, &mut unwritten).await;
                    unwritten.forget(|k| k.starts_with(f.prefix.as_str()), &stats);
                    if let Some(l3) = l3.filter(|_| f.l3) {
                        l3.remove_prefix(&f.prefix);
                    }
                    if l2.is_some()
                        && !matches!(invalidate_function(&shared, &f).await, L2Result::Done(()))
                    {
                        missed.push(Missed::Function(f), &stats);
                    }
                }
                WriteOp::InvalidateEverything {
                    prefix,
                    generation_key,
                } => {
                    pending.apply(l2, l3, &stats, &mut unwritten).await;
                    unwritten.forget(|k| k.starts_with(prefix.as_str()), &stats);
                    if let Some(l3) = l3 {
                        l3.remove_prefix(&prefix);
                    }
                    if l2.is_some()
                        && !matches!(
                            invalidate_everything(&shared, &generation_key).await,
                            L2Result::Done(())
                        )
                    {
                        missed.push(Missed::Everything(generation_key), &stats);
                    }
                }
                WriteOp::InvalidateTag {
                    tag,
                    generation_key,
                } => {
                    pending.apply(l2, l3, &stats, &mut unwritten).await;
                    if let (None, Some(l3)) = (l2, l3) {
                        l3.bump_tag_generation(tag);
                    }
                    if l2.is_some()
                        && !matches!(
                            invalidate_tag(&shared, tag, &generation_key).await,
                            L2Result::Done(())
                        )
                    {
                        missed.push(Missed::Tag(tag, generation_key), &stats);
                    }
                }
                WriteOp::ReleaseLease(lease) => {
                    pending.apply(l2, l3, &stats, &mut unwritten).await;
                    if let Some(l2) = l2 {
                        // An unreleased lease only makes the others wait until it expires.
                        let _ = l2.release(&lease).await;
                    }
                }
                WriteOp::Flush(done) => {
                    pending.apply(l2, l3, &stats, &mut unwritten).await;
                    let _ = done.send(());
                }
            }
        }
        pending.apply(l2, l3, &stats, &mut unwritten).await;
    }
}
