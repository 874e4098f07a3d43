struct Report(Vec<u8>);

#[optimize::cpu]
fn build(n: u8) -> Report {
    Report(vec![n])
}

// Only the `Ok` type is cached, so only it must be `Clone`; the error type need not be.
#[optimize::io]
async fn fetch(n: u8) -> Result<Report, std::io::Error> {
    Ok(Report(vec![n]))
}

fn main() {
    build(1);
    let _ = fetch(1);
}
