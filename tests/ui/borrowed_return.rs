#[optimize::io]
fn first_word(s: &str) -> &str {
    s.split(' ').next().unwrap_or("")
}

#[optimize::io]
fn numbers() -> impl Iterator<Item = u32> {
    0..3
}

#[optimize::io]
fn fine_static() -> &'static str {
    "ok"
}

fn main() {
    first_word("a b");
    numbers();
    fine_static();
}
