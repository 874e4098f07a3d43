//! Every function shape a user will try, each checked to run its body once per key.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use serde::Serialize;

macro_rules! counter {
    ($name:ident) => {
        static $name: AtomicUsize = AtomicUsize::new(0);
    };
}

counter!(FREE_SYNC);
#[optimize::io]
fn free_sync(x: u64) -> u64 {
    FREE_SYNC.fetch_add(1, SeqCst);
    x * 2
}

#[test]
fn free_sync_fn_is_cached_per_argument() {
    assert_eq!(free_sync(1), 2);
    assert_eq!(free_sync(1), 2);
    assert_eq!(free_sync(2), 4);
    assert_eq!(FREE_SYNC.load(SeqCst), 2);
    let s = free_sync_cache().stats();
    assert_eq!((s.calls(), s.hits(), s.executions()), (3, 1, 2));
}

counter!(FREE_ASYNC);
#[optimize::io]
async fn free_async(x: u64) -> u64 {
    FREE_ASYNC.fetch_add(1, SeqCst);
    tokio::task::yield_now().await;
    x + 1
}

#[tokio::test]
async fn free_async_fn_is_cached() {
    assert_eq!(free_async(1).await, 2);
    assert_eq!(free_async(1).await, 2);
    assert_eq!(FREE_ASYNC.load(SeqCst), 1);
    assert!(free_async_cache().is_async());
}

struct Repo {
    id: u32,
    calls: AtomicUsize,
}

impl Repo {
    #[optimize::io(key = (self.id, user))]
    fn get(&self, user: u64) -> String {
        self.calls.fetch_add(1, SeqCst);
        format!("{}:{user}", self.id)
    }

    #[optimize::io(key = (self.id, user))]
    async fn get_async(&self, user: u64) -> String {
        self.calls.fetch_add(1, SeqCst);
        format!("async {}:{user}", self.id)
    }

    #[optimize::cpu(skip(self))]
    fn shared(&self, x: u64) -> u64 {
        self.calls.fetch_add(1, SeqCst);
        x
    }
}

#[test]
fn methods_keyed_by_instance() {
    let a = Repo {
        id: 1,
        calls: AtomicUsize::new(0),
    };
    let b = Repo {
        id: 2,
        calls: AtomicUsize::new(0),
    };
    assert_eq!(a.get(5), "1:5");
    assert_eq!(a.get(5), "1:5");
    assert_eq!(b.get(5), "2:5");
    assert_eq!(a.calls.load(SeqCst), 1);
    assert_eq!(b.calls.load(SeqCst), 1);
    assert!(
        Repo::get_cache().path().ends_with("shapes::Repo::get"),
        "{}",
        Repo::get_cache().path()
    );
}

#[test]
fn skip_self_shares_one_cache_across_instances() {
    let a = Repo {
        id: 1,
        calls: AtomicUsize::new(0),
    };
    let b = Repo {
        id: 2,
        calls: AtomicUsize::new(0),
    };
    assert_eq!(a.shared(9), 9);
    assert_eq!(b.shared(9), 9);
    assert_eq!(a.calls.load(SeqCst) + b.calls.load(SeqCst), 1);
}

#[tokio::test]
async fn async_methods() {
    let a = Repo {
        id: 3,
        calls: AtomicUsize::new(0),
    };
    assert_eq!(a.get_async(1).await, "async 3:1");
    assert_eq!(a.get_async(1).await, "async 3:1");
    assert_eq!(a.calls.load(SeqCst), 1);
}

counter!(BORROWED);
#[optimize::memory]
fn borrowed(name: &str, nums: &[u32], cfg: &Config) -> String {
    BORROWED.fetch_add(1, SeqCst);
    format!("{name}:{}:{}", nums.iter().sum::<u32>(), cfg.scale)
}

#[derive(Serialize)]
struct Config {
    scale: u8,
}

#[test]
fn borrowed_arguments_are_hashed_by_value() {
    let cfg = Config { scale: 2 };
    let owned = String::from("x");
    let owned_nums: Vec<u32> = (1..=2).collect();
    assert_eq!(borrowed("x", &[1, 2], &cfg), "x:3:2");
    // Owned and borrowed forms of equal values hash to the same key.
    assert_eq!(borrowed(&owned, &owned_nums, &Config { scale: 2 }), "x:3:2");
    assert_eq!(BORROWED.load(SeqCst), 1);
    assert_eq!(borrowed("x", &[1, 2], &Config { scale: 3 }), "x:3:3");
    assert_eq!(BORROWED.load(SeqCst), 2);
}

counter!(PATTERNS);
#[optimize::cpu]
fn patterns((a, b): (u32, u32), Config { scale }: Config, mut acc: Vec<u32>) -> u32 {
    PATTERNS.fetch_add(1, SeqCst);
    acc.push(a + b);
    acc.iter().sum::<u32>() * u32::from(scale)
}

#[test]
fn destructuring_patterns_in_arguments() {
    assert_eq!(patterns((1, 2), Config { scale: 2 }, vec![1]), 8);
    assert_eq!(patterns((1, 2), Config { scale: 2 }, vec![1]), 8);
    assert_eq!(patterns((2, 1), Config { scale: 2 }, vec![1]), 8);
    assert_eq!(
        PATTERNS.load(SeqCst),
        2,
        "(1,2) and (2,1) are different keys"
    );
    // The companion takes the same patterns.
    assert!(patterns_invalidate((1, 2), Config { scale: 2 }, vec![1]));
    assert!(!patterns_invalidate((1, 2), Config { scale: 2 }, vec![1]));
}

counter!(KEYED_PATTERN);
#[optimize::io(key = a)]
fn key_from_pattern((a, _b): (u32, u32)) -> u32 {
    KEYED_PATTERN.fetch_add(1, SeqCst);
    a
}

#[test]
fn key_expression_may_name_destructured_bindings() {
    assert_eq!(key_from_pattern((1, 1)), 1);
    assert_eq!(key_from_pattern((1, 2)), 1);
    assert_eq!(KEYED_PATTERN.load(SeqCst), 1);
}

#[derive(Debug, PartialEq)]
struct NotCloneError;
type Res<T> = Result<T, NotCloneError>;

counter!(RESULTS);
#[optimize::io]
fn result_alias(x: i32) -> Res<i32> {
    RESULTS.fetch_add(1, SeqCst);
    if x < 0 {
        return Err(NotCloneError);
    }
    Ok(x)
}

#[test]
fn results_cache_ok_and_never_err_even_through_an_alias() {
    assert_eq!(result_alias(1), Ok(1));
    assert_eq!(result_alias(1), Ok(1));
    assert_eq!(RESULTS.load(SeqCst), 1);
    assert_eq!(result_alias(-1), Err(NotCloneError));
    assert_eq!(result_alias(-1), Err(NotCloneError));
    assert_eq!(RESULTS.load(SeqCst), 3, "errors run every time");
    let s = result_alias_cache().stats();
    assert_eq!(s.errors(), 2);
}

counter!(QUESTION);
#[optimize::io]
async fn question_mark(s: &str) -> Result<u32, std::num::ParseIntError> {
    QUESTION.fetch_add(1, SeqCst);
    let n: u32 = s.parse()?;
    Ok(n)
}

#[tokio::test]
async fn question_mark_in_async_body() {
    assert_eq!(question_mark("5").await, Ok(5));
    assert_eq!(question_mark("5").await, Ok(5));
    assert!(question_mark("x").await.is_err());
    assert_eq!(QUESTION.load(SeqCst), 2);
}

counter!(OPTIONS);
#[optimize::optimize(memory)]
fn option(x: u32) -> Option<String> {
    OPTIONS.fetch_add(1, SeqCst);
    (x > 0).then(|| x.to_string())
}

#[test]
fn options_cache_some_and_never_none() {
    assert_eq!(option(1).as_deref(), Some("1"));
    assert_eq!(option(1).as_deref(), Some("1"));
    assert_eq!(option(0), None);
    assert_eq!(option(0), None);
    assert_eq!(OPTIONS.load(SeqCst), 3);
}

counter!(FIB);
#[optimize::cpu]
fn fib(n: u64) -> u64 {
    FIB.fetch_add(1, SeqCst);
    if n < 2 {
        n
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

#[test]
fn recursive_fn_does_not_deadlock_and_runs_each_key_once() {
    assert_eq!(fib(80), 23_416_728_348_467_685);
    assert_eq!(FIB.load(SeqCst), 81);
}

#[optimize::io]
async fn fib_async(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        Box::pin(fib_async(n - 1)).await + Box::pin(fib_async(n - 2)).await
    }
}

/// Each level nests the managed call's future (a few KiB in a debug build: admission,
/// rejection, timeouts and the adaptive limit's timing), so 60 levels are run on a thread with
/// an 8 MiB stack, as a `main` thread has, rather than the test harness's 2 MiB.
#[test]
fn recursive_async_fn() {
    let run = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(fib_async(60))
        })
        .unwrap();
    assert_eq!(run.join().unwrap(), 1_548_008_755_920);
}

#[optimize::io(key = 0u8)]
fn self_waiting(n: u32) -> u32 {
    if n == 0 {
        0
    } else {
        self_waiting(n - 1)
    }
}

#[test]
fn a_call_waiting_on_its_own_key_panics_instead_of_hanging() {
    let err = std::panic::catch_unwind(|| self_waiting(1)).unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("called itself with the same cache key"),
        "{msg}"
    );
}

counter!(UNIT);
#[optimize::io]
fn no_arguments() -> Vec<u8> {
    UNIT.fetch_add(1, SeqCst);
    vec![1, 2, 3]
}

#[test]
fn functions_without_arguments_cache_one_value() {
    assert_eq!(no_arguments(), vec![1, 2, 3]);
    assert_eq!(no_arguments(), vec![1, 2, 3]);
    assert_eq!(UNIT.load(SeqCst), 1);
}

counter!(MANY_ARGUMENTS);
/// Past the twelve types the runtime's schema tuples cover (twelve arguments and the return
/// type), the signature's schema is built by a closure instead.
/// The generated `many_arguments_invalidate` takes the same twelve arguments and allows
/// `clippy::too_many_arguments` itself (nobody can annotate it); `clippy --all-targets`
/// checks that.
#[optimize::io]
#[allow(clippy::too_many_arguments)]
fn many_arguments(
    a: u8,
    b: u16,
    c: u32,
    d: u64,
    e: i8,
    f: i16,
    g: i32,
    h: i64,
    i: bool,
    j: char,
    k: String,
    l: Vec<u8>,
) -> u64 {
    MANY_ARGUMENTS.fetch_add(1, SeqCst);
    u64::from(a)
        + u64::from(b)
        + u64::from(c)
        + d
        + e as u64
        + f as u64
        + g as u64
        + h as u64
        + u64::from(i)
        + j as u64
        + k.len() as u64
        + l.len() as u64
}

#[test]
fn a_function_with_many_arguments_is_cached() {
    let call = || many_arguments(1, 2, 3, 4, 5, 6, 7, 8, true, 'a', "x".into(), vec![1]);
    assert_eq!(call(), 36 + 1 + 97 + 2);
    assert_eq!(call(), 136);
    assert_eq!(MANY_ARGUMENTS.load(SeqCst), 1);
    assert_ne!(many_arguments_cache().stats().hits(), 0);
}
