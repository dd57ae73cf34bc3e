//! The JDBC sink into PostgreSQL: Kafka Connect's `JdbcSinkConnector` settings, records turned
//! into rows, and a batch written in one transaction.
//!
//! Each batch is one transaction of multi-row statements (`INSERT ... VALUES (...), (...)`, with
//! `ON CONFLICT ... DO UPDATE` for upserts): a round trip per thousand rows rather than per row.
//! Parameters take the types PostgreSQL infers from the table's columns (the statement is
//! prepared, and its parameter types read back), and each record's values are converted to
//! those: a value that does not fit its column is that record's fault, found before anything
//! is sent. When the database refuses a batch for one of its rows (a constraint), the batch is
//! written again row by row, each behind a savepoint, to find which.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use postgres::error::SqlState;
use postgres::types::{to_sql_checked, IsNull, Kind, ToSql, Type as PgType};
use serde_json::Value;

use crate::config::{ConfigError, ConnectorConfig};
use crate::converter::{self, Converter, Data, Schema, SchemaCache, Type};
use crate::postgres_url::Database;
use crate::task::{Record, Rejected, TaskError};

/// `insert.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertMode {
    /// `INSERT`: a record read twice is a row twice (or a key conflict).
    Insert,
    /// `INSERT ... ON CONFLICT (pk) DO UPDATE`: a record read twice is the same row.
    Upsert,
    /// `UPDATE ... WHERE pk`: rows must exist.
    Update,
}

/// `pk.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkMode {
    /// No key columns.
    None,
    /// The message's key: a struct's fields, or one column for a primitive.
    RecordKey,
    /// Fields of the value.
    RecordValue,
    /// The topic, partition and offset.
    Kafka,
}

/// The JDBC sink's settings.
#[derive(Debug, Clone)]
pub struct JdbcSettings {
    /// `connection.url` with `connection.user` and `connection.password`.
    pub database: Database,
    /// `table.name.format`, `${topic}` replaced by the topic.
    pub table_format: String,
    /// `table.name.normalize`: characters other than letters, digits and `_` become `_`.
    pub normalize: bool,
    /// `insert.mode`.
    pub insert_mode: InsertMode,
    /// `pk.mode`.
    pub pk_mode: PkMode,
    /// `pk.fields`.
    pub pk_fields: Vec<String>,
    /// `fields.whitelist`: only these value fields become columns (all when empty).
    pub fields: Vec<String>,
    /// `auto.create`.
    pub auto_create: bool,
    /// `auto.evolve`.
    pub auto_evolve: bool,
    /// `delete.enabled`: a null value deletes the key's row.
    pub delete_enabled: bool,
    /// `batch.size`: at most this many records per group fetch and per statement.
    pub batch_size: u32,
    /// `max.retries`: how often a batch is tried again after the database failed.
    pub max_retries: u32,
    /// `retry.backoff.ms`.
    pub retry_backoff: Duration,
    /// `key.converter`.
    pub key_converter: Converter,
    /// `value.converter`.
    pub value_converter: Converter,
}

impl JdbcSettings {
    /// Reads the JDBC sink's keys of `config`.
    ///
    /// # Errors
    /// A missing or bad key, named.
    pub fn from_config(config: &ConnectorConfig) -> Result<JdbcSettings, ConfigError> {
        let url = config.required("connection.url")?;
        let database =
            Database::parse(url, config.get("connection.user"), config.get("connection.password"))
                .map_err(|reason| config.error("connection.url", reason))?;
        let insert_mode =
            match config.choice("insert.mode", "insert", &["insert", "upsert", "update"])? {
                "upsert" => InsertMode::Upsert,
                "update" => InsertMode::Update,
                _ => InsertMode::Insert,
            };
        let pk_mode = match config.choice(
            "pk.mode",
            "none",
            &["none", "record_key", "record_value", "kafka"],
        )? {
            "record_key" => PkMode::RecordKey,
            "record_value" => PkMode::RecordValue,
            "kafka" => PkMode::Kafka,
            _ => PkMode::None,
        };
        if pk_mode == PkMode::None && insert_mode != InsertMode::Insert {
            return Err(config.error(
                "pk.mode",
                "none, but insert.mode upsert and update find rows by their key: set pk.mode \
                 and pk.fields",
            ));
        }
        let pk_fields = config.list("pk.fields");
        if pk_mode == PkMode::Kafka && !(pk_fields.is_empty() || pk_fields.len() == 3) {
            return Err(config.error(
                "pk.fields",
                "with pk.mode=kafka, three names (topic, partition, offset) or none",
            ));
        }
        let delete_enabled = config.boolean("delete.enabled", false)?;
        if delete_enabled && pk_mode != PkMode::RecordKey {
            return Err(config.error(
                "delete.enabled",
                "true needs pk.mode=record_key: a deletion carries only the key",
            ));
        }
        let value_converter =
            Converter::from_config(config, "value.converter", Converter::Json { schemas: true })?;
        if !matches!(value_converter, Converter::Json { .. }) {
            return Err(config.error(
                "value.converter",
                "the JDBC sink needs org.apache.kafka.connect.json.JsonConverter: a row is made \
                 of a value's fields",
            ));
        }
        let auto_create = config.boolean("auto.create", false)?;
        let auto_evolve = config.boolean("auto.evolve", false)?;
        if value_converter == (Converter::Json { schemas: false }) {
            for (key, on) in [("auto.create", auto_create), ("auto.evolve", auto_evolve)] {
                if on {
                    return Err(config.error(
                        key,
                        "true needs value.converter.schemas.enable=true: schemaless JSON gives \
                         no column types to create a table or column with (a JSON 1 may be a \
                         smallint or a bigint, a null anything), so create the table by hand",
                    ));
                }
            }
        }
        let key_converter =
            Converter::from_config(config, "key.converter", Converter::Json { schemas: true })?;
        let table_format = config.get("table.name.format").unwrap_or("${topic}").trim().to_owned();
        if table_format.is_empty() {
            return Err(config.error("table.name.format", "empty"));
        }
        Ok(JdbcSettings {
            database,
            table_format,
            normalize: config.boolean("table.name.normalize", false)?,
            insert_mode,
            pk_mode,
            pk_fields,
            fields: config.list("fields.whitelist"),
            auto_create,
            auto_evolve,
            delete_enabled,
            batch_size: config.number(
                "batch.size",
                3000,
                1..=u64::from(protocol::MAX_FETCH_MESSAGES),
            )? as u32,
            max_retries: config.number("max.retries", 10, 0..=1_000_000)? as u32,
            retry_backoff: Duration::from_millis(config.number(
                "retry.backoff.ms",
                3000,
                0..=3_600_000,
            )?),
            key_converter,
            value_converter,
        })
    }

    /// The table a topic's records go to: `table.name.format`, normalized if asked.
    pub fn table_for(&self, topic: &str) -> String {
        let name = self.table_format.replace("${topic}", topic);
        if self.normalize {
            name.chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
                .collect()
        } else {
            name
        }
    }
}

/// A value bound to a statement, converted to its column's type.
#[derive(Debug)]
enum Cell {
    Null,
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Text(String),
    Bytes(Vec<u8>),
    Json(Value),
    Timestamp(chrono::NaiveDateTime),
    TimestampTz(chrono::DateTime<chrono::Utc>),
    Date(chrono::NaiveDate),
    Array(Vec<Cell>),
}

impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &PgType,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Bool(v) => v.to_sql(ty, out),
            Cell::I16(v) => v.to_sql(ty, out),
            Cell::I32(v) => v.to_sql(ty, out),
            Cell::I64(v) => v.to_sql(ty, out),
            Cell::F32(v) => v.to_sql(ty, out),
            Cell::F64(v) => v.to_sql(ty, out),
            Cell::Text(v) => v.to_sql(ty, out),
            Cell::Bytes(v) => v.to_sql(ty, out),
            Cell::Json(v) => v.to_sql(ty, out),
            Cell::Timestamp(v) => v.to_sql(ty, out),
            Cell::TimestampTz(v) => v.to_sql(ty, out),
            Cell::Date(v) => v.to_sql(ty, out),
            Cell::Array(v) => v.to_sql(ty, out),
        }
    }

    // Each cell was made for the type it is bound to (`cell`).
    fn accepts(_: &PgType) -> bool {
        true
    }

    to_sql_checked!();
}

/// Converts `value` to a parameter of PostgreSQL type `ty`.
fn cell(value: &Value, ty: &PgType) -> Result<Cell, String> {
    if value.is_null() {
        return Ok(Cell::Null);
    }
    let wrong =
        || format!("{} does not fit a column of type {}", converter::describe(value), ty.name());
    let int =
        |min: i64, max: i64| value.as_i64().filter(|n| (min..=max).contains(n)).ok_or_else(wrong);
    Ok(match *ty {
        PgType::BOOL => Cell::Bool(value.as_bool().ok_or_else(wrong)?),
        PgType::INT2 => Cell::I16(int(i16::MIN.into(), i16::MAX.into())? as i16),
        PgType::INT4 => Cell::I32(int(i32::MIN.into(), i32::MAX.into())? as i32),
        PgType::INT8 => Cell::I64(int(i64::MIN, i64::MAX)?),
        PgType::FLOAT4 => Cell::F32(value.as_f64().ok_or_else(wrong)? as f32),
        PgType::FLOAT8 => Cell::F64(value.as_f64().ok_or_else(wrong)?),
        PgType::TEXT | PgType::VARCHAR | PgType::BPCHAR | PgType::NAME | PgType::UNKNOWN => {
            Cell::Text(value.as_str().ok_or_else(wrong)?.to_owned())
        }
        PgType::BYTEA => {
            let text = value.as_str().ok_or_else(wrong)?;
            Cell::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| "bytes must be base64 text".to_owned())?,
            )
        }
        PgType::JSON | PgType::JSONB => Cell::Json(value.clone()),
        PgType::TIMESTAMP => Cell::Timestamp(
            chrono::DateTime::from_timestamp_millis(int(i64::MIN, i64::MAX)?)
                .ok_or_else(wrong)?
                .naive_utc(),
        ),
        PgType::TIMESTAMPTZ => Cell::TimestampTz(
            chrono::DateTime::from_timestamp_millis(int(i64::MIN, i64::MAX)?).ok_or_else(wrong)?,
        ),
        PgType::DATE => {
            let days = int(i32::MIN.into(), i32::MAX.into())?;
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).ok_or_else(wrong)?;
            Cell::Date(epoch.checked_add_signed(chrono::TimeDelta::days(days)).ok_or_else(wrong)?)
        }
        _ => match ty.kind() {
            Kind::Array(member) if !matches!(member.kind(), Kind::Array(_)) => {
                let items = value.as_array().ok_or_else(wrong)?;
                Cell::Array(items.iter().map(|v| cell(v, member)).collect::<Result<_, _>>()?)
            }
            _ => return Err(format!("columns of type {} are not supported", ty.name())),
        },
    })
}

/// The PostgreSQL type `auto.create` and `auto.evolve` give a column of Connect schema `s`, as
/// the JDBC sink's PostgreSQL dialect does (maps and nested structs, which it cannot store,
/// become `JSONB`).
fn sql_type(s: &Schema) -> Result<String, String> {
    Ok(match (s.kind, s.name.as_deref()) {
        (Type::Int32, Some(converter::DATE)) => "DATE".into(),
        (Type::Int64, Some(converter::TIMESTAMP)) => "TIMESTAMP".into(),
        (Type::Int8 | Type::Int16, _) => "SMALLINT".into(),
        (Type::Int32, _) => "INT".into(),
        (Type::Int64, _) => "BIGINT".into(),
        (Type::Float32, _) => "REAL".into(),
        (Type::Float64, _) => "DOUBLE PRECISION".into(),
        (Type::Boolean, _) => "BOOLEAN".into(),
        (Type::String, _) => "TEXT".into(),
        (Type::Bytes, _) => "BYTEA".into(),
        (Type::Map | Type::Struct, _) => "JSONB".into(),
        (Type::Array, _) => {
            let items = s.items.as_deref().ok_or("an array without items")?;
            if matches!(items.kind, Type::Array | Type::Map | Type::Struct) {
                "JSONB".into()
            } else {
                format!("{}[]", sql_type(items)?)
            }
        }
    })
}

/// An identifier quoted for SQL (`quote.sql.identifiers=always`); a dotted table name is a
/// schema and a table.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A table name, quoted part by part.
fn quote_table(name: &str) -> String {
    name.split('.').map(quote).collect::<Vec<_>>().join(".")
}

/// One record made ready for its table.
struct Row {
    /// Its offset.
    offset: u64,
    /// Column names, key columns first.
    columns: Vec<String>,
    /// Their values, in the same order.
    values: Vec<Value>,
    /// Their schemas, when the record had one (for `auto.create` and `auto.evolve`).
    schemas: Vec<Option<Arc<Schema>>>,
    /// How many of the columns are the key.
    keys: usize,
    /// A deletion (a null value with `delete.enabled`): only the key columns.
    delete: bool,
}

/// Consecutive rows of one shape, their values converted, with their offsets: one `COPY` or
/// statement (or a few, within the parameter limit).
struct Shape<'a> {
    /// The first row, which shows the shape.
    row: &'a Row,
    /// The columns' types, in `row`'s column order.
    types: Vec<PgType>,
    /// Each row's values.
    cells: Vec<Vec<Cell>>,
    /// Each row's offset.
    offsets: Vec<u64>,
}

/// One step of a batch's transaction.
enum Step {
    /// A statement with its parameters; the offset of the (first) row it writes.
    Statement(postgres::Statement, Vec<Cell>, u64),
    /// `copy` (a `COPY ... FROM STDIN BINARY`) of `rows`, whose columns have `types`; then, for
    /// an upsert, `then` moves them from the stage table into the table.
    Copy {
        copy: String,
        types: Vec<PgType>,
        rows: Vec<Vec<Cell>>,
        then: Option<postgres::Statement>,
    },
}

/// The sink's connection and what it knows of the tables.
pub struct JdbcWriter {
    /// The settings.
    settings: JdbcSettings,
    /// The connection, made at the first batch and again after it broke.
    client: Option<postgres::Client>,
    /// Columns of each table seen (`None`: the table does not exist), by name.
    tables: HashMap<String, Option<Vec<String>>>,
    /// Prepared statements by their text.
    statements: HashMap<String, postgres::Statement>,
    /// The stage tables made on this connection (see [`JdbcWriter::stage`]).
    stages: std::collections::HashSet<String>,
    /// The schemas of the last key and value read.
    caches: Caches,
}

/// The schemas of the last key and value read, reused while messages carry the same.
#[derive(Debug, Default)]
struct Caches {
    /// Keys'.
    key: SchemaCache,
    /// Values'.
    value: SchemaCache,
}

/// At most this many statements are kept prepared; past it they are all dropped.
const MAX_STATEMENTS: usize = 256;

/// PostgreSQL's limit on a statement's parameters.
const MAX_PARAMS: usize = 65_535;

/// What went wrong with a batch.
enum Failure {
    /// The database went away or cannot be reached: try the whole batch again later.
    Connection(String),
    /// A statement was refused: some record's fault.
    Refused(String),
}

impl JdbcWriter {
    /// A writer with `settings`; it connects at its first batch.
    pub fn new(settings: JdbcSettings) -> JdbcWriter {
        JdbcWriter {
            settings,
            client: None,
            tables: HashMap::new(),
            statements: HashMap::new(),
            stages: std::collections::HashSet::new(),
            caches: Caches::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &JdbcSettings {
        &self.settings
    }

    /// Writes `records` of `topic` in one transaction. Records that cannot be written are
    /// returned as rejected when `tolerate` (all others are written), and end the batch with
    /// nothing written when not.
    ///
    /// # Errors
    /// [`TaskError::Retriable`] when the database could not be reached or broke off (nothing
    /// was committed); [`TaskError::Fatal`] for a record that cannot be written without
    /// `tolerate`.
    pub fn put(
        &mut self,
        topic: &str,
        records: &[Record],
        tolerate: bool,
    ) -> Result<Vec<Rejected>, TaskError> {
        let table = self.settings.table_for(topic);
        let mut rejected = Vec::new();
        let mut rows = Vec::with_capacity(records.len());
        let mut caches = std::mem::take(&mut self.caches);
        for record in records {
            match self.row(topic, record, &mut caches) {
                Ok(row) => rows.push(row),
                Err(reason) => rejected.push(Rejected { offset: record.offset, reason }),
            }
        }
        self.caches = caches;
        if !tolerate {
            if let Some(first) = rejected.first() {
                return Err(TaskError::Fatal(format!(
                    "offset {} of {topic}: {}",
                    first.offset, first.reason
                )));
            }
        }
        if self.client.as_ref().is_none_or(postgres::Client::is_closed) {
            self.statements.clear();
            self.stages.clear();
            self.client = Some(self.settings.database.connect().map_err(TaskError::Retriable)?);
        }
        // Tables and columns first (DDL commits on its own), then the rows in one transaction.
        let mut ready = Vec::with_capacity(rows.len());
        for row in rows {
            match self.ensure_table(&table, &row) {
                Ok(()) => ready.push(row),
                Err(Failure::Connection(e)) => return Err(self.broken(e)),
                Err(Failure::Refused(reason)) => {
                    rejected.push(Rejected { offset: row.offset, reason })
                }
            }
        }
        if !tolerate {
            if let Some(first) = rejected.first() {
                return Err(TaskError::Fatal(format!(
                    "offset {} of {topic}: {}",
                    first.offset, first.reason
                )));
            }
        }
        match self.write(&table, &ready, false) {
            Ok(bad) => {
                rejected.extend(bad);
                Ok(rejected)
            }
            Err(Failure::Connection(e)) => Err(self.broken(e)),
            Err(Failure::Refused(reason)) => {
                // Some row broke the batch: find which, row by row.
                match self.write(&table, &ready, true) {
                    Ok(bad) if tolerate => {
                        rejected.extend(bad);
                        Ok(rejected)
                    }
                    Ok(bad) => Err(TaskError::Fatal(match bad.first() {
                        Some(first) => {
                            format!("offset {} of {topic}: {}", first.offset, first.reason)
                        }
                        None => reason,
                    })),
                    Err(Failure::Connection(e)) => Err(self.broken(e)),
                    Err(Failure::Refused(reason)) => Err(TaskError::Fatal(reason)),
                }
            }
        }
    }

    /// Forgets a connection that broke, so that the next batch connects again.
    fn broken(&mut self, reason: String) -> TaskError {
        self.client = None;
        self.statements.clear();
        self.stages.clear();
        TaskError::Retriable(reason)
    }

    /// A record as a row of its table.
    fn row(&self, topic: &str, record: &Record, caches: &mut Caches) -> Result<Row, String> {
        let s = &self.settings;
        let value = s
            .value_converter
            .read_with(Some(&record.value), &mut caches.value)
            .map_err(|e| format!("value: {e}"))?;
        let mut row = Row {
            offset: record.offset,
            columns: Vec::new(),
            values: Vec::new(),
            schemas: Vec::new(),
            keys: 0,
            delete: false,
        };
        match s.pk_mode {
            PkMode::None => {}
            PkMode::Kafka => {
                let names = if s.pk_fields.len() == 3 {
                    s.pk_fields.clone()
                } else {
                    vec![
                        "__connect_topic".into(),
                        "__connect_partition".into(),
                        "__connect_offset".into(),
                    ]
                };
                let values = [Value::from(topic), Value::from(0), Value::from(record.offset)];
                let kinds = [Type::String, Type::Int32, Type::Int64];
                for ((name, value), kind) in names.into_iter().zip(values).zip(kinds) {
                    row.push(name, value, Some(Arc::new(Schema::primitive(kind))));
                }
            }
            PkMode::RecordKey => {
                let key = s
                    .key_converter
                    .read_with(record.key.as_deref(), &mut caches.key)
                    .map_err(|e| format!("key: {e}"))?;
                self.key_columns(&mut row, key)?;
            }
            PkMode::RecordValue => {}
        }
        row.keys = row.columns.len();
        if value.value.is_null() {
            if s.delete_enabled {
                row.delete = true;
                return Ok(row);
            }
            return Err("a null value (a tombstone), and delete.enabled is false".into());
        }
        let Data { schema, value } = value;
        let Value::Object(mut fields) = value else {
            return Err(format!(
                "the value is {}, not a struct: a row is made of a value's fields",
                converter::describe(&value)
            ));
        };
        let mut names: Vec<(String, Option<Arc<Schema>>)> = match &schema {
            Some(schema) if schema.kind == Type::Struct => {
                schema.fields.iter().map(|(n, s)| (n.clone(), Some(s.clone()))).collect()
            }
            Some(schema) => {
                return Err(format!("the value's schema is {}, not a struct", schema.kind.name()))
            }
            None => fields.keys().map(|n| (n.clone(), None)).collect(),
        };
        if !s.fields.is_empty() {
            names.retain(|(n, _)| s.fields.contains(n) || s.pk_fields.contains(n));
        }
        if s.pk_mode == PkMode::RecordValue {
            let keys: Vec<String> = if s.pk_fields.is_empty() {
                names.iter().map(|(n, _)| n.clone()).collect()
            } else {
                s.pk_fields.clone()
            };
            for key in &keys {
                let Some(position) = names.iter().position(|(n, _)| n == key) else {
                    return Err(format!("pk.fields names {key:?}, which the value does not have"));
                };
                let (name, schema) = names.remove(position);
                let value = fields.remove(&name).unwrap_or(Value::Null);
                if value.is_null() {
                    return Err(format!("key field {name:?} is null"));
                }
                row.push(name, value, schema);
            }
            row.keys = row.columns.len();
        }
        for (name, schema) in names {
            if row.columns.contains(&name) {
                continue;
            }
            let value = fields.remove(&name).unwrap_or(Value::Null);
            row.push(name, value, schema);
        }
        if row.columns.is_empty() {
            return Err("no fields to write".into());
        }
        Ok(row)
    }

    /// Adds the key's columns (`pk.mode=record_key`) to `row`.
    fn key_columns(&self, row: &mut Row, key: Data) -> Result<(), String> {
        let s = &self.settings;
        match key.value {
            Value::Null => Err("pk.mode is record_key, and the record has no key".into()),
            Value::Object(mut fields) => {
                let schemas: Vec<(String, Option<Arc<Schema>>)> = match &key.schema {
                    Some(schema) => {
                        schema.fields.iter().map(|(n, s)| (n.clone(), Some(s.clone()))).collect()
                    }
                    None => fields.keys().map(|n| (n.clone(), None)).collect(),
                };
                let wanted: Vec<String> = if s.pk_fields.is_empty() {
                    schemas.iter().map(|(n, _)| n.clone()).collect()
                } else {
                    s.pk_fields.clone()
                };
                for name in wanted {
                    let schema =
                        schemas.iter().find(|(n, _)| *n == name).and_then(|(_, s)| s.clone());
                    match fields.remove(&name) {
                        Some(v) if !v.is_null() => row.push(name, v, schema),
                        _ => return Err(format!("the key has no field {name:?} (pk.fields)")),
                    }
                }
                Ok(())
            }
            primitive => {
                let name = s.pk_fields.first().cloned().unwrap_or_else(|| "__connect_key".into());
                row.push(name, primitive, key.schema);
                Ok(())
            }
        }
    }

    /// Makes sure `table` exists with `row`'s columns, creating or altering it as allowed.
    fn ensure_table(&mut self, table: &str, row: &Row) -> Result<(), Failure> {
        let known = match self.tables.get(table) {
            Some(known) => known.clone(),
            None => {
                let found = self.columns_of(table)?;
                self.tables.insert(table.to_owned(), found.clone());
                found
            }
        };
        let Some(columns) = known else {
            if !self.settings.auto_create {
                return Err(Failure::Refused(format!(
                    "table {} does not exist, and auto.create is false",
                    quote_table(table)
                )));
            }
            let mut defs = Vec::new();
            for (i, name) in row.columns.iter().enumerate() {
                let Some(schema) = &row.schemas[i] else {
                    return Err(Failure::Refused(format!(
                        "no schema for column {name:?}: cannot create it"
                    )));
                };
                let ty = sql_type(schema).map_err(Failure::Refused)?;
                let null = if schema.optional && i >= row.keys { "NULL" } else { "NOT NULL" };
                defs.push(format!("{} {ty} {null}", quote(name)));
            }
            if row.keys > 0 {
                let keys: Vec<String> = row.columns[..row.keys].iter().map(|k| quote(k)).collect();
                defs.push(format!("PRIMARY KEY({})", keys.join(",")));
            }
            let sql =
                format!("CREATE TABLE IF NOT EXISTS {} ({})", quote_table(table), defs.join(", "));
            self.run(&sql)?;
            self.tables.remove(table);
            return self.ensure_table(table, row);
        };
        let missing: Vec<usize> =
            (0..row.columns.len()).filter(|i| !columns.contains(&row.columns[*i])).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if !self.settings.auto_evolve {
            let names: Vec<&str> = missing.iter().map(|i| row.columns[*i].as_str()).collect();
            return Err(Failure::Refused(format!(
                "table {} has no column {}, and auto.evolve is false",
                quote_table(table),
                names.join(", ")
            )));
        }
        for i in missing {
            let name = &row.columns[i];
            let Some(schema) = &row.schemas[i] else {
                return Err(Failure::Refused(format!(
                    "no schema for column {name:?}: cannot add it"
                )));
            };
            if !schema.optional && schema.default.is_none() {
                return Err(Failure::Refused(format!(
                    "cannot add column {name:?}: auto.evolve adds only optional fields (the table \
                     has rows without it)"
                )));
            }
            let sql = format!(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
                quote_table(table),
                quote(name),
                sql_type(schema).map_err(Failure::Refused)?
            );
            self.run(&sql)?;
        }
        self.tables.remove(table);
        Ok(())
    }

    /// Runs one statement on its own.
    fn run(&mut self, sql: &str) -> Result<(), Failure> {
        let client =
            self.client.as_mut().ok_or_else(|| Failure::Connection("not connected".into()))?;
        client.batch_execute(sql).map_err(failure)
    }

    /// The columns of `table`, `None` when there is no such table.
    fn columns_of(&mut self, table: &str) -> Result<Option<Vec<String>>, Failure> {
        let (schema, name) = match table.split_once('.') {
            Some((schema, name)) => (Some(schema), name),
            None => (None, table),
        };
        let client =
            self.client.as_mut().ok_or_else(|| Failure::Connection("not connected".into()))?;
        let rows = client
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2",
                &[&schema, &name],
            )
            .map_err(failure)?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(rows.iter().map(|r| r.get::<_, String>(0)).collect()))
    }

    /// A prepared statement for `sql`, from the cache or made now.
    fn prepare(&mut self, sql: &str) -> Result<postgres::Statement, Failure> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.clear();
        }
        let client =
            self.client.as_mut().ok_or_else(|| Failure::Connection("not connected".into()))?;
        let statement = client.prepare(sql).map_err(failure)?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// The statement for `count` rows like `row` into `table`.
    fn sql(&self, table: &str, row: &Row, count: usize) -> String {
        let table = quote_table(table);
        let columns: Vec<String> = row.columns.iter().map(|c| quote(c)).collect();
        let keys = &columns[..row.keys];
        let where_keys = |first: usize| {
            keys.iter()
                .enumerate()
                .map(|(i, k)| format!("{k} = ${}", first + i))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        if row.delete {
            return format!("DELETE FROM {table} WHERE {}", where_keys(1));
        }
        if self.settings.insert_mode == InsertMode::Update {
            let sets: Vec<String> = columns[row.keys..]
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c} = ${}", row.keys + i + 1))
                .collect();
            return format!("UPDATE {table} SET {} WHERE {}", sets.join(", "), where_keys(1));
        }
        let n = columns.len();
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(","));
        for r in 0..count {
            if r > 0 {
                sql.push(',');
            }
            sql.push('(');
            for c in 0..n {
                if c > 0 {
                    sql.push(',');
                }
                sql.push('$');
                sql.push_str(&(r * n + c + 1).to_string());
            }
            sql.push(')');
        }
        if self.settings.insert_mode == InsertMode::Upsert {
            sql.push_str(&self.on_conflict(row));
        }
        sql
    }

    /// Writes `rows` in one transaction: in multi-row statements, or one by one behind
    /// savepoints when `one_by_one` (then rows the database refuses are returned, the others
    /// committed). Rows whose values do not fit their columns are returned either way.
    fn write(
        &mut self,
        table: &str,
        rows: &[Row],
        one_by_one: bool,
    ) -> Result<Vec<Rejected>, Failure> {
        let mut rejected = Vec::new();
        // Consecutive rows of the same shape go in one statement.
        let mut groups: Vec<Shape<'_>> = Vec::new();
        // The parameter types of the one-row statement of the shape at hand, asked of the
        // database once per run of rows of one shape.
        let mut types: Vec<PgType> = Vec::new();
        let mut shape: Option<&Row> = None;
        for row in rows {
            if !shape.is_some_and(|s| s.same_shape(row)) {
                types = self.prepare(&self.sql(table, row, 1))?.params().to_vec();
                shape = Some(row);
            }
            let values = if row.delete { &row.values[..row.keys] } else { &row.values[..] };
            let converted: Result<Vec<Cell>, String> = values
                .iter()
                .zip(&row.columns)
                .enumerate()
                .map(|(i, (v, name))| {
                    let ty = param_type(&types, i, row, self.settings.insert_mode);
                    cell(v, &ty).map_err(|e| format!("column {name:?}: {e}"))
                })
                .collect();
            let cells = match converted {
                Ok(cells) => cells,
                Err(reason) => {
                    rejected.push(Rejected { offset: row.offset, reason });
                    continue;
                }
            };
            let same = groups.last().is_some_and(|last| last.row.same_shape(row));
            if same && !one_by_one {
                if let Some(last) = groups.last_mut() {
                    last.cells.push(cells);
                    last.offsets.push(row.offset);
                }
            } else {
                let types = (0..cells.len())
                    .map(|i| param_type(&types, i, row, self.settings.insert_mode))
                    .collect();
                groups.push(Shape { row, types, cells: vec![cells], offsets: vec![row.offset] });
            }
        }
        let upsert = self.settings.insert_mode == InsertMode::Upsert;
        let mut steps = Vec::new();
        for Shape { row, types, mut cells, offsets } in groups {
            let multi = !row.delete && self.settings.insert_mode != InsertMode::Update;
            if upsert && multi {
                // ON CONFLICT cannot touch a row twice in one statement: the last of a key wins.
                let mut last: HashMap<String, usize> = HashMap::new();
                for (i, c) in cells.iter().enumerate() {
                    last.insert(format!("{:?}", &c[..row.keys]), i);
                }
                if last.len() < cells.len() {
                    let keep: std::collections::HashSet<usize> = last.into_values().collect();
                    let mut i = 0;
                    cells.retain(|_| {
                        i += 1;
                        keep.contains(&(i - 1))
                    });
                }
            }
            if multi && !one_by_one {
                // The fast way: COPY, the database's own bulk load (straight into the table for
                // inserts, through a stage table for upserts). A row it refuses fails the whole
                // COPY, and the batch is then written again row by row.
                let columns = row.columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",");
                let (target, then) = if upsert {
                    let stage = self.stage(table, row)?;
                    let sql = format!(
                        "INSERT INTO {} ({columns}) SELECT {columns} FROM {stage}{}",
                        quote_table(table),
                        self.on_conflict(row)
                    );
                    (stage, Some(self.prepare(&sql)?))
                } else {
                    (quote_table(table), None)
                };
                let copy = format!("COPY {target} ({columns}) FROM STDIN BINARY");
                steps.push(Step::Copy { copy, types, rows: cells, then });
                continue;
            }
            let width = cells.first().map_or(1, Vec::len).max(1);
            let per = if multi {
                (MAX_PARAMS / width).min(self.settings.batch_size as usize).max(1)
            } else {
                1
            };
            let mut first_offset = offsets.first().copied().unwrap_or_default();
            let mut rest = cells;
            while !rest.is_empty() {
                let take = per.min(rest.len());
                let chunk: Vec<Vec<Cell>> = rest.drain(..take).collect();
                let sql = self.sql(table, row, chunk.len());
                let statement = self.prepare(&sql)?;
                let flat: Vec<Cell> =
                    if self.settings.insert_mode == InsertMode::Update && !row.delete {
                        chunk
                            .into_iter()
                            .flat_map(|mut c| {
                                let keys: Vec<Cell> = c.drain(..row.keys).collect();
                                c.extend(keys);
                                c
                            })
                            .collect()
                    } else {
                        chunk.into_iter().flatten().collect()
                    };
                steps.push(Step::Statement(statement, flat, first_offset));
                first_offset += take as u64;
            }
        }
        let client =
            self.client.as_mut().ok_or_else(|| Failure::Connection("not connected".into()))?;
        let mut tx = client.transaction().map_err(failure)?;
        for step in &steps {
            let (statement, cells, offset) = match step {
                Step::Copy { copy, types, rows, then } => {
                    copy_rows(&mut tx, copy, types, rows)?;
                    if let Some(then) = then {
                        tx.execute(then, &[]).map_err(failure)?;
                    }
                    continue;
                }
                Step::Statement(statement, cells, offset) => (statement, cells, offset),
            };
            let params: Vec<&(dyn ToSql + Sync)> =
                cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
            if one_by_one {
                tx.batch_execute("SAVEPOINT row").map_err(failure)?;
            }
            match tx.execute(statement, &params) {
                Ok(_) if one_by_one => {
                    tx.batch_execute("RELEASE SAVEPOINT row").map_err(failure)?
                }
                Ok(_) => {}
                Err(e) => match failure(e) {
                    Failure::Refused(reason) if one_by_one => {
                        tx.batch_execute("ROLLBACK TO SAVEPOINT row").map_err(failure)?;
                        rejected.push(Rejected { offset: *offset, reason });
                    }
                    other => return Err(other),
                },
            }
        }
        tx.commit().map_err(failure)?;
        Ok(rejected)
    }

    /// The `ON CONFLICT` clause of an upsert of `row`'s shape.
    fn on_conflict(&self, row: &Row) -> String {
        let columns: Vec<String> = row.columns.iter().map(|c| quote(c)).collect();
        let keys = columns[..row.keys].join(",");
        let updates: Vec<String> =
            columns[row.keys..].iter().map(|c| format!("{c} = EXCLUDED.{c}")).collect();
        if updates.is_empty() {
            format!(" ON CONFLICT ({keys}) DO NOTHING")
        } else {
            format!(" ON CONFLICT ({keys}) DO UPDATE SET {}", updates.join(", "))
        }
    }

    /// The stage table upserts of `row`'s shape into `table` are copied into: a temporary
    /// table of the same columns, emptied at each commit, made once per connection.
    fn stage(&mut self, table: &str, row: &Row) -> Result<String, Failure> {
        use std::hash::{Hash, Hasher};
        let mut hash = std::collections::hash_map::DefaultHasher::new();
        (table, &row.columns).hash(&mut hash);
        let stage = format!("connect_stage_{:016x}", hash.finish());
        if self.stages.insert(stage.clone()) {
            let columns = row.columns.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",");
            let sql = format!(
                "CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS \
                 SELECT {columns} FROM {} WITH NO DATA",
                quote_table(table)
            );
            if let Err(e) = self.run(&sql) {
                self.stages.remove(&stage);
                return Err(e);
            }
        }
        Ok(stage)
    }
}

/// Writes `rows` through `copy`, a `COPY ... FROM STDIN BINARY`.
fn copy_rows(
    tx: &mut postgres::Transaction<'_>,
    copy: &str,
    types: &[PgType],
    rows: &[Vec<Cell>],
) -> Result<(), Failure> {
    let writer = tx.copy_in(copy).map_err(failure)?;
    let mut writer = postgres::binary_copy::BinaryCopyInWriter::new(writer, types);
    for row in rows {
        let values: Vec<&(dyn ToSql + Sync)> =
            row.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        writer.write(&values).map_err(failure)?;
    }
    writer.finish().map_err(failure)?;
    Ok(())
}

/// The parameter type of value `i` of `row` in its one-row statement, whose parameters are in
/// statement order (`UPDATE` binds the other columns first, then the key).
fn param_type(types: &[PgType], i: usize, row: &Row, mode: InsertMode) -> PgType {
    let position = if mode == InsertMode::Update && !row.delete {
        let others = row.columns.len() - row.keys;
        if i < row.keys {
            others + i
        } else {
            i - row.keys
        }
    } else {
        i
    };
    types.get(position).cloned().unwrap_or(PgType::UNKNOWN)
}

impl Row {
    /// Whether `other` goes in the same statement as this row: the same columns and kind.
    fn same_shape(&self, other: &Row) -> bool {
        self.columns == other.columns && self.delete == other.delete && self.keys == other.keys
    }

    /// Adds a column.
    fn push(&mut self, name: String, value: Value, schema: Option<Arc<Schema>>) {
        self.columns.push(name);
        self.values.push(value);
        self.schemas.push(schema);
    }
}

/// Whether a database error is the connection's (try again) or a statement's (a record's).
fn failure(e: postgres::Error) -> Failure {
    let transient = match e.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2.min(code.code().len())];
            matches!(class, "08" | "53" | "57" | "58")
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
        }
    };
    if transient {
        Failure::Connection(explain(&e))
    } else {
        Failure::Refused(explain(&e))
    }
}

/// A database error in one line: the server's message and detail, or the client's error.
pub fn explain(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_owned(),
        },
        None => match e.source() {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> Result<JdbcSettings, ConfigError> {
        let text = format!(
            r#"{{"name": "s", "connector.class": "JdbcSinkConnector", "topics": "demo5-cod-and-chips",
            "connection.url": "jdbc:postgresql://h:5/db?sslmode=require", "connection.user": "u"{extra}}}"#
        );
        JdbcSettings::from_config(&ConnectorConfig::from_json(&text, "s.json").unwrap())
    }

    #[test]
    fn the_tutorials_table_name_is_normalized() {
        let s = settings(r#", "table.name.normalize": "true""#).unwrap();
        assert_eq!(s.table_for("demo5-cod-and-chips"), "demo5_cod_and_chips");
        let s = settings(r#", "table.name.format": "kafka_${topic}""#).unwrap();
        assert_eq!(s.table_for("t"), "kafka_t");
    }

    #[test]
    fn contradictions_are_refused_by_key() {
        let e = settings(r#", "insert.mode": "upsert""#).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("pk.mode"));
        let e = settings(r#", "value.converter.schemas.enable": "false", "auto.create": "true""#)
            .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("auto.create"));
        let e = settings(r#", "insert.mode": "sometimes""#).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("insert.mode"));
    }

    #[test]
    fn values_are_converted_to_their_columns_types() {
        assert!(matches!(cell(&Value::from(7), &PgType::INT8), Ok(Cell::I64(7))));
        assert!(cell(&Value::from(70000), &PgType::INT2).is_err());
        assert_eq!(
            cell(&Value::from("x"), &PgType::INT4).unwrap_err(),
            "string \"x\" does not fit a column of type int4"
        );
        assert!(matches!(
            cell(&serde_json::json!(["a", "b"]), &PgType::TEXT_ARRAY),
            Ok(Cell::Array(v)) if v.len() == 2
        ));
        assert!(cell(&serde_json::json!([1]), &PgType::TEXT_ARRAY).is_err());
    }

    #[test]
    fn connect_types_map_to_the_dialects_types() {
        let array =
            Schema::parse(&serde_json::json!({"type": "array", "items": {"type": "string"}}))
                .unwrap();
        assert_eq!(sql_type(&array).unwrap(), "TEXT[]");
        assert_eq!(sql_type(&Schema::primitive(Type::Int8)).unwrap(), "SMALLINT");
        assert_eq!(sql_type(&Schema::primitive(Type::Float64)).unwrap(), "DOUBLE PRECISION");
    }
}
