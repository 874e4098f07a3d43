#[optimize::io(key = id, skip(trace_id))]
fn lookup(id: u64, trace_id: u64) -> u64 {
    id + trace_id
}

fn main() {
    lookup(1, 2);
}
