struct Opaque;

// A placeholder that names no argument, a positional one, an unclosed brace, a stray one.
#[optimize::io(tags = ["user:{user}", "org:{}", "team:{team", "x}"])]
fn lookup(id: u64, org: u64) -> u64 {
    id + org
}

// Not an array; an empty array; not a string.
#[optimize::io(tags = "user:{id}")]
fn not_an_array(id: u64) -> u64 {
    id
}

#[optimize::io(tags = [])]
fn empty(id: u64) -> u64 {
    id
}

#[optimize::io(tags = [42])]
fn not_a_string(id: u64) -> u64 {
    id
}

// `self` cannot be reached from a tag.
struct Repo;

impl Repo {
    #[optimize::io(key = id, tags = ["repo:{self}"])]
    fn get(&self, id: u64) -> u64 {
        id
    }
}

// Tags configure the cache.
#[optimize::io(cache = false, tags = ["user:{id}"])]
fn uncached(id: u64) -> u64 {
    id
}

// The argument must be `Display` (or use a `{name:?}` placeholder for `Debug`).
#[optimize::io(key = 1u8, tags = ["opaque:{o}"])]
fn opaque(o: Opaque) -> u64 {
    let _ = o;
    1
}

fn main() {
    lookup(1, 2);
    not_an_array(1);
    empty(1);
    not_a_string(1);
    Repo.get(1);
    uncached(1);
    opaque(Opaque);
}
