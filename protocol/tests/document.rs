//! PROTOCOL.md against the crate: every field of the codec's tables is in the document's
//! tables with the same type and the same requests or replies, and the reverse; the summary
//! table agrees with them and with the lines `request.rs` and `response.rs` quote from it;
//! every string, byte string and list a request carries has a row in "Limits" naming its
//! limit, the limits there are the crate's constants, and every status code is in the table
//! of codes and in the grammar.

use std::collections::BTreeMap;

use protocol::fields::{
    Field, RecordField, BROKER_RECORD, GROUP_RECORD, REPLY_FIELDS, REQUEST_FIELDS, TOPIC_RECORD,
};
use protocol::{
    ErrorCode, MAX_ACK_OFFSETS, MAX_APPEND_MESSAGES, MAX_CLIENT_NAME_BYTES, MAX_FETCH_BYTES,
    MAX_FETCH_MESSAGES, MAX_GROUP_NAME_BYTES, MAX_MAP_ENTRIES, MAX_TOPIC_NAME_BYTES, MAX_WAIT_MS,
};

const DOCUMENT: &str = include_str!("../PROTOCOL.md");

/// The text of the section whose heading starts with `heading`, up to the next `## `.
fn section(heading: &str) -> &'static str {
    let start = DOCUMENT.find(heading).unwrap_or_else(|| panic!("no section {heading:?}"));
    let body = &DOCUMENT[start + heading.len()..];
    &body[..body.find("\n## ").unwrap_or(body.len())]
}

/// The cells of a table row, trimmed.
fn cells(row: &str) -> Vec<&str> {
    row.trim().trim_matches('|').split(" | ").map(str::trim).collect()
}

/// The rows of every table under `header` in `text`, as cells.
fn rows_under<'a>(text: &'a str, header: &str) -> Vec<Vec<&'a str>> {
    let mut rows = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim() == header {
            inside = true;
        } else if inside && line.starts_with("| ---") {
            continue;
        } else if inside && line.starts_with('|') {
            rows.push(cells(line));
        } else {
            inside = false;
        }
    }
    rows
}

#[test]
fn every_string_and_list_of_every_request_has_a_documented_limit() {
    let limits = rows_under(section("## 9. Limits"), "| request | field | limit | beyond it |");
    assert!(!limits.is_empty(), "no table of request limits in section 9");
    let mut checked = 0;
    for part in section("## 6. Requests and replies").split("\n### `").skip(1) {
        let op = &part[..part.find('`').unwrap_or(0)];
        for row in rows_under(part, "| field | type | required / default | meaning |") {
            let (field, kind) = (row[0].trim_matches('`'), row[1]);
            if !(kind == "str" || kind == "bin" || kind.starts_with("list")) {
                continue;
            }
            let documented = limits.iter().any(|limit| {
                (limit[0].contains(&format!("`{op}`")) || limit[0] == "every request")
                    && limit[1].contains(&format!("`{field}`"))
            });
            assert!(documented, "section 9 gives no limit for `{field}` of `{op}`");
            checked += 1;
        }
    }
    // claim's client; topic in nine requests, group in five; start, to, messages, key,
    // value, offsets.
    assert!(checked >= 20, "only {checked} fields found in section 6");
}

#[test]
fn the_limits_in_the_document_are_the_crates() {
    let limits = section("## 9. Limits");
    let constants = [
        ("MAX_CLIENT_NAME_BYTES", MAX_CLIENT_NAME_BYTES as u64),
        ("MAX_TOPIC_NAME_BYTES", MAX_TOPIC_NAME_BYTES as u64),
        ("MAX_GROUP_NAME_BYTES", MAX_GROUP_NAME_BYTES as u64),
        ("MAX_APPEND_MESSAGES", MAX_APPEND_MESSAGES as u64),
        ("MAX_ACK_OFFSETS", MAX_ACK_OFFSETS as u64),
        ("MAX_FETCH_MESSAGES", MAX_FETCH_MESSAGES.into()),
        ("MAX_FETCH_BYTES", MAX_FETCH_BYTES.into()),
        ("MAX_WAIT_MS", MAX_WAIT_MS),
    ];
    for (name, value) in constants {
        let row = limits
            .lines()
            .find(|line| line.contains(&format!("`{name}`")))
            .unwrap_or_else(|| panic!("section 9 does not name {name}"));
        let numbers: Vec<u64> =
            row.split(|c: char| !c.is_ascii_digit()).filter_map(|word| word.parse().ok()).collect();
        assert!(numbers.contains(&value), "{name} is {value}, but its row says {row}");
    }
    assert!(
        section("## 4. Encoding").contains(&format!("at most {MAX_MAP_ENTRIES} entries")),
        "section 4 does not give the limit of a map's entries"
    );
}

#[test]
fn every_status_code_is_in_the_table_and_the_grammar() {
    let codes = section("## 8. Status codes");
    let grammar = section("## 5. Grammar of the conversation");
    let rule = |name: &str| {
        grammar
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("the grammar has no rule {name}"))
    };
    let (state, request) = (rule("state-error"), rule("request-error"));
    for code in ErrorCode::ALL {
        let row = format!("| {} | `{}` |", code.code(), code.name());
        assert!(codes.contains(&row), "section 8 has no row {row}");
        let rule = if code.is_transient() { state } else { request };
        assert!(rule.contains(&code.code().to_string()), "{} is not in {rule}", code.code());
    }
}

#[test]
fn the_short_session_line_has_the_group_requests() {
    let grammar = section("## 5. Grammar of the conversation");
    let start = grammar.find("; In short:  session").expect("the short session line");
    let short: String = grammar[start..].lines().take_while(|line| line.starts_with(';')).collect();
    for request in ["list-topics", "fetch", "renew", "join-group", "group-fetch", "release"] {
        assert!(short.contains(request), "the short session line lacks {request}: {short}");
    }
}

/// Which direction a field goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Direction {
    Request,
    Reply,
}

/// Where a field is carried: its direction, the request (`op`) or reply (`reply`) that
/// carries it, or `every`, and its name.
type Place = (Direction, String, String);

/// What a place says of its field: its type, and whether it is always there.
type Row = (String, bool);

/// The fields the crate's tables know, by place.
fn fields_in_code() -> BTreeMap<Place, Row> {
    let mut places = BTreeMap::new();
    for (direction, fields) in
        [(Direction::Request, REQUEST_FIELDS), (Direction::Reply, REPLY_FIELDS)]
    {
        for &Field { name, wire_type, required, optional } in fields {
            let carriers =
                required.iter().map(|m| (m, true)).chain(optional.iter().map(|m| (m, false)));
            for (message, always) in carriers {
                let place = (direction, message.to_string(), name.to_owned());
                let previous = places.insert(place, (wire_type.to_owned(), always));
                assert!(previous.is_none(), "{name} is carried twice by {message}");
            }
        }
    }
    places
}

/// The fields PROTOCOL.md's tables give, by place: the fields every frame carries (section
/// 4), each request's and each reply's table (section 6; the tables of the records inside
/// lists are not fields of a frame) and the error reply's (section 7).
fn fields_in_document() -> BTreeMap<Place, Row> {
    let mut places = BTreeMap::new();
    let mut add = |direction, message: &str, row: &[&str], always: bool| {
        let (name, kind) = (row[0].trim_matches('`'), row[1]);
        let place = (direction, message.to_owned(), name.to_owned());
        let previous = places.insert(place, (kind.to_owned(), always));
        assert!(previous.is_none(), "PROTOCOL.md gives `{name}` of {message} twice");
    };
    let frame = rows_under(section("## 4. Encoding"), "| frame | key | type | present | meaning |");
    assert!(!frame.is_empty(), "no table of the fields every frame carries in section 4");
    for row in &frame {
        let direction = if row[0] == "request" { Direction::Request } else { Direction::Reply };
        add(direction, "every", &row[1..], row[3] == "always");
    }
    for part in section("## 6. Requests and replies").split("\n### `").skip(1) {
        let op = &part[..part.find('`').unwrap_or(0)];
        // The line before a table says whose it is: "Reply `name`:", "... record:", or
        // nothing of the sort for the request's own.
        let mut lead = "";
        let mut table: Option<(Direction, String, bool)> = None;
        for line in part.lines() {
            let line = line.trim();
            if !line.starts_with('|') {
                table = None;
                if !line.is_empty() {
                    lead = line;
                }
                continue;
            }
            if line.starts_with("| ---") {
                continue;
            }
            if line.starts_with("| field |") {
                let reply = lead.rfind("Reply `").and_then(|at| {
                    let name = &lead[at + "Reply `".len()..];
                    name.strip_suffix("`:")
                });
                let with_presence =
                    line.contains("| required / default |") || line.contains("| present |");
                table = match reply {
                    _ if lead.ends_with("record:") => None,
                    Some(name) => Some((Direction::Reply, name.to_owned(), with_presence)),
                    None => Some((Direction::Request, op.to_owned(), with_presence)),
                };
                continue;
            }
            if let Some((direction, message, with_presence)) = &table {
                let row = cells(line);
                let always = !with_presence
                    || row[2] == "always"
                    || row[2] == "required"
                    || row[2].starts_with("required;");
                add(*direction, message, &row, always);
            }
        }
    }
    let errors = rows_under(section("## 7. Error replies"), "| field | type | present | meaning |");
    assert!(!errors.is_empty(), "no table of the error reply's fields in section 7");
    for row in &errors {
        add(Direction::Reply, "error", row, row[2] == "always");
    }
    places
}

#[test]
fn every_field_the_codec_knows_is_in_the_documents_tables_and_the_reverse() {
    let (code, document) = (fields_in_code(), fields_in_document());
    let mut drift = Vec::new();
    for (place, row) in &code {
        match document.get(place) {
            None => drift.push(format!("{place:?}: in the crate as {row:?}, not in PROTOCOL.md")),
            Some(documented) if documented != row => drift.push(format!(
                "{place:?}: the crate says {row:?} (type, always there), PROTOCOL.md {documented:?}"
            )),
            Some(_) => {}
        }
    }
    for (place, row) in &document {
        if !code.contains_key(place) {
            drift.push(format!("{place:?}: in PROTOCOL.md as {row:?}, not in the crate"));
        }
    }
    assert!(drift.is_empty(), "the field tables disagree:\n{}", drift.join("\n"));
    // v, op, reply and code; and at least one field of every request and reply but status.
    assert!(code.len() > 60, "only {} places checked", code.len());
}

/// The rows of the summary table: the request cell and the success reply cell.
fn summary() -> Vec<(&'static str, &'static str)> {
    let header = "| request | needs a claim | success reply | errors besides the common ones |";
    let rows = rows_under(section("### Summary"), header);
    assert!(rows.len() >= 14, "the summary table has {} rows", rows.len());
    rows.into_iter().map(|row| (row[0], row[2])).collect()
}

/// The fields a summary cell names after the message's name, optional ones in brackets.
fn summary_fields(spec: &str) -> (String, BTreeMap<String, bool>) {
    let mut words = spec.split_whitespace();
    let name = words.next().unwrap_or_default().to_owned();
    let fields = words
        .map(|word| match word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            Some(optional) => (optional.to_owned(), false),
            None => (word.to_owned(), true),
        })
        .collect();
    (name, fields)
}

#[test]
fn the_summary_table_names_each_messages_fields() {
    let code = fields_in_code();
    let carried = |direction, message: &str| -> BTreeMap<String, bool> {
        code.iter()
            .filter(|((d, m, _), _)| *d == direction && m == message)
            .map(|((_, _, field), (_, always))| (field.clone(), *always))
            .collect()
    };
    for (request, reply) in summary() {
        let spec = request.split('`').nth(1).expect("a request cell starts with `op fields`");
        let (op, fields) = summary_fields(spec);
        assert_eq!(fields, carried(Direction::Request, &op), "the summary's row of {op}");
        let (name, fields) = summary_fields(reply.trim_matches('`'));
        assert_eq!(fields, carried(Direction::Reply, &name), "the summary's reply {name}");
    }
}

/// The first paragraph of the doc comment of each variant of the enum in `source`, which
/// starts with the line the variant quotes from PROTOCOL.md.
fn variant_docs(source: &str) -> Vec<String> {
    let mut docs = Vec::new();
    let mut doc: Option<String> = None;
    for line in source.lines() {
        match (line.strip_prefix("    /// "), &mut doc) {
            (Some(text), Some(doc)) => {
                doc.push(' ');
                doc.push_str(text);
            }
            (Some(text), None) if text.starts_with('`') => doc = Some(text.to_owned()),
            _ => docs.extend(doc.take()),
        }
    }
    docs
}

#[test]
fn the_lines_the_variants_quote_are_the_summary_tables() {
    let requests = variant_docs(include_str!("../src/request.rs"));
    let replies = variant_docs(include_str!("../src/response.rs"));
    // A quote is the row's cell, then the end of the sentence, or more said after it.
    let quotes = |doc: &str, cell: &str| {
        doc.strip_prefix(cell).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    let mut drift = Vec::new();
    for (request, reply) in summary() {
        // The cell's first code span, `op fields`, finds the variant.
        let span = request.split('`').nth(1).unwrap_or_default();
        match requests.iter().find(|doc| doc.starts_with(&format!("`{span}`"))) {
            None => drift.push(format!("no variant of Request quotes {request}")),
            Some(doc) if !quotes(doc, request) => {
                drift.push(format!("Request quotes\n  {doc}\nits summary row says\n  {request}"))
            }
            Some(_) => {}
        }
        match replies.iter().find(|doc| doc.starts_with(reply)) {
            None => drift.push(format!("no variant of Response quotes {reply}")),
            Some(doc) if !(quotes(doc, reply) || doc[reply.len()..].starts_with(':')) => {
                drift.push(format!("Response quotes\n  {doc}\nits summary row says\n  {reply}"))
            }
            Some(_) => {}
        }
    }
    assert!(drift.is_empty(), "{}", drift.join("\n"));
}

#[test]
fn every_record_field_the_codec_knows_is_in_the_documents_tables_and_the_reverse() {
    let requests = section("## 6. Requests and replies");
    for (lead, fields) in [
        ("Broker record:", BROKER_RECORD),
        ("Topic record:", TOPIC_RECORD),
        ("Group record:", GROUP_RECORD),
    ] {
        let start = requests.find(&format!("\n{lead}\n")).unwrap_or_else(|| panic!("no {lead}"));
        let table: Vec<&str> = requests[start + lead.len() + 2..]
            .trim_start()
            .lines()
            .take_while(|line| line.starts_with('|'))
            .collect();
        let with_presence = table.first().is_some_and(|header| header.contains("| present |"));
        let documented: BTreeMap<&str, (&str, bool)> = table
            .iter()
            .skip(2)
            .map(|line| {
                let row = cells(line);
                (row[0].trim_matches('`'), (row[1], !with_presence || row[2] == "always"))
            })
            .collect();
        let known: BTreeMap<&str, (&str, bool)> = fields
            .iter()
            .map(|&RecordField { name, wire_type, always }| (name, (wire_type, always)))
            .collect();
        assert_eq!(known, documented, "{lead} the crate's (left) against PROTOCOL.md's");
    }
}
