//! The monitor's endpoint cannot be held by slow or idle clients: connections beyond the
//! limit are closed on accept, a client that never finishes its headers is dropped. In its
//! own test binary, since it fills the endpoint's connection slots on purpose.

#[path = "support/install.rs"]
mod install;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use optimize::monitor::http::{HEADER_TIMEOUT, MAX_CONNECTIONS};

/// Reads until the server closes the connection (`true`) or `within` passes (`false`).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => {}
        }
    }
    false
}

fn status_of(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn slow_and_idle_clients_cannot_hold_the_endpoint() {
    let runtime = install::once(&[
        ("monitor.enabled", "true"),
        ("monitor.interval", "1h"),
        ("monitor.addr", "127.0.0.1:0"),
    ]);
    let addr = runtime.monitor().unwrap().http_addr().unwrap();
    assert_eq!(status_of(addr, "/health"), "HTTP/1.1 200 OK");
    // Idle connections beyond the limit are closed as soon as they are accepted.
    let mut idle: Vec<TcpStream> = (0..MAX_CONNECTIONS + 16)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let refused = idle
        .iter_mut()
        .map(|s| closed_within(s, Duration::from_millis(200)))
        .filter(|closed| *closed)
        .count();
    assert!(
        refused >= 16,
        "only {refused} of the extra connections were closed"
    );
    drop(idle);
    // A client that never finishes its headers is dropped after the header timeout.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(
        closed_within(&mut slow, HEADER_TIMEOUT * 3),
        "a slow-header client kept its connection"
    );
    // Normal requests are served again.
    assert_eq!(status_of(addr, "/health"), "HTTP/1.1 200 OK");
}
