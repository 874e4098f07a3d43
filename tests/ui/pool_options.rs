// Routing options that do not fit the kind or the function.

#[optimize::cpu(concurrency = 4)]
fn crunch(n: u64) -> u64 {
    n
}

#[optimize::io(mem = "1GiB")]
fn fetch(n: u64) -> u64 {
    n
}

#[optimize::io(timeout = "2s")]
fn sync_fetch(n: u64) -> Result<u64, std::io::Error> {
    Ok(n)
}

#[optimize::io(backoff = "10ms")]
async fn no_retries(n: u64) -> Result<u64, String> {
    Ok(n)
}

#[optimize::memory(retries = 2)]
fn load(n: u64) -> Result<u64, String> {
    Ok(n)
}

#[optimize::cpu(priority = "urgent")]
fn ranked(n: u64) -> u64 {
    n
}

#[optimize::memory(mem = "lots")]
fn sized(n: u64) -> u64 {
    n
}

#[optimize::io(retries = 2)]
fn pair((a, b): (u64, u64)) -> Result<u64, String> {
    Ok(a + b)
}

struct Client;

impl Client {
    #[optimize::io(retries = 2, skip(self))]
    fn consume(self, n: u64) -> Result<u64, String> {
        Ok(n)
    }
}

fn main() {
    crunch(1);
    fetch(1);
    let _ = sync_fetch(1);
    let _ = no_retries(1);
    let _ = load(1);
    ranked(1);
    sized(1);
    let _ = pair((1, 2));
    let _ = Client.consume(1);
}
