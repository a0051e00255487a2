//! The in-memory index both stores keep: which sequences are live, where each one is, its
//! subject, time and accounted size, and per-subject counts.
//!
//! Sequences are dense from `first_seq`: entry `i` is sequence `first_seq + i`, and a removed
//! message leaves a hole until it reaches the front. Subjects are interned: each live subject
//! has an id, its message count and its first and last sequence, and is forgotten when its
//! last message goes, so the index grows with live messages and live subjects only.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashMap;

/// An id of an interned subject.
pub(crate) type SubjectId = u32;

/// No subject: the mark of a removed entry.
pub(crate) const HOLE: SubjectId = SubjectId::MAX;

/// One live message.
#[derive(Debug, Clone)]
pub(crate) struct Entry<L> {
    /// Its subject, or [`HOLE`] once removed.
    pub(crate) subject: SubjectId,
    /// When it was stored, in nanoseconds since the Unix epoch.
    pub(crate) ts: i64,
    /// Its size as nats-server accounts it (`bytes` in the stream state).
    pub(crate) size: u32,
    /// Where the store keeps it.
    pub(crate) loc: L,
}

impl<L> Entry<L> {
    fn is_live(&self) -> bool {
        self.subject != HOLE
    }
}

/// A live subject.
#[derive(Debug, Clone)]
pub(crate) struct SubjectState {
    pub(crate) name: Arc<str>,
    pub(crate) msgs: u64,
    pub(crate) first: u64,
    pub(crate) last: u64,
}

/// Live subjects, interned.
#[derive(Debug, Default)]
struct Subjects {
    by_id: Vec<Option<SubjectState>>,
    by_name: FxHashMap<Arc<str>, SubjectId>,
    free: Vec<SubjectId>,
}

impl Subjects {
    fn intern(&mut self, name: &str, seq: u64) -> SubjectId {
        if let Some(&id) = self.by_name.get(name) {
            if let Some(s) = self.by_id[id as usize].as_mut() {
                s.msgs += 1;
                s.last = seq;
            }
            return id;
        }
        let name: Arc<str> = name.into();
        let state = SubjectState { name: Arc::clone(&name), msgs: 1, first: seq, last: seq };
        let id = match self.free.pop() {
            Some(id) => {
                self.by_id[id as usize] = Some(state);
                id
            }
            None => {
                self.by_id.push(Some(state));
                (self.by_id.len() - 1) as SubjectId
            }
        };
        self.by_name.insert(name, id);
        id
    }

    fn get(&self, id: SubjectId) -> Option<&SubjectState> {
        self.by_id.get(id as usize).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, id: SubjectId) -> Option<&mut SubjectState> {
        self.by_id.get_mut(id as usize).and_then(Option::as_mut)
    }

    fn forget(&mut self, id: SubjectId) {
        if let Some(s) = self.by_id.get_mut(id as usize).and_then(Option::take) {
            self.by_name.remove(&s.name);
            self.free.push(id);
        }
    }

    fn len(&self) -> usize {
        self.by_name.len()
    }
}

/// An index taken apart, as an index snapshot keeps it: [`Index::parts`] and
/// [`Index::from_parts`].
pub(crate) struct Parts<L> {
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
    pub(crate) last_ts: i64,
    /// Every entry from `first_seq` on, holes included.
    pub(crate) entries: Vec<Entry<L>>,
    /// Subjects by id; `None` for a free id.
    pub(crate) subjects: Vec<Option<SubjectState>>,
}

/// The index of one stream's messages.
#[derive(Debug)]
pub(crate) struct Index<L> {
    /// The sequence of `entries[0]`.
    first_seq: u64,
    entries: VecDeque<Entry<L>>,
    /// The last sequence given out (stored or skipped).
    last_seq: u64,
    /// When the last message was stored.
    last_ts: i64,
    msgs: u64,
    bytes: u64,
    subjects: Subjects,
}

impl<L: Clone + Default> Index<L> {
    /// An empty index whose next message gets `first_seq` (1 unless configured).
    pub(crate) fn new(first_seq: u64) -> Self {
        let first_seq = first_seq.max(1);
        Index {
            first_seq,
            entries: VecDeque::new(),
            last_seq: first_seq - 1,
            last_ts: 0,
            msgs: 0,
            bytes: 0,
            subjects: Subjects::default(),
        }
    }

    /// The first sequence, every entry from it on (holes included), and the subjects by id:
    /// what a snapshot saves.
    pub(crate) fn parts(&self) -> (u64, &VecDeque<Entry<L>>, &[Option<SubjectState>]) {
        (self.first_seq, &self.entries, &self.subjects.by_id)
    }

    /// Rebuilds an index from its parts; `None` when they do not agree with each other (an
    /// entry naming a free subject, counts that do not add up).
    pub(crate) fn from_parts(p: Parts<L>) -> Option<Self> {
        let span = p.last_seq.checked_sub(p.first_seq.checked_sub(1)?)?;
        if p.entries.len() as u64 > span || p.entries.first().is_some_and(|e| !e.is_live()) {
            return None;
        }
        let mut counts = vec![0u64; p.subjects.len()];
        let (mut msgs, mut bytes) = (0u64, 0u64);
        for e in &p.entries {
            if e.is_live() {
                *counts.get_mut(e.subject as usize)? += 1;
                msgs += 1;
                bytes += u64::from(e.size);
            }
        }
        let mut subjects = Subjects::default();
        for (id, slot) in p.subjects.iter().enumerate() {
            match slot {
                Some(s) if s.msgs == counts[id] && s.msgs > 0 => {
                    if subjects.by_name.insert(Arc::clone(&s.name), id as SubjectId).is_some() {
                        return None;
                    }
                }
                None if counts[id] == 0 => subjects.free.push(id as SubjectId),
                _ => return None,
            }
        }
        subjects.by_id = p.subjects;
        let first_seq = if p.entries.is_empty() { p.last_seq + 1 } else { p.first_seq };
        Some(Index {
            first_seq,
            entries: VecDeque::from(p.entries),
            last_seq: p.last_seq,
            last_ts: p.last_ts,
            msgs,
            bytes,
            subjects,
        })
    }

    /// Messages held.
    pub(crate) fn msgs(&self) -> u64 {
        self.msgs
    }

    /// Accounted bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The first live sequence; `last_seq + 1` when empty (0 for a store that never had one).
    pub(crate) fn first_seq(&self) -> u64 {
        if self.msgs == 0 && self.last_seq == 0 {
            0
        } else {
            self.first_seq
        }
    }

    /// The last sequence given out.
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// When the last message was stored (0 when none was).
    pub(crate) fn last_ts(&self) -> i64 {
        self.last_ts
    }

    /// When the first live message was stored (0 when none).
    pub(crate) fn first_ts(&self) -> i64 {
        self.entries.front().map_or(0, |e| e.ts)
    }

    /// Subjects with live messages.
    pub(crate) fn num_subjects(&self) -> usize {
        self.subjects.len()
    }

    /// Holes between the first and last live messages.
    pub(crate) fn num_deleted(&self) -> u64 {
        match self.entries.back() {
            Some(_) => self.entries.len() as u64 - self.msgs,
            None => 0,
        }
    }

    /// The sequences of the holes, in order.
    pub(crate) fn deleted(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if !e.is_live() {
                out.push(self.first_seq + i as u64);
            }
        }
        out
    }

    fn slot(&self, seq: u64) -> Option<usize> {
        let i = seq.checked_sub(self.first_seq)? as usize;
        (i < self.entries.len()).then_some(i)
    }

    /// The live entry for `seq`.
    pub(crate) fn get(&self, seq: u64) -> Option<&Entry<L>> {
        self.slot(seq).map(|i| &self.entries[i]).filter(|e| e.is_live())
    }

    /// Moves a live entry's location (a segment was rewritten).
    pub(crate) fn set_loc(&mut self, seq: u64, loc: L) {
        if let Some(i) = self.slot(seq) {
            if self.entries[i].is_live() {
                self.entries[i].loc = loc;
            }
        }
    }

    /// The subject name of an entry.
    pub(crate) fn subject_name(&self, id: SubjectId) -> Option<&Arc<str>> {
        self.subjects.get(id).map(|s| &s.name)
    }

    /// The state of a live subject, by name.
    pub(crate) fn subject(&self, name: &str) -> Option<&SubjectState> {
        self.subjects.by_name.get(name).and_then(|&id| self.subjects.get(id))
    }

    /// Every live subject.
    pub(crate) fn subjects(&self) -> impl Iterator<Item = &SubjectState> {
        self.subjects.by_id.iter().flatten()
    }

    /// Takes the next sequence for a message on `subject`.
    pub(crate) fn append(&mut self, subject: &str, ts: i64, size: u32, loc: L) -> u64 {
        let seq = self.last_seq + 1;
        self.push(seq, subject, ts, size, loc);
        seq
    }

    /// Adds a message with a known sequence (past the last one), as recovery does; returns
    /// its subject's id, or `None` when the sequence was not past the last.
    pub(crate) fn push(&mut self, seq: u64, subject: &str, ts: i64, size: u32, loc: L) -> Option<SubjectId> {
        if seq <= self.last_seq {
            return None;
        }
        self.fill_gap(seq);
        let id = self.subjects.intern(subject, seq);
        self.push_entry(seq, id, ts, size, loc);
        Some(id)
    }

    /// As [`Index::push`], with the id `hint` tried first: when it names a live subject of that
    /// name, no lookup by name is needed. Recovery passes the id of the previous message's
    /// subject, which is most often the same. `hint` is updated to the message's subject id.
    pub(crate) fn push_hinted(&mut self, seq: u64, subject: &str, ts: i64, size: u32, loc: L, hint: &mut SubjectId) {
        let known = self.subjects.get(*hint).is_some_and(|s| &*s.name == subject);
        if !known {
            if let Some(id) = self.push(seq, subject, ts, size, loc) {
                *hint = id;
            }
            return;
        }
        if seq <= self.last_seq {
            return;
        }
        self.fill_gap(seq);
        if let Some(s) = self.subjects.get_mut(*hint) {
            s.msgs += 1;
            s.last = seq;
        }
        self.push_entry(seq, *hint, ts, size, loc);
    }

    /// Holes for the sequences between the last entry and `seq`.
    fn fill_gap(&mut self, seq: u64) {
        if self.entries.is_empty() {
            self.first_seq = seq;
        } else {
            // Sequences skipped between the last entry and this one are holes.
            let gap = seq - (self.first_seq + self.entries.len() as u64);
            for _ in 0..gap {
                let hole = Entry { subject: HOLE, ts: 0, size: 0, loc: L::default() };
                self.entries.push_back(hole);
            }
        }
    }

    fn push_entry(&mut self, seq: u64, id: SubjectId, ts: i64, size: u32, loc: L) {
        self.entries.push_back(Entry { subject: id, ts, size, loc });
        self.last_seq = seq;
        self.last_ts = ts;
        self.msgs += 1;
        self.bytes += u64::from(size);
    }

    /// Gives out a sequence without storing anything.
    pub(crate) fn skip(&mut self) -> u64 {
        self.last_seq += 1;
        if self.entries.is_empty() {
            self.first_seq = self.last_seq + 1;
        } else {
            let hole = Entry { subject: HOLE, ts: 0, size: 0, loc: L::default() };
            self.entries.push_back(hole);
        }
        self.last_seq
    }

    /// Moves the last sequence up to `seq` (recovery of skips and purges) without storing.
    pub(crate) fn advance_to(&mut self, seq: u64) {
        while self.last_seq < seq {
            self.skip();
        }
    }

    /// Drops every message; the next one gets `next`.
    pub(crate) fn reset_to(&mut self, next: u64) {
        let next = next.max(1);
        self.entries.clear();
        self.subjects = Subjects::default();
        self.msgs = 0;
        self.bytes = 0;
        self.first_seq = next;
        self.last_seq = next - 1;
    }

    /// Removes `seq`; returns its entry when it was live.
    pub(crate) fn remove(&mut self, seq: u64) -> Option<Entry<L>> {
        let i = self.slot(seq)?;
        if !self.entries[i].is_live() {
            return None;
        }
        let removed =
            std::mem::replace(&mut self.entries[i], Entry { subject: HOLE, ts: 0, size: 0, loc: L::default() });
        self.msgs -= 1;
        self.bytes -= u64::from(removed.size);
        self.unlink_subject(removed.subject, seq);
        while self.entries.front().is_some_and(|e| !e.is_live()) {
            self.entries.pop_front();
            self.first_seq += 1;
        }
        if self.entries.is_empty() {
            self.first_seq = self.last_seq + 1;
        }
        Some(removed)
    }

    /// Updates a subject's counts for its message `seq` going away.
    fn unlink_subject(&mut self, id: SubjectId, seq: u64) {
        let Some(s) = self.subjects.get_mut(id) else { return };
        s.msgs -= 1;
        if s.msgs == 0 {
            self.subjects.forget(id);
            return;
        }
        let (first, last) = (s.first, s.last);
        if seq == first {
            let next = (seq + 1..=last).find(|&q| self.get(q).is_some_and(|e| e.subject == id));
            if let (Some(next), Some(s)) = (next, self.subjects.get_mut(id)) {
                s.first = next;
            }
        } else if seq == last {
            let prev = (first..seq).rev().find(|&q| self.get(q).is_some_and(|e| e.subject == id));
            if let (Some(prev), Some(s)) = (prev, self.subjects.get_mut(id)) {
                s.last = prev;
            }
        }
    }

    /// The first live sequence at or after `start` whose subject matches `filter`.
    pub(crate) fn next_matching(&self, filter: &str, start: u64) -> Option<u64> {
        let literal = crate::subject::is_literal(filter.as_bytes());
        if literal {
            let s = self.subject(filter)?;
            if start > s.last {
                return None;
            }
            let id = self.subjects.by_name.get(filter).copied()?;
            let from = start.max(s.first);
            return (from..=s.last).find(|&q| self.get(q).is_some_and(|e| e.subject == id));
        }
        let from = start.max(self.first_seq);
        let begin = self.slot(from).unwrap_or(self.entries.len());
        self.entries.iter().enumerate().skip(begin).find_map(|(i, e)| {
            let name = self.subject_name(e.subject)?;
            matches_filter(filter, name).then_some(self.first_seq + i as u64)
        })
    }

    /// The last live sequence whose subject matches `filter`.
    pub(crate) fn last_matching(&self, filter: &str) -> Option<u64> {
        if crate::subject::is_literal(filter.as_bytes()) {
            return self.subject(filter).map(|s| s.last);
        }
        self.subjects().filter(|s| matches_filter(filter, &s.name)).map(|s| s.last).max()
    }

    /// Live sequences whose subject matches `filter` (all with `None`), in order.
    pub(crate) fn matching(&self, filter: Option<&str>) -> Vec<u64> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if !e.is_live() {
                continue;
            }
            let keep = match filter {
                None => true,
                Some(f) => self.subject_name(e.subject).is_some_and(|n| matches_filter(f, n)),
            };
            if keep {
                out.push(self.first_seq + i as u64);
            }
        }
        out
    }

    /// The live entries in order, with their sequences.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &Entry<L>)> {
        self.entries.iter().enumerate().filter(|(_, e)| e.is_live()).map(|(i, e)| (self.first_seq + i as u64, e))
    }

    /// The newest live entry, with its sequence.
    pub(crate) fn last_live(&self) -> Option<(u64, &Entry<L>)> {
        let (i, e) = self.entries.iter().enumerate().rev().find(|(_, e)| e.is_live())?;
        Some((self.first_seq + i as u64, e))
    }

    /// Live messages with sequences in `from..=to` on subjects matching one of `filters`
    /// (every subject when there are none).
    pub(crate) fn count_matching<F: AsRef<str>>(&self, filters: &[F], from: u64, to: u64) -> u64 {
        let to = to.min(self.last_seq);
        if from > to {
            return 0;
        }
        if filters.is_empty() && from <= self.first_seq {
            // Everything from the front on.
            let end = self.slot(to).map_or(self.entries.len(), |i| i + 1);
            if end == self.entries.len() {
                return self.msgs;
            }
        }
        if filters.is_empty() && to == self.last_seq && from > self.first_seq {
            // Everything from `from` on: the total less what lies before it, counting the
            // shorter side.
            let before = from - self.first_seq;
            let after = to + 1 - from;
            if before < after {
                return self.msgs - self.count_matching(filters, self.first_seq, from - 1);
            }
        }
        let mut verdict: Vec<Option<bool>> = vec![None; self.subjects.by_id.len()];
        let begin = self.slot(from.max(self.first_seq)).unwrap_or(self.entries.len());
        let end = self.slot(to).map_or(self.entries.len(), |i| i + 1);
        let mut n = 0;
        for e in self.entries.range(begin..end.max(begin)) {
            if !e.is_live() {
                continue;
            }
            if filters.is_empty() {
                n += 1;
                continue;
            }
            let slot = &mut verdict[e.subject as usize];
            let hit = *slot.get_or_insert_with(|| {
                self.subject_name(e.subject)
                    .is_some_and(|name| filters.iter().any(|f| matches_filter(f.as_ref(), name)))
            });
            n += u64::from(hit);
        }
        n
    }

    /// The subject of the live message `seq`.
    pub(crate) fn subject_of(&self, seq: u64) -> Option<&Arc<str>> {
        self.get(seq).and_then(|e| self.subject_name(e.subject))
    }

    /// The first live sequence stored at or after `ts`.
    pub(crate) fn first_at_or_after(&self, ts: i64) -> Option<u64> {
        self.entries.iter().enumerate().find(|(_, e)| e.is_live() && e.ts >= ts).map(|(i, _)| self.first_seq + i as u64)
    }

    /// The last sequence of each subject matching one of `filters`, in order.
    pub(crate) fn last_per_subject<F: AsRef<str>>(&self, filters: &[F]) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .subjects()
            .filter(|s| filters.is_empty() || filters.iter().any(|f| matches_filter(f.as_ref(), &s.name)))
            .map(|s| s.last)
            .collect();
        out.sort_unstable();
        out
    }

    /// The oldest live sequence, if any.
    pub(crate) fn front(&self) -> Option<u64> {
        self.entries.front().map(|_| self.first_seq)
    }
}

/// Whether `subject` matches the filter (`>` and `*` allowed in the filter).
pub(crate) fn matches_filter(filter: &str, subject: &str) -> bool {
    filter == ">" || crate::subject::matches(filter.as_bytes(), subject.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_subjects_and_first_and_last() {
        let mut ix: Index<()> = Index::new(1);
        assert_eq!((ix.first_seq(), ix.last_seq()), (0, 0));
        for s in ["a", "b", "a", "c", "a"] {
            ix.append(s, 1, 10, ());
        }
        assert_eq!((ix.first_seq(), ix.last_seq(), ix.msgs(), ix.bytes()), (1, 5, 5, 50));
        assert_eq!(ix.subject("a").map(|s| (s.msgs, s.first, s.last)), Some((3, 1, 5)));
        assert!(ix.remove(3).is_some());
        assert!(ix.remove(3).is_none());
        assert_eq!(ix.deleted(), vec![3]);
        assert!(ix.remove(1).is_some());
        assert_eq!(ix.subject("a").map(|s| (s.msgs, s.first, s.last)), Some((1, 5, 5)));
        assert_eq!((ix.first_seq(), ix.num_deleted()), (2, 1));
        assert_eq!(ix.next_matching("a", 0), Some(5));
        assert_eq!(ix.next_matching("*", 3), Some(4));
        assert_eq!(ix.last_matching(">"), Some(5));
        for q in [2, 4, 5] {
            ix.remove(q);
        }
        assert_eq!((ix.first_seq(), ix.last_seq(), ix.msgs(), ix.num_subjects()), (6, 5, 0, 0));
        assert_eq!(ix.skip(), 6);
        assert_eq!((ix.first_seq(), ix.last_seq()), (7, 6));
    }

    #[test]
    fn counts_what_matches_from_either_side() {
        let mut ix: Index<()> = Index::new(1);
        for i in 0..200u32 {
            ix.append(["a.x", "a.y", "b.x"][(i % 3) as usize], i64::from(i), 10, ());
        }
        for seq in (1..=200).step_by(7) {
            ix.remove(seq);
        }
        let brute = |filters: &[&str], from: u64, to: u64| {
            ix.iter()
                .filter(|(q, e)| {
                    *q >= from
                        && *q <= to
                        && (filters.is_empty()
                            || filters.iter().any(|f| matches_filter(f, ix.subject_name(e.subject).unwrap())))
                })
                .count() as u64
        };
        for from in [1, 2, 50, 150, 199, 200, 201] {
            for filters in [&[][..], &["a.*"][..], &["b.x", "a.y"][..]] {
                assert_eq!(ix.count_matching(filters, from, 200), brute(filters, from, 200), "{filters:?} from {from}");
                assert_eq!(ix.count_matching(filters, from, 120), brute(filters, from, 120), "{filters:?} {from}..120");
            }
        }
    }
}
