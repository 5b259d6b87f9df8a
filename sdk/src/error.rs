//! The SDK's error type, [`Error`], and the one place that maps the sidecar's error codes to
//! it ([`Error::from_response`]).
//!
//! Every variant names what was wrong: the topic, the partition and offset where one is
//! involved, and the sidecar's own message when the sidecar refused a request. `Error` is
//! `Clone` (sources that are not are behind an [`Arc`]) because one failure can answer many
//! callers: every event of a record batch gets the batch's error.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use sidestream_proto::{ErrorCode, FrameError, ResponseError};

use crate::transport::{BindError, ConnectError, TlsError};

/// Why an operation of the SDK failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The local QUIC endpoint could not be bound.
    #[error(transparent)]
    Bind(Arc<BindError>),
    /// The client was closed ([`Client::close`](crate::Client::close)), or the subscription
    /// was.
    #[error("the client is closed")]
    Closed,
    /// The QUIC connection to the sidecar could not be established.
    #[error(transparent)]
    Connect(Arc<ConnectError>),
    /// A record batch delivered by the sidecar is not valid (length, CRC or a record).
    #[error("topic {topic:?} partition {partition}: the sidecar delivered a corrupt record batch")]
    CorruptBatch {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// What is wrong with the batch.
        #[source]
        source: sidestream_log::batch::DecodeError,
    },
    /// An event's value could not be decoded as the subscribed type.
    #[error(
        "topic {topic:?} partition {partition} offset {offset}: value is not a valid {type_name}"
    )]
    Decode {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The event's offset.
        offset: u64,
        /// The type it was decoded as.
        type_name: &'static str,
        /// What prost found wrong.
        #[source]
        source: prost::DecodeError,
    },
    /// A record batch could not be built.
    #[error("cannot build a record batch for topic {topic:?}")]
    Encode {
        /// The topic.
        topic: String,
        /// Why.
        #[source]
        source: sidestream_log::batch::EncodeError,
    },
    /// An event is larger than the largest record batch the client sends.
    #[error("an event of topic {topic:?} takes {size} bytes in a record batch; at most {max} fit")]
    EventTooLarge {
        /// The topic.
        topic: String,
        /// Bytes the event takes in a batch, batch header included.
        size: usize,
        /// The limit: the largest batch the client sends (8 MiB, or less when
        /// `max_in_flight_bytes` is smaller).
        max: usize,
    },
    /// The sidecar's answer could not be read as a frame.
    #[error("cannot read the sidecar's answer")]
    Frame(#[source] FrameError),
    /// A setting or argument is not valid.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What is wrong with it.
        message: String,
    },
    /// A topic name breaks the naming rules.
    #[error("invalid topic name {topic:?}: {reason}")]
    InvalidTopicName {
        /// The name.
        topic: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// The sidecar's answer does not follow the protocol.
    #[error("the sidecar broke the protocol: {message}")]
    Protocol {
        /// What was wrong with the answer.
        message: String,
    },
    /// An event has no value (a tombstone of a compacted topic), so it cannot be decoded as
    /// the subscribed type.
    #[error("topic {topic:?} partition {partition} offset {offset}: the event has no value")]
    MissingValue {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The event's offset.
        offset: u64,
    },
    /// A subscription's position is no longer (or not yet) in the partition's log.
    #[error("{}offset out of range: {message}", Context(.topic.as_deref(), *.partition))]
    OffsetOutOfRange {
        /// The topic.
        topic: Option<String>,
        /// The partition, when the sidecar's answer concerned one.
        partition: Option<u32>,
        /// The sidecar's message.
        message: String,
    },
    /// The sidecar address could not be resolved.
    #[error("cannot resolve the sidecar address {addr:?}")]
    ResolveSidecar {
        /// The address as given.
        addr: String,
        /// Why.
        #[source]
        source: Arc<io::Error>,
    },
    /// The sidecar refused a request; a finer variant covers the common codes.
    #[error(
        "{}sidecar answered {}: {message}",
        Context(.topic.as_deref(), *.partition),
        CodeName(*.raw_code)
    )]
    Sidecar {
        /// The error code, or `None` if this SDK version does not know it.
        code: Option<ErrorCode>,
        /// The code's number on the wire.
        raw_code: i32,
        /// The sidecar's message, naming what was wrong.
        message: String,
        /// The topic of the request, if it concerned one.
        topic: Option<String>,
        /// The partition of the request, if it concerned one.
        partition: Option<u32>,
    },
    /// The operation did not complete in time, retries included.
    #[error("{operation} did not complete within {after:?}{}", LastError(.last_error.as_deref()))]
    Timeout {
        /// What timed out, e.g. `publish to "orders" partition 3`.
        operation: String,
        /// The time allowed.
        after: Duration,
        /// The last retriable error seen before the time ran out.
        last_error: Option<String>,
    },
    /// A publish whose outcome is unknown: it was sent but not acknowledged, and cannot be
    /// sent again without risking a second copy (an earlier batch of its partition failed).
    /// The event may or may not have been written.
    #[error("{operation}: {reason}")]
    OutcomeUnknown {
        /// What, e.g. `publish to "orders" partition 3`.
        operation: String,
        /// Why the outcome is unknown.
        reason: String,
    },
    /// The TLS configuration could not be built from its files.
    #[error(transparent)]
    Tls(Arc<TlsError>),
    /// No data directory to find the sidecar's dev certificates in.
    #[error(
        "no data directory for the dev certificates: set SIDESTREAM_DATA_DIR or HOME, \
         or give TLS files with ClientBuilder::tls"
    )]
    TlsDirUnknown,
    /// The topic already exists.
    #[error("topic {topic:?} already exists: {message}")]
    TopicAlreadyExists {
        /// The topic.
        topic: String,
        /// The sidecar's message.
        message: String,
    },
    /// The connection to the sidecar failed underneath a request.
    #[error("connection to the sidecar failed: {0}")]
    Transport(#[source] TransportError),
    /// An event on the topic has another type than the subscription's.
    #[error(
        "topic {topic:?} partition {partition} offset {offset}: event of type {} where {expected:?} was expected",
        FoundType(.found.as_deref())
    )]
    TypeMismatch {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The event's offset.
        offset: u64,
        /// The subscribed type, [`Event::TYPE_NAME`](crate::Event::TYPE_NAME).
        expected: &'static str,
        /// The event's `type` header; `None` when it has none.
        found: Option<String>,
    },
    /// The topic does not exist.
    #[error("unknown topic {topic:?}: {message}")]
    UnknownTopic {
        /// The topic.
        topic: String,
        /// The sidecar's message.
        message: String,
    },
    /// The topic has no such partition.
    #[error("topic {topic:?} has no partition {partition}: {message}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The sidecar's message.
        message: String,
    },
}

impl Error {
    /// Maps the sidecar's refusal of a request about `topic` (and `partition`) to an error.
    ///
    /// `UNKNOWN_TOPIC`, `UNKNOWN_PARTITION`, `TOPIC_ALREADY_EXISTS`, `INVALID_TOPIC_NAME` and
    /// `OFFSET_OUT_OF_RANGE` have variants of their own; every other code, including codes
    /// this version does not know, is [`Error::Sidecar`].
    pub fn from_response(
        error: &ResponseError,
        topic: Option<&str>,
        partition: Option<u32>,
    ) -> Self {
        let message = error.message().to_owned();
        let named = |topic: Option<&str>| topic.unwrap_or_default().to_owned();
        match (error.code(), partition) {
            (Some(ErrorCode::UnknownTopic), _) if topic.is_some() => Self::UnknownTopic {
                topic: named(topic),
                message,
            },
            (Some(ErrorCode::UnknownPartition), Some(partition)) if topic.is_some() => {
                Self::UnknownPartition {
                    topic: named(topic),
                    partition,
                    message,
                }
            }
            (Some(ErrorCode::TopicAlreadyExists), _) if topic.is_some() => {
                Self::TopicAlreadyExists {
                    topic: named(topic),
                    message,
                }
            }
            (Some(ErrorCode::InvalidTopicName), _) if topic.is_some() => Self::InvalidTopicName {
                topic: named(topic),
                reason: message,
            },
            (Some(ErrorCode::OffsetOutOfRange), _) => Self::OffsetOutOfRange {
                topic: topic.map(str::to_owned),
                partition,
                message,
            },
            (code, _) => Self::Sidecar {
                code,
                raw_code: error.raw_code(),
                message,
                topic: topic.map(str::to_owned),
                partition,
            },
        }
    }

    /// The sidecar's error code, for errors that carry one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Sidecar { code, .. } => *code,
            Self::UnknownTopic { .. } => Some(ErrorCode::UnknownTopic),
            Self::UnknownPartition { .. } => Some(ErrorCode::UnknownPartition),
            Self::TopicAlreadyExists { .. } => Some(ErrorCode::TopicAlreadyExists),
            Self::OffsetOutOfRange { .. } => Some(ErrorCode::OffsetOutOfRange),
            Self::Transport(TransportError::StreamReset { code }) => i32::try_from(*code)
                .ok()
                .and_then(|code| ErrorCode::try_from(code).ok()),
            _ => None,
        }
    }

    /// Whether the same operation may succeed if tried again later. The SDK retries these
    /// itself until its request timeout; an error that reaches the caller was either not
    /// retriable or ran out of time.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Sidecar { code, .. } => code.is_some_and(ErrorCode::is_retriable),
            Self::Transport(error) => error.is_retriable(),
            Self::Connect(error) => !error.is_tls_refusal(),
            Self::Timeout { .. } => true,
            _ => false,
        }
    }
}

impl From<BindError> for Error {
    fn from(error: BindError) -> Self {
        Self::Bind(Arc::new(error))
    }
}

impl From<ConnectError> for Error {
    fn from(error: ConnectError) -> Self {
        Self::Connect(Arc::new(error))
    }
}

impl From<TlsError> for Error {
    fn from(error: TlsError) -> Self {
        Self::Tls(Arc::new(error))
    }
}

/// How the QUIC connection or stream under a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The connection was lost or closed by the sidecar.
    #[error("connection lost")]
    ConnectionLost(#[source] quinn::ConnectionError),
    /// The stream ended before the sidecar's answer was complete.
    #[error("the stream ended without an answer")]
    NoAnswer,
    /// The connection was replaced before the request was sent: a request that may only be
    /// pipelined on the connection its predecessors went on is sent again, alone.
    #[error("the connection to the sidecar was replaced")]
    Reconnected,
    /// The sidecar reset the stream; `code` is an error code number.
    #[error("the sidecar reset the stream with code {}", CodeName(i32::try_from(*code).unwrap_or(i32::MAX)))]
    StreamReset {
        /// The QUIC application error code (the numbers of `ErrorCode`).
        code: u64,
    },
}

impl TransportError {
    /// Whether a new attempt may succeed: for a lost connection unless TLS refused it (the
    /// sidecar refused this client's certificate), always for a missing answer (the SDK
    /// reconnects, unless the client was closed), for a reset only when its code is a
    /// retriable one.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::ConnectionLost(error) => !crate::transport::is_tls_refusal(error),
            Self::NoAnswer | Self::Reconnected => true,
            Self::StreamReset { code } => i32::try_from(*code)
                .ok()
                .and_then(|code| ErrorCode::try_from(code).ok())
                .is_some_and(ErrorCode::is_retriable),
        }
    }
}

/// Writes ` topic "t" partition 3: ` for the parts that are known.
struct Context<'a>(Option<&'a str>, Option<u32>);

impl fmt::Display for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(topic), Some(partition)) => write!(f, "topic {topic:?} partition {partition}: "),
            (Some(topic), None) => write!(f, "topic {topic:?}: "),
            (None, Some(partition)) => write!(f, "partition {partition}: "),
            (None, None) => Ok(()),
        }
    }
}

/// Writes a known code by name and an unknown one by number.
struct CodeName(i32);

impl fmt::Display for CodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match ErrorCode::try_from(self.0) {
            Ok(code) => write!(f, "{code}"),
            Err(_) => write!(f, "error code {}", self.0),
        }
    }
}

struct FoundType<'a>(Option<&'a str>);

impl fmt::Display for FoundType<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(found) => write!(f, "{found:?}"),
            None => f.write_str("unknown (no type header)"),
        }
    }
}

struct LastError<'a>(Option<&'a str>);

impl fmt::Display for LastError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(last) => write!(f, " (last error: {last})"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(code: ErrorCode, message: &str) -> ResponseError {
        ResponseError::new(code, message)
    }

    #[test]
    fn common_codes_get_their_own_variants() {
        let err = Error::from_response(
            &refusal(ErrorCode::UnknownTopic, "no topic named \"orders\""),
            Some("orders"),
            Some(2),
        );
        assert!(matches!(&err, Error::UnknownTopic { topic, .. } if topic == "orders"));
        assert_eq!(
            err.to_string(),
            "unknown topic \"orders\": no topic named \"orders\""
        );
        assert_eq!(err.code(), Some(ErrorCode::UnknownTopic));

        let err = Error::from_response(
            &refusal(ErrorCode::UnknownPartition, "orders has 3 partitions"),
            Some("orders"),
            Some(7),
        );
        assert!(matches!(err, Error::UnknownPartition { partition: 7, .. }));

        let err = Error::from_response(
            &refusal(ErrorCode::TopicAlreadyExists, "exists"),
            Some("orders"),
            None,
        );
        assert!(matches!(err, Error::TopicAlreadyExists { .. }));

        let err = Error::from_response(
            &refusal(ErrorCode::InvalidTopicName, "has '/' at byte 6"),
            Some("orders/eu"),
            None,
        );
        assert_eq!(
            err.to_string(),
            "invalid topic name \"orders/eu\": has '/' at byte 6"
        );

        let err = Error::from_response(
            &refusal(
                ErrorCode::OffsetOutOfRange,
                "offset 5 is below the log start 9",
            ),
            Some("orders"),
            Some(1),
        );
        assert_eq!(
            err.to_string(),
            "topic \"orders\" partition 1: offset out of range: offset 5 is below the log start 9"
        );
    }

    #[test]
    fn other_codes_are_sidecar_errors_naming_topic_partition_and_message() {
        let err = Error::from_response(
            &refusal(
                ErrorCode::NotAuthorized,
                "dev-client may not produce to orders",
            ),
            Some("orders"),
            Some(0),
        );
        assert!(matches!(
            err,
            Error::Sidecar {
                code: Some(ErrorCode::NotAuthorized),
                raw_code: 5,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "topic \"orders\" partition 0: sidecar answered not_authorized: \
             dev-client may not produce to orders"
        );
        assert!(!err.is_retriable());

        let err = Error::from_response(&refusal(ErrorCode::Unavailable, "starting"), None, None);
        assert_eq!(err.to_string(), "sidecar answered unavailable: starting");
        assert!(err.is_retriable());
    }

    #[test]
    fn unknown_codes_keep_their_number_and_are_not_retriable() {
        let response = sidestream_proto::Response {
            code: 999,
            message: "from the future".into(),
            body: None,
        };
        let Err(refusal) = response.into_result() else {
            panic!("999 is an error");
        };
        let err = Error::from_response(&refusal, Some("t"), None);
        assert!(matches!(
            err,
            Error::Sidecar {
                code: None,
                raw_code: 999,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "topic \"t\": sidecar answered error code 999: from the future"
        );
        assert!(!err.is_retriable());
    }

    #[test]
    fn type_mismatch_names_both_types() {
        let err = Error::TypeMismatch {
            topic: "orders".into(),
            partition: 1,
            offset: 42,
            expected: "shop.OrderPlaced.v1",
            found: Some("shop.OrderCancelled.v1".into()),
        };
        assert_eq!(
            err.to_string(),
            "topic \"orders\" partition 1 offset 42: event of type \"shop.OrderCancelled.v1\" \
             where \"shop.OrderPlaced.v1\" was expected"
        );
        let err = Error::TypeMismatch {
            topic: "orders".into(),
            partition: 1,
            offset: 42,
            expected: "shop.OrderPlaced.v1",
            found: None,
        };
        assert!(err.to_string().contains("unknown (no type header)"));
    }

    #[test]
    fn transport_errors_are_retriable_except_final_codes() {
        let lost = TransportError::ConnectionLost(quinn::ConnectionError::TimedOut);
        assert!(lost.is_retriable());
        let abandoned = TransportError::ConnectionLost(quinn::ConnectionError::LocallyClosed);
        assert!(
            abandoned.is_retriable(),
            "reconnecting tells whether the client was closed"
        );
        // The sidecar refused this client's certificate (TLS alert 48, unknown CA).
        let refused = TransportError::ConnectionLost(quinn::ConnectionError::ConnectionClosed(
            quinn::ConnectionClose {
                error_code: quinn::TransportErrorCode::crypto(48),
                frame_type: None,
                reason: bytes::Bytes::from_static(b"invalid peer certificate: UnknownIssuer"),
            },
        ));
        assert!(!refused.is_retriable());
        let unavailable = TransportError::StreamReset {
            code: u64::try_from(i32::from(ErrorCode::Unavailable)).unwrap(),
        };
        assert!(unavailable.is_retriable());
        assert_eq!(
            unavailable.to_string(),
            "the sidecar reset the stream with code unavailable"
        );
        let malformed = TransportError::StreamReset { code: 1 };
        assert!(!malformed.is_retriable());
        assert_eq!(
            Error::Transport(malformed).code(),
            Some(ErrorCode::MalformedFrame)
        );
    }
}
