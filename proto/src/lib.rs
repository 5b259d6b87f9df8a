//! The Sidestream wire protocol, version 1: the messages a service's SDK and its node's
//! sidecar exchange over QUIC (ALPN [`ALPN`]), and the frame codec that carries them.
//!
//! The messages are defined in `proto/sidestream/v1/*.proto` (package `sidestream.v1`) and
//! generated into [`v1`] by prost-build, with protox as the protobuf compiler (no system
//! `protoc`). Fields of type `bytes` are [`bytes::Bytes`]: a record batch decoded from a frame
//! shares the frame's buffer, so the sidecar stores and serves it without copying or
//! re-encoding. `docs/PROTOCOL.md` describes every frame, message, field and error code.
//!
//! Each request has a QUIC bidirectional stream of its own: the client writes one
//! [`Request`] frame and the sidecar answers with one [`Response`] frame, except for a
//! subscription, where more `Response` frames follow on the same stream. Every response carries
//! a stable numeric [`ErrorCode`] and a human message.
//!
//! What this crate deliberately does not do: I/O, async, QUIC or TLS (the SDK and the sidecar
//! own their streams and feed the codec), and the record batch format itself, which batches
//! carry as opaque bytes (`sidestream-log` encodes and validates it; `docs/STORAGE.md` has it
//! byte by byte).
//!
//! Central types: [`Request`] and [`Response`] (the two frame messages), [`FrameCodec`] with
//! [`FrameError`], [`ErrorCode`] (helpers in [`error_code`]: [`Response::into_result`],
//! [`ResponseError`]) and [`TopicName`].
//!
//! ```
//! use bytes::BytesMut;
//! use sidestream_proto::v1::{Metadata, Request, request};
//! use sidestream_proto::FrameCodec;
//!
//! # fn main() -> Result<(), sidestream_proto::FrameError> {
//! let codec = FrameCodec::<Request>::default();
//! let request = Request {
//!     client_id: "order-service".into(),
//!     body: Some(request::Body::Metadata(Metadata {})),
//!     ..Request::default()
//! };
//! let mut wire = BytesMut::new();
//! codec.encode(&request, &mut wire)?; // u32 little-endian length, then the message
//!
//! // The reader gets the bytes in pieces; a partial frame decodes to `None`.
//! let mut received = wire.split_to(5);
//! assert_eq!(codec.decode(&mut received)?, None);
//! received.unsplit(wire);
//! assert_eq!(codec.decode(&mut received)?, Some(request));
//! assert!(received.is_empty());
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod error_code;
mod frame_chunks;
mod frame_codec;
mod topic_name;

#[cfg(test)]
mod tests;

pub use error_code::ResponseError;
pub use frame_codec::{DEFAULT_MAX_FRAME_SIZE, FRAME_HEADER_SIZE, FrameCodec, FrameError};
pub use topic_name::{MAX_TOPIC_NAME_LEN, TopicName, TopicNameError};
pub use v1::{ErrorCode, Request, Response};

/// The protocol's messages (package `sidestream.v1`), generated from
/// `proto/sidestream/v1/*.proto`.
#[allow(
    clippy::doc_markdown,
    reason = "prost-build's own doc comments on enum helpers say ProtoBuf without backticks"
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/sidestream.v1.rs"));
}

/// The peer protocol (package `sidestream.peer.v1`): what sidecars send each other, generated
/// from `proto/sidestream/peer/v1/*.proto`.
pub mod peer {
    /// Version 1 of the peer protocol: calls into a peer's Raft groups.
    #[allow(
        clippy::doc_markdown,
        reason = "prost-build's own doc comments on enum helpers say ProtoBuf without backticks"
    )]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/sidestream.peer.v1.rs"));
    }

    /// The ALPN protocol name two sidecars negotiate for this version.
    pub const ALPN: &[u8] = b"sidestream-peer/1";
}

/// The ALPN protocol name a client and a sidecar negotiate for this version.
pub const ALPN: &[u8] = b"sidestream/1";
