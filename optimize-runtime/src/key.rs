//! Cache keys (docs/tiers.md).
//!
//! A call's key is the xxh3-128 hash of the bincode encoding of its key arguments. Both are
//! fixed algorithms with fixed options, so a key is the same in every process and every build;
//! `std::hash` is never used because its output may change between Rust releases.
//!
//! The full key written to shared tiers is
//! `{namespace}:{fn_path}:v{version}:{schema:016x}:{args:032x}` (see [`FullKey`]).

use std::fmt;
use std::hash::Hasher;
use std::io;

use bincode::Options;
use serde::Serialize;

/// Hash of a call's key arguments: identifies one entry within one function's cache.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArgsKey(pub u128);

/// Hasher for keys that are already uniform 128-bit hashes: folds them instead of hashing again.
#[derive(Default)]
pub struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Only reached if a key type hashes itself as bytes; mix them in rather than lose them.
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(buf)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }

    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.0 = (i as u64) ^ ((i >> 64) as u64);
    }
}

/// Builds [`PrehashedKey`]s: the hasher of every map keyed by [`ArgsKey`].
pub type PrehashedBuild = std::hash::BuildHasherDefault<PrehashedKey>;

impl fmt::Debug for ArgsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArgsKey({:032x})", self.0)
    }
}

impl fmt::Display for ArgsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A value that can be part of a cache key: anything `serde::Serialize`.
///
/// This trait exists only to give a readable error when an argument cannot be hashed.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a cache key: it does not implement `serde::Serialize`",
    label = "this argument is hashed into the cache key",
    note = "derive `serde::Serialize` for it, leave it out with `skip(arg)`, or choose the key yourself with `key = <expr>`"
)]
pub trait KeyPart {
    /// Writes the value's canonical encoding into `hasher`.
    fn write_key(&self, hasher: &mut KeyHasher);
}

impl<T: Serialize + ?Sized> KeyPart for T {
    #[inline]
    fn write_key(&self, hasher: &mut KeyHasher) {
        hasher.push(self);
    }
}

/// The bincode options used for keys: fixed-width little-endian integers, so encodings never
/// depend on the machine or on varint heuristics.
fn key_codec() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
}

/// Keys up to this many bytes are hashed from the stack (most keys: ids, short strings).
const INLINE: usize = 128;

/// Builds an [`ArgsKey`] from the encodings of several values, without allocating for keys
/// up to 128 bytes.
///
/// ```
/// use optimize_runtime::key::KeyHasher;
///
/// let mut a = KeyHasher::new();
/// a.push(&42u64);
/// a.push("alice");
/// let mut b = KeyHasher::new();
/// b.push(&42u64);
/// b.push(&String::from("alice"));
/// assert_eq!(a.finish(), b.finish());
/// ```
pub struct KeyHasher {
    inline: [u8; INLINE],
    len: usize,
    spill: Vec<u8>,
    failed: bool,
}

impl KeyHasher {
    /// An empty hasher.
    #[inline]
    pub fn new() -> Self {
        Self {
            inline: [0; INLINE],
            len: 0,
            spill: Vec::new(),
            failed: false,
        }
    }

    /// Appends the encoding of `value`.
    #[inline]
    pub fn push<T: Serialize + ?Sized>(&mut self, value: &T) {
        if key_codec().serialize_into(&mut *self, value).is_err() {
            // Only types whose Serialize impl fails (e.g. sequences of unknown length) end here.
            self.failed = true;
        }
    }

    /// The key, or `None` when a value could not be encoded (the call then runs uncached).
    #[inline]
    pub fn finish(&self) -> Option<ArgsKey> {
        if self.failed {
            return None;
        }
        let bytes = if self.spill.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spill[..]
        };
        Some(ArgsKey(xxhash_rust::xxh3::xxh3_128(bytes)))
    }
}

impl Default for KeyHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl io::Write for KeyHasher {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.spill.is_empty() && self.len + buf.len() <= INLINE {
            self.inline[self.len..self.len + buf.len()].copy_from_slice(buf);
            self.len += buf.len();
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline[..self.len]);
            }
            self.spill.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // `write` never writes partially; skip the generic retry loop.
        self.write(buf).map(drop)
    }

    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Appends `v` as 32 lowercase hex digits (what `{:032x}` prints, without the formatter).
pub fn push_hex128(out: &mut String, v: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // Byte by byte (a `u128` shift per digit is several instructions) into one ASCII slice
    // pushed at once (a push per char costs more): this runs on every shared-tier lookup.
    let mut hex = [0u8; 32];
    for (pair, byte) in hex.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    out.push_str(std::str::from_utf8(&hex).unwrap_or_default());
}

/// The key of an entry in a shared tier (L2, L3):
/// `{namespace}:{fn_path}:v{version}:{schema:016x}:{args:032x}`.
///
/// ```
/// use optimize_runtime::key::{ArgsKey, FullKey};
///
/// let key = FullKey { namespace: "optimize", fn_path: "app::users::fetch", version: 1, schema: 0xab, args: ArgsKey(7) };
/// assert_eq!(
///     key.to_string(),
///     "optimize:app::users::fetch:v1:00000000000000ab:00000000000000000000000000000007"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FullKey<'a> {
    /// Prefix shared by every key of one application (or one deployment).
    pub namespace: &'a str,
    /// `module_path!()` plus the function name (plus the self type for methods), or `name = ...`.
    pub fn_path: &'a str,
    /// The user's `version = N`, bumped by hand to retire old entries.
    pub version: u32,
    /// Hash of the function's argument and return types, computed at compile time.
    pub schema: u64,
    /// Hash of the call's key arguments.
    pub args: ArgsKey,
}

impl fmt::Display for FullKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:v{}:{:016x}:{:032x}",
            self.namespace, self.fn_path, self.version, self.schema, self.args.0
        )
    }
}

/// Hash of resolved types (their `type_name`s and sizes), for [`crate::meta::SiteMeta::types`].
/// A compiler upgrade may print a type differently; entries then retire, which is safe.
///
/// ```
/// use optimize_runtime::key::type_schema;
///
/// let a = type_schema(&[std::any::type_name::<u32>()], &[4]);
/// assert_eq!(a, type_schema(&["u32"], &[4]));
/// assert_ne!(a, type_schema(&["u64"], &[8]));
/// ```
pub fn type_schema(names: &[&str], sizes: &[usize]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for name in names {
        h.update(name.as_bytes());
        h.update(&[0]);
    }
    for size in sizes {
        h.update(&(*size as u64).to_le_bytes());
    }
    h.digest()
}

/// The types of a function's signature as one tuple, so their [`type_schema`] is one generic
/// function ([`type_schema_of`]) that every function with the same signature shares, and the
/// function and its two companions name the same instantiation (a closure per use would be
/// compiled three times per function).
#[doc(hidden)]
pub trait SchemaTypes {
    /// [`type_schema`] of the tuple's element types, in order.
    fn schema() -> u64;
}

macro_rules! schema_types {
    ($($t:ident)*) => {
        impl<$($t),*> SchemaTypes for ($($t,)*) {
            fn schema() -> u64 {
                type_schema(
                    &[$(std::any::type_name::<$t>()),*],
                    &[$(std::mem::size_of::<$t>()),*],
                )
            }
        }
    };
}

schema_types!();
schema_types!(A);
schema_types!(A B);
schema_types!(A B C);
schema_types!(A B C D);
schema_types!(A B C D E);
schema_types!(A B C D E F);
schema_types!(A B C D E F G);
schema_types!(A B C D E F G H);
schema_types!(A B C D E F G H I);
schema_types!(A B C D E F G H I J);
schema_types!(A B C D E F G H I J K);
schema_types!(A B C D E F G H I J K L);

/// [`type_schema`] of the types in the tuple `T` (generated code names it with the
/// signature's types; up to 12).
///
/// ```
/// use optimize_runtime::key::{type_schema, type_schema_of};
///
/// assert_eq!(
///     type_schema_of::<(u32, String)>(),
///     type_schema(
///         &[std::any::type_name::<u32>(), std::any::type_name::<String>()],
///         &[4, std::mem::size_of::<String>()],
///     )
/// );
/// ```
pub fn type_schema_of<T: SchemaTypes>() -> u64 {
    T::schema()
}

/// One function's shared-tier keys: the fixed part (everything but the arguments' hash) is
/// built once, so a key costs one allocation and 32 hex digits per call. The only place that
/// knows the layout besides [`FullKey`], which it mirrors.
///
/// ```
/// use optimize_runtime::key::{ArgsKey, FullKey, KeyLayout};
///
/// let layout = KeyLayout::new("optimize", "app::f", 2, 0xab);
/// let full = FullKey { namespace: "optimize", fn_path: "app::f", version: 2, schema: 0xab, args: ArgsKey(9) };
/// assert_eq!(layout.key(ArgsKey(9)), full.to_string());
/// assert!(layout.key(ArgsKey(9)).starts_with(layout.function_prefix()));
/// // Another function whose path extends this one is not under its prefix.
/// let users = KeyLayout::new("ns", "app::users", 0, 1);
/// let fetch = KeyLayout::new("ns", "app::users::fetch", 0, 1);
/// assert!(!fetch.key(ArgsKey(1)).starts_with(users.function_prefix()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    /// `{namespace}:{fn_path}:v{version}:{schema:016x}:`
    prefix: String,
    /// Length of `{namespace}:{fn_path}:`, the part shared by every version and schema.
    function_len: usize,
}

impl KeyLayout {
    /// The layout of one function's keys.
    pub fn new(namespace: &str, fn_path: &str, version: u32, schema: u64) -> Self {
        let function_len = namespace.len() + fn_path.len() + 3;
        let prefix = format!("{namespace}:{fn_path}:v{version}:{schema:016x}:");
        Self {
            prefix,
            function_len,
        }
    }

    /// `{namespace}:{fn_path}:v{version}:{schema:016x}:`: what every current entry's key
    /// starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The arguments' key of an entry's key of this layout (`None` for any other key).
    ///
    /// ```
    /// use optimize_runtime::key::{ArgsKey, KeyLayout};
    ///
    /// let layout = KeyLayout::new("app", "f", 1, 7);
    /// assert_eq!(layout.args_of(&layout.key(ArgsKey(42))), Some(ArgsKey(42)));
    /// assert_eq!(layout.args_of("app:g:v1:0000000000000007:00"), None);
    /// ```
    pub fn args_of(&self, key: &str) -> Option<ArgsKey> {
        let hex = key.strip_prefix(&self.prefix)?;
        (hex.len() == 32)
            .then(|| u128::from_str_radix(hex, 16).ok())
            .flatten()
            .map(ArgsKey)
    }

    /// The key of the entry for `args`.
    pub fn key(&self, args: ArgsKey) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 32);
        key.push_str(&self.prefix);
        push_hex128(&mut key, args.0);
        key
    }

    /// Calls `f` with the key of the entry for `args`, built in a buffer of this thread
    /// rather than a new `String` (an L3 hit reads with it before anything needs to own it).
    ///
    /// ```
    /// use optimize_runtime::key::{ArgsKey, KeyLayout};
    ///
    /// let layout = KeyLayout::new("app", "f", 1, 7);
    /// assert_eq!(layout.with_key(ArgsKey(42), str::to_owned), layout.key(ArgsKey(42)));
    /// ```
    pub fn with_key<R>(&self, args: ArgsKey, f: impl FnOnce(&str) -> R) -> R {
        thread_local! {
            static BUFFER: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        BUFFER.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut key) => {
                key.clear();
                key.push_str(&self.prefix);
                push_hex128(&mut key, args.0);
                f(&key)
            }
            // Re-entered from `f` (a value's `Deserialize` calling a managed function): an
            // owned key for the inner call.
            Err(_) => f(&self.key(args)),
        })
    }

    /// `{namespace}:{fn_path}:v`: the prefix of every entry of the function, whatever its
    /// version or schema (what invalidating the whole function deletes). The `v` keeps it
    /// from matching another function whose path extends this one (`app::users` against
    /// `app::users::fetch`).
    pub fn function_prefix(&self) -> &str {
        &self.prefix[..self.function_len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    fn key_of<T: Serialize + ?Sized>(v: &T) -> ArgsKey {
        let mut h = KeyHasher::new();
        h.push(v);
        h.finish().unwrap()
    }

    /// Pinned values: if the encoding or hash ever changes, every persisted entry would
    /// silently become unreachable, so this must be a deliberate, versioned change.
    #[test]
    fn keys_are_stable_across_builds() {
        assert_eq!(
            key_of(&42u64).to_string(),
            format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&42u64.to_le_bytes()))
        );
        let mut expected = 5u64.to_le_bytes().to_vec();
        expected.extend_from_slice(b"alice");
        assert_eq!(
            key_of("alice"),
            ArgsKey(xxhash_rust::xxh3::xxh3_128(&expected))
        );
    }

    #[test]
    fn borrowed_and_owned_forms_agree() {
        assert_eq!(key_of("x"), key_of(&String::from("x")));
        assert_eq!(key_of(&[1u32, 2][..]), key_of(&vec![1u32, 2]));
    }

    #[test]
    fn hex_matches_the_formatter() {
        for v in [
            0u128,
            1,
            0xabc,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            let mut s = String::new();
            push_hex128(&mut s, v);
            assert_eq!(s, format!("{v:032x}"));
        }
    }

    #[test]
    fn argument_boundaries_matter() {
        let mut a = KeyHasher::new();
        a.push("ab");
        a.push("c");
        let mut b = KeyHasher::new();
        b.push("a");
        b.push("bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn long_keys_spill_and_still_hash_everything() {
        let long = "y".repeat(1000);
        let mut other = long.clone();
        other.replace_range(999..1000, "z");
        assert_ne!(key_of(long.as_str()), key_of(other.as_str()));
        let mut h = KeyHasher::new();
        h.push(&1u8);
        h.push(long.as_str());
        let mut expected = vec![1u8];
        expected.extend_from_slice(&1000u64.to_le_bytes());
        expected.extend_from_slice(long.as_bytes());
        assert_eq!(
            h.finish(),
            Some(ArgsKey(xxhash_rust::xxh3::xxh3_128(&expected)))
        );
    }

    #[test]
    fn unencodable_values_yield_no_key() {
        struct UnknownLen;
        impl Serialize for UnknownLen {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                let seq = s.serialize_seq(None)?;
                seq.end()
            }
        }
        let mut h = KeyHasher::new();
        h.push(&UnknownLen);
        assert_eq!(h.finish(), None);
    }
}

/// Computes a function's key from its key arguments given as JSON (an invalidation over
/// HTTP or from the CLI): `Ok(None)` when the function has no key for them.
pub type JsonKeyFn = fn(&serde_json::Value) -> Result<Option<ArgsKey>, String>;

/// Type-level carrier of a function's key argument types (owned), for reading them from
/// JSON when they are `Deserialize` (the technique of `policy`'s probes).
pub struct JsonArgs<T>(std::marker::PhantomData<fn() -> T>);

impl<T> JsonArgs<T> {
    /// The probe.
    pub const NEW: Self = JsonArgs(std::marker::PhantomData);
}

/// Reads the key arguments from JSON and hashes them: chosen when they are all
/// `Deserialize` (and `Serialize`, as every key argument is).
pub trait JsonArgsDecode {
    /// The key of the arguments: an object by parameter name, an array in parameter order,
    /// or (one parameter) the value alone. A tuple encodes as its elements one after the
    /// other, so hashing it gives the call's key.
    fn key(&self, json: &serde_json::Value, names: &[&str]) -> Result<Option<ArgsKey>, String>;
}

impl<T: serde::de::DeserializeOwned + Serialize> JsonArgsDecode for JsonArgs<T> {
    fn key(&self, json: &serde_json::Value, names: &[&str]) -> Result<Option<ArgsKey>, String> {
        let args: T = serde_json::from_value(json_args_array(json, names)?).map_err(|e| {
            format!(
                "the arguments do not match the parameters ({}): {e}",
                names.join(", ")
            )
        })?;
        let mut hasher = KeyHasher::new();
        hasher.push(&args);
        Ok(hasher.finish())
    }
}

/// Refuses: chosen when some key argument is not `Deserialize`.
pub trait JsonArgsRefuse {
    /// Always an error saying why.
    fn key(&self, json: &serde_json::Value, names: &[&str]) -> Result<Option<ArgsKey>, String>;
}

impl<T> JsonArgsRefuse for &JsonArgs<T> {
    fn key(&self, _: &serde_json::Value, _: &[&str]) -> Result<Option<ArgsKey>, String> {
        Err("its key arguments cannot be read from JSON (some type is not `serde::Deserialize`, or is generic): invalidate the whole function or a tag instead".into())
    }
}

/// The key arguments as a JSON array in parameter order, from the forms
/// [`JsonArgsDecode::decode`] accepts.
fn json_args_array(json: &serde_json::Value, names: &[&str]) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    match json {
        Value::Object(fields) if names.len() != 1 || fields.contains_key(names[0]) => {
            if let Some(unknown) = fields.keys().find(|k| !names.contains(&k.as_str())) {
                return Err(format!(
                    "no key parameter is named `{unknown}` (the key parameters: {})",
                    names.join(", ")
                ));
            }
            names
                .iter()
                .map(|n| {
                    fields
                        .get(*n)
                        .cloned()
                        .ok_or_else(|| format!("the argument `{n}` is missing"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        Value::Array(items) if items.len() == names.len() && names.len() != 1 => Ok(json.clone()),
        Value::Array(items) if names.len() != 1 => Err(format!(
            "{} arguments given, {} expected ({})",
            items.len(),
            names.len(),
            names.join(", ")
        )),
        Value::Array(items) if items.len() == 1 && names.len() == 1 => Ok(json.clone()),
        single if names.len() == 1 => Ok(Value::Array(vec![single.clone()])),
        _ if names.is_empty() => Ok(Value::Array(Vec::new())),
        _ => Err(format!(
            "expected an object by parameter name or an array of {} arguments ({})",
            names.len(),
            names.join(", ")
        )),
    }
}

#[cfg(test)]
#[allow(clippy::needless_borrow)] // the probe's `&` picks the impl
mod json_tests {
    use super::*;
    use serde_json::json;

    fn key(json: serde_json::Value) -> Result<Option<ArgsKey>, String> {
        (&JsonArgs::<(u64, String)>::NEW).key(&json, &["id", "name"])
    }

    #[test]
    fn json_arguments_in_every_form_give_the_calls_key() {
        // What a call `f(7, "x")` with `name: &str` hashes.
        let mut call = KeyHasher::new();
        7u64.write_key(&mut call);
        "x".write_key(&mut call);
        let call = call.finish();
        assert_eq!(key(json!([7, "x"])).unwrap(), call);
        assert_eq!(key(json!({"name": "x", "id": 7})).unwrap(), call);
        let mut one = KeyHasher::new();
        [1u8, 2].as_slice().write_key(&mut one);
        let bytes = (&JsonArgs::<(Vec<u8>,)>::NEW).key(&json!([1, 2]), &["bytes"]);
        assert_eq!(
            bytes.unwrap(),
            one.finish(),
            "a `&[u8]` argument, the value alone"
        );
    }

    #[test]
    fn bad_json_arguments_say_what_is_expected() {
        let err = |json| key(json).unwrap_err();
        assert!(err(json!([7])).contains("1 arguments given, 2 expected (id, name)"));
        assert!(err(json!({"id": 7})).contains("`name` is missing"));
        assert!(err(json!({"id": 7, "nme": "x"})).contains("no key parameter is named `nme`"));
        assert!(err(json!(["x", 7])).contains("do not match the parameters (id, name)"));
        struct Opaque;
        let refused = (&JsonArgs::<(Opaque,)>::NEW).key(&json!(1), &["o"]);
        assert!(refused.is_err_and(|e| e.contains("not `serde::Deserialize`")));
    }
}
