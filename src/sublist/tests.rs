use super::*;
use crate::subject;
use proptest::prelude::*;

#[derive(Debug)]
struct TestSub {
    id: usize,
    subject: Vec<u8>,
    queue: Option<Vec<u8>>,
}

impl Subscribable for TestSub {
    fn subject(&self) -> &[u8] {
        &self.subject
    }
    fn queue(&self) -> Option<&[u8]> {
        self.queue.as_deref()
    }
}

fn sub(id: usize, subject: &str, queue: Option<&str>) -> Arc<TestSub> {
    Arc::new(TestSub { id, subject: subject.into(), queue: queue.map(Into::into) })
}

/// Plain subscription ids, and queue groups with their member ids, all sorted.
type Ids = (Vec<usize>, Vec<(Vec<u8>, Vec<usize>)>);

fn ids(m: &Matches<TestSub>) -> Ids {
    let mut p: Vec<usize> = m.psubs.iter().map(|s| s.id).collect();
    p.sort();
    let mut q: Vec<(Vec<u8>, Vec<usize>)> = m
        .qsubs
        .iter()
        .map(|g| {
            let mut ids: Vec<usize> = g.members.iter().map(|s| s.id).collect();
            ids.sort();
            (g.name.to_vec(), ids)
        })
        .collect();
    q.sort();
    (p, q)
}

#[test]
fn literal_and_wildcards() {
    let sl = Sublist::new();
    let subs = [
        sub(0, "foo.bar", None),
        sub(1, "foo.*", None),
        sub(2, "foo.>", None),
        sub(3, ">", None),
        sub(4, "*.bar", None),
        sub(5, "foo", None),
        sub(6, "foo.bar.baz", None),
    ];
    for s in &subs {
        sl.insert(Arc::clone(s));
    }
    assert_eq!(ids(&sl.matches(b"foo.bar")).0, vec![0, 1, 2, 3, 4]);
    assert_eq!(ids(&sl.matches(b"foo")).0, vec![3, 5]);
    assert_eq!(ids(&sl.matches(b"foo.bar.baz")).0, vec![2, 3, 6]);
    assert_eq!(ids(&sl.matches(b"x.y")).0, vec![3]);
    assert_eq!(sl.count(), 7);
    for s in &subs {
        assert!(sl.remove(s));
        assert!(!sl.remove(s));
    }
    assert_eq!(sl.count(), 0);
    assert!(sl.root.read().is_empty(), "empty nodes are pruned");
}

#[test]
fn queue_groups_merge_by_name() {
    let sl = Sublist::new();
    sl.insert(sub(0, "a.b", Some("q")));
    sl.insert(sub(1, "a.*", Some("q")));
    sl.insert(sub(2, "a.>", Some("r")));
    sl.insert(sub(3, "a.b", None));
    let (p, q) = ids(&sl.matches(b"a.b"));
    assert_eq!(p, vec![3]);
    assert_eq!(q, vec![(b"q".to_vec(), vec![0, 1]), (b"r".to_vec(), vec![2])]);
}

#[test]
fn caches_are_patched_not_emptied() {
    let sl = Sublist::new();
    let mut one = PublisherCache::default();
    let mut two = PublisherCache::default();
    // A subject is cached at its second miss.
    for _ in 0..2 {
        assert!(one.get(&sl, b"a").is_empty());
        assert!(two.get(&sl, b"b.c").is_empty());
    }
    assert_eq!(sl.stats().matches, 4);
    assert_eq!(sl.stats().cached, 2);
    let s = sub(0, "a", None);
    sl.insert(Arc::clone(&s));
    assert_eq!(one.get(&sl, b"a").psubs.len(), 1);
    assert_eq!(two.get(&sl, b"a").psubs.len(), 1);
    let w = sub(1, "b.*", Some("q"));
    sl.insert(Arc::clone(&w));
    assert_eq!(two.get(&sl, b"b.c").qsubs[0].members.len(), 1);
    // Every answer came from the shared cache, patched in place.
    assert_eq!(sl.stats().matches, 4);
    assert!(Arc::ptr_eq(one.get(&sl, b"a"), two.get(&sl, b"a")), "publishers share one result");
    sl.remove(&s);
    sl.remove(&w);
    assert!(one.get(&sl, b"a").is_empty());
    assert!(two.get(&sl, b"b.c").is_empty());
    assert_eq!(sl.stats().matches, 4);
    assert_eq!(sl.stats().cached, 2);
}

#[test]
fn one_off_subjects_are_not_cached() {
    let sl = Sublist::new();
    sl.insert(sub(0, "_INBOX.x.*", None));
    let mut cache = PublisherCache::default();
    for i in 0..10_000 {
        assert_eq!(cache.get(&sl, format!("_INBOX.x.{i}").as_bytes()).psubs.len(), 1);
    }
    assert!(sl.stats().cached < 100, "{} reply subjects cached", sl.stats().cached);
}

#[test]
fn shared_cache_is_bounded_and_evicted_slots_are_refreshed() {
    let sl = Sublist::new();
    let mut cache = PublisherCache::default();
    for _ in 0..2 {
        assert!(cache.get(&sl, b"first").is_empty());
    }
    for i in 0..cache::MAX_SHARED * 2 {
        let subject = format!("s.{i}");
        let _ = sl.lookup(subject.as_bytes());
        let _ = sl.lookup(subject.as_bytes());
    }
    assert!(sl.stats().cached <= cache::MAX_SHARED);
    // Whether or not "first" was evicted, a new subscription on it must be seen.
    sl.insert(sub(0, "first", None));
    assert_eq!(cache.get(&sl, b"first").psubs.len(), 1);
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("c".to_string()),
        Just("*".to_string()),
        Just(">".to_string())
    ]
}

fn filter() -> impl Strategy<Value = String> {
    proptest::collection::vec(token(), 1..4).prop_map(|tokens| {
        // `>` only as the last token.
        let n = tokens.len();
        tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| if t == ">" && i + 1 < n { "*".into() } else { t })
            .collect::<Vec<_>>()
            .join(".")
    })
}

fn literal() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..5).prop_map(|t| t.join("."))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn agrees_with_naive_matcher(
        filters in proptest::collection::vec((filter(), proptest::option::of(prop_oneof![Just("q1"), Just("q2")])), 1..40),
        removals in proptest::collection::vec(any::<bool>(), 40),
        subjects in proptest::collection::vec(literal(), 1..20),
    ) {
        let sl = Sublist::new();
        let mut cache = PublisherCache::default();
        let mut other = PublisherCache::default();
        let subs: Vec<_> = filters.iter().enumerate().map(|(i, (f, q))| sub(i, f, *q)).collect();
        // Warm both caches between inserts, then remove some and check the caches saw it all.
        for (n, s) in subs.iter().enumerate() {
            prop_assert!(subject::is_valid_subscription(&s.subject));
            sl.insert(Arc::clone(s));
            let subj = &subjects[n % subjects.len()];
            cache.get(&sl, subj.as_bytes());
            if n % 3 == 0 {
                other.get(&sl, subj.as_bytes());
            }
        }
        let mut live = Vec::new();
        for (s, remove) in subs.iter().zip(&removals) {
            if *remove {
                prop_assert!(sl.remove(s));
            } else {
                live.push(Arc::clone(s));
            }
        }
        prop_assert_eq!(sl.count(), live.len());
        for subj in &subjects {
            let mut want_p: Vec<usize> = Vec::new();
            let mut want_q: Vec<(Vec<u8>, Vec<usize>)> = Vec::new();
            for s in live.iter().filter(|s| subject::matches(&s.subject, subj.as_bytes())) {
                match &s.queue {
                    None => want_p.push(s.id),
                    Some(q) => match want_q.iter_mut().find(|(n, _)| n == q) {
                        Some((_, ids)) => ids.push(s.id),
                        None => want_q.push((q.clone(), vec![s.id])),
                    },
                }
            }
            want_p.sort();
            for (_, ids) in want_q.iter_mut() { ids.sort(); }
            want_q.sort();
            prop_assert_eq!(ids(&sl.matches(subj.as_bytes())), (want_p.clone(), want_q.clone()));
            prop_assert_eq!(ids(cache.get(&sl, subj.as_bytes())), (want_p.clone(), want_q.clone()));
            prop_assert_eq!(ids(other.get(&sl, subj.as_bytes())), (want_p, want_q));
        }
    }
}
