#[optimize::io(ttl = "5s", capacity = 10, ttl = "10s")]
fn lookup(id: u64) -> u64 {
    id
}

fn main() {
    lookup(1);
}
