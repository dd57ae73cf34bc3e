//! Connector configurations in Kafka Connect's own formats: JSON (flat, or `{"name": ...,
//! "config": {...}}` as its REST API takes it) and `.properties`, checked whole before anything
//! runs, so that a bad file stops start-up naming the file and the key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// The largest config file or REST body read: a config is a few dozen keys.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A connector's settings as written: its name and every key with its value as a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorConfig {
    /// The connector's name (`name`): its consumer group is `connect-NAME`.
    pub name: String,
    /// Every key of the config, `name` included, values as strings (as Kafka Connect keeps them).
    pub props: BTreeMap<String, String>,
    /// Where it came from, for errors: a file's path or `the request`.
    pub origin: String,
}

/// A config that cannot be used: where, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file (or `the request`).
    pub origin: String,
    /// The key at fault, when one is.
    pub key: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: {key}: {}", self.origin, self.reason),
            None => write!(f, "{}: {}", self.origin, self.reason),
        }
    }
}

impl ConnectorConfig {
    /// Reads `path`: `.properties` as Java properties, anything else as JSON.
    ///
    /// # Errors
    /// The file cannot be read, is too large, or is not a config.
    pub fn read(path: &Path) -> Result<ConnectorConfig, ConfigError> {
        let origin = path.display().to_string();
        let fail = |reason: String| ConfigError { origin: origin.clone(), key: None, reason };
        let size = std::fs::metadata(path).map_err(|e| fail(format!("cannot read it: {e}")))?.len();
        if size > MAX_CONFIG_BYTES {
            return Err(fail(format!(
                "{size} bytes; a config may have at most {MAX_CONFIG_BYTES}"
            )));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        if path.extension().is_some_and(|e| e == "properties") {
            ConnectorConfig::from_properties(&text, &origin)
        } else {
            ConnectorConfig::from_json(&text, &origin)
        }
    }

    /// A config from JSON: a flat object of keys, or `{"name": ..., "config": {...}}`.
    /// Numbers and booleans are taken as their text, as Kafka Connect does.
    ///
    /// # Errors
    /// Not JSON, not an object, a value that is an object or list, or no name.
    pub fn from_json(text: &str, origin: &str) -> Result<ConnectorConfig, ConfigError> {
        let fail = |key: Option<&str>, reason: String| ConfigError {
            origin: origin.to_owned(),
            key: key.map(str::to_owned),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| fail(None, format!("not JSON: {e}")))?;
        let serde_json::Value::Object(mut top) = value else {
            return Err(fail(None, "expected a JSON object of config keys".into()));
        };
        let (outer_name, map) = match top.remove("config") {
            Some(serde_json::Value::Object(config)) => {
                let name = match top.remove("name") {
                    Some(serde_json::Value::String(name)) => Some(name),
                    None => None,
                    Some(_) => return Err(fail(Some("name"), "expected a string".into())),
                };
                (name, config)
            }
            Some(_) => {
                return Err(fail(Some("config"), "expected an object of config keys".into()))
            }
            None => (None, top),
        };
        let mut props = BTreeMap::new();
        for (key, value) in map {
            let text = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => continue,
                _ => return Err(fail(Some(&key), "expected a string, number or boolean".into())),
            };
            props.insert(key, text);
        }
        if let Some(name) = outer_name {
            match props.get("name") {
                Some(inner) if *inner != name => {
                    return Err(fail(
                        Some("name"),
                        format!("the config says {inner:?} and the outer name {name:?}"),
                    ))
                }
                _ => {
                    props.insert("name".into(), name);
                }
            }
        }
        ConnectorConfig::from_props(props, origin)
    }

    /// A config from Java properties: `key=value`, `key: value` or `key value`, `#` and `!`
    /// comments, a trailing backslash joining lines, and the usual escapes.
    ///
    /// # Errors
    /// No name.
    pub fn from_properties(text: &str, origin: &str) -> Result<ConnectorConfig, ConfigError> {
        let mut props = BTreeMap::new();
        let mut logical = String::new();
        for raw in text.lines() {
            let line = raw.trim_start();
            if logical.is_empty()
                && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
            {
                continue;
            }
            // An odd number of trailing backslashes continues the line.
            let trailing = line.len() - line.trim_end_matches('\\').len();
            if trailing % 2 == 1 {
                logical.push_str(&line[..line.len() - 1]);
                continue;
            }
            logical.push_str(line);
            let (key, value) = split_property(&logical);
            props.insert(key, value);
            logical.clear();
        }
        if !logical.is_empty() {
            let (key, value) = split_property(&logical);
            props.insert(key, value);
        }
        ConnectorConfig::from_props(props, origin)
    }

    /// A config from keys already split out (the REST API's `config` object).
    ///
    /// # Errors
    /// No name, or a name that cannot be a consumer group's.
    pub fn from_props(
        props: BTreeMap<String, String>,
        origin: &str,
    ) -> Result<ConnectorConfig, ConfigError> {
        let name = props.get("name").cloned().unwrap_or_default();
        let fail = |reason: String| ConfigError {
            origin: origin.to_owned(),
            key: Some("name".into()),
            reason,
        };
        if name.is_empty() {
            return Err(fail("missing: every connector needs a name".into()));
        }
        let group = group_name(&name);
        if let Err(e) = protocol::group::validate_group_name(&group) {
            return Err(fail(format!("its consumer group (connect-NAME) cannot be: {e}")));
        }
        Ok(ConnectorConfig { name, props, origin: origin.to_owned() })
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }

    /// An error about `key` in this config.
    pub fn error(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.origin.clone(),
            key: Some(key.to_owned()),
            reason: reason.into(),
        }
    }

    /// The value of `key`, which must be set.
    ///
    /// # Errors
    /// It is not.
    pub fn required(&self, key: &str) -> Result<&str, ConfigError> {
        match self.get(key) {
            Some(v) if !v.trim().is_empty() => Ok(v.trim()),
            _ => Err(self.error(key, "missing: this connector needs it")),
        }
    }

    /// `key` as a boolean (`true`/`false`, any case), `default` when unset.
    ///
    /// # Errors
    /// Anything else.
    pub fn boolean(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key).map(str::trim) {
            None | Some("") => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(self.error(key, format!("{v:?} is not true or false"))),
        }
    }

    /// `key` as a whole number within `range`, `default` when unset.
    ///
    /// # Errors
    /// Not a number, or outside the range.
    pub fn number(
        &self,
        key: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let Some(v) = self.get(key).map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(default);
        };
        match v.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(self.error(
                key,
                format!("{v:?}: expected a whole number from {} to {}", range.start(), range.end()),
            )),
        }
    }

    /// `key` as one of `choices` (compared without case), `default` when unset; returns the
    /// choice as written in `choices`.
    ///
    /// # Errors
    /// Anything else.
    pub fn choice(
        &self,
        key: &str,
        default: &'static str,
        choices: &[&'static str],
    ) -> Result<&'static str, ConfigError> {
        let Some(v) = self.get(key).map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(default);
        };
        choices.iter().find(|c| c.eq_ignore_ascii_case(v)).copied().ok_or_else(|| {
            self.error(key, format!("{v:?}: expected one of {}", choices.join(", ")))
        })
    }

    /// `key` as a comma-separated list, empty items dropped.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|v| {
                v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
            })
            .unwrap_or_default()
    }
}

/// The consumer group a sink connector named `name` reads as, as Kafka Connect names it.
pub fn group_name(name: &str) -> String {
    format!("connect-{name}")
}

/// Splits one logical properties line into its key and value, unescaped.
fn split_property(line: &str) -> (String, String) {
    let mut key = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    key.push(unescape(next));
                }
            }
            '=' | ':' => break,
            c if c.is_whitespace() => {
                // `key value`, or `key = value`.
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if chars.peek().is_some_and(|c| *c == '=' || *c == ':') {
                    chars.next();
                }
                break;
            }
            c => key.push(c),
        }
    }
    while chars.peek().is_some_and(|c| c.is_whitespace()) {
        chars.next();
    }
    let mut value = String::new();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                value.push(unescape(next));
            }
        } else {
            value.push(c);
        }
    }
    (key, value)
}

/// The character a properties escape `\c` stands for.
fn unescape(c: char) -> char {
    match c {
        't' => '\t',
        'n' => '\n',
        'r' => '\r',
        'f' => '\x0c',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_flat_and_nested_agree() {
        let flat = r#"{"name": "pg", "connector.class": "JdbcSink", "tasks.max": 1}"#;
        let nested =
            r#"{"name": "pg", "config": {"connector.class": "JdbcSink", "tasks.max": "1"}}"#;
        let a = ConnectorConfig::from_json(flat, "a.json").unwrap();
        let b = ConnectorConfig::from_json(nested, "b.json").unwrap();
        assert_eq!(a.props, b.props);
        assert_eq!(a.get("tasks.max"), Some("1"));
    }

    #[test]
    fn properties_are_read_as_java_reads_them() {
        let text = "# comment\nname=local-file-source\nconnector.class : FileStreamSource\n\
                    file = a\\\n  b.txt\ntopic connect-test\n! other\n";
        let c = ConnectorConfig::from_properties(text, "f.properties").unwrap();
        assert_eq!(c.name, "local-file-source");
        assert_eq!(c.get("connector.class"), Some("FileStreamSource"));
        assert_eq!(c.get("file"), Some("ab.txt"));
        assert_eq!(c.get("topic"), Some("connect-test"));
    }

    #[test]
    fn a_missing_name_names_the_file_and_key() {
        let e = ConnectorConfig::from_json(r#"{"topics": "t"}"#, "x.json").unwrap_err();
        assert_eq!(e.to_string(), "x.json: name: missing: every connector needs a name");
        let long = format!(r#"{{"name": "{}"}}"#, "x".repeat(245));
        let e = ConnectorConfig::from_json(&long, "x.json").unwrap_err();
        assert!(e.to_string().starts_with("x.json: name: "), "{e}");
        assert!(ConnectorConfig::from_json("[1]", "x.json").is_err());
    }
}
