//! The interactive walk on a real terminal (a pseudo-terminal made by `script`): jumping to an
//! offset and to the end of a large topic, and coming back to the same place after Esc.

mod common;

use common::{preloaded_broker, run_with, Running, CONSUMER, PRODUCER};

/// The Up arrow key as a terminal sends it.
const UP: &[u8] = b"\x1b[A";

/// Enter as a terminal in raw mode sends it.
const ENTER: &[u8] = b"\r";

/// Esc alone.
const ESC: &[u8] = b"\x1b";

#[test]
fn the_walk_jumps_to_an_offset_and_to_the_end_and_comes_back_after_esc() {
    let broker = preloaded_broker();
    let lines: String = (0..120).map(|i| format!("line {i}\n")).collect();
    let args = ["--connect", &broker.endpoint, "long"];
    run_with(PRODUCER, &args, lines.as_bytes(), &[]).assert_success();

    // `script` gives the consumer a terminal on standard input and output; what it draws comes
    // back on script's standard output.
    let command = format!("{CONSUMER} --connect {}", broker.endpoint);
    let mut walk =
        Running::start("script", &["-qfec", &command, "/dev/null"], &[("TERM", "xterm")]);
    walk.wait_stdout("Logical brokers");
    walk.write_stdin(ENTER);
    walk.wait_stdout("Topics on logical broker 1");
    // The topics are listed by name: "long" comes after the four sample topics.
    for _ in 0..4 {
        walk.write_stdin(b"j");
    }
    walk.wait_stdout("long  (120 messages");
    walk.write_stdin(ENTER);
    walk.wait_stdout("long: offsets 0 to 49 of 120");

    // From the first line, Up wraps to Quit; two more reach "Jump to the end" (the menu shows
    // 20 lines at a time, so it is not on screen yet).
    for _ in 0..3 {
        walk.write_stdin(UP);
    }
    walk.write_stdin(ENTER);
    walk.wait_stdout("long: offsets 70 to 119 of 120");

    // A message, then Esc: back on the same page, on the same line.
    walk.write_stdin(b"j");
    walk.write_stdin(ENTER);
    walk.wait_stdout("offset     71");
    walk.write_stdin(ESC);
    walk.wait_stdout("long: offsets 70 to 119 of 120");
    walk.write_stdin(ENTER);
    walk.wait_stdout("offset     71");
    walk.write_stdin(ESC);
    walk.wait_stdout("long: offsets 70 to 119 of 120");

    // Jump to offset 5: from line 71, Up reaches the first line, then wraps round to Quit;
    // "Jump to an offset" is third from the end on the last page (no Next page, no end).
    for _ in 0..4 {
        walk.write_stdin(UP);
    }
    walk.write_stdin(ENTER);
    // The prompt for the offset ends its line only once answered.
    walk.write_stdin(b"5\r");
    walk.wait_stdout("Offset (0 to 119)");
    walk.wait_stdout("long: offsets 5 to 54 of 120");

    // Esc back to the topics and in again: the topic opens where it was left.
    walk.write_stdin(ESC);
    walk.wait_stdout("Topics on logical broker 1");
    walk.write_stdin(ENTER);
    walk.wait_stdout("long: offsets 5 to 54 of 120");
    walk.write_stdin(ESC);
    walk.wait_stdout("Topics on logical broker 1");
    walk.write_stdin(ESC);
    walk.wait_stdout("Logical brokers");
    walk.write_stdin(ESC);
    let (status, _, _) = walk.wait_exit();
    assert!(status.success(), "{status}");
    broker.interrupt();
}

#[test]
fn the_walk_gives_up_within_its_timeout_when_the_broker_is_killed() {
    let broker = preloaded_broker();
    let command = format!("{CONSUMER} --connect {} --timeout 2s", broker.endpoint);
    let mut walk = Running::start("script", &["-qfec", &command, "/dev/null"], &[]);
    walk.wait_stdout("Logical brokers");
    walk.write_stdin(ENTER);
    walk.wait_stdout("Topics on logical broker 1");
    broker.signal("KILL");
    let killed = std::time::Instant::now();
    walk.write_stdin(ENTER);
    walk.wait_stdout("waiting for the broker at");
    let line = walk.wait_stdout("error: broker not reachable at");
    let (status, _, _) = walk.wait_exit();
    let took = killed.elapsed();
    assert_eq!(status.code(), Some(1), "{line}");
    // The timeout, half a second to give up and exit, and slack for a loaded machine.
    assert!(took < std::time::Duration::from_millis(3000), "took {took:?}");
}

#[test]
fn the_walk_idle_at_a_menu_notices_a_dead_broker_says_so_and_exits() {
    for menu in ["Logical brokers", "Topics on logical broker 1"] {
        let broker = preloaded_broker();
        let command = format!("{CONSUMER} --connect {} --timeout 2s", broker.endpoint);
        let mut walk = Running::start("script", &["-qfec", &command, "/dev/null"], &[]);
        walk.wait_stdout("Logical brokers");
        if menu != "Logical brokers" {
            walk.write_stdin(ENTER);
            walk.wait_stdout(menu);
        }
        broker.signal("KILL");
        let killed = std::time::Instant::now();
        // No key is pressed: the walk finds out by itself.
        let line = walk.wait_stdout("error: broker not reachable at");
        assert!(line.contains("leaving the walk"), "{line}");
        let (status, rest, _) = walk.wait_exit();
        let took = killed.elapsed();
        assert_eq!(status.code(), Some(1), "{line}");
        // The timeout, the watchdog's half-second beat, and slack for a loaded machine.
        assert!(took < std::time::Duration::from_millis(3500), "{menu}: took {took:?}");
        // Nothing but the error under the menu: no note about waiting.
        assert!(!rest.iter().any(|l| l.contains("waiting for the broker")), "{rest:?}");
    }
}

#[test]
fn the_walk_asks_for_a_partition_on_a_topic_of_several() {
    let broker = preloaded_broker();
    let connect = ["--connect", broker.endpoint.as_str()];
    let create = [&connect[..], &["create-topic", "spread", "--partitions", "3"]].concat();
    run_with(CONSUMER, &create, b"", &[]).assert_success();
    let produce = [&connect[..], &["--partition", "2", "spread", "a", "b", "c"]].concat();
    run_with(PRODUCER, &produce, b"", &[]).assert_success();

    let command = format!("{CONSUMER} --connect {}", broker.endpoint);
    let mut walk =
        Running::start("script", &["-qfec", &command, "/dev/null"], &[("TERM", "xterm")]);
    walk.wait_stdout("Logical brokers");
    walk.write_stdin(ENTER);
    walk.wait_stdout("Topics on logical broker 1");
    for _ in 0..4 {
        walk.write_stdin(b"j");
    }
    walk.wait_stdout("spread  (3 messages, 3 partitions)");
    walk.write_stdin(ENTER);
    walk.wait_stdout("spread: 3 partitions");
    walk.wait_stdout("partition 2    3 messages (offsets 0 to 2)");
    walk.write_stdin(b"jj");
    walk.write_stdin(ENTER);
    walk.wait_stdout("spread partition 2: offsets 0 to 2 of 3");
    walk.write_stdin(b"j");
    walk.write_stdin(ENTER);
    walk.wait_stdout("partition  2");
    walk.wait_stdout("offset     1");
    walk.wait_stdout("value      b");
    // Esc goes back up one menu at a time: the messages, the partitions, the topics.
    walk.write_stdin(ESC);
    walk.wait_stdout("spread partition 2: offsets 0 to 2 of 3");
    walk.write_stdin(ESC);
    walk.wait_stdout("spread: 3 partitions");
    walk.write_stdin(ESC);
    walk.wait_stdout("Topics on logical broker 1");
    walk.write_stdin(ESC);
    walk.wait_stdout("Logical brokers");
    walk.write_stdin(ESC);
    let (status, _, _) = walk.wait_exit();
    assert!(status.success(), "{status}");
    broker.interrupt();
}
