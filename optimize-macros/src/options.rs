//! Every option of the attribute, declared once: its name, the value it takes, which kinds
//! accept it, whether it means anything with `cache = false`, an example and a doc line.
//! Parsing (unknown options, "needs a value" messages), checking (kind and `cache = false`
//! rules), expansion (the `SiteMeta` builder call) and the documentation test read it.

use crate::args::Kind;

/// The value an option takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    /// A humantime string: `"30s"`.
    Duration,
    /// An integer literal (or, for `capacity` of memory functions, a size string).
    Int,
    /// A size string: `"64MiB"`.
    Size,
    /// A string literal.
    Str,
    /// `true` or `false`.
    Bool,
    /// A number between 0 and 1 (`refresh_ahead = 0.8`).
    Fraction,
    /// An expression (`key = ...`).
    Expr,
    /// A parenthesised list of identifiers (`skip(a, b)`).
    Idents,
    /// An array of string literals (`tags = ["user:{id}"]`).
    Strs,
}

/// Which kinds of function accept an option.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kinds {
    /// Every kind.
    All,
    /// One kind; for each other kind, why it has no use there.
    Only(Kind, &'static [(Kind, &'static str)]),
}

/// One option.
#[derive(Debug)]
pub(crate) struct Spec {
    /// As written in the attribute.
    pub(crate) name: &'static str,
    /// What it takes.
    pub(crate) value: Value,
    /// Which kinds accept it.
    pub(crate) kinds: Kinds,
    /// `false`: it configures caching, so `cache = false` makes it meaningless.
    pub(crate) without_cache: bool,
    /// How to write it.
    pub(crate) example: &'static str,
    /// What it does (one line; docs/macro.md says more).
    pub(crate) doc: &'static str,
    /// The runtime's `SiteMeta` builder method expansion calls for it (`None`: the option
    /// shapes the generated code instead, like `key`, `skip` and `crate`).
    pub(crate) meta: Option<&'static str>,
}

const NOT_FOR_CPU_MEMORY_RETRY: &[(Kind, &str)] = &[
    (
        Kind::Cpu,
        "the body runs to completion once; make it `io` to retry",
    ),
    (
        Kind::Memory,
        "the body runs to completion once; make it `io` to retry",
    ),
];

/// Every option, in the order "valid options" lists them.
pub(crate) const OPTIONS: &[Spec] = &[
    Spec {
        name: "ttl",
        value: Value::Duration,
        kinds: Kinds::All,
        without_cache: false,
        example: "`ttl = \"30s\"`",
        doc: "how long a result stays valid",
        meta: Some("ttl"),
    },
    Spec {
        name: "capacity",
        value: Value::Int,
        kinds: Kinds::All,
        without_cache: false,
        example: "`capacity = 10000`",
        doc: "maximum entries in the in-process cache, or bytes when written as a size",
        meta: Some("capacity"),
    },
    Spec {
        name: "key",
        value: Value::Expr,
        kinds: Kinds::All,
        without_cache: false,
        example: "`key = (user.id, region)`",
        doc: "hash this expression instead of the arguments",
        meta: None,
    },
    Spec {
        name: "skip",
        value: Value::Idents,
        kinds: Kinds::All,
        without_cache: false,
        example: "`skip(arg, ...)`",
        doc: "leave these arguments (or `self`) out of the key",
        meta: None,
    },
    Spec {
        name: "tags",
        value: Value::Strs,
        kinds: Kinds::All,
        without_cache: false,
        example: "`tags = [\"user:{id}\"]`",
        doc: "tags of each entry, made from the arguments: `optimize::invalidate_tag` retires them",
        meta: None,
    },
    Spec {
        name: "name",
        value: Value::Str,
        kinds: Kinds::All,
        without_cache: true,
        example: "`name = \"users::fetch\"`",
        doc: "the function's name in statistics and keys",
        meta: Some("name"),
    },
    Spec {
        name: "version",
        value: Value::Int,
        kinds: Kinds::All,
        without_cache: false,
        example: "`version = 2`",
        doc: "part of every key: bump it to retire old entries",
        meta: Some("version"),
    },
    Spec {
        name: "tiers",
        value: Value::Str,
        kinds: Kinds::All,
        without_cache: false,
        example: "`tiers = \"l1,l3\"`",
        doc: "which cache tiers the function uses",
        meta: Some("tiers"),
    },
    Spec {
        name: "l2_ttl",
        value: Value::Duration,
        kinds: Kinds::All,
        without_cache: false,
        example: "`l2_ttl = \"1h\"`",
        doc: "expiry in L2, where it differs from `ttl`",
        meta: Some("l2_ttl"),
    },
    Spec {
        name: "fail_safe",
        value: Value::Duration,
        kinds: Kinds::All,
        without_cache: false,
        example: "`fail_safe = \"1h\"`",
        doc: "keep entries this long past their ttl; serve them when the body fails",
        meta: Some("fail_safe"),
    },
    Spec {
        name: "fail_safe_throttle",
        value: Value::Duration,
        kinds: Kinds::All,
        without_cache: false,
        example: "`fail_safe_throttle = \"30s\"`",
        doc: "after a failure, serve the stale value this long before trying the body again",
        meta: Some("fail_safe_throttle"),
    },
    Spec {
        name: "soft_timeout",
        value: Value::Duration,
        kinds: Kinds::All,
        without_cache: false,
        example: "`soft_timeout = \"100ms\"`",
        doc: "with a stale value at hand, wait this long for the body, then serve it",
        meta: Some("soft_timeout"),
    },
    Spec {
        name: "refresh_ahead",
        value: Value::Fraction,
        kinds: Kinds::All,
        without_cache: false,
        example: "`refresh_ahead = 0.8`",
        doc: "a hit after this fraction of the ttl refreshes the entry in the background",
        meta: Some("refresh_ahead"),
    },
    Spec {
        name: "stale_if_busy",
        value: Value::Int,
        kinds: Kinds::All,
        without_cache: false,
        example: "`stale_if_busy = 100`",
        doc: "serve the stale value instead of queueing behind this many waiting calls",
        meta: Some("stale_if_busy"),
    },
    Spec {
        name: "predict",
        value: Value::Str,
        kinds: Kinds::All,
        without_cache: false,
        example: "`predict = \"markov\"` or `predict = \"sequential(page)\"`",
        doc: "learn the order of calls and prefetch the expected next ones",
        meta: Some("predict"),
    },
    Spec {
        name: "predict_confidence",
        value: Value::Fraction,
        kinds: Kinds::All,
        without_cache: false,
        example: "`predict_confidence = 0.6`",
        doc: "how sure the model must be before it prefetches",
        meta: Some("predict_confidence"),
    },
    Spec {
        name: "predict_depth",
        value: Value::Int,
        kinds: Kinds::All,
        without_cache: false,
        example: "`predict_depth = 2`",
        doc: "how many calls ahead to prefetch",
        meta: Some("predict_depth"),
    },
    Spec {
        name: "l3_ttl",
        value: Value::Duration,
        kinds: Kinds::All,
        without_cache: false,
        example: "`l3_ttl = \"7days\"`",
        doc: "expiry in L3, where it differs from `ttl`",
        meta: Some("l3_ttl"),
    },
    Spec {
        name: "compress_above",
        value: Value::Size,
        kinds: Kinds::All,
        without_cache: false,
        example: "`compress_above = \"4KiB\"`",
        doc: "zstd threshold of shared-tier entries",
        meta: Some("compress_above"),
    },
    Spec {
        name: "level",
        value: Value::Str,
        kinds: Kinds::All,
        without_cache: false,
        example: "`level = \"ultra\"`",
        doc: "this function's optimization level",
        meta: Some("level"),
    },
    Spec {
        name: "cache",
        value: Value::Bool,
        kinds: Kinds::All,
        without_cache: true,
        example: "`cache = false`",
        doc: "`false`: measure every call, never cache",
        meta: Some("uncached"),
    },
    Spec {
        name: "lease",
        value: Value::Bool,
        kinds: Kinds::All,
        without_cache: false,
        example: "`lease = false`",
        doc: "`false`: no lease on an L2 miss, so each instance may compute a cold key",
        meta: Some("without_lease"),
    },
    Spec {
        name: "crate",
        value: Value::Str,
        kinds: Kinds::All,
        without_cache: true,
        example: "`crate = \"my_optimize\"`",
        doc: "where the optimize crate is, if renamed",
        meta: None,
    },
    Spec {
        name: "priority",
        value: Value::Str,
        kinds: Kinds::All,
        without_cache: true,
        example: "`priority = \"high\"`",
        doc: "where calls queue at the CPU pool, io limits or memory budget",
        meta: Some("priority"),
    },
    Spec {
        name: "concurrency",
        value: Value::Int,
        kinds: Kinds::Only(
            Kind::Io,
            &[
                (Kind::Cpu, "the CPU pool's thread count bounds the calls"),
                (
                    Kind::Memory,
                    "the memory budget bounds the calls (set `mem` per call)",
                ),
            ],
        ),
        without_cache: true,
        example: "`concurrency = 8` or `concurrency = \"adaptive\"`",
        doc: "calls of this function running at once",
        meta: Some("concurrency"),
    },
    Spec {
        name: "timeout",
        value: Value::Duration,
        kinds: Kinds::Only(
            Kind::Io,
            &[
                (Kind::Cpu, "a running body cannot be interrupted"),
                (Kind::Memory, "a running body cannot be interrupted"),
            ],
        ),
        without_cache: true,
        example: "`timeout = \"2s\"`",
        doc: "deadline of each attempt (async functions)",
        meta: Some("timeout"),
    },
    Spec {
        name: "retries",
        value: Value::Int,
        kinds: Kinds::Only(Kind::Io, NOT_FOR_CPU_MEMORY_RETRY),
        without_cache: true,
        example: "`retries = 3`",
        doc: "extra attempts after an `Err`",
        meta: Some("retries"),
    },
    Spec {
        name: "backoff",
        value: Value::Duration,
        kinds: Kinds::Only(Kind::Io, NOT_FOR_CPU_MEMORY_RETRY),
        without_cache: true,
        example: "`backoff = \"100ms\"`",
        doc: "first delay between attempts, doubled each retry",
        meta: Some("backoff"),
    },
    Spec {
        name: "mem",
        value: Value::Size,
        kinds: Kinds::Only(
            Kind::Memory,
            &[
                (Kind::Io, "the memory budget is not consulted"),
                (Kind::Cpu, "the memory budget is not consulted"),
            ],
        ),
        without_cache: true,
        example: "`mem = \"256MiB\"`",
        doc: "bytes each call reserves from the memory budget",
        meta: Some("mem"),
    },
];

/// The option named `name`.
pub(crate) fn find(name: &str) -> Option<&'static Spec> {
    OPTIONS.iter().find(|s| s.name == name)
}

/// How to write the option named `name`.
pub(crate) fn example(name: &str) -> &'static str {
    find(name).map_or("see the docs", |s| s.example)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/macro.md has a row for every option, and no row for an option that is not here.
    #[test]
    fn the_reference_documents_every_option() {
        let doc = include_str!("../../docs/macro.md");
        let table: Vec<&str> = doc
            .lines()
            .skip_while(|l| !l.starts_with("| option"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .collect();
        assert!(
            // Rows may document two options together (`l2_ttl`, `l3_ttl`).
            table.len() >= OPTIONS.len() - 2,
            "found the table: {table:?}"
        );
        for spec in OPTIONS {
            assert!(
                table
                    .iter()
                    .any(|row| row.contains(&format!("`{}`", spec.name))),
                "docs/macro.md has no row for `{}`",
                spec.name
            );
        }
        for row in &table {
            let first = row.split('|').nth(1).unwrap_or_default();
            for name in first.split('`').skip(1).step_by(2) {
                assert!(
                    find(name).is_some(),
                    "docs/macro.md documents unknown `{name}`"
                );
            }
        }
    }

    #[test]
    fn kind_restrictions_say_why_for_every_other_kind() {
        for spec in OPTIONS {
            if let Kinds::Only(owner, why) = spec.kinds {
                for kind in [Kind::Io, Kind::Cpu, Kind::Memory] {
                    assert_eq!(
                        kind != owner,
                        why.iter().any(|(k, _)| *k == kind),
                        "{}: {kind:?}",
                        spec.name
                    );
                }
            }
        }
    }
}
