//! PROTOCOL.md against the crate: every string, byte string and list a request carries has a
//! row in "Limits" naming its limit, the limits there are the crate's constants, and every
//! status code is in the table of codes and in the grammar.

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
