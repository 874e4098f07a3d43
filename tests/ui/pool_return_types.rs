// `timeout` needs a return type that can report it; `retries` needs a `Result`.

#[optimize::io(timeout = "1s")]
async fn plain(n: u64) -> u64 {
    n
}

#[optimize::io(retries = 3)]
async fn maybe(n: u64) -> Option<u64> {
    Some(n)
}

#[derive(Debug)]
struct MyError;

#[optimize::io(timeout = "1s")]
async fn own_error(n: u64) -> Result<u64, MyError> {
    Ok(n)
}

fn main() {
    let _ = plain(1);
    let _ = maybe(1);
    let _ = own_error(1);
}
