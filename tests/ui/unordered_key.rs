use std::collections::{BTreeMap, HashMap, HashSet};

#[optimize::io]
fn by_map(m: HashMap<String, u32>) -> usize {
    m.len()
}

#[optimize::io]
fn by_set(ids: &HashSet<u64>) -> usize {
    ids.len()
}

// Each way out compiles.
#[optimize::io]
fn ordered(m: BTreeMap<String, u32>) -> usize {
    m.len()
}

#[optimize::io(skip(m))]
fn skipped(id: u64, m: HashMap<String, u32>) -> usize {
    m.len() + id as usize
}

#[optimize::io(key = id)]
fn keyed(id: u64, m: HashMap<String, u32>) -> usize {
    m.len() + id as usize
}

fn main() {}
