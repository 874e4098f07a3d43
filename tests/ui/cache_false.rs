// Options that only shape caching are errors with `cache = false`.
#[optimize::io(cache = false, ttl = "5m", capacity = 10, key = id, tiers = "l1")]
fn lookup(id: u64) -> u64 {
    id
}

#[optimize::io(cache = "no")]
fn bad_value(id: u64) -> u64 {
    id
}

fn main() {
    lookup(1);
    bad_value(1);
}
