async fn fetch(n: u64) -> u64 {
    n
}

#[optimize::cpu]
async fn crunch(n: u64) -> u64 {
    let input = fetch(n).await;
    // Building a future is fine; only awaiting it in the body is not.
    let _later = async { fetch(1).await };
    input * 2
}

fn main() {
    let _ = crunch(1);
}
