//! The process-wide L1 byte budget (`l1.max_size`): functions of every kind, bounded by entry
//! count alone, share one byte limit, and the function holding the most gives way.

#[path = "support/install.rs"]
mod install;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

static RENDERS: AtomicU64 = AtomicU64::new(0);

/// 100 KiB per value; an entry-count capacity that alone would allow 1 GiB.
#[optimize::cpu(capacity = 10_000)]
fn render(id: u64) -> Vec<u8> {
    RENDERS.fetch_add(1, SeqCst);
    vec![id as u8; 100 << 10]
}

#[optimize::io(capacity = 10_000)]
fn fetch(id: u64) -> Vec<u8> {
    vec![id as u8; 100 << 10]
}

#[optimize::io]
fn small(id: u64) -> u64 {
    id
}

#[test]
fn every_function_shares_one_byte_budget() {
    let rt = install::once(&[("l1.max_size", "1MiB")]);
    let budget = rt.l1_budget().expect("l1.max_size sets a budget");
    assert_eq!(budget.limit(), 1 << 20);
    for id in 0..40 {
        assert_eq!(render(id)[0], id as u8);
        assert_eq!(fetch(id)[0], id as u8);
        assert!(
            budget.used() <= budget.limit(),
            "{} bytes counted over a {} byte budget",
            budget.used(),
            budget.limit()
        );
    }
    // 80 values of 100 KiB went through a 1 MiB L1: at most ten of them are kept.
    let kept = render_cache().len() + fetch_cache().len();
    assert!((1..=10).contains(&kept), "{kept} entries kept");
    assert!(
        budget.evicted() >= 60 * (100 << 10),
        "{} evicted",
        budget.evicted()
    );
    let evictions = render_cache().stats().evictions + fetch_cache().stats().evictions;
    assert!(evictions >= 60, "{evictions} evictions counted");

    // A function with small values is not starved by the large ones: the largest gives way.
    for id in 0..100 {
        small(id);
    }
    assert_eq!(small_cache().len(), 100);
    render(1_000);
    assert_eq!(small_cache().len(), 100);

    // Invalidation gives the bytes back.
    render_cache().invalidate_all();
    fetch_cache().invalidate_all();
    small_cache().invalidate_all();
    assert_eq!(budget.used(), 0);

    // The values are still right, and a value larger than the whole budget stays out of L1.
    let before = RENDERS.load(SeqCst);
    assert_eq!(render(3)[0], 3);
    assert_eq!(render(3)[0], 3);
    assert_eq!(RENDERS.load(SeqCst), before + 1);
}

#[optimize::io]
fn huge(id: u64) -> Vec<u8> {
    vec![id as u8; 2 << 20]
}

#[test]
fn a_value_larger_than_the_budget_is_not_kept_in_l1() {
    install::once(&[("l1.max_size", "1MiB")]);
    assert_eq!(huge(1).len(), 2 << 20);
    assert_eq!(huge(1).len(), 2 << 20);
    assert_eq!(huge_cache().len(), 0);
    assert_eq!(huge_cache().stats().executions(), 2, "computed each time");
}
