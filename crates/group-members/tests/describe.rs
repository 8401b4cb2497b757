//! On the test broker: the members of a group of each protocol, as its coordinator lists them.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use tabs::kafka::{create_consumer, ConsumerOptions, GroupProtocol, KafkaArgs};
use testkit::{require_broker, unique};

const TIMEOUT: Duration = Duration::from_secs(10);

fn member(bootstrap: &str, group: &str, protocol: GroupProtocol, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = create_consumer(
        &KafkaArgs::plaintext(bootstrap),
        &ConsumerOptions {
            group: group.to_owned(),
            protocol,
            read_committed: true,
            prefetch_kbytes: 64,
        },
        DefaultConsumerContext,
    )
    .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

/// Polls every member until each holds partitions (the group is stable).
fn until_assigned(members: &[&BaseConsumer]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !members
        .iter()
        .all(|m| m.assignment().is_ok_and(|a| a.count() > 0))
    {
        assert!(
            Instant::now() < deadline,
            "the group never gave every member a partition"
        );
        for m in members {
            let _ = m.poll(Duration::from_millis(50));
        }
    }
}

async fn lists_every_member_and_knows_itself(protocol: GroupProtocol) {
    let bootstrap = require_broker!();
    let topic = unique("members");
    testkit::create_topic(&bootstrap, &topic, 4).await;
    let group = unique("members-group");
    let (a, b) = (
        member(&bootstrap, &group, protocol, &topic),
        member(&bootstrap, &group, protocol, &topic),
    );
    until_assigned(&[&a, &b]);

    let seen = group_members::describe(a.client(), &group, TIMEOUT).unwrap();
    assert_eq!(seen.members.len(), 2, "{protocol:?}: {seen:?}");
    let me = seen.me.clone().expect("a member knows its id");
    assert!(seen.members.contains(&me), "{protocol:?}: {seen:?}");
    let other = group_members::describe(b.client(), &group, TIMEOUT).unwrap();
    assert_eq!(other.members, seen.members, "both see the same group");
    assert_ne!(other.me, seen.me);

    // One leaves: the coordinator lists one member.
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let _ = a.poll(Duration::from_millis(50));
        let now = group_members::describe(a.client(), &group, TIMEOUT).unwrap();
        if now.members == [me.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "{protocol:?}: still {now:?}");
    }
}

#[tokio::test]
async fn lists_every_member_of_a_consumer_protocol_group() {
    lists_every_member_and_knows_itself(GroupProtocol::Consumer).await;
}

#[tokio::test]
async fn lists_every_member_of_a_classic_group() {
    lists_every_member_and_knows_itself(GroupProtocol::Classic).await;
}

#[tokio::test]
async fn a_group_nobody_joined_has_no_members() {
    let bootstrap = require_broker!();
    let client: BaseConsumer = create_consumer(
        &KafkaArgs::plaintext(&bootstrap),
        &ConsumerOptions {
            group: unique("nobody"),
            protocol: GroupProtocol::Consumer,
            read_committed: true,
            prefetch_kbytes: 64,
        },
        DefaultConsumerContext,
    )
    .unwrap();
    let group = group_members::describe(client.client(), &unique("never-joined"), TIMEOUT).unwrap();
    assert!(group.members.is_empty(), "{group:?}");
    // A KIP-848 client picks its member id before it joins anything: an id, but in no group's list.
}
