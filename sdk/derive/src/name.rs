//! The rules for the two names an event carries: its topic name (the sidecar's rule) and its
//! versioned type name. Each check returns the message of the compile error it causes.

/// Checks a topic name against the sidecar's rule (`sidestream_proto::TopicName`, as in
/// Kafka): 1 to 249 characters of ASCII letters, digits, `.`, `_` and `-`, and not `.` or
/// `..`.
pub(crate) fn check_topic(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("`topic` must not be empty; {TOPIC_RULE}"));
    }
    if let Some((position, character)) = name.char_indices().find(|&(_, c)| !is_topic_char(c)) {
        return Err(format!(
            "topic `{name}` has `{}` at byte {position}; {TOPIC_RULE}",
            character.escape_debug()
        ));
    }
    if name.len() > MAX_TOPIC_LEN {
        return Err(format!(
            "topic name is {} characters long; {TOPIC_RULE}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("topic `{name}` is reserved; {TOPIC_RULE}"));
    }
    Ok(())
}

/// Checks a type name: non-empty, no whitespace or control characters, dot-separated
/// non-empty segments, the last of which is a version `v<N>` after at least one other.
pub(crate) fn check_type_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("`type_name` must not be empty; {TYPE_NAME_RULE}"));
    }
    if let Some(character) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        let what = if character.is_whitespace() {
            "whitespace"
        } else {
            "a control character"
        };
        return Err(format!(
            "type_name `{}` contains {what}; {TYPE_NAME_RULE}",
            name.escape_debug()
        ));
    }
    let Some((schema, version)) = name.rsplit_once('.').filter(|(_, v)| is_version(v)) else {
        if is_version(name) {
            return Err(format!(
                "type_name `{name}` is only a version; {TYPE_NAME_RULE}, e.g. \
                 `shop.OrderPlaced.{name}`"
            ));
        }
        return Err(format!(
            "type_name `{name}` does not end in a version segment `.v<N>`; {TYPE_NAME_RULE}, \
             e.g. `{}.v1`",
            name.trim_end_matches('.')
        ));
    };
    if schema.split('.').any(str::is_empty) {
        return Err(format!(
            "type_name `{name}` has an empty segment before `.{version}`; {TYPE_NAME_RULE}"
        ));
    }
    Ok(())
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// `v` followed by one or more ASCII digits.
fn is_version(segment: &str) -> bool {
    segment
        .strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

const MAX_TOPIC_LEN: usize = 249;

const TOPIC_RULE: &str = "a topic name has 1 to 249 characters of ASCII letters, digits, \
                          `.`, `_` and `-`, and is not `.` or `..`";

const TYPE_NAME_RULE: &str = "a type name is dot-separated, has no whitespace, and ends in a \
                              version segment `.v<N>` (bump N when the schema changes \
                              incompatibly)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for good in [
            "orders",
            "shop.orders-v1",
            "a_b",
            "...",
            "x".repeat(249).as_str(),
        ] {
            assert_eq!(check_topic(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "orders/eu",
            "caf\u{e9}",
            "a b",
            "x".repeat(250).as_str(),
        ] {
            assert!(check_topic(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topic_errors_name_the_character() {
        let message = check_topic("orders/eu").unwrap_err();
        assert!(
            message.starts_with("topic `orders/eu` has `/` at byte 6;"),
            "{message}"
        );
    }

    #[test]
    fn type_names() {
        for good in [
            "shop.OrderPlaced.v1",
            "a.v0",
            "OrderPlaced.v12",
            "shop-x.A_b.v3",
        ] {
            assert_eq!(check_type_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "v1",
            ".v1",
            "shop.OrderPlaced",
            "shop.OrderPlaced.v",
            "shop.OrderPlaced.v1x",
            "shop.OrderPlaced.V1",
            "shop..OrderPlaced.v1",
            "shop.Order Placed.v1",
            "shop.OrderPlaced.v1\n",
        ] {
            assert!(check_type_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_missing_version_suggests_one() {
        let message = check_type_name("shop.OrderPlaced").unwrap_err();
        assert!(message.contains("version segment `.v<N>`"), "{message}");
        assert!(message.ends_with("e.g. `shop.OrderPlaced.v1`"), "{message}");
    }

    mod proptests {
        use proptest::prelude::*;
        use sidestream_proto::TopicName;

        use super::super::check_topic;

        proptest! {
            #[test]
            fn topic_rule_is_the_sidecars(name in "[A-Za-z0-9._/ -]{0,260}|\\PC{0,8}") {
                prop_assert_eq!(check_topic(&name).is_ok(), name.parse::<TopicName>().is_ok());
            }
        }
    }
}
