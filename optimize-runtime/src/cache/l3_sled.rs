//! L3: sled on local disk. Survives restarts; expiry is read from each entry's header.
//!
//! A sled error (unwritable or corrupt directory, full disk) disables the tier and is reported
//! once; it never fails a call. A background sweeper removes expired entries and keeps the tier
//! under its size cap by removing the oldest entries first.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::*};

use crate::codec;

/// The L3 tier. Every operation is a no-op once the tier is disabled.
pub struct SledTier {
    db: Option<sled::Db>,
    dir: PathBuf,
    max_bytes: u64,
    disabled: AtomicBool,
    errors: crate::cache::TierCounters,
    clock: crate::time::Clock,
}

impl std::fmt::Debug for SledTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledTier")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .field("disabled", &self.is_disabled())
            .finish()
    }
}

/// What a sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Entries removed because they had expired.
    pub expired: u64,
    /// Entries removed because their header was not valid.
    pub invalid: u64,
    /// Entries removed to get under the size cap.
    pub evicted: u64,
    /// Bytes (keys and values) left after the sweep.
    pub bytes: u64,
}

impl SledTier {
    /// Opens (or creates) the tier in `dir`. On failure the tier is returned disabled, and the
    /// error is reported; callers keep working without L3.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        errors: crate::cache::TierCounters,
        clock: crate::time::Clock,
    ) -> Self {
        let db = std::fs::create_dir_all(dir)
            .map_err(sled::Error::from)
            .and_then(|()| sled::Config::new().path(dir).open());
        let (db, disabled) = match db {
            Ok(db) => (Some(db), false),
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "L3 (sled) could not be opened; continuing without it");
                errors.error("open");
                (None, true)
            }
        };
        Self {
            db,
            dir: dir.to_owned(),
            max_bytes,
            disabled: AtomicBool::new(disabled),
            errors,
            clock,
        }
    }

    /// The directory of the tier.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the tier has been disabled by an error.
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Relaxed)
    }

    fn db(&self) -> Option<&sled::Db> {
        if self.is_disabled() {
            None
        } else {
            self.db.as_ref()
        }
    }

    fn fail(&self, op: &'static str, e: &sled::Error) {
        self.errors.error(op);
        if !self.disabled.swap(true, AcqRel) {
            tracing::error!(dir = %self.dir.display(), op, error = %e, "L3 (sled) failed; disabling it, calls continue without L3");
        }
    }

    /// The stored bytes for `key`.
    pub fn get(&self, key: &str) -> Option<sled::IVec> {
        let started = self.clock.now_nanos();
        let got = self.db()?.get(key);
        self.errors
            .time("get", self.clock.now_nanos().saturating_sub(started));
        match got {
            Ok(v) => v,
            Err(e) => {
                self.fail("get", &e);
                None
            }
        }
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.db()
            .is_some_and(|db| db.contains_key(key).unwrap_or(false))
    }

    /// Applies puts and removals in one atomic batch.
    pub fn apply(&self, puts: &[(String, std::sync::Arc<[u8]>)], removes: &[String]) {
        let Some(db) = self.db() else { return };
        let mut batch = sled::Batch::default();
        for (k, v) in puts {
            batch.insert(k.as_bytes(), &v[..]);
        }
        for k in removes {
            batch.remove(k.as_bytes());
        }
        if let Err(e) = db.apply_batch(batch) {
            self.fail("put", &e);
        }
    }

    /// Removes one key.
    pub fn remove(&self, key: &str) {
        if let Some(db) = self.db() {
            if let Err(e) = db.remove(key) {
                self.fail("delete", &e);
            }
        }
    }

    /// Removes every key starting with `prefix`.
    pub fn remove_prefix(&self, prefix: &str) {
        let Some(db) = self.db() else { return };
        let mut batch = sled::Batch::default();
        for item in db.scan_prefix(prefix) {
            match item {
                Ok((k, _)) => batch.remove(k),
                Err(e) => return self.fail("delete", &e),
            }
        }
        if let Err(e) = db.apply_batch(batch) {
            self.fail("delete", &e);
        }
    }

    /// Writes everything to disk.
    pub fn flush(&self) {
        if let Some(db) = self.db() {
            if let Err(e) = db.flush() {
                self.fail("flush", &e);
            }
        }
    }

    /// Removes expired and invalid entries, then the oldest entries while over the size cap.
    pub fn sweep(&self, now_ms: u64) -> SweepReport {
        let mut report = SweepReport::default();
        let Some(db) = self.db() else { return report };
        let mut live: Vec<(u64, sled::IVec, u64)> = Vec::new();
        let mut removals = sled::Batch::default();
        for item in db.iter() {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    self.fail("sweep", &e);
                    return report;
                }
            };
            match codec::read_header(&v) {
                Ok(h) if h.expires_at_ms != 0 && now_ms >= h.expires_at_ms => {
                    report.expired += 1;
                    removals.remove(k);
                }
                Ok(h) => {
                    let size = (k.len() + v.len()) as u64;
                    report.bytes += size;
                    live.push((h.created_at_ms, k, size));
                }
                Err(_) => {
                    report.invalid += 1;
                    removals.remove(k);
                }
            }
        }
        if report.bytes > self.max_bytes {
            live.sort_by_key(|(created, _, _)| *created);
            for (_, k, size) in live {
                if report.bytes <= self.max_bytes {
                    break;
                }
                removals.remove(k);
                report.bytes -= size;
                report.evicted += 1;
            }
        }
        if let Err(e) = db.apply_batch(removals) {
            self.fail("sweep", &e);
        }
        report
    }
}
