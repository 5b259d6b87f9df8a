//! The Sidestream wire protocol, version 1.
//!
//! This crate will hold the `.proto` files of the protocol spoken between a service's SDK and
//! its node's sidecar (and between sidecars), compiled by `prost-build` with `protox` in
//! `build.rs` (no system `protoc`), plus the length-delimited frame codec. It is a pure codec:
//! no I/O and no async.
//!
//! Record batches travel on the wire in exactly the byte format the partition log stores (see
//! `sidestream-log` and `docs/STORAGE.md`), carried as `bytes::Bytes` so that the sidecar never
//! re-encodes them.
//!
//! The messages and the codec arrive with the single-sidecar issue; until then this crate is
//! intentionally empty.
#![warn(missing_docs)]
