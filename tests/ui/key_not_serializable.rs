struct Conn;

#[optimize::io]
fn query(conn: &Conn, id: u64) -> u64 {
    let _ = conn;
    id
}

fn main() {
    query(&Conn, 1);
}
