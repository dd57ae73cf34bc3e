//! Faults in turn under load, counting what was acknowledged against what can be read: a
//! cluster of three real `nats-server`s, two broker processes on it with `--replicas 3`, and
//! real producers given both endpoints (lockstep and pipelined) writing numbered lines to the
//! partitions of one topic while a stream's leader is killed and restarted, a broker process is
//! killed and restarted, a server is paused and let go on, and two servers are stopped and
//! started again. Then every line a producer reported appended is read, once, at the offset it
//! was given, through both broker processes, which agree on every offset, and no line at all is
//! read twice.
//!
//! A producer that stops (at an append whose outcome it cannot tell, as it must) is replaced
//! on its partition, as a user would start it again, so that the load lasts through each
//! fault. Each fault waits for what it should bring about (a new leader, appends going on, a
//! refusal, an acknowledgement), polled with a deadline; the whole scenario is sized to run in
//! well under a minute on a quiet machine (25-40 s on a busy one).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::process::{ChildStdin, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{broker_binary, run, Running, CONSUMER, PRODUCER};
use testkit::{BrokerProcess, NatsCluster};

/// The topic the producers write to.
const TOPIC: &str = "chaos";

/// Its partitions: one producer writes to each.
const PARTITIONS: u32 = 4;

/// The clients' `--timeout`: long enough for an election, short enough to move on from a
/// silent broker process within the scenario.
const TIMEOUT: &str = "3s";

/// How many more messages the topic must hold before appends count as going on.
const PROGRESS: u64 = 100;

/// How long a fault may take to bring about what it should, or recovery from it.
const FAULT: Duration = Duration::from_secs(20);

/// How long into a pause of the server B is on an append through B must be acknowledged
/// through the two servers left: B's silence noticed (1.5 s), a connection made to another
/// server (at most 1 s for each, the paused one drawn included), when the paused server led
/// the probes' stream an election (up to 8 s), and the wait of a probe sent meanwhile until it
/// is refused.
const MOVED_WITHIN: Duration = Duration::from_secs(15);

/// The pause between two lines a producer is fed: a steady load, not a flood that would make
/// the scenario's length depend on the machine's speed.
const PACE: Duration = Duration::from_millis(2);

/// The name a JetStream stream of partition `partition` of [`TOPIC`] has (the broker's
/// `TOPIC_<hex of the name>`, with `_<partition>` after the first).
fn stream_of(partition: u32) -> String {
    let hex: String = TOPIC.bytes().map(|b| format!("{b:02x}")).collect();
    match partition {
        0 => format!("TOPIC_{hex}"),
        p => format!("TOPIC_{hex}_{p}"),
    }
}

/// The cluster, the two broker processes on it, and the producers' reports so far.
struct Scene {
    /// Three servers in one JetStream cluster.
    nats: NatsCluster,
    /// Broker processes A and B; `None` while one is killed.
    brokers: [Option<BrokerProcess>; 2],
    /// What each producer run reported.
    reports: Vec<Report>,
}

impl Scene {
    /// Starts the cluster and both broker processes, and makes the topic.
    fn start() -> Scene {
        let nats = NatsCluster::start();
        let mut scene = Scene { nats, brokers: [None, None], reports: Vec::new() };
        scene.brokers = [Some(scene.start_broker()), Some(scene.start_broker())];
        let created = scene.until("the topic is made", |scene| {
            let made = run(
                CONSUMER,
                &[
                    "--connect",
                    &scene.endpoint(0),
                    "--timeout",
                    TIMEOUT,
                    "create-topic",
                    TOPIC,
                    "--partitions",
                    &PARTITIONS.to_string(),
                ],
            );
            made.status.success().then_some(made)
        });
        assert!(created.stderr.contains("created topic chaos with 4 partitions"), "{created:#?}");
        scene
    }

    /// A broker process on the cluster, keeping three copies of each partition.
    fn start_broker(&self) -> BrokerProcess {
        let url = self.nats.url();
        BrokerProcess::start(&broker_binary(), &["--store", &url, "--replicas", "3"])
    }

    /// The endpoint of broker process `at` (0 for A, 1 for B).
    fn endpoint(&self, at: usize) -> String {
        self.brokers[at].as_ref().expect("the broker process runs").endpoint.clone()
    }

    /// Polls `check` until it gives something, every 50 ms, for at most [`FAULT`].
    ///
    /// # Panics
    /// Nothing within [`FAULT`], naming `what`.
    fn until<T>(&self, what: &str, mut check: impl FnMut(&Scene) -> Option<T>) -> T {
        let deadline = Instant::now() + FAULT;
        loop {
            if let Some(found) = check(self) {
                return found;
            }
            assert!(Instant::now() < deadline, "not within {FAULT:?}: {what}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many messages the topic holds, as the first broker process that answers says.
    fn messages(&self) -> Option<u64> {
        self.brokers.iter().flatten().find_map(|broker| {
            let listed = run(
                CONSUMER,
                &["--connect", &broker.endpoint, "--timeout", "2s", "--json", "topics"],
            );
            listed.lines().iter().find_map(|line| {
                let topic: serde_json::Value = serde_json::from_str(line).ok()?;
                (topic["name"] == TOPIC).then(|| topic["messages"].as_u64())?
            })
        })
    }

    /// Waits until the topic holds [`PROGRESS`] more messages than now: appends go on. A
    /// producer that has exited meanwhile (it stops at an append whose outcome it cannot tell,
    /// or one refused past its timeout) is replaced by a new one on its partition, as a user
    /// would start it again, so that the load goes on through every fault.
    fn wait_for_appends(&self, producing: &mut Producing, what: &str) {
        let from = self.until("the topic's size is known", Scene::messages);
        let started = Instant::now();
        let mut last = None;
        loop {
            producing.replace_exited(self);
            last = self.messages().or(last);
            if last.is_some_and(|now| now >= from + PROGRESS) {
                break;
            }
            if started.elapsed() > FAULT {
                // What tells why: the server each broker process is on (`None`: no server
                // that answers lists it), and what an append through B gets now.
                let connected: Vec<Option<usize>> = self
                    .brokers
                    .iter()
                    .map(|b| {
                        b.as_ref().and_then(|b| self.nats.serving(&format!("broker-{}", b.pid())))
                    })
                    .collect();
                let probe = run(
                    PRODUCER,
                    &["--connect", &self.endpoint(1), "--timeout", "2s", "probes", "z"],
                );
                panic!(
                    "not within {FAULT:?}: {what}: {from} messages, then {last:?}; the brokers' \
                     servers {connected:?}; producers started {}; probe {probe:?}",
                    producing.ended.len() + producing.runs.len()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        let now = last.unwrap_or(from);
        println!("{what}: {} more messages in {:?}", now - from, started.elapsed());
    }

    /// Waits until an append of a probe line through broker process `at` is acknowledged.
    fn wait_for_acknowledgement(&self, at: usize, what: &str) {
        let endpoint = self.endpoint(at);
        let started = Instant::now();
        self.until(what, |_| {
            let probe = run(PRODUCER, &["--connect", &endpoint, "--timeout", "2s", "probes", "x"]);
            probe.status.success().then_some(())
        });
        println!("{what}: after {:?}", started.elapsed());
    }

    /// Starts a producer per partition, for the phase named `phase`.
    fn produce(&self, phase: &str) -> Producing {
        let mut producing =
            Producing { phase: phase.to_owned(), runs: Vec::new(), ended: Vec::new() };
        for partition in 0..PARTITIONS {
            producing.runs.push(self.producer(phase, partition, 0));
        }
        producing
    }

    /// The producer of `partition`, the `generation`th of the phase named `phase`: on
    /// partitions 0 and 1 lockstep, on 2 and 3 pipelined; on 0 and 2 given A then B, on 1 and
    /// 3 B then A.
    fn producer(&self, phase: &str, partition: u32, generation: u32) -> ProducerRun {
        let (a, b) = (self.endpoint(0), self.endpoint(1));
        let connect =
            if partition.is_multiple_of(2) { format!("{a},{b}") } else { format!("{b},{a}") };
        let partition_text = partition.to_string();
        let mut args =
            vec!["--connect", &connect, "--timeout", TIMEOUT, "--partition", &partition_text];
        if partition >= 2 {
            args.extend(["--max-in-flight", "4", "--linger", "1", "--batch", "50"]);
        }
        args.push(TOPIC);
        let mut running = Running::start(PRODUCER, &args, &[]);
        let prefix = format!("{phase}{partition}.{generation}");
        let feeder = Feeder::start(running.take_stdin().expect("stdin"), prefix.clone());
        ProducerRun { prefix, partition, generation, running, feeder }
    }

    /// Ends the phase's producers' input, waits for each to exit and keeps what it reported.
    fn finish(&mut self, producing: Producing) {
        for run in producing.ended.into_iter().chain(producing.runs) {
            let written = run.feeder.stop();
            let (status, stdout, stderr) = run.running.wait_exit();
            let report = Report::read(run.prefix, run.partition, written, status, stdout, stderr);
            println!(
                "{}: {} lines written, {} acknowledged, {} unconfirmed, exit {:?}{}",
                report.prefix,
                report.written,
                report.acknowledged,
                report.unconfirmed.len(),
                report.status.code(),
                report.last_error.as_ref().map_or(String::new(), |last| format!(": {last}"))
            );
            self.reports.push(report);
        }
    }

    /// Every message of the topic read through broker process `at`, by partition and offset.
    fn read_through(&self, at: usize) -> Option<Held> {
        let endpoint = self.endpoint(at);
        let read = run(
            CONSUMER,
            &["--connect", &endpoint, "--timeout", TIMEOUT, "fetch", TOPIC, "--max", "10000000"],
        );
        if !read.status.success() {
            return None;
        }
        let mut held = BTreeMap::new();
        for line in read.lines() {
            // `PARTITION:OFFSET<TAB>VALUE` on a topic of several partitions.
            let (at, value) = line.split_once('\t')?;
            let (partition, offset) = at.split_once(':')?;
            let key = (partition.parse().ok()?, offset.parse().ok()?);
            assert!(held.insert(key, value.to_owned()).is_none(), "{key:?} read twice: {read:#?}");
        }
        Some(held)
    }

    /// Stops both broker processes as Ctrl-C does.
    fn stop(mut self) {
        for broker in self.brokers.iter_mut().filter_map(Option::take) {
            broker.interrupt();
        }
    }
}

/// Writes numbered lines `PREFIX-N` (N from 1, the producer's own line numbers) to a producer's
/// standard input at a steady pace, on a thread, until stopped or the producer has gone.
struct Feeder {
    /// Set to stop writing.
    stop: Arc<AtomicBool>,
    /// The thread; it gives how many lines it wrote.
    thread: thread::JoinHandle<u64>,
}

impl Feeder {
    /// Starts writing to `stdin`.
    fn start(mut stdin: ChildStdin, prefix: String) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut written = 0;
            while !stopping.load(Ordering::Relaxed) {
                let line = format!("{prefix}-{}\n", written + 1);
                if stdin.write_all(line.as_bytes()).and_then(|()| stdin.flush()).is_err() {
                    // The producer has exited; what it reported says why.
                    break;
                }
                written += 1;
                thread::sleep(PACE);
            }
            written
        });
        Feeder { stop, thread }
    }

    /// Stops writing and closes the producer's input: how many lines were written.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the feeding thread")
    }
}

/// One producer of a phase.
struct ProducerRun {
    /// What its lines start with, unique to it: `PHASE PARTITION.GENERATION`.
    prefix: String,
    /// The partition it writes to (`--partition`).
    partition: u32,
    /// How many producers of its partition this phase started before it.
    generation: u32,
    /// The running producer.
    running: Running,
    /// What feeds it.
    feeder: Feeder,
}

/// The producers of one phase.
struct Producing {
    /// The phase's name, which their lines start with.
    phase: String,
    /// The running one of each partition.
    runs: Vec<ProducerRun>,
    /// Those that exited and were replaced.
    ended: Vec<ProducerRun>,
}

impl Producing {
    /// Replaces each producer that has exited with a new one on its partition.
    fn replace_exited(&mut self, scene: &Scene) {
        for at in 0..self.runs.len() {
            if self.runs[at].running.try_exited() {
                let (partition, generation) = (self.runs[at].partition, self.runs[at].generation);
                let new = scene.producer(&self.phase, partition, generation + 1);
                self.ended.push(std::mem::replace(&mut self.runs[at], new));
            }
        }
    }
}

/// What a producer reported, read from its summary line and standard error.
#[derive(Debug)]
struct Report {
    /// What its lines start with.
    prefix: String,
    /// The partition it wrote to.
    partition: u32,
    /// How many lines it was given.
    written: u64,
    /// How it ended.
    status: ExitStatus,
    /// How many messages its summary says were appended.
    acknowledged: u64,
    /// The offsets its summary gives them, in order.
    offsets: Vec<u64>,
    /// Whether the summary listed only the first of its runs of offsets.
    offsets_cut: bool,
    /// The line numbers it reported as unconfirmed (may or may not have been appended).
    unconfirmed: HashSet<u64>,
    /// The last lines of its standard error when it ended with an error: why it stopped.
    last_error: Option<String>,
    /// The line numbers it reported as not appended.
    refused: HashSet<u64>,
    /// The line numbers it reported appended when sent again (idempotent, after a sending
    /// that got no reply or one in doubt): their place against later lines is not known.
    resent: HashSet<u64>,
    /// Everything it printed, for failure messages.
    output: String,
}

impl Report {
    /// Reads a producer's summary (`appended N messages to chaos at partition P offsets
    /// A..B, C[ and K more ranges][ in R requests][; U lines unconfirmed]`) and the line
    /// numbers it reported unconfirmed, not appended or appended when sent again (`line N:
    /// ...`, `lines N to M: ...`, `C lines from line N to M: ...`, each followed by why).
    fn read(
        prefix: String,
        partition: u32,
        written: u64,
        status: ExitStatus,
        stdout: Vec<String>,
        stderr: Vec<String>,
    ) -> Report {
        let output = format!("stdout {stdout:#?}\nstderr {stderr:#?}");
        let summary = stdout.iter().find(|line| line.starts_with("appended "));
        let (mut acknowledged, mut offsets, mut offsets_cut) = (0, Vec::new(), false);
        if let Some(summary) = summary {
            let rest = &summary["appended ".len()..];
            let (count, rest) = rest.split_once(' ').expect("a count");
            acknowledged = count.parse().unwrap_or_else(|_| panic!("{summary}"));
            if let Some(at) = rest.find(" at ") {
                let ranges = &rest[at + " at ".len()..];
                let ranges = ranges.split(';').next().unwrap_or_default();
                let ranges = ranges.split(" in ").next().unwrap_or_default();
                offsets_cut = ranges.contains(" more ranges");
                let ranges = ranges.split(" and ").next().unwrap_or_default();
                let ranges = ranges
                    .strip_prefix(&format!("partition {partition} "))
                    .unwrap_or_else(|| panic!("not partition {partition}: {summary}"));
                let ranges = ranges.trim_start_matches("offsets ").trim_start_matches("offset ");
                for range in ranges.split(", ") {
                    let (first, last) = range.split_once("..").unwrap_or((range, range));
                    let (first, last): (u64, u64) = (
                        first.parse().unwrap_or_else(|_| panic!("{summary}")),
                        last.parse().unwrap_or_else(|_| panic!("{summary}")),
                    );
                    offsets.extend(first..=last);
                }
            }
        }
        // Lines whose append may or may not have been stored, and lines said not appended.
        let (mut unconfirmed, mut refused, mut resent) =
            (HashSet::new(), HashSet::new(), HashSet::new());
        for line in &stderr {
            let Some((span, why)) = line.split_once(": ") else { continue };
            let span = span.split_once(" lines from ").map_or(span, |(_, span)| span);
            let Some(span) = span.strip_prefix("lines ").or_else(|| span.strip_prefix("line "))
            else {
                continue;
            };
            let (first, last) = span.split_once(" to ").unwrap_or((span, span));
            let (Ok(first), Ok(last)) = (first.parse::<u64>(), last.parse::<u64>()) else {
                continue;
            };
            if why.contains("may or may not have been appended")
                || why.contains("may have been appended")
            {
                unconfirmed.extend(first..=last);
            } else if why.starts_with("not appended") {
                refused.extend(first..=last);
            } else if why.starts_with("appended when sent again") {
                resent.extend(first..=last);
            }
        }
        let last_error = (!status.success()).then(|| {
            let from = stderr.len().saturating_sub(2);
            stderr[from..].join(" | ")
        });
        Report {
            last_error,
            prefix,
            partition,
            written,
            status,
            acknowledged,
            offsets,
            offsets_cut,
            unconfirmed,
            refused,
            resent,
            output,
        }
    }
}

/// The producer and line number of a value `PREFIX-N`.
fn line_of(value: &str) -> Option<(&str, u64)> {
    let (prefix, number) = value.rsplit_once('-')?;
    Some((prefix, number.parse().ok()?))
}

/// The messages of the topic read through one process, by partition and offset.
type Held = BTreeMap<(u32, u64), String>;

/// Checks what both processes served against what the producers reported: the processes
/// agree on every offset; no line is read twice, and every line read was written to its
/// partition and not said to be not appended; each line acknowledged is at an offset its
/// producer was given, in the order it wrote them (but for lines it reported appended when sent
/// again, whose place PROTOCOL.md leaves open: "Idempotent appends"), and is not one it
/// reported unconfirmed; a producer exited 0 or 1 (never a crash). Gives the lines acknowledged, the lines read and
/// those reported unconfirmed; or what is wrong.
fn check(reports: &[Report], on_a: &Held, on_b: &Held) -> Result<(u64, u64, usize), String> {
    if on_a != on_b {
        let differ = on_a.iter().find(|(at, value)| on_b.get(at) != Some(value));
        return Err(format!("the processes disagree, first at {differ:?}"));
    }
    let by_prefix: HashMap<&str, &Report> =
        reports.iter().map(|r| (r.prefix.as_str(), r)).collect();
    let mut seen: HashMap<&str, (u32, u64)> = HashMap::new();
    for (&(partition, offset), value) in on_a {
        if let Some(before) = seen.insert(value, (partition, offset)) {
            return Err(format!("{value} read twice: at {before:?} and at {partition}:{offset}"));
        }
        let report = line_of(value).and_then(|(prefix, number)| {
            let report = by_prefix.get(prefix)?;
            (number <= report.written).then_some((report, number))
        });
        let Some((report, number)) = report else {
            return Err(format!("{value} at {partition}:{offset} was never written"));
        };
        if report.refused.contains(&number) {
            return Err(format!("{value} was said not appended: {}", report.output));
        }
        if report.partition != partition {
            return Err(format!("{value} on partition {partition}"));
        }
    }
    let mut total = (0, 0, 0);
    for report in reports {
        let code = report.status.code();
        if !matches!(code, Some(0 | 1)) {
            return Err(format!("{} exited {code:?}: {}", report.prefix, report.output));
        }
        if !report.offsets_cut && report.offsets.len() as u64 != report.acknowledged {
            return Err(format!("{}: offsets against the count: {}", report.prefix, report.output));
        }
        let mut last = 0;
        for offset in &report.offsets {
            let Some(value) = on_a.get(&(report.partition, *offset)) else {
                return Err(format!("{}: offset {offset}, acknowledged, is lost", report.prefix));
            };
            let (prefix, number) = line_of(value).unwrap_or_default();
            if prefix != report.prefix {
                return Err(format!(
                    "offset {offset} acknowledged to {} holds {value}",
                    report.prefix
                ));
            }
            if report.unconfirmed.contains(&number) {
                return Err(format!("{value} reported unconfirmed and acknowledged"));
            }
            if report.resent.contains(&number) {
                continue;
            }
            if number <= last {
                return Err(format!("{value} after line {last} of {}", report.prefix));
            }
            last = number;
        }
        let read = on_a.values().filter(|v| line_of(v).is_some_and(|(p, _)| p == report.prefix));
        total = (
            total.0 + report.acknowledged,
            total.1 + read.count() as u64,
            total.2 + report.unconfirmed.len(),
        );
    }
    Ok(total)
}

#[test]
fn every_acknowledged_line_is_read_once_through_both_processes_after_faults_in_turn() {
    let started = Instant::now();
    let mut scene = Scene::start();

    // A partition's stream leader is killed, a new one elected, and the server started again.
    let mut producing = scene.produce("leader");
    scene.wait_for_appends(&mut producing, "appends before the leader's kill");
    let stream = stream_of(1);
    let leader = scene.nats.wait_for_stream_leader(&stream);
    println!("{stream} is led by n{}; killing it", leader + 1);
    scene.nats.servers[leader].kill();
    let elected = scene.until("another server leads the stream", |scene| {
        scene.nats.stream_leader(&stream).filter(|&now| now != leader)
    });
    println!("n{} leads {stream} now", elected + 1);
    scene.nats.servers[leader].resume();
    scene.nats.wait_for_leader();
    scene.wait_for_appends(&mut producing, "appends after the leader's kill");
    scene.finish(producing);

    // Broker process A is killed: its producers go on through B; A is started again.
    let mut producing = scene.produce("broker");
    scene.wait_for_appends(&mut producing, "appends before A's kill");
    scene.brokers[0].take().expect("A runs").kill();
    scene.wait_for_appends(&mut producing, "appends with A killed");
    scene.brokers[0] = Some(scene.start_broker());
    scene.wait_for_acknowledgement(0, "an append through A, started again");
    scene.finish(producing);

    // The server B is connected to stops answering, its sockets open, until B has taken it for
    // lost; then it goes on.
    let mut producing = scene.produce("pause");
    scene.wait_for_appends(&mut producing, "appends before the pause");
    let b_pid = scene.brokers[1].as_ref().expect("B runs").pid();
    let serving = scene.until("a server lists B's connection", |scene| {
        scene.nats.serving(&format!("broker-{b_pid}"))
    });
    let paused = scene.nats.servers[serving].pid().expect("the server runs");
    let before = scene.until("the topic's size is known", Scene::messages);
    println!("B is connected to n{}; pausing it", serving + 1);
    testkit::signal_process(paused, "STOP");
    let pause = Instant::now();
    // B answers without its server: an append acknowledged through another server, or refused
    // saying nothing was appended since it has no server (not left unanswered, nor "may have
    // been appended" for want of an acknowledgement).
    let answer = scene.until("B answers without its server", |scene| {
        producing.replace_exited(scene);
        let endpoint = scene.endpoint(1);
        let probe = run(PRODUCER, &["--connect", &endpoint, "--timeout", "1s", "probes", "p"]);
        let refused = probe.stderr.contains("nothing was appended");
        (probe.status.success() || refused).then_some(probe)
    });
    let during = scene.messages().map(|now| now.saturating_sub(before));
    println!(
        "B answered {:?} into the pause ({}); {during:?} more messages meanwhile",
        pause.elapsed(),
        if answer.status.success() { "acknowledged" } else { "refused: nothing appended" }
    );
    // And appends go on through the two servers left while the pause lasts: B's reconnection
    // moves on from the paused server when it draws it from its shuffled list (the connection
    // timeout covers the server's greeting, which a paused server never sends), and a stream
    // the paused server led elects another leader.
    let acknowledged = loop {
        producing.replace_exited(&scene);
        let endpoint = scene.endpoint(1);
        let probe = run(PRODUCER, &["--connect", &endpoint, "--timeout", "1s", "probes", "q"]);
        if probe.status.success() {
            break pause.elapsed();
        }
        assert!(
            pause.elapsed() < MOVED_WITHIN,
            "no append acknowledged through B {MOVED_WITHIN:?} into n{}'s pause; B is on {:?}; \
             last probe {probe:?}",
            serving + 1,
            scene.nats.serving(&format!("broker-{b_pid}")).map(|at| at + 1)
        );
    };
    println!("an append through B acknowledged {acknowledged:?} into the pause");
    testkit::signal_process(paused, "CONT");
    println!("n{} let go on after {:?}", serving + 1, pause.elapsed());
    scene.nats.wait_for_leader();
    scene.wait_for_acknowledgement(1, "an append through B after the pause");
    scene.wait_for_appends(&mut producing, "appends after the pause");
    scene.finish(producing);

    // Two servers of three are stopped: no quorum, appends are refused; then they start again.
    let mut producing = scene.produce("quorum");
    scene.wait_for_appends(&mut producing, "appends before the quorum's loss");
    let kept = scene.nats.wait_for_stream_leader(&stream_of(0));
    let stopped: Vec<usize> = (0..3).filter(|&at| at != kept).collect();
    for &at in &stopped {
        scene.nats.servers[at].kill();
    }
    println!("n{} alone", kept + 1);
    let lost = Instant::now();
    let refusal = scene.until("an append not acknowledged without a quorum", |scene| {
        let endpoint = scene.endpoint(1);
        let probe = run(PRODUCER, &["--connect", &endpoint, "--timeout", "1s", "probes", "y"]);
        (!probe.status.success()).then_some(probe)
    });
    println!("not acknowledged {:?} after the loss: {}", lost.elapsed(), refusal.stderr.trim());
    for &at in &stopped {
        scene.nats.servers[at].resume();
    }
    scene.nats.wait_for_leader();
    scene.wait_for_acknowledgement(0, "an append through A with the quorum back");
    scene.wait_for_acknowledgement(1, "an append through B with the quorum back");
    scene.wait_for_appends(&mut producing, "appends with the quorum back");
    scene.finish(producing);
    println!("faults done after {:?}", started.elapsed());

    // What each producer reported appended is served by both processes, which agree.
    let acknowledged: Vec<(u32, u64, &Report)> = scene
        .reports
        .iter()
        .flat_map(|r| r.offsets.iter().map(move |&offset| (r.partition, offset, r)))
        .collect();
    let (on_a, on_b) = scene.until("both processes serve every acknowledged line", |scene| {
        let on_a = scene.read_through(0)?;
        let on_b = scene.read_through(1)?;
        let whole = |held: &Held| {
            acknowledged.iter().all(|(p, offset, _)| held.contains_key(&(*p, *offset)))
        };
        (whole(&on_a) && whole(&on_b) && on_a == on_b).then_some((on_a, on_b))
    });
    let total = check(&scene.reports, &on_a, &on_b).unwrap_or_else(|why| panic!("{why}"));
    println!(
        "{} lines acknowledged, {} read through each process ({} reported unconfirmed), in {:?}",
        total.0,
        total.1,
        total.2,
        started.elapsed()
    );
    scene.stop();
}

/// A report as a producer of partition 0 prints it, that wrote 4 lines, acknowledged at
/// offsets 0 and 1 (lines 1 and 2) and 3 (line 4), line 3 unconfirmed.
fn a_report() -> Report {
    use std::os::unix::process::ExitStatusExt;
    Report::read(
        "t0.0".to_owned(),
        0,
        4,
        ExitStatus::from_raw(256),
        vec!["appended 3 messages to chaos at partition 0 offsets 0..1, 3 in 3 requests; 1 line \
              unconfirmed"
            .to_owned()],
        vec!["line 3: broker not reachable at tcp://127.0.0.1:9; the message sent was not \
              confirmed and may or may not have been appended; not sent again"
            .to_owned()],
    )
}

/// What a process serves: `values` at offsets 0, 1, ... of partition 0.
fn held(values: &[&str]) -> Held {
    values.iter().enumerate().map(|(at, v)| ((0, at as u64), (*v).to_owned())).collect()
}

#[test]
fn the_check_passes_what_was_acknowledged_once_with_an_unconfirmed_line_kept() {
    let report = a_report();
    assert_eq!(report.offsets, [0, 1, 3]);
    assert_eq!(report.unconfirmed, HashSet::from([3]));
    let served = held(&["t0.0-1", "t0.0-2", "t0.0-3", "t0.0-4"]);
    assert_eq!(check(&[report], &served, &served), Ok((3, 4, 1)));
}

#[test]
fn the_check_finds_a_lost_a_duplicated_a_misplaced_or_a_disputed_line() {
    let fails = |on_a: &[&str], on_b: &[&str], what: &str| {
        let why = check(&[a_report()], &held(on_a), &held(on_b)).expect_err(what);
        assert!(why.contains(what), "{why}");
    };
    let all = ["t0.0-1", "t0.0-2", "t0.0-3", "t0.0-4"];
    fails(&all, &["t0.0-1", "t0.0-2", "t0.0-3", "t0.0-5"], "disagree");
    fails(&["t0.0-1", "t0.0-2", "t0.0-3"], &["t0.0-1", "t0.0-2", "t0.0-3"], "is lost");
    let twice = ["t0.0-1", "t0.0-2", "t0.0-2", "t0.0-4"];
    fails(&twice, &twice, "read twice");
    let swapped = ["t0.0-2", "t0.0-1", "t0.0-3", "t0.0-4"];
    fails(&swapped, &swapped, "after line 2");
    let unconfirmed_at_an_acknowledged_offset = ["t0.0-1", "t0.0-2", "t0.0-4", "t0.0-3"];
    fails(
        &unconfirmed_at_an_acknowledged_offset,
        &unconfirmed_at_an_acknowledged_offset,
        "reported unconfirmed",
    );
    let foreign = ["t0.0-1", "t0.0-2", "t0.0-3", "t0.0-9"];
    fails(&foreign, &foreign, "never written");
}

#[test]
fn a_line_reported_appended_when_sent_again_may_follow_later_lines_but_no_other_may() {
    use std::os::unix::process::ExitStatusExt;
    let report = || {
        Report::read(
            "t0.0".to_owned(),
            0,
            3,
            ExitStatus::from_raw(0),
            vec![
                "appended 3 messages to chaos at partition 0 offsets 0..2 in 2 requests".to_owned()
            ],
            vec!["line 1: appended when sent again with the same producer and sequence; they may \
                  follow lines sent after them"
                .to_owned()],
        )
    };
    assert_eq!(report().resent, HashSet::from([1]));
    let copy_last = held(&["t0.0-2", "t0.0-3", "t0.0-1"]);
    assert_eq!(check(&[report()], &copy_last, &copy_last), Ok((3, 3, 0)));
    let others_swapped = held(&["t0.0-1", "t0.0-3", "t0.0-2"]);
    let why = check(&[report()], &others_swapped, &others_swapped).expect_err("out of order");
    assert!(why.contains("after line 3"), "{why}");
}
