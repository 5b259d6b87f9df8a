//! Bad input through the SDK gets a typed error naming what was wrong, and the sidecar keeps
//! serving. (Garbage and oversized frames on a raw QUIC stream are tested beside the server,
//! `sidecar/src/server/tests.rs`; the CLI's bad input in `cli.rs`.)

use sidestream::{Error, StartAt};
use sidestream_proto::ErrorCode;
use tokio::time::timeout;

use crate::events::OrderPlaced;
use crate::{PATIENCE, create_topic, sidecar};

fn sidecar_code(error: &Error) -> Option<ErrorCode> {
    error.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topics_bad_names_and_offsets_are_named() {
    let (_dir, sidecar) = sidecar();
    let client = sidecar.client("bad-input").await;

    // An unknown topic.
    let error = client
        .publish(&OrderPlaced {
            order_id: "o".into(),
            sequence: 0,
        })
        .await
        .expect_err("the topic does not exist");
    assert_eq!(
        sidecar_code(&error),
        Some(ErrorCode::UnknownTopic),
        "{error}"
    );
    assert!(error.to_string().contains("orders"), "{error}");

    // A topic name with illegal characters.
    let error = client
        .create_topic("orders/eu", sidestream::TopicSettings::default())
        .await
        .expect_err("the name is refused");
    assert!(matches!(error, Error::InvalidTopicName { .. }), "{error}");
    assert!(error.to_string().contains("'/'"), "{error}");

    // An offset past the end.
    create_topic(&client, "orders", 1).await;
    client
        .publish(&OrderPlaced {
            order_id: "o".into(),
            sequence: 0,
        })
        .await
        .expect("published");
    let error = client
        .subscribe::<OrderPlaced>()
        .from(StartAt::Offset(5))
        .start()
        .await
        .expect_err("offset 5 is past the end");
    assert_eq!(
        sidecar_code(&error),
        Some(ErrorCode::OffsetOutOfRange),
        "{error}"
    );
    assert!(error.to_string().contains("offset 5"), "{error}");

    // The sidecar keeps serving the same client.
    let mut subscription = client
        .subscribe::<OrderPlaced>()
        .from(StartAt::Offset(0))
        .start()
        .await
        .expect("offset 0 is fine");
    let delivery = timeout(PATIENCE, subscription.next())
        .await
        .expect("in time")
        .expect("an item")
        .expect("an event");
    assert_eq!(delivery.offset, 0);
    client.close().await.expect("the client closes cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_refused() {
    let (_dir, sidecar) = sidecar();
    let other = tempfile::tempdir().expect("a temporary directory");
    let foreign = sidestream_sidecar::DevCertificates::ensure(other.path(), &[])
        .expect("another CA and its certificates");
    // The foreign client trusts the real sidecar's CA (so the failure is the sidecar refusing
    // the client, not the client refusing the sidecar) but presents a certificate of its own CA.
    let tls = sidestream::transport::ClientTls::from_paths(
        &sidecar.tls_dir().join("ca.pem"),
        &foreign.client_cert(),
        &foreign.client_key(),
    )
    .expect("readable certificates");
    let started = std::time::Instant::now();
    let result = async {
        let client = sidestream::Client::builder("intruder")
            .sidecar(sidecar.addr().to_string())
            .tls(tls)
            .connect()
            .await?;
        client.list_topics().await
    }
    .await;
    let error = result.expect_err("the sidecar refuses a certificate of another CA");
    // Refused at once, not retried until the request timeout (30 s): the same certificate
    // is refused on every attempt.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "refused after {:?}: {error}",
        started.elapsed()
    );
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    assert!(
        text.to_lowercase().contains("certificate")
            || text.contains("closed")
            || text.contains("refused"),
        "the error says why: {text}"
    );

    // The sidecar still serves clients with a good certificate.
    let good = sidecar.client("good").await;
    good.list_topics().await.expect("served");
    good.close().await.expect("the client closes cleanly");
}
