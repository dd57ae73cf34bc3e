//! Consumer groups from the consumer's side: reading as a member of a group (once, or following
//! the topic), acknowledging, listing groups with their lag, and resetting a group.
//!
//! A member holds a claim (the caller makes it and gives it back), joins the group on the topic
//! under it, then fetches for the group: each message goes to one member. What a member prints
//! it acknowledges afterwards, unless told not to. A message printed and never acknowledged (the
//! consumer was killed in between) goes to a member again once the broker's ack timeout has run
//! out, so every message is printed at least once, by some member of the group.

use std::io::Write;

use clap::{Args, ValueEnum};
use protocol::{
    ErrorCode, GroupFetch, GroupStart, ResetTo, DEFAULT_FETCH_BYTES, DEFAULT_FETCH_MESSAGES,
    MAX_FETCH_MESSAGES,
};

use crate::claim::{self, ClaimSpec, FOLLOW_WAIT, TOPIC_RETRY};
use crate::client::{Claimed, Client, Delivery, Joined};
use crate::output::{self, plural, safe, MessageFormat};
use crate::{ClientError, Result, Shutdown};

/// The options of `fetch` and `follow` that make them read as a member of a consumer group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct GroupArgs {
    /// Read as a member of this consumer group: each message goes to one member of the group,
    /// and the group keeps its place across runs (like Kafka's group.id).
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,

    /// With --group: do not acknowledge what is printed; acknowledge it later with
    /// `consumer ack`. Unacknowledged messages go to a member again after the broker's ack
    /// timeout.
    #[arg(long, requires = "group")]
    pub no_auto_ack: bool,

    /// With --group: where the group starts on the topic if it has never read it (like Kafka's
    /// auto.offset.reset) [default: earliest].
    #[arg(long, value_name = "WHERE", requires = "group")]
    pub group_start: Option<StartArg>,

    /// With --group: take at most N messages per request to the broker [default: 500].
    #[arg(long, value_name = "N", requires = "group", value_parser = crate::args::positive)]
    pub batch: Option<u64>,

    /// With --group: take messages of a partition even while another member holds some of
    /// it unacknowledged. Then every member gets work, however few partitions the topic has,
    /// but a partition's messages are no longer processed in order. By default, as on Kafka,
    /// a partition is read by one member at a time.
    #[arg(long, requires = "group")]
    pub unordered: bool,
}

/// Where a new group starts, as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StartArg {
    /// The topic's first kept message.
    Earliest,
    /// Only messages appended from the first join on.
    Latest,
}

/// Where `consumer group-reset` moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
#[group(required = true, multiple = false)]
pub struct ResetArgs {
    /// To the topic's first kept message: the group reads the whole topic again.
    #[arg(long)]
    pub to_earliest: bool,
    /// To the topic's end: the group skips everything there is now.
    #[arg(long)]
    pub to_latest: bool,
    /// To offset N: the next message the group reads is N.
    #[arg(long, value_name = "N")]
    pub to_offset: Option<u64>,
}

impl ResetArgs {
    /// The target as the protocol names it.
    pub fn target(&self) -> ResetTo {
        match (self.to_earliest, self.to_latest, self.to_offset) {
            (_, _, Some(offset)) => ResetTo::Offset(offset),
            (_, true, None) => ResetTo::Latest,
            _ => ResetTo::Earliest,
        }
    }
}

/// How a member reads: which group and topic, and what it does with what it gets.
#[derive(Debug, Clone)]
pub struct Reading<'a> {
    /// The group.
    pub group: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// Where the group starts if it is new on the topic.
    pub start: GroupStart,
    /// Whether printed messages are acknowledged.
    pub auto_ack: bool,
    /// At most this many messages per group fetch.
    pub batch: u32,
    /// Whether a partition is read by one member at a time, in order (Kafka's promise).
    pub ordered: bool,
    /// How messages are printed.
    pub format: &'a MessageFormat,
}

impl<'a> Reading<'a> {
    /// The reading `args` describe, of `group` on `topic`. `from_beginning` (Kafka's flag)
    /// means `--group-start earliest`.
    pub fn new(
        group: &'a str,
        topic: &'a str,
        args: &GroupArgs,
        from_beginning: bool,
        format: &'a MessageFormat,
    ) -> Self {
        let start = match args.group_start {
            Some(StartArg::Latest) if !from_beginning => GroupStart::Latest,
            Some(StartArg::Latest | StartArg::Earliest) | None => GroupStart::Earliest,
        };
        let batch = args.batch.unwrap_or(u64::from(DEFAULT_FETCH_MESSAGES));
        Reading {
            group,
            topic,
            start,
            auto_ack: !args.no_auto_ack,
            ordered: !args.unordered,
            batch: u32::try_from(batch.min(u64::from(MAX_FETCH_MESSAGES)))
                .unwrap_or(MAX_FETCH_MESSAGES),
            format,
        }
    }
}

/// A member of a group at work: its connection and claim, re-made if the broker forgets them.
pub struct Member<'a> {
    /// The connection to the broker.
    pub client: &'a mut Client,
    /// The claim held; replaced if it expires.
    pub claimed: &'a mut Claimed,
    /// How to claim again.
    pub spec: &'a ClaimSpec,
    /// What it reads and how.
    pub reading: Reading<'a>,
    /// Ends a follow.
    pub shutdown: &'a Shutdown,
    /// Whether the topic has several partitions, so that each message's is printed.
    pub spread: bool,
}

/// What one group fetch printed.
struct Printed {
    /// The partition its messages are of.
    partition: u32,
    /// The offsets printed.
    offsets: Vec<u64>,
    /// Those among them delivered before.
    redelivered: Vec<u64>,
    /// The group's committed offset when the broker replied.
    committed: u64,
    /// The topic's next offset when the broker replied.
    end: u64,
}

impl Member<'_> {
    /// Prints up to `max` messages for the group, in as many fetches as that takes, stopping
    /// early when nothing is left for the group; acknowledges them unless told not to.
    ///
    /// # Errors
    /// The topic does not exist, or a request failed.
    pub fn fetch(&mut self, max: u64, out: &mut impl Write) -> Result<()> {
        let (group, topic) = (self.reading.group, self.reading.topic);
        let joined =
            self.client.join_group(self.claimed.token, group, topic, self.reading.start)?;
        self.spread = joined.partitions > 1;
        let (mut committed, mut end) = (joined.committed_offset, joined.end_offset);
        let mut printed = 0;
        while printed < max {
            let batch = self.take(max - printed, 0, out)?;
            if batch.offsets.is_empty() {
                break;
            }
            printed += batch.offsets.len() as u64;
            (committed, end) = (batch.committed, batch.end);
            if let Some(now) = self.acknowledge(batch.partition, &batch.offsets)? {
                committed = now;
            }
        }
        out.flush().map_err(ClientError::output)?;
        let acked = match (self.reading.auto_ack || printed == 0, self.spread) {
            (true, _) => String::new(),
            (false, false) => format!(
                "; not acknowledged: acknowledge them with `consumer ack {group:?} {topic:?} \
                 OFFSET...`"
            ),
            (false, true) => format!(
                "; not acknowledged: acknowledge them with `consumer ack {group:?} {topic:?} \
                 OFFSET... --partition N`, N the number before each offset"
            ),
        };
        // Over several partitions each has its own committed offset: `consumer groups` shows
        // them all.
        let place = if self.spread {
            format!(" ({} partitions)", joined.partitions)
        } else {
            format!("; committed offset {committed} of {end}")
        };
        eprintln!(
            "read {printed} message{} of {} for group {}{place}{acked}",
            plural(printed),
            safe(topic),
            safe(group)
        );
        Ok(())
    }

    /// Prints messages for the group as they come, until Ctrl-C (or `max` messages), and
    /// acknowledges them unless told not to. Waits for a topic that does not exist yet.
    ///
    /// # Errors
    /// A request failed in a way a follow cannot get over.
    pub fn follow(&mut self, max: Option<u64>, out: &mut impl Write) -> Result<()> {
        let (group, topic) = (self.reading.group, self.reading.topic);
        let Some(joined) = self.join(false)? else { return Ok(()) };
        let (members, timeout) = (joined.members, joined.ack_timeout);
        if joined.partitions > 1 {
            eprintln!(
                "following {} ({} partitions) in group {} on logical broker {} ({members} \
                 member{}, ack timeout {timeout:?}); Ctrl-C to stop",
                safe(topic),
                joined.partitions,
                safe(group),
                self.claimed.broker,
                plural(u64::from(members)),
            );
        } else {
            eprintln!(
                "following {} in group {} on logical broker {} ({members} member{}, committed \
                 offset {} of {}, ack timeout {timeout:?}); Ctrl-C to stop",
                safe(topic),
                safe(group),
                self.claimed.broker,
                plural(u64::from(members)),
                joined.committed_offset,
                joined.end_offset,
            );
        }
        let mut printed = 0;
        let wait_ms = FOLLOW_WAIT.min(self.client.max_hold()).as_millis() as u64;
        while !self.shutdown.is_signalled() && !matches!(max, Some(max) if printed >= max) {
            let want = max.map_or(u64::MAX, |max| max - printed);
            match self.take(want, wait_ms, out) {
                Ok(batch) => {
                    printed += batch.offsets.len() as u64;
                    self.acknowledge(batch.partition, &batch.offsets)?;
                }
                Err(ClientError::Interrupted) => break,
                Err(e) if e.broker_code() == Some(ErrorCode::UnknownClaim) => {
                    claim::reclaim(self.client, self.claimed, self.spec)?;
                    if self.join(true)?.is_none() {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.broker_code(),
                        Some(ErrorCode::UnknownMember | ErrorCode::UnknownTopic)
                    ) =>
                {
                    if self.join(true)?.is_none() {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        eprintln!(
            "read {printed} message{} of {} for group {}",
            plural(printed),
            safe(topic),
            safe(group)
        );
        Ok(())
    }

    /// Joins the group, waiting for the topic if it does not exist (yet, or any more after
    /// it was `seen`); `None` when Ctrl-C came first.
    fn join(&mut self, seen: bool) -> Result<Option<Joined>> {
        let (group, topic) = (self.reading.group, self.reading.topic);
        let mut waiting = false;
        while !self.shutdown.is_signalled() {
            let start = self.reading.start;
            let (client, shutdown) = (&mut *self.client, self.shutdown);
            let joined = retry_busy(client, shutdown, |c| {
                c.join_group(self.claimed.token, group, topic, start)
            });
            match joined {
                Ok(joined) => {
                    self.spread = joined.partitions > 1;
                    return Ok(Some(joined));
                }
                Err(ClientError::Interrupted) => return Ok(None),
                Err(e) if e.broker_code() == Some(ErrorCode::UnknownTopic) => {
                    if !waiting {
                        if seen {
                            eprintln!(
                                "topic {} was deleted; waiting for it to be made again",
                                safe(topic)
                            );
                        } else {
                            eprintln!("topic {} does not exist yet; waiting for it", safe(topic));
                        }
                        waiting = true;
                    }
                    self.shutdown.pause(TOPIC_RETRY);
                }
                Err(e) if e.broker_code() == Some(ErrorCode::UnknownClaim) => {
                    *self.claimed = claim::acquire(self.client, self.spec)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Takes and prints up to `want` messages (at most a batch), holding the fetch up to
    /// `wait_ms` when nothing is there.
    fn take(&mut self, want: u64, wait_ms: u64, out: &mut impl Write) -> Result<Printed> {
        let request = GroupFetch {
            claim: self.claimed.token,
            group: self.reading.group,
            topic: self.reading.topic,
            max_messages: u32::try_from(want.min(u64::from(self.reading.batch)))
                .unwrap_or(self.reading.batch),
            max_bytes: DEFAULT_FETCH_BYTES,
            wait_ms,
            // Unless told otherwise, a partition's messages go to one member at a time, in
            // order, as on Kafka.
            ordered: self.reading.ordered,
        };
        let (group, topic) = (self.reading.group, self.reading.topic);
        let mut format = self.reading.format.clone();
        format.print_partition = self.spread;
        let (client, shutdown) = (&mut *self.client, self.shutdown);
        let printed = retry_busy(client, shutdown, |c| {
            c.group_fetch(request.clone(), |delivery| {
                print(&mut *out, group, topic, &delivery, &format)
            })
        })?;
        out.flush().map_err(ClientError::output)?;
        if !printed.redelivered.is_empty() {
            let of_partition = if self.spread {
                format!(" of partition {}", printed.partition)
            } else {
                String::new()
            };
            eprintln!(
                "delivered again, not acknowledged in time before: offset{} {}{of_partition}",
                plural(printed.redelivered.len() as u64),
                join_offsets(&printed.redelivered)
            );
        }
        Ok(printed)
    }

    /// Acknowledges `offsets` if the member does so; returns the committed offset then. An
    /// acknowledgement the group no longer waits for (it was reset, or its topic deleted) is
    /// reported and is no error.
    fn acknowledge(&mut self, partition: u32, offsets: &[u64]) -> Result<Option<u64>> {
        if !self.reading.auto_ack || offsets.is_empty() {
            return Ok(None);
        }
        let (group, topic) = (self.reading.group, self.reading.topic);
        let (client, shutdown) = (&mut *self.client, self.shutdown);
        match retry_busy(client, shutdown, |c| c.ack(group, topic, partition, offsets)) {
            Ok(acked) => Ok(Some(acked.committed_offset)),
            Err(e)
                if matches!(
                    e.broker_code(),
                    Some(ErrorCode::NotPending | ErrorCode::UnknownGroup)
                ) =>
            {
                eprintln!(
                    "warning: could not acknowledge offsets {} of partition {partition}: {e}; was \
                     group {} reset on {}?",
                    join_offsets(offsets),
                    safe(self.reading.group),
                    safe(self.reading.topic)
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// How long a group request refused with `314` is sent again at least, whatever the client's
/// timeout: the broker answered, so the timeout (how long to wait for an answer) is not the
/// measure; members reading through two broker processes can keep changing one state for
/// seconds while messages flow (a 2 s timeout made one exit mid-stream), and a store refusing
/// for longer than this is down, not contended.
const BUSY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends a group request with `send` again, with a growing pause, while it is refused with
/// `314 store_unavailable` and the client's timeout, or [`BUSY_PATIENCE`], lasts: with the groups' states in a shared
/// store, members on two broker processes change one state at once, and the one that loses is
/// refused ("another broker process changed it at the same time") with nothing changed, so
/// that it is sent again; so is one refused while the store cannot be reached.
fn retry_busy<T>(
    client: &mut Client,
    shutdown: &Shutdown,
    mut send: impl FnMut(&mut Client) -> Result<T>,
) -> Result<T> {
    let deadline = std::time::Instant::now() + client.timeout().max(BUSY_PATIENCE);
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        match send(client) {
            // Refused with nothing changed as Ctrl-C came: the member stops as interrupted.
            Err(e)
                if e.broker_code() == Some(ErrorCode::StoreUnavailable)
                    && shutdown.is_signalled() =>
            {
                return Err(ClientError::Interrupted)
            }
            Err(e)
                if e.broker_code() == Some(ErrorCode::StoreUnavailable)
                    && std::time::Instant::now() + pause < deadline =>
            {
                shutdown.pause(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(250));
            }
            other => return other,
        }
    }
}

/// Acknowledges `offsets` of `topic`'s `partition` for `group`, and says what that did on
/// standard error.
///
/// # Errors
/// The broker refused (an offset never delivered: nothing is acknowledged then), or did not
/// answer.
pub fn ack(
    client: &mut Client,
    group: &str,
    topic: &str,
    partition: u32,
    offsets: &[u64],
) -> Result<()> {
    let acked = client.ack(group, topic, partition, offsets)?;
    let already = offsets.len() as u64 - acked.acked.min(offsets.len() as u64);
    let note = if already > 0 {
        format!(" ({already} had been acknowledged already)")
    } else {
        String::new()
    };
    eprintln!(
        "acknowledged {} offset{} of {} for group {}{note}; committed offset {}",
        acked.acked,
        plural(acked.acked),
        safe(topic),
        safe(group),
        acked.committed_offset
    );
    Ok(())
}

/// Prints the groups `group` and `topic` select, with their offsets and lag.
///
/// # Errors
/// The broker refused (`group` has no state) or did not answer, or writing failed.
pub fn list(
    client: &mut Client,
    group: Option<&str>,
    topic: Option<&str>,
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    let groups = client.list_groups(group, topic)?;
    output::write_groups(out, &groups, json).map_err(ClientError::output)
}

/// What a reset moves: a group's place on a topic, on one partition or on all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// The group.
    pub group: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// The one partition moved; `None` moves every partition.
    pub partition: Option<u32>,
}

/// Moves a group's committed offset on a topic (one partition or all), and prints where it is
/// now. Unless `force`, first asks the broker for the group's members on the topic and
/// refuses while it has any, as Kafka's tool refuses to reset an active group: a reset under
/// them changes what they read next.
///
/// # Errors
/// [`ClientError::GroupActive`]; the broker refused (no such topic or partition, an offset out
/// of range) or did not answer.
pub fn reset(
    client: &mut Client,
    target: &Target<'_>,
    to: ResetTo,
    force: bool,
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    let Target { group, topic, partition } = *target;
    let committed = crate::reset::reset_unless_active(client, group, topic, partition, to, force)?;
    output::write_reset(out, group, topic, partition, committed, json).map_err(ClientError::output)
}

/// Prints a delivered batch, after a line on standard error if the group was reset since the
/// member's previous fetch: what follows does not follow on from what came before.
fn print(
    out: &mut impl Write,
    group: &str,
    topic: &str,
    delivery: &Delivery<'_>,
    format: &MessageFormat,
) -> Result<Printed> {
    if let Some(offset) = delivery.reset_offset {
        out.flush().map_err(ClientError::output)?;
        let of_partition = if format.print_partition {
            format!(" partition {}", delivery.partition)
        } else {
            String::new()
        };
        eprintln!(
            "group {} was reset on {}{of_partition} to offset {offset}; reading on from there",
            safe(group),
            safe(topic)
        );
    }
    for message in &delivery.messages {
        output::write_message(out, topic, delivery.partition, message, format)
            .map_err(ClientError::output)?;
    }
    Ok(Printed {
        partition: delivery.partition,
        offsets: delivery.messages.iter().map(|m| m.offset).collect(),
        redelivered: delivery.redelivered.clone(),
        committed: delivery.committed_offset,
        end: delivery.end_offset,
    })
}

/// Offsets as `3, 5, 8`.
fn join_offsets(offsets: &[u64]) -> String {
    offsets.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_targets() {
        let args = |earliest, latest, offset| ResetArgs {
            to_earliest: earliest,
            to_latest: latest,
            to_offset: offset,
        };
        assert_eq!(args(true, false, None).target(), ResetTo::Earliest);
        assert_eq!(args(false, true, None).target(), ResetTo::Latest);
        assert_eq!(args(false, false, Some(4)).target(), ResetTo::Offset(4));
    }

    #[test]
    fn readings_default_to_the_earliest_start_auto_ack_and_a_batch_of_500() {
        let format = MessageFormat::default();
        let reading = Reading::new("g", "t", &GroupArgs::default(), false, &format);
        assert_eq!(
            (reading.start, reading.auto_ack, reading.batch, reading.ordered),
            (GroupStart::Earliest, true, 500, true)
        );
        let args = GroupArgs {
            group: Some("g".into()),
            no_auto_ack: true,
            group_start: Some(StartArg::Latest),
            batch: Some(1_000_000),
            unordered: true,
        };
        let reading = Reading::new("g", "t", &args, false, &format);
        assert_eq!(
            (reading.start, reading.auto_ack, reading.batch, reading.ordered),
            (GroupStart::Latest, false, MAX_FETCH_MESSAGES, false)
        );
    }
}
