//! L2 over TLS against a real `redis-server --tls-port`, with certificates made by the test:
//! verified with `l2.tls_ca_file`, refused (and reported) without it, a client certificate
//! sent when the server asks for one, and the loud opt-out for test setups.
//!
//! Each case runs in a child process (one runtime per process), configured by the environment.

#[path = "support/child.rs"]
mod child;
#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/skip.rs"]
mod skip;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use redis_server::{RedisServer, TlsFiles};

static EXECUTIONS: AtomicU64 = AtomicU64::new(0);

#[optimize::io(ttl = "10m", tiers = "l1,l2")]
fn greeting(id: u64) -> String {
    EXECUTIONS.fetch_add(1, SeqCst);
    format!("hello {id}")
}

/// Computes 20 values, forgets L1, reads them again; reports where they came from.
#[test]
#[ignore = "run in child processes by the tests below"]
fn child() {
    assert!(
        std::env::var_os("TLS_CHILD").is_some(),
        "run as a child only"
    );
    child::log_warnings_to_stderr();
    // The refused-certificate case never connects: its outcome is what the parent checks.
    let _ = child::wait_for_l2(false);
    let rt = optimize::runtime();
    for id in 0..20 {
        greeting(id);
    }
    optimize::flush();
    greeting_cache().clear_l1();
    for id in 0..20 {
        assert_eq!(greeting(id), format!("hello {id}"));
    }
    let s = rt.tiers().status();
    println!(
        "RESULT connected={} executions={} l2_hits={} health={:?}",
        s.l2_connected as u8,
        EXECUTIONS.load(SeqCst),
        greeting_cache().stats().count(optimize::Outcome::HitL2),
        rt.health().status,
    );
}

struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    /// A CA, a server certificate for 127.0.0.1 signed by it, and a client certificate.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        // Distinct names: a certificate whose subject equals its issuer's looks self-signed.
        let named = |names: Vec<String>, cn: &str| {
            let mut params = rcgen::CertificateParams::new(names).unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            params
        };
        let mut ca_params = named(Vec::new(), "optimize test CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let signed = |names: Vec<String>, cn: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = named(names, cn).signed_by(&key, &ca, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) = signed(
            vec!["127.0.0.1".into(), "localhost".into()],
            "optimize test server",
        );
        let (client, client_key) = signed(vec!["optimize-client".into()], "optimize test client");
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", &ca.pem());
        write("server.pem", &server);
        write("server.key", &server_key);
        write("client.pem", &client);
        write("client.key", &client_key);
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn server(&self, require_client_certs: bool) -> TlsFiles {
        TlsFiles {
            cert: self.dir.path().join("server.pem"),
            key: self.dir.path().join("server.key"),
            ca: self.dir.path().join("ca.pem"),
            require_client_certs,
        }
    }
}

#[derive(Debug)]
struct Outcome {
    connected: bool,
    executions: u64,
    l2_hits: u64,
    health: String,
    stderr: String,
}

fn run(env: &[(&str, &str)]) -> Outcome {
    let (stdout, stderr) = child::run("child", "TLS_CHILD", env);
    let field = |name: &str| child::result_field(&stdout, name);
    Outcome {
        connected: field("connected") == "1",
        executions: field("executions").parse().unwrap(),
        l2_hits: field("l2_hits").parse().unwrap(),
        health: field("health"),
        stderr,
    }
}

fn served_by_l2(o: &Outcome) {
    assert!(o.connected, "{o:?}");
    assert_eq!((o.executions, o.l2_hits), (20, 20), "{o:?}");
}

#[test]
fn l2_over_tls_is_verified_against_the_configured_ca() {
    let certs = Certificates::new();
    let Some(redis) = RedisServer::start_tls(&certs.server(false)) else {
        return;
    };
    let url = redis.tls_url();
    let ca = certs.path("ca.pem");

    // The test CA is in no trust store: the server is refused, L2 stays off, calls go on.
    let unknown = run(&[
        ("OPTIMIZE_REDIS_URL", url.as_str()),
        ("OPTIMIZE_NAMESPACE", "tls-a"),
    ]);
    assert!(!unknown.connected, "{unknown:?}");
    assert_eq!(
        (unknown.executions, unknown.l2_hits),
        (40, 0),
        "{unknown:?}"
    );
    assert_eq!(unknown.health, "Degraded", "{unknown:?}");

    // With the CA file, verified and used.
    let verified = run(&[
        ("OPTIMIZE_REDIS_URL", url.as_str()),
        ("OPTIMIZE_NAMESPACE", "tls-b"),
        ("OPTIMIZE_L2_TLS_CA_FILE", ca.as_str()),
    ]);
    served_by_l2(&verified);

    // The opt-out works, and says so loudly.
    let insecure = run(&[
        ("OPTIMIZE_REDIS_URL", url.as_str()),
        ("OPTIMIZE_NAMESPACE", "tls-c"),
        ("OPTIMIZE_L2_TLS_INSECURE", "true"),
    ]);
    served_by_l2(&insecure);
    assert!(
        insecure.stderr.contains("NOT verified"),
        "the opt-out is logged: {}",
        insecure.stderr
    );
}

#[test]
fn a_client_certificate_is_sent_when_configured() {
    let certs = Certificates::new();
    let Some(redis) = RedisServer::start_tls(&certs.server(true)) else {
        return;
    };
    let url = redis.tls_url();
    let ca = certs.path("ca.pem");
    let without = run(&[
        ("OPTIMIZE_REDIS_URL", url.as_str()),
        ("OPTIMIZE_NAMESPACE", "tls-d"),
        ("OPTIMIZE_L2_TLS_CA_FILE", ca.as_str()),
    ]);
    assert!(
        !without.connected,
        "the server requires a client certificate: {without:?}"
    );
    let (cert, key) = (certs.path("client.pem"), certs.path("client.key"));
    let with = run(&[
        ("OPTIMIZE_REDIS_URL", url.as_str()),
        ("OPTIMIZE_NAMESPACE", "tls-e"),
        ("OPTIMIZE_L2_TLS_CA_FILE", ca.as_str()),
        ("OPTIMIZE_L2_TLS_CLIENT_CERT", cert.as_str()),
        ("OPTIMIZE_L2_TLS_CLIENT_KEY", key.as_str()),
    ]);
    served_by_l2(&with);
}

#[test]
fn tls_files_are_checked_with_the_configuration() {
    let problems = optimize::config::Config::builder()
        .without_file()
        .environment(Vec::<(String, String)>::new())
        .set("l2.url", "redis://127.0.0.1:6379")
        .set("l2.tls_ca_file", "/nonexistent/ca.pem")
        .set("l2.tls_client_cert", "/nonexistent/client.pem")
        .resolve()
        .unwrap_err()
        .to_string();
    for expected in [
        "l2.tls_ca_file: applies to TLS connections only",
        "/nonexistent/ca.pem",
        "l2.tls_client_cert: is set but l2.tls_client_key is not",
    ] {
        assert!(problems.contains(expected), "{expected:?} in {problems}");
    }
    let _ = Path::new("/");
}
