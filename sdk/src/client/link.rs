//! The client's one QUIC connection to its sidecar, reconnected lazily, and the
//! one-request-one-response exchange on a stream of its own.
//!
//! ```text
//!   call(body) ──▶ connection() ──(none or closed)──▶ reconnect: attempts with backoff
//!                       │                               until the caller's deadline
//!                       ▼
//!                  open_bi ─▶ Request frame, FIN ─▶ read one Response frame ─▶ into_result
//! ```
//!
//! Concurrency: any number of tasks call at once; each opens its own stream on the shared
//! connection. Reconnecting is single-flight: the first caller that finds the connection gone
//! reconnects under an async mutex, the others wait for it and then use the new connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt, WriteError};
use sidestream_proto::v1::{request, response};
use sidestream_proto::{ErrorCode, FrameCodec, Request, ResponseError};

use super::frame_reader::{FrameReader, connection_error, take_end};
use crate::Error;
use crate::error::TransportError;
use crate::transport::{ClientTls, QuicTuning, bind_endpoint};

/// How to reach the sidecar.
#[derive(Debug, Clone)]
pub(crate) struct LinkConfig {
    pub(crate) addr: SocketAddr,
    pub(crate) server_name: String,
    pub(crate) tls: ClientTls,
    pub(crate) tuning: QuicTuning,
    pub(crate) client_id: String,
    /// The longest the sidecar is given to answer one attempt of a request.
    pub(crate) answer_timeout: Duration,
    pub(crate) retry_backoff: Duration,
    pub(crate) max_retry_backoff: Duration,
}

/// Whether a request may be sent again after a retriable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryPolicy {
    /// Reads and other requests whose repetition changes nothing: retry every retriable
    /// failure.
    Idempotent,
    /// Requests that must not be applied twice (create, delete): retry only failures that
    /// show the sidecar did not act on it.
    NotApplied,
}

/// Why a request failed: refused by the sidecar (the caller adds the topic and partition to
/// the error), or failed on the way.
#[derive(Debug, Clone)]
pub(crate) enum CallError {
    Refused(ResponseError),
    Failed(Error),
}

impl CallError {
    pub(crate) fn is_retriable(&self) -> bool {
        match self {
            Self::Refused(refusal) => refusal.is_retriable(),
            Self::Failed(error) => error.is_retriable(),
        }
    }

    /// Whether the sidecar certainly did not act on the request.
    fn not_applied(&self) -> bool {
        match self {
            Self::Refused(refusal) => matches!(
                refusal.code(),
                Some(ErrorCode::Unavailable | ErrorCode::NotLeader | ErrorCode::LeaderNotAvailable)
            ),
            Self::Failed(error) => matches!(error, Error::Connect(_)),
        }
    }

    /// The error for the caller, naming `topic` and `partition` if a refusal concerned them.
    pub(crate) fn into_error(self, topic: Option<&str>, partition: Option<u32>) -> Error {
        match self {
            Self::Refused(refusal) => Error::from_response(&refusal, topic, partition),
            Self::Failed(error) => error,
        }
    }
}

pub(crate) struct Link {
    config: LinkConfig,
    endpoint: Endpoint,
    connection: Mutex<Option<Connection>>,
    reconnecting: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    codec: FrameCodec<Request>,
}

impl Link {
    /// Binds an endpoint and connects to the sidecar, one attempt within the tuning's
    /// handshake timeout.
    pub(crate) async fn connect(config: LinkConfig) -> Result<Self, Error> {
        let local: SocketAddr = match (config.addr.is_ipv4(), config.addr.ip().is_loopback()) {
            (true, true) => (std::net::Ipv4Addr::LOCALHOST, 0).into(),
            (true, false) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            (false, true) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
            (false, false) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let endpoint = bind_endpoint(local, None, &config.tuning)?;
        let connection = config
            .tls
            .connect(&endpoint, config.addr, &config.server_name, &config.tuning)
            .await?;
        tracing::debug!(addr = %config.addr, client = %config.client_id, "connected to the sidecar");
        Ok(Self {
            config,
            endpoint,
            connection: Mutex::new(Some(connection)),
            reconnecting: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            codec: FrameCodec::default(),
        })
    }

    /// The name this client gives in every request.
    pub(crate) fn client_id(&self) -> &str {
        &self.config.client_id
    }

    /// The sidecar's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.config.addr
    }

    /// The first retry backoff and the longest.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1_u32 << attempt.saturating_sub(1).min(16);
        self.config
            .retry_backoff
            .saturating_mul(factor)
            .min(self.config.max_retry_backoff)
    }

    /// Sends one request and reads its response: one attempt (with a reconnect if needed),
    /// bounded by `deadline`.
    ///
    /// Once the request is written, the sidecar gets at most the configured answer timeout
    /// to answer (a publish is told so in its `timeout_ms`, and then answers `TIMEOUT`
    /// itself), plus a fifth of it (at least 100 ms) for the answer to travel. No answer at
    /// all by then means the connection is dead without knowing it (a sidecar killed
    /// mid-request closes nothing): the connection is abandoned, so that the next attempt
    /// reconnects instead of waiting for QUIC's idle timeout. Waiting for stream credit or
    /// flow control before that is load, not death, and is bounded by `deadline` only.
    pub(crate) async fn call(
        &self,
        body: request::Body,
        deadline: Instant,
    ) -> Result<Option<response::Body>, CallError> {
        self.call_on(body, deadline, None)
            .await
            .map(|(answer, _)| answer)
    }

    /// The [`stable_id`](Connection::stable_id) of the live connection, if there is one.
    pub(crate) fn current_connection(&self) -> Option<usize> {
        self.live().map(|connection| connection.stable_id())
    }

    /// [`call`](Self::call), sent only on the connection `only_on` (when given): a request
    /// that would go on another connection fails with the retriable
    /// [`TransportError::Reconnected`] without being sent. Returns the answer and the id of
    /// the connection it came on.
    pub(crate) async fn call_on(
        &self,
        mut body: request::Body,
        deadline: Instant,
        only_on: Option<usize>,
    ) -> Result<(Option<response::Body>, usize), CallError> {
        let connection = self.connection(deadline).await.map_err(CallError::Failed)?;
        let connection_id = connection.stable_id();
        if only_on.is_some_and(|id| id != connection_id) {
            return Err(CallError::Failed(Error::Transport(
                TransportError::Reconnected,
            )));
        }
        let window = deadline
            .saturating_duration_since(Instant::now())
            .min(self.config.answer_timeout);
        let grace = (window / 5).max(MIN_ANSWER_GRACE);
        if let request::Body::Publish(publish) = &mut body {
            publish.timeout_ms = u32::try_from(window.as_millis()).unwrap_or(u32::MAX).max(1);
        }
        let timed_out = |after| {
            CallError::Failed(Error::Timeout {
                operation: "request to the sidecar".into(),
                after,
                last_error: None,
            })
        };
        let opening = Instant::now();
        let (mut send, mut recv) =
            match tokio::time::timeout_at(deadline.into(), self.open_on(&connection, body)).await {
                Ok(opened) => opened?,
                Err(_) => return Err(timed_out(deadline.saturating_duration_since(opening))),
            };
        // The sidecar answers even a request it cannot read, then stops reading: a refused
        // write is no reason to skip its answer.
        let _ = send.finish();
        let limit = Instant::now() + window + grace;
        let mut reader = FrameReader::default();
        let Ok(answer) = tokio::time::timeout_at(limit.into(), reader.next(&mut recv)).await else {
            // Only a full answer window without an answer says the connection is dead; a
            // window cut short by the request's deadline says nothing about it.
            if window >= self.config.answer_timeout {
                self.abandon(&connection);
            }
            return Err(timed_out(window + grace));
        };
        take_end(&mut recv);
        match answer.map_err(CallError::Failed)? {
            Some(response) => response
                .into_result()
                .map(|answer| (answer, connection_id))
                .map_err(CallError::Refused),
            None => Err(CallError::Failed(Error::Transport(
                TransportError::NoAnswer,
            ))),
        }
    }

    /// [`call`](Self::call), retried with exponential backoff after retriable failures that
    /// `policy` allows, until `deadline`.
    pub(crate) async fn call_retrying(
        &self,
        body: request::Body,
        deadline: Instant,
        policy: RetryPolicy,
    ) -> Result<Option<response::Body>, CallError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.call(body.clone(), deadline).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            let allowed = match policy {
                RetryPolicy::Idempotent => error.is_retriable(),
                RetryPolicy::NotApplied => error.not_applied(),
            };
            let wait = self.backoff(attempt);
            if !allowed || Instant::now() + wait >= deadline {
                return Err(error);
            }
            tracing::debug!(attempt, ?error, ?wait, "request failed, will retry");
            tokio::time::sleep(wait).await;
        }
    }

    /// Opens a stream and writes `body` as its request frame, without finishing the stream.
    pub(crate) async fn open(
        &self,
        body: request::Body,
        deadline: Instant,
    ) -> Result<(SendStream, RecvStream), CallError> {
        let connection = self.connection(deadline).await.map_err(CallError::Failed)?;
        self.open_on(&connection, body).await
    }

    async fn open_on(
        &self,
        connection: &Connection,
        body: request::Body,
    ) -> Result<(SendStream, RecvStream), CallError> {
        let (mut send, recv) = connection
            .open_bi()
            .await
            .map_err(|error| CallError::Failed(connection_error(error)))?;
        if matches!(body, request::Body::Publish(_)) {
            // Behind the other calls: streams go out in order (QuicTuning::send_fairness), and
            // a subscription's fetch or a commit must not wait for megabytes of batches.
            let _ = send.set_priority(PUBLISH_PRIORITY);
        }
        let request = Request {
            client_id: self.config.client_id.clone(),
            traceparent: String::new(),
            body: Some(body),
        };
        // A publish's batch goes out as its own chunk, not copied into the frame.
        let mut frame = self
            .codec
            .encode_chunks(&request)
            .map_err(|error| CallError::Failed(Error::Frame(error)))?;
        match send.write_all_chunks(&mut frame).await {
            Ok(()) | Err(WriteError::Stopped(_)) => Ok((send, recv)),
            Err(WriteError::ConnectionLost(error)) => {
                Err(CallError::Failed(connection_error(error)))
            }
            Err(WriteError::ClosedStream | WriteError::ZeroRttRejected) => Err(CallError::Failed(
                Error::Transport(TransportError::NoAnswer),
            )),
        }
    }

    /// The live connection, reconnecting (attempts with backoff until `deadline`) if it is
    /// gone.
    pub(crate) async fn connection(&self, deadline: Instant) -> Result<Connection, Error> {
        if let Some(connection) = self.live() {
            return Ok(connection);
        }
        let Ok(_single_flight) =
            tokio::time::timeout_at(deadline.into(), self.reconnecting.lock()).await
        else {
            return Err(Error::Timeout {
                operation: "reconnecting to the sidecar".into(),
                after: self.config.tuning.handshake_timeout,
                last_error: None,
            });
        };
        if let Some(connection) = self.live() {
            return Ok(connection);
        }
        let mut attempt = 0;
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            attempt += 1;
            tracing::debug!(addr = %self.config.addr, attempt, "reconnecting to the sidecar");
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut tuning = self.config.tuning.clone();
            tuning.handshake_timeout = tuning.handshake_timeout.min(remaining);
            let error = match self
                .config
                .tls
                .connect(
                    &self.endpoint,
                    self.config.addr,
                    &self.config.server_name,
                    &tuning,
                )
                .await
            {
                Ok(connection) => {
                    let mut slot = self.slot();
                    // A close that happened during the handshake wins.
                    if self.closed.load(Ordering::Acquire) {
                        drop(slot);
                        connection.close(VarInt::from_u32(0), b"client closed");
                        return Err(Error::Closed);
                    }
                    tracing::debug!(addr = %self.config.addr, attempt, "reconnected to the sidecar");
                    *slot = Some(connection.clone());
                    return Ok(connection);
                }
                Err(error) => error,
            };
            let wait = self.backoff(attempt);
            // Certificates refused now are refused on every attempt.
            if error.is_tls_refusal() || Instant::now() + wait >= deadline {
                tracing::debug!(addr = %self.config.addr, attempt, %error, "giving up reconnecting");
                return Err(error.into());
            }
            tracing::debug!(addr = %self.config.addr, attempt, %error, ?wait, "reconnect failed");
            tokio::time::sleep(wait).await;
        }
    }

    /// Gives up on `connection` if it is still the current one: it is closed, so that every
    /// request and subscription on it fails over to a new connection.
    fn abandon(&self, connection: &Connection) {
        let mut slot = self.slot();
        if slot
            .as_ref()
            .is_some_and(|current| current.stable_id() == connection.stable_id())
        {
            tracing::debug!(addr = %self.config.addr, "no answer from the sidecar, abandoning the connection");
            *slot = None;
            drop(slot);
            connection.close(VarInt::from_u32(ABANDON_CODE), b"no answer");
        }
    }

    /// Closes the connection (code 0) and waits, briefly, for the sidecar to learn of it.
    pub(crate) async fn close(&self) {
        let connection = {
            let mut slot = self.slot();
            self.closed.store(true, Ordering::Release);
            slot.take()
        };
        if let Some(connection) = connection {
            connection.close(VarInt::from_u32(0), b"client closed");
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, self.endpoint.wait_idle()).await;
    }

    /// Whether [`close`](Self::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn live(&self) -> Option<Connection> {
        self.slot()
            .as_ref()
            .filter(|connection| connection.close_reason().is_none())
            .cloned()
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("addr", &self.config.addr)
            .field("client_id", &self.config.client_id)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// How long `close` waits for the close to reach the sidecar.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The least time an answer is given to travel, beyond the attempt's window.
const MIN_ANSWER_GRACE: Duration = Duration::from_millis(100);

/// The close code of an abandoned connection: `TIMEOUT`.
const ABANDON_CODE: u32 = 32;

/// The send priority of a publish's stream, below the default (0) of every other call.
const PUBLISH_PRIORITY: i32 = -1;
