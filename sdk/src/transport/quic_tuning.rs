use std::sync::Arc;
use std::time::Duration;

use quinn::congestion::CubicConfig;
use quinn::{AckFrequencyConfig, EndpointConfig, IdleTimeout, TransportConfig, VarInt};

/// QUIC transport settings shared by the SDK and the sidecar, so that both ends of a
/// connection agree.
///
/// The defaults follow DESIGN.md's measurements: windows large enough for many record batches
/// in flight (a frame is at most 16 MiB + 64 KiB), many concurrent request streams, UDP socket
/// buffers of 8 MiB and, on loopback, a fixed MTU of 6500 with MTU discovery off (1452 → 6500
/// took loopback throughput from 0.8 to 1.8 GB/s). Each end asks its peer to acknowledge within
/// [`peer_max_ack_delay`](Self::peer_max_ack_delay) (QUIC's ACK frequency extension).
///
/// ```
/// use sidestream::transport::QuicTuning;
///
/// let tuning = QuicTuning::default();
/// let _server = tuning.server_transport(true); // loopback: MTU 6500, no MTU discovery
/// let _client = tuning.client_transport(false); // other addresses: quinn's MTU discovery
/// let _endpoint = tuning.endpoint_config(true); // loopback: accepts 6500-byte payloads
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicTuning {
    /// Bytes one stream may have in flight towards the receiver (its flow-control window).
    pub stream_receive_window: u32,
    /// Bytes all streams of a connection together may have in flight towards the receiver.
    pub receive_window: u32,
    /// Bytes the sender buffers unacknowledged across all streams of a connection.
    pub send_window: u64,
    /// Request streams a client may have open at once on one connection (the sidecar's
    /// limit; the client accepts no streams, since the sidecar opens none).
    pub max_concurrent_bidi_streams: u32,
    /// How often to send a keep-alive when nothing else is sent; `None` for never.
    pub keep_alive_interval: Option<Duration>,
    /// How long a silent connection lives before it is closed; `None` for forever.
    pub idle_timeout: Option<Duration>,
    /// How long a client waits for the handshake to complete.
    pub handshake_timeout: Duration,
    /// Requested size of the UDP socket's receive and send buffers (`SO_RCVBUF`,
    /// `SO_SNDBUF`). The kernel may grant less (Linux caps at `net.core.rmem_max` and
    /// `net.core.wmem_max`).
    pub socket_buffer_size: usize,
    /// Settings applied only on loopback addresses; `None` treats loopback like any network.
    pub loopback: Option<LoopbackTuning>,
    /// The longest the peer may hold back an acknowledgement (QUIC's 25 ms by default), asked
    /// of it through the ACK frequency extension; `None` leaves the peer's own.
    ///
    /// Requests and answers are small and one packet each, so an answer is often the last
    /// packet for a while: with 25 ms its ACK came late, and the sender's congestion window
    /// and buffers waited for it (1 ms: end-to-end p99 74 → 18 ms and publishing 18 % faster
    /// in `sidestream bench … --embedded`).
    pub peer_max_ack_delay: Option<Duration>,
    /// Whether a client's streams of the same priority share the connection in turns
    /// (quinn's default) rather than going out in the order they were written. The sidecar's
    /// own sends (answers, subscriptions' deliveries, calls between sidecars) always share in
    /// turns, so that no stream of them holds back the others.
    ///
    /// Off by default: every request is its own stream, and a publish's batch is up to 16 MiB.
    /// In turns, the batches in flight all arrived piecemeal and each one whole only late;
    /// in order, each arrives whole as soon as it can, in fewer, larger stream frames
    /// (publishing 1000-event calls in `sidestream bench … --embedded`: 2.89 → 3.24 M events/s,
    /// medians of 5 runs taken in turn; single publishes, catch-up and one-in-flight latency
    /// unchanged). Small requests are not queued behind batches: the SDK sends publishes at a
    /// lower stream priority than its other calls.
    pub send_fairness: bool,
    /// How long an endpoint spins on its UDP socket for the first datagram back after a
    /// send, before it waits on the reactor; zero never spins, and more than 1 ms counts as
    /// 1 ms.
    ///
    /// A thread that waits lets its CPU idle, and on a virtual machine whose idle vCPUs halt,
    /// waking one for the answer went through the host and cost more than the round trip
    /// itself. With 50 µs at both ends, one publish at a time to a sidecar in another process
    /// (`sidestream bench produce --in-flight 1`) went from p50 103–112 µs to 19–21 µs, and
    /// the client's CPU time per publish from 50–56 µs to 25–27 µs: a spin costs less than a
    /// halt and a wake-up (docs/OPERATIONS.md, "Benchmarks"). Batched publishing and catch-up
    /// were level. Spins back off when they see nothing: after four in a row the next send
    /// does not spin, after five the next 3, and so on up to 1023, so an endpoint whose peers
    /// are quiet or distant costs next to nothing.
    ///
    /// The spin holds its runtime thread, hence the short default. On a single-threaded
    /// runtime that also runs the sidecar (a test's), an answer cannot come during a spin;
    /// such spins miss until they back off.
    pub busy_poll: Duration,
}

impl QuicTuning {
    /// The endpoint settings for a socket bound to a loopback address (`loopback`) or not.
    ///
    /// On loopback with [`LoopbackTuning`], the endpoint accepts UDP payloads of the loopback
    /// MTU (quinn's default is 1472, which would cap the peer's packets); elsewhere quinn's
    /// defaults apply.
    pub fn endpoint_config(&self, loopback: bool) -> EndpointConfig {
        let mut config = EndpointConfig::default();
        if let Some(tuning) = self.loopback.filter(|_| loopback) {
            // Clamped into quinn's bounds, so this cannot fail.
            let _ = config.max_udp_payload_size(tuning.mtu.clamp(1200, 65_527));
        }
        config
    }

    /// The sidecar's transport settings (also both ends of a connection between sidecars);
    /// `loopback` says whether it serves a loopback address. Its streams of the same priority
    /// share the connection in turns.
    pub fn server_transport(&self, loopback: bool) -> TransportConfig {
        let mut transport = self.common(loopback);
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_bidi_streams))
            .send_fairness(true);
        transport
    }

    /// A client's transport settings; `loopback` says whether it connects to a loopback
    /// address.
    pub fn client_transport(&self, loopback: bool) -> TransportConfig {
        let mut transport = self.common(loopback);
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(0))
            .send_fairness(self.send_fairness);
        transport
    }

    fn common(&self, loopback: bool) -> TransportConfig {
        let mut transport = TransportConfig::default();
        transport
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(self.receive_window))
            .send_window(self.send_window)
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .datagram_receive_buffer_size(None)
            .keep_alive_interval(self.keep_alive_interval)
            .max_idle_timeout(self.idle_timeout.map(idle_timeout))
            .enable_segmentation_offload(true);
        if let Some(delay) = self.peer_max_ack_delay {
            let mut ack_frequency = AckFrequencyConfig::default();
            ack_frequency.max_ack_delay(Some(delay));
            transport.ack_frequency_config(Some(ack_frequency));
        }
        if let Some(tuning) = self.loopback.filter(|_| loopback) {
            transport.initial_mtu(tuning.mtu).mtu_discovery_config(None);
            // quinn's first congestion window is 12 000 bytes whatever the MTU: with an MTU
            // of 12 000 or more a client's first datagram was never let out (the handshake
            // timed out), and at 6 500 one datagram went at a time at first. Ten datagrams,
            // as RFC 9002 recommends.
            let mut cubic = CubicConfig::default();
            cubic.initial_window(10 * u64::from(tuning.mtu.max(1200)));
            transport.congestion_controller_factory(Arc::new(cubic));
        }
        transport
    }
}

impl Default for QuicTuning {
    fn default() -> Self {
        Self {
            stream_receive_window: 16 * MIB,
            receive_window: 64 * MIB,
            send_window: 64 * u64::from(MIB),
            max_concurrent_bidi_streams: 1024,
            keep_alive_interval: Some(Duration::from_secs(5)),
            idle_timeout: Some(Duration::from_secs(30)),
            handshake_timeout: Duration::from_secs(10),
            socket_buffer_size: 8 * MIB as usize,
            loopback: Some(LoopbackTuning::default()),
            peer_max_ack_delay: Some(Duration::from_millis(1)),
            send_fairness: false,
            busy_poll: Duration::from_micros(50),
        }
    }
}

/// Settings for connections over the loopback interface, where the path MTU is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopbackTuning {
    /// The UDP payload size used from the first packet on, with MTU discovery off, and the
    /// largest the endpoint accepts. quinn raises anything below 1200 to 1200.
    pub mtu: u16,
}

impl LoopbackTuning {
    /// Loopback settings with a fixed MTU of `mtu` bytes.
    pub const fn new(mtu: u16) -> Self {
        Self { mtu }
    }
}

impl Default for LoopbackTuning {
    fn default() -> Self {
        Self::new(6500)
    }
}

fn idle_timeout(duration: Duration) -> IdleTimeout {
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    IdleTimeout::from(VarInt::from_u64(millis).unwrap_or(VarInt::MAX))
}

const MIB: u32 = 1024 * 1024;
