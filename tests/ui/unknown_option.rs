#[optimize::io(tll = "5s")]
fn lookup(id: u64) -> u64 {
    id
}

#[optimize::io(retrys = 3)]
fn other(id: u64) -> u64 {
    id
}

fn main() {
    lookup(1);
    other(1);
}
