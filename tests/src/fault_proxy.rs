//! A UDP proxy in front of one sidecar's peer port that can drop, duplicate and cut off
//! traffic: the network faults of the cluster tests.
//!
//! A member advertises its proxy's address as its peer address (`--peer-advertise`), so every
//! other member reaches it through the proxy; the proxy forwards each datagram from its own
//! socket per sender, so the answers come back through it too and each direction can be faulted.
//! Two members share one connection, through the proxy of the one that was dialed: to cut a
//! member off, cut its socket at every other proxy and every other socket at its own proxy.
//!
//! ```text
//!   member A (peer socket a) ── datagram ──▶ proxy of B ── socket for a ──▶ member B
//!                            ◀─────────────             ◀──────────────
//! ```
//!
//! Rules are per sending address: [`cut`](FaultProxy::cut) drops everything from and to a
//! sender (a network partition); [`set_loss`](FaultProxy::set_loss),
//! [`set_duplication`](FaultProxy::set_duplication) and [`set_delay`](FaultProxy::set_delay)
//! drop, repeat or hold back (with jitter, which reorders) datagrams in both directions, with
//! choices drawn from a seeded generator so a failing schedule can be replayed.

use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often the proxy's threads look whether they should stop.
const POLL: Duration = Duration::from_millis(50);

/// The faults in force.
#[derive(Debug)]
struct Rules {
    /// Senders cut off: nothing from them passes, nothing to them either.
    cut: HashSet<SocketAddr>,
    /// Share of datagrams dropped, per million.
    loss_ppm: u64,
    /// Share of datagrams sent twice, per million.
    duplicate_ppm: u64,
    /// How long every datagram is held back.
    delay: Duration,
    /// Up to this much more, drawn per datagram (so datagrams overtake each other).
    jitter: Duration,
    /// The generator of the random choices (`SplitMix64`).
    state: u64,
}

impl Rules {
    fn random_ppm(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % 1_000_000
    }

    /// When to send each copy of a datagram between `peer` and the member, from now: none
    /// (dropped), one, or two (duplicated).
    fn plan(&mut self, peer: SocketAddr) -> Vec<Duration> {
        if self.cut.contains(&peer) || self.random_ppm() < self.loss_ppm {
            return Vec::new();
        }
        let copies = if self.random_ppm() < self.duplicate_ppm {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                let jitter = self.jitter.as_micros();
                let extra = if jitter == 0 {
                    0
                } else {
                    u128::from(self.random_ppm()) % jitter
                };
                self.delay + Duration::from_micros(u64::try_from(extra).unwrap_or(0))
            })
            .collect()
    }
}

/// A datagram held back until `due`.
struct Delayed {
    due: Instant,
    order: u64,
    socket: Arc<UdpSocket>,
    dest: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    /// The earliest first out of a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

/// Sends `bytes` from `socket` to `dest` as `plan` says: at once, or through the delaying
/// thread.
fn send(
    plan: &[Duration],
    socket: &Arc<UdpSocket>,
    dest: SocketAddr,
    bytes: &[u8],
    delayed: &mpsc::Sender<Delayed>,
) {
    for (order, delay) in (0..).zip(plan) {
        if delay.is_zero() {
            let _ = socket.send_to(bytes, dest);
        } else {
            let _ = delayed.send(Delayed {
                due: Instant::now() + *delay,
                order,
                socket: Arc::clone(socket),
                dest,
                bytes: bytes.to_vec(),
            });
        }
    }
}

/// Sends held-back datagrams when they are due.
fn delay_loop(delayed: &mpsc::Receiver<Delayed>, stop: &AtomicBool) {
    let mut waiting = BinaryHeap::new();
    let mut order = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        let wait = waiting
            .peek()
            .map_or(POLL, |next: &Delayed| {
                next.due.saturating_duration_since(Instant::now())
            })
            .min(POLL);
        match delayed.recv_timeout(wait) {
            Ok(mut datagram) => {
                // Arrival order breaks ties between datagrams due at the same moment.
                order += 1;
                datagram.order = order;
                waiting.push(datagram);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        while waiting
            .peek()
            .is_some_and(|next: &Delayed| next.due <= Instant::now())
        {
            if let Some(datagram) = waiting.pop() {
                let _ = datagram.socket.send_to(&datagram.bytes, datagram.dest);
            }
        }
    }
}

/// A fault-injecting UDP proxy in front of one member's peer port; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    rules: Arc<Mutex<Rules>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy on a free port of 127.0.0.1 that forwards to `target`, with random choices
    /// seeded by `seed`; passes everything until told otherwise.
    pub fn start(target: SocketAddr, seed: u64) -> Self {
        let listener = UdpSocket::bind(("127.0.0.1", 0)).expect("the proxy binds 127.0.0.1");
        listener
            .set_read_timeout(Some(POLL))
            .expect("a read timeout");
        let addr = listener.local_addr().expect("a bound address");
        let rules = Arc::new(Mutex::new(Rules {
            cut: HashSet::new(),
            loss_ppm: 0,
            duplicate_ppm: 0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            state: seed,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (delayed, to_delay) = mpsc::channel();
        let holder = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || delay_loop(&to_delay, &stop))
        };
        let forward = {
            let rules = Arc::clone(&rules);
            let stop = Arc::clone(&stop);
            let listener = Arc::new(listener);
            thread::spawn(move || forward_loop(&listener, target, &rules, &stop, &delayed))
        };
        Self {
            addr,
            rules,
            stop,
            threads: vec![forward, holder],
        }
    }

    /// The address to advertise for the member.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops everything from and to `peer` (a member's own peer socket) until
    /// [`heal`](Self::heal).
    pub fn cut(&self, peer: SocketAddr) {
        self.rules().cut.insert(peer);
    }

    /// Lets traffic from and to every peer pass again.
    pub fn heal(&self) {
        self.rules().cut.clear();
    }

    /// Drops this share (0.0 to 1.0) of datagrams, in either direction.
    pub fn set_loss(&self, share: f64) {
        self.rules().loss_ppm = ppm(share);
    }

    /// Sends this share (0.0 to 1.0) of datagrams twice, in either direction.
    pub fn set_duplication(&self, share: f64) {
        self.rules().duplicate_ppm = ppm(share);
    }

    /// Holds every datagram back by `delay` plus up to `jitter` more (drawn per datagram, so
    /// datagrams overtake each other), in either direction.
    pub fn set_delay(&self, delay: Duration, jitter: Duration) {
        let mut rules = self.rules();
        rules.delay = delay;
        rules.jitter = jitter;
    }

    fn rules(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a share in 0..=1 scaled to parts per million fits"
)]
fn ppm(share: f64) -> u64 {
    (share.clamp(0.0, 1.0) * 1_000_000.0).round() as u64
}

/// Datagrams from peers to the member, each sender through a socket of its own, whose answers a
/// thread per sender carries back.
fn forward_loop(
    listener: &Arc<UdpSocket>,
    target: SocketAddr,
    rules: &Arc<Mutex<Rules>>,
    stop: &Arc<AtomicBool>,
    delayed: &mpsc::Sender<Delayed>,
) {
    let mut upstream: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut answers = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let (len, peer) = match listener.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        let socket = match upstream.entry(peer) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => {
                let Ok(socket) = UdpSocket::bind(("127.0.0.1", 0)) else {
                    continue;
                };
                let _ = socket.set_read_timeout(Some(POLL));
                let socket = Arc::new(socket);
                let back = Arc::clone(&socket);
                let reply = Arc::clone(listener);
                let rules = Arc::clone(rules);
                let stop = Arc::clone(stop);
                let delayed = delayed.clone();
                answers.push(thread::spawn(move || {
                    answer_loop(&back, &reply, peer, &rules, &stop, &delayed);
                }));
                slot.insert(socket)
            }
        };
        let plan = rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .plan(peer);
        send(&plan, socket, target, &buf[..len], delayed);
    }
    for thread in answers {
        let _ = thread.join();
    }
}

/// The member's datagrams to `peer`, back through the proxy's listening socket.
fn answer_loop(
    upstream: &UdpSocket,
    listener: &Arc<UdpSocket>,
    peer: SocketAddr,
    rules: &Arc<Mutex<Rules>>,
    stop: &Arc<AtomicBool>,
    delayed: &mpsc::Sender<Delayed>,
) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let len = match upstream.recv_from(&mut buf) {
            Ok((len, _)) => len,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        };
        let plan = rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .plan(peer);
        send(&plan, listener, peer, &buf[..len], delayed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> (SocketAddr, Arc<AtomicBool>, JoinHandle<()>) {
        let socket = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
        socket.set_read_timeout(Some(POLL)).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !done.load(Ordering::Relaxed) {
                if let Ok((len, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..len], from);
                }
            }
        });
        (addr, stop, thread)
    }

    /// Sends `count` datagrams through the proxy and counts the echoes that come back.
    fn echoes(client: &UdpSocket, proxy: SocketAddr, count: u8) -> usize {
        for i in 0..count {
            client.send_to(&[i], proxy).unwrap();
        }
        let mut buf = [0u8; 16];
        let mut received = 0;
        while client.recv_from(&mut buf).is_ok() {
            received += 1;
        }
        received
    }

    #[test]
    fn passes_cuts_heals_and_duplicates() {
        let (target, stop, server) = echo_server();
        let proxy = FaultProxy::start(target, 7);
        let client = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let me = client.local_addr().unwrap();

        assert_eq!(echoes(&client, proxy.addr(), 10), 10);
        proxy.cut(me);
        assert_eq!(echoes(&client, proxy.addr(), 10), 0);
        proxy.heal();
        assert_eq!(echoes(&client, proxy.addr(), 10), 10);
        // Every datagram twice on the way there and twice on the way back.
        proxy.set_duplication(1.0);
        assert_eq!(echoes(&client, proxy.addr(), 5), 20);
        proxy.set_duplication(0.0);
        proxy.set_loss(1.0);
        assert_eq!(echoes(&client, proxy.addr(), 5), 0);
        // Held back 100 ms each way: no echo comes back sooner than 200 ms, and all come.
        proxy.set_loss(0.0);
        proxy.set_delay(Duration::from_millis(100), Duration::from_millis(20));
        let sent = Instant::now();
        client.send_to(&[1], proxy.addr()).unwrap();
        let mut buf = [0u8; 4];
        client.recv_from(&mut buf).unwrap();
        assert!(
            sent.elapsed() >= Duration::from_millis(200),
            "{:?}",
            sent.elapsed()
        );
        client
            .set_read_timeout(Some(Duration::from_millis(800)))
            .unwrap();
        assert_eq!(echoes(&client, proxy.addr(), 10), 10);

        drop(proxy);
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
    }
}
