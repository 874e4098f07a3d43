#[optimize::io(ttl = "5 parsecs")]
fn lookup(id: u64) -> u64 {
    id
}

#[optimize::io(ttl = "0s")]
fn zero(id: u64) -> u64 {
    id
}

#[optimize::io(ttl = 30)]
fn not_a_string(id: u64) -> u64 {
    id
}

fn main() {
    lookup(1);
    zero(1);
    not_a_string(1);
}

#[optimize::io(ttl = "300000000000d")]
fn forever(x: u32) -> u32 {
    x
}
