//! The value the shared-tier benchmarks store (`tiers`, `l3_profile`): about 100 bytes
//! encoded, the same in every contender.

use serde::{Deserialize, Serialize};

/// A small record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Item {
    pub(crate) id: u64,
    pub(crate) name: String,
}

/// The record for `id`: 8 + 8 + 88 = 104 bytes encoded.
pub(crate) fn item(id: u64) -> Item {
    Item {
        id,
        name: "x".repeat(88),
    }
}
