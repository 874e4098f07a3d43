#[optimize::io(tiers = "l1,l4")]
fn unknown_tier(id: u64) -> u64 {
    id
}

#[optimize::io(tiers = "l1,l1")]
fn twice(id: u64) -> u64 {
    id
}

#[optimize::io(tiers = "l1", l2_ttl = "1h", l3_ttl = "1d", compress_above = "4KiB")]
fn unused(id: u64) -> u64 {
    id
}

#[optimize::io(compress_above = "4 parsecs", l2_ttl = "soon")]
fn bad_values(id: u64) -> u64 {
    id
}

fn main() {
    unknown_tier(1);
    twice(1);
    unused(1);
    bad_values(1);
}
