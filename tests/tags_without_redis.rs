//! Tags without Redis: the generations live in L3 itself, so an entry of an invalidated tag is
//! refused from disk too.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use optimize::cache::Tier;
use optimize::codec::Reject;

#[path = "support/install.rs"]
mod install;

static EXECUTIONS: AtomicU64 = AtomicU64::new(0);

#[optimize::io(tags = ["doc:{id}"])]
fn render(id: u64) -> String {
    EXECUTIONS.fetch_add(1, SeqCst);
    format!("doc {id}")
}

#[test]
fn an_l3_entry_of_an_invalidated_tag_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let guard = optimize::install(install::with_l3(dir.path())).unwrap_or_else(|e| panic!("{e}"));
    render(1);
    render(2);
    optimize::flush();
    render_cache().clear_l1();
    render(1);
    assert_eq!(EXECUTIONS.load(SeqCst), 2, "served from L3");

    render_cache().clear_l1();
    optimize::invalidate_tag("doc:1");
    render(1);
    render(2);
    assert_eq!(
        EXECUTIONS.load(SeqCst),
        3,
        "doc 1 computed again, doc 2 from L3"
    );
    let l3 = guard.runtime().tiers().counters(Tier::L3);
    assert_eq!(l3.rejected(Reject::Retired), 1);
}
