#[optimize::io(skip(trace, id, id))]
fn lookup(id: u64, trace_id: u64) -> u64 {
    id + trace_id
}

#[optimize::io(skip(self))]
fn free(id: u64) -> u64 {
    id
}

fn main() {
    lookup(1, 2);
    free(1);
}
