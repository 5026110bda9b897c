//! The takeover rebuild's fold: a partition's exec-events (JSON, as `executor_contract/v1`
//! writes them) folded into its order table, in Rust. It is `OrderTable.apply` over
//! `codec.decode(ExecEvent, value)` (worker/runtime/recovery.py), kept only as far as the rebuild
//! needs it: each order's status, event count, request expiry, attempt and flags, and the bytes
//! of its latest event (decoded by pydantic only if someone asks for it).
//!
//! The decoder is sound, not complete: what it accepts, the pydantic model accepts with the same
//! values (unknown fields, wrong types, bad decimals, symbols, enums, rule names and negative
//! source coordinates are refused). Anything it refuses goes back to the pydantic model, which
//! decides (the refusal message is the model's); a value pydantic accepts in lax mode ("5" for
//! an integer) comes back re-encoded canonically. tests/unit/test_history_fold.py holds both.

use crate::decision::{self, Key, Kind, Skip, Val};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// `OrderStatus`, in the order of `worker.contract.enums.OrderStatus`.
pub const STATUS_NAMES: [&str; 13] = [
    "PENDING_NEW",
    "SUBMITTED",
    "UNKNOWN",
    "ACCEPTED",
    "PARTIALLY_FILLED",
    "PENDING_CANCEL",
    "PENDING_AMEND",
    "FILLED",
    "CANCELED",
    "EXPIRED",
    "REJECTED",
    "DENIED",
    "THROTTLED",
];
const PENDING_NEW: u8 = 0;
const SUBMITTED: u8 = 1;
const UNKNOWN: u8 = 2;
const ACCEPTED: u8 = 3;
const PARTIALLY_FILLED: u8 = 4;
const PENDING_CANCEL: u8 = 5;
const PENDING_AMEND: u8 = 6;
const FILLED: u8 = 7;
const CANCELED: u8 = 8;
const EXPIRED: u8 = 9;
const REJECTED: u8 = 10;
const DENIED: u8 = 11;
const THROTTLED: u8 = 12;

const fn bits(statuses: &[u8]) -> u16 {
    let mut out = 0u16;
    let mut i = 0;
    while i < statuses.len() {
        out |= 1 << statuses[i];
        i += 1;
    }
    out
}

/// `worker.contract.state_machine.TRANSITIONS`, one bit per allowed next status.
const TRANSITIONS: [u16; 13] = [
    bits(&[SUBMITTED, DENIED, THROTTLED]),
    bits(&[
        SUBMITTED,
        UNKNOWN,
        ACCEPTED,
        REJECTED,
        PARTIALLY_FILLED,
        FILLED,
        EXPIRED,
        CANCELED,
        PENDING_CANCEL,
    ]),
    bits(&[
        UNKNOWN,
        SUBMITTED,
        ACCEPTED,
        REJECTED,
        PARTIALLY_FILLED,
        FILLED,
        EXPIRED,
        CANCELED,
        PENDING_CANCEL,
    ]),
    bits(&[ACCEPTED, PARTIALLY_FILLED, FILLED, PENDING_CANCEL, PENDING_AMEND, CANCELED, EXPIRED]),
    bits(&[PARTIALLY_FILLED, FILLED, PENDING_CANCEL, PENDING_AMEND, CANCELED, EXPIRED]),
    bits(&[CANCELED, PARTIALLY_FILLED, FILLED, ACCEPTED, EXPIRED, REJECTED, PENDING_CANCEL]),
    bits(&[ACCEPTED, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED, PENDING_CANCEL]),
    0,
    0,
    0,
    0,
    0,
    0,
];
/// Statuses only the venue reports (`_VENUE_CONFIRMED` in order_table.py).
const VENUE_CONFIRMED: u16 = bits(&[ACCEPTED, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED]);

fn allowed(current: u8, new: u8) -> bool {
    TRANSITIONS[current as usize] & (1 << new) != 0
}

/// What the fold keeps of one exec-event.
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    pub client_order_id: Cow<'a, str>,
    pub symbol: Cow<'a, str>,
    pub status: u8,
    pub has_exchange_order_id: bool,
    pub reason: Option<Cow<'a, str>>,
    pub sent_ts_ms: Option<i64>,
    pub event_ts_ms: i64,
    pub mode: Cow<'a, str>,
    pub source_topic: Cow<'a, str>,
    pub source_offset: i64,
    pub recv_window_ms: Option<i64>,
    pub attempt: Option<i64>,
}

const FIELDS: usize = 29;

fn field_index(key: &str) -> Option<usize> {
    Some(match key {
        "event_id" => 0,
        "client_order_id" => 1,
        "signal_row_id" => 2,
        "symbol" => 3,
        "side" => 4,
        "qty" => 5,
        "px_intent" => 6,
        "px_sent" => 7,
        "px_fill" => 8,
        "qty_filled" => 9,
        "rounding_applied" => 10,
        "rounding_diff" => 11,
        "slippage_bps" => 12,
        "exchange_order_id" => 13,
        "status" => 14,
        "reason" => 15,
        "sent_ts_ms" => 16,
        "ack_ts_ms" => 17,
        "event_ts_ms" => 18,
        "latency_ms" => 19,
        "executor" => 20,
        "mode" => 21,
        "scenario" => 22,
        "source" => 23,
        "recv_window_ms" => 24,
        "attempt" => 25,
        "order_type" => 26,
        "tif" => 27,
        "observed" => 28,
        _ => return None,
    })
}
// Fields 0..=23 have no default.
const REQUIRED_MASK: u32 = (1 << 24) - 1;

/// `SourceRef`: topic, partition >= 0, offset >= 0, nothing else.
struct Source<'a> {
    topic: Cow<'a, str>,
    offset: i64,
}

struct SourceSeed;

impl<'de> de::DeserializeSeed<'de> for SourceSeed {
    type Value = Option<Source<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SourceSeed {
    type Value = Option<Source<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a source object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut topic, mut partition, mut offset) = (None, None, None);
        let mut ok = true;
        while let Some(key) = map.next_key::<Key>()? {
            let slot = match key.0.as_ref() {
                "topic" => &mut topic,
                "partition" => &mut partition,
                "offset" => &mut offset,
                _ => {
                    map.next_value::<Skip>()?;
                    ok = false;
                    continue;
                }
            };
            if slot.is_some() {
                ok = false;
            }
            *slot = Some(map.next_value::<Val>()?);
        }
        if !ok {
            return Ok(None);
        }
        let topic = match topic {
            Some(Val::Str(s)) => s,
            _ => return Ok(None),
        };
        let (Some(partition), Some(offset)) = (partition.and_then(non_negative), offset.and_then(non_negative)) else {
            return Ok(None);
        };
        let _ = partition;
        Ok(Some(Source { topic, offset }))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(None)
    }
}

/// `observed`: null, or a list of rule names (`^[a-z_]{1,32}$`). true = valid.
struct ObservedSeed;

impl<'de> de::DeserializeSeed<'de> for ObservedSeed {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObservedSeed {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of rule names")
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut ok = true;
        while let Some(v) = seq.next_element::<Val>()? {
            ok &= matches!(v, Val::Str(s) if (1..=32).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        Ok(ok)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<Key, Skip>()?.is_some() {}
        Ok(false)
    }
}

#[derive(Default)]
struct Raw<'a> {
    vals: [Option<Val<'a>>; FIELDS],
    source: Option<Source<'a>>,
    seen: u32,
    ok: bool,
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Option<Raw<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an exec-event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = Raw { ok: true, ..Raw::default() };
        while let Some(key) = map.next_key::<Key>()? {
            let Some(index) = field_index(&key.0) else {
                // extra="forbid"; the value must still be JSON.
                map.next_value::<Skip>()?;
                raw.ok = false;
                continue;
            };
            if raw.seen & (1 << index) != 0 {
                raw.ok = false; // a repeated key: the model decides
            }
            raw.seen |= 1 << index;
            match index {
                23 => match map.next_value_seed(SourceSeed)? {
                    Some(source) => raw.source = Some(source),
                    None => raw.ok = false,
                },
                28 => raw.ok &= map.next_value_seed(ObservedSeed)?,
                _ => raw.vals[index] = Some(map.next_value::<Val>()?),
            }
        }
        Ok(Some(raw))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(None)
    }
}

fn non_negative(v: Val<'_>) -> Option<i64> {
    match v {
        Val::Int(n) if (0..=i128::from(i64::MAX)).contains(&n) => Some(n as i64),
        _ => None,
    }
}

fn int(v: Val<'_>) -> Option<i64> {
    match v {
        Val::Int(n) => i64::try_from(n).ok(),
        _ => None,
    }
}

fn nullable<'a, T>(v: Val<'a>, f: impl FnOnce(Val<'a>) -> Option<T>) -> Option<Option<T>> {
    match v {
        Val::Null => Some(None),
        other => f(other).map(Some),
    }
}

fn decimal(v: Val<'_>, kind: Kind) -> Option<()> {
    let s = decision::string(v)?;
    decision::plain_decimal(&s, kind).then_some(())
}

/// `^-?[0-9]+(\.[0-9]+)?$`, at most 40 characters.
fn signed(v: Val<'_>) -> Option<()> {
    let s = decision::string(v)?;
    let unsigned = s.strip_prefix('-').unwrap_or(&s);
    (s.len() <= 40 && decision::plain_decimal(unsigned, Kind::NonNegative)).then_some(())
}

fn one_of(v: Val<'_>, names: &[&str]) -> Option<u8> {
    let s = decision::string(v)?;
    names.iter().position(|n| *n == s).map(|i| i as u8)
}

/// The event, or None: not JSON, not an object, or not what this decoder can vouch for.
pub fn decode(value: &[u8], max_bytes: usize) -> Option<Event<'_>> {
    if value.len() > max_bytes {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(value);
    let raw = de.deserialize_any(TopVisitor).ok()??;
    de.end().ok()?;
    if !raw.ok || raw.seen & REQUIRED_MASK != REQUIRED_MASK {
        return None;
    }
    let source = raw.source?;
    let [
        event_id,
        client_order_id,
        signal_row_id,
        symbol,
        side,
        qty,
        px_intent,
        px_sent,
        px_fill,
        qty_filled,
        rounding_applied,
        rounding_diff,
        slippage_bps,
        exchange_order_id,
        status,
        reason,
        sent_ts_ms,
        ack_ts_ms,
        event_ts_ms,
        latency_ms,
        executor,
        mode,
        scenario,
        _source,
        recv_window_ms,
        attempt,
        order_type,
        tif,
        _observed,
    ] = raw.vals;
    decision::string(signal_row_id?)?;
    one_of(side?, &["BUY", "SELL"])?;
    decimal(qty?, Kind::Positive)?;
    for px in [px_intent, px_sent, px_fill] {
        nullable(px?, |v| decimal(v, Kind::Positive))?;
    }
    decimal(qty_filled?, Kind::NonNegative)?;
    if !matches!(rounding_applied?, Val::Bool(_)) {
        return None;
    }
    signed(rounding_diff?)?;
    nullable(slippage_bps?, signed)?;
    nullable(ack_ts_ms?, int)?;
    nullable(latency_ms?, int)?;
    decision::string(executor?)?;
    decision::string(scenario?)?;
    let optional = |v: Option<Val<'_>>, names: &[&str]| match v {
        None => Some(()),
        Some(v) => nullable(v, |v| one_of(v, names)).map(|_| ()),
    };
    optional(order_type, &["LIMIT", "MARKET"])?;
    optional(tif, &["GTC", "IOC", "FOK"])?;
    let optional_int = |v: Option<Val<'_>>| match v {
        None => Some(None),
        Some(v) => nullable(v, int),
    };
    let sent_ts_ms = nullable(sent_ts_ms?, int)?;
    let recv_window_ms = optional_int(recv_window_ms)?;
    if let (Some(sent), Some(window)) = (sent_ts_ms, recv_window_ms) {
        sent.checked_add(window)?; // the request's expiry must fit
    }
    Some(Event {
        event_id: decision::string(event_id?)?,
        client_order_id: decision::string(client_order_id?)?,
        symbol: decision::symbol_of(symbol?)?,
        status: one_of(status?, &STATUS_NAMES)?,
        has_exchange_order_id: nullable(exchange_order_id?, decision::string)?.is_some(),
        reason: nullable(reason?, decision::string)?,
        sent_ts_ms,
        event_ts_ms: int(event_ts_ms?)?,
        mode: decision::string(mode?)?,
        source_topic: source.topic,
        source_offset: source.offset,
        recv_window_ms,
        attempt: optional_int(attempt)?,
    })
}

/// One order of the table (`OrderRecord` without its latest event's model): `last` is the
/// latest event's value as the caller holds it (the Python bytes object itself, not a copy).
pub struct Order<L> {
    pub status: u8,
    pub events: u64,
    pub expires_ms: Option<i64>,
    pub attempt: i64,
    pub venue_confirmed: bool,
    pub cancel_requested: bool,
    pub last: L,
}

/// FxHash (rustc's): order ids come from our own exec-events topic, which only this worker's
/// transactional producers may write, so a keyed hash buys nothing here and SipHash cost ~10%.
#[derive(Default)]
pub struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }
}

pub type Orders<L> = HashMap<String, Order<L>, BuildHasherDefault<FxHasher>>;

/// An illegal transition: the event is skipped (and logged by the caller), as the Python fold does.
pub struct Illegal {
    pub client_order_id: String,
    pub current: u8,
    pub new: u8,
    pub event_id: String,
}

/// `OrderTable.apply`: the new record, or the transition the table refuses.
pub fn apply<L>(orders: &mut Orders<L>, event: &Event<'_>, last: impl FnOnce() -> L) -> Result<u64, Illegal> {
    let status = event.status;
    let illegal = |current: u8, new: u8| Illegal {
        client_order_id: event.client_order_id.to_string(),
        current,
        new,
        event_id: event.event_id.to_string(),
    };
    let current = orders.get(event.client_order_id.as_ref());
    let (mut record, previous) = match current {
        None => {
            // A first event implies PENDING_NEW -> SUBMITTED (unless a local gate stopped it).
            if !allowed(PENDING_NEW, status) && status != SUBMITTED && !allowed(SUBMITTED, status) {
                return Err(illegal(SUBMITTED, status));
            }
            let record = Order {
                status,
                events: 1,
                expires_ms: None,
                attempt: 0,
                venue_confirmed: false,
                cancel_requested: false,
                last: (),
            };
            (record, false)
        }
        Some(cur) => {
            if !allowed(cur.status, status) {
                return Err(illegal(cur.status, status));
            }
            let record = Order {
                status,
                events: cur.events + 1,
                expires_ms: cur.expires_ms,
                attempt: cur.attempt,
                venue_confirmed: cur.venue_confirmed,
                cancel_requested: cur.cancel_requested,
                last: (),
            };
            (record, true)
        }
    };
    if let (SUBMITTED, Some(window), Some(sent)) = (status, event.recv_window_ms, event.sent_ts_ms) {
        record.expires_ms = Some(sent + window); // `decode` refused a sum beyond i64
        record.attempt = match event.attempt {
            Some(a) if a != 0 => a,
            _ => 1,
        };
        record.venue_confirmed = false;
    } else if VENUE_CONFIRMED & (1 << status) != 0 || event.has_exchange_order_id {
        record.venue_confirmed = true;
    }
    if status == PENDING_CANCEL {
        record.cancel_requested = true;
    }
    let events = record.events;
    let record = Order {
        status: record.status,
        events,
        expires_ms: record.expires_ms,
        attempt: record.attempt,
        venue_confirmed: record.venue_confirmed,
        cancel_requested: record.cancel_requested,
        last: last(),
    };
    if previous {
        if let Some(slot) = orders.get_mut(event.client_order_id.as_ref()) {
            *slot = record;
        }
    } else {
        orders.insert(event.client_order_id.to_string(), record);
    }
    Ok(events)
}

/// Which orders' first events still matter to the pre-trade policy's restore, for a policy
/// without rate limits (`PreTradePolicy.restore_order` in worker/policy/pretrade.py). With every
/// rate at 0 the walls admit without changing, so a restore only records the symbol's mode
/// (configuring the walls on a change) and creates the symbol's buckets in the walls its rules
/// ask (once it reaches a wall). A restore of a symbol whose last reported restore had the same
/// mode, and had reached the wall if this one does, changes nothing: it is not reported. A mode
/// the policy does not know is reported (the policy skips it) and counts as a change, so more is
/// reported than needed, never less.
#[derive(Default)]
pub struct Restores {
    symbols: HashMap<String, (String, bool), BuildHasherDefault<FxHasher>>,
}

/// Reasons of the rate wall's own refusals (`WALL_REASONS` in pretrade.py).
const WALL_REASONS: [&str; 2] = ["rate_symbol", "rate_global"];

impl Restores {
    /// True if the restore of this first event can change the policy's state.
    pub fn changes(&mut self, first: &Event<'_>) -> bool {
        let reached = match first.status {
            DENIED => false,
            THROTTLED => first.reason.as_deref().is_some_and(|r| WALL_REASONS.contains(&r)),
            _ => true,
        };
        match self.symbols.get_mut(first.symbol.as_ref()) {
            Some((mode, reached_before)) if *mode == first.mode => {
                let new = reached && !*reached_before;
                *reached_before |= reached;
                new
            }
            Some(entry) => {
                *entry = (first.mode.to_string(), reached);
                true
            }
            None => {
                self.symbols.insert(first.symbol.to_string(), (first.mode.to_string(), reached));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"event_id":"a.1","client_order_id":"a","signal_row_id":"s","symbol":"BTCUSDT","side":"BUY","qty":"1","px_intent":null,"px_sent":"2.5","px_fill":null,"qty_filled":"0","rounding_applied":false,"rounding_diff":"-0.1","slippage_bps":null,"exchange_order_id":null,"status":"SUBMITTED","reason":null,"sent_ts_ms":10,"ack_ts_ms":null,"event_ts_ms":10,"latency_ms":null,"executor":"binance","mode":"default","scenario":"x","source":{"topic":"t","partition":0,"offset":3},"recv_window_ms":5000,"attempt":2}"#;

    #[test]
    fn decodes_and_folds_an_intent() {
        let event = decode(EVENT.as_bytes(), 1 << 20).expect("valid");
        assert_eq!(event.status, SUBMITTED);
        let mut orders = Orders::default();
        assert_eq!(apply(&mut orders, &event, || EVENT.as_bytes().to_vec()).ok(), Some(1));
        let order = &orders["a"];
        assert_eq!((order.expires_ms, order.attempt, order.venue_confirmed), (Some(5010), 2, false));
    }

    #[test]
    fn refuses_extra_fields_and_bad_sources() {
        let extra = EVENT.replacen("{", r#"{"x":1,"#, 1);
        assert!(decode(extra.as_bytes(), 1 << 20).is_none());
        let source = EVENT.replace(r#""offset":3"#, r#""offset":-3"#);
        assert!(decode(source.as_bytes(), 1 << 20).is_none());
        assert!(decode(b"[1]", 1 << 20).is_none());
    }
}
