//! The group registry: creating, listing and forgetting group states, and, for a broker with a
//! data directory, storing them at each commit, reading them back, and undoing a pass whose
//! changes could not be stored.

use std::fs;
use std::path::Path;

use protocol::{NewMessage, Retention};
use tempfile::TempDir;

use super::*;

const TIMEOUT: Duration = Duration::from_secs(30);

fn config(data_dir: Option<&Path>) -> StoreConfig {
    StoreConfig { data_dir: data_dir.map(Path::to_path_buf), ..StoreConfig::default() }
}

/// A store holding `topics`, each with `count` messages.
fn store(data_dir: Option<&Path>, topics: &[&str], count: usize) -> Box<Store> {
    let mut store = Store::open(config(data_dir)).unwrap();
    for topic in topics {
        store.create(topic, 1, Retention::default()).unwrap();
        let messages: Vec<NewMessage<'_>> =
            (0..count).map(|_| NewMessage::new(None, b"m")).collect();
        if count > 0 {
            store.append(topic, 0, &messages, 0).unwrap();
        }
    }
    assert!(store.commit_and_wait(Instant::now(), 0).is_empty());
    store
}

fn open(dir: &TempDir, store: &Store) -> Groups {
    Groups::open(TIMEOUT, &config(Some(dir.path())), store, Instant::now()).unwrap()
}

/// Delivers the next `count` new offsets of `group` on `topic`, as a group fetch would.
fn deliver(groups: &mut Groups, group: &str, topic: &str, count: u64) {
    let deadline = Instant::now() + TIMEOUT;
    groups
        .update(group, topic, 0, |state| {
            let offsets: Vec<u64> = (state.delivered()..state.delivered() + count).collect();
            state.deliver(&offsets, deadline);
        })
        .unwrap();
}

/// Each state as (group, topic, committed, delivered, pending offsets).
fn summary(groups: &Groups) -> Vec<(String, String, u64, u64, Vec<u64>)> {
    groups
        .list(None, None)
        .into_iter()
        .map(|(g, t, _, s)| {
            (g.into(), t.into(), s.committed(), s.delivered(), s.pending_offsets().collect())
        })
        .collect()
}

#[test]
fn the_first_join_creates_the_state_and_later_ones_only_add_members() {
    let mut groups = Groups::in_memory(TIMEOUT);
    assert_eq!(groups.join("g", "t", (100, 1), &[5], &[5], |_| true), (true, 1));
    assert_eq!(groups.join("g", "t", (200, 2), &[0], &[0], |_| true), (false, 2));
    assert_eq!(groups.get("g", "t", 0).map(Subscription::committed), Some(5));
    // A member whose claim ended is forgotten when someone joins.
    assert_eq!(groups.join("g", "t", (300, 1), &[0], &[0], |claim| claim != 100), (false, 2));
    assert!(!groups.get("g", "t", 0).unwrap().is_member(100));
    assert_eq!(groups.len(), 1);
}

#[test]
fn listings_are_ordered_and_filtered_by_group_and_topic() {
    let mut groups = Groups::in_memory(TIMEOUT);
    for (group, topic) in [("b", "x"), ("a", "y"), ("a", "x"), ("c", "y")] {
        groups.join(group, topic, (1, 1), &[0], &[0], |_| true);
    }
    let names = |list: Vec<(&str, &str, u32, &Subscription)>| -> Vec<String> {
        list.into_iter().map(|(g, t, _, _)| format!("{g}/{t}")).collect()
    };
    assert_eq!(names(groups.list(None, None)), ["a/x", "a/y", "b/x", "c/y"]);
    assert_eq!(names(groups.list(Some("a"), None)), ["a/x", "a/y"]);
    assert_eq!(names(groups.list(None, Some("y"))), ["a/y", "c/y"]);
    assert_eq!(names(groups.list(Some("b"), Some("x"))), ["b/x"]);
    assert!(groups.list(Some("b"), Some("y")).is_empty());
    assert!(groups.list(Some("z"), None).is_empty());
    assert!(groups.list(None, Some("z")).is_empty());
}

#[test]
fn deleting_a_topic_forgets_every_group_on_it() {
    let mut groups = Groups::in_memory(TIMEOUT);
    groups.join("a", "t", (1, 1), &[0], &[0], |_| true);
    groups.join("b", "t", (1, 1), &[0], &[0], |_| true);
    groups.join("a", "u", (1, 1), &[0], &[0], |_| true);
    groups.drop_topic("t");
    assert_eq!(summary(&groups), [("a".into(), "u".into(), 0, 0, vec![])]);
    groups.drop_topic("t");
    groups.drop_topic("u");
    assert!(groups.is_empty());
}

#[test]
fn reset_moves_a_state_or_creates_it() {
    let mut groups = Groups::in_memory(TIMEOUT);
    assert!(groups.ensure("g", "t", &[4]));
    groups.reset("g", "t", 0, 4);
    assert_eq!(summary(&groups), [("g".into(), "t".into(), 4, 4, vec![])]);
    deliver(&mut groups, "g", "t", 3);
    assert!(!groups.ensure("g", "t", &[0]));
    groups.reset("g", "t", 0, 1);
    assert_eq!(summary(&groups), [("g".into(), "t".into(), 1, 1, vec![])]);
}

#[test]
fn states_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(Some(dir.path()), &["orders", "other"], 10);
    let mut groups = open(&dir, &store);
    groups.join("preparers", "orders", (1, 1), &[0], &[0], |_| true);
    groups.join("auditors", "orders", (2, 2), &[10], &[10], |_| true);
    groups.join("preparers", "other", (1, 1), &[3], &[3], |_| true);
    deliver(&mut groups, "preparers", "orders", 6);
    groups.update("preparers", "orders", 0, |s| s.ack(&[0, 1, 3])).unwrap().unwrap();
    assert!(groups.commit().is_empty());
    let before = summary(&groups);
    assert_eq!(before[1], ("preparers".into(), "orders".into(), 2, 6, vec![2, 4, 5]));

    let reopened_at = Instant::now();
    let reopened = Groups::open(TIMEOUT, &config(Some(dir.path())), &store, reopened_at).unwrap();
    assert_eq!(summary(&reopened), before);
    // Members end with the broker; pending messages wait a whole timeout from the restart.
    let state = reopened.get("preparers", "orders", 0).unwrap();
    assert!(!state.is_member(1));
    assert!(state.next_due().is_some_and(|due| due >= reopened_at + TIMEOUT));
}

#[test]
fn only_what_changed_is_written_and_deleted_topics_take_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store(Some(dir.path()), &["t", "u"], 3);
    let mut groups = open(&dir, &store);
    groups.join("g", "t", (1, 1), &[0], &[0], |_| true);
    groups.join("g", "u", (1, 1), &[0], &[0], |_| true);
    assert!(groups.commit().is_empty());
    let files = || fs::read_dir(dir.path().join("groups")).unwrap().count();
    assert_eq!(files(), 2);
    // Joining again changes only the members, which are not stored: nothing to write.
    groups.join("g", "t", (2, 2), &[0], &[0], |_| true);
    assert!(groups.changed.is_empty());

    store.delete("t").unwrap();
    groups.drop_topic("t");
    assert_eq!(files(), 1);
    assert!(groups.commit().is_empty());
    assert_eq!(summary(&open(&dir, &store)).len(), 1);
}

#[test]
fn a_state_whose_topic_is_gone_is_removed_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store(Some(dir.path()), &["t"], 3);
    let mut groups = open(&dir, &store);
    groups.join("g", "t", (1, 1), &[0], &[0], |_| true);
    assert!(groups.commit().is_empty());
    // The topic goes while the broker is down (or a crash came between the two removals).
    store.delete("t").unwrap();
    assert!(open(&dir, &store).is_empty());
    assert_eq!(fs::read_dir(dir.path().join("groups")).unwrap().count(), 0);
}

#[test]
fn a_state_past_its_topic_is_fitted_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(Some(dir.path()), &["t"], 3);
    let saved = disk::Saved {
        group: "g".into(),
        topic: "t".into(),
        delivered: 8,
        pending: vec![1, 5],
        more: Vec::new(),
        unplaced: None,
    };
    let groups_dir = dir.path().join("groups");
    fs::create_dir_all(&groups_dir).unwrap();
    fs::write(groups_dir.join(disk::file_name("g", "t")), disk::encode(&saved)).unwrap();
    let mut groups = open(&dir, &store);
    assert_eq!(summary(&groups), [("g".into(), "t".into(), 1, 3, vec![1])]);
    // The fitted state is written back at the first commit.
    assert!(groups.commit().is_empty());
    assert_eq!(summary(&open(&dir, &store)), summary(&groups));
}

#[test]
fn a_damaged_state_stops_the_start_and_says_which_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(Some(dir.path()), &["t"], 3);
    let groups_dir = dir.path().join("groups");
    fs::create_dir_all(&groups_dir).unwrap();
    let file = groups_dir.join(disk::file_name("g", "t"));
    fs::write(&file, b"not a group state").unwrap();
    let error =
        Groups::open(TIMEOUT, &config(Some(dir.path())), &store, Instant::now()).unwrap_err();
    assert!(
        matches!(&error, OpenError::Damaged(report) if report.files[0].path == file),
        "{error}"
    );
    assert!(error.to_string().contains("move it away"), "{error}");
}

#[test]
fn a_pass_whose_states_cannot_be_stored_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(Some(dir.path()), &["t"], 10);
    let mut groups = open(&dir, &store);
    groups.join("g", "t", (1, 1), &[0], &[0], |_| true);
    deliver(&mut groups, "g", "t", 4);
    assert!(groups.commit().is_empty());
    let stored = summary(&groups);

    // Make every write fail: the groups directory becomes a plain file.
    let groups_dir = dir.path().join("groups");
    fs::remove_dir_all(&groups_dir).unwrap();
    fs::write(&groups_dir, b"").unwrap();

    groups.update("g", "t", 0, |s| s.ack(&[0, 1])).unwrap().unwrap();
    deliver(&mut groups, "g", "t", 2);
    groups.join("new", "t", (2, 2), &[0], &[0], |_| true);
    let failures = groups.commit();
    let mut failed: Vec<(String, String)> =
        failures.into_iter().map(|f| (f.group, f.topic)).collect();
    failed.sort();
    assert_eq!(failed, [("g".into(), "t".into()), ("new".into(), "t".into())]);
    assert_eq!(summary(&groups), stored, "the pass's changes are undone");
    assert!(groups.get("g", "t", 0).unwrap().is_member(1), "members stay");
    assert!(groups.list(None, Some("t")).iter().all(|(g, _, _, _)| *g == "g"));
}

#[test]
fn the_groups_directory_is_made_with_the_first_state_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(Some(dir.path()), &["t"], 1);
    let groups_dir = dir.path().join("groups");
    let mut groups = open(&dir, &store);
    assert!(groups.commit().is_empty());
    assert!(!groups_dir.exists(), "no group, no directory");
    groups.join("g", "t", (1, 1), &[0], &[0], |_| true);
    assert!(groups.commit().is_empty());
    assert_eq!(fs::read_dir(&groups_dir).unwrap().count(), 1);
    assert_eq!(summary(&open(&dir, &store)).len(), 1);
}

#[test]
fn states_of_the_format_before_headers_open_and_are_rewritten_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(Some(dir.path()), &["orders"], 10);
    let mut groups = open(&dir, &store);
    groups.join("preparers", "orders", (1, 1), &[0], &[0], |_| true);
    deliver(&mut groups, "preparers", "orders", 4);
    assert!(groups.commit().is_empty());
    drop(groups);
    // What a broker before headers wrote: the checksum and the body alone.
    let file = disk::groups_dir(dir.path()).join(disk::file_name("preparers", "orders"));
    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"BRKGRP"));
    std::fs::write(&file, &bytes[crate::store::format::HEADER_LEN..]).unwrap();

    let mut groups = open(&dir, &store);
    let state = groups.get("preparers", "orders", 0).unwrap();
    assert_eq!((state.committed(), state.delivered()), (0, 4));
    groups.update("preparers", "orders", 0, |state| state.ack(&[0]).unwrap()).unwrap();
    assert!(groups.commit().is_empty());
    assert!(std::fs::read(&file).unwrap().starts_with(b"BRKGRP\x02\x00"));
    let groups = open(&dir, &store);
    assert_eq!(groups.get("preparers", "orders", 0).map(Subscription::committed), Some(1));
}

/// What a [`Bucket`] holds: each partition's entry with its revision, and the whole records
/// of the older layout with theirs.
#[derive(Debug, Default)]
struct Entries {
    /// Each partition's state and revision.
    own: HashMap<(Key, u32), (SharedPartition, u64)>,
    /// Whole records, as brokers before partitions had entries of their own stored them.
    records: HashMap<Key, (Saved, u64)>,
    /// The last revision given.
    revision: u64,
    /// How many partitions' entries were written.
    writes: usize,
}

/// The entries of a [`Bucket`]; `None` while it cannot be reached.
type Held = Option<Entries>;

/// A key-value store of group states shared by the processes of a test, with revisions and
/// compare-and-set as the NATS bucket has them, or down.
#[derive(Debug, Clone, Default)]
struct Bucket {
    /// The entries; `None` while the bucket cannot be reached.
    states: std::sync::Arc<std::sync::Mutex<Held>>,
}

impl Bucket {
    fn up() -> Bucket {
        Bucket { states: std::sync::Arc::new(std::sync::Mutex::new(Some(Entries::default()))) }
    }

    fn set_down(&self) {
        *self.states.lock().unwrap() = None;
    }

    fn is_empty(&self) -> bool {
        let states = self.states.lock().unwrap();
        let entries = states.as_ref().unwrap();
        entries.own.is_empty() && entries.records.is_empty()
    }

    fn writes(&self) -> usize {
        self.states.lock().unwrap().as_ref().unwrap().writes
    }

    /// Stores a whole record, as a broker before partitions had entries did.
    fn put_record(&self, saved: Saved) {
        let mut states = self.states.lock().unwrap();
        let entries = states.as_mut().unwrap();
        entries.revision += 1;
        let key = (saved.group.clone(), saved.topic.clone());
        entries.records.insert(key, (saved, entries.revision));
    }
}

impl SharedStates for Bucket {
    fn load(&mut self, group: &str, topic: &str, partitions: u32) -> Result<Loaded, String> {
        let states = self.states.lock().unwrap();
        let entries = states.as_ref().ok_or("down")?;
        let key = (group.to_owned(), topic.to_owned());
        Ok(Loaded {
            record: entries.records.get(&key).cloned(),
            partitions: (0..partitions)
                .map(|partition| entries.own.get(&(key.clone(), partition)).cloned())
                .collect(),
        })
    }

    fn save(&mut self, batch: Vec<Change>) -> Vec<Result<u64, SaveError>> {
        let mut states = self.states.lock().unwrap();
        let Some(entries) = states.as_mut() else {
            return batch.iter().map(|_| Err(SaveError::Failed("down".into()))).collect();
        };
        batch
            .into_iter()
            .map(|(key, partition, state, revision)| {
                let at = (key, partition);
                let stored = entries.own.get(&at).cloned();
                if stored.as_ref().map(|(_, r)| *r) != revision {
                    return Err(SaveError::Conflict(stored));
                }
                entries.revision += 1;
                entries.writes += 1;
                entries.own.insert(at, (state, entries.revision));
                Ok(entries.revision)
            })
            .collect()
    }

    fn remove(&mut self, group: &str, topic: &str) {
        if let Some(entries) = self.states.lock().unwrap().as_mut() {
            let key = (group.to_owned(), topic.to_owned());
            entries.own.retain(|(of, _), _| *of != key);
            entries.records.remove(&key);
        }
    }

    fn list(&mut self, group: Option<&str>) -> Result<Vec<(Key, u32)>, String> {
        let states = self.states.lock().unwrap();
        let entries = states.as_ref().ok_or("down")?;
        let mut listed: Vec<(Key, u32)> =
            entries.records.keys().map(|key| (key.clone(), 0)).collect();
        for (key, partition) in entries.own.keys() {
            match listed.iter_mut().find(|(k, _)| k == key) {
                Some((_, most)) => *most = (*most).max(partition + 1),
                None => listed.push((key.clone(), partition + 1)),
            }
        }
        listed.retain(|((g, _), _)| group.is_none_or(|group| group == g));
        Ok(listed)
    }
}

fn shared(bucket: &Bucket) -> Groups {
    let mut groups = Groups::in_memory(TIMEOUT);
    groups.share(Box::new(bucket.clone()));
    groups
}

#[test]
fn shared_states_are_taken_by_the_next_process_to_join() {
    let bucket = Bucket::up();
    let (mut a, mut b) = (shared(&bucket), shared(&bucket));
    a.join("g", "t", (1, 1), &[0], &[0], |_| true);
    deliver(&mut a, "g", "t", 4);
    a.update("g", "t", 0, |s| s.ack(&[0, 1])).unwrap().unwrap();
    assert!(a.commit().is_empty());
    assert_eq!(b.join("g", "t", (2, 2), &[0], &[0], |_| true), (false, 1), "b took a's state");
    assert_eq!(summary(&b), [("g".into(), "t".into(), 2, 4, vec![2, 3])]);
    a.drop_topic("t");
    assert!(bucket.is_empty());
}

#[test]
fn a_shared_state_changed_elsewhere_at_the_same_time_is_taken_and_the_pass_refused() {
    let bucket = Bucket::up();
    let (mut a, mut b) = (shared(&bucket), shared(&bucket));
    a.join("g", "t", (1, 1), &[0], &[0], |_| true);
    assert!(a.commit().is_empty());
    b.join("g", "t", (2, 2), &[0], &[0], |_| true);
    deliver(&mut b, "g", "t", 3);
    assert!(b.commit().is_empty());
    // `a` delivers on its old copy: its commit conflicts, and it takes b's state.
    deliver(&mut a, "g", "t", 1);
    let failures = a.commit();
    assert_eq!(failures.len(), 1);
    assert!(failures[0].transient && failures[0].reloaded);
    assert_eq!(summary(&a), summary(&b));
    assert!(a.get("g", "t", 0).unwrap().is_member(1), "members stay");
    // The state is `a`'s again, at the revision stored: a change made on it now is stored.
    deliver(&mut a, "g", "t", 1);
    assert!(a.commit().is_empty());
    assert_eq!(summary(&a)[0].3, 4);
}

#[test]
fn a_state_taken_from_another_process_is_not_moved_back_to_where_this_ones_copy_ends() {
    use crate::cmd::group_fetch::{deliver as fetch, Delivery};
    // This process's copy of the topic holds 2 messages; the other process, whose copy is
    // ahead, has handed out 5.
    let behind = store(None, &["t"], 2);
    let bucket = Bucket::up();
    let (mut a, mut b) = (shared(&bucket), shared(&bucket));
    b.join("g", "t", (2, 2), &[0], &[0], |_| true);
    deliver(&mut b, "g", "t", 5);
    assert!(b.commit().is_empty());
    a.join("g", "t", (1, 1), &[0], &[0], |_| true);
    let to = Delivery {
        group: "g",
        topic: "t",
        member: 1,
        budget: crate::store::Budget::of_fetch(10, 1 << 20),
        ordered: false,
    };
    let response = fetch(&behind, &mut a, to, Instant::now());
    assert!(crate::cmd::group_fetch::is_empty(&response), "{response:?}");
    drop(response);
    assert!(a.commit().is_empty());
    // Nothing handed out moved back, here or in the shared state.
    assert_eq!(summary(&a), [("g".into(), "t".into(), 0, 5, vec![0, 1, 2, 3, 4])]);
    b.join("g", "t", (2, 2), &[0], &[0], |_| true);
    assert_eq!(summary(&b), summary(&a));
    // Retention of the head still trims it.
    a.fit_topic("t", 0, 3);
    assert_eq!(summary(&a), [("g".into(), "t".into(), 3, 5, vec![3, 4])]);
}

#[test]
fn a_pass_whose_shared_states_cannot_be_reached_is_undone() {
    let bucket = Bucket::up();
    let mut groups = shared(&bucket);
    groups.join("g", "t", (1, 1), &[0], &[0], |_| true);
    deliver(&mut groups, "g", "t", 2);
    assert!(groups.commit().is_empty());
    let stored = summary(&groups);
    bucket.set_down();
    deliver(&mut groups, "g", "t", 2);
    groups.join("new", "t", (2, 2), &[0], &[0], |_| true);
    let failures = groups.commit();
    assert_eq!(failures.len(), 2);
    assert!(failures.iter().all(|f| f.transient && !f.reloaded));
    assert_eq!(summary(&groups), stored, "the pass's changes are undone");
}

#[test]
fn a_state_has_a_partition_for_each_of_its_topic_and_grows_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(config(Some(dir.path()))).unwrap();
    store.create("t", 3, Retention::default()).unwrap();
    let messages = vec![NewMessage::new(None, b"m"); 8];
    for partition in 0..3 {
        store.append("t", partition, &messages, 0).unwrap();
    }
    assert!(store.commit_and_wait(Instant::now(), 0).is_empty());
    let mut groups = open(&dir, &store);
    let (created, members) = groups.join("g", "t", (1, 1), &[0, 5], &[0, 5], |_| true);
    assert!(created && members == 1);
    assert_eq!(groups.state("g", "t").map(<[Subscription]>::len), Some(2));
    assert_eq!(groups.get("g", "t", 1).map(Subscription::committed), Some(5));
    deliver(&mut groups, "g", "t", 2);
    // The topic grew: the new partition starts where it is told, with the same members.
    assert!(!groups.ensure("g", "t", &[0, 0, 7]));
    let third = groups.get("g", "t", 2).unwrap();
    assert_eq!((third.committed(), third.is_member(1)), (7, true));
    assert!(groups.commit().is_empty());
    // One file holds every partition's state, and reads back as it was.
    assert_eq!(fs::read_dir(dir.path().join("groups")).unwrap().count(), 1);
    let reopened = summary(&open(&dir, &store));
    assert_eq!(reopened, summary(&groups));
    assert_eq!(reopened.len(), 3);
    assert_eq!(reopened[0].4, vec![0, 1], "partition 0's pending messages");
}

#[test]
fn the_turn_moves_to_the_partition_after_the_one_served() {
    let mut groups = Groups::in_memory(TIMEOUT);
    groups.join("g", "t", (1, 1), &[0, 0, 0], &[0, 0, 0], |_| true);
    assert_eq!(groups.next_turn("g", "t"), 0);
    groups.served("g", "t", 0, 3);
    assert_eq!(groups.next_turn("g", "t"), 1);
    groups.served("g", "t", 2, 3);
    assert_eq!(groups.next_turn("g", "t"), 0);
}

#[test]
fn a_partition_without_a_committed_offset_is_left_out_kept_and_placed_by_a_join() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(config(Some(dir.path()))).unwrap();
    store.create("t", 3, Retention::default()).unwrap();
    let messages: Vec<NewMessage<'_>> = (0..5).map(|_| NewMessage::new(None, b"m")).collect();
    store.append("t", 2, &messages, 0).unwrap();
    assert!(store.commit_and_wait(Instant::now(), 0).is_empty());
    let listed = |groups: &Groups| -> Vec<(u32, u64)> {
        groups.list(Some("g"), None).into_iter().map(|(_, _, p, s)| (p, s.committed())).collect()
    };
    let mut groups = open(&dir, &store);
    // A reset of partition 1 alone says nothing of the others' offsets.
    groups.ensure_unplaced("g", "t", &[0, 0, 0]);
    groups.reset("g", "t", 1, 0);
    assert_eq!(listed(&groups), [(1, 0)]);
    assert!(groups.commit().is_empty());
    let mut groups = open(&dir, &store);
    assert_eq!(listed(&groups), [(1, 0)], "kept across a restart");
    // Forgetting the one placed partition leaves none: the state goes whole.
    groups.delete("g", Some("t"), Some((1, 0)), |_| false).unwrap();
    assert!(groups.state("g", "t").is_none());
    // Forgetting one of three keeps the others.
    groups.ensure("g", "t", &[0, 0, 0]);
    groups.delete("g", Some("t"), Some((2, 0)), |_| false).unwrap();
    assert_eq!(listed(&groups), [(0, 0), (1, 0)]);
    assert!(groups.commit().is_empty());
    // A join places it at the join's start (here the latest), and leaves the others be.
    let mut groups = open(&dir, &store);
    assert_eq!(listed(&groups), [(0, 0), (1, 0)]);
    groups.join("g", "t", (1, 1), &[0, 0, 0], &[0, 0, 5], |_| true);
    assert_eq!(listed(&groups), [(0, 0), (1, 0), (2, 5)]);
    assert!(groups.commit().is_empty());
    assert_eq!(listed(&open(&dir, &store)), [(0, 0), (1, 0), (2, 5)]);
    // With a member there, nothing is forgotten.
    let refused = groups.delete("g", Some("t"), Some((0, 0)), |_| true);
    assert!(matches!(refused, Err(GroupError::Active { .. })), "{refused:?}");
}

/// Delivers `count` messages of `partition` of `group`'s state on `topic`.
fn deliver_from(groups: &mut Groups, group: &str, topic: &str, partition: u32, count: u64) {
    let deadline = Instant::now() + TIMEOUT;
    groups
        .update(group, topic, partition, |state| {
            let offsets: Vec<u64> = (state.delivered()..state.delivered() + count).collect();
            state.deliver(&offsets, deadline);
        })
        .unwrap();
}

/// Each partition's (delivered, pending) of `group`'s state on `topic`.
fn offsets(groups: &Groups, group: &str, topic: &str) -> Vec<(u64, Vec<u64>)> {
    let states = groups.state(group, topic).unwrap_or_default();
    states.iter().map(|s| (s.delivered(), s.pending_offsets().collect())).collect()
}

#[test]
fn processes_changing_different_partitions_store_each_without_conflict() {
    let bucket = Bucket::up();
    let (mut a, mut b) = (shared(&bucket), shared(&bucket));
    a.join("g", "t", (1, 1), &[0; 4], &[0; 4], |_| true);
    assert!(a.commit().is_empty());
    assert_eq!(bucket.writes(), 4, "a new state stores every partition");
    b.join("g", "t", (2, 2), &[0; 4], &[0; 4], |_| true);
    assert!(b.commit().is_empty());
    assert_eq!(bucket.writes(), 4, "a join that changes no stored part stores nothing");
    for _ in 0..3 {
        deliver_from(&mut a, "g", "t", 0, 2);
        deliver_from(&mut b, "g", "t", 3, 1);
        assert!(a.commit().is_empty(), "only partition 0 changed through a");
        assert!(b.commit().is_empty(), "only partition 3 changed through b");
    }
    assert_eq!(bucket.writes(), 10, "each pass stores only the partition it changed");
    let mut c = shared(&bucket);
    c.join("g", "t", (3, 3), &[0; 4], &[0; 4], |_| true);
    assert_eq!(
        offsets(&c, "g", "t"),
        [(6, vec![0, 1, 2, 3, 4, 5]), (0, vec![]), (0, vec![]), (3, vec![0, 1, 2])]
    );
}

#[test]
fn a_conflict_on_one_partition_takes_it_as_stored_and_keeps_the_others() {
    let bucket = Bucket::up();
    let (mut a, mut b) = (shared(&bucket), shared(&bucket));
    a.join("g", "t", (1, 1), &[0; 3], &[0; 3], |_| true);
    assert!(a.commit().is_empty());
    b.join("g", "t", (2, 2), &[0; 3], &[0; 3], |_| true);
    deliver_from(&mut b, "g", "t", 1, 5);
    assert!(b.commit().is_empty());
    // `a` changes partitions 0 and 1 on its copy, whose partition 1 is old.
    deliver_from(&mut a, "g", "t", 0, 2);
    deliver_from(&mut a, "g", "t", 1, 1);
    let failures = a.commit();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let failure = &failures[0];
    assert_eq!((failure.partition, failure.reloaded, failure.transient), (Some(1), true, true));
    assert_eq!(
        offsets(&a, "g", "t"),
        [(2, vec![0, 1]), (5, vec![0, 1, 2, 3, 4]), (0, vec![])],
        "partition 0 is a's, stored; partition 1 is b's"
    );
    // Partition 1 is a's again at the revision stored: a change made on it now is stored.
    deliver_from(&mut a, "g", "t", 1, 1);
    assert!(a.commit().is_empty());
    b.join("g", "t", (2, 2), &[0; 3], &[0; 3], |_| true);
    assert_eq!(offsets(&b, "g", "t"), offsets(&a, "g", "t"));
}

#[test]
fn a_partition_not_stored_is_undone_alone() {
    let bucket = Bucket::up();
    let mut groups = shared(&bucket);
    groups.join("g", "t", (1, 1), &[0; 2], &[0; 2], |_| true);
    deliver_from(&mut groups, "g", "t", 1, 2);
    assert!(groups.commit().is_empty());
    let stored = offsets(&groups, "g", "t");
    bucket.set_down();
    deliver_from(&mut groups, "g", "t", 1, 2);
    let failures = groups.commit();
    assert_eq!(failures.len(), 1);
    assert_eq!((failures[0].partition, failures[0].reloaded), (Some(1), false));
    assert_eq!(offsets(&groups, "g", "t"), stored, "the pass's change is undone");
}

#[test]
fn a_whole_record_of_the_older_layout_is_read_and_each_partitions_own_entry_wins() {
    let bucket = Bucket::up();
    bucket.put_record(Saved {
        group: "g".into(),
        topic: "t".into(),
        delivered: 7,
        pending: vec![5],
        more: vec![
            SavedPartition { delivered: 4, pending: Vec::new() },
            SavedPartition { delivered: 0, pending: Vec::new() },
        ],
        unplaced: Some(Box::new(vec![2])),
    });
    // The record lists partitions 0 to 2, partition 2 without a committed offset.
    let mut listed = shared(&bucket);
    listed.take_in_listed(Some("g"), None);
    assert_eq!(
        summary(&listed),
        [("g".into(), "t".into(), 5, 7, vec![5]), ("g".into(), "t".into(), 4, 4, vec![]),]
    );
    let mut a = shared(&bucket);
    a.join("g", "t", (1, 1), &[0; 3], &[0, 0, 9], |_| true);
    assert_eq!(offsets(&a, "g", "t"), [(7, vec![5]), (4, vec![]), (9, vec![])]);
    // Partition 2, placed by the join, and partition 1 go to entries of their own.
    deliver_from(&mut a, "g", "t", 1, 1);
    assert!(a.commit().is_empty());
    assert_eq!(bucket.writes(), 2, "partition 0 did not change: it stays in the record");
    let mut b = shared(&bucket);
    b.join("g", "t", (2, 2), &[0; 3], &[0; 3], |_| true);
    assert_eq!(offsets(&b, "g", "t"), [(7, vec![5]), (5, vec![4]), (9, vec![])]);
    // Deleting the state removes the record and the entries.
    a.drop_topic("t");
    assert!(bucket.is_empty());
}

#[test]
fn a_partition_made_in_the_pass_and_not_stored_puts_the_whole_state_back() {
    let bucket = Bucket::up();
    let (mut a, mut b) = (shared(&bucket), shared(&bucket));
    a.join("g", "t", (1, 1), &[0; 2], &[0; 2], |_| true);
    deliver_from(&mut a, "g", "t", 0, 2);
    assert!(a.commit().is_empty());
    let stored = offsets(&a, "g", "t");
    let kept = bucket.states.lock().unwrap().take();
    // The topic grew: partition 2 is made in this pass, and nothing can be stored.
    assert!(!a.ensure("g", "t", &[0, 0, 3]));
    deliver_from(&mut a, "g", "t", 2, 1);
    deliver_from(&mut a, "g", "t", 1, 1);
    let failures = a.commit();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!((failures[0].partition, failures[0].reloaded), (None, false));
    assert_eq!(offsets(&a, "g", "t"), stored, "back to two partitions as stored");
    // Once the bucket is back, the partition comes again and is stored; another process
    // joining takes all three.
    *bucket.states.lock().unwrap() = kept;
    a.ensure("g", "t", &[0, 0, 3]);
    assert!(a.commit().is_empty());
    b.join("g", "t", (2, 2), &[0; 3], &[0; 3], |_| true);
    assert_eq!(offsets(&b, "g", "t"), [(2, vec![0, 1]), (0, vec![]), (3, vec![])]);
    assert_eq!(offsets(&b, "g", "t"), offsets(&a, "g", "t"));
}
