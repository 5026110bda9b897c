//! Strict decoding of `risk_contract/v1/decision` from JSON: exactly what the pydantic model
//! (`worker.contract.messages.Decision`) accepts in JSON mode, and the same error class.
//!
//! The rules, field by field, are those of `worker/contract/types.py` and `messages.py`:
//! strict types (no coercion: a number is not a string, 1.0 is not an integer, 0 is not a
//! boolean), decimals as plain-notation strings of at most 40 characters, timestamps within
//! 2000..2100, unknown fields ignored (their values must still be JSON), then the cross-field
//! rules of `Decision._coherent`.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

pub const MIN_TS_MS: i128 = 946_684_800_000;
pub const MAX_TS_MS: i128 = 4_102_444_800_000;
const MAX_DECIMAL_CHARS: usize = 40;
const MAX_LABEL_CHARS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrClass {
    Size,
    Json,
    Schema,
}

impl ErrClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrClass::Size => "size",
            ErrClass::Json => "json",
            ErrClass::Schema => "schema",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderType {
    Limit,
    Market,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tif {
    Gtc,
    Ioc,
    Fok,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    New,
    Cancel,
    Amend,
}

/// A decoded, valid decision. Strings borrow from the input where JSON needs no unescaping.
#[derive(Debug)]
pub struct Decision<'a> {
    // (fields below; `into_owned` copies every borrowed string)
    pub signal_row_id: Cow<'a, str>,
    pub ts_ms: i64,
    pub event_ts_ms: i64,
    pub symbol: Cow<'a, str>,
    pub side: Side,
    pub qty: Cow<'a, str>,
    pub px: Option<Cow<'a, str>>,
    pub order_type: OrderType,
    pub tif: Tif,
    pub regime: Cow<'a, str>,
    pub scenario: Cow<'a, str>,
    pub tick_size: Cow<'a, str>,
    pub step_size: Cow<'a, str>,
    pub min_notional: Cow<'a, str>,
    pub warmup: bool,
    pub guard_reason: Option<Cow<'a, str>>,
    pub consistency: f64,
    pub weak_signal_throttle: bool,
    pub costs_bps: Cow<'a, str>,
    pub action: Action,
    pub target_client_order_id: Option<Cow<'a, str>>,
    pub new_px: Option<Cow<'a, str>>,
    pub new_qty: Option<Cow<'a, str>>,
    /// Which declared fields the input named (pydantic's `model_fields_set`), in field order.
    pub fields_set: u32,
}

fn own(s: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(s.into_owned())
}

impl Decision<'_> {
    pub fn into_owned(self) -> Decision<'static> {
        Decision {
            signal_row_id: own(self.signal_row_id),
            ts_ms: self.ts_ms,
            event_ts_ms: self.event_ts_ms,
            symbol: own(self.symbol),
            side: self.side,
            qty: own(self.qty),
            px: self.px.map(own),
            order_type: self.order_type,
            tif: self.tif,
            regime: own(self.regime),
            scenario: own(self.scenario),
            tick_size: own(self.tick_size),
            step_size: own(self.step_size),
            min_notional: own(self.min_notional),
            warmup: self.warmup,
            guard_reason: self.guard_reason.map(own),
            consistency: self.consistency,
            weak_signal_throttle: self.weak_signal_throttle,
            costs_bps: own(self.costs_bps),
            action: self.action,
            target_client_order_id: self.target_client_order_id.map(own),
            new_px: self.new_px.map(own),
            new_qty: self.new_qty.map(own),
            fields_set: self.fields_set,
        }
    }
}

pub const FIELD_NAMES: [&str; 23] = [
    "signal_row_id",
    "ts_ms",
    "event_ts_ms",
    "symbol",
    "side",
    "qty",
    "px",
    "order_type",
    "tif",
    "regime",
    "scenario",
    "tick_size",
    "step_size",
    "min_notional",
    "warmup",
    "guard_reason",
    "consistency",
    "weak_signal_throttle",
    "costs_bps",
    "action",
    "target_client_order_id",
    "new_px",
    "new_qty",
];
/// The position of a declared field in FIELD_NAMES (a match: the compiler switches on length first).
fn field_index(key: &str) -> Option<usize> {
    Some(match key {
        "signal_row_id" => 0,
        "ts_ms" => 1,
        "event_ts_ms" => 2,
        "symbol" => 3,
        "side" => 4,
        "qty" => 5,
        "px" => 6,
        "order_type" => 7,
        "tif" => 8,
        "regime" => 9,
        "scenario" => 10,
        "tick_size" => 11,
        "step_size" => 12,
        "min_notional" => 13,
        "warmup" => 14,
        "guard_reason" => 15,
        "consistency" => 16,
        "weak_signal_throttle" => 17,
        "costs_bps" => 18,
        "action" => 19,
        "target_client_order_id" => 20,
        "new_px" => 21,
        "new_qty" => 22,
        _ => return None,
    })
}

// Fields 0..=18 have no default.
const REQUIRED_MASK: u32 = (1 << 19) - 1;

/// Any JSON value, kept only as far as a field check needs it.
pub(crate) enum Val<'a> {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(Cow<'a, str>),
    Other,
}

struct ValVisitor;

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Val<'de>, E> {
        Ok(Val::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Val<'de>, E> {
        Ok(Val::Int(i128::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Val<'de>, E> {
        Ok(Val::Int(i128::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Val<'de>, E> {
        Ok(Val::Float(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val<'de>, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Val::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val<'de>, A::Error> {
        while map.next_entry::<Key, Skip>()?.is_some() {}
        Ok(Val::Other)
    }
}

impl<'de> serde::Deserialize<'de> for Val<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValVisitor)
    }
}

/// Any JSON value, read through (strings unescaped, so that a lone surrogate escape is refused
/// as pydantic refuses it) and dropped: the value of an unknown field.
pub(crate) struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SkipVisitor;
        impl<'de> Visitor<'de> for SkipVisitor {
            type Value = Skip;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
                Ok(Skip)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Skip)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
                while map.next_entry::<Key, Skip>()?.is_some() {}
                Ok(Skip)
            }
        }
        d.deserialize_any(SkipVisitor)
    }
}

/// A key, borrowed when it has no escapes.
pub(crate) struct Key<'a>(pub(crate) Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The raw fields, last value of a repeated key wins (as in pydantic's JSON parser).
#[derive(Default)]
struct Raw<'a> {
    vals: [Option<Val<'a>>; 23],
}

// Returned once per decode, by value: boxing the big variant would cost an allocation each time.
#[allow(clippy::large_enum_variant)]
enum Top<'a> {
    Object(Raw<'a>),
    NotObject,
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
        let mut raw = Raw::default();
        while let Some(key) = map.next_key::<Key>()? {
            match field_index(&key.0) {
                Some(index) => raw.vals[index] = Some(map.next_value::<Val>()?),
                None => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Top::Object(raw))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Top<'de>, E> {
        Ok(Top::NotObject)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Top<'de>, E> {
        Ok(Top::NotObject)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Top<'de>, E> {
        Ok(Top::NotObject)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Top<'de>, E> {
        Ok(Top::NotObject)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Top<'de>, E> {
        Ok(Top::NotObject)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Top<'de>, E> {
        Ok(Top::NotObject)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top<'de>, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Top::NotObject)
    }
}

struct TopSeed;
impl<'de> de::DeserializeSeed<'de> for TopSeed {
    type Value = Top<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Top<'de>, D::Error> {
        d.deserialize_any(TopVisitor)
    }
}

fn parse_top(value: &[u8]) -> Result<Top<'_>, serde_json::Error> {
    use de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(value);
    let top = TopSeed.deserialize(&mut de)?;
    de.end()?;
    Ok(top)
}

/// The input with its first number literal that overflows a double (1e400) replaced by 1e300 of
/// the same sign, or None. pydantic's parser reads such a literal as infinity, which every
/// declared field refuses (as 1e300 is refused: no field is a double beyond 1) and an unknown
/// field ignores; serde_json refuses the whole document instead.
fn tame_overflow(value: &[u8], error: &serde_json::Error) -> Option<Vec<u8>> {
    if !error.to_string().starts_with("number out of range") {
        return None;
    }
    // line and column (1-based) of the error: somewhere inside or just after the literal.
    let mut offset = 0usize;
    for _ in 1..error.line() {
        offset += value[offset..].iter().position(|b| *b == b'\n')? + 1;
    }
    let at = (offset + error.column()).min(value.len());
    let is_num = |b: u8| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E');
    let mut start = at.saturating_sub(1).min(value.len().saturating_sub(1));
    while start > 0 && is_num(value[start - 1]) {
        start -= 1;
    }
    let mut end = start;
    while end < value.len() && is_num(value[end]) {
        end += 1;
    }
    if end == start {
        return None;
    }
    let replacement: &[u8] = if value[start] == b'-' { b"-1e300" } else { b"1e300" };
    let mut out = Vec::with_capacity(value.len());
    out.extend_from_slice(&value[..start]);
    out.extend_from_slice(replacement);
    out.extend_from_slice(&value[end..]);
    Some(out)
}

/// `decode` of a buffer whose overflowing literals are being tamed; the result owns its strings.
fn decode_owned(buf: Vec<u8>, depth: u32) -> Result<Decision<'static>, ErrClass> {
    match parse_top(&buf) {
        Err(e) => match tame_overflow(&buf, &e) {
            Some(tamed) if depth < 64 => decode_owned(tamed, depth + 1),
            _ => Err(ErrClass::Json),
        },
        Ok(Top::NotObject) => Err(ErrClass::Json),
        Ok(Top::Object(raw)) => validate(raw).map(Decision::into_owned).ok_or(ErrClass::Schema),
    }
}

pub fn decode(value: &[u8], max_bytes: usize) -> Result<Decision<'_>, ErrClass> {
    if value.len() > max_bytes {
        return Err(ErrClass::Size);
    }
    let raw = match parse_top(value) {
        Err(e) => {
            // A literal beyond a double: refused as a field value, ignored in an unknown field.
            return match tame_overflow(value, &e) {
                Some(tamed) => decode_owned(tamed, 1),
                None => Err(ErrClass::Json),
            };
        }
        Ok(Top::NotObject) => return Err(ErrClass::Json),
        Ok(Top::Object(raw)) => raw,
    };
    validate(raw).ok_or(ErrClass::Schema)
}

fn validate(raw: Raw<'_>) -> Option<Decision<'_>> {
    let mut fields_set = 0u32;
    for (i, v) in raw.vals.iter().enumerate() {
        if v.is_some() {
            fields_set |= 1 << i;
        }
    }
    if fields_set & REQUIRED_MASK != REQUIRED_MASK {
        return None;
    }
    let [
        signal_row_id,
        ts_ms,
        event_ts_ms,
        symbol,
        side,
        qty,
        px,
        order_type,
        tif,
        regime,
        scenario,
        tick_size,
        step_size,
        min_notional,
        warmup,
        guard_reason,
        consistency,
        weak_signal_throttle,
        costs_bps,
        action,
        target,
        new_px,
        new_qty,
    ] = raw.vals;
    // The first problem ends the check: pydantic lists them all, but the class is the same.
    let d = Decision {
        signal_row_id: row_id(signal_row_id?)?,
        ts_ms: timestamp(ts_ms?)?,
        event_ts_ms: timestamp(event_ts_ms?)?,
        symbol: symbol_of(symbol?)?,
        side: match string(side?)?.as_ref() {
            "BUY" => Side::Buy,
            "SELL" => Side::Sell,
            _ => return None,
        },
        qty: decimal(qty?, Kind::Positive)?,
        px: nullable(px?, |v| decimal(v, Kind::Positive))?,
        order_type: match string(order_type?)?.as_ref() {
            "LIMIT" => OrderType::Limit,
            "MARKET" => OrderType::Market,
            _ => return None,
        },
        tif: match string(tif?)?.as_ref() {
            "GTC" => Tif::Gtc,
            "IOC" => Tif::Ioc,
            "FOK" => Tif::Fok,
            _ => return None,
        },
        regime: label(regime?)?,
        scenario: label(scenario?)?,
        tick_size: decimal(tick_size?, Kind::Positive)?,
        step_size: decimal(step_size?, Kind::Positive)?,
        min_notional: decimal(min_notional?, Kind::NonNegative)?,
        warmup: boolean(warmup?)?,
        guard_reason: nullable(guard_reason?, label)?,
        consistency: unit(consistency?)?,
        weak_signal_throttle: boolean(weak_signal_throttle?)?,
        costs_bps: decimal(costs_bps?, Kind::NonNegative)?,
        action: match action {
            None => Action::New,
            Some(v) => match string(v)?.as_ref() {
                "NEW" => Action::New,
                "CANCEL" => Action::Cancel,
                "AMEND" => Action::Amend,
                _ => return None,
            },
        },
        target_client_order_id: match target {
            None => None,
            Some(v) => nullable(v, client_order_id)?,
        },
        new_px: match new_px {
            None => None,
            Some(v) => nullable(v, |v| decimal(v, Kind::Positive))?,
        },
        new_qty: match new_qty {
            None => None,
            Some(v) => nullable(v, |v| decimal(v, Kind::Positive))?,
        },
        fields_set,
    };
    // Decision._coherent
    if d.order_type == OrderType::Limit && d.px.is_none() {
        return None;
    }
    if d.action != Action::New && d.target_client_order_id.is_none() {
        return None;
    }
    if d.action == Action::Amend && d.new_px.is_none() && d.new_qty.is_none() {
        return None;
    }
    Some(d)
}

pub(crate) fn string(v: Val<'_>) -> Option<Cow<'_, str>> {
    match v {
        Val::Str(s) => Some(s),
        _ => None,
    }
}

fn nullable<'a, T>(v: Val<'a>, f: impl FnOnce(Val<'a>) -> Option<T>) -> Option<Option<T>> {
    match v {
        Val::Null => Some(None),
        other => f(other).map(Some),
    }
}

fn timestamp(v: Val<'_>) -> Option<i64> {
    match v {
        Val::Int(n) if (MIN_TS_MS..=MAX_TS_MS).contains(&n) => Some(n as i64),
        _ => None,
    }
}

fn boolean(v: Val<'_>) -> Option<bool> {
    match v {
        Val::Bool(b) => Some(b),
        _ => None,
    }
}

fn unit(v: Val<'_>) -> Option<f64> {
    let x = match v {
        Val::Float(f) => f,
        Val::Int(n) => n as f64,
        _ => return None,
    };
    if x.is_finite() && (0.0..=1.0).contains(&x) { Some(x) } else { None }
}

fn row_id(v: Val<'_>) -> Option<Cow<'_, str>> {
    let s = string(v)?;
    let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| (0x21..=0x7e).contains(&b));
    ok.then_some(s)
}

pub(crate) fn symbol_of(v: Val<'_>) -> Option<Cow<'_, str>> {
    let s = string(v)?;
    let ok = (2..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    ok.then_some(s)
}

fn label(v: Val<'_>) -> Option<Cow<'_, str>> {
    let s = string(v)?;
    (s.len() <= MAX_LABEL_CHARS || s.chars().count() <= MAX_LABEL_CHARS).then_some(s)
}

fn client_order_id(v: Val<'_>) -> Option<Cow<'_, str>> {
    let s = string(v)?;
    let ok = (1..=36).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'/' | b'_' | b'-'));
    ok.then_some(s)
}

#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Positive,
    NonNegative,
}

/// `^[0-9]+(\.[0-9]+)?$`, at most 40 characters; Positive: some digit is not 0.
fn decimal(v: Val<'_>, kind: Kind) -> Option<Cow<'_, str>> {
    let s = string(v)?;
    if !plain_decimal(&s, kind) {
        return None;
    }
    Some(s)
}

pub(crate) fn plain_decimal(s: &str, kind: Kind) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > MAX_DECIMAL_CHARS {
        return false;
    }
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i == 0 {
        return false;
    }
    if i < b.len() {
        if b[i] != b'.' {
            return false;
        }
        let start = i + 1;
        let mut j = start;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j == start || j != b.len() {
            return false;
        }
    }
    match kind {
        Kind::NonNegative => true,
        Kind::Positive => b.iter().any(|c| (b'1'..=b'9').contains(c)),
    }
}
