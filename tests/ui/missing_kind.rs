#[optimize::optimize(ttl = "5s")]
fn lookup(id: u64) -> u64 {
    id
}

fn main() {
    lookup(1);
}
