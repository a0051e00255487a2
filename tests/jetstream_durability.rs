//! What was acknowledged survives: the server killed with SIGKILL while publishers publish with
//! acknowledgements, and a store whose files were truncated and damaged, both restarted as
//! processes on the same store directory.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use common::process::{self, Proc, COURIER};

const WAIT: Duration = Duration::from_secs(20);

/// Starts `courier` with JetStream on `store`, on a free port, logging to `log`, and waits for
/// it to listen.
fn start(store: &Path, log: &Path) -> Proc {
    let dir = log.parent().expect("the log's directory");
    let name = log.file_stem().and_then(|n| n.to_str()).expect("a log name");
    let conf = format!("listen: 127.0.0.1:-1\njetstream {{ store_dir: {:?} }}\n", store.to_str().unwrap());
    process::start(COURIER, dir, name, &conf)
}

async fn connect(url: &str) -> jetstream::Context {
    let client = tokio::time::timeout(WAIT, async_nats::connect(url)).await.expect("connect in time").expect("connect");
    jetstream::new(client)
}

/// Every message of the stream, by sequence, read back one by one.
async fn read_all(js: &jetstream::Context, name: &str) -> HashMap<u64, Vec<u8>> {
    let mut s = tokio::time::timeout(WAIT, js.get_stream(name)).await.expect("in time").expect("stream recovered");
    let last = s.info().await.expect("info").state.last_sequence;
    let mut out = HashMap::new();
    for seq in 1..=last {
        if let Ok(m) = tokio::time::timeout(WAIT, s.get_raw_message(seq)).await.expect("in time") {
            out.insert(seq, m.payload.to_vec());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("courier.log");
    let store = dir.path().join("store");
    let mut server = start(&store, &log);
    let js = connect(&server.client).await;
    js.create_stream(stream::Config { name: "EVENTS".into(), subjects: vec!["events.>".into()], ..Default::default() })
        .await
        .expect("create");

    // Four publishers, many acknowledgements in flight each, until the server is killed.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Vec<u8>)>();
    let mut tasks = Vec::new();
    for p in 0..4 {
        let js = js.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..1_000_000u64 {
                let payload = format!("publisher {p} message {i} {}", "x".repeat((i % 50) as usize)).into_bytes();
                let Ok(ack) = js.publish(format!("events.{p}"), payload.clone().into()).await else { return };
                let Ok(Ok(ack)) = tokio::time::timeout(WAIT, ack).await else { return };
                if tx.send((ack.sequence, payload)).is_err() {
                    return;
                }
            }
        }));
    }
    drop(tx);
    let mut acked: HashMap<u64, Vec<u8>> = HashMap::new();
    while acked.len() < 3000 {
        let (seq, payload) =
            tokio::time::timeout(WAIT, rx.recv()).await.expect("acks keep coming").expect("publishing");
        assert!(acked.insert(seq, payload).is_none(), "two acks for sequence {seq}");
    }
    server.kill();
    for t in tasks {
        let _ = tokio::time::timeout(WAIT, t).await;
    }
    while let Ok(Some((seq, payload))) = tokio::time::timeout(Duration::from_millis(10), rx.recv()).await {
        acked.insert(seq, payload);
    }

    let server = start(&store, &log);
    let js = connect(&server.client).await;
    let stored = read_all(&js, "EVENTS").await;
    for (seq, payload) in &acked {
        assert_eq!(stored.get(seq), Some(payload), "acknowledged sequence {seq} lost or changed");
    }
    let mut payloads: Vec<&Vec<u8>> = stored.values().collect();
    let total = payloads.len();
    payloads.sort();
    payloads.dedup();
    assert_eq!(payloads.len(), total, "a message is stored twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_cost_only_the_damaged_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("courier.log");
    let store = dir.path().join("store");
    let server = start(&store, &log);
    let js = connect(&server.client).await;
    js.create_stream(stream::Config { name: "D".into(), subjects: vec!["d".into()], ..Default::default() })
        .await
        .expect("create");
    for i in 0..100u32 {
        js.publish("d", format!("{i:040}").into()).await.unwrap().await.unwrap();
    }
    drop(server);

    let stream_dir = store.join("jetstream").join("$G").join("streams").join("D");
    let seg = stream_dir.join("msgs").join("00000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let record = bytes.len() / 100;
    bytes[10 * record + 40] ^= 0x5a; // the 11th message's payload
    bytes.truncate(bytes.len() - record / 3); // a torn last write
    std::fs::write(&seg, &bytes).unwrap();
    std::fs::write(stream_dir.join("meta.json"), b"{\"config\": garbage").unwrap();

    let server = start(&store, &log);
    let js = connect(&server.client).await;
    let stored = read_all(&js, "D").await;
    assert_eq!(stored.len(), 98, "all but the damaged and the torn record");
    assert!(!stored.contains_key(&11) && !stored.contains_key(&100));
    for (seq, payload) in &stored {
        assert_eq!(payload, format!("{:040}", seq - 1).as_bytes());
    }
    // And the stream takes new messages after the cut.
    let ack = js.publish("d", "after".into()).await.unwrap().await.unwrap();
    assert_eq!(ack.sequence, 100);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("damaged record"), "the damage is reported:\n{text}");
    drop(server);
}

/// Waits until the stream's index snapshot has been written (the store went quiet).
fn wait_for_snapshot(path: &Path) {
    let deadline = Instant::now() + WAIT;
    loop {
        if path.exists() {
            return;
        }
        assert!(Instant::now() < deadline, "no index snapshot at {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_the_index_snapshot_keeps_what_came_after_it_and_a_damaged_one_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("courier.log");
    let store = dir.path().join("store");
    let snap = store.join("jetstream").join("$G").join("streams").join("S").join("msgs").join("index.snap");
    let mut server = start(&store, &log);
    let js = connect(&server.client).await;
    js.create_stream(stream::Config {
        name: "S".into(),
        subjects: vec!["s.*".into()],
        max_messages_per_subject: 50,
        ..Default::default()
    })
    .await
    .expect("create");
    let payload = |i: u32| format!("message {i} {}", "y".repeat((i % 37) as usize)).into_bytes();
    // What the stream must hold: the newest 50 of each subject, less the deleted.
    let mut expected: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut publish = async |i: u32| {
        let ack = js.publish(format!("s.{}", i % 7), payload(i).into()).await.unwrap().await.unwrap();
        expected.insert(ack.sequence, payload(i));
        if ack.sequence > 350 {
            expected.remove(&(ack.sequence - 350));
        }
    };
    for i in 0..400u32 {
        publish(i).await;
    }
    wait_for_snapshot(&snap);
    // Written after the snapshot, and killed before the next one is due: more messages, and
    // deletes.
    for i in 400..600u32 {
        publish(i).await;
    }
    let s = js.get_stream("S").await.unwrap();
    for seq in [300u64, 590] {
        s.delete_message(seq).await.expect("delete");
        expected.remove(&seq);
    }
    assert_eq!(expected.len(), 7 * 50 - 2);
    server.kill();

    let check = |stored: &HashMap<u64, Vec<u8>>| {
        let mut extra: Vec<&u64> = stored.keys().filter(|k| !expected.contains_key(k)).collect();
        extra.sort();
        assert!(extra.is_empty(), "sequences back from the dead: {extra:?}");
        assert_eq!(stored.len(), expected.len());
        for (seq, p) in &expected {
            assert_eq!(stored.get(seq), Some(p), "sequence {seq} lost or changed");
        }
    };
    let mut server = start(&store, &log);
    let js = connect(&server.client).await;
    check(&read_all(&js, "S").await);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("index.snap"), "the snapshot was used without complaint:\n{text}");
    server.kill();

    // A damaged snapshot is not trusted: every segment is read instead.
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x21;
    std::fs::write(&snap, &bytes).unwrap();
    let server = start(&store, &log);
    let js = connect(&server.client).await;
    check(&read_all(&js, "S").await);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("reading every segment instead"), "the damage is reported:\n{text}");
    let ack = js.publish("s.0", "after".into()).await.unwrap().await.unwrap();
    assert_eq!(ack.sequence, 601);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_acking_across_sigkill_and_restart_gets_every_message_and_ends_with_nothing_pending() {
    use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
    use futures::StreamExt;
    const N: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("courier.log");
    let store = dir.path().join("store");
    let mut server = start(&store, &log);
    let js = connect(&server.client).await;
    let st = js
        .create_stream(stream::Config { name: "JOBS".into(), subjects: vec!["jobs.*".into()], ..Default::default() })
        .await
        .expect("create");
    for i in 0..N {
        js.publish(format!("jobs.{}", i % 4), format!("job {i}").into()).await.unwrap().await.unwrap();
    }
    let cfg = pull::Config {
        durable_name: Some("WORKER".into()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(1),
        ..Default::default()
    };
    let c: PullConsumer = st.create_consumer(cfg).await.expect("consumer");

    // Acks of the first third, then the server is killed mid-stream.
    let mut acked = std::collections::HashSet::new();
    let mut msgs = c.messages().await.unwrap();
    while acked.len() < (N / 3) as usize {
        let m = tokio::time::timeout(WAIT, msgs.next()).await.expect("in time").unwrap().unwrap();
        let seq = m.info().unwrap().stream_sequence;
        m.double_ack().await.expect("ack answered");
        acked.insert(seq);
    }
    // Once the consumer's saved state shows acks, kill.
    let state_file = store.join("jetstream/$G/streams/JOBS/obs/WORKER/state.json");
    let deadline = Instant::now() + WAIT;
    let saved_floor = loop {
        let floor = std::fs::read(&state_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["state"]["floor_sseq"].as_u64())
            .unwrap_or(0);
        if floor > 0 {
            break floor;
        }
        assert!(Instant::now() < deadline, "the consumer's state is never saved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.kill();
    drop(msgs);

    let server = start(&store, &log);
    let js = connect(&server.client).await;
    let st = js.get_stream("JOBS").await.expect("stream recovered");
    let mut c: PullConsumer = st.get_consumer("WORKER").await.expect("durable consumer recovered");
    let floor = c.info().await.unwrap().ack_floor.stream_sequence;
    assert!(floor >= saved_floor, "the saved state was restored: floor {floor}, saved {saved_floor}");
    let mut msgs = c.messages().await.unwrap();
    while acked.len() < N as usize {
        let m = tokio::time::timeout(WAIT, msgs.next()).await.expect("every message comes").unwrap().unwrap();
        let seq = m.info().unwrap().stream_sequence;
        m.double_ack().await.expect("ack answered");
        acked.insert(seq);
    }
    assert_eq!(acked, (1..=N).collect(), "every message acknowledged at least once");
    let deadline = Instant::now() + WAIT;
    loop {
        let info = c.info().await.unwrap().clone();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            assert_eq!(info.ack_floor.stream_sequence, N);
            break;
        }
        assert!(Instant::now() < deadline, "still pending: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(server);
}
