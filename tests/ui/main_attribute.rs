// Above `#[tokio::main]` it would see an async fn: it must go below.
#[optimize::main]
async fn run() {}

// It takes no options.
#[optimize::main(flush = true)]
fn with_options() {}

// Only on functions.
#[optimize::main]
struct NotAFunction;

fn main() {
    let _ = run();
    with_options();
}
