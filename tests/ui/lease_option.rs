// `lease` takes a boolean, and configures the cache.
#[optimize::io(lease = "off")]
fn quoted(id: u64) -> u64 {
    id
}

#[optimize::io(cache = false, lease = false)]
fn uncached(id: u64) -> u64 {
    id
}

fn main() {
    quoted(1);
    uncached(1);
}
