// Fail-safe keeps entries past their ttl: it needs one, a non-zero window, and the cache.
#[optimize::io(fail_safe = "1h")]
fn never_expires(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[optimize::io(ttl = "5m", fail_safe_throttle = "30s")]
fn throttle_alone(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[optimize::io(ttl = "5m", fail_safe = "0s")]
fn zero_window(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[optimize::io(cache = false, fail_safe = "1h")]
fn uncached(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[optimize::io(ttl = "5m", fail_safe = "soon")]
fn not_a_duration(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[optimize::io(ttl = "5m", fail_safe = "1h", tiers = "l2")]
fn no_l1(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[optimize::io(ttl = "5m", stale_if_busy = 10)]
fn busy_without_fail_safe(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[optimize::io(ttl = "5m", fail_safe = "1h", stale_if_busy = 0)]
fn busy_zero(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {
    let _ = busy_without_fail_safe(1);
    let _ = busy_zero(1);
    let _ = no_l1(1);
    let _ = never_expires(1);
    let _ = throttle_alone(1);
    let _ = zero_window(1);
    let _ = uncached(1);
    let _ = not_a_duration(1);
}
