#[optimize::io]
struct Config {
    ttl: u64,
}

#[optimize::cpu]
impl Config {}

fn main() {
    let _ = Config { ttl: 1 };
}
