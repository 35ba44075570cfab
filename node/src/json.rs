//! Conversions between ferry's values and JSON, and the JSON shape of a
//! record (SPEC §4): `{"type","id","partition","fields":{…},"deleted":bool,"conflicts":[…]}`.

use std::collections::BTreeMap;

use engine::{RecordKey, Value, View};
use serde_json::{Map, Number, json};

pub fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => json!(b),
        Value::Int(n) => json!(n),
        Value::Float(f) => Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Text(t) => json!(t),
        Value::Bytes(b) => json!({ "$base64": data_encoding::BASE64.encode(b) }),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        // A sealed value shows its readers, never its boxes (a node that
        // can open it has replaced it with its plaintext before this).
        Value::Map(_) if engine::sealed::readers_of(value).is_some() => {
            json!({ engine::sealed::SEALED_KEY: { "readers": engine::sealed::readers_of(value) } })
        }
        Value::Map(items) => serde_json::Value::Object(items.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

/// A JSON value as a field value. Integers must fit in i64 (values are
/// CBOR with 64-bit integers): a larger one is refused, never rounded to a
/// float. `check_integers` catches those beyond u64, which serde_json has
/// already turned into floats by the time a `serde_json::Value` exists.
pub fn from_json(value: &serde_json::Value) -> Result<Value, String> {
    Ok(match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => return Err(out_of_range(&u.to_string())),
            (None, None) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::Text(s.clone()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(from_json).collect::<Result<_, _>>()?),
        serde_json::Value::Object(map) => {
            if map.len() == 1
                && let Some(serde_json::Value::String(b64)) = map.get("$base64")
                && let Ok(bytes) = data_encoding::BASE64.decode(b64.as_bytes())
            {
                return Ok(Value::Bytes(bytes));
            }
            Value::Map(map.iter().map(|(k, v)| Ok((k.clone(), from_json(v)?))).collect::<Result<_, String>>()?)
        }
    })
}

fn out_of_range(literal: &str) -> String {
    format!("the integer {literal} is outside the 64-bit signed range; write it as a string to keep it exact")
}

/// Refuses JSON text holding an integer literal outside i64, naming where
/// it is (`fields.score`). serde_json reads such literals as floats, which
/// would silently change the number a user wrote.
pub fn check_integers(text: &str) -> Result<(), String> {
    enum Open {
        /// An object, with the key of the value being read.
        Object(Option<String>),
        Array,
    }
    let mut open: Vec<Open> = Vec::new();
    let mut expect_key = false;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if expect_key && let Some(Open::Object(key)) = open.last_mut() {
                    *key = Some(text.get(start..i.min(text.len())).unwrap_or("").to_owned());
                }
                expect_key = false;
            }
            b'{' => {
                open.push(Open::Object(None));
                expect_key = true;
            }
            b'[' => open.push(Open::Array),
            b'}' | b']' => {
                open.pop();
            }
            b',' => expect_key = matches!(open.last(), Some(Open::Object(_))),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i + 1 < bytes.len() && matches!(bytes[i + 1], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                    i += 1;
                }
                let literal = &text[start..=i];
                if !literal.contains(['.', 'e', 'E']) && literal.parse::<i64>().is_err() {
                    let at: Vec<&str> = open
                        .iter()
                        .filter_map(|o| match o {
                            Open::Object(Some(key)) => Some(key.as_str()),
                            _ => None,
                        })
                        .collect();
                    let message = out_of_range(literal);
                    return Err(if at.is_empty() { message } else { format!("{}: {message}", at.join(".")) });
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// A `--set FIELD=VALUE` value: JSON if it parses as JSON, else a string.
pub fn parse_cli_value(text: &str) -> Result<Value, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => {
            check_integers(text)?;
            from_json(&v)
        }
        Err(_) => Ok(Value::Text(text.to_owned())),
    }
}

/// A sync's report as every front end shows it: `ferry sync`, `ferry
/// bundle import`, the local API and the events of `ferry serve`.
pub fn report(peer: &str, r: &engine::SyncReport) -> serde_json::Value {
    json!({
        "peer": peer,
        "sent": r.sent,
        "received": r.received,
        "skipped": r.skipped,
        "updated": r.updated,
        "conflicts": r.conflicts,
        "rejected": r.rejected,
        "rejected_by_peer": r.rejected_by_peer,
        "bytes_sent": r.bytes_sent,
        "bytes_received": r.bytes_received,
        "duration_ms": r.duration_ms,
        "round_trips": r.messages_received,
        "noop": r.noop,
        "rejections": r.rejections,
    })
}

/// Adds the fields of `more` (an object) to `summary` (the blob counters
/// of a sync to its summary).
pub fn add_fields(summary: &mut serde_json::Value, more: serde_json::Value) {
    if let (Some(out), serde_json::Value::Object(fields)) = (summary.as_object_mut(), more) {
        out.extend(fields);
    }
}

pub fn record(key: &RecordKey, view: &View) -> serde_json::Value {
    let fields: Map<String, serde_json::Value> = view.fields.iter().map(|(k, v)| (k.clone(), to_json(v))).collect();
    let conflicts: Vec<serde_json::Value> = view
        .conflicts
        .iter()
        .enumerate()
        .map(|(n, c)| {
            json!({
                "n": n + 1,
                "field": c.field,
                "value": c.value.as_ref().map(to_json),
                "deleted": c.field.is_none() && c.value.is_none(),
                "instance": c.dot.instance.to_string(),
                "counter": c.dot.counter,
            })
        })
        .collect();
    json!({
        "type": key.record_type.as_str(),
        "id": key.id.as_str(),
        "partition": key.partition.to_string(),
        "fields": fields,
        "deleted": !view.exists,
        "conflicts": conflicts,
    })
}

/// A record a command returns; after a write that changed nothing, says so.
pub fn record_result(key: &RecordKey, view: &View, unchanged: bool) -> serde_json::Value {
    let mut value = record(key, view);
    if unchanged {
        value["unchanged"] = json!(true);
    }
    value
}

/// `ferry check`'s report.
pub fn check(report: &engine::store::CheckReport, repair: bool) -> serde_json::Value {
    let damaged: Vec<serde_json::Value> =
        report.damaged.iter().map(|d| json!({ "what": d.what, "reason": d.reason })).collect();
    json!({
        "entries": report.entries,
        "records": report.records,
        "changes": report.changes,
        "damaged": damaged,
        "unsendable": report.unsendable,
        "repaired": repair,
        "removed": report.removed,
        "refetch": report.refetched,
    })
}

/// A ledger entry as `ferry history` shows it: its stored fields, the
/// start in ISO 8601, and a peer's key as its peer id.
pub fn ledger_entry(e: &engine::LedgerEntry) -> serde_json::Value {
    let mut v = serde_json::to_value(e).expect("ledger entries serialise");
    if let Some(o) = v.as_object_mut() {
        o.insert("started_at".into(), json!(engine::hlc::rfc3339(e.started_at_ms)));
        let records: Vec<serde_json::Value> = e
            .records
            .iter()
            .map(|m| {
                json!({
                    "direction": if m.sent { "sent" } else { "received" },
                    "type": m.key.record_type.as_str(),
                    "id": m.key.id.as_str(),
                    "partition": m.key.partition.to_string(),
                })
            })
            .collect();
        o.insert("records".into(), json!(records));
        if let Some(key) = partitions::hex::decode::<32>(&e.peer) {
            o.insert("peer".into(), json!(crate::identity::peer_id_of(&key).to_string()));
        }
    }
    v
}

/// Fields of an NDJSON import line.
pub fn fields_of(object: &Map<String, serde_json::Value>) -> Result<BTreeMap<String, Value>, String> {
    object.iter().map(|(k, v)| Ok((k.clone(), from_json(v).map_err(|e| format!("field {k:?}: {e}"))?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_values_are_json_when_they_parse() {
        assert_eq!(parse_cli_value("3"), Ok(Value::Int(3)));
        assert_eq!(parse_cli_value("0.5"), Ok(Value::Float(0.5)));
        assert_eq!(parse_cli_value("true"), Ok(Value::Bool(true)));
        assert_eq!(parse_cli_value("hello"), Ok(Value::Text("hello".into())));
        assert_eq!(parse_cli_value("\"3\""), Ok(Value::Text("3".into())));
        let bytes = Value::Bytes(vec![1, 2, 3]);
        assert_eq!(from_json(&to_json(&bytes)), Ok(bytes));
    }

    #[test]
    fn bytes_are_standard_padded_base64_and_bad_base64_stays_a_map() {
        for (plain, encoded) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            let bytes = Value::Bytes(plain.as_bytes().to_vec());
            assert_eq!(to_json(&bytes), json!({ "$base64": encoded }));
            assert_eq!(from_json(&json!({ "$base64": encoded })), Ok(bytes));
        }
        for bad in ["Zm9", "Z!9v"] {
            let map = Value::Map([("$base64".to_owned(), Value::Text(bad.to_owned()))].into());
            assert_eq!(from_json(&json!({ "$base64": bad })), Ok(map));
        }
    }

    #[test]
    fn integers_outside_i64_are_refused_with_where_they_are() {
        let table: &[(&str, Option<&str>)] = &[
            ("9223372036854775807", None),
            ("-9223372036854775808", None),
            ("1.8446744073709552e19", None),
            ("[1, 2.5, -3e4]", None),
            (r#"{"a":"18446744073709551617"}"#, None),
            ("9223372036854775808", Some("the integer 9223372036854775808")),
            ("18446744073709551617", Some("the integer 18446744073709551617")),
            ("-9223372036854775809", Some("the integer -9223372036854775809")),
            (r#"{"fields":{"n":18446744073709551617}}"#, Some("fields.n: the integer")),
            (r#"{"a":1,"b":{"c":[1,{"d":99999999999999999999}]}}"#, Some("b.c.d: the integer")),
            (r#"{"s":"a\"b","n":[1e400,123456789012345678901]}"#, Some("n: the integer")),
        ];
        for (text, expected) in table {
            let got = check_integers(text);
            match expected {
                None => assert_eq!(got, Ok(()), "{text}"),
                Some(start) => {
                    let message = got.expect_err(text);
                    assert!(message.starts_with(start), "{text}: {message}");
                }
            }
        }
        assert!(parse_cli_value("18446744073709551617").is_err());
        let u = serde_json::from_str::<serde_json::Value>("18446744073709551615").expect("json");
        assert!(from_json(&u).is_err(), "u64 beyond i64 is refused, not rounded");
    }
}
