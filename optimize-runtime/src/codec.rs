//! The entry envelope: how a value is stored in the shared tiers (L2, L3). Design §6.
//!
//! ```text
//! offset size field
//!      0    4 magic            b"OPTZ"
//!      4    1 format version   4
//!      5    1 codec id         1 = bincode 1.3 (fixint, little-endian)
//!      6    1 flags            bit 0: payload is zstd-compressed
//!      7    1 reserved         0
//!      8    8 schema hash      of the function's signature types
//!     16    8 created at       unix milliseconds
//!     24    8 expires at       unix milliseconds, 0 = never: when the entry is dead
//!     32    4 payload length   bytes stored after the header
//!     36    4 raw length       bytes of the encoded value before compression
//!     40    8 key hash         xxh3-64 of the entry's own key: copied to another key, it
//!                              is refused (an entry belongs to one key of one function)
//!     48    8 generation       digest of the generations of the function and of the entry's
//!                              tags when it was written: once either is invalidated, the
//!                              entry is refused as retired
//!     56    8 fresh until      unix milliseconds, 0 = until it expires: past it, the entry
//!                              is stale, kept only to stand in for a failure (fail-safe)
//!     64    8 checksum         xxh3-64 of the payload, seeded with xxh3-64 of bytes 0..64
//!     72      payload
//! ```
//!
//! All integers are little-endian. The checksum covers the header as well as the payload, so
//! a flipped expiry or schema is caught, not only a flipped value. Every check that fails makes
//! the entry a miss with a [`Reject`] reason; decoding never panics, whatever the bytes.

use std::fmt;

use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};

const MAGIC: [u8; 4] = *b"OPTZ";
const FORMAT_VERSION: u8 = 4;
/// bincode 1.3.3 with fixed-width little-endian integers.
pub const CODEC_BINCODE1: u8 = 1;
const FLAG_ZSTD: u8 = 0b0000_0001;
/// An HMAC-SHA256 tag of header and payload follows the payload.
const FLAG_SIGNED: u8 = 0b0000_0010;
const KNOWN_FLAGS: u8 = FLAG_ZSTD | FLAG_SIGNED;
/// Length of the tag of a signed entry.
pub const TAG_LEN: usize = 32;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 72;
/// Where the generation digest sits in the header.
const GENERATION_AT: usize = 48;
/// Where the end of freshness sits in the header.
const FRESH_UNTIL_AT: usize = 56;
/// Where the checksum sits in the header.
const CHECKSUM_AT: usize = 64;

/// Limits and thresholds of the envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvelopeOptions {
    /// Payloads at least this large are zstd-compressed when that saves space.
    pub compress_threshold: usize,
    /// zstd level.
    pub zstd_level: i32,
    /// Largest encoded value accepted, before and after decompression.
    pub max_entry_bytes: usize,
    /// When set, entries are signed with the current key, and an entry without a valid tag
    /// (by the current or the previous key) is refused.
    pub signing: Option<&'static SigningKeys>,
}

impl Default for EnvelopeOptions {
    fn default() -> Self {
        Self {
            compress_threshold: 1024,
            zstd_level: 3,
            max_entry_bytes: 16 * 1024 * 1024,
            signing: None,
        }
    }
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The secrets entries are signed with: the current one, and during a rotation the previous
/// one, still accepted on read. Never shown in `Debug`.
///
/// ```
/// use optimize_runtime::codec::{decode, encode, EnvelopeOptions, Reject, SigningKeys};
///
/// let old: &'static SigningKeys = Box::leak(Box::new(SigningKeys::new(b"old secret", None)));
/// let new: &'static SigningKeys =
///     Box::leak(Box::new(SigningKeys::new(b"new secret", Some(b"old secret"))));
/// let signed_by = |keys| EnvelopeOptions { signing: Some(keys), ..EnvelopeOptions::default() };
/// let bytes = encode(&7u32, 1, 2, 1_000, 0, &signed_by(old)).unwrap();
/// // Rolling: the new key still accepts what the old one signed.
/// assert_eq!(decode::<u32>(&bytes, 1, 2, 2_000, &signed_by(new)), Ok(7));
/// // Unsigned entries are refused once signing is on.
/// let plain = encode(&7u32, 1, 2, 1_000, 0, &EnvelopeOptions::default()).unwrap();
/// assert_eq!(decode::<u32>(&plain, 1, 2, 2_000, &signed_by(new)), Err(Reject::Signature));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeys {
    current: Vec<u8>,
    previous: Option<Vec<u8>>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("current", &"<redacted>")
            .field("previous", &self.previous.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl SigningKeys {
    /// Keys from their secrets.
    pub fn new(current: &[u8], previous: Option<&[u8]>) -> Self {
        Self {
            current: current.to_vec(),
            previous: previous.map(<[u8]>::to_vec),
        }
    }

    /// The keys, for the life of the process (envelope options are `Copy` and reach every
    /// function's store). Equal keys are stored once, so resolving a configuration again does
    /// not grow memory.
    pub fn interned(self) -> &'static SigningKeys {
        static ALL: std::sync::Mutex<Vec<&'static SigningKeys>> = std::sync::Mutex::new(Vec::new());
        let mut all = ALL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(known) = all.iter().find(|k| ***k == self) {
            return known;
        }
        let keys: &'static SigningKeys = Box::leak(Box::new(self));
        all.push(keys);
        keys
    }

    fn mac(key: &[u8], header: &[u8], payload: &[u8]) -> HmacSha256 {
        use hmac::{KeyInit, Mac};
        // HMAC takes keys of any length; this cannot fail.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        mac.update(header);
        mac.update(payload);
        mac
    }

    fn tag(&self, header: &[u8], payload: &[u8]) -> [u8; TAG_LEN] {
        use hmac::Mac;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(
            &Self::mac(&self.current, header, payload)
                .finalize()
                .into_bytes(),
        );
        out
    }

    /// Whether `tag` is header and payload's tag under the current or the previous key
    /// (compared in constant time).
    fn verifies(&self, header: &[u8], payload: &[u8], tag: &[u8]) -> bool {
        use hmac::Mac;
        std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .any(|key| Self::mac(key, header, payload).verify_slice(tag).is_ok())
    }
}

/// Why stored bytes were not accepted as a value. Each becomes a miss, a deletion and a count
/// in `optimize_cache_rejected_total{tier, reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Shorter than the header, or than the header says.
    Truncated,
    /// Not written by this library.
    Magic,
    /// Written by an unknown format version.
    Version,
    /// Encoded with an unknown codec, or unknown flags.
    Codec,
    /// Written for another signature of the function.
    Schema,
    /// The payload does not match its checksum.
    Checksum,
    /// Past its expiry time.
    Expired,
    /// Larger than the maximum entry size.
    Oversized,
    /// Written for another key (copied or forged onto this one).
    Key,
    /// Signing is on and the entry has no valid tag (unsigned, forged, or signed with a key
    /// that is neither the current nor the previous one).
    Signature,
    /// zstd failed, or produced more or fewer bytes than the header says.
    Decompress,
    /// The payload does not decode as the expected type.
    Decode,
    /// Written before an invalidation of its function or of one of its tags (its generation
    /// digest is not the current one).
    Retired,
}

impl Reject {
    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::Magic => "magic",
            Reject::Version => "version",
            Reject::Codec => "codec",
            Reject::Schema => "schema",
            Reject::Checksum => "checksum",
            Reject::Expired => "expired",
            Reject::Oversized => "oversized",
            Reject::Key => "key",
            Reject::Signature => "signature",
            Reject::Decompress => "decompress",
            Reject::Decode => "decode",
            Reject::Retired => "retired",
        }
    }

    /// Every reason, in a fixed order.
    pub const ALL: [Reject; 13] = [
        Reject::Truncated,
        Reject::Magic,
        Reject::Version,
        Reject::Codec,
        Reject::Schema,
        Reject::Checksum,
        Reject::Expired,
        Reject::Oversized,
        Reject::Key,
        Reject::Signature,
        Reject::Decompress,
        Reject::Decode,
        Reject::Retired,
    ];
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value could not be encoded (its `Serialize` failed, or it exceeds the maximum size).
#[derive(Debug, thiserror::Error)]
#[error("value cannot be stored in a shared tier: {message}")]
pub struct EncodeError {
    oversized: bool,
    message: String,
}

impl EncodeError {
    fn other(message: String) -> Self {
        Self {
            oversized: false,
            message,
        }
    }

    /// Whether the value is larger than the maximum entry size (rather than unserializable).
    pub fn is_oversized(&self) -> bool {
        self.oversized
    }
}

impl From<bincode::Error> for EncodeError {
    fn from(e: bincode::Error) -> Self {
        Self {
            oversized: matches!(*e, bincode::ErrorKind::SizeLimit),
            message: e.to_string(),
        }
    }
}

/// The fields of a header, as read from stored bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Hash of the writer's signature types.
    pub schema: u64,
    /// Unix milliseconds when written.
    pub created_at_ms: u64,
    /// Unix milliseconds after which the entry is dead; 0 = never.
    pub expires_at_ms: u64,
    /// Whether the payload is zstd-compressed.
    pub compressed: bool,
    /// Whether a signature tag follows the payload.
    pub signed: bool,
    /// Stored payload length.
    pub payload_len: u32,
    /// Encoded length before compression.
    pub raw_len: u32,
    /// Hash of the key the entry was written for ([`key_hash`]).
    pub key: u64,
    /// Digest of the generations it was written under (0 when the function has none).
    pub generation: u64,
    /// Unix milliseconds after which the entry is stale (kept for fail-safe until it
    /// expires); 0 = fresh until it expires.
    pub fresh_until_ms: u64,
}

impl Header {
    /// Whether the entry is past its freshness at `now_ms` (and so only stands in for a
    /// failure).
    pub fn is_stale(&self, now_ms: u64) -> bool {
        self.fresh_until_ms != 0 && now_ms >= self.fresh_until_ms
    }
}

impl Header {
    /// Bytes after the header: the payload, and the tag of a signed entry.
    fn stored_len(&self) -> usize {
        self.payload_len as usize + if self.signed { TAG_LEN } else { 0 }
    }
}

/// The hash of an entry's key that its header carries.
///
/// ```
/// use optimize_runtime::codec::{decode, encode, key_hash, EnvelopeOptions, Reject};
///
/// let opts = EnvelopeOptions::default();
/// let bytes = encode(&7u32, 0xabc, key_hash("app:f:1"), 1_000, 0, &opts).unwrap();
/// assert_eq!(decode::<u32>(&bytes, 0xabc, key_hash("app:f:1"), 2_000, &opts), Ok(7));
/// // The same bytes under another key are refused.
/// assert_eq!(decode::<u32>(&bytes, 0xabc, key_hash("app:g:1"), 2_000, &opts), Err(Reject::Key));
/// ```
pub fn key_hash(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

fn value_codec(limit: usize) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(limit as u64)
}

/// Encodes `value` into an envelope (generation 0: see [`encode_stamped`]).
///
/// ```
/// use optimize_runtime::codec::{decode, encode, EnvelopeOptions};
///
/// let opts = EnvelopeOptions::default();
/// let bytes = encode(&vec![1u32, 2, 3], 0xabc, 9, 1_000, 0, &opts).unwrap();
/// let back: Vec<u32> = decode(&bytes, 0xabc, 9, 2_000, &opts).unwrap();
/// assert_eq!(back, vec![1, 2, 3]);
/// ```
pub fn encode<T: Serialize + ?Sized>(
    value: &T,
    schema: u64,
    key: u64,
    created_at_ms: u64,
    expires_at_ms: u64,
    opts: &EnvelopeOptions,
) -> Result<Vec<u8>, EncodeError> {
    encode_stamped(value, schema, key, 0, created_at_ms, expires_at_ms, opts)
}

/// Encodes `value` into an envelope stamped with a generation digest, which a read checks
/// against the current one.
///
/// ```
/// use optimize_runtime::codec::{decode_stamped, encode_stamped, EnvelopeOptions, Reject};
///
/// let opts = EnvelopeOptions::default();
/// let bytes = encode_stamped(&7u32, 0xabc, 9, 41, 1_000, 0, &opts).unwrap();
/// assert_eq!(decode_stamped::<u32>(&bytes, 0xabc, 9, 41, 2_000, &opts), Ok(7));
/// // After an invalidation the digest moved on: the entry is retired.
/// assert_eq!(decode_stamped::<u32>(&bytes, 0xabc, 9, 42, 2_000, &opts), Err(Reject::Retired));
/// ```
pub fn encode_stamped<T: Serialize + ?Sized>(
    value: &T,
    schema: u64,
    key: u64,
    generation: u64,
    created_at_ms: u64,
    expires_at_ms: u64,
    opts: &EnvelopeOptions,
) -> Result<Vec<u8>, EncodeError> {
    let expiry = Expiry {
        fresh_until_ms: 0,
        expires_at_ms,
    };
    encode_entry(value, schema, key, generation, created_at_ms, expiry, opts)
}

/// When an entry stops being fresh and when it is dead (both unix milliseconds, 0 = never;
/// `fresh_until_ms` 0 = fresh until it is dead).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expiry {
    /// End of freshness: past it, the entry only stands in for a failure (fail-safe).
    pub fresh_until_ms: u64,
    /// End of life.
    pub expires_at_ms: u64,
}

/// [`encode_stamped`] with an end of freshness before the expiry (fail-safe keeps the entry
/// stale between them).
///
/// ```
/// use optimize_runtime::codec::{decode_with_header, encode_entry, EnvelopeOptions, Expiry};
///
/// let opts = EnvelopeOptions::default();
/// let expiry = Expiry { fresh_until_ms: 2_000, expires_at_ms: 9_000 };
/// let bytes = encode_entry(&7u32, 0xabc, 9, 0, 1_000, expiry, &opts).unwrap();
/// let (v, header) = decode_with_header::<u32>(&bytes, 0xabc, 9, 0, 5_000, &opts).unwrap();
/// assert_eq!(v, 7);
/// assert!(header.is_stale(5_000) && !header.is_stale(1_500));
/// ```
pub fn encode_entry<T: Serialize + ?Sized>(
    value: &T,
    schema: u64,
    key: u64,
    generation: u64,
    created_at_ms: u64,
    expiry: Expiry,
    opts: &EnvelopeOptions,
) -> Result<Vec<u8>, EncodeError> {
    let Expiry {
        fresh_until_ms,
        expires_at_ms,
    } = expiry;
    let raw = value_codec(opts.max_entry_bytes).serialize(value)?;
    let mut flags = 0;
    let mut payload = raw.as_slice();
    let compressed;
    if raw.len() >= opts.compress_threshold {
        compressed = zstd::bulk::compress(&raw, opts.zstd_level)
            .map_err(|e| EncodeError::other(format!("zstd: {e}")))?;
        if compressed.len() < raw.len() {
            flags |= FLAG_ZSTD;
            payload = &compressed;
        }
    }
    if opts.signing.is_some() {
        flags |= FLAG_SIGNED;
    }
    let raw_len = u32::try_from(raw.len()).map_err(|_| EncodeError {
        oversized: true,
        message: "value over 4 GiB".into(),
    })?;
    let payload_len = payload.len() as u32;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(CODEC_BINCODE1);
    out.push(flags);
    out.push(0);
    out.extend_from_slice(&schema.to_le_bytes());
    out.extend_from_slice(&created_at_ms.to_le_bytes());
    out.extend_from_slice(&expires_at_ms.to_le_bytes());
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&raw_len.to_le_bytes());
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&fresh_until_ms.to_le_bytes());
    let sum = checksum(&out, payload);
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(payload);
    if let Some(keys) = opts.signing {
        let tag = keys.tag(&out[..HEADER_LEN], payload);
        out.extend_from_slice(&tag);
    }
    Ok(out)
}

/// Checksum of an envelope: the payload's hash seeded with the hash of the header fields.
fn checksum(header: &[u8], payload: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(
        payload,
        xxhash_rust::xxh3::xxh3_64(&header[..CHECKSUM_AT]),
    )
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(buf)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut buf = [0u8; 4];
    buf.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(buf)
}

/// Reads and checks the header alone (magic, version, codec, flags, lengths). Used by the L3
/// sweeper, which needs expiry and age without decoding values.
pub fn read_header(bytes: &[u8]) -> Result<Header, Reject> {
    let header = header_fields(bytes)?;
    if bytes.len() - HEADER_LEN != header.stored_len() {
        return Err(Reject::Truncated);
    }
    Ok(header)
}

/// The header's fields, checked except for the payload's length (a bounded read may have cut
/// an oversized entry short: it must be reported as oversized, not truncated).
fn header_fields(bytes: &[u8]) -> Result<Header, Reject> {
    if bytes.len() < HEADER_LEN {
        return Err(if bytes.len() >= 4 && bytes[..4] != MAGIC {
            Reject::Magic
        } else {
            Reject::Truncated
        });
    }
    if bytes[..4] != MAGIC {
        return Err(Reject::Magic);
    }
    if bytes[4] != FORMAT_VERSION {
        return Err(Reject::Version);
    }
    if bytes[5] != CODEC_BINCODE1 || bytes[6] & !KNOWN_FLAGS != 0 || bytes[7] != 0 {
        return Err(Reject::Codec);
    }
    let header = Header {
        schema: u64_at(bytes, 8),
        created_at_ms: u64_at(bytes, 16),
        expires_at_ms: u64_at(bytes, 24),
        compressed: bytes[6] & FLAG_ZSTD != 0,
        signed: bytes[6] & FLAG_SIGNED != 0,
        payload_len: u32_at(bytes, 32),
        raw_len: u32_at(bytes, 36),
        key: u64_at(bytes, 40),
        generation: u64_at(bytes, GENERATION_AT),
        fresh_until_ms: u64_at(bytes, FRESH_UNTIL_AT),
    };
    Ok(header)
}

/// Checks an envelope written with generation 0 and decodes its value. `now_ms` is unix
/// milliseconds.
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    schema: u64,
    key: u64,
    now_ms: u64,
    opts: &EnvelopeOptions,
) -> Result<T, Reject> {
    decode_with_header(bytes, schema, key, 0, now_ms, opts).map(|(v, _)| v)
}

/// Checks an envelope and decodes its value, refusing it as [`Reject::Retired`] unless it was
/// stamped with `generation` (see [`encode_stamped`]).
pub fn decode_stamped<T: DeserializeOwned>(
    bytes: &[u8],
    schema: u64,
    key: u64,
    generation: u64,
    now_ms: u64,
    opts: &EnvelopeOptions,
) -> Result<T, Reject> {
    decode_with_header(bytes, schema, key, generation, now_ms, opts).map(|(v, _)| v)
}

/// [`decode_stamped`], also returning the header (for the entry's expiry).
pub fn decode_with_header<T: DeserializeOwned>(
    bytes: &[u8],
    schema: u64,
    key: u64,
    generation: u64,
    now_ms: u64,
    opts: &EnvelopeOptions,
) -> Result<(T, Header), Reject> {
    let header = header_fields(bytes)?;
    let raw_len = header.raw_len as usize;
    if raw_len > opts.max_entry_bytes || header.payload_len as usize > opts.max_entry_bytes {
        return Err(Reject::Oversized);
    }
    if bytes.len() - HEADER_LEN != header.stored_len() {
        return Err(Reject::Truncated);
    }
    let payload_end = HEADER_LEN + header.payload_len as usize;
    let payload = &bytes[HEADER_LEN..payload_end];
    if let Some(keys) = opts.signing {
        // Checked before anything the payload says is trusted: an unsigned or forged entry
        // tells nothing, not even why it would have been refused otherwise.
        if !header.signed || !keys.verifies(&bytes[..HEADER_LEN], payload, &bytes[payload_end..]) {
            return Err(Reject::Signature);
        }
    }
    if header.schema != schema {
        return Err(Reject::Schema);
    }
    if header.key != key {
        return Err(Reject::Key);
    }
    if header.expires_at_ms != 0 && now_ms >= header.expires_at_ms {
        return Err(Reject::Expired);
    }
    if checksum(bytes, payload) != u64_at(bytes, CHECKSUM_AT) {
        return Err(Reject::Checksum);
    }
    if header.generation != generation {
        return Err(Reject::Retired);
    }
    let decompressed;
    let raw = if header.compressed {
        // Bounded by the declared size, itself bounded by the maximum entry size: a payload
        // that inflates beyond it fails instead of allocating without limit.
        decompressed = zstd::bulk::decompress(payload, raw_len).map_err(|_| Reject::Decompress)?;
        if decompressed.len() != raw_len {
            return Err(Reject::Decompress);
        }
        &decompressed[..]
    } else {
        if payload.len() != raw_len {
            return Err(Reject::Truncated);
        }
        payload
    };
    let value = value_codec(raw_len.max(1))
        .deserialize(raw)
        .map_err(|_| Reject::Decode)?;
    Ok((value, header))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    const SCHEMA: u64 = 0x5eed;
    const KEY: u64 = 0x4e1;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct User {
        id: u64,
        name: String,
        tags: Vec<String>,
    }

    fn user() -> User {
        User {
            id: 7,
            name: "ada".into(),
            tags: vec!["x".repeat(3000)],
        }
    }

    fn opts() -> EnvelopeOptions {
        EnvelopeOptions::default()
    }

    fn check(bytes: &[u8]) -> Result<User, Reject> {
        decode::<User>(bytes, SCHEMA, KEY, 10, &opts())
    }

    #[test]
    fn round_trip_small_uncompressed() {
        let v = User {
            id: 1,
            name: "a".into(),
            tags: vec![],
        };
        let bytes = encode(&v, SCHEMA, KEY, 1, 0, &opts()).unwrap();
        assert!(!read_header(&bytes).unwrap().compressed);
        assert_eq!(check(&bytes), Ok(v));
    }

    #[test]
    fn round_trip_large_compressed() {
        let bytes = encode(&user(), SCHEMA, KEY, 1, 0, &opts()).unwrap();
        let h = read_header(&bytes).unwrap();
        assert!(h.compressed);
        assert!((h.payload_len as usize) < h.raw_len as usize);
        assert_eq!(check(&bytes), Ok(user()));
    }

    #[test]
    fn truncated() {
        let bytes = encode(&user(), SCHEMA, KEY, 1, 0, &opts()).unwrap();
        for cut in [0, 3, 10, HEADER_LEN - 1, HEADER_LEN, bytes.len() - 1] {
            assert_eq!(check(&bytes[..cut]), Err(Reject::Truncated), "cut at {cut}");
        }
    }

    #[test]
    fn bit_flips_anywhere_are_rejected_never_accepted_wrongly() {
        let bytes = encode(&user(), SCHEMA, KEY, 1, 0, &opts()).unwrap();
        for i in 0..bytes.len() {
            for bit in [0, 3, 7] {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(
                    check(&b).is_err(),
                    "flip of bit {bit} in byte {i} was accepted"
                );
            }
        }
        let mut b = bytes.clone();
        let last = b.len() - 1;
        b[last] ^= 0x40;
        assert_eq!(check(&b), Err(Reject::Checksum));
    }

    #[test]
    fn foreign_bytes() {
        assert_eq!(
            check(b"{\"id\":7,\"name\":\"ada\"} and more text to pass the header length"),
            Err(Reject::Magic)
        );
        let mut bytes = encode(&user(), SCHEMA, KEY, 1, 0, &opts()).unwrap();
        bytes[7] = 1;
        assert_eq!(check(&bytes), Err(Reject::Codec));
        bytes[7] = 0;
        bytes[4] = 9;
        assert_eq!(check(&bytes), Err(Reject::Version));
        bytes[4] = FORMAT_VERSION;
        bytes[5] = 2;
        assert_eq!(check(&bytes), Err(Reject::Codec));
        bytes[5] = CODEC_BINCODE1;
        bytes[6] |= 0b1000_0000;
        assert_eq!(check(&bytes), Err(Reject::Codec));
    }

    #[test]
    fn wrong_schema() {
        let bytes = encode(&user(), SCHEMA + 1, KEY, 1, 0, &opts()).unwrap();
        assert_eq!(check(&bytes), Err(Reject::Schema));
    }

    #[test]
    fn wrong_type_with_right_schema_is_a_decode_error() {
        let bytes = encode(&(1u8, 2u8), SCHEMA, KEY, 1, 0, &opts()).unwrap();
        assert_eq!(check(&bytes), Err(Reject::Decode));
    }

    #[test]
    fn expired() {
        let bytes = encode(&user(), SCHEMA, KEY, 1, 10, &opts()).unwrap();
        assert_eq!(decode::<User>(&bytes, SCHEMA, KEY, 9, &opts()), Ok(user()));
        assert_eq!(
            decode::<User>(&bytes, SCHEMA, KEY, 10, &opts()),
            Err(Reject::Expired)
        );
    }

    #[test]
    fn oversized() {
        let big = EnvelopeOptions {
            max_entry_bytes: 1 << 20,
            ..opts()
        };
        let bytes = encode(&vec![7u8; 100_000], SCHEMA, KEY, 1, 0, &big).unwrap();
        let small = EnvelopeOptions {
            max_entry_bytes: 50_000,
            ..opts()
        };
        assert_eq!(
            decode::<Vec<u8>>(&bytes, SCHEMA, KEY, 2, &small),
            Err(Reject::Oversized)
        );
        // Encoding refuses values over the limit too.
        assert!(encode(&vec![7u8; 100_000], SCHEMA, KEY, 1, 0, &small).is_err());
    }

    #[test]
    fn a_stale_generation_is_retired_after_every_other_check() {
        let bytes = encode_stamped(&user(), SCHEMA, KEY, 5, 1, 0, &opts()).unwrap();
        assert_eq!(
            decode_stamped::<User>(&bytes, SCHEMA, KEY, 5, 10, &opts()),
            Ok(user())
        );
        assert_eq!(
            decode_stamped::<User>(&bytes, SCHEMA, KEY, 6, 10, &opts()),
            Err(Reject::Retired)
        );
        // A flipped generation is a corrupt header first.
        let mut flipped = bytes.clone();
        flipped[GENERATION_AT] ^= 1;
        assert_eq!(
            decode_stamped::<User>(&flipped, SCHEMA, KEY, 5, 10, &opts()),
            Err(Reject::Checksum)
        );
        assert_eq!(read_header(&bytes).unwrap().generation, 5);
    }

    #[test]
    fn decompression_bomb_is_bounded() {
        // A tiny zstd frame that inflates to 64 MiB, in an envelope that declares 100 bytes
        // with a correct checksum: decompression must stop at the declared size.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
        assert!(bomb.len() < 10_000);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&[FORMAT_VERSION, CODEC_BINCODE1, FLAG_ZSTD, 0]);
        bytes.extend_from_slice(&SCHEMA.to_le_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&(bomb.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&100u32.to_le_bytes());
        bytes.extend_from_slice(&KEY.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes()); // generation
        bytes.extend_from_slice(&0u64.to_le_bytes()); // fresh until
        let sum = checksum(&bytes, &bomb);
        bytes.extend_from_slice(&sum.to_le_bytes());
        bytes.extend_from_slice(&bomb);
        assert_eq!(
            decode::<Vec<u8>>(&bytes, SCHEMA, KEY, 2, &opts()),
            Err(Reject::Decompress)
        );
        // Declaring the true size is caught by the entry size limit instead.
        bytes[36..40].copy_from_slice(&((64u32) << 20).to_le_bytes());
        assert_eq!(
            decode::<Vec<u8>>(&bytes, SCHEMA, KEY, 2, &opts()),
            Err(Reject::Oversized)
        );
    }

    #[test]
    fn length_field_lies_are_caught() {
        let mut bytes = encode(&user(), SCHEMA, KEY, 1, 0, &opts()).unwrap();
        let declared = u32_at(&bytes, 32);
        bytes[32..36].copy_from_slice(&(declared + 1).to_le_bytes());
        assert_eq!(check(&bytes), Err(Reject::Truncated));
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for len in 0..600 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = check(&bytes);
        }
    }
}
