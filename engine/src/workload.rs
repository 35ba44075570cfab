//! The Morango-shaped workload of SPEC §5, generated deterministically from a
//! seed: records of type `result` in `<org>:results`, with ten fields (about
//! 400 bytes as JSON). Used by benchmarks and tests so every comparison runs
//! on the same data.

use std::collections::BTreeMap;

use partitions::{Partition, RecordType};

use crate::change::RecordKey;
use crate::ids::RecordId;
use crate::store::{LocalOp, LocalWrite};
use crate::value::Value;

pub const RECORD_TYPE: &str = "result";
pub const PARTITION: &str = "results";

/// A deterministic stream of 64-bit numbers (splitmix64).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn hex32(a: u64, b: u64) -> String {
    format!("{:016x}{:016x}", mix(a), mix(b))
}

/// The id of record `seq` (a 32-hex id, like Morango's UUIDs).
pub fn record_id(seed: u64, seq: u64) -> RecordId {
    RecordId::parse(&hex32(seed ^ 0x5eed, seq)).expect("hex is a valid record id")
}

/// The fields of record `seq`; `version` changes the values that an edit
/// would change (score, attempts, completed, answer, updated_at).
pub fn result_fields(seed: u64, seq: u64, version: u64) -> BTreeMap<String, Value> {
    let r = mix(seed ^ seq.rotate_left(17));
    let v = mix(r ^ version);
    let learner = mix(seed).wrapping_add(seq / 40);
    let facility = mix(seed.wrapping_add(1));
    let started = 1_760_000_000 + (r % 30_000_000);
    let updated = started + 60 + (v % 3_600);
    let mut fields = BTreeMap::new();
    fields.insert("seq".into(), Value::Int(seq as i64));
    fields.insert("learner_id".into(), Value::Text(hex32(learner, 1)));
    fields.insert("item".into(), Value::Text(format!("exercise-{:04}/q{:02}", r % 10_000, (r >> 20) % 20)));
    fields.insert("score".into(), Value::Float(((v % 1000) as f64) / 1000.0));
    fields.insert("attempts".into(), Value::Int(1 + (v % 5) as i64));
    fields.insert("completed".into(), Value::Bool(!v.is_multiple_of(3)));
    fields.insert(
        "answer".into(),
        Value::Text(format!(
            "{{\"choice\":{},\"text\":\"option {:02}\",\"ms\":{:05},\"hint\":{},\"lang\":\"en\",\"src\":\"exercise-viewer\"}}",
            v % 4,
            (v >> 8) % 100,
            (v >> 16) % 90_000,
            (v >> 40) % 2 == 1
        )),
    );
    fields.insert("started_at".into(), Value::Text(iso8601(started, r % 1000)));
    fields.insert("updated_at".into(), Value::Text(iso8601(updated, v % 1000)));
    fields.insert("facility".into(), Value::Text(hex32(facility, 2)));
    fields
}

/// Seconds and milliseconds since 1970 as RFC 3339 UTC.
fn iso8601(secs: u64, millis: u64) -> String {
    crate::hlc::rfc3339(secs * 1000 + millis)
}

/// Local writes that put records `seqs` (at `version`) into `partition`
/// under `record_type`: what a benchmark's preload writes.
pub fn writes(
    partition: &Partition,
    record_type: &RecordType,
    seed: u64,
    seqs: std::ops::Range<u64>,
    version: u64,
) -> Vec<LocalWrite> {
    seqs.map(|s| LocalWrite {
        record: RecordKey { partition: partition.clone(), record_type: record_type.clone(), id: record_id(seed, s) },
        op: LocalOp::Put { set: result_fields(seed, s, version), unset: Default::default() },
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_is_deterministic_and_about_400_bytes_of_json() {
        assert_eq!(result_fields(1, 7, 0), result_fields(1, 7, 0));
        assert_ne!(result_fields(1, 7, 0), result_fields(1, 7, 1));
        assert_eq!(iso8601(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_700_000_000, 5), "2023-11-14T22:13:20.005Z");
        // JSON size: keys, quotes and values.
        let json_len: usize = result_fields(3, 1234, 0)
            .iter()
            .map(|(k, v)| {
                k.len()
                    + 4
                    + match v {
                        Value::Text(t) => t.len() + 2 + t.matches('"').count(),
                        Value::Int(n) => n.to_string().len(),
                        Value::Float(f) => f.to_string().len(),
                        Value::Bool(_) => 5,
                        _ => 0,
                    }
            })
            .sum();
        assert!((370..=440).contains(&json_len), "{json_len} bytes");
    }
}
