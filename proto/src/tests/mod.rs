//! Crate-level suites: property tests of the frame codec over every message, fixed frames
//! byte for byte, and `docs/PROTOCOL.md` checked against the `.proto` files.

mod golden;
mod proptests;
mod protocol_doc;
pub(crate) mod strategy;
