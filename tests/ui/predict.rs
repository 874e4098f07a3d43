// predict calls the function again later with kept arguments: owned arguments, no `self`,
// some arguments, a known model, a sequential model that knows which integer steps; its
// tuning options need it and must be in range.
#[optimize::io(ttl = "5m", predict = "markov")]
fn borrowed(name: &str) -> u64 {
    name.len() as u64
}

#[optimize::io(predict = "markov")]
fn no_arguments() -> u64 {
    1
}

#[optimize::io(predict = "lru")]
fn unknown_model(id: u64) -> u64 {
    id
}

#[optimize::io(predict = "sequential")]
fn which_one(table: String, offset: u64) -> String {
    format!("{table}{offset}")
}

#[optimize::io(predict = "sequential(page)")]
fn no_such_argument(table: String, offset: u64) -> String {
    format!("{table}{offset}")
}

#[optimize::io(predict = "sequential")]
fn not_an_integer(name: String) -> String {
    name
}

#[optimize::io(predict_confidence = 0.7)]
fn confidence_alone(id: u64) -> u64 {
    id
}

#[optimize::io(predict = "markov", predict_depth = 0)]
fn no_depth(id: u64) -> u64 {
    id
}

#[optimize::io(predict = "markov", predict_confidence = 1.5)]
fn too_sure(id: u64) -> u64 {
    id
}

#[optimize::io(cache = false, predict = "markov")]
fn uncached(id: u64) -> u64 {
    id
}

struct Repo;

impl Repo {
    #[optimize::io(predict = "markov", key = id)]
    fn fetch(&self, id: u64) -> u64 {
        id
    }
}

fn main() {
    borrowed("a");
    no_arguments();
    unknown_model(1);
    which_one(String::new(), 1);
    no_such_argument(String::new(), 1);
    not_an_integer(String::new());
    confidence_alone(1);
    no_depth(1);
    too_sure(1);
    uncached(1);
    Repo.fetch(1);
}
