//! Kafka Connect's converters: `JsonConverter` (with `schemas.enable` true, the `{"schema":
//! ..., "payload": ...}` envelope, or false, plain JSON), `StringConverter` and
//! `ByteArrayConverter`; and Connect's schemas, checked against the payloads they describe.

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::{ConfigError, ConnectorConfig};

/// How a message's key or value bytes become Connect data and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Converter {
    /// `org.apache.kafka.connect.json.JsonConverter`; `true` when `schemas.enable`.
    Json {
        /// Whether each message is a `{"schema", "payload"}` envelope.
        schemas: bool,
    },
    /// `org.apache.kafka.connect.storage.StringConverter`: UTF-8 text.
    String,
    /// `org.apache.kafka.connect.converters.ByteArrayConverter`: the bytes as they are.
    Bytes,
}

impl Converter {
    /// The converter `prefix` (`key.converter` or `value.converter`) names in `config`, `default`
    /// when unset; `PREFIX.schemas.enable` defaults to true, as in Kafka Connect.
    ///
    /// # Errors
    /// An unknown class, or a bad `schemas.enable`.
    pub fn from_config(
        config: &ConnectorConfig,
        prefix: &str,
        default: Converter,
    ) -> Result<Converter, ConfigError> {
        let schemas_key = format!("{prefix}.schemas.enable");
        let Some(class) = config.get(prefix).map(str::trim).filter(|c| !c.is_empty()) else {
            return Ok(match default {
                Converter::Json { schemas } => {
                    Converter::Json { schemas: config.boolean(&schemas_key, schemas)? }
                }
                other => other,
            });
        };
        let simple = class.rsplit('.').next().unwrap_or(class);
        match simple {
            "JsonConverter" => Ok(Converter::Json { schemas: config.boolean(&schemas_key, true)? }),
            "StringConverter" => Ok(Converter::String),
            "ByteArrayConverter" => Ok(Converter::Bytes),
            _ => Err(config.error(
                prefix,
                format!(
                    "{class:?} is not a converter this program has: \
                     org.apache.kafka.connect.json.JsonConverter, \
                     org.apache.kafka.connect.storage.StringConverter or \
                     org.apache.kafka.connect.converters.ByteArrayConverter"
                ),
            )),
        }
    }

    /// Reads message bytes as Connect data: the schema (only with the envelope) and the value.
    /// `None` bytes (no key) and an empty message are a null value with no schema.
    ///
    /// # Errors
    /// A reason fit for the dead-letter topic: not JSON, no envelope when one is required, a
    /// payload that does not fit its schema.
    pub fn read(self, bytes: Option<&[u8]>) -> Result<Data, String> {
        self.read_with(bytes, &mut SchemaCache::default())
    }

    /// As [`Converter::read`], reusing the schema parsed for the previous message when this
    /// one carries the same schema text (a topic's messages usually all do).
    ///
    /// # Errors
    /// As [`Converter::read`].
    pub fn read_with(self, bytes: Option<&[u8]>, cache: &mut SchemaCache) -> Result<Data, String> {
        let Some(bytes) = bytes.filter(|b| !b.is_empty()) else {
            return Ok(Data { schema: None, value: Value::Null });
        };
        match self {
            Converter::String => match std::str::from_utf8(bytes) {
                Ok(text) => Ok(Data { schema: None, value: Value::String(text.to_owned()) }),
                Err(e) => Err(format!("not UTF-8 text: {e}")),
            },
            Converter::Bytes => {
                use base64::Engine as _;
                let text = base64::engine::general_purpose::STANDARD.encode(bytes);
                Ok(Data {
                    schema: Some(Arc::new(Schema::primitive(Type::Bytes))),
                    value: Value::String(text),
                })
            }
            Converter::Json { schemas } => {
                if !schemas {
                    let json: Value =
                        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
                    return Ok(Data { schema: None, value: json });
                }
                let envelope: Envelope<'_> = serde_json::from_slice(bytes).map_err(|e| {
                    if e.is_data() {
                        NO_ENVELOPE.to_owned()
                    } else {
                        format!("not JSON: {e}")
                    }
                })?;
                let raw = envelope.schema.get();
                if raw == "null" {
                    return Ok(Data { schema: None, value: envelope.payload });
                }
                let schema = match &cache.last {
                    Some((text, schema)) if text == raw => Arc::clone(schema),
                    _ => {
                        let json: Value =
                            serde_json::from_str(raw).map_err(|e| format!("schema: {e}"))?;
                        let schema =
                            Arc::new(Schema::parse(&json).map_err(|e| format!("schema: {e}"))?);
                        cache.last = Some((raw.to_owned(), Arc::clone(&schema)));
                        schema
                    }
                };
                let value = schema.check(envelope.payload, "payload")?;
                Ok(Data { schema: Some(schema), value })
            }
        }
    }
}

/// The schema of the last message read, as text and parsed.
#[derive(Debug, Default)]
pub struct SchemaCache {
    /// The schema's text and the schema.
    last: Option<(String, Arc<Schema>)>,
}

/// JsonConverter's envelope, its schema left as text.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    /// The schema, unparsed.
    #[serde(borrow)]
    schema: &'a RawValue,
    /// The payload.
    payload: Value,
}

/// The reason given for a message without the envelope when `schemas.enable` is true.
const NO_ENVELOPE: &str = "not in the schema envelope: with schemas.enable=true each message \
                           must be a JSON object with exactly the fields \"schema\" and \
                           \"payload\" (or set value.converter.schemas.enable=false)";

/// A key or value as Connect data.
#[derive(Debug, Clone, PartialEq)]
pub struct Data {
    /// Its schema, when the message carried one.
    pub schema: Option<Arc<Schema>>,
    /// The value, checked against the schema; bytes are base64 text, as in JSON.
    pub value: Value,
}

/// Connect's types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// `int8`
    Int8,
    /// `int16`
    Int16,
    /// `int32`
    Int32,
    /// `int64`
    Int64,
    /// `float` (`float32`)
    Float32,
    /// `double` (`float64`)
    Float64,
    /// `boolean`
    Boolean,
    /// `string`
    String,
    /// `bytes` (base64 in JSON)
    Bytes,
    /// `array` of `items`
    Array,
    /// `map` of `keys` to `values`
    Map,
    /// `struct` of `fields`
    Struct,
}

impl Type {
    /// The type a schema's `type` names.
    fn parse(name: &str) -> Option<Type> {
        Some(match name {
            "int8" => Type::Int8,
            "int16" => Type::Int16,
            "int32" => Type::Int32,
            "int64" => Type::Int64,
            "float" | "float32" => Type::Float32,
            "double" | "float64" => Type::Float64,
            "boolean" => Type::Boolean,
            "string" => Type::String,
            "bytes" => Type::Bytes,
            "array" => Type::Array,
            "map" => Type::Map,
            "struct" => Type::Struct,
            _ => return None,
        })
    }

    /// The name JsonConverter writes.
    pub fn name(self) -> &'static str {
        match self {
            Type::Int8 => "int8",
            Type::Int16 => "int16",
            Type::Int32 => "int32",
            Type::Int64 => "int64",
            Type::Float32 => "float",
            Type::Float64 => "double",
            Type::Boolean => "boolean",
            Type::String => "string",
            Type::Bytes => "bytes",
            Type::Array => "array",
            Type::Map => "map",
            Type::Struct => "struct",
        }
    }
}

/// A Connect schema, as JsonConverter writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    /// Its type.
    pub kind: Type,
    /// Whether the value may be null.
    pub optional: bool,
    /// A logical type's name (`org.apache.kafka.connect.data.Timestamp`, ...), if any.
    pub name: Option<String>,
    /// The value used for a null, if any.
    pub default: Option<Value>,
    /// A struct's fields, in order.
    pub fields: Vec<(String, Arc<Schema>)>,
    /// An array's items, or a map's values.
    pub items: Option<Arc<Schema>>,
}

/// The logical type of timestamps: int64 milliseconds since the Unix epoch.
pub const TIMESTAMP: &str = "org.apache.kafka.connect.data.Timestamp";
/// The logical type of dates: int32 days since the Unix epoch.
pub const DATE: &str = "org.apache.kafka.connect.data.Date";

/// How deep schemas may nest: a schema is read recursively.
const MAX_DEPTH: usize = 32;

impl Schema {
    /// A required schema of a primitive type.
    pub fn primitive(kind: Type) -> Schema {
        Schema { kind, optional: false, name: None, default: None, fields: Vec::new(), items: None }
    }

    /// Reads a schema from its JSON form.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(json: &Value) -> Result<Schema, String> {
        Schema::parse_at(json, 0)
    }

    fn parse_at(json: &Value, depth: usize) -> Result<Schema, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested more than {MAX_DEPTH} deep"));
        }
        let Value::Object(map) = json else { return Err("expected an object".into()) };
        let type_name = map.get("type").and_then(Value::as_str).ok_or("no \"type\"")?;
        let kind = Type::parse(type_name).ok_or_else(|| format!("unknown type {type_name:?}"))?;
        let optional = map.get("optional").and_then(Value::as_bool).unwrap_or(false);
        let name = map.get("name").and_then(Value::as_str).map(str::to_owned);
        let default = map.get("default").filter(|d| !d.is_null()).cloned();
        let mut schema = Schema { kind, optional, name, default, fields: Vec::new(), items: None };
        match kind {
            Type::Struct => {
                let fields = map
                    .get("fields")
                    .and_then(Value::as_array)
                    .ok_or("a struct needs \"fields\"")?;
                for field in fields {
                    let name = field
                        .get("field")
                        .and_then(Value::as_str)
                        .ok_or("a struct's field needs a name (\"field\")")?;
                    let inner =
                        Schema::parse_at(field, depth + 1).map_err(|e| format!("{name}: {e}"))?;
                    if schema.fields.iter().any(|(n, _)| n == name) {
                        return Err(format!("field {name:?} twice"));
                    }
                    schema.fields.push((name.to_owned(), Arc::new(inner)));
                }
            }
            Type::Array => {
                let items = map.get("items").ok_or("an array needs \"items\"")?;
                schema.items = Some(Arc::new(Schema::parse_at(items, depth + 1)?));
            }
            Type::Map => {
                let values = map.get("values").ok_or("a map needs \"values\"")?;
                schema.items = Some(Arc::new(Schema::parse_at(values, depth + 1)?));
            }
            _ => {}
        }
        Ok(schema)
    }

    /// The schema's JSON form, as JsonConverter writes it.
    pub fn to_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        map.insert("type".into(), Value::String(self.kind.name().into()));
        match self.kind {
            Type::Struct => {
                let fields = self
                    .fields
                    .iter()
                    .map(|(name, s)| {
                        let mut f = s.to_json();
                        if let Value::Object(m) = &mut f {
                            m.insert("field".into(), Value::String(name.clone()));
                        }
                        f
                    })
                    .collect();
                map.insert("fields".into(), Value::Array(fields));
            }
            Type::Array => {
                if let Some(items) = &self.items {
                    map.insert("items".into(), items.to_json());
                }
            }
            Type::Map => {
                map.insert("keys".into(), serde_json::json!({"type": "string", "optional": false}));
                if let Some(items) = &self.items {
                    map.insert("values".into(), items.to_json());
                }
            }
            _ => {}
        }
        map.insert("optional".into(), Value::Bool(self.optional));
        if let Some(name) = &self.name {
            map.insert("name".into(), Value::String(name.clone()));
        }
        if let Some(default) = &self.default {
            map.insert("default".into(), default.clone());
        }
        Value::Object(map)
    }

    /// Checks `value` against the schema (`at` names where it is, for the reason) and returns
    /// it with defaults filled in for nulls.
    ///
    /// # Errors
    /// Why it does not fit.
    pub fn check(&self, value: Value, at: &str) -> Result<Value, String> {
        self.check_in(value).map_err(|e| {
            let mut path = at.to_owned();
            path.extend(e.path.iter().rev().map(String::as_str));
            format!("{path}: {}", e.reason)
        })
    }

    /// [`Schema::check`] without a path: a reason's path is made only when there is one.
    fn check_in(&self, value: Value) -> Result<Value, Misfit> {
        if value.is_null() {
            return match (&self.default, self.optional) {
                (Some(default), _) => Ok(default.clone()),
                (None, true) => Ok(Value::Null),
                (None, false) => {
                    Err(Misfit::new("null, but the schema says it is required".into()))
                }
            };
        }
        let kind = self.kind.name();
        let mismatch =
            |v: &Value| Misfit::new(format!("{} does not fit the schema's {kind}", describe(v)));
        let int_range = |min: i64, max: i64| match value.as_i64() {
            Some(n) if (min..=max).contains(&n) => Ok(()),
            _ => Err(mismatch(&value)),
        };
        match self.kind {
            Type::Int8 => int_range(i8::MIN.into(), i8::MAX.into())?,
            Type::Int16 => int_range(i16::MIN.into(), i16::MAX.into())?,
            Type::Int32 => int_range(i32::MIN.into(), i32::MAX.into())?,
            Type::Int64 => int_range(i64::MIN, i64::MAX)?,
            Type::Float32 | Type::Float64 if value.is_number() => {}
            Type::Boolean if value.is_boolean() => {}
            Type::String if value.is_string() => {}
            Type::Bytes => {
                use base64::Engine as _;
                let Some(text) = value.as_str() else { return Err(mismatch(&value)) };
                if base64::engine::general_purpose::STANDARD.decode(text).is_err() {
                    return Err(Misfit::new("bytes must be base64 text".into()));
                }
            }
            Type::Array => {
                let (Value::Array(items), Some(schema)) = (value, &self.items) else {
                    return Err(Misfit::new(
                        "not an array with items, which the schema needs".into(),
                    ));
                };
                let checked = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| schema.check_in(v).map_err(|e| e.within(format!("[{i}]"))))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(Value::Array(checked));
            }
            Type::Map if value.is_object() || value.is_array() => {}
            Type::Struct => {
                let Value::Object(mut map) = value else {
                    return Err(Misfit::new(
                        "not an object, which the schema's struct needs".into(),
                    ));
                };
                let mut out = serde_json::Map::new();
                for (name, schema) in &self.fields {
                    let v = map.remove(name).unwrap_or(Value::Null);
                    let checked = schema.check_in(v).map_err(|e| e.within(format!(".{name}")))?;
                    out.insert(name.clone(), checked);
                }
                if let Some(extra) = map.keys().next() {
                    return Err(Misfit::new(format!("field {extra:?} is not in the schema")));
                }
                return Ok(Value::Object(out));
            }
            _ => return Err(mismatch(&value)),
        }
        Ok(value)
    }
}

/// Why a value does not fit its schema, and where, innermost step first.
struct Misfit {
    /// `.field` and `[index]` steps, from the value at fault outwards.
    path: Vec<String>,
    /// Why.
    reason: String,
}

impl Misfit {
    fn new(reason: String) -> Misfit {
        Misfit { path: Vec::new(), reason }
    }

    /// The same misfit, one step further out.
    fn within(mut self, step: String) -> Misfit {
        self.path.push(step);
        self
    }
}

/// A JSON value's kind, for reasons: `string "abc"`, `number 12`.
pub fn describe(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > 40 {
        let mut cut = 40;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    format!("{kind} {text}")
}

/// Wraps `payload` in the JsonConverter envelope with `schema`, after checking it fits:
/// what `producer --value-schema` sends.
///
/// # Errors
/// The payload does not fit the schema.
pub fn envelope(schema: &Schema, schema_json: &Value, payload: Value) -> Result<Vec<u8>, String> {
    let payload = schema.check(payload, "payload")?;
    let wrapped = serde_json::json!({"schema": schema_json, "payload": payload});
    serde_json::to_vec(&wrapped).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER_SCHEMA: &str = r#"{"type":"struct","fields":[
        {"type":"int64","optional":false,"field":"order_time"},
        {"type":"int32","optional":false,"field":"count"},
        {"type":"array","items":{"type":"string"},"optional":false,"field":"order"}],
        "optional":false,"name":"order"}"#;

    #[test]
    fn the_envelope_is_read_and_checked() {
        let msg = format!(
            r#"{{"schema":{ORDER_SCHEMA},"payload":{{"order_time":1,"count":2,"order":["cod","chips"]}}}}"#
        );
        let data = Converter::Json { schemas: true }.read(Some(msg.as_bytes())).unwrap();
        let schema = data.schema.unwrap();
        assert_eq!(schema.kind, Type::Struct);
        assert_eq!(schema.fields.len(), 3);
        assert_eq!(data.value["order"][1], "chips");
        // The schema survives a round trip through its JSON form.
        assert_eq!(Schema::parse(&schema.to_json()).unwrap(), *schema);
    }

    #[test]
    fn a_payload_that_does_not_fit_is_refused_with_where() {
        let msg = format!(
            r#"{{"schema":{ORDER_SCHEMA},"payload":{{"order_time":"x","count":2,"order":[]}}}}"#
        );
        let e = Converter::Json { schemas: true }.read(Some(msg.as_bytes())).unwrap_err();
        assert_eq!(e, "payload.order_time: string \"x\" does not fit the schema's int64");
        let msg = format!(
            r#"{{"schema":{ORDER_SCHEMA},"payload":{{"order_time":1,"count":99999999999,"order":[]}}}}"#
        );
        assert!(Converter::Json { schemas: true }.read(Some(msg.as_bytes())).is_err());
        let e = Converter::Json { schemas: true }.read(Some(br#"{"order_time":1}"#)).unwrap_err();
        assert!(e.starts_with("not in the schema envelope"), "{e}");
        assert!(Converter::Json { schemas: false }.read(Some(br#"{"order_time":1}"#)).is_ok());
    }
}
