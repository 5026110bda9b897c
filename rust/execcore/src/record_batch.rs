//! Kafka record batches (message format v2) as a Fetch response carries them, read without a
//! Python object per record: the takeover rebuild's fast path (worker/runtime/recovery.py).
//!
//! It reads exactly what aiokafka's `PartitionRecords._unpack_records` yields for a
//! `read_committed` consumer: CRC-checked batches, control batches skipped, the batches of
//! aborted transactions (the response's `aborted_transactions`) dropped, records below the fetch
//! offset skipped, and the next fetch offset taken from the batch's last offset. What it does not
//! handle (a compressed batch, an older magic, a bad CRC, a malformed batch) stops it at that
//! batch, and the caller reads on from there through aiokafka's consumer.

use std::collections::HashSet;

const HEADER: usize = 61; // through `records_count`
const ATTRIBUTES_AT: usize = 21;
const COMPRESSION: i16 = 0x07;
const TRANSACTIONAL: i16 = 0x10;
const CONTROL: i16 = 0x20;

/// Why reading stopped before the end of the data.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// A batch this reader does not handle (compressed, magic != 2, bad CRC, malformed), at
    /// `next_offset`: read on from there another way.
    Unhandled,
    /// The record at this offset was refused by the visitor; `next_offset` is unchanged (the
    /// caller handles the record and reads on from `offset + 1`).
    Refused(i64),
}

/// One record of a data batch: its offset and value (None: a tombstone).
pub struct Record<'a> {
    pub offset: i64,
    pub value: Option<&'a [u8]>,
}

/// The outcome of reading one response's records: where the next fetch starts, and whether
/// reading stopped early.
#[derive(Debug, PartialEq, Eq)]
pub struct Read {
    pub next_offset: i64,
    pub stop: Option<Stop>,
}

fn i16_at(data: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([data[at], data[at + 1]])
}

fn i32_at(data: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

fn i64_at(data: &[u8], at: usize) -> i64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&data[at..at + 8]);
    i64::from_be_bytes(word)
}

/// A zigzag varint (Kafka's `varint`/`varlong`): the value and the rest of the input.
fn varint(data: &[u8]) -> Option<(i64, &[u8])> {
    let mut value: u64 = 0;
    for (i, byte) in data.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let decoded = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return Some((decoded, &data[i + 1..]));
        }
    }
    None
}

/// A length-prefixed byte string (length -1: None) and the rest of the input.
fn bytes(data: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    let (len, rest) = varint(data)?;
    if len < 0 {
        return Some((None, rest));
    }
    let len = usize::try_from(len).ok()?;
    (rest.len() >= len).then(|| (Some(&rest[..len]), &rest[len..]))
}

/// A record's (offset delta, key, value).
type Parts<'a> = (i64, Option<&'a [u8]>, Option<&'a [u8]>);

/// One record of a batch's (uncompressed) records, or None if malformed.
fn record(data: &[u8]) -> Option<Parts<'_>> {
    let rest = data.get(1..)?; // attributes
    let (_timestamp_delta, rest) = varint(rest)?;
    let (offset_delta, rest) = varint(rest)?;
    let (key, rest) = bytes(rest)?;
    let (value, _headers) = bytes(rest)?;
    Some((offset_delta, key, value))
}

/// The records of a batch body: each record's bytes (after its length prefix), or None if malformed.
fn records(mut body: &[u8], count: i32) -> Option<Vec<&[u8]>> {
    let mut out = Vec::with_capacity(usize::try_from(count).ok()?.min(body.len()));
    for _ in 0..count {
        let (len, rest) = varint(body)?;
        let len = usize::try_from(len).ok()?;
        if rest.len() < len {
            return None;
        }
        out.push(&rest[..len]);
        body = &rest[len..];
    }
    body.is_empty().then_some(out)
}

/// Reads the batches of one partition's fetched records from `fetch_offset` on, calling `visit`
/// for each committed data record at or after `fetch_offset` (in offset order). `aborted` is the
/// response's (producer_id, first_offset) list. `visit` returns false to refuse a record.
///
/// The data may start with batches below `fetch_offset` (the caller reads a response again from
/// just after a refused record): they are read for the aborted transactions' bookkeeping only,
/// and the next offset never goes back.
pub fn read(data: &[u8], fetch_offset: i64, aborted: &[(i64, i64)], mut visit: impl FnMut(Record<'_>) -> bool) -> Read {
    let mut aborted: Vec<(i64, i64)> = aborted.to_vec();
    aborted.sort_by_key(|&(_, first)| first); // stable: as aiokafka's sorted()
    let mut aborted = aborted.into_iter().peekable();
    let mut aborted_producers: HashSet<i64> = HashSet::new();
    let mut next_offset = fetch_offset;
    let mut rest = data;
    let unhandled = |next_offset| Read { next_offset, stop: Some(Stop::Unhandled) };
    while rest.len() >= 17 {
        let size = i32_at(rest, 8);
        let Ok(size) = usize::try_from(size) else {
            return unhandled(next_offset);
        };
        if rest.len() < 12 + size {
            break; // a partial batch at the end of the response: fetched again next time
        }
        let (batch, after) = rest.split_at(12 + size);
        rest = after;
        if batch.len() < HEADER || batch[16] != 2 {
            return unhandled(next_offset);
        }
        let crc = u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]]);
        if crc32c(&batch[ATTRIBUTES_AT..]) != crc {
            return unhandled(next_offset); // aiokafka raises CorruptRecordException for it
        }
        let base_offset = i64_at(batch, 0);
        let attributes = i16_at(batch, 21);
        let batch_next = base_offset + i64::from(i32_at(batch, 23)) + 1;
        let producer_id = i64_at(batch, 43);
        let count = i32_at(batch, 57);
        let body = &batch[HEADER..];
        let control = attributes & CONTROL != 0;
        // read_committed (`PartitionRecords._unpack_records`): which producers' batches are aborted.
        while let Some((producer, _)) = aborted.next_if(|&(_, first)| first <= base_offset) {
            aborted_producers.insert(producer);
        }
        if control {
            if attributes & COMPRESSION != 0 {
                return unhandled(next_offset);
            }
            let Some(first) = records(body, count).and_then(|r| r.first().copied()).and_then(record) else {
                return unhandled(next_offset);
            };
            // The control record's key: version (int16), type (int16; 0 = abort, 1 = commit);
            // aiokafka's ABORT_MARKER is version 0, type 0 (the only version there is).
            let Some(key) = first.1.filter(|key| key.len() >= 4) else {
                return unhandled(next_offset);
            };
            let abort = i16_at(key, 0) == 0 && i16_at(key, 2) == 0;
            if abort {
                aborted_producers.remove(&producer_id);
            }
        }
        if attributes & TRANSACTIONAL != 0 && aborted_producers.contains(&producer_id) {
            next_offset = next_offset.max(batch_next);
            continue;
        }
        if control {
            next_offset = next_offset.max(batch_next);
            continue;
        }
        if attributes & COMPRESSION != 0 {
            return unhandled(next_offset);
        }
        let Some(parts) = records(body, count) else {
            return unhandled(next_offset);
        };
        for part in parts {
            let Some((delta, _key, value)) = record(part) else {
                return unhandled(next_offset);
            };
            let offset = base_offset + delta;
            if offset < next_offset {
                continue;
            }
            if !visit(Record { offset, value }) {
                return Read { next_offset, stop: Some(Stop::Refused(offset)) };
            }
            next_offset = offset + 1;
        }
        next_offset = next_offset.max(batch_next);
    }
    Read { next_offset, stop: None }
}

/// CRC-32C (Castagnoli), as Kafka checks a v2 batch.
pub fn crc32c(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU supports SSE4.2 (checked just above).
            return unsafe { crc32c_sse42(data) };
        }
    }
    crc32c_table(data)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_sse42(data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    let mut crc: u64 = 0xffff_ffff;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        crc = _mm_crc32_u64(crc, u64::from_le_bytes(word));
    }
    let mut crc = crc as u32;
    for &byte in chunks.remainder() {
        crc = _mm_crc32_u8(crc, byte);
    }
    !crc
}

const fn crc32c_lookup() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

static CRC32C_TABLE: [u32; 256] = crc32c_lookup();

fn crc32c_table(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c_table(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        let long: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(crc32c(&long), crc32c_table(&long));
    }

    #[test]
    fn varints_are_zigzag() {
        assert_eq!(varint(&[0x00]).map(|v| v.0), Some(0));
        assert_eq!(varint(&[0x01]).map(|v| v.0), Some(-1));
        assert_eq!(varint(&[0x02]).map(|v| v.0), Some(1));
        assert_eq!(varint(&[0xac, 0x02]).map(|v| v.0), Some(150));
        assert_eq!(varint(&[0x80]), None);
    }

    #[test]
    fn a_partial_batch_is_left_for_the_next_fetch() {
        let mut data = [0u8; 20];
        data[11] = 100; // a batch of 112 bytes, 20 of them fetched
        assert_eq!(read(&data, 5, &[], |_| true), Read { next_offset: 5, stop: None });
        data[11] = 3; // a batch too short to be one
        assert_eq!(read(&data, 5, &[], |_| true), Read { next_offset: 5, stop: Some(Stop::Unhandled) });
    }
}
