//! The sample topics `broker --preload` starts with.

use protocol::NewMessage;

use crate::store::{Result, Store};

/// Each sample topic and the word its messages are made of.
const SAMPLES: [(&str, &str); 4] = [
    ("Hola mundo", "mensaje"),
    ("Hello world", "message"),
    ("Hallo welt", "botschaft"),
    ("Ciao mondo", "messaggio"),
];

/// How many messages each sample topic gets.
const MESSAGES_PER_TOPIC: usize = 3;

/// Adds the sample topics, three messages each (`mensaje 1`, `mensaje 2`, ...), stamped
/// `timestamp`, and commits them. A sample topic that exists already is left as it is, so a
/// store on disk gets them once.
///
/// # Errors
/// Whatever the store refuses.
pub fn preload(store: &mut Store, timestamp: u64) -> Result<usize> {
    let mut added = 0;
    for (topic, word) in SAMPLES {
        if store.partitions(topic).is_ok() {
            continue;
        }
        let values: Vec<String> = (1..=MESSAGES_PER_TOPIC).map(|i| format!("{word} {i}")).collect();
        let messages: Vec<NewMessage<'_>> =
            values.iter().map(|v| NewMessage::new(None, v.as_bytes())).collect();
        store.append(topic, 0, &messages, timestamp)?;
        added += 1;
    }
    if let Some(failure) = store.commit_and_wait(std::time::Instant::now(), timestamp).pop() {
        return Err(failure.error);
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Budget;

    #[test]
    fn four_topics_of_three_messages_once() {
        let mut store = Store::in_memory(crate::StoreConfig::default());
        assert_eq!(preload(&mut store, 0), Ok(4));
        assert_eq!(preload(&mut store, 0), Ok(0));
        let names: Vec<String> = store.list().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["Ciao mondo", "Hallo welt", "Hello world", "Hola mundo"]);
        let mut out = Vec::new();
        store.read("Hola mundo", 0, 0, Budget::new(10, 1 << 20), &mut out).unwrap();
        let values: Vec<&[u8]> = out.iter().map(|m| m.value).collect();
        assert_eq!(values, [&b"mensaje 1"[..], b"mensaje 2", b"mensaje 3"]);
    }
}
