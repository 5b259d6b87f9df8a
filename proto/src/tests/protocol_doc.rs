//! `docs/PROTOCOL.md` must describe exactly the messages, fields and enum values of the
//! `.proto` files: a section per message or enum, headed by its name in backticks, with a
//! table row per field (number, name, type) or per value (number, name). The error code
//! table also says which codes are retriable, and must agree with
//! [`ErrorCode::is_retriable`].

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};

use crate::v1::ErrorCode;

/// The descriptor set build.rs compiled the `.proto` files into.
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sidestream.v1.fds.bin"));

#[test]
fn protocol_md_matches_the_proto_files() {
    let doc = protocol_md();
    let mut problems = Vec::new();
    for (name, expected) in expected_rows() {
        let Some(rows) = section_rows(&doc, &name) else {
            problems.push(format!("no section headed \"`{name}`\""));
            continue;
        };
        if rows != expected {
            problems.push(format!(
                "section `{name}`:\n  missing {:?}\n  unexpected {:?}",
                expected.difference(&rows).collect::<Vec<_>>(),
                rows.difference(&expected).collect::<Vec<_>>(),
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/PROTOCOL.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn protocol_md_says_which_codes_are_retriable() {
    let doc = protocol_md();
    let mut seen = 0;
    for line in section_lines(&doc, "ErrorCode") {
        let cells = cells(line);
        let (Some(number), Some(retriable)) = (cells.first(), cells.get(2)) else {
            continue;
        };
        let Ok(number) = number.parse::<i32>() else {
            continue;
        };
        let code = ErrorCode::try_from(number).unwrap();
        let documented = match *retriable {
            "yes" => true,
            "no" => false,
            other => panic!("code {number}: retriable is {other:?}, not yes or no"),
        };
        assert_eq!(documented, code.is_retriable(), "code {number} ({code})");
        seen += 1;
    }
    assert_eq!(
        seen,
        (0..100).filter(|&n| ErrorCode::try_from(n).is_ok()).count()
    );
}

fn protocol_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    std::fs::read_to_string(path).unwrap()
}

/// For each message and enum, the rows its section must have: (number, name cell, type cell)
/// for a message field, (number, name cell, "") for an enum value.
fn expected_rows() -> BTreeMap<String, BTreeSet<Row>> {
    let set = FileDescriptorSet::decode(DESCRIPTORS).unwrap();
    let mut expected = BTreeMap::new();
    let packages = ["sidestream.v1", "sidestream.peer.v1"];
    for file in set.file.iter().filter(|f| packages.contains(&f.package())) {
        for message in &file.message_type {
            let rows = message
                .field
                .iter()
                .map(|field| {
                    (
                        field.number().to_string(),
                        format!("`{}`", field.name()),
                        type_cell(message, field),
                    )
                })
                .collect();
            expected.insert(message.name().to_owned(), rows);
        }
        for enumeration in &file.enum_type {
            let rows = enumeration
                .value
                .iter()
                .map(|value| {
                    let name = format!("`{}`", value.name());
                    (value.number().to_string(), name, String::new())
                })
                .collect();
            expected.insert(enumeration.name().to_owned(), rows);
        }
    }
    expected
}

type Row = (String, String, String);

/// How the Type cell shows a field: `` `uint64` ``, `` `optional int64` ``,
/// `` `repeated` [`Node`](#node) ``, `` [`Publish`](#publish), oneof `body` ``.
fn type_cell(message: &DescriptorProto, field: &FieldDescriptorProto) -> String {
    let base = match field.r#type() {
        Type::Message | Type::Enum => {
            let name = field.type_name().rsplit('.').next().unwrap_or_default();
            format!("[`{name}`](#{})", name.to_lowercase())
        }
        scalar => {
            let name = scalar
                .as_str_name()
                .trim_start_matches("TYPE_")
                .to_lowercase();
            format!("`{name}`")
        }
    };
    let linked = base.starts_with('[');
    if field.label() == Label::Repeated {
        return if linked {
            format!("`repeated` {base}")
        } else {
            format!("`repeated {}", &base[1..])
        };
    }
    if field.proto3_optional() {
        return format!("`optional {}", &base[1..]);
    }
    match field.oneof_index {
        Some(index) => {
            let oneof = message.oneof_decl[usize::try_from(index).unwrap()].name();
            format!("{base}, oneof `{oneof}`")
        }
        None => base,
    }
}

/// The rows of the section headed `` `name` ``: (number, name cell, type cell) for a
/// message, with an empty type cell for an enum (whose table has no Type column); `None` if
/// there is no such section.
fn section_rows(doc: &str, name: &str) -> Option<BTreeSet<Row>> {
    doc.lines()
        .any(|line| is_heading(line, name))
        .then_some(())?;
    let is_enum = section_lines(doc, name).any(|line| line.starts_with("| Number | Name |"));
    let rows = section_lines(doc, name)
        .filter_map(|line| {
            let cells = cells(line);
            let number = cells.first()?.parse::<i32>().ok()?;
            let type_cell = if is_enum { "" } else { cells.get(2)? };
            Some((
                number.to_string(),
                (*cells.get(1)?).to_owned(),
                type_cell.to_owned(),
            ))
        })
        .collect();
    Some(rows)
}

/// The lines of the section headed `` `name` ``, up to the next heading.
fn section_lines<'a>(doc: &'a str, name: &str) -> impl Iterator<Item = &'a str> {
    doc.lines()
        .skip_while(move |line| !is_heading(line, name))
        .skip(1)
        .take_while(|line| !line.starts_with('#'))
}

/// Whether `line` is a heading (of any level) that reads `` `name` ``.
fn is_heading(line: &str, name: &str) -> bool {
    let title = line.trim_start_matches('#');
    title.len() < line.len()
        && title
            .strip_prefix(" `")
            .and_then(|title| title.strip_suffix('`'))
            == Some(name)
}

/// The trimmed cells of a table row; empty for any other line.
fn cells(line: &str) -> Vec<&str> {
    line.strip_prefix('|')
        .and_then(|line| line.strip_suffix('|'))
        .map(|line| line.split(" | ").map(str::trim).collect())
        .unwrap_or_default()
}
