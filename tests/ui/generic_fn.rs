#[optimize::io]
fn lookup<T: serde::Serialize>(id: T) -> u64 {
    let _ = id;
    1
}

#[optimize::io]
fn takes_impl(id: impl AsRef<str>) -> usize {
    id.as_ref().len()
}

fn main() {
    lookup(1u8);
    takes_impl("x");
}
