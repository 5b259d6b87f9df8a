//! Creating the shop's topics, for services that start before anyone else made them.

use sidestream::{Client, TopicSettings};

use crate::{ORDERS_TOPIC, PAYMENTS_TOPIC};

/// Creates `orders` and `payments` with [`PARTITIONS`] partitions each, unless they exist.
///
/// Every service calls it on start, so none depends on another having started first; the
/// sidecar answers `TOPIC_ALREADY_EXISTS` to all but the first, which is fine here (an
/// existing topic keeps its own partition count).
///
/// # Errors
///
/// Any other error of [`Client::create_topic`], naming the topic.
pub async fn create_topics(client: &Client) -> Result<(), sidestream::Error> {
    for topic in [ORDERS_TOPIC, PAYMENTS_TOPIC] {
        match client
            .create_topic(topic, TopicSettings::new().partitions(PARTITIONS))
            .await
        {
            Ok(_) => tracing::info!(topic, partitions = PARTITIONS, "topic created"),
            Err(sidestream::Error::TopicAlreadyExists { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Partitions of each topic [`create_topics`] creates.
pub const PARTITIONS: u32 = 3;
