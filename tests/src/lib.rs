//! Sidestream's multi-process integration and fault tests.
//!
//! This crate will hold one test binary per suite (`tests/<suite>/main.rs`): several real
//! sidecar processes on `127.0.0.x` ports, faults injected by killing processes and by an
//! in-process UDP fault proxy between peers, and a Jepsen-style checker (no acknowledged event
//! lost, no reordering within a partition, no duplicates with idempotence on).
//!
//! The suites arrive with the sidecar and replication issues; until then this crate is
//! intentionally empty. The partition log's own property, crash-consistency and openraft suite
//! tests live beside the code they test (`sidestream-log`, `sidestream-sidecar`).
