//! Whether a logged-in Kafka connection may take part in a group: Kafka's group membership
//! (`JoinGroup`, `SyncGroup`, `Heartbeat`, `LeaveGroup`) and `OffsetFetch` need `consume` on
//! the group, as the native `join_group` does.
//!
//! The gateway's coordinator keeps Kafka's membership itself, so the broker never sees those
//! requests; and the gateway holds no users file, so it cannot tell a user's rights by itself.
//! It asks the broker, in a way the native protocol already answers without changing anything:
//! a `join_group` carrying claim token 0, which no claim holds (the broker's tokens are keyed
//! hashes: 0 comes up with odds of one in 2^64 a claim). The broker checks the permissions
//! first (`consume` on the topic and on the group: `312 forbidden`) and the claim after
//! (`302 unknown_claim`), so `302` says the user may consume the group and that topic, and
//! nothing was joined. A probe needs a topic; the topics are those the members subscribe to
//! (the consumer protocol's subscription in their `JoinGroup` metadata). A user who may consume
//! the group but none of the topics it names is refused too: such a member could read nothing.
//!
//! What a connection was granted is remembered for the connection's life (at most
//! [`MAX_GRANTED`] groups), so a member's heartbeats cost no extra round trip.

use std::collections::HashSet;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::Decodable;
use kafka_protocol::ResponseError;

use client::Client;
use protocol::{ErrorCode, GroupStart};

/// The most groups one connection's grants remember; past it a group is probed each time.
pub const MAX_GRANTED: usize = 64;

/// The most distinct topics probed for one decision.
pub const MAX_PROBED_TOPICS: usize = 16;

/// The most groups one `ListGroups` probes; past them, groups not granted before are left out.
/// Each probe is up to [`MAX_PROBED_TOPICS`] native requests, so a listing costs the broker at
/// most 256, however many groups the gateway holds.
pub const MAX_LISTING_PROBES: usize = 16;

/// The claim token of a probe: held by no claim.
const PROBE_TOKEN: u64 = 0;

/// What one logged-in connection may do with groups.
#[derive(Debug, Default)]
pub struct GroupRights {
    /// The groups this connection's user was found to have `consume` on.
    granted: HashSet<String>,
}

impl GroupRights {
    /// Whether `group` was granted to this connection before.
    pub fn granted(&self, group: &str) -> bool {
        self.granted.contains(group)
    }

    /// Whether `client`'s user may consume `group`: 0, or the Kafka error code to answer
    /// (`GROUP_AUTHORIZATION_FAILED`, or what the broker's failure maps to), probed with
    /// `candidates` (the first [`MAX_PROBED_TOPICS`] distinct ones).
    pub fn check(
        &mut self,
        client: &mut Client,
        group: &str,
        candidates: impl IntoIterator<Item = String>,
    ) -> i16 {
        if self.granted.contains(group) {
            return 0;
        }
        let mut topics: Vec<String> = Vec::new();
        for topic in candidates {
            if topics.len() == MAX_PROBED_TOPICS {
                break;
            }
            if !topics.contains(&topic) {
                topics.push(topic);
            }
        }
        for topic in &topics {
            match client.join_group(PROBE_TOKEN, group, topic, GroupStart::default()) {
                // Permissions are checked before the claim: both rights are there.
                Err(e) if e.broker_code() == Some(ErrorCode::UnknownClaim) => {
                    if self.granted.len() < MAX_GRANTED {
                        self.granted.insert(group.to_owned());
                    }
                    return 0;
                }
                Err(e) if e.broker_code() == Some(ErrorCode::Forbidden) => {}
                // A bad group or topic name: not this user's right to decide on.
                Err(e)
                    if matches!(
                        e.broker_code(),
                        Some(ErrorCode::InvalidTopicName | ErrorCode::InvalidGroupName)
                    ) => {}
                Err(e) => return crate::apis::kafka_code(&e),
                // Token 0 held by this very user: joined nothing it could not have joined.
                Ok(_) => return 0,
            }
        }
        ResponseError::GroupAuthorizationFailed.code()
    }
}

/// The topics a consumer protocol subscription names (`version`, then the topics; a later
/// version is read as the latest known, whose fields it begins with); none when it is not one.
pub fn subscribed_topics(metadata: &Bytes) -> Vec<String> {
    let mut buf = metadata.clone();
    if buf.remaining() < 2 {
        return Vec::new();
    }
    let version = buf.get_i16().clamp(0, 3);
    match ConsumerProtocolSubscription::decode(&mut buf, version) {
        Ok(subscription) => subscription.topics.iter().map(|t| t.as_str().to_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn a_subscription_names_its_topics() {
        let mut subscription = ConsumerProtocolSubscription::default();
        subscription.topics = vec![StrBytes::from_static_str("orders")];
        let mut bytes = bytes::BytesMut::new();
        bytes.extend_from_slice(&1i16.to_be_bytes());
        subscription.encode(&mut bytes, 1).unwrap();
        assert_eq!(subscribed_topics(&bytes.freeze()), vec!["orders".to_owned()]);
        assert!(subscribed_topics(&Bytes::from_static(b"\x00")).is_empty());
        assert!(subscribed_topics(&Bytes::from_static(b"\x00\x00\xff\xff\xff\xff\xff")).is_empty());
    }
}
