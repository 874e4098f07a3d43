//! The L1-hit contenders the hit benchmarks share (`compare`, `scaling`, `hit_profile`): the
//! same function under the attribute and under the `cached` crate, over the same warm keys.

#![allow(dead_code)]

use cached::proc_macro::cached;

/// Warm keys, cycled by every hit loop.
pub(crate) const KEYS: u64 = 1024;

#[optimize::cpu(capacity = 10_000)]
pub(crate) fn attribute(x: u64) -> u64 {
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cached(max_size = 10_000)]
pub(crate) fn cached_crate(x: u64) -> u64 {
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
