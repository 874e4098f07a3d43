#[optimize::io(level = "turbo")]
fn fast(x: u32) -> u32 {
    x
}

#[optimize::io(cache = false, level = "basic")]
fn measured(x: u32) -> u32 {
    x
}

fn main() {
    fast(1);
    measured(1);
}
