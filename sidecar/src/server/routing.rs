//! Passing a service's request on to the sidecar that can answer it (peer call `client`).
//!
//! A sidecar passes a request on at most once itself, and a request passed on once may be
//! passed on once more (a replica that does not lead passes a publish on to its leader):
//! [`MAX_PASSES`]. Where it would have to go further, the sidecar answers `NOT_LEADER`, and the
//! first sidecar, which follows leadership changes, tries again until the request's deadline.

use std::time::Duration;

use prost::Message;
use sidestream_proto::peer::v1::PeerErrorCode;
use sidestream_proto::v1::{ErrorCode, request};
use sidestream_proto::{Request, Response};
use tokio::time::Instant;

use crate::cluster::ClusterMember;

/// The most times a request is passed on between sidecars.
pub(super) const MAX_PASSES: u32 = 2;

/// How long a sidecar waits before it tries again to pass a request on (leadership moving, a
/// peer restarting).
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Whether a passed-on request long-polls.
enum BodyKind {
    Fetch,
    Other,
}

/// Why a request could not be passed on.
#[derive(Debug, thiserror::Error)]
pub(super) enum PassError {
    /// The peer could not be called, or did not answer before the deadline.
    #[error("{0}")]
    Unreachable(String),
    /// The peer answered, but not with a service's response.
    #[error("{0}")]
    Refused(String),
}

/// Passes `body` on to the sidecar at peer address `address`, as the `passes`-th pass; its
/// answer, by `deadline`.
pub(super) async fn pass_on(
    cluster: &ClusterMember,
    address: &str,
    body: request::Body,
    passes: u32,
    deadline: Instant,
) -> Result<Response, PassError> {
    let body_kind = if matches!(body, request::Body::Fetch(_)) {
        BodyKind::Fetch
    } else {
        BodyKind::Other
    };
    let request = Request {
        body: Some(body),
        ..Request::default()
    };
    // Only the first pass of a request that answers at once takes a permit: a nested pass
    // waiting for one held by its caller could wait for ever, and a relay's long-polling
    // fetch would hold one for seconds.
    let limited = passes == 1 && !matches!(body_kind, BodyKind::Fetch);
    let clients = cluster.clients();
    let call = async {
        let _permit = if limited {
            cluster.passing_permit().await
        } else {
            None
        };
        clients.pass_on(address, &request, passes).await
    };
    let response = tokio::time::timeout_at(deadline, call)
        .await
        .map_err(|_| PassError::Unreachable(format!("{address} did not answer in time")))?
        .map_err(|e| PassError::Unreachable(e.to_string()))?;
    if response.code != i32::from(PeerErrorCode::Ok) {
        return Err(PassError::Refused(format!(
            "{address} refused the request: {}",
            response.message
        )));
    }
    Response::decode(response.result)
        .map_err(|e| PassError::Refused(format!("{address} answered garbage: {e}")))
}

/// Whether a passed-on request's answer says to try again (elsewhere, or later).
pub(super) fn try_again(response: &Response) -> bool {
    matches!(
        ErrorCode::try_from(response.code),
        Ok(ErrorCode::NotLeader | ErrorCode::LeaderNotAvailable | ErrorCode::Unavailable)
    )
}
