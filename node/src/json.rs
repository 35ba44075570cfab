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
        Value::Bytes(b) => json!({ "$base64": crate::pem::encode_base64(b) }),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Map(items) => serde_json::Value::Object(items.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

pub fn from_json(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::Text(s.clone()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(from_json).collect()),
        serde_json::Value::Object(map) => {
            if map.len() == 1
                && let Some(serde_json::Value::String(b64)) = map.get("$base64")
                && let Ok(bytes) = crate::pem::decode_base64(b64)
            {
                return Value::Bytes(bytes);
            }
            Value::Map(map.iter().map(|(k, v)| (k.clone(), from_json(v))).collect())
        }
    }
}

/// A `--set FIELD=VALUE` value: JSON if it parses as JSON, else a string.
pub fn parse_cli_value(text: &str) -> Value {
    serde_json::from_str::<serde_json::Value>(text).map_or_else(|_| Value::Text(text.to_owned()), |v| from_json(&v))
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

/// Fields of an NDJSON import line.
pub fn fields_of(object: &Map<String, serde_json::Value>) -> BTreeMap<String, Value> {
    object.iter().map(|(k, v)| (k.clone(), from_json(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_values_are_json_when_they_parse() {
        assert_eq!(parse_cli_value("3"), Value::Int(3));
        assert_eq!(parse_cli_value("0.5"), Value::Float(0.5));
        assert_eq!(parse_cli_value("true"), Value::Bool(true));
        assert_eq!(parse_cli_value("hello"), Value::Text("hello".into()));
        assert_eq!(parse_cli_value("\"3\""), Value::Text("3".into()));
        let bytes = Value::Bytes(vec![1, 2, 3]);
        assert_eq!(from_json(&to_json(&bytes)), bytes);
    }
}
