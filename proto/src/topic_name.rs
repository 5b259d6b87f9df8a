//! Topic names and their rules, as in Kafka: 1 to 249 characters of ASCII letters, digits,
//! `.`, `_` and `-`, and not `.` or `..` (names that would be confusing as directory names).

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

/// A valid topic name.
///
/// ```
/// use sidestream_proto::TopicName;
///
/// let name: TopicName = "shop.orders-v1".parse()?;
/// assert_eq!(name.as_str(), "shop.orders-v1");
/// assert!("orders/eu".parse::<TopicName>().is_err());
/// # Ok::<(), sidestream_proto::TopicNameError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicName(String);

impl TopicName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an owned string, as the messages carry it.
    pub fn into_string(self) -> String {
        self.0
    }

    /// Checks `name` against the rules.
    /// Checks `name` against the naming rules without copying it.
    pub fn check(name: &str) -> Result<(), TopicNameError> {
        Self::validate(name)
    }

    fn validate(name: &str) -> Result<(), TopicNameError> {
        if name.is_empty() {
            return Err(TopicNameError::Empty);
        }
        if name.len() > MAX_TOPIC_NAME_LEN {
            return Err(TopicNameError::TooLong { len: name.len() });
        }
        if name == "." || name == ".." {
            return Err(TopicNameError::Reserved {
                name: name.to_owned(),
            });
        }
        if let Some((position, character)) = name.char_indices().find(|&(_, c)| !is_allowed(c)) {
            return Err(TopicNameError::InvalidCharacter {
                name: name.to_owned(),
                character,
                position,
            });
        }
        Ok(())
    }
}

impl FromStr for TopicName {
    type Err = TopicNameError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::validate(name)?;
        Ok(Self(name.to_owned()))
    }
}

impl TryFrom<String> for TopicName {
    type Error = TopicNameError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::validate(&name)?;
        Ok(Self(name))
    }
}

impl From<TopicName> for String {
    fn from(name: TopicName) -> Self {
        name.0
    }
}

impl Deref for TopicName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a string is not a valid topic name. The sidecar answers it with `INVALID_TOPIC_NAME`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicNameError {
    /// The name is empty.
    #[error("topic name is empty")]
    Empty,
    /// The name is longer than 249 bytes (valid names are ASCII: one byte per character).
    #[error("topic name is {len} bytes long; at most {MAX_TOPIC_NAME_LEN} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name is `.` or `..`.
    #[error("topic name {name:?} is reserved")]
    Reserved {
        /// The name.
        name: String,
    },
    /// The name holds a character other than ASCII letters, digits, `.`, `_` and `-`.
    #[error(
        "topic name {name:?} has {character:?} at byte {position}; \
         only ASCII letters, digits, '.', '_' and '-' are allowed"
    )]
    InvalidCharacter {
        /// The name.
        name: String,
        /// The first character that is not allowed.
        character: char,
        /// Its byte position in the name.
        position: usize,
    },
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// The longest topic name, in characters (as in Kafka).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn accepts_names_within_the_rules() {
        for name in [
            "orders",
            "shop.OrderPlaced.v1",
            "a",
            "_",
            "-",
            "...",
            "a..b",
            "0-9_x",
        ] {
            let topic: TopicName = name.parse().unwrap();
            assert_eq!(topic.as_str(), name);
            assert_eq!(TopicName::try_from(name.to_owned()).unwrap(), topic);
        }
        let longest = "x".repeat(MAX_TOPIC_NAME_LEN);
        assert_eq!(longest.parse::<TopicName>().unwrap().len(), 249);
    }

    #[test]
    fn names_what_is_wrong() {
        let cases = [
            ("", "topic name is empty"),
            (".", "topic name \".\" is reserved"),
            ("..", "topic name \"..\" is reserved"),
            (
                "orders/eu",
                "topic name \"orders/eu\" has '/' at byte 6; \
                 only ASCII letters, digits, '.', '_' and '-' are allowed",
            ),
            (
                "café",
                "topic name \"café\" has 'é' at byte 3; \
                 only ASCII letters, digits, '.', '_' and '-' are allowed",
            ),
            (
                "two words",
                "topic name \"two words\" has ' ' at byte 3; \
                 only ASCII letters, digits, '.', '_' and '-' are allowed",
            ),
        ];
        for (name, message) in cases {
            assert_eq!(name.parse::<TopicName>().unwrap_err().to_string(), message);
        }
        let too_long = "x".repeat(MAX_TOPIC_NAME_LEN + 1);
        assert_eq!(
            too_long.parse::<TopicName>().unwrap_err(),
            TopicNameError::TooLong { len: 250 }
        );
    }

    proptest! {
        #[test]
        fn allowed_characters_make_valid_names(name in "[A-Za-z0-9._-]{1,249}") {
            prop_assume!(name != "." && name != "..");
            prop_assert_eq!(name.parse::<TopicName>().map(String::from), Ok(name));
        }

        #[test]
        fn any_string_is_accepted_exactly_when_it_follows_the_rules(name in any::<String>()) {
            let follows = (1..=249).contains(&name.len())
                && name != "."
                && name != ".."
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            prop_assert_eq!(name.parse::<TopicName>().is_ok(), follows);
        }
    }
}
