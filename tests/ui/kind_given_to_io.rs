#[optimize::io(cpu, ttl = "1m")]
fn lookup(id: u64) -> u64 {
    id
}

fn main() {
    lookup(1);
}
