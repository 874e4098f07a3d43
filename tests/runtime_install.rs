//! The runtime's life in one process: calls that must not start it, an install refused for a
//! `[functions]` table that names no function, the install that succeeds on a mock clock,
//! every function known before its first call, and TTLs that expire when the clock moves
//! (no sleeping).

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use optimize::config::{Config, FnOverride};
use optimize::time::Clock;
use optimize::{InstallError, Runtime};

static PRICED: AtomicUsize = AtomicUsize::new(0);

#[optimize::io(ttl = "150ms")]
fn priced(x: u32) -> u32 {
    PRICED.fetch_add(1, SeqCst);
    x
}

#[optimize::cpu]
fn never_called(x: u32) -> u32 {
    x
}

struct Repo;

impl Repo {
    #[optimize::io(skip(self))]
    fn fetch(&self, id: u32) -> u32 {
        id
    }
}

fn quiet() -> optimize::config::ConfigBuilder {
    Config::builder()
        .without_file()
        .environment(Vec::<(String, String)>::new())
        .set("l3.enabled", "false")
}

#[test]
fn lifecycle_from_refused_install_to_mock_clock_expiry() {
    // Calls that only read or stop leave the runtime unstarted, so they may come in any
    // order before the install.
    optimize::flush();
    assert!(optimize::shutdown().drained);
    assert!(Runtime::current().is_none(), "nothing started the runtime");

    // A table for a function that does not exist is refused, with the closest path.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("optimize.toml");
    std::fs::write(
        &file,
        "[functions.\"runtime_install::pricd\"]\nttl = \"1s\"\n",
    )
    .unwrap();
    let err = optimize::install(
        Config::builder()
            .file(&file)
            .environment(Vec::<(String, String)>::new()),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, InstallError::Invalid(_)), "{text}");
    assert!(
        text.contains(&file.display().to_string()),
        "names the file: {text}"
    );
    assert!(
        text.contains("functions.\"runtime_install::pricd\""),
        "{text}"
    );
    assert!(
        text.contains("did you mean `runtime_install::priced`"),
        "{text}"
    );
    // The same from the builder.
    let err = optimize::install(quiet().function(
        "runtime_install::nevr_called",
        FnOverride {
            ttl: Some(Duration::from_secs(1)),
            ..FnOverride::default()
        },
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("builder"), "{err}");
    assert!(
        err.contains("did you mean `runtime_install::never_called`"),
        "{err}"
    );
    assert!(
        Runtime::current().is_none(),
        "a refused install starts nothing"
    );

    // A method's table names its type, which is checked by module and name.
    let (clock, mock) = Clock::mock();
    let guard = optimize::install(
        quiet()
            .clock(clock)
            .function(
                "runtime_install::Repo::fetch",
                FnOverride {
                    capacity: Some(3),
                    ..FnOverride::default()
                },
            )
            .function(
                "runtime_install::priced",
                FnOverride {
                    capacity: Some(5),
                    ..FnOverride::default()
                },
            ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let runtime = guard.runtime();

    // Every function is known, with its resolved settings, before its first call.
    let paths: Vec<String> = optimize::functions()
        .iter()
        .map(|s| s.path().to_owned())
        .collect();
    assert!(
        paths.contains(&"runtime_install::never_called".to_owned()),
        "{paths:?}"
    );
    let priced_site = runtime.site("runtime_install::priced").expect("listed");
    assert_eq!(priced_site.capacity(), 5, "the builder's override");
    assert_eq!(priced_site.ttl(), Some(Duration::from_millis(150)));
    assert_eq!(priced_site.stats().calls(), 0);
    let zero = runtime.snapshot().value(
        "optimize_calls_total",
        &[
            ("fn", "runtime_install::never_called"),
            ("outcome", "hit_l1"),
        ],
    );
    assert_eq!(
        zero,
        Some(0.0),
        "a function never called is exported with 0"
    );
    // The method joins at its first call, with its type in the path and its table applied.
    assert_eq!(runtime.registry().pending_methods().len(), 1);
    assert_eq!(Repo.fetch(1), 1);
    assert_eq!(Repo::fetch_cache().path(), "runtime_install::Repo::fetch");
    assert_eq!(Repo::fetch_cache().capacity(), 3);
    assert!(runtime.registry().pending_methods().is_empty());

    // TTLs follow the runtime's clock.
    priced(1);
    priced(1);
    assert_eq!(PRICED.load(SeqCst), 1);
    mock.increment(Duration::from_millis(149));
    priced(1);
    assert_eq!(PRICED.load(SeqCst), 1, "not expired 1 ms before the TTL");
    mock.increment(Duration::from_millis(1));
    priced(1);
    assert_eq!(PRICED.load(SeqCst), 2, "expired at the TTL");

    let again = optimize::install(quiet());
    assert!(matches!(again, Err(InstallError::AlreadyInstalled)));
    drop(guard);
    assert_eq!(priced(1), 1, "calls keep working after the guard shut down");
}
