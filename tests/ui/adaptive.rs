// concurrency = "adaptive" takes optional bounds (1 <= min <= max), only for io functions.
#[optimize::io(concurrency = "adaptive(0..5)")]
fn zero_min(id: u64) -> u64 {
    id
}

#[optimize::io(concurrency = "fast")]
fn not_a_limit(id: u64) -> u64 {
    id
}

#[optimize::io(concurrency = "adaptive(9..3)")]
fn upside_down(id: u64) -> u64 {
    id
}

#[optimize::cpu(concurrency = "adaptive")]
fn on_cpu(id: u64) -> u64 {
    id
}

fn main() {
    zero_min(1);
    not_a_limit(1);
    upside_down(1);
    on_cpu(1);
}
