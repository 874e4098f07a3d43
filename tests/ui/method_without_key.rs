struct Repo {
    id: u64,
}

impl Repo {
    #[optimize::io]
    fn get(&self, user: u64) -> u64 {
        self.id + user
    }
}

fn main() {
    Repo { id: 1 }.get(2);
}
