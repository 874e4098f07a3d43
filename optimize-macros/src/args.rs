//! Parsing of the attribute's options. Every value keeps its span so errors land on the
//! user's own tokens.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, LitInt, LitStr, Token};

use crate::errors::Errors;
use crate::options::{self, example, Value};

/// Which attribute was written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    Io,
    Cpu,
    Memory,
    /// `#[optimize::optimize(kind, ...)]`
    General,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Io,
    Cpu,
    Memory,
}

impl Kind {
    fn from_ident(ident: &Ident) -> Option<Self> {
        match ident.to_string().as_str() {
            "io" => Some(Kind::Io),
            "cpu" => Some(Kind::Cpu),
            "memory" => Some(Kind::Memory),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Io => "io",
            Kind::Cpu => "cpu",
            Kind::Memory => "memory",
        }
    }
}

impl Entry {
    fn kind(self) -> Option<Kind> {
        match self {
            Entry::Io => Some(Kind::Io),
            Entry::Cpu => Some(Kind::Cpu),
            Entry::Memory => Some(Kind::Memory),
            Entry::General => None,
        }
    }

    fn attribute(self) -> &'static str {
        match self {
            Entry::Io => "#[optimize::io]",
            Entry::Cpu => "#[optimize::cpu]",
            Entry::Memory => "#[optimize::memory]",
            Entry::General => "#[optimize::optimize]",
        }
    }
}

/// The options, as written. Checked against the function by `check`, carried to expansion
/// in the `Plan`.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) kind: Option<Kind>,
    pub(crate) ttl: Option<(Duration, LitStr)>,
    pub(crate) capacity: Option<u64>,
    pub(crate) key: Option<Expr>,
    pub(crate) skip: Option<(Ident, Vec<Ident>)>,
    pub(crate) name: Option<LitStr>,
    pub(crate) version: Option<u32>,
    pub(crate) krate: Option<syn::Path>,
    /// `tiers = "l1,l2"`: which tiers, and the literal for error spans.
    pub(crate) tiers: Option<(Tiers, LitStr)>,
    pub(crate) l2_ttl: Option<(Duration, LitStr)>,
    /// `fail_safe = "1h"`: how long past its ttl an entry is kept for failures.
    pub(crate) fail_safe: Option<(Duration, LitStr)>,
    /// `fail_safe_throttle = "30s"`.
    pub(crate) fail_safe_throttle: Option<(Duration, LitStr)>,
    /// `soft_timeout = "100ms"`.
    pub(crate) soft_timeout: Option<(Duration, LitStr)>,
    /// `refresh_ahead = 0.8`, and the literal for error spans.
    pub(crate) refresh_ahead: Option<(f64, syn::LitFloat)>,
    /// `stale_if_busy = 100`, and the literal for error spans.
    pub(crate) stale_if_busy: Option<(u64, LitInt)>,
    /// `predict = "markov"` or `"sequential(arg)"`, and the literal for error spans.
    pub(crate) predict: Option<(Predict, LitStr)>,
    /// `predict_confidence = 0.6`.
    pub(crate) predict_confidence: Option<(f64, syn::LitFloat)>,
    /// `predict_depth = 2`.
    pub(crate) predict_depth: Option<(u32, LitInt)>,
    pub(crate) l3_ttl: Option<(Duration, LitStr)>,
    pub(crate) compress_above: Option<(u32, LitStr)>,
    /// `level = "ultra"`: the `config::Level` variant.
    pub(crate) level: Option<&'static str>,
    /// `cache = false`: measure the function, never cache it.
    pub(crate) cache: bool,
    /// `lease = false`: no lease on an L2 miss.
    pub(crate) lease: bool,
    /// `priority = "high"`: order among waiting calls.
    pub(crate) priority: Option<(Priority, LitStr)>,
    /// `concurrency = N` (io).
    pub(crate) concurrency: Option<u64>,
    /// `concurrency = "adaptive(min..max)"` (io): the bounds.
    pub(crate) adaptive_concurrency: Option<(u64, u64)>,
    /// `timeout = "2s"` (async io).
    pub(crate) timeout: Option<(Duration, LitStr)>,
    /// `retries = N` (io).
    pub(crate) retries: Option<u32>,
    /// `backoff = "100ms"` (io, with `retries`).
    pub(crate) backoff: Option<(Duration, LitStr)>,
    /// `mem = "256MiB"` (memory).
    pub(crate) mem: Option<u64>,
    /// `capacity = "256MiB"`: a size: the function's L1 is bounded in bytes (values weighed
    /// by their encoded size), whatever its kind.
    pub(crate) capacity_size: Option<LitStr>,
    /// `tags = ["user:{id}", ...]`: each a `format!` string naming arguments.
    pub(crate) tags: Option<Vec<TagTemplate>>,
    /// Every option written, by its name token (for "no effect with ..." errors).
    pub(crate) given: Vec<Ident>,
}

/// The model of `predict = "..."`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Predict {
    /// The next key after each key.
    Markov,
    /// A constant step in an integer argument: the one named, else the only one.
    Sequential(Option<String>),
}

/// One tag of `tags = [...]`: the literal and the arguments its placeholders name.
pub(crate) struct TagTemplate {
    pub(crate) lit: LitStr,
    pub(crate) names: Vec<String>,
}

/// The tiers named in `tiers = "..."`.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tiers {
    pub(crate) l1: bool,
    pub(crate) l2: bool,
    pub(crate) l3: bool,
}

/// `priority = "..."`: mirrors the runtime's `Priority`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Priority {
    Critical,
    High,
    Normal,
    Low,
    Batch,
}

impl Priority {
    const NAMES: [(&'static str, Priority); 5] = [
        ("critical", Priority::Critical),
        ("high", Priority::High),
        ("normal", Priority::Normal),
        ("low", Priority::Low),
        ("batch", Priority::Batch),
    ];

    pub(crate) fn variant(self) -> &'static str {
        match self {
            Priority::Critical => "Critical",
            Priority::High => "High",
            Priority::Normal => "Normal",
            Priority::Low => "Low",
            Priority::Batch => "Batch",
        }
    }
}

/// `level = "..."`: the runtime's `config::Level` variants by name.
pub(crate) const LEVELS: [(&str, &str); 4] = [
    ("basic", "Basic"),
    ("advanced", "Advanced"),
    ("ultra", "Ultra"),
    ("extreme", "Extreme"),
];

const KINDS: &[&str] = &["io", "cpu", "memory"];

/// One option as written: `flag`, `name = value` or `name(a, b)`.
enum Raw {
    Flag(Ident),
    Assign(Ident, Expr),
    List(Ident, Punctuated<Ident, Token![,]>),
}

impl Parse for Raw {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let name = Ident::parse_any(input)?;
        if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Ok(Raw::Assign(name, input.parse()?))
        } else if input.peek(syn::token::Paren) {
            let content;
            syn::parenthesized!(content in input);
            Ok(Raw::List(
                name,
                Punctuated::parse_terminated_with(&content, Ident::parse_any)?,
            ))
        } else {
            Ok(Raw::Flag(name))
        }
    }
}

impl Raw {
    fn name(&self) -> &Ident {
        match self {
            Raw::Flag(n) | Raw::Assign(n, _) | Raw::List(n, _) => n,
        }
    }
}

pub(crate) fn parse(entry: Entry, tokens: TokenStream, errors: &mut Errors) -> Option<Args> {
    let raws = match Punctuated::<Raw, Token![,]>::parse_terminated.parse2(tokens) {
        Ok(raws) => raws,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    let mut args = Args {
        kind: entry.kind(),
        cache: true,
        lease: true,
        ..Args::default()
    };
    let mut kind_token: Option<Ident> = None;
    let mut seen: Vec<Ident> = Vec::new();

    for raw in raws {
        let name = raw.name().clone();
        let name_str = name.to_string();

        if let Some(kind) = Kind::from_ident(&name) {
            if !matches!(raw, Raw::Flag(_)) {
                errors.at(&name, format!("the kind is written alone: `{name_str}`"));
            } else if entry != Entry::General {
                errors.at(
                    &name,
                    format!(
                        "`{}` already sets the kind; remove `{name_str}` here, or write \
                         `#[optimize::{name_str}(...)]` instead",
                        entry.attribute()
                    ),
                );
            } else if let Some(first) = &kind_token {
                errors.at(
                    &name,
                    format!(
                        "a function has one kind, and `{first}` is already given; keep either \
                         `{first}` or `{name_str}`"
                    ),
                );
            } else {
                args.kind = Some(kind);
                kind_token = Some(name);
            }
            continue;
        }

        let Some(spec) = options::find(&name_str) else {
            errors.at(&name, unknown_option(&name_str, entry));
            continue;
        };
        if let Some(first) = seen.iter().find(|s| **s == name) {
            let mut e =
                syn::Error::new_spanned(&name, format!("duplicate option `{name_str}`; keep one"));
            e.combine(syn::Error::new_spanned(
                first,
                format!("`{name_str}` first given here"),
            ));
            errors.push(e);
            continue;
        }
        seen.push(name.clone());
        args.given.push(name.clone());

        // The form the option table says it takes.
        match (spec.value, raw) {
            (Value::Idents, Raw::List(kw, list)) => {
                args.skip = Some((kw, list.into_iter().collect()))
            }
            (Value::Idents, _) => errors.at(
                &name,
                format!(
                    "write {} with the arguments to leave out of the key",
                    spec.example
                ),
            ),
            (Value::Expr, Raw::Assign(_, expr)) => args.key = Some(expr),
            (_, Raw::Assign(_, value)) => assign(&mut args, &name_str, value, errors),
            (_, _) => errors.at(
                &name,
                format!("`{name_str}` needs a value: {}", spec.example),
            ),
        }
    }

    if args.kind.is_none() && entry == Entry::General {
        errors.at_span(
            Span::call_site(),
            "missing kind: write `#[optimize::optimize(io, ...)]` with one of `io`, `cpu`, \
             `memory` first, or use `#[optimize::io(...)]`, `#[optimize::cpu(...)]`, \
             `#[optimize::memory(...)]`",
        );
    }
    Some(args)
}

fn unknown_option(name: &str, entry: Entry) -> String {
    let mut valid: Vec<&str> = options::OPTIONS.iter().map(|s| s.name).collect();
    if entry == Entry::General {
        valid.extend(KINDS);
    }
    let mut msg = format!("unknown option `{name}`");
    if let Some(close) = valid.iter().find(|v| edit_distance(name, v) <= 2) {
        match options::find(close) {
            Some(spec) => msg.push_str(&format!("; did you mean `{close}` ({})?", spec.doc)),
            None => msg.push_str(&format!("; did you mean `{close}`?")),
        }
    }
    msg.push_str(&format!("\nvalid options: {}", valid.join(", ")));
    msg
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn lit_str(value: &Expr, option: &str, errors: &mut Errors) -> Option<LitStr> {
    match value {
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) => Some(s.clone()),
        other => {
            errors.at(
                other,
                format!("`{option}` takes a string literal: {}", example(option)),
            );
            None
        }
    }
}

/// The most calls `concurrency = "adaptive"` admits (the runtime's `ADAPTIVE_MAX`).
const ADAPTIVE_MAX: u64 = 1024;

/// `adaptive` or `adaptive(min..max)`, with `1 <= min <= max`.
fn parse_adaptive(text: &str) -> Option<(u64, u64)> {
    let rest = text.trim().strip_prefix("adaptive")?.trim();
    if rest.is_empty() {
        return Some((1, ADAPTIVE_MAX));
    }
    let (min, max) = rest
        .strip_prefix('(')?
        .strip_suffix(')')?
        .split_once("..")?;
    let (min, max): (u64, u64) = (min.trim().parse().ok()?, max.trim().parse().ok()?);
    (min >= 1 && min <= max).then_some((min, max))
}

/// The deepest `predict_depth` (the runtime's `Prediction::MAX_DEPTH`).
const MAX_PREDICT_DEPTH: u32 = 16;

/// `markov`, `sequential` or `sequential(name)`.
fn parse_predict(text: &str) -> Option<Predict> {
    let text = text.trim();
    if text == "markov" {
        return Some(Predict::Markov);
    }
    let rest = text.strip_prefix("sequential")?.trim();
    if rest.is_empty() {
        return Some(Predict::Sequential(None));
    }
    let name = rest.strip_prefix('(')?.strip_suffix(')')?.trim();
    syn::parse_str::<Ident>(name)
        .ok()
        .map(|_| Predict::Sequential(Some(name.to_owned())))
}

/// A number strictly between 0 and 1, written as a float literal (`0.8`); `meaning` says
/// what it is in the error.
fn fraction(
    value: &Expr,
    option: &str,
    meaning: &str,
    errors: &mut Errors,
) -> Option<(f64, syn::LitFloat)> {
    match value {
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Float(f),
            ..
        }) => match f.base10_parse::<f64>() {
            Ok(x) if x > 0.0 && x < 1.0 => Some((x, f.clone())),
            _ => {
                errors.at(
                    f,
                    format!(
                        "`{option}` is {meaning} between 0 and 1 (exclusive): {}",
                        example(option)
                    ),
                );
                None
            }
        },
        other => {
            errors.at(
                other,
                format!(
                    "`{option}` takes a number between 0 and 1: {}",
                    example(option)
                ),
            );
            None
        }
    }
}

fn lit_int<N>(value: &Expr, option: &str, errors: &mut Errors) -> Option<(N, LitInt)>
where
    N: std::str::FromStr,
    N::Err: std::fmt::Display,
{
    match value {
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(i),
            ..
        }) => match i.base10_parse::<N>() {
            Ok(n) => Some((n, i.clone())),
            Err(e) => {
                errors.at(i, format!("`{option}`: {e}"));
                None
            }
        },
        other => {
            errors.at(
                other,
                format!("`{option}` takes an integer literal: {}", example(option)),
            );
            None
        }
    }
}

/// `tags = ["...", ...]`: string literals whose placeholders are `{name}` or `{name:spec}`
/// (`{{` and `}}` are braces).
fn tag_templates(value: &Expr, errors: &mut Errors) -> Option<Vec<TagTemplate>> {
    let Expr::Array(array) = value else {
        errors.at(
            value,
            "`tags` takes an array of strings: `tags = [\"user:{id}\", \"org:{org}\"]`",
        );
        return None;
    };
    if array.elems.is_empty() {
        errors.at(
            value,
            "`tags` needs at least one tag: `tags = [\"user:{id}\"]`, or remove it",
        );
        return None;
    }
    let mut templates = Vec::new();
    for elem in &array.elems {
        let Some(lit) = lit_str(elem, "tags", errors) else {
            continue;
        };
        match placeholders(&lit.value()) {
            Ok(names) if lit.value().is_empty() => {
                let _ = names;
                errors.at(&lit, "a tag cannot be empty");
            }
            Ok(names) => templates.push(TagTemplate { lit, names }),
            Err(why) => errors.at(&lit, why),
        }
    }
    Some(templates)
}

/// The argument names a tag template's placeholders use, or why it is not a valid template.
fn placeholders(text: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
            }
            '{' => {
                let mut inside = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => inside.push(c),
                        None => {
                            return Err(format!(
                                "unclosed `{{` in tag {text:?}; write `{{{{` for a literal brace"
                            ))
                        }
                    }
                }
                let name = inside.split(':').next().unwrap_or_default().trim();
                if name.is_empty() || name.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                    return Err(format!(
                        "each placeholder of a tag names an argument, as in \"user:{{id}}\"; \
                         `{{{inside}}}` in {text:?} does not"
                    ));
                }
                names.push(name.to_owned());
            }
            '}' => {
                return Err(format!(
                    "unmatched `}}` in tag {text:?}; write `}}}}` for a literal brace"
                ))
            }
            _ => {}
        }
    }
    Ok(names)
}

fn duration(value: &Expr, option: &str, errors: &mut Errors) -> Option<(Duration, LitStr)> {
    let lit = lit_str(value, option, errors)?;
    match humantime::parse_duration(&lit.value()) {
        Ok(d) if d.is_zero() && option.starts_with("fail_safe") => {
            errors.at(
                &lit,
                format!("`{option}` must be greater than zero; remove it to turn fail-safe off"),
            );
            None
        }
        Ok(d) if d.is_zero() => {
            errors.at(
                &lit,
                format!(
                    "`{option}` must be greater than zero; remove `{option}` to keep entries until \
                     they are evicted or invalidated"
                ),
            );
            None
        }
        // Expiries past ten years only overflow Redis's millisecond expiry.
        Ok(d) if option.ends_with("ttl") && d > MAX_TTL => {
            errors.at(
                &lit,
                format!("`{option}` is at most 3650 days; remove it to keep entries until they are evicted or invalidated"),
            );
            None
        }
        Ok(d) => Some((d, lit)),
        Err(e) => {
            errors.at(
                &lit,
                format!(
                    "invalid duration {:?}: {e}; write a duration such as \"30s\", \"5m\", \
                     \"1h 30m\" or \"250ms\"",
                    lit.value()
                ),
            );
            None
        }
    }
}

/// The longest `ttl`, `l2_ttl` or `l3_ttl` (as the runtime's configuration allows).
const MAX_TTL: Duration = Duration::from_secs(3650 * 86_400);

/// A non-zero size in bytes such as `"64MiB"`; `example` completes "write a size such as".
fn size(value: &Expr, option: &str, example: &str, errors: &mut Errors) -> Option<(u64, LitStr)> {
    let lit = lit_str(value, option, errors)?;
    match parse_size(&lit.value()) {
        Some(0) => {
            errors.at(&lit, format!("`{option}` must be more than zero bytes"));
            None
        }
        Some(n) => Some((n, lit)),
        None => {
            errors.at(
                &lit,
                format!(
                    "invalid size {:?}; write a size such as {example}",
                    lit.value()
                ),
            );
            None
        }
    }
}

fn tiers(lit: &LitStr, errors: &mut Errors) -> Option<Tiers> {
    let mut tiers = Tiers::default();
    let text = lit.value();
    for part in text.split(',').map(str::trim) {
        let slot = match part {
            "l1" => &mut tiers.l1,
            "l2" => &mut tiers.l2,
            "l3" => &mut tiers.l3,
            _ => {
                errors.at(
                    lit,
                    format!(
                        "unknown tier {part:?} in `tiers`; write a comma-separated subset of \
                         l1, l2, l3, e.g. `tiers = \"l1,l3\"`"
                    ),
                );
                return None;
            }
        };
        if *slot {
            errors.at(lit, format!("tier `{part}` is listed twice in `tiers`"));
            return None;
        }
        *slot = true;
    }
    Some(tiers)
}

/// `512`, `512B`, `4KiB`, `4KB`, `1MiB`, `1MB`, `1GiB`, `1GB` (KB/MB/GB are decimal).
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn assign(args: &mut Args, option: &str, value: Expr, errors: &mut Errors) {
    // A value passed through a `macro_rules!` fragment (`$capacity:literal`) arrives wrapped
    // in an invisible group.
    let mut value = value;
    while let Expr::Group(group) = value {
        value = *group.expr;
    }
    match option {
        "ttl" => args.ttl = duration(&value, option, errors),
        "l2_ttl" => args.l2_ttl = duration(&value, option, errors),
        "fail_safe" => args.fail_safe = duration(&value, option, errors),
        "fail_safe_throttle" => args.fail_safe_throttle = duration(&value, option, errors),
        "soft_timeout" => args.soft_timeout = duration(&value, option, errors),
        "refresh_ahead" => {
            args.refresh_ahead = fraction(&value, option, "a fraction of the ttl", errors)
        }
        "predict_confidence" => {
            args.predict_confidence = fraction(&value, option, "a confidence", errors)
        }
        "predict_depth" => match lit_int::<u32>(&value, option, errors) {
            Some((n, lit)) if n == 0 || n > MAX_PREDICT_DEPTH => errors.at(
                &lit,
                format!("`predict_depth` is how many calls ahead to prefetch: a number from 1 to {MAX_PREDICT_DEPTH}"),
            ),
            Some(found) => args.predict_depth = Some(found),
            None => {}
        },
        "predict" => {
            let Some(lit) = lit_str(&value, option, errors) else {
                return;
            };
            match parse_predict(&lit.value()) {
                Some(model) => args.predict = Some((model, lit)),
                None => errors.at(
                    &lit,
                    format!(
                        "unknown model {:?}; write `predict = \"markov\"` (the next key after \
                         each key) or `predict = \"sequential(page)\"` (a steady step in the \
                         integer argument `page`)",
                        lit.value()
                    ),
                ),
            }
        }
        "l3_ttl" => args.l3_ttl = duration(&value, option, errors),
        "tiers" => {
            let Some(lit) = lit_str(&value, option, errors) else {
                return;
            };
            args.tiers = tiers(&lit, errors).map(|t| (t, lit));
        }
        "tags" => args.tags = tag_templates(&value, errors),
        "compress_above" => {
            let Some(lit) = lit_str(&value, option, errors) else {
                return;
            };
            match parse_size(&lit.value()).and_then(|n| u32::try_from(n).ok()) {
                Some(n) => args.compress_above = Some((n, lit)),
                None => errors.at(
                    &lit,
                    format!(
                        "invalid size {:?}; write a size such as \"512B\", \"4KiB\" or \"1MiB\" \
                         (at most 4GiB)",
                        lit.value()
                    ),
                ),
            }
        }
        "level" => {
            let Some(lit) = lit_str(&value, option, errors) else {
                return;
            };
            let text = lit.value();
            match LEVELS.iter().find(|(n, _)| *n == text) {
                Some((_, variant)) => args.level = Some(variant),
                None => errors.at(
                    &lit,
                    format!(
                        "unknown level {text:?}; write one of \"basic\", \"advanced\", \
                         \"ultra\", \"extreme\""
                    ),
                ),
            }
        }
        "priority" => {
            let Some(lit) = lit_str(&value, option, errors) else {
                return;
            };
            let text = lit.value();
            match Priority::NAMES.iter().find(|(n, _)| *n == text) {
                Some((_, p)) => args.priority = Some((*p, lit)),
                None => errors.at(
                    &lit,
                    format!(
                        "unknown priority {text:?}; write one of \"critical\", \"high\", \
                         \"normal\", \"low\", \"batch\""
                    ),
                ),
            }
        }
        "stale_if_busy" => match lit_int::<u64>(&value, option, errors) {
            Some((0, lit)) => errors.at(
                &lit,
                "`stale_if_busy` is a number of waiting calls, at least 1; remove it to always queue",
            ),
            Some(found) => args.stale_if_busy = Some(found),
            None => {}
        },
        "concurrency" => match &value {
            Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(lit),
                ..
            }) => match parse_adaptive(&lit.value()) {
                Some(bounds) => args.adaptive_concurrency = Some(bounds),
                None => errors.at(
                    lit,
                    format!(
                        "`concurrency` is a number of calls (`concurrency = 8`) or a limit that \
                         follows latency: `concurrency = \"adaptive\"` (1 to {ADAPTIVE_MAX}) or \
                         `concurrency = \"adaptive(2..64)\"` (at least 1, min <= max); found {:?}",
                        lit.value()
                    ),
                ),
            },
            _ => match lit_int::<u64>(&value, option, errors) {
                Some((0, lit)) => errors.at(&lit, "`concurrency` must be at least 1"),
                Some((n, _)) => args.concurrency = Some(n),
                None => {}
            },
        },
        "timeout" => args.timeout = duration(&value, option, errors),
        "backoff" => args.backoff = duration(&value, option, errors),
        "retries" => {
            if let Some((n, _)) = lit_int::<u32>(&value, option, errors) {
                args.retries = Some(n);
            }
        }
        "mem" => {
            args.mem =
                size(&value, option, "\"64MiB\", \"512KiB\" or \"2GiB\"", errors).map(|(n, _)| n)
        }
        "capacity" if matches!(&value, Expr::Lit(l) if matches!(l.lit, syn::Lit::Str(_))) => {
            let example = "\"256MiB\" (bytes), or a number of entries such as \
                           `capacity = 10000`";
            if let Some((n, lit)) = size(&value, option, example, errors) {
                args.capacity = Some(n);
                args.capacity_size = Some(lit);
            }
        }
        "capacity" => match lit_int::<u64>(&value, option, errors) {
            Some((0, lit)) => errors.at(&lit, "`capacity` must be at least 1"),
            Some((n, _)) => args.capacity = Some(n),
            None => {}
        },
        "cache" => match &value {
            Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Bool(b),
                ..
            }) => args.cache = b.value,
            other => errors.at(other, "`cache` takes `true` or `false`: `cache = false`"),
        },
        "lease" => match &value {
            Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Bool(b),
                ..
            }) => args.lease = b.value,
            other => errors.at(other, "`lease` takes `true` or `false`: `lease = false`"),
        },
        "version" => {
            if let Some((n, _)) = lit_int::<u32>(&value, option, errors) {
                args.version = Some(n);
            }
        }
        "name" => {
            let Some(lit) = lit_str(&value, option, errors) else {
                return;
            };
            let v = lit.value();
            if v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == '{' || c == '}') {
                errors.at(
                    &lit,
                    "`name` must be non-empty and without spaces or braces (braces are Redis Cluster hash tags), e.g. `name = \"users::fetch\"`",
                );
            } else {
                args.name = Some(lit);
            }
        }
        "crate" => {
            let Some(lit) = lit_str(&value, option, errors) else {
                return;
            };
            match lit.parse::<syn::Path>() {
                Ok(path) => args.krate = Some(path),
                Err(_) => errors.at(
                    &lit,
                    "`crate` takes a path to the optimize crate, e.g. `crate = \"my_optimize\"`",
                ),
            }
        }
        _ => unreachable!("checked against options::OPTIONS"),
    }
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn sizes_parse_with_units() {
        use super::parse_size;
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("4KiB"), Some(4096));
        assert_eq!(parse_size("1MB"), Some(1_000_000));
        assert_eq!(parse_size("2 MiB"), Some(2 << 20));
        assert_eq!(parse_size("5GiB"), Some(5 << 30));
        assert_eq!(parse_size("99999999999GiB"), None, "overflow");
        assert_eq!(parse_size("4 parsecs"), None);
        assert_eq!(parse_size("KiB"), None);
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("ttl", "ttl"), 0);
        assert_eq!(edit_distance("tll", "ttl"), 1);
        assert_eq!(edit_distance("capacty", "capacity"), 1);
        assert_eq!(edit_distance("xyz", "capacity"), 8);
    }
}
