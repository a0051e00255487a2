//! Both stores against a naive model of nats-server's store semantics, over random operations,
//! with the file store closed and reopened between steps.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// A message in the model.
#[derive(Debug, Clone, PartialEq)]
struct M {
    subject: String,
    headers: Vec<u8>,
    data: Vec<u8>,
}

/// The model: live messages by sequence, the last sequence, the limits.
struct Model {
    msgs: BTreeMap<u64, M>,
    last: u64,
    limits: Limits,
    file_sizes: bool,
}

impl Model {
    fn size(&self, m: &M) -> u64 {
        if self.file_sizes {
            if m.headers.is_empty() {
                (30 + m.subject.len() + m.data.len()) as u64
            } else {
                (34 + m.subject.len() + m.headers.len() + m.data.len()) as u64
            }
        } else {
            (m.subject.len() + m.headers.len() + m.data.len() + 16) as u64
        }
    }

    fn bytes(&self) -> u64 {
        self.msgs.values().map(|m| self.size(m)).sum()
    }

    fn of_subject(&self, s: &str) -> Vec<u64> {
        self.msgs.iter().filter(|(_, m)| m.subject == s).map(|(q, _)| *q).collect()
    }

    fn store(&mut self, m: M) -> Result<u64, StoreError> {
        let l = self.limits;
        let raw = (m.headers.len() + m.data.len()) as u64;
        let same = self.of_subject(&m.subject);
        let asl = l.max_msgs_per_subject > 0 && same.len() as i64 >= l.max_msgs_per_subject;
        if l.discard_new {
            if asl && l.discard_new_per_subject {
                return Err(StoreError::MaxMsgsPerSubject);
            }
            if l.max_msgs > 0 && self.msgs.len() as i64 >= l.max_msgs && !asl {
                return Err(StoreError::MaxMsgs);
            }
            if l.max_bytes > 0 && self.bytes() + raw >= l.max_bytes as u64 {
                let frees = asl && same.first().is_some_and(|q| self.size(&self.msgs[q]) >= raw);
                if !frees {
                    return Err(StoreError::MaxBytes);
                }
            }
        }
        self.last += 1;
        let seq = self.last;
        let subject = m.subject.clone();
        self.msgs.insert(seq, m);
        if l.max_msgs_per_subject > 0 {
            loop {
                let same = self.of_subject(&subject);
                if same.len() as i64 <= l.max_msgs_per_subject {
                    break;
                }
                self.msgs.remove(&same[0]);
            }
        }
        self.enforce();
        Ok(seq)
    }

    fn enforce(&mut self) {
        let l = self.limits;
        while l.max_msgs > 0 && self.msgs.len() as i64 > l.max_msgs {
            let first = *self.msgs.keys().next().unwrap();
            self.msgs.remove(&first);
        }
        while l.max_bytes > 0 && self.bytes() > l.max_bytes as u64 {
            let first = *self.msgs.keys().next().unwrap();
            self.msgs.remove(&first);
        }
    }

    fn purge(&mut self, filter: Option<&str>, seq: u64, keep: u64) -> u64 {
        let filter = filter.filter(|f| *f != ">");
        let matching: Vec<u64> = self
            .msgs
            .iter()
            .filter(|(_, m)| filter.is_none_or(|f| index::matches_filter(f, &m.subject)))
            .map(|(q, _)| *q)
            .collect();
        let victims: Vec<u64> = match filter {
            None if keep > 0 => {
                if keep >= self.msgs.len() as u64 {
                    return 0;
                }
                let below = self.last + 1 - keep;
                matching.into_iter().filter(|&q| q < below).collect()
            }
            None if seq > 1 => {
                let n = matching.iter().filter(|&&q| q < seq).count() as u64;
                if seq > self.last + 1 {
                    let n = self.msgs.len() as u64;
                    self.msgs.clear();
                    self.last = seq - 1;
                    return n;
                }
                matching.into_iter().take(n as usize).collect()
            }
            None => matching,
            Some(_) if seq > 1 => matching.into_iter().filter(|&q| q < seq).collect(),
            Some(_) if keep > 0 => {
                let n = matching.len().saturating_sub(keep as usize);
                matching.into_iter().take(n).collect()
            }
            Some(_) => matching,
        };
        for q in &victims {
            self.msgs.remove(q);
        }
        victims.len() as u64
    }
}

#[derive(Debug, Clone)]
enum Op {
    Store(u8, u8, bool),
    Remove(u8),
    Purge(Option<u8>, u8, u8),
    Limits(i64, i64, i64, bool),
    Skip,
    Reopen,
    /// Housekeeping: compaction, then an index snapshot when one is due.
    Tick,
    /// An index snapshot, as at shutdown.
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..5, 0u8..40, any::<bool>()).prop_map(|(s, n, h)| Op::Store(s, n, h)),
        2 => any::<u8>().prop_map(Op::Remove),
        1 => (proptest::option::of(0u8..5), 0u8..30, 0u8..5).prop_map(|(f, s, k)| Op::Purge(f, s, k)),
        1 => (-1i64..20, -1i64..2000, -1i64..4, any::<bool>()).prop_map(|(m, b, p, d)| Op::Limits(m, b, p, d)),
        1 => Just(Op::Skip),
        1 => Just(Op::Reopen),
        1 => Just(Op::Tick),
        1 => Just(Op::Snapshot),
    ]
}

const SUBJECTS: [&str; 5] = ["a", "a.b", "a.c", "b.x", "c"];
const FILTERS: [&str; 5] = ["a", "a.*", ">", "b.>", "*"];

fn check(store: &Store, model: &Model) -> Result<(), TestCaseError> {
    let st = store.state();
    prop_assert_eq!(st.msgs, model.msgs.len() as u64);
    prop_assert_eq!(st.bytes, model.bytes());
    prop_assert_eq!(st.last_seq, model.last);
    let first = model.msgs.keys().next().copied().unwrap_or(if model.last == 0 { 0 } else { model.last + 1 });
    prop_assert_eq!(st.first_seq, first);
    for (q, m) in &model.msgs {
        let got = store.load(*q).map_err(|e| TestCaseError::fail(format!("load {q}: {e}")))?;
        prop_assert_eq!(&got.subject, &m.subject);
        prop_assert_eq!(&got.data[..], &m.data[..]);
        prop_assert_eq!(&got.headers[..], &m.headers[..]);
    }
    for s in SUBJECTS {
        let want = model.of_subject(s).last().copied();
        prop_assert_eq!(store.last_seq_for(s), want, "last of {}", s);
    }
    Ok(())
}

fn run(ops: Vec<Op>, file: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let open = |limits| {
        if file {
            Store::File(FileStore::open(dir.path(), limits, 1, false, 0, 0).unwrap())
        } else {
            Store::Memory(MemoryStore::new(limits, 1))
        }
    };
    let mut model = Model { msgs: BTreeMap::new(), last: 0, limits: Limits::default(), file_sizes: file };
    let mut store = open(model.limits);
    for op in ops {
        match op {
            Op::Store(s, n, h) => {
                let m = M {
                    subject: SUBJECTS[s as usize].to_string(),
                    headers: if h { b"NATS/1.0\r\nK: v\r\n\r\n".to_vec() } else { Vec::new() },
                    data: vec![n; n as usize],
                };
                let want = model.store(m.clone());
                let got = store.store(&m.subject, &m.headers, &m.data, 1);
                prop_assert_eq!(got, want);
            }
            Op::Remove(q) => {
                let q = u64::from(q) % (model.last + 2);
                let want = model.msgs.remove(&q).is_some();
                prop_assert_eq!(store.remove(q, q.is_multiple_of(2)).unwrap(), want);
            }
            Op::Purge(f, seq, keep) => {
                let filter = f.map(|f| FILTERS[f as usize]);
                let (seq, keep) = if keep > 0 { (0, u64::from(keep)) } else { (u64::from(seq), 0) };
                let want = model.purge(filter, seq, keep);
                prop_assert_eq!(store.purge(filter, seq, keep).unwrap(), want);
            }
            Op::Limits(m, b, p, d) => {
                let limits = Limits {
                    max_msgs: m,
                    max_bytes: b,
                    max_msgs_per_subject: p,
                    discard_new: d,
                    discard_new_per_subject: d && p > 0,
                    max_age: 0,
                };
                model.limits = limits;
                model.enforce();
                store.set_limits(limits);
            }
            Op::Skip => {
                model.last += 1;
                prop_assert_eq!(store.skip(), model.last);
            }
            Op::Tick => {
                store.compact_some().unwrap();
                store.flush().unwrap();
                if let Some(job) = store.snapshot(false, &[]).unwrap() {
                    job.write().unwrap();
                }
            }
            Op::Snapshot => {
                if let Some(job) = store.snapshot(true, &[]).unwrap() {
                    job.write().unwrap();
                }
            }
            Op::Reopen => {
                store.flush().unwrap();
                drop(store);
                store = open(model.limits);
                if !file {
                    // A memory store starts empty again.
                    model.msgs.clear();
                    model.last = 0;
                }
            }
        }
        check(&store, &model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn memory_store_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, false)?;
    }

    #[test]
    fn file_store_agrees_with_the_model_across_reopens(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, true)?;
    }
}

#[test]
fn a_torn_tail_is_cut_and_damage_costs_only_the_damaged_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileStore::open(dir.path(), Limits::default(), 1, false, 0, 0).unwrap();
    // Ten records that fill one segment.
    for i in 0..10u8 {
        s.store("t", b"", &[i; 16], 1).unwrap();
    }
    s.flush().unwrap();
    drop(s);
    let seg = dir.path().join("00000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let rec = bytes.len() / 10;
    // Damage the fourth record's payload and cut the last one in half.
    bytes[3 * rec + 40] ^= 0xff;
    bytes.truncate(bytes.len() - rec / 2);
    std::fs::write(&seg, &bytes).unwrap();
    let s = FileStore::open(dir.path(), Limits::default(), 1, false, 0, 0).unwrap();
    let st = s.state();
    assert_eq!(st.msgs, 8, "the damaged record and the torn one are lost, the rest kept");
    assert!(s.load(4).is_err());
    assert_eq!(s.load(5).unwrap().data[0], 4);
    assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, 9 * rec, "the torn tail is cut off");
}

fn reopen(dir: &std::path::Path, created: i64) -> FileStore {
    FileStore::open(dir, Limits::default(), 1, false, 0, created).unwrap()
}

fn contents(s: &FileStore) -> Vec<(u64, String, Vec<u8>)> {
    let st = s.state();
    (st.first_seq..=st.last_seq).filter_map(|q| s.load(q).ok()).map(|m| (m.seq, m.subject, m.data.to_vec())).collect()
}

#[test]
fn a_snapshot_is_loaded_and_only_what_came_after_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = reopen(dir.path(), 7);
    for i in 0..40u8 {
        s.store(["a", "b"][usize::from(i % 2)], b"", &[i; 20], 1).unwrap();
    }
    s.snapshot(&[(3, 1, "id-3")]).unwrap().write().unwrap();
    // After the snapshot: new messages, a delete in an old segment, the oldest removed.
    for i in 40..50u8 {
        s.store("c", b"", &[i; 20], 1).unwrap();
    }
    assert!(s.remove(10, false).unwrap());
    s.purge(None, 5, 0).unwrap();
    s.flush().unwrap();
    let (state, want) = (s.state(), contents(&s));
    drop(s);

    let mut s = reopen(dir.path(), 7);
    assert!(s.opened_from_snapshot());
    assert_eq!(s.state(), state);
    assert_eq!(contents(&s), want);
    assert_eq!(s.take_recovered_ids(), vec![(3, 1, "id-3".to_string())]);
    assert_eq!(s.store("a", b"", b"next", 1).unwrap(), state.last_seq + 1);
}

#[test]
fn a_snapshot_that_does_not_fit_the_files_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = reopen(dir.path(), 7);
    for i in 0..40u8 {
        s.store("a", b"", &[i; 20], 1).unwrap();
    }
    s.snapshot(&[]).unwrap().write().unwrap();
    let want = contents(&s);
    drop(s);

    // Another stream of the same name.
    let s = reopen(dir.path(), 8);
    assert!(!s.opened_from_snapshot());
    assert_eq!(contents(&s), want);
    drop(s);

    // A damaged snapshot.
    let snap = dir.path().join("index.snap");
    let mut bytes = std::fs::read(&snap).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 1;
    std::fs::write(&snap, &bytes).unwrap();
    let s = reopen(dir.path(), 8);
    assert!(!s.opened_from_snapshot());
    assert_eq!(contents(&s), want);
    drop(s);

    // The newest segment shorter than the snapshot says (writes lost in a machine crash).
    let mut s = reopen(dir.path(), 9);
    s.snapshot(&[]).unwrap().write().unwrap();
    drop(s);
    let last = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&last).unwrap().set_len(len - 10).unwrap();
    let s = reopen(dir.path(), 9);
    assert!(!s.opened_from_snapshot());
    assert_eq!(contents(&s), want[..want.len() - 1].to_vec(), "only the torn record is lost");
}
