//! A real Redis Cluster for tests: `redis-server --cluster-enabled yes` on free loopback
//! ports, joined with `redis-cli --cluster create`, every node killed when dropped.

#![allow(dead_code, unreachable_pub)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis_server::RedisServer;

/// How long a node may be unreachable before the cluster fails it over (short, so a test
/// sees a replica promoted within seconds).
pub const NODE_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long the cluster may take to form or to settle.
const SETTLE: Duration = Duration::from_secs(60);

pub struct RedisCluster {
    /// Masters first, then replicas (as `redis-cli --cluster create` assigns them).
    nodes: Vec<RedisServer>,
    masters: usize,
}

impl RedisCluster {
    /// `masters` masters with `replicas` replicas each; `None` only when the run skips
    /// missing services on purpose.
    pub fn start(masters: usize, replicas: usize) -> Option<Self> {
        let cli = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|p| p.join("redis-cli").is_file())
        });
        if !crate::skip::service_or_skip(cli, "redis-cli") {
            return None;
        }
        let total = masters * (1 + replicas);
        let mut nodes = Vec::with_capacity(total);
        for _ in 0..total {
            nodes.push(RedisServer::start_cluster_node(NODE_TIMEOUT)?);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port()));
        }
        create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = run_bounded(create, SETTLE);
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes, masters };
        cluster.wait_until("the cluster formed", |c| c.all_ok());
        if replicas > 0 {
            cluster.wait_until("every replica synced", |c| c.replicas_synced());
        }
        Some(cluster)
    }

    /// The seed nodes, as `l2.url` takes them with `l2.cluster = true`.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node at `index` (masters first, as created).
    pub fn node(&mut self, index: usize) -> &mut RedisServer {
        &mut self.nodes[index]
    }

    /// The index of the master serving `key` (each master answers `EXISTS` for its own slots
    /// and `MOVED` for the others).
    pub fn master_of(&self, key: &str) -> usize {
        (0..self.masters)
            .find(|i| {
                let node = &self.nodes[*i];
                node.is_running()
                    && redis::cmd("EXISTS")
                        .arg(key)
                        .query::<i64>(&mut node.client())
                        .is_ok()
            })
            .unwrap_or_else(|| panic!("no running master serves {key}"))
    }

    /// Every node still running.
    pub fn running(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    /// The number of masters the cluster was created with.
    pub fn masters(&self) -> usize {
        self.masters
    }

    /// `CLUSTER INFO`-style text of one node (`None` when it does not answer).
    pub fn info(node: &RedisServer, section: &str) -> Option<String> {
        let client = redis::Client::open(node.url()).ok()?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()?;
        let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
        match section {
            "cluster" => redis::cmd("CLUSTER").arg("INFO").query(&mut conn).ok(),
            other => redis::cmd("INFO").arg(other).query(&mut conn).ok(),
        }
    }

    fn all_ok(&self) -> bool {
        self.running().all(|n| {
            Self::info(n, "cluster").is_some_and(|i| {
                i.contains("cluster_state:ok") && i.contains("cluster_slots_ok:16384")
            })
        })
    }

    fn replicas_synced(&self) -> bool {
        self.running().all(|n| {
            Self::info(n, "replication")
                .is_some_and(|i| i.contains("role:master") || i.contains("master_link_status:up"))
        })
    }

    /// Waits (at most a minute) until `ready`, else fails the test naming `what`.
    pub fn wait_until(&self, what: &str, ready: impl Fn(&Self) -> bool) -> Duration {
        let started = Instant::now();
        while !ready(self) {
            assert!(started.elapsed() < SETTLE, "{what}: not within {SETTLE:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        started.elapsed()
    }

    /// Whether the running nodes serve every slot with as many masters as at the start
    /// (after a master died: once a replica has been promoted).
    pub fn serves_every_slot(&self) -> bool {
        let masters = self
            .running()
            .filter(|n| Self::info(n, "replication").is_some_and(|i| i.contains("role:master")))
            .count();
        masters == self.masters && self.all_ok()
    }

    /// A cluster client, for reading what the library wrote.
    pub fn client(&self) -> redis::cluster::ClusterConnection {
        let seeds: Vec<String> = self.running().map(RedisServer::url).collect();
        redis::cluster::ClusterClient::new(seeds)
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Every key of every running master matching `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for n in self.running() {
            if Self::info(n, "replication").is_some_and(|i| i.contains("role:master")) {
                let mut conn = n.client();
                let mut some: Vec<String> =
                    redis::cmd("KEYS").arg(pattern).query(&mut conn).unwrap();
                keys.append(&mut some);
            }
        }
        keys
    }
}

/// Runs `cmd`, killing it when it outlives `bound`.
fn run_bounded(mut cmd: Command, bound: Duration) -> std::process::Output {
    let child = cmd
        .spawn()
        .expect("redis-cli runs (it comes with redis-server)");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(bound) {
        Ok(out) => out.expect("redis-cli's output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("redis-cli did not finish within {bound:?}");
        }
    }
}
