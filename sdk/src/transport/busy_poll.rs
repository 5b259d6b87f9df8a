//! A UDP socket for quinn that, after sending, spins on the socket for the first datagram back
//! for a short while before it waits on tokio's reactor ([`QuicTuning::busy_poll`]).
//!
//! A request and its answer are one datagram each way. Waiting for the answer on the reactor
//! lets the thread park and, on a virtual machine, its vCPU halt; the datagram then has to
//! wake the vCPU through the host, which on the reference machine costs more than the whole
//! round trip in one process. Spinning keeps the vCPU awake for the answer.
//!
//! The spin is bounded twice: by the window from the send that armed it (the first send since
//! the last spin), and by how it went lately. Spins that see nothing (the peer is slow, far,
//! or had nothing to say) four times in a row make the next send arm none, five the next 3,
//! and so on up to 1023, so a socket whose spins do not pay off spins on about one send in a
//! thousand; a spin that receives starts afresh. (Backing off at the first miss cost a
//! ping-pong half its rate: its spins miss now and then an answer that was only late.) The
//! account is the socket's, not a peer's: on a port many peers talk to, a datagram from any
//! of them ends a spin, and a spin there is short while traffic lasts.
//!
//! A spin holds its runtime thread (and quinn's endpoint lock). On a single-threaded runtime
//! an answer from the same process cannot come during it, so its spins miss until they back
//! off.
//!
//! [`QuicTuning::busy_poll`]: super::QuicTuning::busy_poll

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::Interest;

/// The longest spin: an answer later than this is not one to hold a thread for.
pub(super) const MAX_WINDOW: Duration = Duration::from_millis(1);

/// Spins in a row that may see nothing before the socket backs off: a ping-pong's spins now
/// and then miss an answer that was only late.
const MISSES_BEFORE_BACKOFF: u32 = 3;

/// Misses in a row counted at most: the most sends a socket whose spins see nothing leaves
/// unarmed is 2^(13 - 3) - 1 = 1023.
const MAX_MISSES: u32 = 13;

/// Spin-loop hints between two reads of the socket: about a microsecond, so that the spin does
/// not take the socket's lock from the sender at every turn.
const PAUSES: u32 = 32;

/// A quinn socket that spins for an answer after each send (see the module's docs).
pub(super) struct BusyPollSocket {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
    /// The longest a spin lasts, from the send that armed it (the first since the last spin).
    window: Duration,
    /// What `armed_at` counts from.
    epoch: Instant,
    /// When the send that armed the next spin went, in nanoseconds after `epoch`, plus 1;
    /// 0 when no spin is armed.
    armed_at: AtomicU64,
    /// Sends still to go before one arms a spin again.
    skip: AtomicU32,
    /// Spins in a row that saw nothing, at most [`MAX_MISSES`].
    misses: AtomicU32,
    /// The endpoint's receiving task, while it waits on the reactor: a send that arms a spin
    /// wakes it, so that it spins.
    receiver: AtomicWaker,
}

impl fmt::Debug for BusyPollSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusyPollSocket")
            .field("local_addr", &self.io.local_addr().ok())
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl BusyPollSocket {
    /// Wraps `socket`, which must be bound; spins last at most `window` (at most
    /// [`MAX_WINDOW`]). Must be called inside a tokio runtime.
    pub(super) fn new(socket: std::net::UdpSocket, window: Duration) -> io::Result<Self> {
        let state = UdpSocketState::new((&socket).into())?;
        let io = tokio::net::UdpSocket::from_std(socket)?;
        Ok(Self {
            io,
            state,
            window: window.min(MAX_WINDOW),
            epoch: Instant::now(),
            armed_at: AtomicU64::new(0),
            skip: AtomicU32::new(0),
            misses: AtomicU32::new(0),
            receiver: AtomicWaker::new(),
        })
    }

    /// After a send: arms a spin unless one is armed or recent spins went unanswered.
    fn arm(&self) {
        if self.armed_at.load(Ordering::Relaxed) != 0 {
            return;
        }
        let skip = self.skip.load(Ordering::Relaxed);
        if skip > 0 {
            // Sends from several connections race here; a skip more or less does not matter.
            self.skip.store(skip - 1, Ordering::Relaxed);
            return;
        }
        let sent = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1;
        if self.armed_at.swap(sent, Ordering::AcqRel) == 0 {
            self.receiver.wake();
        }
    }

    /// Spins until a datagram comes or the armed spin's window ends.
    fn spin(
        &self,
        armed_at: u64,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Option<io::Result<usize>> {
        let deadline = self.epoch + Duration::from_nanos(armed_at - 1) + self.window;
        loop {
            match self.state.recv((&self.io).into(), bufs, meta) {
                Ok(count) => {
                    self.misses.store(0, Ordering::Relaxed);
                    return Some(Ok(count));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                // Left to the reactor's path, which reads again as quinn's own socket does:
                // an error returned from here would end the endpoint.
                Err(_) => return None,
            }
            if Instant::now() >= deadline {
                let misses = (self.misses.load(Ordering::Relaxed) + 1).min(MAX_MISSES);
                self.misses.store(misses, Ordering::Relaxed);
                let backoff = misses.saturating_sub(MISSES_BEFORE_BACKOFF);
                self.skip.store((1 << backoff) - 1, Ordering::Relaxed);
                return None;
            }
            for _ in 0..PAUSES {
                std::hint::spin_loop();
            }
        }
    }
}

/// Waits until the socket can be written to, for one of quinn's connection drivers.
///
/// Each poller waits through a future of its own: tokio keeps one waker per socket for
/// `poll_send_ready`, so connections sharing the endpoint that all waited on it would have
/// woken only the last one.
struct Writable {
    socket: Arc<BusyPollSocket>,
    waiting: Option<Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>>,
}

impl fmt::Debug for Writable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writable")
            .field("waiting", &self.waiting.is_some())
            .finish_non_exhaustive()
    }
}

impl UdpPoller for Writable {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let waiting = this.waiting.get_or_insert_with(|| {
            let socket = Arc::clone(&this.socket);
            Box::pin(async move { socket.io.writable().await })
        });
        let ready = waiting.as_mut().poll(cx);
        if ready.is_ready() {
            this.waiting = None;
        }
        ready
    }
}

impl AsyncUdpSocket for BusyPollSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Writable {
            socket: self,
            waiting: None,
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.io.try_io(Interest::WRITABLE, || {
            self.state.send((&self.io).into(), transmit)
        })?;
        self.arm();
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let armed_at = self.armed_at.swap(0, Ordering::AcqRel);
        if armed_at != 0
            && let Some(received) = self.spin(armed_at, bufs, meta)
        {
            return Poll::Ready(received);
        }
        // Registered before the reactor is asked, so that a send arming a spin from now on
        // wakes this task.
        self.receiver.register(cx.waker());
        loop {
            std::task::ready!(self.io.poll_recv_ready(cx))?;
            if let Ok(received) = self.io.try_io(Interest::READABLE, || {
                self.state.recv((&self.io).into(), bufs, meta)
            }) {
                return Poll::Ready(Ok(received));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::net::UdpSocket;

    use quinn::udp::Transmit;

    use super::*;

    fn bound() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        socket
    }

    /// Sends as quinn does: once the reactor says the socket can be written to.
    async fn send(socket: &BusyPollSocket, to: SocketAddr, contents: &[u8]) {
        socket.io.writable().await.unwrap();
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: None,
            src_ip: None,
        };
        socket.try_send(&transmit).unwrap();
    }

    /// Polls `socket` once for a datagram: what came, or `None` if it went on to wait.
    async fn poll_once(socket: &BusyPollSocket) -> Option<Vec<u8>> {
        let mut buf = vec![0; 65_536];
        let mut meta = [RecvMeta::default()];
        poll_fn(|cx| {
            let mut bufs = [IoSliceMut::new(&mut buf)];
            Poll::Ready(match socket.poll_recv(cx, &mut bufs, &mut meta) {
                Poll::Ready(received) => Some(received.unwrap()),
                Poll::Pending => None,
            })
        })
        .await
        .map(|_| buf[..meta[0].len].to_vec())
    }

    #[tokio::test]
    async fn a_send_arms_one_spin_that_takes_the_answer() {
        let peer = bound();
        let socket = BusyPollSocket::new(bound(), MAX_WINDOW).unwrap();
        let here = socket.local_addr().unwrap();
        socket.misses.store(2, Ordering::Relaxed);
        send(&socket, peer.local_addr().unwrap(), b"request").await;
        assert_ne!(
            socket.armed_at.load(Ordering::Relaxed),
            0,
            "a send arms a spin"
        );

        // The peer answers at once (loopback delivers within `send_to`). The reactor has not
        // run since, so only a read past it, the spin's, sees the answer now.
        let mut buf = [0; 16];
        let (len, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"request");
        peer.send_to(b"answer", here).unwrap();
        assert_eq!(poll_once(&socket).await.as_deref(), Some(&b"answer"[..]));
        assert_eq!(
            socket.misses.load(Ordering::Relaxed),
            0,
            "a spin that receives"
        );

        // The spin was used up: with nothing more sent, the next poll waits on the reactor.
        assert_eq!(socket.armed_at.load(Ordering::Relaxed), 0);
        assert_eq!(poll_once(&socket).await, None);
    }

    #[tokio::test]
    async fn spins_that_see_nothing_back_off_and_one_that_receives_starts_afresh() {
        let silent = bound();
        let socket = BusyPollSocket::new(bound(), Duration::from_micros(200)).unwrap();
        let to = silent.local_addr().unwrap();

        // Three misses in a row are let be; from the fourth on, each one doubles the sends
        // that then arm none: 1, 3, 7, …
        for (miss, skipped) in [(1, 0), (2, 0), (3, 0), (4, 1), (5, 3), (6, 7), (7, 15)] {
            send(&socket, to, b"no answer").await;
            assert_eq!(poll_once(&socket).await, None);
            assert_eq!(socket.misses.load(Ordering::Relaxed), miss);
            for _ in 0..skipped {
                send(&socket, to, b"not armed").await;
                assert_eq!(socket.armed_at.load(Ordering::Relaxed), 0);
            }
            assert_eq!(socket.skip.load(Ordering::Relaxed), 0);
        }
        // ... up to 1023.
        socket.misses.store(MAX_MISSES, Ordering::Relaxed);
        send(&socket, to, b"no answer").await;
        assert_eq!(poll_once(&socket).await, None);
        assert_eq!(socket.misses.load(Ordering::Relaxed), MAX_MISSES);
        assert_eq!(socket.skip.load(Ordering::Relaxed), 1023);

        // A spin that receives clears the misses.
        socket.skip.store(0, Ordering::Relaxed);
        send(&socket, to, b"armed").await;
        silent
            .send_to(b"late answer", socket.local_addr().unwrap())
            .unwrap();
        assert_eq!(
            poll_once(&socket).await.as_deref(),
            Some(&b"late answer"[..])
        );
        assert_eq!(socket.misses.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn without_a_spin_datagrams_come_through_the_reactor() {
        let peer = bound();
        let socket = BusyPollSocket::new(bound(), Duration::from_micros(50)).unwrap();
        peer.send_to(b"unasked", socket.local_addr().unwrap())
            .unwrap();
        let mut buf = vec![0; 65_536];
        let mut meta = [RecvMeta::default()];
        let len = tokio::time::timeout(
            Duration::from_secs(10),
            poll_fn(|cx| socket.poll_recv(cx, &mut [IoSliceMut::new(&mut buf)], &mut meta)),
        )
        .await
        .expect("the reactor gave the datagram")
        .unwrap();
        assert_eq!(len, 1);
        assert_eq!(&buf[..meta[0].len], b"unasked");
    }

    /// Counts its wakes.
    struct Wakes(AtomicU32);

    impl futures_util::task::ArcWake for Wakes {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn a_send_wakes_the_receiver_waiting_on_the_reactor_once_per_spin() {
        let peer = bound();
        let socket = BusyPollSocket::new(bound(), Duration::from_micros(100)).unwrap();
        let woken = Arc::new(Wakes(AtomicU32::new(0)));
        let waker = futures_util::task::waker(Arc::clone(&woken));
        let mut buf = vec![0; 65_536];
        let mut meta = [RecvMeta::default()];
        let mut poll = || {
            let mut cx = Context::from_waker(&waker);
            socket
                .poll_recv(&mut cx, &mut [IoSliceMut::new(&mut buf)], &mut meta)
                .is_pending()
        };
        assert!(poll(), "nothing to read: the receiver waits on the reactor");

        let to = peer.local_addr().unwrap();
        send(&socket, to, b"first").await;
        assert_eq!(
            woken.0.load(Ordering::Relaxed),
            1,
            "the send that arms wakes it"
        );
        send(&socket, to, b"second").await;
        assert_eq!(
            woken.0.load(Ordering::Relaxed),
            1,
            "armed already: no second wake"
        );

        // The woken receiver spins (nothing comes back) and waits again; the next send wakes
        // it again.
        assert!(poll());
        send(&socket, to, b"third").await;
        assert_eq!(woken.0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_window_is_at_most_a_millisecond() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let socket = BusyPollSocket::new(bound(), Duration::MAX).unwrap();
        assert_eq!(socket.window, MAX_WINDOW);
    }
}
