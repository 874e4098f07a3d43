//! L3: sled on local disk. Survives restarts; expiry is read from each entry's header.
//!
//! A sled error (unwritable or corrupt directory, full disk) disables the tier and is reported
//! once; it never fails a call. A background sweeper removes expired entries and keeps the tier
//! under its size cap by removing the oldest entries first.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::*};

use crate::codec;

/// The sled tree holding the tier's bookkeeping (the backplane's position).
const META_TREE: &str = "optimize-meta";

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
    ///
    /// sled (unmaintained) can panic on a damaged database: the panic is contained. A
    /// directory whose database is damaged (a panic, or sled's corruption errors) is moved
    /// aside to `<dir>.damaged-<unix ms>` and a fresh one is created — a cache may lose its
    /// entries, never the process. Other failures (permissions, a full disk) disable L3.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        errors: crate::cache::TierCounters,
        clock: crate::time::Clock,
    ) -> Self {
        let (db, disabled) = match open_or_replace(dir, "L3 (sled)") {
            Ok((db, replaced)) => {
                if replaced {
                    errors.error("open");
                }
                (Some(db), false)
            }
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

    fn fail(&self, op: &'static str, e: &dyn std::fmt::Display) {
        self.errors.error(op);
        if !self.disabled.swap(true, AcqRel) {
            tracing::error!(dir = %self.dir.display(), op, error = %e, "L3 (sled) failed; disabling it, calls continue without L3");
        }
    }

    /// Runs one sled operation with its error *or panic* contained: either disables L3
    /// (counted under `op`, logged once) and gives `None`, so no sled failure reaches a
    /// caller.
    fn guard<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&sled::Db) -> sled::Result<R>,
    ) -> Option<R> {
        let db = self.db()?;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(db))) {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.fail(op, &e);
                None
            }
            Err(panic) => {
                self.fail(op, &format!("sled panicked: {}", panic_text(&*panic)));
                None
            }
        }
    }

    /// The stored bytes for `key`.
    pub fn get(&self, key: &str) -> Option<sled::IVec> {
        let started = self.clock.now_nanos();
        let got = self.guard("get", |db| db.get(key));
        self.errors
            .time("get", self.clock.now_nanos().saturating_sub(started));
        got.flatten()
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.guard("get", |db| db.contains_key(key))
            .unwrap_or(false)
    }

    /// Applies puts and removals in one atomic batch.
    pub fn apply(&self, puts: &[(String, std::sync::Arc<[u8]>)], removes: &[String]) {
        self.guard("put", |db| {
            let mut batch = sled::Batch::default();
            for (k, v) in puts {
                batch.insert(k.as_bytes(), &v[..]);
            }
            for k in removes {
                batch.remove(k.as_bytes());
            }
            db.apply_batch(batch)
        });
    }

    /// Removes one key.
    pub fn remove(&self, key: &str) {
        self.guard("delete", |db| db.remove(key));
    }

    /// Removes every key starting with `prefix`.
    pub fn remove_prefix(&self, prefix: &str) {
        self.guard("delete", |db| {
            let mut batch = sled::Batch::default();
            for item in db.scan_prefix(prefix) {
                batch.remove(item?.0);
            }
            db.apply_batch(batch)
        });
    }

    /// The `n` most recently written entries whose key starts with `prefix` (by the envelope's
    /// creation time), newest first; entries whose header does not read are skipped. Holds at
    /// most `n` values at a time, however many entries there are.
    pub fn newest_with_prefix(&self, prefix: &str, n: usize) -> Vec<(String, sled::IVec)> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        if n == 0 {
            return Vec::new();
        }
        let newest = self.guard("get", |db| {
            // A min-heap on creation time: the oldest of the kept ones is dropped first.
            let mut kept: BinaryHeap<Reverse<(u64, Vec<u8>)>> = BinaryHeap::with_capacity(n + 1);
            for item in db.scan_prefix(prefix) {
                let (key, bytes) = item?;
                let Ok(header) = crate::codec::read_header(&bytes) else {
                    continue;
                };
                kept.push(Reverse((header.created_at_ms, key.to_vec())));
                if kept.len() > n {
                    kept.pop();
                }
            }
            let mut keys: Vec<(u64, Vec<u8>)> = kept.into_iter().map(|Reverse(k)| k).collect();
            keys.sort_unstable_by_key(|k| Reverse(k.0));
            let mut out = Vec::with_capacity(keys.len());
            for (_, key) in keys {
                if let (Ok(text), Some(bytes)) = (String::from_utf8(key.clone()), db.get(&key)?) {
                    out.push((text, bytes));
                }
            }
            Ok::<_, sled::Error>(out)
        });
        newest.unwrap_or_default()
    }

    /// Whether any entry's key starts with `prefix`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.guard("get", |db| db.scan_prefix(prefix).next().transpose())
            .flatten()
            .is_some()
    }

    /// A value of the tier's own bookkeeping (kept apart from entries, which the sweeper
    /// checks and removes when they are not entries).
    pub fn meta_get(&self, name: &str) -> Option<sled::IVec> {
        self.guard("get", |db| db.open_tree(META_TREE)?.get(name))
            .flatten()
    }

    /// Stores a bookkeeping value (see [`SledTier::meta_get`]).
    pub fn meta_put(&self, name: &str, value: &[u8]) {
        self.guard("put", |db| db.open_tree(META_TREE)?.insert(name, value));
    }

    /// A tag's generation, for a process without L2 (0 when never raised).
    pub fn tag_generation(&self, tag: u64) -> u64 {
        self.meta_get(&format!("gen:tag:{tag:016x}"))
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map_or(0, u64::from_le_bytes)
    }

    /// Raises a tag's generation (see [`SledTier::tag_generation`]).
    pub fn bump_tag_generation(&self, tag: u64) {
        let next = self.tag_generation(tag).saturating_add(1);
        self.meta_put(&format!("gen:tag:{tag:016x}"), &next.to_le_bytes());
    }

    /// Writes everything to disk.
    pub fn flush(&self) {
        self.guard("flush", |db| db.flush());
    }

    /// Removes expired and invalid entries, then the oldest entries while over the size cap.
    pub fn sweep(&self, now_ms: u64) -> SweepReport {
        self.guard("sweep", |db| self.sweep_db(db, now_ms))
            .unwrap_or_default()
    }

    fn sweep_db(&self, db: &sled::Db, now_ms: u64) -> sled::Result<SweepReport> {
        let mut report = SweepReport::default();
        let mut live: Vec<(u64, sled::IVec, u64)> = Vec::new();
        let mut removals = sled::Batch::default();
        for item in db.iter() {
            let (k, v) = item?;
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
        db.apply_batch(removals)?;
        Ok(report)
    }
}

/// Opens (creating) the sled database in `dir`. One that is damaged (sled panicked or
/// reported corruption) is moved aside to `<dir>.damaged-<unix ms>` and a fresh one created,
/// so a store may lose its entries, never the process. `what` names the store in the log.
/// Gives the database and whether it replaced a damaged one.
pub(crate) fn open_or_replace(dir: &Path, what: &str) -> Result<(sled::Db, bool), String> {
    match open_contained(dir) {
        Ok(db) => Ok((db, false)),
        Err(Opened::Damaged(why)) => {
            let aside = dir.with_file_name(format!(
                "{}.damaged-{}",
                dir.file_name()
                    .map_or("sled".into(), |n| n.to_string_lossy()),
                crate::time::unix_ms()
            ));
            tracing::error!(dir = %dir.display(), aside = %aside.display(), error = %why, "{what} is damaged; moving it aside and starting an empty one");
            std::fs::rename(dir, &aside)
                .map_err(|e| e.to_string())
                .and_then(|()| open_contained(dir).map_err(|e| e.to_string()))
                .map(|db| (db, true))
        }
        Err(Opened::Failed(why)) => Err(why),
    }
}

/// Why a database did not open.
enum Opened {
    /// sled panicked or reported corruption: the directory holds a damaged database.
    Damaged(String),
    /// Anything else (permissions, a full disk, not a directory).
    Failed(String),
}

impl std::fmt::Display for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Opened::Damaged(why) | Opened::Failed(why) => f.write_str(why),
        }
    }
}

/// Opens (creating) the database in `dir` with sled's panics contained.
fn open_contained(dir: &Path) -> Result<sled::Db, Opened> {
    std::fs::create_dir_all(dir).map_err(|e| Opened::Failed(e.to_string()))?;
    match std::panic::catch_unwind(|| sled::Config::new().path(dir).open()) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e @ (sled::Error::Corruption { .. } | sled::Error::ReportableBug(_)))) => {
            Err(Opened::Damaged(e.to_string()))
        }
        Ok(Err(e)) => Err(Opened::Failed(e.to_string())),
        Err(panic) => Err(Opened::Damaged(format!(
            "sled panicked while opening: {}",
            panic_text(&*panic)
        ))),
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string panic")
}
