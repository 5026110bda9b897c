//! The replay fold for the common configuration, whole in Rust: decode -> canonical order ->
//! round -> id -> idempotency -> gates -> backtest fill (immediate, seeded latency) -> encode ->
//! digest. It is `worker.runtime.replay._fold` with `ExecutionEngine(BacktestExecutor(Rng(seed)))`,
//! the `immediate` fill model, no market data and a policy without schedule or rate wall; the
//! Python fold stays the oracle and handles every other configuration.

use crate::dec::Dec;
use crate::decision::{self, Action, OrderType, Side};
use crate::engine::{self, Event, PriceRounding};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Order ids are SHA-256 bits already: their low 64 bits are the hash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type IdSet = HashSet<u128, BuildHasherDefault<IdHasher>>;

pub struct Config {
    pub seed: i64,
    pub rounding: PriceRounding,
    pub min_consistency: f64,
    pub mode: String,
    pub executor: String,
    pub latency_base_ms: i64,
    pub thresholds: Vec<u128>,
    pub max_bytes: usize,
}

/// A decoded decision, owned (it outlives the input buffer's borrow).
pub struct Owned {
    signal_row_id: String,
    ts_ms: i64,
    event_ts_ms: i64,
    symbol: String,
    side: Side,
    qty: Dec,
    px: Option<Dec>,
    order_type: OrderType,
    scenario: String,
    tick: Dec,
    step: Dec,
    min_notional: Dec,
    warmup: bool,
    guard_reason: Option<String>,
    consistency: f64,
    weak_signal_throttle: bool,
    action: Action,
}

fn own(d: decision::Decision<'_>) -> Option<Owned> {
    Some(Owned {
        signal_row_id: d.signal_row_id.into_owned(),
        ts_ms: d.ts_ms,
        event_ts_ms: d.event_ts_ms,
        symbol: d.symbol.into_owned(),
        side: d.side,
        qty: Dec::parse(&d.qty)?,
        px: match d.px {
            Some(p) => Some(Dec::parse(&p)?),
            None => None,
        },
        order_type: d.order_type,
        scenario: d.scenario.into_owned(),
        tick: Dec::parse(&d.tick_size)?,
        step: Dec::parse(&d.step_size)?,
        min_notional: Dec::parse(&d.min_notional)?,
        warmup: d.warmup,
        guard_reason: d.guard_reason.map(|g| g.into_owned()),
        consistency: d.consistency,
        weak_signal_throttle: d.weak_signal_throttle,
        action: d.action,
    })
}

/// Lines as Python's `bytes.splitlines()` cuts them (\n, \r\n, \r), blank ones (`not line.strip()`) left out.
pub fn split_lines(data: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::with_capacity(data.len() / 512 + 1);
    let mut start = 0;
    let mut i = 0;
    while i < data.len() {
        let c = data[i];
        if c == b'\n' || c == b'\r' {
            lines.push(&data[start..i]);
            if c == b'\r' && i + 1 < data.len() && data[i + 1] == b'\n' {
                i += 1;
            }
            start = i + 1;
        }
        i += 1;
    }
    if start < data.len() {
        lines.push(&data[start..]);
    }
    lines.retain(|line| line.iter().any(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)));
    lines
}

pub struct Line {
    pub symbol: String,
    pub event_ts_ms: i64,
    pub event_id: String,
    pub payload: Vec<u8>,
}

pub struct Fold {
    config: Config,
    decisions: Vec<Owned>,
    next: usize,
    seen: IdSet,
    pub rejected: HashMap<&'static str, u64>,
    pub by_status: HashMap<&'static str, u64>,
    pub events: u64,
    digest: Sha256,
}

impl Fold {
    pub fn new<'a>(config: Config, values: impl Iterator<Item = &'a [u8]>) -> Fold {
        let mut rejected: HashMap<&'static str, u64> = HashMap::new();
        let mut decisions = Vec::new();
        for value in values {
            match decision::decode(value, config.max_bytes) {
                Ok(d) => match own(d) {
                    Some(o) => decisions.push(o),
                    None => *rejected.entry("schema").or_default() += 1,
                },
                Err(class) => *rejected.entry(class.as_str()).or_default() += 1,
            }
        }
        // (event_ts_ms, symbol, position among the symbol's decisions): a stable sort by the first two.
        decisions.sort_by(|a, b| a.event_ts_ms.cmp(&b.event_ts_ms).then_with(|| a.symbol.cmp(&b.symbol)));
        Fold {
            config,
            seen: IdSet::with_capacity_and_hasher(decisions.len(), Default::default()),
            decisions,
            next: 0,
            rejected,
            by_status: HashMap::new(),
            events: 0,
            digest: Sha256::new(),
        }
    }

    pub fn decisions(&self) -> usize {
        self.decisions.len()
    }

    /// How many decisions (in canonical order) have been folded.
    pub fn position(&self) -> usize {
        self.next
    }

    pub fn done(&self) -> bool {
        self.next >= self.decisions.len()
    }

    pub fn hexdigest(&self) -> String {
        let out = self.digest.clone().finalize();
        out.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Folds decisions until `max_events` events are made (or the input ends); `keep` returns them.
    pub fn step(&mut self, max_events: usize, keep: bool) -> Vec<Line> {
        let mut lines = Vec::new();
        let mut made = 0;
        let mut buf: Vec<u8> = Vec::with_capacity(1024);
        while self.next < self.decisions.len() && made < max_events {
            let index = self.next;
            self.next += 1;
            buf.clear();
            let Some((symbol, ts, event_id)) = self.handle(index, &mut buf) else { continue };
            buf.push(b'\n');
            self.digest.update(&buf);
            buf.pop();
            self.events += 1;
            made += 1;
            if keep {
                lines.push(Line { symbol, event_ts_ms: ts, event_id, payload: buf.clone() });
            }
        }
        lines
    }

    /// One decision: its event (encoded into `buf`), or None when it makes none.
    fn handle(&mut self, index: usize, buf: &mut Vec<u8>) -> Option<(String, i64, String)> {
        let d = &self.decisions[index];
        if d.action != Action::New {
            // No market data: nothing rests, every known order is terminal, and an unknown one
            // is unknown; a cancel or amend is dropped either way, without an event.
            return None;
        }
        let c = &self.config;
        let source_offset = index as i64;
        let rounded = engine::align_order(d.side, &d.qty, d.px.as_ref(), &d.tick, &d.step, &d.min_notional, c.rounding);
        let rounded = match rounded {
            Err(reason) => {
                let (coid, key) =
                    engine::client_order_id_and_key(&d.signal_row_id, d.ts_ms, d.side, &d.qty, d.px.as_ref());
                if !self.seen.insert(key) {
                    return None;
                }
                return Some(self.unsent(index, &coid, "DENIED", reason, buf));
            }
            Ok(r) => r,
        };
        let (coid, key) =
            engine::client_order_id_and_key(&d.signal_row_id, d.ts_ms, d.side, &rounded.qty, rounded.px.as_ref());
        if !self.seen.insert(key) {
            return None;
        }
        // worker.policy.gating.pre_trade_gate (no stale symbols, no rate wall here).
        let gate: Option<(&'static str, String)> = if d.warmup {
            Some(("DENIED", "warmup".to_owned()))
        } else if let Some(g) = d.guard_reason.as_ref().filter(|g| !g.is_empty()) {
            Some(("DENIED", format!("guard:{g}")))
        } else if d.weak_signal_throttle {
            Some(("THROTTLED", "weak_signal".to_owned()))
        } else if d.consistency < c.min_consistency {
            let keep_probability = d.consistency / c.min_consistency;
            let fraction = engine::keep_bits(&coid) as f64 / 18_446_744_073_709_551_616.0;
            (fraction >= keep_probability).then(|| ("THROTTLED", "low_consistency".to_owned()))
        } else {
            None
        };
        if let Some((status, reason)) = gate {
            return Some(self.unsent(index, &coid, status, &reason, buf));
        }
        // BacktestExecutor.submit with the immediate fill model and no market.
        let latency = engine::latency_ms(c.latency_base_ms, &c.thresholds, c.seed, &coid);
        let sent = d.event_ts_ms;
        let ack = sent + latency;
        let fill_px: Option<&Dec> = if d.order_type == OrderType::Limit { rounded.px.as_ref() } else { d.px.as_ref() };
        let status = if fill_px.is_some() { "FILLED" } else { "REJECTED" };
        let qty = rounded.qty.plain();
        let px_intent = d.px.as_ref().map(Dec::plain);
        let px_sent = rounded.px.as_ref().map(Dec::plain);
        let px_fill = fill_px.map(Dec::plain);
        let slippage = engine::slippage_bps(d.side, d.px.as_ref(), fill_px).map(|s| s.plain());
        let exchange = fill_px.map(|_| format!("bt-{coid}"));
        let event_id = format!("{coid}.1");
        let diff = rounded.diff.plain();
        let event = Event {
            event_id: &event_id,
            client_order_id: &coid,
            signal_row_id: &d.signal_row_id,
            symbol: &d.symbol,
            side: d.side.as_str(),
            qty: &qty,
            px_intent: px_intent.as_deref(),
            px_sent: px_sent.as_deref(),
            px_fill: px_fill.as_deref(),
            qty_filled: if fill_px.is_some() { &qty } else { "0" },
            rounding_applied: rounded.applied,
            rounding_diff: &diff,
            slippage_bps: slippage.as_deref(),
            exchange_order_id: exchange.as_deref(),
            status,
            reason: if fill_px.is_some() { None } else { Some("no_reference_price") },
            sent_ts_ms: Some(sent),
            ack_ts_ms: Some(ack),
            event_ts_ms: d.event_ts_ms,
            latency_ms: Some(latency),
            executor: &c.executor,
            mode: &c.mode,
            scenario: &d.scenario,
            source_topic: "replay",
            source_partition: 0,
            source_offset,
            recv_window_ms: None,
            attempt: None,
            order_type: None,
            tif: None,
            observed: None,
        };
        engine::encode_event(buf, &event);
        *self.by_status.entry(status).or_default() += 1;
        Some((d.symbol.clone(), d.event_ts_ms, event_id))
    }

    /// `ExecutionEngine._unsent`: a DENIED or THROTTLED first event.
    fn unsent(
        &mut self,
        index: usize,
        coid: &str,
        status: &'static str,
        reason: &str,
        buf: &mut Vec<u8>,
    ) -> (String, i64, String) {
        let d = &self.decisions[index];
        let c = &self.config;
        let event_id = format!("{coid}.1");
        let qty = d.qty.plain();
        let px_intent = d.px.as_ref().map(Dec::plain);
        let event = Event {
            event_id: &event_id,
            client_order_id: coid,
            signal_row_id: &d.signal_row_id,
            symbol: &d.symbol,
            side: d.side.as_str(),
            qty: &qty,
            px_intent: px_intent.as_deref(),
            px_sent: None,
            px_fill: None,
            qty_filled: "0",
            rounding_applied: false,
            rounding_diff: "0",
            slippage_bps: None,
            exchange_order_id: None,
            status,
            reason: Some(reason),
            sent_ts_ms: None,
            ack_ts_ms: None,
            event_ts_ms: d.event_ts_ms,
            latency_ms: None,
            executor: &c.executor,
            mode: &c.mode,
            scenario: &d.scenario,
            source_topic: "replay",
            source_partition: 0,
            source_offset: index as i64,
            recv_window_ms: None,
            attempt: None,
            order_type: None,
            tif: None,
            observed: None,
        };
        engine::encode_event(buf, &event);
        *self.by_status.entry(status).or_default() += 1;
        (d.symbol.clone(), d.event_ts_ms, event_id)
    }
}
