//! Cache tiers. Each tier lives in its own module behind a small trait, so an engine can be
//! replaced without touching the call path.

pub mod l1;
