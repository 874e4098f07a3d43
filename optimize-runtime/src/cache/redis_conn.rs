//! Connections to Redis: one node, or a Redis Cluster reached through its seed nodes.
//!
//! The L2 tier, the backplane and the lease listener open their connections here, so none of
//! them builds a `redis` client itself and only this module and [`l2_redis`] know whether Redis
//! is one server or a cluster. On a cluster, the `redis` crate's cluster connection follows
//! slot moves (`MOVED`, `ASK`), refreshes the slot map when a node fails, and splits `MGET`,
//! `DEL` and `UNLINK` by slot; what it cannot split (a pipeline across slots, a `SCAN` of every
//! master) is done by [`l2_redis`] with the calls below.
//!
//! [`l2_redis`]: crate::cache::l2_redis

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::cache::l2_redis::RedisOptions;

/// How long a connection may take to open and each reply to come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening the connection.
    pub connect: Duration,
    /// Each reply.
    pub response: Duration,
}

/// Where Redis is, with the TLS material read once: opens connections of either kind.
#[derive(Clone)]
pub struct Endpoint {
    target: Target,
}

#[derive(Clone)]
enum Target {
    Node(redis::Client),
    Cluster {
        /// One URL per seed node.
        seeds: Vec<String>,
        /// A client per seed, for the lease listener's subscription.
        nodes: Vec<redis::Client>,
        certs: Option<redis::TlsCertificates>,
        insecure: bool,
    },
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("cluster", &self.is_cluster())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Reads the TLS files and checks the URLs; the error is fit for a log line (no password).
    pub fn new(options: &RedisOptions) -> Result<Self, String> {
        let redact = |e: &dyn std::fmt::Display| options.url.redact(&e.to_string());
        let tls = &options.tls;
        let read = |path: &std::path::PathBuf| {
            std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let certs = if tls.ca_file.is_some() || tls.client_cert.is_some() {
            let root_cert = tls.ca_file.as_ref().map(read).transpose()?;
            let client_tls = match (&tls.client_cert, &tls.client_key) {
                (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                    client_cert: read(cert)?,
                    client_key: read(key)?,
                }),
                _ => None,
            };
            Some(redis::TlsCertificates {
                client_tls,
                root_cert,
            })
        } else {
            None
        };
        let node = |url: &str| -> Result<redis::Client, String> {
            let mut url = url.to_owned();
            if tls.insecure && url.starts_with("rediss://") && !url.contains('#') {
                url.push_str("#insecure");
            }
            match &certs {
                None => redis::Client::open(url).map_err(|e| redact(&e)),
                Some(certs) => {
                    redis::Client::build_with_tls(url, certs.clone()).map_err(|e| redact(&e))
                }
            }
        };
        if !options.cluster {
            return Ok(Self {
                target: Target::Node(node(options.url.expose())?),
            });
        }
        let seeds = options.url.nodes();
        let nodes = seeds
            .iter()
            .map(|u| node(u))
            .collect::<Result<Vec<_>, _>>()?;
        let endpoint = Self {
            target: Target::Cluster {
                seeds: seeds.into_iter().map(str::to_owned).collect(),
                nodes,
                certs,
                insecure: tls.insecure,
            },
        };
        // Builds once so a bad list (mixed credentials or TLS modes) is reported now.
        endpoint
            .cluster_client(Timeouts {
                connect: Duration::from_secs(1),
                response: Duration::from_secs(1),
            })
            .map_err(|e| redact(&e))?;
        Ok(endpoint)
    }

    /// Whether Redis is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster { .. })
    }

    /// A client per node this process was told of (one, or each seed of a cluster), for
    /// pub/sub: a cluster forwards every `PUBLISH` to all its nodes, so a subscription on any
    /// one of them hears everything.
    pub fn node_clients(&self) -> Vec<redis::Client> {
        match &self.target {
            Target::Node(client) => vec![client.clone()],
            Target::Cluster { nodes, .. } => nodes.clone(),
        }
    }

    fn cluster_client(&self, timeouts: Timeouts) -> RedisResult<redis::cluster::ClusterClient> {
        let Target::Cluster {
            seeds,
            certs,
            insecure,
            ..
        } = &self.target
        else {
            unreachable!("called for clusters only");
        };
        let mut builder = redis::cluster::ClusterClientBuilder::new(seeds.clone())
            .connection_timeout(timeouts.connect)
            .response_timeout(timeouts.response)
            // Slot moves and a failed node are retried a few times, briefly: the caller's
            // operation timeout bounds it all, and the breaker takes over beyond.
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(200);
        if let Some(certs) = certs {
            builder = builder.certs(certs.clone());
        }
        if *insecure {
            builder = builder.tls(redis::TlsMode::Insecure);
        }
        builder.build()
    }

    /// The connection the tiers share: it reconnects by itself (one node: `redis`'s
    /// connection manager; a cluster: the cluster connection, which also follows slot moves).
    pub async fn shared(&self, timeouts: Timeouts) -> RedisResult<Connection> {
        match &self.target {
            Target::Node(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeouts.connect))
                    .set_response_timeout(Some(timeouts.response))
                    .set_number_of_retries(2);
                ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map(Connection::Managed)
            }
            Target::Cluster { .. } => self.cluster(timeouts).await,
        }
    }

    /// A connection of its own, for a blocking read (the backplane's `XREAD BLOCK`) that must
    /// not hold up anyone else's commands; it reports a lost connection instead of hiding it.
    pub async fn dedicated(&self, timeouts: Timeouts) -> RedisResult<Connection> {
        match &self.target {
            Target::Node(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeouts.connect))
                    .set_response_timeout(Some(timeouts.response));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Connection::Plain)
            }
            Target::Cluster { .. } => self.cluster(timeouts).await,
        }
    }

    async fn cluster(&self, timeouts: Timeouts) -> RedisResult<Connection> {
        let client = self.cluster_client(timeouts)?;
        client
            .get_async_connection()
            .await
            .map(|c| Connection::Cluster(Box::new(c)))
    }
}

/// A connection that can be replaced while in use: a cluster connection can get stuck in its
/// own recovery after a node fails (every request then times out, on every node; redis-rs
/// issue #2092), and is then rebuilt.
pub struct Replaceable(std::sync::RwLock<Connection>);

impl Replaceable {
    /// Holds `conn`.
    pub fn new(conn: Connection) -> Self {
        Self(std::sync::RwLock::new(conn))
    }

    /// A handle on the current connection.
    pub fn get(&self) -> Connection {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts `conn` in place of the current connection.
    pub fn replace(&self, conn: Connection) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = conn;
    }
}

/// A connection to one node or to a cluster; commands go through it the same way.
#[derive(Clone)]
pub enum Connection {
    /// One node, reconnecting by itself.
    Managed(ConnectionManager),
    /// One node, failing when the connection is lost.
    Plain(MultiplexedConnection),
    /// A cluster.
    Cluster(Box<ClusterConnection>),
}

impl Connection {
    /// Whether this is a cluster connection (a pipeline must then stay in one slot).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }

    /// Sends `cmd` to every master of a cluster (to the one node otherwise); each master's
    /// reply with its address (`host:port`; empty for one node).
    pub async fn on_every_master(&mut self, cmd: &Cmd) -> RedisResult<Vec<(String, Value)>> {
        let Connection::Cluster(c) = self else {
            return Ok(vec![(String::new(), cmd.query_async(self).await?)]);
        };
        let reply = c
            .route_command(
                cmd.clone(),
                RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
            )
            .await?;
        let Value::Map(replies) = reply else {
            return Err((
                redis::ErrorKind::UnexpectedReturnType,
                "a command sent to every master did not answer with one reply per master",
            )
                .into());
        };
        replies
            .into_iter()
            .map(|(addr, value)| Ok((redis::from_redis_value(addr)?, value)))
            .collect()
    }

    /// Sends `cmd` to the master at `address` (as [`Connection::on_every_master`] named it).
    pub async fn on_master(&mut self, address: &str, cmd: &Cmd) -> RedisResult<Value> {
        let Connection::Cluster(c) = self else {
            return cmd.query_async(self).await;
        };
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
            .ok_or((redis::ErrorKind::Client, "a node address without a port"))?;
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
        c.route_command(cmd.clone(), route).await
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Managed(c) => c.req_packed_command(cmd),
            Connection::Plain(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Managed(c) => c.get_db(),
            Connection::Plain(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// A key in the same cluster slot as `key`, for an operation that needs both in one script:
/// `{key}{suffix}{{key}}`. Keys of this crate hold no braces (namespaces and function names
/// refuse them), so the braces added here are the key's only hash tag and the slot is
/// `key`'s; the result still starts with `key`, so it stays in the namespace (ACL `~ns:*`)
/// and under the function's prefix.
///
/// ```
/// use optimize_runtime::cache::redis_conn::beside;
///
/// assert_eq!(beside("app:f:1", ":lease"), "app:f:1:lease{app:f:1}");
/// ```
pub fn beside(key: &str, suffix: &str) -> String {
    format!("{key}{suffix}{{{key}}}")
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the text between the
/// first `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
///
/// ```
/// use optimize_runtime::cache::redis_conn::slot;
///
/// assert_eq!(slot("foo"), 12182); // as `CLUSTER KEYSLOT foo` answers
/// assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
/// assert_eq!(slot("a{}b"), slot("a{}b")); // an empty tag: the whole key
/// ```
pub fn slot(key: &str) -> u16 {
    let key = key.as_bytes();
    let tagged = key.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16_xmodem(tagged.unwrap_or(key)) % 16384
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_cluster_specification() {
        // The specification's check value of CRC16/XMODEM.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        let key = "app:f:v1:00:01";
        for suffix in [":lease", ":lease:w"] {
            assert_eq!(slot(&beside(key, suffix)), slot(key));
        }
        assert_eq!(slot("x{a}y"), slot("a"));
    }
}
