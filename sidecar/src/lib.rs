//! The Sidestream sidecar.
