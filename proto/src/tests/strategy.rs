//! Proptest strategies for every message of the protocol, with arbitrary field contents:
//! any strings, any bytes, any enum numbers (known or not), present and absent options.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

use crate::v1::{
    AssignedPartition, Assignment, ClaimPartition, ClaimPartitionResult, CommitOffset,
    CommitOffsetResult, CommittedOffset, CreateTopic, CreateTopicResult, DeleteTopic,
    DeleteTopicResult, DescribeTopic, DescribeTopicResult, Earliest, Fetch, FetchCommittedOffsets,
    FetchCommittedOffsetsResult, FetchResult, FsyncPolicy, Latest, ListTopics, ListTopicsResult,
    Metadata, MetadataResult, Node, PartitionDescription, Publish, PublishResult, Request,
    Response, Subscribe, SubscriptionBatches, TopicConfig, TopicDescription, TopicSummary, request,
    response, subscribe,
};

pub(crate) fn request() -> impl Strategy<Value = Request> {
    (any::<String>(), any::<String>(), of(request_body())).prop_map(
        |(client_id, traceparent, body)| Request {
            client_id,
            traceparent,
            body,
        },
    )
}

pub(crate) fn response() -> impl Strategy<Value = Response> {
    (any::<i32>(), any::<String>(), of(response_body())).prop_map(|(code, message, body)| {
        Response {
            code,
            message,
            body,
        }
    })
}

fn request_body() -> impl Strategy<Value = request::Body> {
    prop_oneof![
        create_topic().prop_map(request::Body::CreateTopic),
        any::<String>().prop_map(|name| request::Body::DeleteTopic(DeleteTopic { name })),
        Just(request::Body::ListTopics(ListTopics {})),
        any::<String>().prop_map(|name| request::Body::DescribeTopic(DescribeTopic { name })),
        publish().prop_map(request::Body::Publish),
        fetch().prop_map(request::Body::Fetch),
        subscribe().prop_map(request::Body::Subscribe),
        commit_offset().prop_map(request::Body::CommitOffset),
        (any::<String>(), any::<String>(), of(any::<u32>())).prop_map(
            |(group, topic, partition)| {
                request::Body::FetchCommittedOffsets(FetchCommittedOffsets {
                    group,
                    topic,
                    partition,
                })
            }
        ),
        Just(request::Body::Metadata(Metadata {})),
        (
            any::<String>(),
            any::<String>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(group, topic, partition, generation, claimant)| {
                request::Body::ClaimPartition(ClaimPartition {
                    group,
                    topic,
                    partition,
                    generation,
                    claimant,
                })
            }),
    ]
}

fn response_body() -> impl Strategy<Value = response::Body> {
    prop_oneof![
        of(topic_description())
            .prop_map(|topic| response::Body::CreateTopic(CreateTopicResult { topic })),
        Just(response::Body::DeleteTopic(DeleteTopicResult {})),
        vec(topic_summary(), 0..4)
            .prop_map(|topics| response::Body::ListTopics(ListTopicsResult { topics })),
        of(topic_description())
            .prop_map(|topic| response::Body::DescribeTopic(DescribeTopicResult { topic })),
        publish_result().prop_map(response::Body::Publish),
        fetch_result().prop_map(response::Body::Fetch),
        assignment().prop_map(response::Body::Assignment),
        Just(response::Body::CommitOffset(CommitOffsetResult {})),
        vec(committed_offset(), 0..4).prop_map(|offsets| {
            response::Body::FetchCommittedOffsets(FetchCommittedOffsetsResult { offsets })
        }),
        metadata_result().prop_map(response::Body::Metadata),
        subscription_batches().prop_map(response::Body::SubscriptionBatches),
        (of(any::<u64>()), any::<u64>()).prop_map(|(offset, generation)| {
            response::Body::ClaimPartition(ClaimPartitionResult { offset, generation })
        }),
    ]
}

fn blob() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..96).prop_map(Bytes::from)
}

fn create_topic() -> impl Strategy<Value = CreateTopic> {
    (
        any::<String>(),
        any::<u32>(),
        any::<u32>(),
        of(topic_config()),
    )
        .prop_map(
            |(name, partitions, replication_factor, config)| CreateTopic {
                name,
                partitions,
                replication_factor,
                config,
            },
        )
}

fn topic_config() -> impl Strategy<Value = TopicConfig> {
    (
        of(any::<i64>()),
        of(any::<i64>()),
        any::<i32>(),
        of((any::<i32>(), any::<u64>())),
    )
        .prop_map(
            |(retention_ms, retention_bytes, cleanup_policy, fsync)| TopicConfig {
                retention_ms,
                retention_bytes,
                cleanup_policy,
                fsync: fsync.map(|(mode, interval_ms)| FsyncPolicy { mode, interval_ms }),
            },
        )
}

fn topic_description() -> impl Strategy<Value = TopicDescription> {
    (
        any::<String>(),
        vec(partition_description(), 0..4),
        any::<u32>(),
        of(topic_config()),
    )
        .prop_map(
            |(name, partitions, replication_factor, config)| TopicDescription {
                name,
                partitions,
                replication_factor,
                config,
            },
        )
}

fn partition_description() -> impl Strategy<Value = PartitionDescription> {
    (
        any::<u32>(),
        of(any::<u64>()),
        any::<u64>(),
        any::<u64>(),
        vec(any::<u64>(), 0..4),
        vec(any::<u64>(), 0..4),
    )
        .prop_map(
            |(partition, leader, log_start_offset, high_watermark, replicas, in_sync_replicas)| {
                PartitionDescription {
                    partition,
                    leader,
                    log_start_offset,
                    high_watermark,
                    replicas,
                    in_sync_replicas,
                }
            },
        )
}

fn topic_summary() -> impl Strategy<Value = TopicSummary> {
    (any::<String>(), any::<u32>(), any::<u32>()).prop_map(
        |(name, partitions, replication_factor)| TopicSummary {
            name,
            partitions,
            replication_factor,
        },
    )
}

fn publish() -> impl Strategy<Value = Publish> {
    (
        any::<String>(),
        any::<u32>(),
        any::<i32>(),
        blob(),
        any::<u32>(),
    )
        .prop_map(|(topic, partition, acks, batch, timeout_ms)| Publish {
            topic,
            partition,
            acks,
            batch,
            timeout_ms,
        })
}

fn publish_result() -> impl Strategy<Value = PublishResult> {
    (
        any::<u32>(),
        of(any::<u64>()),
        of(any::<u64>()),
        any::<bool>(),
    )
        .prop_map(
            |(partition, base_offset, next_offset, duplicate)| PublishResult {
                partition,
                base_offset,
                next_offset,
                duplicate,
            },
        )
}

fn fetch() -> impl Strategy<Value = Fetch> {
    (
        any::<String>(),
        any::<u32>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(topic, partition, offset, max_bytes, max_wait_ms)| Fetch {
            topic,
            partition,
            offset,
            max_bytes,
            max_wait_ms,
        })
}

fn fetch_result() -> impl Strategy<Value = FetchResult> {
    (any::<u64>(), any::<u64>(), vec(blob(), 0..4)).prop_map(
        |(high_watermark, log_start_offset, batches)| FetchResult {
            high_watermark,
            log_start_offset,
            batches,
        },
    )
}

fn subscribe() -> impl Strategy<Value = Subscribe> {
    let start = prop_oneof![
        Just(subscribe::Start::Earliest(Earliest {})),
        Just(subscribe::Start::Latest(Latest {})),
        any::<u64>().prop_map(subscribe::Start::Offset),
        any::<i64>().prop_map(subscribe::Start::TimestampMs),
    ];
    (
        any::<String>(),
        of(any::<String>()),
        vec(any::<u32>(), 0..4),
        of(start),
        any::<u32>(),
    )
        .prop_map(|(topic, group, partitions, start, max_bytes)| Subscribe {
            topic,
            group,
            partitions,
            max_bytes,
            start,
        })
}

fn assignment() -> impl Strategy<Value = Assignment> {
    let partition = (any::<u32>(), any::<u64>())
        .prop_map(|(partition, offset)| AssignedPartition { partition, offset });
    (any::<u64>(), vec(partition, 0..4)).prop_map(|(generation, partitions)| Assignment {
        generation,
        partitions,
    })
}

fn subscription_batches() -> impl Strategy<Value = SubscriptionBatches> {
    (any::<u32>(), any::<u64>(), vec(blob(), 0..4)).prop_map(
        |(partition, high_watermark, batches)| SubscriptionBatches {
            partition,
            high_watermark,
            batches,
        },
    )
}

fn commit_offset() -> impl Strategy<Value = CommitOffset> {
    (
        any::<String>(),
        any::<String>(),
        any::<u32>(),
        any::<u64>(),
        of(any::<u64>()),
    )
        .prop_map(
            |(group, topic, partition, offset, generation)| CommitOffset {
                group,
                topic,
                partition,
                offset,
                generation,
            },
        )
}

fn committed_offset() -> impl Strategy<Value = CommittedOffset> {
    (any::<u32>(), any::<u64>())
        .prop_map(|(partition, offset)| CommittedOffset { partition, offset })
}

fn metadata_result() -> impl Strategy<Value = MetadataResult> {
    let node = (
        any::<u64>(),
        any::<String>(),
        any::<String>(),
        any::<bool>(),
    )
        .prop_map(|(id, client_address, peer_address, voter)| Node {
            id,
            client_address,
            peer_address,
            voter,
        });
    (
        any::<u64>(),
        vec(node, 0..4),
        vec(topic_description(), 0..3),
        any::<u64>(),
    )
        .prop_map(|(node_id, nodes, topics, metadata_leader)| MetadataResult {
            node_id,
            nodes,
            topics,
            metadata_leader,
        })
}
