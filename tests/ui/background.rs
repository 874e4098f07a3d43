// soft_timeout and refresh_ahead run the body after the call returned: owned arguments only;
// soft_timeout serves fail-safe's value; refresh_ahead needs a ttl and a fraction.
#[optimize::io(ttl = "5m", fail_safe = "1h", soft_timeout = "100ms")]
fn borrowed(name: &str) -> Result<u64, String> {
    Ok(name.len() as u64)
}

#[optimize::io(ttl = "5m", soft_timeout = "100ms")]
fn without_fail_safe(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[optimize::io(refresh_ahead = 0.8)]
fn never_expires(id: u64) -> u64 {
    id
}

#[optimize::io(ttl = "5m", refresh_ahead = 1.5)]
fn too_late(id: u64) -> u64 {
    id
}

#[optimize::io(ttl = "5m", refresh_ahead = "80%")]
fn not_a_number(id: u64) -> u64 {
    id
}

struct Repo;

impl Repo {
    #[optimize::io(ttl = "5m", refresh_ahead = 0.8, key = id)]
    fn fetch(&self, id: u64) -> u64 {
        id
    }
}

fn main() {
    let _ = borrowed("a");
    let _ = without_fail_safe(1);
    never_expires(1);
    too_late(1);
    not_a_number(1);
    Repo.fetch(1);
}
