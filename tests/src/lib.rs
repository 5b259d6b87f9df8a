//! Sidestream's multi-process integration and fault tests, and the harness they share.
//!
//! One test binary per suite (`tests/<suite>/main.rs`). Each starts real `sidestream sidecar`
//! processes (this package's `sidestream-under-test` binary: the same command line, built here
//! because Cargo gives tests the paths of their own package's binaries only) on `127.0.0.1`
//! ports, talks to them with the SDK and the CLI, and injects faults by killing processes.
//! Every process is killed when its handle drops, so a failing test leaves none behind.
//!
//! Suites: `single_sidecar` (one sidecar end to end: typed publish and subscribe, groups,
//! crash safety, bad input, the CLI, the example services) and `cluster` (member processes
//! joined through their peer ports, SIGKILL, restarts, network partitions through
//! [`FaultProxy`]).

#![expect(
    clippy::missing_panics_doc,
    reason = "a test harness fails the test that uses it by panicking"
)]

mod fault_proxy;

pub use fault_proxy::FaultProxy;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a sidecar may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Names a directory where each sidecar a test starts leaves a copy of its log (stderr) once it
/// exits, for looking into a failed test.
pub const LOGS_ENV: &str = "SIDESTREAM_TEST_LOGS";

/// The path of the `sidestream` command line under test: `SIDESTREAM_CLI` if set, else this
/// package's `sidestream-under-test` binary, which Cargo builds before the integration tests
/// and puts one directory above them (`target/<profile>/`, the tests being in `deps/`).
pub fn cli_path() -> PathBuf {
    if let Some(path) = std::env::var_os("SIDESTREAM_CLI") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps");
    profile_dir.join(format!(
        "sidestream-under-test{}",
        std::env::consts::EXE_SUFFIX
    ))
}

/// A `sidestream` command aimed at `sidecar`'s address and data directory.
pub fn cli(sidecar: &SidecarProcess) -> Command {
    let mut command = Command::new(cli_path());
    command
        .env("SIDESTREAM_SIDECAR", sidecar.addr().to_string())
        .env("SIDESTREAM_DATA_DIR", sidecar.data_dir())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

/// A `sidestream sidecar` child process; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct SidecarProcess {
    child: Option<Child>,
    addr: SocketAddr,
    peer_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    data_dir: PathBuf,
    extra_args: Vec<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl SidecarProcess {
    /// Starts a sidecar with its data in `data_dir` on a free port of 127.0.0.1.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, SocketAddr::from(([127, 0, 0, 1], 0)), &[])
    }

    /// Starts a sidecar on `addr` with more flags.
    ///
    /// Port 0 means a free port from [`free_udp_addr`], so that a restart can bind it again.
    pub fn start_with(data_dir: &Path, addr: SocketAddr, extra_args: &[&str]) -> Self {
        let addr = if addr.port() == 0 && addr.ip().is_loopback() {
            SocketAddr::new(addr.ip(), free_udp_addr().port())
        } else {
            addr
        };
        let mut child = sidecar_command(data_dir, addr, extra_args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the sidestream binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let copy = std::env::var_os(LOGS_ENV)
            .map(|dir| Path::new(&dir).join(format!("sidecar-{}-{}.log", addr.port(), child.id())));
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            if let Some(copy) = copy {
                let _ = std::fs::write(copy, &text);
            }
            text
        });
        let (ready_tx, ready) = mpsc::channel();
        thread::spawn(move || {
            let (mut peer, mut admin) = (None, None);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(addr) = line.strip_prefix("sidestream sidecar admin port on ") {
                    admin = Some(addr.trim().to_owned());
                }
                if let Some(addr) = line.strip_prefix("sidestream sidecar peer port on ") {
                    peer = Some(addr.trim().to_owned());
                }
                if let Some(addr) = line.strip_prefix("sidestream sidecar listening on ") {
                    let _ = ready_tx.send((addr.trim().to_owned(), peer.take(), admin.take()));
                }
            }
        });
        let mut process = Self {
            child: Some(child),
            addr,
            peer_addr: None,
            admin_addr: None,
            data_dir: data_dir.to_path_buf(),
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            stderr: Some(stderr),
        };
        let Ok((bound, peer, admin)) = ready.recv_timeout(START_TIMEOUT) else {
            let log = process.kill_and_collect();
            panic!("the sidecar did not become ready within {START_TIMEOUT:?}; its log:\n{log}");
        };
        process.addr = bound.parse().expect("the ready line names an address");
        process.peer_addr = peer.map(|peer| peer.parse().expect("the peer line names an address"));
        process.admin_addr =
            admin.map(|admin| admin.parse().expect("the admin line names an address"));
        process
    }

    /// The admin address (HTTP).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The peer address, for a sidecar started as a cluster member.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory of the development certificates.
    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// A connected SDK client for `service`.
    pub async fn client(&self, service: &str) -> sidestream::Client {
        sidestream::Client::builder(service)
            .sidecar(self.addr.to_string())
            .tls_dir(self.tls_dir())
            .connect()
            .await
            .expect("the client connects")
    }

    /// Stops the process with SIGSTOP: it holds its connections but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Sends the process `signal` (`-HUP`, `-STOP`, …) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {} failed", self.pid());
    }

    /// Kills the process with SIGKILL and returns its log.
    pub fn kill(&mut self) -> String {
        self.kill_and_collect()
    }

    /// Stops the process with SIGTERM, waits for it (at most `timeout`, then SIGKILL), and
    /// returns whether it exited successfully, and its log.
    pub fn terminate(&mut self, timeout: Duration) -> (bool, String) {
        let Some(mut child) = self.child.take() else {
            return (false, String::new());
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        let success = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status.success(),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break false;
                }
            }
        };
        (success, self.collect_log())
    }

    /// Starts the sidecar again on the same address and data directory.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.kill_and_collect();
        }
        let args: Vec<&str> = self.extra_args.iter().map(String::as_str).collect();
        let fresh = Self::start_with(&self.data_dir, self.addr, &args);
        let old = std::mem::replace(self, fresh);
        drop(old);
    }

    fn kill_and_collect(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.collect_log()
    }

    fn collect_log(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `sidestream sidecar` on `data_dir`, listening on `addr`, with more flags; its log (at level
/// info) on a piped stderr, no stdin.
fn sidecar_command(data_dir: &Path, addr: SocketAddr, extra_args: &[&str]) -> Command {
    let mut command = Command::new(cli_path());
    command
        .arg("sidecar")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--admin-listen")
        .arg("127.0.0.1:0")
        .args(extra_args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Runs `sidestream sidecar` on `data_dir` (client port free on 127.0.0.1) with more flags,
/// for one expected to stop by itself: its exit status and log, or `None` (and the process
/// killed) if it still runs after `timeout`.
pub fn run_sidecar_to_exit(
    data_dir: &Path,
    extra_args: &[&str],
    timeout: Duration,
) -> Option<(std::process::ExitStatus, String)> {
    let mut child = sidecar_command(data_dir, SocketAddr::from(([127, 0, 0, 1], 0)), extra_args)
        .stdout(Stdio::null())
        .spawn()
        .expect("the sidestream binary starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let log = thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });
    let status = wait_for(timeout, || child.try_wait().ok().flatten());
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let log = log.join().unwrap_or_default();
    status.map(|status| (status, log))
}

/// A UDP port of 127.0.0.1 free a moment ago, for a sidecar port that must stay the same
/// across restarts (a peer port behind a [`FaultProxy`], or a client port).
///
/// It comes from outside the kernel's ephemeral range, never from it: while a sidecar is down,
/// a port the kernel hands out could be given to any socket bound to port 0 (an SDK client's,
/// a sidecar's outgoing one), and the restarted sidecar could not bind it again. Ports are
/// handed out in turn from a start that differs between processes, and each is checked free;
/// a test process on another port could still take it in between, and the sidecar then fails
/// to start, naming the address.
pub fn free_udp_addr() -> SocketAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let Some((lowest, span)) = outside_ephemeral_range() else {
        // No room outside it (a system that hands out almost every port): any free port.
        let socket = std::net::UdpSocket::bind(("127.0.0.1", 0)).expect("a free UDP port");
        return socket.local_addr().expect("a bound address");
    };
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let turn = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = lowest + (start + turn) % span;
        let port = u16::try_from(port).expect("ports below 65536");
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return SocketAddr::from(([127, 0, 0, 1], port));
        }
    }
    panic!(
        "no UDP port of 127.0.0.1 from {lowest} to {} is free",
        lowest + span - 1
    );
}

/// The larger run of ports outside the kernel's ephemeral range (Linux's default where it
/// cannot be read), from port 10000 on, as its first port and length; `None` if neither run
/// has 1000 ports.
fn outside_ephemeral_range() -> Option<(u32, u32)> {
    const LOWEST: u32 = 10_000;
    const HIGHEST: u32 = 65_535;
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| {
            let mut ends = range.split_whitespace().map(str::parse::<u32>);
            Some((ends.next()?.ok()?, ends.next()?.ok()?))
        })
        .unwrap_or((32_768, 60_999));
    let below = (LOWEST, low.saturating_sub(LOWEST));
    let above = (high + 1, HIGHEST.saturating_sub(high));
    [below, above]
        .into_iter()
        .max_by_key(|&(_, span)| span)
        .filter(|&(_, span)| span >= 1_000)
}

/// Runs `check` every 20 ms until it returns `Some`, for at most `timeout`.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
