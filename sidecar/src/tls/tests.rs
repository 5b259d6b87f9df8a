//! Real QUIC connections on 127.0.0.1 between a [`ServerTls`] endpoint and SDK clients, and the
//! life cycle of the [`DevCertificates`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Connection, ConnectionError, Endpoint};
use sidestream::transport::{
    ClientTls, ConnectError, LoopbackTuning, PROTOCOL_VERSIONS, QuicTuning, TlsError,
    bind_endpoint, crypto_provider, read_trust_anchors,
};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

use super::{
    ClientIdentity, DEV_CLIENT_IDENTITY, DevCertificates, DevCertificatesError, IdentityError,
    PeerTls, ServerTls,
};

#[test]
fn dev_certificates_are_created_once_and_reused() {
    let data_dir = tempfile::tempdir().unwrap();
    let certificates = DevCertificates::ensure(data_dir.path(), &[]).unwrap();
    let files = all_files(&certificates);
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect();

    let again = DevCertificates::ensure(data_dir.path(), &[]).unwrap();

    assert_eq!(again, certificates);
    for (path, bytes) in files.iter().zip(&before) {
        assert_eq!(
            &std::fs::read(path).unwrap(),
            bytes,
            "{} changed",
            path.display()
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        for key in [
            certificates.ca_key(),
            certificates.server_key(),
            certificates.client_key(),
        ] {
            assert_eq!(mode(&key), 0o600, "{}", key.display());
        }
        assert_eq!(mode(certificates.dir()), 0o700);
    }
    let leftovers: Vec<_> = std::fs::read_dir(certificates.dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn leaves_are_reissued_by_the_same_ca() {
    let data_dir = tempfile::tempdir().unwrap();
    let certificates = DevCertificates::ensure(data_dir.path(), &[]).unwrap();
    let ca = std::fs::read(certificates.ca_cert()).unwrap();
    let server = std::fs::read(certificates.server_cert()).unwrap();
    std::fs::remove_file(certificates.client_cert()).unwrap();
    std::fs::write(certificates.client_key(), "not a key").unwrap();

    DevCertificates::ensure(
        data_dir.path(),
        &["sidecar.internal".into(), "10.0.0.7".into()],
    )
    .unwrap();

    assert_eq!(std::fs::read(certificates.ca_cert()).unwrap(), ca);
    assert_ne!(
        std::fs::read(certificates.server_cert()).unwrap(),
        server,
        "new names"
    );
    // Both leaves chain to the kept CA, with matching keys.
    ServerTls::from_dev(&certificates).unwrap();
    ClientTls::from_dir(certificates.dir()).unwrap();
    let reissued = std::fs::read(certificates.server_cert()).unwrap();
    DevCertificates::ensure(data_dir.path(), &["10.0.0.7".into()]).unwrap();
    assert_eq!(
        std::fs::read(certificates.server_cert()).unwrap(),
        reissued,
        "names covered"
    );
}

#[test]
fn an_unusable_ca_is_an_error_and_is_never_replaced() {
    let data_dir = tempfile::tempdir().unwrap();
    let certificates = DevCertificates::ensure(data_dir.path(), &[]).unwrap();
    std::fs::write(certificates.ca_cert(), "garbage").unwrap();

    let error = DevCertificates::ensure(data_dir.path(), &[]).unwrap_err();

    assert!(
        matches!(&error, DevCertificatesError::Ca { source: TlsError::NoCertificate { path } }
            if *path == certificates.ca_cert()),
        "{error:?}"
    );
    assert_eq!(std::fs::read(certificates.ca_cert()).unwrap(), b"garbage");
}

#[test]
fn issuing_without_the_ca_key_is_an_error() {
    let data_dir = tempfile::tempdir().unwrap();
    let certificates = DevCertificates::ensure(data_dir.path(), &[]).unwrap();
    std::fs::remove_file(certificates.ca_key()).unwrap();
    // Valid leaves need no CA key.
    DevCertificates::ensure(data_dir.path(), &[]).unwrap();
    std::fs::remove_file(certificates.client_cert()).unwrap();

    let error = DevCertificates::ensure(data_dir.path(), &[]).unwrap_err();

    assert!(
        matches!(&error, DevCertificatesError::CaKeyMissing { key, needed_for }
            if *key == certificates.ca_key() && *needed_for == certificates.client_cert()),
        "{error:?}"
    );
}

#[test]
fn bad_extra_names_are_refused() {
    let data_dir = tempfile::tempdir().unwrap();
    let error = DevCertificates::ensure(data_dir.path(), &["not a name!".into()]).unwrap_err();
    assert!(
        matches!(error, DevCertificatesError::BadName { .. }),
        "{error:?}"
    );
}

#[test]
fn loading_errors_name_the_file() {
    let data_dir = tempfile::tempdir().unwrap();
    let certificates = DevCertificates::ensure(data_dir.path(), &[]).unwrap();
    let missing = data_dir.path().join("missing.pem");

    let error = ServerTls::from_paths(
        &missing,
        &certificates.server_cert(),
        &certificates.server_key(),
    )
    .unwrap_err();
    assert!(
        matches!(&error, TlsError::Read { path, .. } if *path == missing),
        "{error:?}"
    );

    let error = ServerTls::from_paths(
        &certificates.ca_cert(),
        &certificates.server_cert(),
        &certificates.client_key(),
    )
    .unwrap_err();
    assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error:?}");

    let error = ClientTls::from_paths(
        &certificates.ca_cert(),
        &certificates.client_cert(),
        &certificates.client_cert(),
    )
    .unwrap_err();
    assert!(matches!(error, TlsError::NoPrivateKey { .. }), "{error:?}");
}

#[test]
fn the_identity_is_the_common_name_else_the_first_dns_name() {
    let key = rcgen::KeyPair::generate().unwrap();
    let certificate = |common_name: Option<&str>, names: &[&str]| {
        let names: Vec<String> = names.iter().map(|&name| name.to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(common_name) = common_name {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, common_name);
        }
        params.self_signed(&key).unwrap().der().clone()
    };
    let identity = |der| ClientIdentity::from_certificate(&der).map(|id| id.to_string());

    assert_eq!(
        identity(certificate(Some("orders"), &["a.example"])).unwrap(),
        "orders"
    );
    assert_eq!(
        identity(certificate(None, &["a.example", "b.example"])).unwrap(),
        "a.example"
    );
    assert!(matches!(
        identity(certificate(None, &[])),
        Err(IdentityError::NoName)
    ));
    assert!(matches!(
        ClientIdentity::from_certificate(&b"not der"[..].into()),
        Err(IdentityError::BadCertificate { .. })
    ));
}

#[tokio::test]
async fn a_dev_client_connects_and_is_identified() {
    bounded(async {
        let (_dir, certificates) = dev_certificates();
        let mut server = TestServer::start(&certificates);
        let tuning = QuicTuning::default();
        let client = ClientTls::from_dir(certificates.dir()).unwrap();
        let endpoint = client_endpoint();

        let connection = client
            .connect(&endpoint, server.addr, "localhost", &tuning)
            .await
            .unwrap();
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        send.write_all(b"ping").await.unwrap();
        send.finish().unwrap();
        let echoed = recv.read_to_end(1024).await.unwrap();

        assert_eq!(echoed, b"ping");
        let identity = server.handshakes.recv().await.unwrap().unwrap();
        assert_eq!(identity.as_str(), DEV_CLIENT_IDENTITY);
        assert_eq!(
            connection.handshake_data().and_then(alpn),
            Some(sidestream_proto::ALPN.to_vec())
        );
        assert_eq!(
            connection.stats().path.current_mtu,
            6500,
            "loopback tuning applies"
        );
        connection.close(0u32.into(), b"done");
        close(endpoint).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_loopback_mtu_larger_than_quinns_first_congestion_window_connects() {
    bounded(async {
        // quinn's first congestion window is 12 000 bytes: a first datagram of this MTU was
        // never let out, and the handshake timed out.
        let mut tuning = QuicTuning::default();
        tuning.loopback = Some(LoopbackTuning::new(16_000));
        let (_dir, certificates) = dev_certificates();
        let mut server = TestServer::start_tuned(&certificates, &tuning);
        let client = ClientTls::from_dir(certificates.dir()).unwrap();
        let endpoint = bind_endpoint(loopback(), None, &tuning).unwrap();

        let connection = client
            .connect(&endpoint, server.addr, "localhost", &tuning)
            .await
            .unwrap();
        let (mut send, mut recv) = connection.open_bi().await.unwrap();
        let message = vec![7u8; 100_000];
        send.write_all(&message).await.unwrap();
        send.finish().unwrap();
        assert_eq!(recv.read_to_end(200_000).await.unwrap(), message);
        assert!(server.handshakes.recv().await.unwrap().is_ok());
        assert_eq!(connection.stats().path.current_mtu, 16_000);
        connection.close(0u32.into(), b"done");
        close(endpoint).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_certificate_of_another_ca_is_refused() {
    bounded(async {
        let (_dir, certificates) = dev_certificates();
        let (_other_dir, other) = dev_certificates();
        let mut server = TestServer::start(&certificates);
        let client = ClientTls::from_paths(
            &certificates.ca_cert(),
            &other.client_cert(),
            &other.client_key(),
        )
        .unwrap();

        assert_refused(
            &mut server,
            client.quic_config(&QuicTuning::default(), true),
        )
        .await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    bounded(async {
        let (_dir, certificates) = dev_certificates();
        let mut server = TestServer::start(&certificates);
        let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .unwrap()
            .with_root_certificates(read_trust_anchors(&certificates.ca_cert()).unwrap())
            .with_no_client_auth();
        config.alpn_protocols = vec![sidestream_proto::ALPN.to_vec()];

        assert_refused(&mut server, quic_config(config)).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_refuses_a_sidecar_of_another_ca() {
    bounded(async {
        let (_dir, certificates) = dev_certificates();
        let (_other_dir, other) = dev_certificates();
        let mut server = TestServer::start(&certificates);
        let client = ClientTls::from_paths(
            &other.ca_cert(),
            &certificates.client_cert(),
            &certificates.client_key(),
        )
        .unwrap();
        let endpoint = client_endpoint();

        let error = client
            .connect(&endpoint, server.addr, "localhost", &QuicTuning::default())
            .await
            .unwrap_err();

        assert!(
            matches!(
                &error,
                ConnectError::Handshake { source: ConnectionError::TransportError(error), .. }
                    if error.reason.contains("UnknownIssuer")
            ),
            "{error:?}"
        );
        assert!(server.handshakes.recv().await.unwrap().is_err());
        close(endpoint).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_wrong_alpn_is_refused() {
    bounded(async {
        let (_dir, certificates) = dev_certificates();
        let mut server = TestServer::start(&certificates);
        let client = ClientTls::from_dir(certificates.dir()).unwrap();
        let mut config = rustls::ClientConfig::clone(&client.rustls_config());
        config.alpn_protocols = vec![b"sidestream/0".to_vec()];

        assert_refused(&mut server, quic_config(config)).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_whose_files_were_renewed_connects_with_the_new_ones_and_keeps_its_own_when_they_are_bad()
 {
    bounded(async {
        let (_old_dir, old) = dev_certificates();
        let (_new_dir, new) = dev_certificates();
        let files = tempfile::tempdir().unwrap();
        let [ca, cert, key] = ["ca.pem", "client.pem", "client.key"].map(|f| files.path().join(f));
        let copy = |from: &DevCertificates| {
            for (source, to) in [
                (from.ca_cert(), &ca),
                (from.client_cert(), &cert),
                (from.client_key(), &key),
            ] {
                // Renamed into place, as a Secret's files are: a new inode, whatever the
                // file system's timestamp granularity.
                let next = to.with_extension("next");
                std::fs::copy(source, &next).unwrap();
                std::fs::rename(&next, to).unwrap();
            }
        };
        copy(&old);
        let client = ClientTls::from_paths(&ca, &cert, &key).unwrap();
        let first = client.rustls_config();
        assert!(
            Arc::ptr_eq(&first, &client.rustls_config()),
            "nothing changed"
        );

        // A half-written renewal is not taken: the client keeps what it read.
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\n").unwrap();
        assert!(Arc::ptr_eq(&first, &client.rustls_config()));
        assert!(
            Arc::ptr_eq(&first, &client.rustls_config()),
            "tried again, still bad"
        );

        // The new CA's files, whole: a clone made before connects to a server of that CA.
        let renewed = client.clone();
        copy(&new);
        let mut server = TestServer::start(&new);
        let endpoint = client_endpoint();
        let connection = renewed
            .connect(&endpoint, server.addr, "localhost", &QuicTuning::default())
            .await
            .unwrap();
        let identity = server.handshakes.recv().await.unwrap().unwrap();
        assert_eq!(identity.as_str(), DEV_CLIENT_IDENTITY);
        assert!(!Arc::ptr_eq(&first, &client.rustls_config()));
        connection.close(0u32.into(), b"done");
        close(endpoint).await;
        server.stop().await;
    })
    .await;
}

/// A sidecar endpoint that accepts connections, reports each handshake's outcome, and echoes
/// every bidirectional stream.
struct TestServer {
    endpoint: Endpoint,
    addr: SocketAddr,
    handshakes: mpsc::UnboundedReceiver<Result<ClientIdentity, ConnectionError>>,
    task: JoinHandle<()>,
}

impl TestServer {
    fn start(certificates: &DevCertificates) -> Self {
        Self::start_tuned(certificates, &QuicTuning::default())
    }

    fn start_tuned(certificates: &DevCertificates, tuning: &QuicTuning) -> Self {
        let tls = ServerTls::from_dev(certificates).unwrap();
        let endpoint = tls.bind(loopback(), tuning).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let (report, handshakes) = mpsc::unbounded_channel();
        let accepting = endpoint.clone();
        let task = tokio::spawn(async move {
            // Dropped when accepting ends, which aborts the echo tasks.
            let mut connections = JoinSet::new();
            while let Some(incoming) = accepting.accept().await {
                match incoming.await {
                    Ok(connection) => {
                        let _ = report.send(Ok(ClientIdentity::of(&connection).unwrap()));
                        connections.spawn(echo(connection));
                    }
                    Err(error) => {
                        let _ = report.send(Err(error));
                    }
                }
            }
        });
        Self {
            endpoint,
            addr,
            handshakes,
            task,
        }
    }

    async fn stop(self) {
        self.endpoint.close(0u32.into(), b"done");
        self.task.await.unwrap();
        self.endpoint.wait_idle().await;
    }
}

/// Accepts every connection to `endpoint` (a handshake needs the server to accept it) and
/// echoes its streams, until the endpoint is closed.
fn accept_all(endpoint: &Endpoint) -> JoinHandle<()> {
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            if let Ok(connection) = incoming.await {
                tokio::spawn(echo(connection));
            }
        }
    })
}

async fn echo(connection: Connection) {
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let Ok(bytes) = recv.read_to_end(1 << 20).await else {
            return;
        };
        if send.write_all(&bytes).await.is_ok() {
            let _ = send.finish();
        }
    }
}

/// Connects with `config` and checks that the handshake fails on both sides. In TLS 1.3 the
/// client may finish its handshake before the sidecar has judged its certificate; then the
/// sidecar closes the connection right away.
async fn assert_refused(server: &mut TestServer, config: quinn::ClientConfig) {
    let endpoint = client_endpoint();
    let connecting = endpoint
        .connect_with(config, server.addr, "localhost")
        .unwrap();
    if let Ok(connection) = connecting.await {
        let reason = connection.closed().await;
        assert!(
            matches!(reason, ConnectionError::ConnectionClosed(_)),
            "{reason:?}"
        );
    }
    let seen = server.handshakes.recv().await.unwrap();
    assert!(
        matches!(seen, Err(ConnectionError::TransportError(_))),
        "{seen:?}"
    );
    // Not `wait_idle`: a connection closed during its handshake drains for three probe
    // timeouts at the initial RTT estimate (about 3 s); the test runtime's end drops it.
    endpoint.close(0u32.into(), b"done");
}

fn quic_config(config: rustls::ClientConfig) -> quinn::ClientConfig {
    let mut quic = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(config).unwrap()));
    quic.transport_config(Arc::new(QuicTuning::default().client_transport(true)));
    quic
}

fn alpn(data: Box<dyn std::any::Any>) -> Option<Vec<u8>> {
    data.downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

fn dev_certificates() -> (tempfile::TempDir, DevCertificates) {
    let dir = tempfile::tempdir().unwrap();
    let certificates = DevCertificates::ensure(dir.path(), &[]).unwrap();
    (dir, certificates)
}

fn all_files(certificates: &DevCertificates) -> [std::path::PathBuf; 6] {
    [
        certificates.ca_cert(),
        certificates.ca_key(),
        certificates.server_cert(),
        certificates.server_key(),
        certificates.client_cert(),
        certificates.client_key(),
    ]
}

fn client_endpoint() -> Endpoint {
    bind_endpoint(loopback(), None, &QuicTuning::default()).unwrap()
}

async fn close(endpoint: Endpoint) {
    endpoint.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Runs a test body with a time bound, so a failed handshake cannot hang the suite.
async fn bounded(test: impl Future<Output = ()>) {
    timeout(Duration::from_secs(20), test)
        .await
        .expect("test timed out");
}

#[tokio::test]
async fn a_peer_is_checked_by_its_certificate_not_by_the_address_called() {
    bounded(async {
        let (dir, certificates) = dev_certificates();
        let peer = PeerTls::from_dev(&certificates).unwrap();
        // 127.0.0.3 is not among the certificate's names (localhost, 127.0.0.1, ::1).
        let server = peer
            .bind(SocketAddr::from(([127, 0, 0, 3], 0)), &QuicTuning::default())
            .unwrap();
        let addr = server.local_addr().unwrap();
        let accept = accept_all(&server);
        let caller = peer.bind(loopback(), &QuicTuning::default()).unwrap();
        let connection = caller
            .connect(addr, &addr.ip().to_string())
            .unwrap()
            .await
            .unwrap();
        connection.close(0u32.into(), b"done");

        // A certificate of the same CA, for a server, of another identity: refused for the
        // name it lacks.
        let ca_pem = std::fs::read_to_string(certificates.ca_cert()).unwrap();
        let ca_key = rcgen::KeyPair::from_pem(
            &std::fs::read_to_string(certificates.ca_key()).unwrap(),
        )
        .unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "not a sidecar");
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let stranger_cert = dir.path().join("stranger.pem");
        let stranger_key = dir.path().join("stranger.key");
        std::fs::write(&stranger_cert, params.signed_by(&key, &issuer).unwrap().pem()).unwrap();
        std::fs::write(&stranger_key, key.serialize_pem()).unwrap();
        let stranger = PeerTls::from_paths(&certificates.ca_cert(), &stranger_cert, &stranger_key)
            .unwrap()
            .bind(SocketAddr::from(([127, 0, 0, 3], 0)), &QuicTuning::default())
            .unwrap();
        let stranger_addr = stranger.local_addr().unwrap();
        let stranger_accept = accept_all(&stranger);
        let refused = caller
            .connect(stranger_addr, &stranger_addr.ip().to_string())
            .unwrap()
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, ConnectionError::TransportError(error) if error.reason.contains("not valid for name")),
            "{refused:?}"
        );

        stranger.close(0u32.into(), b"done");
        caller.close(0u32.into(), b"done");
        server.close(0u32.into(), b"done");
        accept.await.unwrap();
        stranger_accept.await.unwrap();
        let _ = dir;
    })
    .await;
}
