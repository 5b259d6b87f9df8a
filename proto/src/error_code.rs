//! The one place that maps between [`ErrorCode`] and Rust: names, which codes are worth a
//! retry, the codes of this crate's own errors, and building and reading error responses.

use std::fmt;

use crate::frame_codec::FrameError;
use crate::topic_name::TopicNameError;
use crate::v1::{ErrorCode, Response, response};

impl ErrorCode {
    /// Whether the same request may succeed if sent again later, unchanged.
    ///
    /// Retriable: a partition without a leader or on another node, a timeout, a sidecar that
    /// is busy or restarting, an idempotent producer's batch that overtook an earlier one, a
    /// storage failure (the partition may move or be reopened). A publish retried after
    /// [`Timeout`](Self::Timeout) may append the batch twice unless the producer is idempotent.
    pub fn is_retriable(self) -> bool {
        match self {
            Self::NotLeader
            | Self::LeaderNotAvailable
            | Self::Timeout
            | Self::Unavailable
            | Self::OutOfOrderSequence
            | Self::StorageError => true,
            Self::Ok
            | Self::MalformedFrame
            | Self::FrameTooLarge
            | Self::UnsupportedVersion
            | Self::InvalidRequest
            | Self::NotAuthorized
            | Self::UnknownTopic
            | Self::InvalidTopicName
            | Self::TopicAlreadyExists
            | Self::UnknownPartition
            | Self::InvalidTopicConfig
            | Self::OffsetOutOfRange
            | Self::CorruptBatch
            | Self::BatchTooLarge
            | Self::ProducerFenced
            | Self::UnknownGroup
            | Self::StaleGeneration
            | Self::InternalError => false,
        }
    }

    /// The code's name in lower snake case, as `Display` writes it: `unknown_topic`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::MalformedFrame => "malformed_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::UnsupportedVersion => "unsupported_version",
            Self::InvalidRequest => "invalid_request",
            Self::NotAuthorized => "not_authorized",
            Self::UnknownTopic => "unknown_topic",
            Self::InvalidTopicName => "invalid_topic_name",
            Self::TopicAlreadyExists => "topic_already_exists",
            Self::UnknownPartition => "unknown_partition",
            Self::InvalidTopicConfig => "invalid_topic_config",
            Self::OffsetOutOfRange => "offset_out_of_range",
            Self::CorruptBatch => "corrupt_batch",
            Self::BatchTooLarge => "batch_too_large",
            Self::OutOfOrderSequence => "out_of_order_sequence",
            Self::ProducerFenced => "producer_fenced",
            Self::NotLeader => "not_leader",
            Self::LeaderNotAvailable => "leader_not_available",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::UnknownGroup => "unknown_group",
            Self::StaleGeneration => "stale_generation",
            Self::StorageError => "storage_error",
            Self::InternalError => "internal_error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<&FrameError> for ErrorCode {
    fn from(error: &FrameError) -> Self {
        match error {
            FrameError::TooLarge { .. } => Self::FrameTooLarge,
            FrameError::Malformed(_) | FrameError::Truncated { .. } => Self::MalformedFrame,
        }
    }
}

impl From<&TopicNameError> for ErrorCode {
    fn from(_: &TopicNameError) -> Self {
        Self::InvalidTopicName
    }
}

impl Response {
    /// A successful response carrying `body`.
    pub fn ok(body: response::Body) -> Self {
        Self {
            code: ErrorCode::Ok.into(),
            message: String::new(),
            body: Some(body),
        }
    }

    /// An error response without a body. `message` should name what was wrong.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            body: None,
        }
    }

    /// The body of a successful response, or the error it carries.
    ///
    /// Use this rather than the generated `code()` accessor, which reads a code this version
    /// does not know as `OK`.
    ///
    /// # Errors
    ///
    /// [`ResponseError`] when the code is not `OK`, including codes unknown to this version.
    pub fn into_result(self) -> Result<Option<response::Body>, ResponseError> {
        if self.code == i32::from(ErrorCode::Ok) {
            Ok(self.body)
        } else {
            Err(ResponseError {
                code: self.code,
                message: self.message,
            })
        }
    }
}

impl From<&FrameError> for Response {
    /// The sidecar's answer to a request frame it could not read.
    fn from(error: &FrameError) -> Self {
        Self::error(error.into(), error.to_string())
    }
}

impl From<ResponseError> for Response {
    fn from(error: ResponseError) -> Self {
        Self {
            code: error.code,
            message: error.message,
            body: None,
        }
    }
}

/// A response whose code is not `OK`: the code and the sidecar's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", CodeDisplay(*.code))]
pub struct ResponseError {
    code: i32,
    message: String,
}

impl ResponseError {
    /// An error with a known code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The code, or `None` if this version does not know it.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::try_from(self.code).ok()
    }

    /// The code's number as it was on the wire.
    pub fn raw_code(&self) -> i32 {
        self.code
    }

    /// The sidecar's message, naming what was wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether sending the same request again later may succeed; `false` for unknown codes.
    pub fn is_retriable(&self) -> bool {
        self.code().is_some_and(ErrorCode::is_retriable)
    }
}

/// Writes a known code as its name and an unknown one as its number.
struct CodeDisplay(i32);

impl fmt::Display for CodeDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match ErrorCode::try_from(self.0) {
            Ok(code) => write!(f, "{code}"),
            Err(_) => write!(f, "error code {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::v1::ListTopicsResult;

    /// Every code with its number and name. The numbers are part of the protocol: a failure
    /// here means a code was renumbered, which must never happen.
    pub(crate) const CODES: [(ErrorCode, i32, &str); 24] = [
        (ErrorCode::Ok, 0, "OK"),
        (ErrorCode::MalformedFrame, 1, "MALFORMED_FRAME"),
        (ErrorCode::FrameTooLarge, 2, "FRAME_TOO_LARGE"),
        (ErrorCode::UnsupportedVersion, 3, "UNSUPPORTED_VERSION"),
        (ErrorCode::InvalidRequest, 4, "INVALID_REQUEST"),
        (ErrorCode::NotAuthorized, 5, "NOT_AUTHORIZED"),
        (ErrorCode::UnknownTopic, 10, "UNKNOWN_TOPIC"),
        (ErrorCode::InvalidTopicName, 11, "INVALID_TOPIC_NAME"),
        (ErrorCode::TopicAlreadyExists, 12, "TOPIC_ALREADY_EXISTS"),
        (ErrorCode::UnknownPartition, 13, "UNKNOWN_PARTITION"),
        (ErrorCode::InvalidTopicConfig, 14, "INVALID_TOPIC_CONFIG"),
        (ErrorCode::OffsetOutOfRange, 20, "OFFSET_OUT_OF_RANGE"),
        (ErrorCode::CorruptBatch, 21, "CORRUPT_BATCH"),
        (ErrorCode::BatchTooLarge, 22, "BATCH_TOO_LARGE"),
        (ErrorCode::OutOfOrderSequence, 23, "OUT_OF_ORDER_SEQUENCE"),
        (ErrorCode::ProducerFenced, 24, "PRODUCER_FENCED"),
        (ErrorCode::NotLeader, 30, "NOT_LEADER"),
        (ErrorCode::LeaderNotAvailable, 31, "LEADER_NOT_AVAILABLE"),
        (ErrorCode::Timeout, 32, "TIMEOUT"),
        (ErrorCode::Unavailable, 33, "UNAVAILABLE"),
        (ErrorCode::UnknownGroup, 40, "UNKNOWN_GROUP"),
        (ErrorCode::StaleGeneration, 41, "STALE_GENERATION"),
        (ErrorCode::StorageError, 50, "STORAGE_ERROR"),
        (ErrorCode::InternalError, 51, "INTERNAL_ERROR"),
    ];

    #[test]
    fn codes_keep_their_numbers_and_names() {
        for (code, number, name) in CODES {
            assert_eq!(code as i32, number, "{name} was renumbered");
            assert_eq!(code.as_str_name(), format!("ERROR_CODE_{name}"));
            assert_eq!(code.to_string(), name.to_lowercase());
        }
        let known = (0..=1000)
            .filter(|&n| ErrorCode::try_from(n).is_ok())
            .count();
        assert_eq!(known, CODES.len(), "a code is missing from this table");
    }

    #[test]
    fn names_are_unique() {
        let names: HashSet<_> = CODES.iter().map(|(code, ..)| code.name()).collect();
        assert_eq!(names.len(), CODES.len());
    }

    #[test]
    fn retriable_codes() {
        let retriable: Vec<_> = CODES
            .iter()
            .map(|(code, ..)| *code)
            .filter(|code| code.is_retriable())
            .collect();
        assert_eq!(
            retriable,
            [
                ErrorCode::OutOfOrderSequence,
                ErrorCode::NotLeader,
                ErrorCode::LeaderNotAvailable,
                ErrorCode::Timeout,
                ErrorCode::Unavailable,
                ErrorCode::StorageError,
            ]
        );
    }

    #[test]
    fn ok_response_yields_its_body() {
        let body = response::Body::ListTopics(ListTopicsResult::default());
        let response = Response::ok(body.clone());
        assert_eq!(response.into_result(), Ok(Some(body)));
    }

    #[test]
    fn error_response_yields_code_and_message() {
        let response = Response::error(ErrorCode::UnknownTopic, "no topic named \"orders\"");
        let err = response.clone().into_result().unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::UnknownTopic));
        assert_eq!(err.message(), "no topic named \"orders\"");
        assert!(!err.is_retriable());
        assert_eq!(err.to_string(), "unknown_topic: no topic named \"orders\"");
        assert_eq!(Response::from(err), response);
    }

    #[test]
    fn unknown_code_is_an_error_not_ok() {
        let response = Response {
            code: 999,
            message: "from the future".into(),
            body: None,
        };
        assert_eq!(
            response.code(),
            ErrorCode::Ok,
            "the generated accessor's pitfall"
        );
        let err = response.into_result().unwrap_err();
        assert_eq!((err.code(), err.raw_code()), (None, 999));
        assert!(!err.is_retriable());
        assert_eq!(err.to_string(), "error code 999: from the future");
    }

    #[test]
    fn frame_errors_map_to_codes() {
        let too_large = FrameError::TooLarge { size: 10, max: 5 };
        let response = Response::from(&too_large);
        assert_eq!(response.code(), ErrorCode::FrameTooLarge);
        assert_eq!(
            response.message,
            "frame of 10 bytes exceeds the limit of 5 bytes"
        );
        let truncated = FrameError::Truncated {
            expected: 4,
            received: 1,
        };
        assert_eq!(ErrorCode::from(&truncated), ErrorCode::MalformedFrame);
    }

    #[test]
    fn topic_name_errors_map_to_invalid_topic_name() {
        let err = "".parse::<crate::TopicName>().unwrap_err();
        assert_eq!(ErrorCode::from(&err), ErrorCode::InvalidTopicName);
    }
}
