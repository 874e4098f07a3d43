//! L2: Redis, shared by every instance of the application.
//!
//! Redis is one server or a Redis Cluster ([`RedisOptions::cluster`]); the connection is made in
//! the background, so an application starts and serves with Redis absent, and reconnects by
//! itself ([`redis_conn`](crate::cache::redis_conn)). Every operation has a
//! timeout, and a [`Breaker`] skips the tier entirely while it is failing, so an outage adds no
//! latency to calls. The password in the URL never appears in `Debug`, logs or errors.

use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::time::Clock;
use std::time::Duration;

use crate::cache::backplane::{Channel, Notice};
use crate::cache::breaker::{Breaker, BreakerState, Breakers};
use crate::cache::lease::{Lease, LeaseState};
use crate::cache::redis_conn::{Connection, Endpoint, Replaceable, Timeouts};
use crate::cache::TierCounters;

/// A Redis URL whose password is never printed. `redis://`, `rediss://` (TLS) and
/// `redis+unix://` URLs are accepted; AUTH goes in the user-info part.
///
/// ```
/// use optimize_runtime::cache::l2_redis::RedisUrl;
///
/// let url = RedisUrl::new("rediss://app:s3cret@cache.internal:6380/2");
/// assert_eq!(url.to_string(), "rediss://app:***@cache.internal:6380/2");
/// assert!(!format!("{url:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for the driver only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The node URLs of a comma-separated list (a cluster's seed nodes); one URL is a list of
    /// one.
    ///
    /// ```
    /// use optimize_runtime::cache::l2_redis::RedisUrl;
    ///
    /// let url = RedisUrl::new("redis://a:7000, redis://b:7001");
    /// assert_eq!(url.nodes(), ["redis://a:7000", "redis://b:7001"]);
    /// ```
    pub fn nodes(&self) -> Vec<&str> {
        self.0
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    fn passwords(&self) -> impl Iterator<Item = &str> {
        self.nodes().into_iter().filter_map(|url| {
            let rest = url.split_once("://")?.1;
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            let userinfo = authority.rsplit_once('@')?.0;
            userinfo
                .split_once(':')
                .map(|(_, p)| p)
                .filter(|p| !p.is_empty())
        })
    }

    /// Replaces the password wherever it appears in `text` (driver errors may quote the URL).
    pub fn redact(&self, text: &str) -> String {
        self.passwords()
            .fold(text.to_owned(), |text, p| text.replace(p, "***"))
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redact(&self.0))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// One `SET`: key, envelope bytes, expiry.
pub type L2Write = (String, Arc<[u8]>, Option<Duration>);

/// How an L2 operation went.
#[derive(Debug, PartialEq, Eq)]
pub enum L2Result<T> {
    /// The operation completed.
    Done(T),
    /// The breaker is open (or the connection is not made yet): the tier was not used.
    Skipped,
    /// The operation failed or timed out; the breaker was told.
    Failed,
}

impl<T> L2Result<T> {
    /// The result of the operation, transformed.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> L2Result<U> {
        match self {
            L2Result::Done(v) => L2Result::Done(f(v)),
            L2Result::Skipped => L2Result::Skipped,
            L2Result::Failed => L2Result::Failed,
        }
    }
}

/// Settings of the L2 tier.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// Where Redis is.
    pub url: RedisUrl,
    /// Timeout of every operation.
    pub op_timeout: Duration,
    /// Consecutive failures that open the breaker.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before a probe.
    pub breaker_cooldown: Duration,
    /// How long a miss's lease lasts (one computation per key across instances); `None`
    /// turns leases off.
    pub lease: Option<Duration>,
    /// TLS settings of a `rediss://` URL.
    pub tls: TlsFiles,
    /// Redis is a cluster: `url` lists seed nodes, separated by commas (`l2.cluster`).
    pub cluster: bool,
}

/// TLS settings of a `rediss://` URL: the server is verified against the system's roots (and
/// the built-in web PKI roots) unless a CA file is given; a client certificate and key are
/// sent when given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM file of the CA that signed the server's certificate (`l2.tls_ca_file`).
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM file of the client certificate (`l2.tls_client_cert`).
    pub client_cert: Option<std::path::PathBuf>,
    /// PEM file of the client key (`l2.tls_client_key`).
    pub client_key: Option<std::path::PathBuf>,
    /// Accept any server certificate (`l2.tls_insecure`): for test setups only.
    pub insecure: bool,
}

impl RedisOptions {
    /// Default timeout of every operation.
    pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(100);
    /// Default consecutive failures that open the breaker.
    pub const DEFAULT_BREAKER_THRESHOLD: u32 = 5;
    /// Default time the breaker stays open.
    pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(5);
    /// Default lease duration.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);

    /// Redis at `url` with the default timeout and breaker.
    pub fn new(url: RedisUrl) -> Self {
        Self {
            url,
            op_timeout: Self::DEFAULT_OP_TIMEOUT,
            breaker_threshold: Self::DEFAULT_BREAKER_THRESHOLD,
            breaker_cooldown: Self::DEFAULT_BREAKER_COOLDOWN,
            lease: Some(Self::DEFAULT_LEASE),
            tls: TlsFiles::default(),
            cluster: false,
        }
    }
}

/// The L2 tier.
pub struct RedisTier {
    url: RedisUrl,
    conn: Arc<OnceLock<Replaceable>>,
    /// A second connection for values larger than [`FIRST_READ`]: their bytes never queue
    /// in front of the small reads that share the first.
    bulk: Arc<OnceLock<Replaceable>>,
    /// Where the connections were made, to make them again (a stuck cluster connection).
    endpoint: Arc<OnceLock<(Endpoint, Timeouts)>>,
    /// When an operation last succeeded ([`Clock`] nanoseconds).
    last_success: Arc<std::sync::atomic::AtomicU64>,
    /// Whether the connections are being made again.
    rebuilding: Arc<std::sync::atomic::AtomicBool>,
    /// Becomes `true` when the first connection attempt has finished, either way.
    first_attempt: tokio::sync::watch::Receiver<bool>,
    connect_timeout: Duration,
    op_timeout: Duration,
    /// One breaker, or on a cluster one per group of slots.
    breakers: Arc<Breakers>,
    counters: TierCounters,
    clock: Clock,
    /// The largest entry a read returns in full (bytes).
    max_read: usize,
    /// Lease duration (`None`: leases off) and the channel releases are published on.
    lease: Option<Duration>,
    lease_channel: String,
    /// What the Redis user may not do that the tiers need, found when first connected.
    missing_rights: Arc<std::sync::Mutex<Vec<String>>>,
    /// Whether the log has said that `l2.url` is a cluster node (said once).
    told_cluster: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTier")
            .field("url", &self.url)
            .field("connected", &self.is_connected())
            .field("breakers_open", &self.breakers.open())
            .finish()
    }
}

impl RedisTier {
    /// Creates the tier and starts connecting on `runtime`; returns at once.
    pub fn start(
        options: RedisOptions,
        counters: TierCounters,
        clock: Clock,
        max_entry_bytes: usize,
        namespace: &str,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let conn = Arc::new(OnceLock::new());
        let bulk = Arc::new(OnceLock::new());
        let endpoint = Arc::new(OnceLock::new());
        let last_success = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let missing_rights = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (attempted, first_attempt) = tokio::sync::watch::channel(false);
        let tier = Self {
            url: options.url.clone(),
            bulk: bulk.clone(),
            conn: conn.clone(),
            endpoint: endpoint.clone(),
            last_success: last_success.clone(),
            rebuilding: Arc::default(),
            first_attempt,
            connect_timeout: connect_timeout(&options),
            op_timeout: options.op_timeout,
            breakers: Arc::new(if options.cluster {
                Breakers::per_slot_group(
                    options.breaker_threshold,
                    options.breaker_cooldown,
                    clock.clone(),
                )
            } else {
                Breakers::single(
                    options.breaker_threshold,
                    options.breaker_cooldown,
                    clock.clone(),
                )
            }),
            counters: counters.clone(),
            clock,
            max_read: max_entry_bytes.saturating_add(crate::codec::HEADER_LEN),
            lease: options.lease,
            lease_channel: lease_channel(namespace),
            missing_rights: missing_rights.clone(),
            told_cluster: std::sync::atomic::AtomicBool::new(false),
        };
        let probe = RightsProbe {
            namespace: namespace.to_owned(),
            missing: missing_rights,
        };
        let made = Made {
            conn,
            bulk,
            endpoint,
            last_success,
            clock: tier.clock.clone(),
        };
        runtime.spawn(connect_until_connected(
            options, made, counters, attempted, probe,
        ));
        tier
    }

    /// How long connecting may take before a caller stops waiting for it.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Whether the first connection has been made.
    pub fn is_connected(&self) -> bool {
        self.conn.get().is_some()
    }

    /// Whether a breaker currently keeps calls away from Redis (on a cluster: from the slots
    /// of at least one node).
    pub fn circuit_open(&self) -> bool {
        self.breakers.open() > 0
    }

    /// Whether the breaker of `key`'s slot keeps calls away from it.
    pub fn circuit_open_for(&self, key: &str) -> bool {
        self.breaker(key).state() != BreakerState::Closed
    }

    /// How many times a breaker opened.
    pub fn breaker_opened_total(&self) -> u64 {
        self.breakers.opened_total()
    }

    /// The breaker of the slot `key` is in (the only one, for a single server).
    fn breaker(&self, key: &str) -> &Breaker {
        if self.breakers.is_per_slot() {
            self.breakers.for_slot(crate::cache::redis_conn::slot(key))
        } else {
            self.breakers.for_slot(0)
        }
    }

    /// Runs `f` unless the breaker of `route` (the key whose slot the operation is about)
    /// is open, with the operation timeout; reports the outcome to that breaker.
    async fn run<T>(
        &self,
        op: &'static str,
        route: &str,
        f: impl AsyncFnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> L2Result<T> {
        let breaker = self.breaker(route);
        if !breaker.allow() {
            return L2Result::Skipped;
        }
        if self.conn.get().is_none() && !*self.first_attempt.borrow() {
            // Starting up: wait (once, bounded) for the first attempt, so a new instance reads
            // a warm Redis from its first call instead of computing everything again.
            let mut attempted = self.first_attempt.clone();
            let _ =
                tokio::time::timeout(self.connect_timeout, attempted.wait_for(|done| *done)).await;
        }
        let Some(conn) = self.conn.get() else {
            // Not connected: counts against the breaker so a down Redis is skipped fast.
            breaker.on_failure();
            return L2Result::Skipped;
        };
        let mut conn = conn.get();
        let started = self.clock.now_nanos();
        let result = tokio::time::timeout(self.op_timeout, f(&mut conn)).await;
        self.counters
            .time(op, self.clock.now_nanos().saturating_sub(started));
        match result {
            Ok(Ok(v)) => {
                breaker.on_success();
                self.last_success
                    .store(self.clock.now_nanos(), std::sync::atomic::Ordering::Relaxed);
                L2Result::Done(v)
            }
            Ok(Err(e)) => {
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::Moved)
                    && !self.breakers.is_per_slot()
                    && !self
                        .told_cluster
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::error!(url = %self.url, "l2.url is a node of a Redis Cluster (it answered MOVED): set l2.cluster = true (OPTIMIZE_L2_CLUSTER=true); until then the keys of other nodes' slots fail and count as errors");
                }
                self.failed(breaker, op, &e.to_string());
                L2Result::Failed
            }
            Err(_) => {
                self.failed(breaker, op, "timed out");
                self.rebuild_if_stuck();
                L2Result::Failed
            }
        }
    }

    /// A cluster connection on which nothing has succeeded for [`STUCK_AFTER`] while
    /// operations time out is made again (in the background, once at a time): the `redis`
    /// crate's cluster connection can stay stuck in its own recovery after a node fails.
    fn rebuild_if_stuck(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.breakers.is_per_slot() {
            // One server: the connection manager reconnects by itself.
            return;
        }
        let now = self.clock.now_nanos();
        let stuck = STUCK_AFTER.as_nanos() as u64;
        if now.saturating_sub(self.last_success.load(Relaxed)) < stuck
            || self.rebuilding.swap(true, Relaxed)
        {
            return;
        }
        let (Some((endpoint, timeouts)), Ok(runtime)) = (
            self.endpoint.get().cloned(),
            tokio::runtime::Handle::try_current(),
        ) else {
            self.rebuilding.store(false, Relaxed);
            return;
        };
        let (conn, bulk, rebuilding) = (
            self.conn.clone(),
            self.bulk.clone(),
            self.rebuilding.clone(),
        );
        let breakers = self.breakers.clone();
        let (last_success, clock, url) = (
            self.last_success.clone(),
            self.clock.clone(),
            self.url.clone(),
        );
        runtime.spawn(async move {
            if let Ok(fresh) = endpoint.shared(timeouts).await {
                tracing::warn!(url = %url, "L2 (redis) cluster connection stopped answering; made again");
                if let Some(slot) = conn.get() {
                    slot.replace(fresh);
                }
                let bulk_timeouts = Timeouts {
                    response: bulk_timeout(timeouts.response),
                    ..timeouts
                };
                if let (Some(slot), Ok(fresh)) = (bulk.get(), endpoint.shared(bulk_timeouts).await)
                {
                    slot.replace(fresh);
                }
                // A fresh start: judged stuck again only after another full period, and
                // tried again at once on every slot (a failed node's reopen after 5 failures).
                last_success.store(clock.now_nanos(), Relaxed);
                breakers.reset();
            }
            rebuilding.store(false, Relaxed);
        });
    }

    fn failed(&self, breaker: &Breaker, op: &'static str, error: &str) {
        breaker.on_failure();
        self.counters.error(op);
        tracing::debug!(op, error = %self.url.redact(error), "L2 (redis) operation failed");
    }

    /// The stored bytes of `key`, read with `GETRANGE key 0 max_read`: at most one byte more
    /// than the largest valid entry ever crosses the network or lands in memory, however
    /// large the stored value is (the decoder then rejects it as oversized). A missing key
    /// reads as empty, which no entry is.
    pub async fn get(&self, key: &str) -> L2Result<Option<Vec<u8>>> {
        let last = self.first_last();
        let read = self
            .run("get", key, async |c| {
                let bytes: Vec<u8> = redis::cmd("GETRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(last)
                    .query_async(c)
                    .await?;
                Ok((!bytes.is_empty()).then_some(bytes))
            })
            .await;
        match read {
            L2Result::Done(bytes) => L2Result::Done(self.complete(key, bytes).await),
            other => other,
        }
    }

    /// The last byte index a first read asks for: [`FIRST_READ`] bytes, or the whole entry
    /// limit when it is smaller.
    fn first_last(&self) -> usize {
        self.max_read.min(FIRST_READ - 1)
    }

    /// A first read that filled its range may be the start of a larger value: it is read
    /// whole, up to the entry limit, on the bulk connection (a miss if that fails).
    async fn complete(&self, key: &str, first: Option<Vec<u8>>) -> Option<Vec<u8>> {
        let bytes = first?;
        if bytes.len() <= self.first_last() || self.first_last() >= self.max_read {
            return Some(bytes);
        }
        let mut conn = self.bulk.get().or_else(|| self.conn.get())?.get();
        let started = self.clock.now_nanos();
        let read = tokio::time::timeout(
            bulk_timeout(self.op_timeout),
            redis::cmd("GETRANGE")
                .arg(key)
                .arg(0)
                .arg(self.max_read)
                .query_async::<Vec<u8>>(&mut conn),
        )
        .await;
        self.counters
            .time("get", self.clock.now_nanos().saturating_sub(started));
        match read {
            Ok(Ok(whole)) => (!whole.is_empty()).then_some(whole),
            // A large read that fails is a miss; it says nothing about Redis's health, so the
            // breaker is not told.
            _ => {
                self.counters.error("get");
                None
            }
        }
    }

    /// [`RedisTier::get`] and the generations stored at `generations` (0 where absent), in one
    /// round trip. The generations are `None` when they could not be read (on a cluster, their
    /// node is away): the caller then relies on those it knows.
    pub async fn get_stamped(
        &self,
        key: &str,
        generations: &[String],
    ) -> L2Result<(Option<Vec<u8>>, Option<Vec<u64>>)> {
        let last = self.first_last();
        let read = self
            .run("get", key, async |c| {
                if c.is_cluster() {
                    // The value and the generations live in different slots: two commands,
                    // sent together.
                    let mut value = c.clone();
                    let (bytes, gens) = futures_util::future::join(
                        redis::cmd("GETRANGE")
                            .arg(key)
                            .arg(0)
                            .arg(last)
                            .query_async::<Vec<u8>>(&mut value),
                        self.generations_beside(c, generations),
                    )
                    .await;
                    let bytes = bytes?;
                    return Ok(((!bytes.is_empty()).then_some(bytes), gens));
                }
                let mut pipe = redis::pipe();
                pipe.cmd("GETRANGE").arg(key).arg(0).arg(last);
                if !generations.is_empty() {
                    pipe.cmd("MGET").arg(generations);
                }
                let replies: Vec<redis::Value> = pipe.query_async(c).await?;
                let mut replies = replies.into_iter();
                let bytes: Vec<u8> = match replies.next() {
                    Some(v) => redis::from_redis_value(v)?,
                    None => Vec::new(),
                };
                let gens: Vec<Option<u64>> = match replies.next() {
                    Some(v) => redis::from_redis_value(v)?,
                    None => Vec::new(),
                };
                Ok((
                    (!bytes.is_empty()).then_some(bytes),
                    Some(gens.into_iter().map(Option::unwrap_or_default).collect()),
                ))
            })
            .await;
        match read {
            L2Result::Done((bytes, gens)) => {
                L2Result::Done((self.complete(key, bytes).await, gens))
            }
            other => other,
        }
    }

    /// On a cluster, the generations read beside a value: under the breaker of their own slot
    /// and within half the operation timeout, so a failed node holding them costs a read its
    /// fresh generations (`None`), not its value.
    async fn generations_beside(&self, c: &Connection, keys: &[String]) -> Option<Vec<u64>> {
        let Some(first) = keys.first() else {
            return Some(Vec::new());
        };
        let breaker = self.breaker(first);
        if !breaker.allow() {
            return None;
        }
        let mut c = c.clone();
        match tokio::time::timeout(self.op_timeout / 2, read_generations(&mut c, keys)).await {
            Ok(Ok(gens)) => {
                breaker.on_success();
                Some(gens)
            }
            Ok(Err(e)) => {
                self.failed(breaker, "get", &e.to_string());
                None
            }
            Err(_) => {
                self.failed(breaker, "get", "timed out");
                None
            }
        }
    }

    /// What the Redis user may not do that the tiers need (each with the server's reason),
    /// found when first connected; empty when it may do everything.
    pub fn missing_rights(&self) -> Vec<String> {
        self.missing_rights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether misses take leases.
    pub fn leases(&self) -> Option<Duration> {
        self.lease
    }

    /// [`RedisTier::get_stamped`] that also takes the key's lease when the value is absent
    /// (one round trip: the [`LOOKUP`](crate::cache::lease) script).
    pub async fn get_leased(
        &self,
        key: &str,
        generations: &[String],
        token: u64,
    ) -> L2Result<(Option<Vec<u8>>, Option<Vec<u64>>, LeaseState)> {
        let Some(lease) = self.lease else {
            return self
                .get_stamped(key, generations)
                .await
                .map(|(v, g)| (v, g, LeaseState::NotAsked));
        };
        let last = self.first_last();
        let read = self
            .run("get", key, async |c| {
                let mut call = crate::cache::lease::LOOKUP.key(key);
                call.key(Lease::lease_key(key)).key(Lease::waited_key(key));
                call.arg(last).arg(token).arg(millis(lease)).arg(1);
                let (bytes, state, left, gens) = if c.is_cluster() {
                    // The script's keys share the value's slot; the generations are read
                    // beside it.
                    let mut value = c.clone();
                    let (read, gens) = futures_util::future::join(
                        call.invoke_async::<(Vec<u8>, u8, i64, Vec<u64>)>(&mut value),
                        self.generations_beside(c, generations),
                    )
                    .await;
                    let (bytes, state, left, _) = read?;
                    (bytes, state, left, gens)
                } else {
                    call.key(generations);
                    let (bytes, state, left, gens) =
                        call.invoke_async::<(Vec<u8>, u8, i64, Vec<u64>)>(c).await?;
                    (bytes, state, left, Some(gens))
                };
                Ok((
                    (!bytes.is_empty()).then_some(bytes),
                    gens,
                    lease_state(state, left),
                ))
            })
            .await;
        match read {
            L2Result::Done((bytes, gens, state)) => {
                L2Result::Done((self.complete(key, bytes).await, gens, state))
            }
            other => other,
        }
    }

    /// Takes the key's lease (when a read found no fresh value and did not take it),
    /// counted as a `lease` operation.
    pub async fn acquire(&self, key: &str, token: u64) -> L2Result<LeaseState> {
        let Some(lease) = self.lease else {
            return L2Result::Done(LeaseState::NotAsked);
        };
        self.run("lease", key, async |c| {
            let (state, left): (u8, i64) = crate::cache::lease::ACQUIRE
                .key(Lease::lease_key(key))
                .key(Lease::waited_key(key))
                .arg(token)
                .arg(millis(lease))
                .invoke_async(c)
                .await?;
            Ok(lease_state(state, left))
        })
        .await
    }

    /// Writes a value under its lease and releases it; `Done(false)` when fenced out.
    pub async fn write_leased(&self, write: &L2Write, token: u64) -> L2Result<bool> {
        let (key, value, ttl) = write;
        self.run("put", key, async |c| {
            let written: u8 = crate::cache::lease::WRITE
                .key(key)
                .key(Lease::lease_key(key))
                .key(Lease::waited_key(key))
                .arg(&value[..])
                .arg(ttl.map_or(0, millis))
                .arg(token)
                .arg(&self.lease_channel)
                .invoke_async(c)
                .await?;
            Ok(written == 1)
        })
        .await
    }

    /// Releases a lease without writing a value.
    pub async fn release(&self, lease: &Lease) -> L2Result<()> {
        self.run("put", &lease.key, async |c| {
            crate::cache::lease::RELEASE
                .key(Lease::lease_key(&lease.key))
                .key(Lease::waited_key(&lease.key))
                .arg(lease.token)
                .arg(&self.lease_channel)
                .arg(&lease.key)
                .invoke_async::<()>(c)
                .await
        })
        .await
    }

    /// The generations stored at `keys` (0 where absent).
    pub async fn generations(&self, keys: &[String]) -> L2Result<Vec<u64>> {
        if keys.is_empty() {
            return L2Result::Done(Vec::new());
        }
        self.run("get", &keys[0], async |c| read_generations(c, keys).await)
            .await
    }

    /// Raises the generation at `key` (`INCR`); the new one.
    pub async fn bump(&self, key: &str) -> L2Result<u64> {
        self.run("delete", key, async |c| {
            redis::cmd("INCR").arg(key).query_async(c).await
        })
        .await
    }

    /// `SET key value PX ttl` for every entry: one pipeline to a single server; on a cluster
    /// one command per entry, all sent at once, each under its slot's breaker.
    pub async fn set_many(&self, entries: &[L2Write]) -> L2Result<()> {
        self.set_all(entries, false).await
    }

    /// [`RedisTier::set_many`] with `NX`: writes only where Redis holds nothing for the key
    /// (writes made again after an outage never overwrite a newer value).
    pub async fn set_many_if_absent(&self, entries: &[L2Write]) -> L2Result<()> {
        self.set_all(entries, true).await
    }

    async fn set_all(&self, entries: &[L2Write], if_absent: bool) -> L2Result<()> {
        let Some((first, _, _)) = entries.first() else {
            return L2Result::Done(());
        };
        let set = |(key, value, ttl): &L2Write| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(&value[..]);
            if if_absent {
                cmd.arg("NX");
            }
            if let Some(ttl) = ttl {
                cmd.arg("PX").arg(millis(*ttl));
            }
            cmd
        };
        if self.breakers.is_per_slot() {
            let each = entries.iter().map(|entry| {
                self.run("put", &entry.0, async |c| {
                    set(entry).query_async::<()>(c).await
                })
            });
            return worst(futures_util::future::join_all(each).await);
        }
        self.run("put", first, async |c| {
            let mut pipe = redis::pipe();
            for entry in entries {
                pipe.add_command(set(entry)).ignore();
            }
            pipe.query_async::<()>(c).await
        })
        .await
    }

    /// `DEL key...`.
    pub async fn delete(&self, keys: &[String]) -> L2Result<()> {
        self.delete_and_announce(keys, None).await
    }

    /// `DEL key...`, then the backplane entry announcing it, in one pipeline: other instances
    /// hear of a deletion only once Redis no longer holds the value.
    pub async fn delete_and_announce(
        &self,
        keys: &[String],
        announce: Option<(&Channel, &Notice)>,
    ) -> L2Result<()> {
        let route = match (keys.first(), announce) {
            (Some(key), _) => key.as_str(),
            (None, Some((channel, _))) => channel.stream.as_str(),
            (None, None) => return L2Result::Done(()),
        };
        self.run("delete", route, async |c| {
            let mut deletions = Vec::new();
            if !keys.is_empty() {
                deletions.push(redis::cmd("DEL").arg(keys).clone());
                // A holder computing from before this deletion cannot write its value.
                if let Some(lease) = self.lease {
                    for key in keys {
                        deletions.push(
                            redis::cmd("SET")
                                .arg(Lease::lease_key(key))
                                .arg(crate::cache::lease::TOMBSTONE)
                                .arg("PX")
                                .arg(millis(lease))
                                .clone(),
                        );
                    }
                }
            }
            let mut pipe = redis::pipe();
            if c.is_cluster() {
                // Across slots: the deletions first, then (in the stream's slot) the
                // announcement, which still only goes out once Redis no longer holds them.
                each(c, deletions).await?;
            } else {
                for cmd in deletions {
                    pipe.add_command(cmd).ignore();
                }
            }
            if let Some((channel, notice)) = announce {
                channel.announce(&mut pipe, notice);
            }
            if pipe.is_empty() {
                return Ok(());
            }
            pipe.query_async::<()>(c).await
        })
        .await
    }

    /// Deletes every key starting with `prefix` (SCAN + UNLINK; never KEYS), on every master
    /// of a cluster.
    pub async fn delete_prefix(&self, prefix: &str) -> L2Result<()> {
        let pattern = format!("{}*", escape_glob(prefix));
        // One SCAN + UNLINK round per operation, each with its own timeout, so a large
        // keyspace is walked to the end instead of stopping when one timeout covers it all; a
        // round that fails is counted and ends the walk.
        let first = self
            .run("delete", prefix, async |c| {
                let mut walking = Vec::new();
                for (address, reply) in c.on_every_master(&scan(0, &pattern)).await? {
                    let next = unlink_scanned(c, reply).await?;
                    if next != 0 {
                        walking.push((address, next));
                    }
                }
                Ok(walking)
            })
            .await;
        // The masters still being walked, each at its own cursor.
        let mut walking = match first {
            L2Result::Done(w) => w,
            L2Result::Skipped => return L2Result::Skipped,
            L2Result::Failed => return L2Result::Failed,
        };
        while let Some((address, cursor)) = walking.pop() {
            let round = self
                .run("delete", prefix, async |c| {
                    let reply = c.on_master(&address, &scan(cursor, &pattern)).await?;
                    unlink_scanned(c, reply).await
                })
                .await;
            match round {
                L2Result::Done(0) => {}
                L2Result::Done(next) => walking.push((address, next)),
                L2Result::Skipped => return L2Result::Skipped,
                L2Result::Failed => return L2Result::Failed,
            }
        }
        L2Result::Done(())
    }
}

/// What a set of operations came to: `Failed` if one failed, else `Skipped` if one was
/// skipped, else `Done`.
fn worst(results: Vec<L2Result<()>>) -> L2Result<()> {
    let mut worst = L2Result::Done(());
    for r in results {
        match r {
            L2Result::Failed => return L2Result::Failed,
            L2Result::Skipped => worst = L2Result::Skipped,
            L2Result::Done(()) => {}
        }
    }
    worst
}

fn scan(cursor: u64, pattern: &str) -> redis::Cmd {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(500)
        .clone()
}

/// Unlinks the keys of a `SCAN` reply; its next cursor.
async fn unlink_scanned(c: &mut Connection, reply: redis::Value) -> redis::RedisResult<u64> {
    let (next, keys): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply)?;
    if !keys.is_empty() {
        redis::cmd("UNLINK").arg(keys).query_async::<()>(c).await?;
    }
    Ok(next)
}

/// The generations stored at `keys` (0 where absent).
async fn read_generations(c: &mut Connection, keys: &[String]) -> redis::RedisResult<Vec<u64>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let gens: Vec<Option<u64>> = redis::cmd("MGET").arg(keys).query_async(c).await?;
    Ok(gens.into_iter().map(Option::unwrap_or_default).collect())
}

/// Runs independent commands at once (on a cluster each goes to its key's node); the first
/// error, if any.
async fn each(
    c: &Connection,
    commands: impl IntoIterator<Item = redis::Cmd>,
) -> redis::RedisResult<()> {
    let sent = commands.into_iter().map(|cmd| {
        let mut c = c.clone();
        async move { cmd.query_async::<()>(&mut c).await }
    });
    futures_util::future::try_join_all(sent).await.map(drop)
}

/// Checks, once connected, that the Redis user may run what the tiers run on the namespace's
/// keys and channels; what it may not is kept, logged once, and reported by `/health`.
struct RightsProbe {
    namespace: String,
    missing: Arc<std::sync::Mutex<Vec<String>>>,
}

impl RightsProbe {
    async fn run(&self, conn: &mut Connection, url: &RedisUrl) {
        let ns = &self.namespace;
        let key = format!("{ns}:acl-probe");
        let stream = format!("{ns}:acl-probe:stream");
        let mut probes: Vec<(&str, redis::Cmd)> = Vec::new();
        let mut probe = |what: &'static str, cmd: &mut redis::Cmd| probes.push((what, cmd.clone()));
        probe(
            "SET",
            redis::cmd("SET").arg(&key).arg(1).arg("PX").arg(5_000),
        );
        probe("GETRANGE", redis::cmd("GETRANGE").arg(&key).arg(0).arg(0));
        probe("GET", redis::cmd("GET").arg(&key));
        probe("MGET", redis::cmd("MGET").arg(&key));
        probe("INCR", redis::cmd("INCR").arg(&key));
        probe("EXISTS", redis::cmd("EXISTS").arg(&key));
        probe(
            "SCAN",
            redis::cmd("SCAN")
                .arg(0)
                .arg("MATCH")
                .arg(&key)
                .arg("COUNT")
                .arg(1),
        );
        probe(
            "EVAL (the lease scripts call GET, SET, PTTL and PUBLISH)",
            redis::cmd("EVAL")
                .arg("return redis.call('PTTL', KEYS[1])")
                .arg(1)
                .arg(&key),
        );
        probe(
            "SCRIPT LOAD",
            redis::cmd("SCRIPT").arg("LOAD").arg("return 1"),
        );
        probe(
            "EVALSHA",
            redis::cmd("EVALSHA")
                .arg("e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
                .arg(0),
        );
        probe(
            "XADD",
            redis::cmd("XADD")
                .arg(&stream)
                .arg("MAXLEN")
                .arg(1)
                .arg("*")
                .arg("p")
                .arg(1),
        );
        probe(
            "XREAD",
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1)
                .arg("STREAMS")
                .arg(&stream)
                .arg(0),
        );
        probe("XINFO", redis::cmd("XINFO").arg("STREAM").arg(&stream));
        probe(
            "PUBLISH on the namespace's channels",
            redis::cmd("PUBLISH").arg(lease_channel(ns)).arg(&key),
        );
        probe("DEL", redis::cmd("DEL").arg(&stream));
        probe("UNLINK", redis::cmd("UNLINK").arg(&key));
        let mut missing = Vec::new();
        for (what, cmd) in probes {
            if let Err(e) = cmd.query_async::<redis::Value>(conn).await {
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) {
                    missing.push(format!("{what}: {}", url.redact(&e.to_string())));
                }
            }
        }
        if !missing.is_empty() {
            tracing::error!(
                url = %url,
                missing = %missing.join("; "),
                "the Redis user lacks rights the cache needs on the namespace's keys and channels (docs/tiers.md, \"ACL users\"); the operations it may not run fail and count as errors"
            );
        }
        *self
            .missing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = missing;
    }
}

/// The channel lease releases are published on.
pub fn lease_channel(namespace: &str) -> String {
    format!("{namespace}:leases")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn lease_state(state: u8, left_ms: i64) -> LeaseState {
    match state {
        1 => LeaseState::Acquired,
        2 => LeaseState::Held(Duration::from_millis(left_ms.max(0) as u64)),
        _ => LeaseState::NotAsked,
    }
}

/// Escapes Redis glob metacharacters so a prefix matches literally.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// How long a cluster connection may time out on everything, with no success at all, before
/// it is made again.
pub const STUCK_AFTER: Duration = Duration::from_secs(2);

/// What the connecting task fills in for the tier.
struct Made {
    conn: Arc<OnceLock<Replaceable>>,
    bulk: Arc<OnceLock<Replaceable>>,
    endpoint: Arc<OnceLock<(Endpoint, Timeouts)>>,
    last_success: Arc<std::sync::atomic::AtomicU64>,
    clock: Clock,
}

/// How many bytes a read asks for first; a value that fills them is read again whole on the
/// bulk connection.
pub const FIRST_READ: usize = 64 << 10;

/// The timeout of a large read: ten operation timeouts, at least one second.
fn bulk_timeout(op_timeout: Duration) -> Duration {
    (op_timeout * 10).max(Duration::from_secs(1))
}

fn connect_timeout(options: &RedisOptions) -> Duration {
    options.op_timeout.max(Duration::from_millis(250))
}

async fn connect_until_connected(
    options: RedisOptions,
    made: Made,
    counters: TierCounters,
    attempted: tokio::sync::watch::Sender<bool>,
    probe: RightsProbe,
) {
    let endpoint = match Endpoint::new(&options) {
        Ok(e) => e,
        Err(e) => {
            let _ = attempted.send(true);
            counters.error("connect");
            tracing::error!(url = %options.url, error = %e, "invalid Redis URL or TLS files; L2 stays off");
            return;
        }
    };
    if options.tls.insecure {
        tracing::error!(url = %options.url, "l2.tls_insecure: the Redis server's certificate is NOT verified; anyone on the path can read and forge cache entries — for test setups only");
    }
    let timeouts = Timeouts {
        connect: connect_timeout(&options),
        response: options.op_timeout,
    };
    let mut delay = Duration::from_millis(100);
    loop {
        match endpoint.shared(timeouts).await {
            Ok(conn) => {
                let mut probing = conn.clone();
                made.last_success
                    .store(made.clock.now_nanos(), std::sync::atomic::Ordering::Relaxed);
                let _ = made.endpoint.set((endpoint.clone(), timeouts));
                let _ = made.conn.set(Replaceable::new(conn));
                let _ = attempted.send(true);
                tracing::info!(url = %options.url, cluster = options.cluster, "L2 (redis) connected");
                probe.run(&mut probing, &options.url).await;
                // Until it connects, large values are read on the first connection.
                let bulk_timeouts = Timeouts {
                    response: bulk_timeout(options.op_timeout),
                    ..timeouts
                };
                if let Ok(conn) = endpoint.shared(bulk_timeouts).await {
                    let _ = made.bulk.set(Replaceable::new(conn));
                }
                return;
            }
            Err(e) => {
                let _ = attempted.send(true);
                counters.error("connect");
                let error = options.url.redact(&e.to_string());
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) {
                    // The user may not run what connecting takes (a cluster's slot map):
                    // reported like any missing right, while retrying in case it is granted.
                    let mut missing = probe
                        .missing
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if missing.is_empty() {
                        tracing::error!(url = %options.url, missing = %error, "the Redis user may not connect as the cache needs (docs/tiers.md, \"ACL users\"); L2 stays off until it may");
                        *missing = vec![format!("connecting: {error}")];
                    }
                }
                tracing::warn!(url = %options.url, error = %error, retry_in = ?delay, "L2 (redis) not reachable; serving without it");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_redacted_everywhere() {
        let url = RedisUrl::new("redis://user:hunter2@localhost:6379/0");
        assert_eq!(url.to_string(), "redis://user:***@localhost:6379/0");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(
            url.redact("failed to connect to redis://user:hunter2@localhost"),
            "failed to connect to redis://user:***@localhost"
        );
    }

    #[test]
    fn urls_without_password_are_unchanged() {
        for u in [
            "redis://localhost:6379",
            "redis://user@host/1",
            "redis+unix:///tmp/r.sock",
        ] {
            assert_eq!(RedisUrl::new(u).to_string(), u);
        }
    }

    #[test]
    fn glob_metacharacters_are_escaped() {
        assert_eq!(escape_glob("ns:a*b?[c]"), "ns:a\\*b\\?\\[c\\]");
    }
}
