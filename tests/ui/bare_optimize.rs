// A bare `#[optimize]` cannot name the macro: rustc has a built-in attribute of that name.
use optimize::optimize;

#[optimize(io)]
fn lookup(id: u64) -> u64 {
    id
}

fn main() {
    lookup(1);
}
