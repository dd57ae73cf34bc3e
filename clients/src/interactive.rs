//! The consumer's interactive walk on a terminal: pick a logical broker, a topic (and on a
//! topic of several partitions, a partition), a message.
//!
//! Each level is a menu with a way back; going back from a broker's topics, quitting, Esc and
//! Ctrl-C all give the claim back. A topic's messages come a page at a time, with ways to jump
//! to an offset and to the end; after Esc the walk comes back to the page and the line it was
//! on, and to the same page of a topic entered again while the broker is still claimed. While a broker is claimed a thread renews its lease, since a
//! person may read a message for longer than the lease lasts; and all along another asks the
//! broker how it is, so that a broker gone while a menu waits for a key ends the walk within
//! the timeout, saying so.

use std::collections::HashMap;
use std::io;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dialoguer::console::Term;
use dialoguer::theme::ColorfulTheme;
use dialoguer::{Input, Select};
use protocol::{BrokerStatus, ErrorCode, Fetch, TopicInfo, DEFAULT_FETCH_BYTES};
use tracing::debug;

use crate::claim::{self, ClaimSpec};
use crate::client::{Claimed, Client};
use crate::output::{escape, format_lease, safe};
use crate::{ClientError, Result, Shutdown};

/// How many messages one page of the message menu shows.
const PAGE: u32 = 50;

/// How many characters of a value a menu line shows.
const PREVIEW_CHARS: usize = 60;

/// Where to go after a menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Up one level.
    Back,
    /// Leave the walk.
    Quit,
}

/// A stored message copied out of its reply, to show after the reply is gone.
#[derive(Debug, Clone)]
struct Shown {
    /// Its offset.
    offset: u64,
    /// When the broker stored it, in milliseconds since the Unix epoch.
    timestamp: u64,
    /// Its key.
    key: Option<Vec<u8>>,
    /// Its value.
    value: Vec<u8>,
}

/// Runs the walk until the user quits. Esc on the first menu ends it normally; Ctrl-C ends it
/// with [`ClientError::Interrupted`].
///
/// # Errors
/// A broker that cannot be reached or refuses a request, or a terminal that fails.
pub fn run(client: &mut Client, spec: &ClaimSpec, shutdown: &Shutdown) -> Result<()> {
    let term = Term::stdout();
    let theme = ColorfulTheme::default();
    let _watchdog = Watchdog::start(client.sibling()?.quiet());
    let result = walk(client, spec, &term, &theme);
    let _ = term.show_cursor();
    match result {
        // Ctrl-C, whether a signal or a key read by a menu, ends the walk with exit status 130
        // as it ends every other command.
        Err(_) if shutdown.is_signalled() => Err(ClientError::Interrupted),
        other => other,
    }
}

/// The first menu: the logical brokers.
fn walk(client: &mut Client, spec: &ClaimSpec, term: &Term, theme: &ColorfulTheme) -> Result<()> {
    let mut cursor = 0;
    loop {
        let brokers = client.status()?;
        let mut items: Vec<String> = brokers.iter().map(broker_line).collect();
        items.push("Refresh".to_owned());
        items.push("Quit".to_owned());
        let prompt = "Logical brokers: pick one to claim";
        let Some(choice) = select(term, theme, prompt, &items, cursor)? else {
            return Ok(());
        };
        cursor = choice;
        let Some(broker) = brokers.get(choice) else {
            if choice == brokers.len() {
                continue;
            }
            return Ok(());
        };
        let claimed = match client.claim(Some(broker.id), Duration::ZERO, Some(&spec.client_name)) {
            Ok(claimed) => claimed,
            Err(e) if e.broker_code() == Some(ErrorCode::BrokerBusy) => {
                let _ = term.write_line(&e.to_string());
                continue;
            }
            Err(e) => return Err(e),
        };
        let flow = browse_broker(client, &claimed, term, theme);
        claim::release(client, &claimed);
        if flow? == Flow::Quit {
            return Ok(());
        }
    }
}

/// The second menu: the topics of a claimed logical broker.
fn browse_broker(
    client: &mut Client,
    claimed: &Claimed,
    term: &Term,
    theme: &ColorfulTheme,
) -> Result<Flow> {
    let _renewer = Renewer::start(client.sibling()?, *claimed);
    // Where the user was in each partition of each topic, to come back to it after Esc.
    let mut places: HashMap<(String, u32), Place> = HashMap::new();
    // The partition menu's line last chosen, per topic.
    let mut partition_cursors: HashMap<String, usize> = HashMap::new();
    let mut cursor = 0;
    loop {
        let topics = client.list_topics(claimed.token)?;
        let mut items: Vec<String> = topics.iter().map(topic_line).collect();
        items.push(format!("Back (release logical broker {})", claimed.broker));
        items.push("Quit".to_owned());
        let prompt = format!("Topics on logical broker {}", claimed.broker);
        let Some(choice) = select(term, theme, &prompt, &items, cursor)? else {
            return Ok(Flow::Back);
        };
        cursor = choice;
        match topics.get(choice) {
            Some(topic) if topic.partitions > 1 => {
                let cursor = partition_cursors.entry(topic.name.clone()).or_insert(0);
                let flow =
                    browse_partitions(client, claimed, topic, &mut places, cursor, term, theme)?;
                if flow == Flow::Quit {
                    return Ok(Flow::Quit);
                }
            }
            Some(topic) => {
                let place = places
                    .entry((topic.name.clone(), 0))
                    .or_insert(Place { start: topic.first_offset, cursor: 0 });
                if browse_topic(client, claimed, topic, 0, place, term, theme)? == Flow::Quit {
                    return Ok(Flow::Quit);
                }
            }
            None if choice == topics.len() => return Ok(Flow::Back),
            None => return Ok(Flow::Quit),
        }
    }
}

/// The menu of a topic of several partitions: pick one, with its offsets and message count.
fn browse_partitions(
    client: &mut Client,
    claimed: &Claimed,
    topic: &TopicInfo,
    places: &mut HashMap<(String, u32), Place>,
    cursor: &mut usize,
    term: &Term,
    theme: &ColorfulTheme,
) -> Result<Flow> {
    loop {
        // Read again each time, for the counts of messages appended meanwhile.
        let topics = client.list_topics(claimed.token)?;
        let Some(topic) = topics.iter().find(|t| t.name == topic.name) else {
            return Ok(Flow::Back);
        };
        let mut items: Vec<String> =
            (0..topic.partitions).map(|p| partition_line(topic, p)).collect();
        items.push("Back to topics".to_owned());
        items.push("Quit".to_owned());
        let prompt = format!("{}: {} partitions", safe(&topic.name), topic.partitions);
        let Some(choice) = select(term, theme, &prompt, &items, *cursor)? else {
            return Ok(Flow::Back);
        };
        *cursor = choice;
        match u32::try_from(choice).ok().filter(|p| *p < topic.partitions) {
            Some(partition) => {
                let (first, _) = partition_offsets(topic, partition);
                let place = places
                    .entry((topic.name.clone(), partition))
                    .or_insert(Place { start: first, cursor: 0 });
                let flow = browse_topic(client, claimed, topic, partition, place, term, theme)?;
                if flow == Flow::Quit {
                    return Ok(Flow::Quit);
                }
            }
            None if choice == topic.partitions as usize => return Ok(Flow::Back),
            None => return Ok(Flow::Quit),
        }
    }
}

/// A partition's first kept offset and next offset, from its topic's record.
fn partition_offsets(topic: &TopicInfo, partition: u32) -> (u64, u64) {
    let index = partition as usize;
    match (topic.first_offsets.get(index), topic.next_offsets.get(index)) {
        (Some(first), Some(next)) => (*first, *next),
        _ if partition == 0 => (topic.first_offset, topic.next_offset),
        _ => (0, 0),
    }
}

/// A partition's menu line: `partition 2   14 messages (offsets 0 to 13)`.
fn partition_line(topic: &TopicInfo, partition: u32) -> String {
    let (first, next) = partition_offsets(topic, partition);
    let count = next.saturating_sub(first);
    let held = if count == 0 {
        format!("next offset {next}")
    } else {
        format!("offsets {first} to {}", next - 1)
    };
    format!(
        "partition {partition:<4} {count} message{} ({held})",
        if count == 1 { "" } else { "s" }
    )
}

/// Where the user is in a topic's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    /// The first offset of the page shown.
    start: u64,
    /// The menu line last chosen on it.
    cursor: usize,
}

/// What the extra lines under a page of messages do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageAction {
    /// The page before.
    Previous,
    /// The page after.
    Next,
    /// Ask for an offset and show the page from it.
    Jump,
    /// The last page.
    End,
    /// Up to the topics.
    Back,
    /// Leave the walk.
    Quit,
}

/// The third menu: a page of a partition's messages, from where the user was in it (`place`,
/// updated as they move), with ways to the previous and next page, to an offset and to the end.
fn browse_topic(
    client: &mut Client,
    claimed: &Claimed,
    topic: &TopicInfo,
    partition: u32,
    place: &mut Place,
    term: &Term,
    theme: &ColorfulTheme,
) -> Result<Flow> {
    loop {
        let start = place.start;
        let request = Fetch {
            claim: claimed.token,
            topic: &topic.name,
            partition,
            offset: start,
            max_messages: PAGE,
            max_bytes: DEFAULT_FETCH_BYTES,
            wait_ms: 0,
            batches: false,
        };
        let fetched = client.fetch(request, |batch| {
            let shown = batch
                .messages
                .iter()
                .map(|m| Shown {
                    offset: m.offset,
                    timestamp: m.timestamp,
                    key: m.key.map(<[u8]>::to_vec),
                    value: m.value.to_vec(),
                })
                .collect::<Vec<_>>();
            Ok((shown, batch.next_offset, batch.end_offset))
        });
        let (page, next, end) = match fetched {
            Ok(page) => page,
            // Old messages went away meanwhile, or the offset is past the end: start from the
            // first one kept.
            Err(ClientError::Broker {
                code: ErrorCode::OffsetOutOfRange,
                range: Some((first, _)),
                ..
            }) if first != start => {
                *place = Place { start: first, cursor: 0 };
                continue;
            }
            Err(e) => return Err(e),
        };
        let (first, _) = partition_offsets(topic, partition);
        let mut actions = Vec::new();
        if start > first {
            actions.push((PageAction::Previous, "Previous page".to_owned()));
        }
        if next < end {
            actions.push((PageAction::Next, format!("Next page (from offset {next} of {end})")));
        }
        if end > first {
            let last = end - 1;
            actions.push((PageAction::Jump, format!("Jump to an offset ({first} to {last})")));
        }
        if next < end {
            actions.push((PageAction::End, "Jump to the end".to_owned()));
        }
        actions.push((PageAction::Back, "Back to topics".to_owned()));
        actions.push((PageAction::Quit, "Quit".to_owned()));
        let mut items: Vec<String> = page.iter().map(message_line).collect();
        items.extend(actions.iter().map(|(_, line)| line.clone()));
        let name = if topic.partitions > 1 {
            format!("{} partition {partition}", safe(&topic.name))
        } else {
            safe(&topic.name).into_owned()
        };
        let prompt = if page.is_empty() {
            format!("{name}: no messages from offset {start}")
        } else {
            format!("{name}: offsets {} to {} of {end}", start, next - 1)
        };
        let cursor = place.cursor.min(items.len() - 1);
        let Some(choice) = select(term, theme, &prompt, &items, cursor)? else {
            return Ok(Flow::Back);
        };
        place.cursor = choice;
        if let Some(message) = page.get(choice) {
            let shown_in = (topic.name.as_str(), (topic.partitions > 1).then_some(partition));
            if show_message(shown_in, message, term, theme)? == Flow::Quit {
                return Ok(Flow::Quit);
            }
            continue;
        }
        let page_len = u64::from(PAGE);
        match actions.get(choice - page.len()).map(|(action, _)| *action) {
            Some(PageAction::Previous) => {
                *place = Place { start: start.saturating_sub(page_len).max(first), cursor: 0 };
            }
            Some(PageAction::Next) => *place = Place { start: next, cursor: 0 },
            Some(PageAction::Jump) => {
                if let Some(offset) = ask_offset(term, theme, first, end)? {
                    *place = Place { start: offset, cursor: 0 };
                }
            }
            Some(PageAction::End) => {
                *place = Place { start: end.saturating_sub(page_len).max(first), cursor: 0 };
            }
            Some(PageAction::Back) | None => return Ok(Flow::Back),
            Some(PageAction::Quit) => return Ok(Flow::Quit),
        }
    }
}

/// Asks for an offset from `first` to before `end`; `None` when the user leaves with Esc.
fn ask_offset(term: &Term, theme: &ColorfulTheme, first: u64, end: u64) -> Result<Option<u64>> {
    let last = end.saturating_sub(1);
    let prompt = format!("Offset ({first} to {last})");
    let answer = Input::<String>::with_theme(theme)
        .with_prompt(prompt)
        .allow_empty(true)
        .validate_with(|text: &String| -> std::result::Result<(), String> {
            match text.trim().parse::<u64>() {
                _ if text.trim().is_empty() => Ok(()),
                Ok(offset) if (first..end).contains(&offset) => Ok(()),
                _ => Err(format!("type an offset from {first} to {last}")),
            }
        })
        .interact_text_on(term)
        .map_err(|e| match e {
            dialoguer::Error::IO(io) => prompt_error(io),
        })?;
    Ok(answer.trim().parse().ok())
}

/// Shows one message in full, then asks where to go.
fn show_message(
    (topic, partition): (&str, Option<u32>),
    message: &Shown,
    term: &Term,
    theme: &ColorfulTheme,
) -> Result<Flow> {
    let when = SystemTime::UNIX_EPOCH + Duration::from_millis(message.timestamp);
    let key = message.key.as_deref().map_or_else(|| "null".into(), escape);
    let mut lines = vec![format!("topic      {}", safe(topic))];
    if let Some(partition) = partition {
        lines.push(format!("partition  {partition}"));
    }
    lines.extend([
        format!("offset     {}", message.offset),
        format!(
            "timestamp  {} ({} ms)",
            humantime::format_rfc3339_millis(when.max(UNIX_EPOCH)),
            message.timestamp
        ),
        format!("key        {key}"),
        format!("value      {}", escape(&message.value)),
        String::new(),
    ]);
    for line in lines {
        term.write_line(&line).map_err(prompt_error)?;
    }
    let items = ["Back to messages".to_owned(), "Quit".to_owned()];
    Ok(match select(term, theme, "Next", &items, 0)? {
        Some(1) => Flow::Quit,
        _ => Flow::Back,
    })
}

/// Shows a menu with line `cursor` highlighted; `None` when the user leaves it with Esc or `q`.
fn select(
    term: &Term,
    theme: &ColorfulTheme,
    prompt: &str,
    items: &[String],
    cursor: usize,
) -> Result<Option<usize>> {
    Select::with_theme(theme)
        .with_prompt(prompt)
        .items(items)
        .default(cursor)
        .max_length(20)
        .interact_on_opt(term)
        .map_err(|e| match e {
            dialoguer::Error::IO(io) => prompt_error(io),
        })
}

/// A terminal failure; Ctrl-C while a menu reads keys comes back as an interrupted read.
fn prompt_error(e: io::Error) -> ClientError {
    if e.kind() == io::ErrorKind::Interrupted {
        ClientError::Interrupted
    } else {
        ClientError::Prompt(dialoguer::Error::IO(e))
    }
}

/// A logical broker as a menu line.
fn broker_line(b: &BrokerStatus) -> String {
    let state = if b.available {
        "free".to_owned()
    } else {
        let holder = safe(b.holder.as_deref().unwrap_or("someone"));
        let lease = b.lease_remaining_ms.map(|ms| format!(", lease {} left", format_lease(ms)));
        format!("claimed by {holder}{}", lease.unwrap_or_default())
    };
    format!("broker {}  {state}  ({} topics, {} messages)", b.id, b.topics, b.messages)
}

/// A topic as a menu line.
fn topic_line(t: &TopicInfo) -> String {
    if t.partitions > 1 {
        let plural = if t.messages == 1 { "" } else { "s" };
        return format!(
            "{}  ({} message{plural}, {} partitions)",
            safe(&t.name),
            t.messages,
            t.partitions
        );
    }
    if t.next_offset > t.first_offset {
        let (first, last) = (t.first_offset, t.next_offset - 1);
        format!("{}  ({} messages, offsets {first} to {last})", safe(&t.name), t.messages)
    } else {
        format!("{}  (no messages, next offset {})", safe(&t.name), t.next_offset)
    }
}

/// A message as a menu line: its offset and the start of its value on one line.
fn message_line(m: &Shown) -> String {
    format!("{:>6}  {}", m.offset, preview(&m.value))
}

/// The start of `value` as one line of text, escaped as in message lines.
fn preview(value: &[u8]) -> String {
    let text = escape(value);
    let mut line: String = text.chars().take(PREVIEW_CHARS).collect();
    if text.chars().nth(PREVIEW_CHARS).is_some() {
        line.push('…');
    }
    line
}

/// Renews a claim's lease on its own socket until dropped.
struct Renewer {
    /// Dropping it wakes the thread to end.
    stop: Option<Sender<()>>,
    /// Signalled on drop, to cut short a renewal waiting for a broker that does not answer.
    cancel: Shutdown,
    /// The renewing thread.
    thread: Option<JoinHandle<()>>,
}

impl Renewer {
    /// Starts renewing `claimed` every third of its lease through `client`.
    fn start(client: Client, claimed: Claimed) -> Renewer {
        let cancel = Shutdown::new();
        // Quiet: a note about the broker under a menu would land in the middle of it; the
        // watchdog says what matters.
        let mut client = client.with_shutdown(cancel.clone()).quiet();
        let (stop, stopped) = mpsc::channel::<()>();
        let every = (claimed.lease / 3).max(Duration::from_millis(100));
        let thread = thread::spawn(move || {
            // Ends when the sender is dropped (`Disconnected`) or the claim is gone.
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                match client.renew(claimed.token) {
                    Ok(_) => debug!(broker = claimed.broker, "renewed"),
                    Err(e) if e.broker_code() == Some(ErrorCode::UnknownClaim) => break,
                    Err(e) => debug!(broker = claimed.broker, "renewing failed: {e}"),
                }
            }
        });
        Renewer { stop: Some(stop), cancel, thread: Some(thread) }
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.cancel.trigger();
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Asks the broker how it is every [`BEAT`] while a person looks at a menu, which waits for
/// a key and for nothing else: a broker that does not answer within the timeout ends the walk
/// then, saying so, instead of at the person's next key.
struct Watchdog {
    /// Dropping it wakes the thread to end.
    stop: Option<Sender<()>>,
    /// Signalled on drop, to cut short a request waiting for a broker that does not answer.
    cancel: Shutdown,
    /// The watching thread.
    thread: Option<JoinHandle<()>>,
}

/// How often the watchdog asks.
const BEAT: Duration = Duration::from_millis(500);

impl Watchdog {
    /// Starts watching through `client`, a connection of its own.
    fn start(client: Client) -> Watchdog {
        let cancel = Shutdown::new();
        let mut client = client.with_shutdown(cancel.clone());
        let terminal = Terminal::save();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(BEAT) {
                match client.status() {
                    Err(e @ ClientError::Unreachable { .. }) => {
                        // The menu's thread waits in a read of the terminal that nothing but
                        // a key ends: put the terminal back as it was and end from here.
                        terminal.restore();
                        let term = Term::stderr();
                        let _ = term.show_cursor();
                        let _ = term.write_line("");
                        eprintln!("error: {e}: it stopped answering; leaving the walk");
                        std::process::exit(1);
                    }
                    Err(ClientError::Interrupted) => break,
                    Err(e) => debug!("the watchdog's status failed: {e}"),
                    Ok(_) => {}
                }
            }
        });
        Watchdog { stop: Some(stop), cancel, thread: Some(thread) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.cancel.trigger();
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The terminal's settings on standard input as the walk began, if it is a terminal.
struct Terminal(Option<libc::termios>);

impl Terminal {
    /// Reads the settings now.
    fn save() -> Terminal {
        let mut settings = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr writes a whole termios into the pointer it is given, which points
        // to one, and reports whether it did.
        let read = unsafe { libc::tcgetattr(libc::STDIN_FILENO, settings.as_mut_ptr()) };
        // SAFETY: initialized by the successful call above.
        Terminal((read == 0).then(|| unsafe { settings.assume_init() }))
    }

    /// Puts the settings back (a menu reading a key keeps the terminal raw meanwhile).
    fn restore(&self) {
        if let Some(settings) = &self.0 {
            // SAFETY: a valid termios read by tcgetattr, applied to the same descriptor.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, settings) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn menu_lines() {
        let free = BrokerStatus {
            id: 1,
            available: true,
            holder: None,
            lease_remaining_ms: None,
            topics: 4,
            messages: 12,
            bytes: 100,
            disk_bytes: None,
        };
        assert_eq!(broker_line(&free), "broker 1  free  (4 topics, 12 messages)");
        let held = BrokerStatus {
            available: false,
            holder: Some("consumer-9".into()),
            lease_remaining_ms: Some(12_300),
            ..free
        };
        assert_eq!(
            broker_line(&held),
            "broker 1  claimed by consumer-9, lease 12.3s left  (4 topics, 12 messages)"
        );
        let m = Shown { offset: 3, timestamp: 0, key: None, value: b"a\nb".to_vec() };
        assert_eq!(message_line(&m), "     3  a\\nb");
        assert_eq!(preview(&[b'x'; 70]).chars().count(), PREVIEW_CHARS + 1);
        let topic = TopicInfo {
            name: "t".into(),
            messages: 3,
            first_offset: 0,
            next_offset: 3,
            bytes: 3,
            disk_bytes: None,
            partitions: 1,
            first_offsets: vec![0],
            next_offsets: vec![3],
            retention_messages: None,
            retention_bytes: None,
            retention_ms: None,
        };
        assert_eq!(topic_line(&topic), "t  (3 messages, offsets 0 to 2)");
        let spread = TopicInfo {
            messages: 5,
            partitions: 3,
            first_offsets: vec![0, 1, 0],
            next_offsets: vec![3, 3, 0],
            ..topic.clone()
        };
        assert_eq!(topic_line(&spread), "t  (5 messages, 3 partitions)");
        assert_eq!(partition_line(&spread, 1), "partition 1    2 messages (offsets 1 to 2)");
        assert_eq!(partition_line(&spread, 2), "partition 2    0 messages (next offset 0)");
        let empty = TopicInfo { messages: 0, first_offset: 3, ..topic };
        assert_eq!(topic_line(&empty), "t  (no messages, next offset 3)");
    }
}
