//! A real `redis-server` for tests: started on a free loopback port, killed when dropped.
//!
//! Without `redis-server` on the PATH, a test that needs it fails (`scripts/test.sh` installs
//! it), unless the run sets `SKIP_SERVICE_TESTS=1` on purpose.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    password: Option<String>,
    dir: tempfile::TempDir,
    /// More arguments (TLS), and the TLS port they open.
    extra: Vec<String>,
    tls_port: Option<u16>,
}

/// PEM files a TLS server is started with.
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Whether clients must present a certificate signed by `ca`.
    pub require_client_certs: bool,
}

fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|p| p.join("redis-server"))
        .find(|p| p.is_file())
}

/// Whether tests needing Redis can run; a test fails when they cannot (see
/// `skip::service_or_skip` for the explicit way out).
pub fn available() -> bool {
    crate::skip::service_or_skip(binary().is_some(), "redis-server")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// Starts a server; `None` only when the run skips missing services on purpose.
    pub fn start() -> Option<Self> {
        Self::start_with(None)
    }

    /// Starts a server on a given port (e.g. one a client was already told about).
    pub fn start_on(port: u16) -> Option<Self> {
        if !available() {
            return None;
        }
        let mut server = Self {
            child: None,
            port,
            password: None,
            dir: tempfile::tempdir().unwrap(),
            extra: Vec::new(),
            tls_port: None,
        };
        server.spawn();
        Some(server)
    }

    /// Starts a server that also listens for TLS (Debian's build has it) with `files`; the
    /// plain port stays open for the harness's own checks.
    pub fn start_tls(files: &TlsFiles) -> Option<Self> {
        if !available() {
            return None;
        }
        let tls_port = free_port();
        let path = |p: &PathBuf| p.display().to_string();
        let client_certs = if files.require_client_certs {
            "yes"
        } else {
            "no"
        };
        let extra = [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &path(&files.cert),
            "--tls-key-file",
            &path(&files.key),
            "--tls-ca-cert-file",
            &path(&files.ca),
            "--tls-auth-clients",
            client_certs,
        ];
        Some(Self::start_extra(&extra, Some(tls_port)))
    }

    /// Starts a server with more arguments, on a free port.
    fn start_extra(extra: &[&str], tls_port: Option<u16>) -> Self {
        let mut server = Self {
            child: None,
            port: free_port(),
            password: None,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
            tls_port,
        };
        server.spawn();
        server
    }

    /// Starts a server with cluster mode on (`--cluster-enabled yes`), its bus on a free
    /// port, failing over a dead master after `node_timeout`; [`crate::redis_cluster`] joins
    /// such servers into a cluster.
    pub fn start_cluster_node(node_timeout: Duration) -> Option<Self> {
        if !available() {
            return None;
        }
        let extra = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-port",
            &free_port().to_string(),
            "--cluster-node-timeout",
            &node_timeout.as_millis().to_string(),
            // The live masters keep serving their slots when another one is lost, as
            // docs/tiers.md advises.
            "--cluster-require-full-coverage",
            "no",
        ];
        Some(Self::start_extra(&extra, None))
    }

    /// The `rediss://` URL of a TLS server.
    pub fn tls_url(&self) -> String {
        format!(
            "rediss://127.0.0.1:{}",
            self.tls_port.expect("started with TLS")
        )
    }

    /// A loopback port nothing listens on (yet).
    pub fn unused_port() -> u16 {
        free_port()
    }

    /// Starts a server that requires `password`.
    pub fn start_with_password(password: &str) -> Option<Self> {
        Self::start_with(Some(password.to_owned()))
    }

    fn start_with(password: Option<String>) -> Option<Self> {
        if !available() {
            return None;
        }
        let mut server = Self {
            child: None,
            port: free_port(),
            extra: Vec::new(),
            tls_port: None,
            password,
            dir: tempfile::tempdir().unwrap(),
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(binary().expect("redis-server"));
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(self.dir.path())
        .args(&self.extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        self.child = Some(cmd.spawn().expect("start redis-server"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server did not answer on port {} within 10 s",
            self.port
        );
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let cmd = match &self.password {
            Some(p) => format!("AUTH {p}\r\nPING\r\n"),
            None => "PING\r\n".to_owned(),
        };
        if s.write_all(cmd.as_bytes()).is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        let mut got = String::new();
        while !got.contains("PONG") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        true
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://[:password@]127.0.0.1:port`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Whether the server runs (it was not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (as a crash would: SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered, as with a
    /// server stuck in a long command. [`RedisServer::resume`] (or drop) ends it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server answer again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Starts the server again on the same port (empty: it keeps no data).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A plain client, for reading and tampering with what the library wrote.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
