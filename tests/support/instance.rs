//! Another process of the application: a child (this test or bench binary run again) driven
//! by commands on its stdin, answering each with a line that starts with `@@ `.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long any one answer may take: far beyond what a working run needs.
pub const ANSWER_BOUND: Duration = Duration::from_secs(20);

/// The parent's handle on one child process.
pub struct Instance {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Instance {
    /// Starts this binary again with `args`, the optimize environment cleared, and `env`.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(args)
            .env_remove("OPTIMIZE_REDIS_URL")
            .env_remove("OPTIMIZE_L3_DIR")
            .env_remove("OPTIMIZE_L3")
            .env_remove("OPTIMIZE_L2_BACKPLANE")
            .env_remove("OPTIMIZE_L2_CLUSTER")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                // libtest may print `test instance ... ` before the first answer.
                if let Some(at) = line.find("@@ ") {
                    if tx.send(line[at + 3..].to_owned()).is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// Sends one command.
    pub fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next answer, which must start with `word`; its remainder.
    pub fn expect(&mut self, word: &str) -> String {
        let line = self
            .lines
            .recv_timeout(ANSWER_BOUND)
            .unwrap_or_else(|_| panic!("no answer `{word}` within {ANSWER_BOUND:?}"));
        line.strip_prefix(word)
            .unwrap_or_else(|| panic!("expected `{word}`, got `{line}`"))
            .trim()
            .to_owned()
    }

    /// The next answer starting with `word`, skipping others.
    pub fn expect_skipping(&mut self, word: &str) -> String {
        let deadline = Instant::now() + ANSWER_BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer `{word}` within {ANSWER_BOUND:?}"));
            if let Some(rest) = line.strip_prefix(word) {
                return rest.trim().to_owned();
            }
        }
    }

    /// Sends `command` and returns the answer, which must start with `word`.
    pub fn ask(&mut self, command: &str, word: &str) -> String {
        self.send(command);
        self.expect(word)
    }

    /// `field=value` from an answer.
    pub fn field(answer: &str, name: &str) -> String {
        answer
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {answer}"))
            .to_owned()
    }

    /// A numeric `field=value` from an answer.
    pub fn number(answer: &str, name: &str) -> u64 {
        Self::field(answer, name).parse().unwrap()
    }

    /// Polls `status` until `field` satisfies `ok`.
    pub fn wait_status(&mut self, field: &str, ok: impl Fn(u64) -> bool) {
        let deadline = Instant::now() + ANSWER_BOUND;
        loop {
            let v = Self::number(&self.ask("status", "status"), field);
            if ok(v) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{field} = {v} after {ANSWER_BOUND:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to shut optimize down and exit.
    pub fn quit(mut self) {
        self.ask("quit", "bye");
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Unix time in microseconds (the processes share the host's clock).
pub fn unix_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

/// The `q` quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// `n` ids whose tags `{prefix}{id}` fall on distinct bits of L1's tag set, so that
/// invalidating one of those tags removes exactly one entry from an L1 holding them all.
pub fn distinct_tag_ids(prefix: &str, n: usize) -> Vec<u64> {
    let mut bits = 0u64;
    (0..100_000)
        .filter(|id| {
            let tag = format!("{prefix}{id}");
            let bit = optimize::cache::l1::tag_bit(optimize::cache::generations::tag_hash(&tag));
            let fresh = bits & bit == 0;
            bits |= bit;
            fresh
        })
        .take(n)
        .collect()
}
