//! Spreading a topic's partitions' stream leaders over the cluster's servers, on the runtime.
//!
//! JetStream elects each replicated stream's leader among its replicas by itself, and the
//! elections of a topic's streams are independent: on three servers it often puts several of
//! a topic's partitions, sometimes five of six, on one server, which then takes all their
//! writes while the others replicate. After a topic's streams are made or grown, [`spread`]
//! asks the leaders of the servers that lead more than their share (the topic's partitions
//! divided by its servers, rounded up) to step down in favour of a replica on a server that
//! leads fewer, as Kafka's preferred-leader election moves leadership back to spread it. The
//! one door is [`spread`]; it changes only who leads (JetStream's stepdown with a preferred
//! server, nats-server 2.11 and later), never what is stored, and a stepdown refused or
//! unanswered leaves the leader where it was.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::Context;
use serde::{Deserialize, Serialize};

use super::record;

/// How long a stream's information or a stepdown may take before it is left as it is.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// JetStream's stepdown request, naming the server to lead next.
#[derive(Serialize)]
struct Stepdown<'a> {
    /// Where the new leader is to be.
    placement: Preferred<'a>,
}

/// The server a stepdown prefers.
#[derive(Serialize)]
struct Preferred<'a> {
    /// Its name.
    preferred: &'a str,
}

/// JetStream's answer to a stepdown.
#[derive(Deserialize)]
struct Answer {
    /// Whether the leader stepped down.
    #[serde(default)]
    success: bool,
    /// Why not.
    #[serde(default)]
    error: Option<ApiError>,
}

/// An error JetStream's API answers.
#[derive(Deserialize)]
struct ApiError {
    /// What went wrong.
    #[serde(default)]
    description: Option<String>,
}

/// A partition's stream: its leader's server and the servers of its replicas, the leader's too.
struct Led {
    /// The stream's name.
    stream: String,
    /// The server that leads it.
    leader: String,
    /// The servers that hold it.
    peers: Vec<String>,
}

/// Moves the leaders of `topic`'s `partitions` streams so that no server leads more than its
/// share of them, where replicas allow. Returns how many stepdowns were asked for.
pub async fn spread(js: &Context, topic: &str, partitions: u32) -> usize {
    let mut led = Vec::new();
    for partition in 0..partitions {
        if let Some(one) = leader_of(js, &record::stream_name(topic, partition)).await {
            led.push(one);
        }
    }
    let moves = plan(&led);
    let mut asked = 0;
    for (stream, to) in moves {
        let subject = format!("STREAM.LEADER.STEPDOWN.{stream}");
        let request = Stepdown { placement: Preferred { preferred: &to } };
        let answer = js.request::<_, _, Answer>(subject, &request);
        let why = match tokio::time::timeout(ASK_TIMEOUT, answer).await {
            Ok(Ok(Answer { success: true, .. })) => {
                asked += 1;
                continue;
            }
            Ok(Ok(Answer { error, .. })) => error.and_then(|e| e.description).unwrap_or_default(),
            Ok(Err(error)) => error.to_string(),
            Err(_) => "no answer in time".to_owned(),
        };
        tracing::debug!(%topic, %stream, %to, %why, "a stream's leader was not moved");
    }
    if asked > 0 {
        tracing::info!(%topic, moved = asked, "partitions' leaders spread over the servers");
    }
    asked
}

/// Who leads stream `name` and where its replicas are; `None` for a stream of one replica,
/// without a leader, or that cannot be read in time.
async fn leader_of(js: &Context, name: &str) -> Option<Led> {
    let info = async {
        let mut stream = js.get_stream(name).await.ok()?;
        stream.info().await.ok().and_then(|info| info.cluster.clone())
    };
    let cluster = tokio::time::timeout(ASK_TIMEOUT, info).await.ok()??;
    let leader = cluster.leader?;
    let mut peers: Vec<String> = cluster.replicas.into_iter().map(|p| p.name).collect();
    if peers.is_empty() {
        return None;
    }
    peers.push(leader.clone());
    Some(Led { stream: name.to_owned(), leader, peers })
}

/// The stepdowns that spread `led`'s leaders: each a stream and the server to lead it. A
/// server leading more than its share gives streams, one at a time, to the server of the
/// stream's replicas that leads fewest, while that one leads fewer than its share.
fn plan(led: &[Led]) -> Vec<(String, String)> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for one in led {
        for peer in &one.peers {
            count.entry(peer).or_default();
        }
        *count.entry(&one.leader).or_default() += 1;
    }
    if count.is_empty() {
        return Vec::new();
    }
    let share = led.len().div_ceil(count.len());
    let mut moves = Vec::new();
    for one in led {
        if count[one.leader.as_str()] <= share {
            continue;
        }
        let to = one.peers.iter().map(String::as_str).min_by_key(|peer| (count[peer], *peer));
        let Some(to) = to.filter(|to| count[to] < share) else { continue };
        *count.entry(&one.leader).or_default() -= 1;
        *count.entry(to).or_default() += 1;
        moves.push((one.stream.clone(), to.to_owned()));
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn led(stream: &str, leader: &str) -> Led {
        let peers = ["n0", "n1", "n2"].map(str::to_owned).to_vec();
        Led { stream: stream.to_owned(), leader: leader.to_owned(), peers }
    }

    /// How many of `led`'s streams each server leads once `moves` are made.
    fn after(led: &[Led], moves: &[(String, String)]) -> Vec<usize> {
        let leader = |one: &Led| {
            moves.iter().find(|(s, _)| *s == one.stream).map_or(one.leader.clone(), |m| m.1.clone())
        };
        ["n0", "n1", "n2"].map(|n| led.iter().filter(|one| leader(one) == n).count()).to_vec()
    }

    #[test]
    fn five_leaders_of_six_on_one_server_are_spread_two_to_each() {
        let streams: Vec<Led> = ["n2", "n0", "n2", "n2", "n2", "n2"]
            .iter()
            .enumerate()
            .map(|(at, leader)| led(&format!("s{at}"), leader))
            .collect();
        let moves = plan(&streams);
        assert_eq!(moves.len(), 3, "{moves:?}");
        assert_eq!(after(&streams, &moves), [2, 2, 2]);
    }

    #[test]
    fn leaders_spread_already_or_one_stream_are_left_alone() {
        let spread: Vec<Led> = ["n0", "n1", "n2", "n0"]
            .iter()
            .enumerate()
            .map(|(at, leader)| led(&format!("s{at}"), leader))
            .collect();
        assert!(plan(&spread).is_empty());
        assert!(plan(&[led("s0", "n1")]).is_empty());
        assert!(plan(&[]).is_empty());
    }

    #[test]
    fn a_leader_moves_only_to_a_server_holding_a_replica() {
        let only = |stream: &str, leader: &str, peers: [&str; 2]| Led {
            stream: stream.to_owned(),
            leader: leader.to_owned(),
            peers: peers.map(str::to_owned).to_vec(),
        };
        // Both streams live on n0 and n1 only: one of them moves to n1.
        let streams = [only("a", "n0", ["n0", "n1"]), only("b", "n0", ["n0", "n1"])];
        let moves = plan(&streams);
        assert_eq!(moves, [("a".to_owned(), "n1".to_owned())]);
    }
}
