//! The backplane: every instance sharing a Redis learns of every invalidation and applies it
//! to its own L1 and L3 (docs/architecture.md, "Backplane").
//!
//! Invalidations are appended to one Redis stream per namespace (`{ns}:backplane`, trimmed to
//! about [`STREAM_LEN`] entries) by the write-behind drainer, right after the Redis deletion
//! they announce. Each instance reads the stream with a blocking `XREAD` on a connection of
//! its own, skips the entries it wrote itself (each names its origin) and hands the others to
//! a [`RemoteHook`] (the runtime's, which clears L1) after removing the keys from L3.
//!
//! A stream rather than pub/sub because an instance that was away (a partition, a Redis
//! restart, its own restart) must learn what it missed: it resumes from the last entry it
//! applied, which L3 keeps on disk. When that is not possible — the entries were trimmed,
//! Redis came back empty (its epoch key changed) or went back in time — the instance cannot
//! know what was retired, so it treats everything as retired: L1 is cleared and the
//! namespace's L3 entries are removed (a [`Remote::Everything`]).
//!
//! On a Redis Cluster the stream is one key, so it lives on the master of its slot: the
//! reading connection is a cluster connection of its own, which follows the slot when it
//! moves or its master fails over (a lost or failed-over stream is a gap, handled as above).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::redis_conn::{Connection, Endpoint, Timeouts};

use crate::cache::generations::Generations;
use crate::cache::l3_sled::SledTier;
use crate::key::ArgsKey;
use crate::stats::{AtomicHistogram, Histogram};
use crate::time::unix_ms;

/// About how many invalidations the stream keeps (`XADD MAXLEN ~`). An instance away for
/// longer than it takes the application to make this many clears everything when it returns.
pub const STREAM_LEN: u64 = 100_000;

/// One stream of an `XREAD` reply: its key, and its entries as (id, flat field-value list).
type StreamReply = (String, Vec<(String, Vec<String>)>);

/// Entries one `XREAD` returns at most.
const READ_COUNT: usize = 512;

/// How long one `XREAD` blocks; a dead connection is noticed within about this long.
const BLOCK: Duration = Duration::from_secs(2);

/// What an invalidation applies to. Built by the function's handle, announced by the drainer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// One entry of one function.
    Key {
        /// The function's path.
        path: String,
        /// The entry's argument key.
        args: ArgsKey,
        /// The entry's shared-tier key (for L3).
        key: String,
    },
    /// Every entry of one function.
    Function {
        /// The function's path.
        path: String,
        /// The prefix of its shared-tier keys (for L3).
        prefix: String,
        /// Its generation after the invalidation (0 when it has none: no L2).
        generation: u64,
    },
    /// Every entry of every function.
    Everything {
        /// The namespace's generation after the invalidation.
        generation: u64,
    },
    /// Every entry carrying one tag.
    Tag {
        /// The tag's hash ([`tag_hash`](crate::cache::generations::tag_hash)).
        tag: u64,
        /// Its generation after the invalidation.
        generation: u64,
    },
}

/// An invalidation made by another instance, as the runtime applies it to L1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remote<'a> {
    /// Remove one entry of the function at `path`.
    Key {
        /// The function's path.
        path: &'a str,
        /// The entry's argument key.
        args: ArgsKey,
    },
    /// Clear the function at `path`.
    Function {
        /// The function's path.
        path: &'a str,
    },
    /// Remove every entry carrying this tag (its hash).
    Tag {
        /// The tag's hash.
        tag: u64,
    },
    /// Invalidations may have been missed: clear every function.
    Everything,
}

/// Applies remote invalidations to L1 (the runtime hands the registry to it).
pub type RemoteHook = Arc<dyn Fn(Remote<'_>) + Send + Sync>;

/// Counters of the backplane.
pub struct BackplaneStats {
    connected: AtomicBool,
    /// Becomes `true` once the first (re)connection has caught up with the stream.
    caught_up: tokio::sync::watch::Sender<bool>,
    sent: AtomicU64,
    received: AtomicU64,
    gaps: AtomicU64,
    lag: AtomicHistogram,
}

impl std::fmt::Debug for BackplaneStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackplaneStats")
            .field("connected", &self.connected())
            .field("sent", &self.sent())
            .field("received", &self.received())
            .field("gaps", &self.gaps())
            .finish_non_exhaustive()
    }
}

impl Default for BackplaneStats {
    fn default() -> Self {
        Self {
            connected: AtomicBool::new(false),
            caught_up: tokio::sync::watch::Sender::new(false),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            lag: AtomicHistogram::new(),
        }
    }
}

impl BackplaneStats {
    /// Waits (at most `bound`) until the backplane has caught up with what was announced
    /// while this instance was not listening; whether it has.
    pub async fn caught_up_within(&self, bound: Duration) -> bool {
        let mut rx = self.caught_up.subscribe();
        let waited = tokio::time::timeout(bound, rx.wait_for(|done| *done)).await;
        waited.is_ok()
    }

    /// Whether the backplane has caught up once since the process started.
    pub fn is_caught_up(&self) -> bool {
        *self.caught_up.borrow()
    }

    /// Whether this instance is reading the stream now.
    pub fn connected(&self) -> bool {
        self.connected.load(Relaxed)
    }
    /// Invalidations this instance announced.
    pub fn sent(&self) -> u64 {
        self.sent.load(Relaxed)
    }
    /// Invalidations of other instances applied here.
    pub fn received(&self) -> u64 {
        self.received.load(Relaxed)
    }
    /// Times invalidations may have been missed and everything was cleared.
    pub fn gaps(&self) -> u64 {
        self.gaps.load(Relaxed)
    }
    /// From announcement (the sender's clock) to application here (this one's).
    pub fn lag(&self) -> Histogram {
        self.lag.snapshot()
    }
    pub(crate) fn count_sent(&self) {
        self.sent.fetch_add(1, Relaxed);
    }
}

/// Where the stream is and who this instance is.
#[derive(Clone, Debug)]
pub struct Channel {
    /// The stream's key: `{namespace}:backplane`.
    pub stream: String,
    /// The key holding the stream's epoch: a random value set when Redis first sees the
    /// namespace, so a Redis that came back empty is told apart from one that kept its data.
    pub epoch_key: String,
    /// This instance's identity, written into every entry it adds.
    pub origin: String,
    /// The namespace's key prefix, `{namespace}:` (what a gap removes from L3).
    pub prefix: String,
}

impl Channel {
    /// The channel of `namespace`, with a fresh random origin.
    pub fn new(namespace: &str) -> Self {
        Self {
            stream: format!("{namespace}:backplane"),
            epoch_key: format!("{namespace}:backplane:epoch"),
            origin: format!("{:016x}", random_u64()),
            prefix: format!("{namespace}:"),
        }
    }

    /// Adds `XADD` of `notice` to `pipe`.
    pub fn announce(&self, pipe: &mut redis::Pipeline, notice: &Notice) {
        let cmd = pipe
            .cmd("XADD")
            .arg(&self.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_LEN)
            .arg("*")
            .arg("o")
            .arg(&self.origin)
            .arg("t")
            .arg(unix_ms());
        match notice {
            Notice::Key { path, args, key } => {
                cmd.arg("k")
                    .arg("key")
                    .arg("p")
                    .arg(path)
                    .arg("a")
                    .arg(args.to_string())
                    .arg("x")
                    .arg(key);
            }
            Notice::Function {
                path,
                prefix,
                generation,
            } => {
                cmd.arg("k")
                    .arg("fn")
                    .arg("p")
                    .arg(path)
                    .arg("x")
                    .arg(prefix)
                    .arg("g")
                    .arg(*generation);
            }
            Notice::Everything { generation } => {
                cmd.arg("k").arg("all").arg("g").arg(*generation);
            }
            Notice::Tag { tag, generation } => {
                cmd.arg("k")
                    .arg("tag")
                    .arg("a")
                    .arg(format!("{tag:016x}"))
                    .arg("g")
                    .arg(*generation);
            }
        }
        cmd.ignore();
    }
}

fn random_u64() -> u64 {
    rand::random()
}

/// A stream entry id, `ms-seq`, compared numerically.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId(u64, u64);

impl EntryId {
    fn parse(s: &str) -> Option<Self> {
        let (ms, seq) = s.split_once('-')?;
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// What L3 keeps of the stream, so a restarted instance resumes where it stopped.
const META_POSITION: &str = "backplane.position";

/// The last entry applied and the epoch of the Redis it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Position {
    epoch: String,
    last: EntryId,
}

impl Position {
    fn load(l3: Option<&SledTier>, stream: &str) -> Option<Self> {
        let bytes = l3?.meta_get(&format!("{META_POSITION}:{stream}"))?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let (epoch, last) = text.split_once(' ')?;
        Some(Self {
            epoch: epoch.to_owned(),
            last: EntryId::parse(last)?,
        })
    }

    fn save(&self, l3: Option<&SledTier>, stream: &str) {
        if let Some(l3) = l3 {
            l3.meta_put(
                &format!("{META_POSITION}:{stream}"),
                format!("{} {}", self.epoch, self.last).as_bytes(),
            );
        }
    }
}

/// The reading side: one task per instance, on the tiers' runtime.
pub struct Listener {
    /// Where to read.
    pub channel: Channel,
    /// Where Redis is (the same as L2's).
    pub endpoint: Endpoint,
    /// L3, to remove keys from and to keep the position in.
    pub l3: Option<Arc<SledTier>>,
    /// Applies invalidations to L1.
    pub hook: RemoteHook,
    /// The generations this process knows, updated from announcements.
    pub generations: Arc<Generations>,
    /// Counters.
    pub stats: Arc<BackplaneStats>,
}

impl Listener {
    /// Reads the stream until the runtime stops: connects (retrying with backoff), works out
    /// where to resume, then applies entries as they come.
    pub async fn run(self) {
        let mut position = Position::load(self.l3.as_deref(), &self.channel.stream);
        let mut delay = Duration::from_millis(100);
        loop {
            match self.session(&mut position).await {
                Ok(()) => delay = Duration::from_millis(100),
                Err(e) => {
                    tracing::debug!(error = %e, "backplane: reading the stream failed; reconnecting");
                }
            }
            self.stats.connected.store(false, Relaxed);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// One connection's life: resume, then read until an error.
    async fn session(&self, position: &mut Option<Position>) -> redis::RedisResult<()> {
        // Its own connection: the blocking read must not hold up the tiers' commands.
        let timeouts = Timeouts {
            connect: Duration::from_secs(2),
            response: BLOCK + Duration::from_secs(2),
        };
        let mut conn = self.endpoint.dedicated(timeouts).await?;
        let resumed = self.resume(&mut conn, position.as_ref()).await?;
        *position = Some(resumed);
        self.stats.connected.store(true, Relaxed);
        let mut catching_up = !*self.stats.caught_up.borrow();
        loop {
            let Some(at) = position.as_mut() else {
                unreachable!("set above");
            };
            let mut read = redis::cmd("XREAD");
            read.arg("COUNT").arg(READ_COUNT);
            if !catching_up {
                // Catching up reads what is there without waiting, so callers held until
                // then are released at once.
                read.arg("BLOCK").arg(BLOCK.as_millis() as u64);
            }
            let reply: Option<Vec<StreamReply>> = read
                .arg("STREAMS")
                .arg(&self.channel.stream)
                .arg(at.last.to_string())
                .query_async(&mut conn)
                .await?;
            let entries: Vec<_> = reply
                .into_iter()
                .flatten()
                .flat_map(|(_, entries)| entries)
                .collect();
            let reply_was_short = entries.len() < READ_COUNT;
            let mut applied = false;
            for (id, fields) in entries {
                if let Some(id) = EntryId::parse(&id) {
                    self.apply(&fields);
                    at.last = id;
                    applied = true;
                }
            }
            if applied {
                at.save(self.l3.as_deref(), &self.channel.stream);
            }
            if catching_up && reply_was_short {
                // Everything announced before this read has been applied.
                self.stats.caught_up.send_replace(true);
                catching_up = false;
            }
        }
    }

    /// Where to read from after (re)connecting, clearing everything when entries may have
    /// been missed.
    async fn resume(
        &self,
        conn: &mut Connection,
        known: Option<&Position>,
    ) -> redis::RedisResult<Position> {
        // The epoch is created once per Redis dataset; a new one means Redis lost its data
        // (and with it, entries this instance never read).
        let candidate = format!("{:016x}", random_u64());
        let (epoch,): (String,) = redis::pipe()
            .cmd("SET")
            .arg(&self.channel.epoch_key)
            .arg(&candidate)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&self.channel.epoch_key)
            .query_async(conn)
            .await?;
        let (last_generated, max_deleted) = stream_bounds(conn, &self.channel.stream).await?;
        let gap = match known {
            // First start with nothing on disk: only L3 can hold what was retired meanwhile.
            None => self
                .l3
                .as_ref()
                .is_some_and(|l3| l3.has_prefix(&self.channel.prefix)),
            Some(p) => p.epoch != epoch || last_generated < p.last || max_deleted > p.last,
        };
        let last = if gap {
            self.stats.gaps.fetch_add(1, Relaxed);
            tracing::info!(
                stream = %self.channel.stream,
                "backplane: invalidations may have been missed while away; clearing L1 and this namespace's L3"
            );
            (self.hook)(Remote::Everything);
            self.generations.forget();
            if let Some(l3) = &self.l3 {
                l3.remove_prefix(&self.channel.prefix);
            }
            last_generated
        } else {
            known.map_or(last_generated, |p| p.last)
        };
        let position = Position { epoch, last };
        position.save(self.l3.as_deref(), &self.channel.stream);
        Ok(position)
    }

    /// Applies one entry of another instance to L3 and L1.
    fn apply(&self, fields: &[String]) {
        let field = |name: &str| -> Option<&str> {
            fields
                .chunks_exact(2)
                .find(|kv| kv[0] == name)
                .map(|kv| kv[1].as_str())
        };
        if field("o") == Some(self.channel.origin.as_str()) {
            return;
        }
        let Some(kind) = field("k") else {
            return;
        };
        let path = field("p").unwrap_or_default();
        let target = field("x").filter(|x| x.starts_with(&self.channel.prefix));
        let generation = field("g").and_then(|g| g.parse::<u64>().ok());
        match kind {
            "key" => {
                let Some(args) = field("a").and_then(|a| u128::from_str_radix(a, 16).ok()) else {
                    return;
                };
                if let (Some(l3), Some(key)) = (&self.l3, target) {
                    l3.remove(key);
                }
                (self.hook)(Remote::Key {
                    path,
                    args: ArgsKey(args),
                });
            }
            "fn" => {
                if let Some(generation) = generation {
                    self.generations.learn_function(path, generation);
                }
                if let (Some(l3), Some(prefix)) = (&self.l3, target) {
                    l3.remove_prefix(prefix);
                }
                (self.hook)(Remote::Function { path });
            }
            "all" => {
                if let Some(generation) = generation {
                    self.generations.learn_everything(generation);
                }
                if let Some(l3) = &self.l3 {
                    l3.remove_prefix(&self.channel.prefix);
                }
                (self.hook)(Remote::Everything);
            }
            "tag" => {
                let (Some(tag), Some(generation)) = (
                    field("a").and_then(|a| u64::from_str_radix(a, 16).ok()),
                    generation,
                ) else {
                    return;
                };
                // L3 entries with the tag are retired by their stamp; L1 holds no stamps.
                self.generations.learn_tag(tag, generation);
                (self.hook)(Remote::Tag { tag });
            }
            _ => return,
        }
        self.stats.received.fetch_add(1, Relaxed);
        if let Some(sent) = field("t").and_then(|t| t.parse::<u64>().ok()) {
            let lag_ms = unix_ms().saturating_sub(sent);
            self.stats.lag.record(lag_ms.saturating_mul(1_000_000));
        }
    }
}

/// The stream's last generated id and its largest deleted (trimmed) id; both `0-0` when the
/// stream does not exist.
async fn stream_bounds(
    conn: &mut Connection,
    stream: &str,
) -> redis::RedisResult<(EntryId, EntryId)> {
    let exists: bool = redis::cmd("EXISTS").arg(stream).query_async(conn).await?;
    if !exists {
        // Nothing was ever announced (or Redis lost it, which the epoch shows).
        return Ok((EntryId::default(), EntryId::default()));
    }
    let info: redis::Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query_async(conn)
        .await?;
    let mut last_generated = EntryId::default();
    let mut max_deleted = EntryId::default();
    if let redis::Value::Array(items) = &info {
        for kv in items.chunks_exact(2) {
            let (redis::Value::BulkString(name), redis::Value::BulkString(value)) =
                (&kv[0], &kv[1])
            else {
                continue;
            };
            let parsed = std::str::from_utf8(value).ok().and_then(EntryId::parse);
            match (name.as_slice(), parsed) {
                (b"last-generated-id", Some(id)) => last_generated = id,
                (b"max-deleted-entry-id", Some(id)) => max_deleted = id,
                _ => {}
            }
        }
    }
    Ok((last_generated, max_deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_order_numerically() {
        let a = EntryId::parse("1700000000000-9").unwrap();
        let b = EntryId::parse("1700000000000-10").unwrap();
        let c = EntryId::parse("1700000000001-0").unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-10");
        assert_eq!(EntryId::parse("nope"), None);
    }

    #[test]
    fn origins_differ_between_channels() {
        assert_ne!(Channel::new("ns").origin, Channel::new("ns").origin);
        let c = Channel::new("app");
        assert_eq!(
            (c.stream.as_str(), c.prefix.as_str()),
            ("app:backplane", "app:")
        );
    }
}
