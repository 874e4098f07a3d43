//! The demo (`examples/demo.rs`) run as a service for the tests that read it from outside:
//! a short run (300 requests), then it keeps serving (with a trickle of requests) until the
//! test drops it.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The token the demo's monitor is started with.
pub const TOKEN: &str = "demo-test-token";

/// How long the demo may take to start and finish its run.
const START_BOUND: Duration = Duration::from_secs(120);

/// A running demo.
pub struct Demo {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its stdout so far.
    pub output: Vec<String>,
    lines: mpsc::Receiver<String>,
}

/// The demo binary `cargo test --workspace` builds (examples are built with the tests).
pub fn demo_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let demo = profile_dir.join("examples").join("demo");
    assert!(
        demo.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds the examples) \
         or build it with `cargo build --example demo`",
        demo.display()
    );
    demo
}

impl Demo {
    /// Starts the demo with `env` added and waits until its run is over (it then serves
    /// for `linger` seconds). `wait_for_run`: false returns as soon as the address is known.
    pub fn start(env: &[(&str, &str)], linger: u64, wait_for_run: bool) -> Demo {
        let mut command = Command::new(demo_binary());
        for (k, _) in std::env::vars() {
            if k.starts_with("OPTIMIZE_") {
                command.env_remove(k);
            }
        }
        let mut child = command
            .env("OPTIMIZE_DEMO_REQUESTS", "300")
            .env("OPTIMIZE_DEMO_LINGER", linger.to_string())
            .env("OPTIMIZE_MONITOR_TOKEN", TOKEN)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the demo starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut demo = Demo {
            child,
            base: String::new(),
            output: Vec::new(),
            lines,
        };
        let line = demo.wait_for_line("dashboard: ");
        demo.base = line
            .trim_start_matches("dashboard: ")
            .trim_end_matches("/dashboard")
            .to_owned();
        if wait_for_run {
            demo.wait_for_line("monitor: serving for");
        }
        demo
    }

    /// Reads the demo's output until a line starts with `prefix`; that line.
    pub fn wait_for_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + START_BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.output.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "the demo printed no line starting with {prefix:?} within {START_BOUND:?}:\n{}",
                    self.output.join("\n")
                ),
            }
        }
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
