#[optimize::io(capacity = 0, version = "two", name = "has space", crate = "1bad")]
fn lookup(id: u64) -> u64 {
    id
}

#[optimize::io(ttl, skip = id, io = 1)]
fn forms(id: u64) -> u64 {
    id
}

#[optimize::io(name = "users::{shard}")]
fn braced(id: u64) -> u64 {
    id
}

fn main() {
    lookup(1);
    forms(1);
    braced(1);
}
