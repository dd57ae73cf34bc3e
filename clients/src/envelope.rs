//! Kafka Connect's JSON envelope (`JsonConverter` with `schemas.enable=true`): `producer
//! --value-schema FILE` wraps each JSON line as `{"schema": ..., "payload": LINE}`, and
//! `consumer --unwrap-schema` prints the payload alone.
//!
//! The producer checks what it can without Connect's type system: the schema is a JSON object
//! with a `type`, each line is JSON, and a struct's required fields are there. The sink that
//! reads the topic checks the payload against the schema in full.

use std::path::Path;

use serde_json::Value;

/// A value schema read from a file, ready to wrap lines with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueSchema {
    /// The schema, as written in the envelope.
    schema: Value,
    /// A struct's required fields (not optional, no default), checked on each line.
    required: Vec<String>,
}

/// The largest schema file read.
const MAX_SCHEMA_BYTES: u64 = 1 << 20;

impl ValueSchema {
    /// Reads a Connect schema in its JSON form (as in the envelope's `schema`) from `path`.
    ///
    /// # Errors
    /// The file cannot be read, is not JSON, or is not a schema; the message names the file.
    pub fn read(path: &Path) -> Result<ValueSchema, String> {
        let shown = path.display();
        let size = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?.len();
        if size > MAX_SCHEMA_BYTES {
            return Err(format!(
                "{shown}: {size} bytes; a schema may have at most {MAX_SCHEMA_BYTES}"
            ));
        }
        let text = std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?;
        let schema: Value =
            serde_json::from_slice(&text).map_err(|e| format!("{shown}: not JSON: {e}"))?;
        // A whole envelope is accepted too: its schema is taken.
        let schema = match schema {
            Value::Object(mut map) if map.contains_key("payload") && map.contains_key("schema") => {
                map.remove("schema").unwrap_or_default()
            }
            other => other,
        };
        let Some(kind) = schema.get("type").and_then(Value::as_str) else {
            return Err(format!(
                "{shown}: not a Connect schema: expected an object with a \"type\" (e.g. \
                 {{\"type\": \"struct\", \"fields\": [...]}})"
            ));
        };
        let mut required = Vec::new();
        if kind == "struct" {
            let Some(fields) = schema.get("fields").and_then(Value::as_array) else {
                return Err(format!("{shown}: a struct schema needs \"fields\""));
            };
            for field in fields {
                let Some(name) = field.get("field").and_then(Value::as_str) else {
                    return Err(format!(
                        "{shown}: each of a struct's fields needs a \"field\" name"
                    ));
                };
                let optional = field.get("optional").and_then(Value::as_bool).unwrap_or(false);
                if !optional && field.get("default").is_none_or(Value::is_null) {
                    required.push(name.to_owned());
                }
            }
        }
        Ok(ValueSchema { schema, required })
    }

    /// `value`, a JSON text, in the envelope.
    ///
    /// # Errors
    /// It is not JSON, or a struct lacks a required field.
    pub fn wrap(&self, value: &[u8]) -> Result<Vec<u8>, String> {
        let payload: Value =
            serde_json::from_slice(value).map_err(|e| format!("not JSON ({e})"))?;
        if !self.required.is_empty() {
            let Value::Object(map) = &payload else {
                return Err("not a JSON object, which the struct schema needs".to_owned());
            };
            if let Some(missing) =
                self.required.iter().find(|f| map.get(*f).is_none_or(Value::is_null))
            {
                return Err(format!("no value for the required field {missing:?}"));
            }
        }
        let envelope = serde_json::json!({ "schema": &self.schema, "payload": payload });
        serde_json::to_vec(&envelope).map_err(|e| e.to_string())
    }
}

/// The payload of a message in the envelope, as JSON text; `None` for anything else.
pub fn unwrap(value: &[u8]) -> Option<Vec<u8>> {
    if !value.starts_with(b"{") {
        return None;
    }
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(value) else { return None };
    if map.len() != 2 || !map.contains_key("schema") {
        return None;
    }
    let payload = map.remove("payload")?;
    serde_json::to_vec(&payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_wrapped_and_unwrapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order.json");
        std::fs::write(
            &path,
            r#"{"type":"struct","fields":[{"type":"int64","optional":false,"field":"order_time"},
               {"type":"string","optional":true,"field":"note"}]}"#,
        )
        .unwrap();
        let schema = ValueSchema::read(&path).unwrap();
        let wrapped = schema.wrap(br#"{"order_time": 5}"#).unwrap();
        let v: Value = serde_json::from_slice(&wrapped).unwrap();
        assert_eq!(v["schema"]["type"], "struct");
        assert_eq!(v["payload"]["order_time"], 5);
        assert_eq!(unwrap(&wrapped).unwrap(), br#"{"order_time":5}"#);
        assert!(schema.wrap(br#"{"note": "x"}"#).unwrap_err().contains("order_time"));
        assert!(schema.wrap(b"not json").is_err());
        assert_eq!(unwrap(b"plain"), None);
        std::fs::write(&path, "[1]").unwrap();
        assert!(ValueSchema::read(&path).unwrap_err().contains("not a Connect schema"));
    }
}
