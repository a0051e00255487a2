//! The subject trie: which subscriptions match a published subject.
//!
//! One node per subject token, each with literal children, one `*` child and one `>` child, and
//! the plain and queue subscriptions that end there. Matching walks the literal, `*` and `>`
//! branches for each token.
//!
//! Results are cached in two levels (see [`cache`]). The trie keeps one shared cache of results
//! by subject, which every insert and remove patches in place, as nats-server's sublist does, so
//! a SUB or UNSUB changes only the entries it matches instead of emptying every cache. Each
//! publisher keeps a small [`PublisherCache`] of references into the shared entries, checked with
//! one atomic load, so a subject published again costs one hash lookup and no lock, and many
//! publishers of one subject share one result.
//!
//! The trie is generic over the subscription type so that it can be tested on its own: anything
//! that can say its subject and queue group can be stored. Subscriptions are told apart by
//! pointer identity (`Arc::ptr_eq`).

pub mod cache;

pub use cache::PublisherCache;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use rustc_hash::FxHashMap;

use crate::subject::{FWC, PWC, SEP};

/// What the trie needs to know about a subscription.
pub trait Subscribable {
    /// The subscription's subject filter; must be valid (see [`crate::subject`]).
    fn subject(&self) -> &[u8];
    /// Its queue group, if it is a queue subscription.
    fn queue(&self) -> Option<&[u8]>;
}

/// The subscriptions a subject matched: every plain one, and each queue group's members.
#[derive(Debug)]
pub struct Matches<S> {
    /// Plain subscriptions: each gets the message.
    pub psubs: Vec<Arc<S>>,
    /// Queue groups, merged by name across trie nodes: one member of each gets the message.
    pub qsubs: Vec<QueueGroup<S>>,
}

impl<S> Matches<S> {
    fn empty() -> Self {
        Matches { psubs: Vec::new(), qsubs: Vec::new() }
    }

    /// True when nothing matched.
    pub fn is_empty(&self) -> bool {
        self.psubs.is_empty() && self.qsubs.is_empty()
    }

    /// Every subscription, plain ones first, then each group's members.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<S>> {
        self.psubs.iter().chain(self.qsubs.iter().flat_map(|g| g.members.iter()))
    }
}

impl<S: Subscribable> Matches<S> {
    /// This result with `sub` added, as a cached result is patched when a subscription arrives.
    fn with(&self, sub: &Arc<S>) -> Matches<S> {
        let mut out = self.clone_shallow();
        match sub.queue() {
            None => out.psubs.push(Arc::clone(sub)),
            Some(q) => match out.qsubs.iter_mut().find(|g| &*g.name == q) {
                Some(g) => g.members.push(Arc::clone(sub)),
                None => out.qsubs.push(QueueGroup { name: q.into(), members: vec![Arc::clone(sub)] }),
            },
        }
        out
    }

    /// This result without `sub`, or `None` when it was not in it.
    fn without(&self, sub: &Arc<S>) -> Option<Matches<S>> {
        let mut out = self.clone_shallow();
        let found = match sub.queue() {
            None => remove_arc(&mut out.psubs, sub),
            Some(q) => {
                let i = out.qsubs.iter().position(|g| &*g.name == q)?;
                let found = remove_arc(&mut out.qsubs[i].members, sub);
                if out.qsubs[i].members.is_empty() {
                    out.qsubs.swap_remove(i);
                }
                found
            }
        };
        found.then_some(out)
    }

    fn clone_shallow(&self) -> Matches<S> {
        Matches {
            psubs: self.psubs.clone(),
            qsubs: self.qsubs.iter().map(|g| QueueGroup { name: g.name.clone(), members: g.members.clone() }).collect(),
        }
    }
}

/// The members of one queue group that a subject matched.
#[derive(Debug)]
pub struct QueueGroup<S> {
    /// The group's name.
    pub name: Box<[u8]>,
    /// Its matching members.
    pub members: Vec<Arc<S>>,
}

struct Node<S> {
    literal: FxHashMap<Box<[u8]>, Node<S>>,
    pwc: Option<Box<Node<S>>>,
    fwc: Option<Box<Node<S>>>,
    psubs: Vec<Arc<S>>,
    qsubs: Vec<QueueGroup<S>>,
}

impl<S> Default for Node<S> {
    fn default() -> Self {
        Node { literal: FxHashMap::default(), pwc: None, fwc: None, psubs: Vec::new(), qsubs: Vec::new() }
    }
}

impl<S> Node<S> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.pwc.is_none()
            && self.fwc.is_none()
            && self.psubs.is_empty()
            && self.qsubs.is_empty()
    }

    fn child_mut(&mut self, token: &[u8]) -> &mut Node<S> {
        if token == PWC {
            self.pwc.get_or_insert_with(Box::default)
        } else if token == FWC {
            self.fwc.get_or_insert_with(Box::default)
        } else {
            self.literal.entry(token.into()).or_default()
        }
    }

    fn add_to(&self, out: &mut Matches<S>) {
        out.psubs.extend(self.psubs.iter().cloned());
        for group in &self.qsubs {
            match out.qsubs.iter_mut().find(|g| g.name == group.name) {
                Some(g) => g.members.extend(group.members.iter().cloned()),
                None => out.qsubs.push(QueueGroup { name: group.name.clone(), members: group.members.clone() }),
            }
        }
    }
}

/// Counters for monitoring.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SublistStats {
    /// Subscriptions stored now.
    pub count: usize,
    /// Inserts since start.
    pub inserts: u64,
    /// Removes since start.
    pub removes: u64,
    /// Trie walks (misses of the shared cache) since start.
    pub matches: u64,
    /// Subjects in the shared cache now.
    pub cached: usize,
}

/// The subject trie shared by every connection.
pub struct Sublist<S> {
    /// Unique for the process, so that a publisher's cache can tell which trie it answers for.
    id: u64,
    root: RwLock<Node<S>>,
    /// Results by subject, patched by every insert and remove.
    cache: cache::SharedCache<S>,
    count: AtomicUsize,
    inserts: AtomicU64,
    removes: AtomicU64,
    matches: AtomicU64,
}

impl<S> Default for Sublist<S> {
    fn default() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Sublist {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            root: RwLock::new(Node::default()),
            cache: cache::SharedCache::default(),
            count: AtomicUsize::new(0),
            inserts: AtomicU64::new(0),
            removes: AtomicU64::new(0),
            matches: AtomicU64::new(0),
        }
    }
}

impl<S: Subscribable> Sublist<S> {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of subscriptions stored.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Counters for monitoring.
    pub fn stats(&self) -> SublistStats {
        SublistStats {
            count: self.count(),
            inserts: self.inserts.load(Ordering::Relaxed),
            removes: self.removes.load(Ordering::Relaxed),
            matches: self.matches.load(Ordering::Relaxed),
            cached: self.cache.len(),
        }
    }

    /// Adds a subscription. Its subject must be a valid subscription subject.
    pub fn insert(&self, sub: Arc<S>) {
        let mut root = self.root.write();
        let mut node = &mut *root;
        for token in sub.subject().split(|&b| b == SEP) {
            node = node.child_mut(token);
        }
        match sub.queue() {
            None => node.psubs.push(Arc::clone(&sub)),
            Some(q) => match node.qsubs.iter_mut().find(|g| &*g.name == q) {
                Some(g) => g.members.push(Arc::clone(&sub)),
                None => {
                    let name = q.into();
                    node.qsubs.push(QueueGroup { name, members: vec![Arc::clone(&sub)] })
                }
            },
        }
        // Still under the write lock, so that no walk can cache a result without it.
        self.cache.added(&sub);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.inserts.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes a subscription (by identity). Returns false when it was not there.
    pub fn remove(&self, sub: &Arc<S>) -> bool {
        let mut root = self.root.write();
        let mut tokens = sub.subject().split(|&b| b == SEP);
        let removed = remove_from(&mut root, &mut tokens, sub);
        if removed {
            self.cache.removed(sub);
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.removes.fetch_add(1, Ordering::Relaxed);
        }
        removed
    }

    /// Every subscription matching the literal `subject`, from a walk of the trie.
    pub fn matches(&self, subject: &[u8]) -> Matches<S> {
        let root = self.root.read();
        self.walk(&root, subject)
    }

    fn walk(&self, root: &Node<S>, subject: &[u8]) -> Matches<S> {
        self.matches.fetch_add(1, Ordering::Relaxed);
        let mut out = Matches::empty();
        collect(root, subject.split(|&b| b == SEP), &mut out);
        out
    }

    /// The shared cache entry for the literal `subject`, made from a walk of the trie when the
    /// subject is not cached yet; or, for a subject not seen recently (most reply subjects are
    /// published to once), the walk's result alone, so that one-off subjects do not crowd the
    /// cache out.
    pub fn lookup(&self, subject: &[u8]) -> cache::Lookup<S> {
        if let Some(slot) = self.cache.get(subject) {
            return cache::Lookup::Cached(slot);
        }
        // The read lock is held until the result is cached, so that an insert or remove (which
        // patches the cache under the write lock) cannot fall between the walk and the caching.
        let root = self.root.read();
        if !self.cache.admit(subject) {
            return cache::Lookup::Uncached(self.walk(&root, subject));
        }
        cache::Lookup::Cached(self.cache.get_or_insert(subject, || self.walk(&root, subject)))
    }

    /// Every subscription stored, for monitoring; the order is unspecified.
    pub fn all(&self) -> Vec<Arc<S>> {
        let mut out = Matches::empty();
        let root = self.root.read();
        collect_all(&root, &mut out);
        let mut all = out.psubs;
        all.extend(out.qsubs.into_iter().flat_map(|g| g.members));
        all
    }
}

fn collect<'a, S, I>(node: &Node<S>, mut tokens: I, out: &mut Matches<S>)
where
    I: Iterator<Item = &'a [u8]> + Clone,
{
    let Some(token) = tokens.next() else {
        node.add_to(out);
        return;
    };
    if let Some(fwc) = &node.fwc {
        fwc.add_to(out);
    }
    if let Some(pwc) = &node.pwc {
        collect(pwc, tokens.clone(), out);
    }
    if let Some(child) = node.literal.get(token) {
        collect(child, tokens, out);
    }
}

fn collect_all<S>(node: &Node<S>, out: &mut Matches<S>) {
    out.psubs.extend(node.psubs.iter().cloned());
    for g in &node.qsubs {
        out.qsubs.push(QueueGroup { name: g.name.clone(), members: g.members.clone() });
    }
    for child in node.literal.values() {
        collect_all(child, out);
    }
    for child in node.pwc.iter().chain(node.fwc.iter()) {
        collect_all(child, out);
    }
}

/// Removes `sub` below `node`, pruning nodes left empty. Returns whether it was found.
fn remove_from<'a, S: Subscribable>(
    node: &mut Node<S>,
    tokens: &mut impl Iterator<Item = &'a [u8]>,
    sub: &Arc<S>,
) -> bool {
    let Some(token) = tokens.next() else {
        return match sub.queue() {
            None => remove_arc(&mut node.psubs, sub),
            Some(q) => {
                let Some(i) = node.qsubs.iter().position(|g| &*g.name == q) else { return false };
                let removed = remove_arc(&mut node.qsubs[i].members, sub);
                if node.qsubs[i].members.is_empty() {
                    node.qsubs.swap_remove(i);
                }
                removed
            }
        };
    };
    if token == PWC {
        let Some(child) = node.pwc.as_deref_mut() else { return false };
        let removed = remove_from(child, tokens, sub);
        if child.is_empty() {
            node.pwc = None;
        }
        removed
    } else if token == FWC {
        let Some(child) = node.fwc.as_deref_mut() else { return false };
        let removed = remove_from(child, tokens, sub);
        if child.is_empty() {
            node.fwc = None;
        }
        removed
    } else {
        let Some(child) = node.literal.get_mut(token) else { return false };
        let removed = remove_from(child, tokens, sub);
        if child.is_empty() {
            node.literal.remove(token);
        }
        removed
    }
}

fn remove_arc<S>(list: &mut Vec<Arc<S>>, sub: &Arc<S>) -> bool {
    match list.iter().position(|s| Arc::ptr_eq(s, sub)) {
        Some(i) => {
            list.swap_remove(i);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests;
