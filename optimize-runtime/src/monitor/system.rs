//! System metrics, sampled with sysinfo on the monitor's interval.
//!
//! CPU use is a difference between two readings, so the first sample has none; every other
//! field is read each time. A reading that fails (a platform without load averages, a
//! sandbox hiding `/proc`) is left out rather than reported as zero.

use std::path::{Path, PathBuf};

use sysinfo::{Disks, Networks, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Free and total space of one volume.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DiskStats {
    /// The path asked about (the L3 directory).
    pub path: PathBuf,
    /// Bytes available to this process.
    pub available: u64,
    /// Size of the volume.
    pub total: u64,
}

/// One reading of the system and this process.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SystemStats {
    /// CPU use of the whole system, 0..1 (absent on the first sample).
    pub cpu_usage: Option<f64>,
    /// System memory in use, bytes (total minus available).
    pub memory_used: Option<f64>,
    /// System memory, bytes.
    pub memory_total: Option<f64>,
    /// Resident memory of this process, bytes.
    pub process_resident: Option<f64>,
    /// CPU use of this process over all cores, 0..1 (absent on the first sample).
    pub process_cpu: Option<f64>,
    /// Load average over 1, 5 and 15 minutes.
    pub load_average: Option<[f64; 3]>,
    /// Bytes received on every interface.
    pub network_received: Option<f64>,
    /// Bytes sent on every interface.
    pub network_transmitted: Option<f64>,
    /// Volumes of the watched paths.
    pub disks: Vec<DiskStats>,
}

impl SystemStats {
    /// Memory in use over total, 0..1.
    pub fn memory_ratio(&self) -> Option<f64> {
        match (self.memory_used, self.memory_total) {
            (Some(used), Some(total)) if total > 0.0 => Some(used / total),
            _ => None,
        }
    }
}

/// Keeps sysinfo's state between samples.
pub struct SystemSampler {
    system: Option<System>,
    pid: Option<Pid>,
    networks: Option<Networks>,
    disks: Option<Disks>,
    watched: Vec<PathBuf>,
    samples: u64,
}

impl std::fmt::Debug for SystemSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemSampler")
            .field("watched", &self.watched)
            .field("samples", &self.samples)
            .finish_non_exhaustive()
    }
}

impl SystemSampler {
    /// A sampler reporting free space of the volumes holding `watched` paths.
    pub fn new(watched: Vec<PathBuf>) -> Self {
        let warn = |what: &str, e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "optimize: {what} cannot be read; its metrics are left out");
        };
        let system = System::new()
            .inspect_err(|e| warn("system CPU and memory", e))
            .ok();
        let pid = sysinfo::get_current_pid()
            .inspect_err(|e| warn("this process", e))
            .ok();
        let networks = Networks::new_with_refreshed_list()
            .inspect_err(|e| warn("network interfaces", e))
            .ok();
        let disks = Disks::new_with_refreshed_list()
            .inspect_err(|e| warn("disks", e))
            .ok();
        Self {
            system,
            pid,
            networks,
            disks,
            watched,
            samples: 0,
        }
    }

    /// Reads everything once.
    pub fn sample(&mut self) -> SystemStats {
        let first = self.samples == 0;
        self.samples += 1;
        let mut out = SystemStats::default();
        if let Some(system) = &mut self.system {
            system.refresh_memory();
            system.refresh_cpu_usage();
            let total = system.total_memory();
            if total > 0 {
                out.memory_total = Some(total as f64);
                out.memory_used = Some(total.saturating_sub(system.available_memory()) as f64);
            }
            if !first {
                out.cpu_usage = Some(f64::from(system.global_cpu_usage()) / 100.0);
            }
            if let Some(pid) = self.pid {
                system.refresh_processes_specifics(
                    ProcessesToUpdate::Some(&[pid]),
                    false,
                    ProcessRefreshKind::nothing().with_memory().with_cpu(),
                );
                if let Some(process) = system.process(pid) {
                    out.process_resident = Some(process.memory() as f64);
                    let cores = system.cpus().len().max(1) as f64;
                    if !first {
                        out.process_cpu = Some(f64::from(process.cpu_usage()) / 100.0 / cores);
                    }
                }
            }
        }
        if let Ok(load) = System::load_average() {
            out.load_average = Some([load.one, load.five, load.fifteen]);
        }
        if let Some(networks) = &mut self.networks {
            networks.refresh(true);
            let (rx, tx) = networks.values().fold((0u64, 0u64), |(rx, tx), n| {
                (rx + n.total_received(), tx + n.total_transmitted())
            });
            out.network_received = Some(rx as f64);
            out.network_transmitted = Some(tx as f64);
        }
        if let Some(disks) = &mut self.disks {
            disks.refresh(true);
            for path in &self.watched {
                if let Some(disk) = volume_of(disks, path) {
                    out.disks.push(DiskStats {
                        path: path.clone(),
                        available: disk.available_space(),
                        total: disk.total_space(),
                    });
                }
            }
        }
        out
    }
}

/// The disk whose mount point is the longest prefix of `path`.
fn volume_of<'a>(disks: &'a Disks, path: &Path) -> Option<&'a sysinfo::Disk> {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    disks
        .iter()
        .filter(|d| path.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let mut sampler = SystemSampler::new(vec![dir.path().to_path_buf()]);
        let first = sampler.sample();
        assert!(first.cpu_usage.is_none(), "CPU use needs two readings");
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let s = sampler.sample();
        let ratio = s.memory_ratio().expect("memory is readable on Linux");
        assert!(ratio > 0.0 && ratio < 1.0, "{ratio}");
        assert!(s.process_resident.unwrap() > 1_000_000.0, "{s:?}");
        let cpu = s.cpu_usage.expect("second sample has CPU use");
        assert!((0.0..=1.0).contains(&cpu), "{cpu}");
        assert!(s.load_average.is_some());
        assert!(s.network_received.is_some());
        let disk = &s.disks[0];
        assert!(disk.total >= disk.available && disk.total > 0, "{disk:?}");
    }
}
