//! The engine's pure steps: grid rounding, ids, the sampling gate, the latency draw, slippage
//! and the canonical exec-event line. Each mirrors one Python function (named in its doc) and is
//! checked against it by the differential tests (tests/unit/test_compiled_core.py).

use crate::dec::{Dec, Rounding, div_scaled};
use crate::decision::Side;
use blake2::Blake2b;
use blake2::digest::consts::U8;
use sha2::{Digest, Sha256};
use std::fmt::Write;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PriceRounding {
    Passive,
    Aggressive,
    Nearest,
}

impl PriceRounding {
    pub fn parse(s: &str) -> Option<PriceRounding> {
        match s {
            "passive" => Some(PriceRounding::Passive),
            "aggressive" => Some(PriceRounding::Aggressive),
            "nearest" => Some(PriceRounding::Nearest),
            _ => None,
        }
    }
}

pub struct Rounded {
    pub qty: Dec,
    pub px: Option<Dec>,
    pub applied: bool,
    pub diff: Dec,
}

/// `worker.policy.rounding.round_to_step`.
pub fn round_to_step(value: &Dec, step: &Dec, up: bool) -> Dec {
    let rounding = if up { Rounding::Ceiling } else { Rounding::Floor };
    if step.is_power_of_ten() {
        return value.quantize(step.exp, rounding);
    }
    value.round_to_multiple(step, rounding)
}

/// `worker.policy.rounding.round_nearest`.
pub fn round_nearest(value: &Dec, step: &Dec) -> Dec {
    if step.is_power_of_ten() {
        return value.quantize(step.exp, Rounding::HalfUp);
    }
    value.round_to_multiple(step, Rounding::HalfUp)
}

/// `worker.policy.rounding.align_order`; the error is the RoundingError's reason.
pub fn align_order(
    side: Side,
    qty: &Dec,
    px: Option<&Dec>,
    tick: &Dec,
    step: &Dec,
    min_notional: &Dec,
    rule: PriceRounding,
) -> Result<Rounded, &'static str> {
    let qty_rounded = round_to_step(qty, step, false);
    if !qty_rounded.is_positive() {
        return Err("qty_below_step");
    }
    let mut px_rounded = None;
    if let Some(px) = px {
        let r = if rule == PriceRounding::Nearest {
            round_nearest(px, tick)
        } else {
            let up = (side == Side::Sell) == (rule == PriceRounding::Passive);
            round_to_step(px, tick, up)
        };
        if !r.is_positive() {
            return Err("px_below_tick");
        }
        let notional = r.mul(&qty_rounded);
        if notional.cmp_value(min_notional).is_lt() {
            return Err("min_notional");
        }
        px_rounded = Some(r);
    }
    let applied = qty_rounded.cmp_value(qty).is_ne()
        || matches!((px, &px_rounded), (Some(a), Some(b)) if a.cmp_value(b).is_ne());
    let diff = match (px, &px_rounded) {
        (Some(a), Some(b)) => b.sub(a),
        _ => Dec::zero(),
    };
    Ok(Rounded { qty: qty_rounded, px: px_rounded, applied, diff })
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `worker.policy.ids._canonical`: normalize() in the default 28-digit context, plain notation.
pub fn canonical(value: &Dec) -> String {
    value.normalize(28).plain()
}

/// `worker.policy.ids.client_order_id`, with the decimals already canonical.
pub fn client_order_id(signal_row_id: &str, ts_ms: i64, side: Side, qty: &Dec, px: Option<&Dec>) -> String {
    client_order_id_and_key(signal_row_id, ts_ms, side, qty, px).0
}

/// The id and its 128 bits as a number (the id is their hex: one is as unique as the other).
pub fn client_order_id_and_key(
    signal_row_id: &str,
    ts_ms: i64,
    side: Side,
    qty: &Dec,
    px: Option<&Dec>,
) -> (String, u128) {
    let mut material = String::with_capacity(96);
    material.push_str(signal_row_id);
    let _ = write!(material, "|{}|{}|{}|", ts_ms, side.as_str(), canonical(qty));
    match px {
        None => material.push_str("MKT"),
        Some(px) => material.push_str(&canonical(px)),
    }
    let digest = Sha256::digest(material.as_bytes());
    let mut out = String::with_capacity(34);
    out.push_str("ew");
    for byte in &digest[..16] {
        out.push(HEX[(byte >> 4) as usize] as char);
        out.push(HEX[(byte & 15) as usize] as char);
    }
    (out, u128::from_be_bytes(digest[..16].try_into().expect("16 bytes")))
}

/// `worker.policy.gating.keep_fraction` as the 64-bit integer (the fraction is n / 2^64).
pub fn keep_bits(client_order_id: &str) -> u64 {
    let mut hasher = Blake2b::<U8>::new();
    hasher.update(client_order_id.as_bytes());
    let out = hasher.finalize();
    u64::from_be_bytes(out[..8].try_into().expect("8 bytes"))
}

/// `worker.policy.rng.Rng.bits64`.
pub fn rng_bits64(seed: i64, key: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_string().as_bytes());
    hasher.update(b"|");
    hasher.update(key.as_bytes());
    let out = hasher.finalize();
    u64::from_be_bytes(out[..8].try_into().expect("8 bytes"))
}

/// `worker.core.latency.LatencyModel.sample_ms`; `thresholds` descending (the Python table).
pub fn latency_ms(base_ms: i64, thresholds: &[u128], seed: i64, client_order_id: &str) -> i64 {
    if thresholds.is_empty() {
        return base_ms;
    }
    let mut key = String::with_capacity(48);
    key.push_str("latency|");
    key.push_str(client_order_id);
    let survivor: u128 = (1u128 << 64) - u128::from(rng_bits64(seed, &key));
    // bisect_right over the negated ascending table: how many thresholds are >= survivor.
    let count = thresholds.partition_point(|t| *t >= survivor);
    base_ms + count as i64 - 1
}

/// `worker.core.slippage.slippage_bps`.
pub fn slippage_bps(side: Side, px_intent: Option<&Dec>, px_fill: Option<&Dec>) -> Option<Dec> {
    let (intent, fill) = (px_intent?, px_fill?);
    let signed = if side == Side::Buy { fill.sub(intent) } else { intent.sub(fill) };
    // (signed / intent) x 10,000 at four decimals, half-even: one exact division.
    Some(div_scaled(&signed, intent, 8, -4))
}

/// JSON string escaping as pydantic-core (serde_json) writes it.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Nearly every value needs no escape: one branch-free scan, then one copy.
    if !bytes.iter().fold(false, |any, b| any | (*b < 0x20) | (*b == b'"') | (*b == b'\\')) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// One exec-event's fields, as text, in wire order (`worker.contract.events.ExecEvent`).
pub struct Event<'a> {
    pub event_id: &'a str,
    pub client_order_id: &'a str,
    pub signal_row_id: &'a str,
    pub symbol: &'a str,
    pub side: &'a str,
    pub qty: &'a str,
    pub px_intent: Option<&'a str>,
    pub px_sent: Option<&'a str>,
    pub px_fill: Option<&'a str>,
    pub qty_filled: &'a str,
    pub rounding_applied: bool,
    pub rounding_diff: &'a str,
    pub slippage_bps: Option<&'a str>,
    pub exchange_order_id: Option<&'a str>,
    pub status: &'a str,
    pub reason: Option<&'a str>,
    pub sent_ts_ms: Option<i64>,
    pub ack_ts_ms: Option<i64>,
    pub event_ts_ms: i64,
    pub latency_ms: Option<i64>,
    pub executor: &'a str,
    pub mode: &'a str,
    pub scenario: &'a str,
    pub source_topic: &'a str,
    pub source_partition: i64,
    pub source_offset: i64,
    // Added after v1 shipped; written only when set (pydantic `exclude_if`), after `source`.
    pub recv_window_ms: Option<i64>,
    pub attempt: Option<i64>,
    pub order_type: Option<&'a str>,
    pub tif: Option<&'a str>,
    pub observed: Option<&'a [String]>,
}

fn field_str(out: &mut Vec<u8>, name: &str, value: Option<&str>) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    match value {
        Some(v) => write_json_str(out, v),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b',');
}

fn field_int(out: &mut Vec<u8>, name: &str, value: Option<i64>) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    match value {
        Some(v) => {
            let _ = std::io::Write::write_fmt(out, format_args!("{v}"));
        }
        None => out.extend_from_slice(b"null"),
    }
    out.push(b',');
}

/// The canonical line: declared field order, no whitespace (`worker.codec.json_codec.encode_json`).
pub fn encode_event(out: &mut Vec<u8>, e: &Event) {
    out.push(b'{');
    field_str(out, "event_id", Some(e.event_id));
    field_str(out, "client_order_id", Some(e.client_order_id));
    field_str(out, "signal_row_id", Some(e.signal_row_id));
    field_str(out, "symbol", Some(e.symbol));
    field_str(out, "side", Some(e.side));
    field_str(out, "qty", Some(e.qty));
    field_str(out, "px_intent", e.px_intent);
    field_str(out, "px_sent", e.px_sent);
    field_str(out, "px_fill", e.px_fill);
    field_str(out, "qty_filled", Some(e.qty_filled));
    out.extend_from_slice(if e.rounding_applied { b"\"rounding_applied\":true," } else { b"\"rounding_applied\":false," });
    field_str(out, "rounding_diff", Some(e.rounding_diff));
    field_str(out, "slippage_bps", e.slippage_bps);
    field_str(out, "exchange_order_id", e.exchange_order_id);
    field_str(out, "status", Some(e.status));
    field_str(out, "reason", e.reason);
    field_int(out, "sent_ts_ms", e.sent_ts_ms);
    field_int(out, "ack_ts_ms", e.ack_ts_ms);
    field_int(out, "event_ts_ms", Some(e.event_ts_ms));
    field_int(out, "latency_ms", e.latency_ms);
    field_str(out, "executor", Some(e.executor));
    field_str(out, "mode", Some(e.mode));
    field_str(out, "scenario", Some(e.scenario));
    out.extend_from_slice(b"\"source\":{");
    field_str(out, "topic", Some(e.source_topic));
    field_int(out, "partition", Some(e.source_partition));
    field_int(out, "offset", Some(e.source_offset));
    out.pop(); // the last comma
    out.push(b'}');
    if e.recv_window_ms.is_some() || e.attempt.is_some() || e.order_type.is_some() || e.tif.is_some() || e.observed.is_some()
    {
        out.push(b',');
        if e.recv_window_ms.is_some() {
            field_int(out, "recv_window_ms", e.recv_window_ms);
        }
        if e.attempt.is_some() {
            field_int(out, "attempt", e.attempt);
        }
        if e.order_type.is_some() {
            field_str(out, "order_type", e.order_type);
        }
        if e.tif.is_some() {
            field_str(out, "tif", e.tif);
        }
        if let Some(rules) = e.observed {
            out.extend_from_slice(b"\"observed\":[");
            for (i, rule) in rules.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_str(out, rule);
            }
            out.extend_from_slice(b"],");
        }
        out.pop(); // the last comma
    }
    out.push(b'}');
}
