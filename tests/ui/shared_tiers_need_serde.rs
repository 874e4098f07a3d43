#[derive(Clone)]
struct Report(Vec<u8>);

// Asking for L2/L3 explicitly needs a serializable value.
#[optimize::cpu(tiers = "l1,l3")]
fn build(n: u8) -> Report {
    Report(vec![n])
}

#[optimize::io(tiers = "l2")]
fn name() -> &'static str {
    "static"
}

// Without `tiers`, a non-serializable value simply stays in L1: no error.
#[optimize::cpu]
fn in_memory(n: u8) -> Report {
    Report(vec![n])
}

fn main() {
    build(1);
    name();
    in_memory(1);
}
