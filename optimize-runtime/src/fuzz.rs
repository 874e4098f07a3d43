//! Property-based fuzzing of the two readers of untrusted input: the entry decoder (bytes from
//! Redis or disk) and the configuration reader (a file and the environment). Stable Rust
//! (proptest): `FUZZ_CASES` inputs per target, 2,000 by default (what `scripts/test.sh` runs);
//! `FUZZ_CASES=1000000 cargo test --release -p optimize-runtime --lib fuzz::` for a long run.
//!
//! Each target checks that nothing panics and that memory stays bounded: decoding never
//! allocates past the entry limit (set to 64 KiB here, so a violation would show as a huge
//! allocation attempt or an `Ok` for an oversized value).

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

use crate::codec::{self, EnvelopeOptions};
use crate::config::{keys, source, ConfigBuilder};

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000)
}

fn runner() -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases: cases(),
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

const SCHEMA: u64 = 0x5eed;
const KEY: u64 = 0x4e1;

fn small_limit() -> EnvelopeOptions {
    EnvelopeOptions {
        max_entry_bytes: 64 << 10,
        ..EnvelopeOptions::default()
    }
}

/// Valid envelopes of a few value shapes, compressed or not, to mutate.
fn envelopes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(any::<u8>(), 0..4096),
        any::<bool>(),
        0u64..3_000,
    )
        .prop_map(|(payload, compress, expires)| {
            let opts = EnvelopeOptions {
                compress_threshold: if compress { 0 } else { usize::MAX },
                ..small_limit()
            };
            codec::encode(&payload, SCHEMA, KEY, 1_000, expires, &opts)
                .expect("small values encode")
        })
}

/// An envelope with some of its bytes overwritten, cut or extended.
fn damaged() -> impl Strategy<Value = Vec<u8>> {
    (
        envelopes(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        any::<prop::sample::Index>(),
        0u8..3,
    )
        .prop_map(|(mut bytes, flips, cut, how)| {
            for (at, b) in flips {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            match how {
                0 => bytes.truncate(cut.index(bytes.len() + 1)),
                1 => bytes.extend_from_slice(&[0xAB; 17]),
                _ => {}
            }
            bytes
        })
}

fn decode_never_panics(bytes: &[u8]) {
    let opts = small_limit();
    // Through every value type a function could have, and the header reader.
    let _ = codec::read_header(bytes);
    if let Ok(v) = codec::decode::<Vec<u8>>(bytes, SCHEMA, KEY, 2_000, &opts) {
        assert!(v.len() <= opts.max_entry_bytes);
    }
    let _ = codec::decode::<String>(bytes, SCHEMA, KEY, 2_000, &opts);
    let _ = codec::decode::<(u64, Option<String>, Vec<u32>)>(bytes, SCHEMA, KEY, 2_000, &opts);
}

#[test]
fn fuzz_decoder_with_arbitrary_bytes() {
    runner()
        .run(&prop::collection::vec(any::<u8>(), 0..8192), |bytes| {
            decode_never_panics(&bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_decoder_with_damaged_envelopes() {
    runner()
        .run(&damaged(), |bytes| {
            decode_never_panics(&bytes);
            Ok(())
        })
        .unwrap();
}

/// TOML-ish text: real keys and sections, values of every type, and noise.
fn configuration_text() -> impl Strategy<Value = String> {
    // Every real key (dotted paths are valid TOML), section names, and near-misses.
    let mut names: Vec<String> = keys::KEYS.iter().map(|k| k.path.to_owned()).collect();
    names.extend(keys::SECTIONS.iter().map(|s| (*s).to_owned()));
    names.extend(
        [
            "functions",
            "alerts",
            "\"app::f\"",
            "[[alerts]]",
            "expr",
            "levle",
            "l2.timout",
        ]
        .map(str::to_owned),
    );
    let key = prop::sample::select(names);
    let value = prop::sample::select(vec![
        "\"ultra\"",
        "\"1h\"",
        "\"0s\"",
        "\"-1\"",
        "\"300000000000d\"",
        "1",
        "-5",
        "18446744073709551615",
        "1.5",
        "true",
        "[1, 2]",
        "{ a = 1 }",
        "\"redis://:p@h\"",
        "\"512MiB\"",
        "\"l1,l9\"",
        "\"\"",
        "1979-05-27",
        "nan",
        "inf",
    ]);
    let line = prop_oneof![
        (key.clone(), value).prop_map(|(k, v)| format!("{k} = {v}")),
        key.clone().prop_map(|k| format!("[{k}]")),
        (key.clone(), key).prop_map(|(a, b)| format!("[{a}.{b}]")),
        "[ -~]{0,40}",
    ];
    prop::collection::vec(line, 0..24).prop_map(|lines| lines.join("\n"))
}

#[test]
fn fuzz_configuration_file_reader() {
    runner()
        .run(&configuration_text(), |text| {
            if let Ok(layer) = source::from_toml("fuzz.toml", &text) {
                let _ = layer.values.len();
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_configuration_environment_and_builder() {
    let pairs = prop::collection::vec(
        (
            prop::sample::select(vec![
                "OPTIMIZE_LEVEL",
                "OPTIMIZE_L2_TIMEOUT",
                "OPTIMIZE_REDIS_URL",
                "OPTIMIZE_L3_MAX_SIZE",
                "OPTIMIZE_POOLS_CPU_THREADS",
                "OPTIMIZE_MONITOR_ADDR",
                "OPTIMIZE_LOOKUP_ORDER",
                "OPTIMIZE_NOPE",
            ]),
            "[ -~]{0,24}",
        ),
        0..6,
    );
    runner()
        .run(
            &(pairs, "[a-z0-9._]{0,20}", "[ -~]{0,20}"),
            |(env, key, value)| {
                let _ = ConfigBuilder::default()
                    .without_file()
                    .environment(env)
                    .set(&key, &value)
                    .resolve();
                Ok(())
            },
        )
        .unwrap();
}
