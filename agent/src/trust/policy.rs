//! Update policy: may a new tip be applied, given the last applied commit?
//!
//! * The tip must always verify.
//! * With a last applied commit, the tip must equal it or descend from it
//!   (a force-push or rollback is refused with [`Error::NotDescendant`])
//!   unless the operator explicitly allowed a rollback to exactly this tip.
//! * [`Require::All`] additionally verifies every commit in
//!   `last_applied..tip` (reachable from the tip, not from the last applied
//!   commit; merged side branches included). Without a last applied commit
//!   (first deployment), or for an explicitly allowed rollback, only the tip
//!   is checked: there is no trusted base to start a range from.
//!
//! History walks read commits through [`CommitSource`] and stop after a
//! limit ([`DEFAULT_WALK_LIMIT`] visited commits; [`Error::WalkLimitExceeded`]).
//! The range walk is git's date-ordered "paint" walk: commits reachable
//! from the last applied commit are painted uninteresting, and the walk
//! stops once only uninteresting commits remain that are older than every
//! interesting one (with one day of allowance for clock skew). Commits in
//! the range are never missed; severe clock skew can only make the walk
//! check *more* commits (possibly old ones that are already applied).

use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};

use super::commit::ParsedCommit;
use super::error::Error;
use super::time::now_unix;
use super::{parse_verified_commit, Signer, TrustStore};

/// Maximum number of commits a history walk visits by default.
pub const DEFAULT_WALK_LIMIT: usize = 100_000;

/// Clock-skew allowance of the range walk, seconds.
const SKEW_ALLOWANCE: i64 = 86_400;

/// Where commits come from (git in production, a map in tests).
pub trait CommitSource {
    /// The raw commit object for a full hex id (as `git cat-file commit ID`
    /// prints it). Parents are obtained by parsing it. Wrap lower-level
    /// failures with [`Error::commit_read`].
    fn raw_commit(&self, id: &str) -> Result<Vec<u8>, Error>;
}

/// Which commits must carry a trusted signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Require {
    /// Only the tip.
    Tip,
    /// Every commit in `last_applied..tip` (only the tip when there is no
    /// last applied commit).
    All,
}

/// The outcome of a successful [`check`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// Who signed the tip.
    pub signer: Signer,
    /// How many commits had their signature verified (tip included).
    pub checked_commits: usize,
}

/// Decides whether `tip` may be applied. See the module docs.
///
/// `allow_rollback_of`: the operator's explicit permission to apply a tip
/// that does not descend from `last_applied` (must name exactly `tip`).
pub fn check(
    store: &TrustStore,
    src: &dyn CommitSource,
    tip: &str,
    last_applied: Option<&str>,
    require: Require,
    allow_rollback_of: Option<&str>,
) -> Result<Verdict, Error> {
    check_with_limit(
        store,
        src,
        tip,
        last_applied,
        require,
        allow_rollback_of,
        DEFAULT_WALK_LIMIT,
    )
}

/// [`check`] with an explicit history walk limit (number of commits).
pub fn check_with_limit(
    store: &TrustStore,
    src: &dyn CommitSource,
    tip: &str,
    last_applied: Option<&str>,
    require: Require,
    allow_rollback_of: Option<&str>,
    walk_limit: usize,
) -> Result<Verdict, Error> {
    let now = now_unix();
    let tip = tip.to_ascii_lowercase();
    let tip_commit = load(src, &tip)?;
    let signer = store.verify_parsed(&tip, &tip_commit, now)?;
    let single = Verdict {
        signer: signer.clone(),
        checked_commits: 1,
    };

    let Some(last) = last_applied.map(str::to_ascii_lowercase) else {
        return Ok(single);
    };
    if tip == last {
        return Ok(single);
    }
    let rollback_allowed = allow_rollback_of.is_some_and(|r| r.eq_ignore_ascii_case(&tip));
    let not_descendant = || Error::NotDescendant {
        tip: tip.clone(),
        last_applied: last.clone(),
    };

    match require {
        Require::Tip => {
            if is_ancestor(src, &last, &tip, &tip_commit, walk_limit)? || rollback_allowed {
                Ok(single)
            } else {
                Err(not_descendant())
            }
        }
        Require::All => {
            let walk = match range_walk(src, &tip, tip_commit.clone(), &last, walk_limit) {
                Ok(walk) => walk,
                // The last applied commit may be gone (force-push + gc):
                // decide descendancy without reading it.
                Err(err @ Error::CommitRead { .. }) if err.commit() == Some(last.as_str()) => {
                    if is_ancestor(src, &last, &tip, &tip_commit, walk_limit)? {
                        return Err(err);
                    }
                    RangeWalk {
                        descendant: false,
                        range: Vec::new(),
                    }
                }
                Err(err) => return Err(err),
            };
            if !walk.descendant {
                return if rollback_allowed {
                    Ok(single)
                } else {
                    Err(not_descendant())
                };
            }
            // Oldest first, so the reported commit is the earliest bad one.
            for (id, commit) in walk.range.iter().rev() {
                if *id != tip {
                    store.verify_parsed(id, commit, now)?;
                }
            }
            Ok(Verdict {
                signer,
                checked_commits: walk.range.len(),
            })
        }
    }
}

fn load(src: &dyn CommitSource, id: &str) -> Result<ParsedCommit, Error> {
    let raw = src.raw_commit(id)?;
    parse_verified_commit(id, &raw)
}

/// Breadth-first search from `tip` for `ancestor`.
fn is_ancestor(
    src: &dyn CommitSource,
    ancestor: &str,
    tip: &str,
    tip_commit: &ParsedCommit,
    limit: usize,
) -> Result<bool, Error> {
    let mut visited: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    visited.insert(tip.to_string());
    let mut frontier = tip_commit.parents.clone();
    loop {
        for p in frontier.drain(..) {
            if p == ancestor {
                return Ok(true);
            }
            if visited.insert(p.clone()) {
                queue.push_back(p);
            }
        }
        let Some(id) = queue.pop_front() else {
            return Ok(false);
        };
        if visited.len() > limit {
            return Err(Error::WalkLimitExceeded {
                tip: tip.to_string(),
                last_applied: ancestor.to_string(),
                limit,
            });
        }
        frontier = load(src, &id)?.parents;
    }
}

struct Node {
    commit: ParsedCommit,
    uninteresting: bool,
    queued: bool,
}

struct RangeWalk {
    /// Whether `last` is an ancestor of the tip.
    descendant: bool,
    /// Commits in `last..tip`, newest first (walk order), tip first.
    range: Vec<(String, ParsedCommit)>,
}

struct Painter<'a> {
    src: &'a dyn CommitSource,
    nodes: HashMap<String, Node>,
    /// (committer time, insertion sequence, id): newest first.
    queue: BinaryHeap<(i64, u64, String)>,
    seq: u64,
    interesting_queued: usize,
    limit: usize,
    tip: String,
    last: String,
}

impl Painter<'_> {
    fn add(&mut self, id: String, commit: ParsedCommit, uninteresting: bool) -> Result<(), Error> {
        if self.nodes.len() >= self.limit {
            return Err(Error::WalkLimitExceeded {
                tip: self.tip.clone(),
                last_applied: self.last.clone(),
                limit: self.limit,
            });
        }
        self.seq += 1;
        // Negative sequence: among equal dates, earlier insertions pop first.
        self.queue
            .push((commit.committer_time, u64::MAX - self.seq, id.clone()));
        if !uninteresting {
            self.interesting_queued += 1;
        }
        self.nodes.insert(
            id,
            Node {
                commit,
                uninteresting,
                queued: true,
            },
        );
        Ok(())
    }

    /// Paints `id` and every already known ancestor uninteresting.
    fn mark_uninteresting(&mut self, id: &str) {
        let mut stack = vec![id.to_string()];
        while let Some(cur) = stack.pop() {
            let Some(node) = self.nodes.get_mut(&cur) else {
                continue;
            };
            if node.uninteresting {
                continue;
            }
            node.uninteresting = true;
            if node.queued {
                self.interesting_queued -= 1;
            } else {
                // Already expanded: its parents are known (or queued).
                stack.extend(node.commit.parents.iter().cloned());
            }
        }
    }
}

fn range_walk(
    src: &dyn CommitSource,
    tip: &str,
    tip_commit: ParsedCommit,
    last: &str,
    limit: usize,
) -> Result<RangeWalk, Error> {
    let mut p = Painter {
        src,
        nodes: HashMap::new(),
        queue: BinaryHeap::new(),
        seq: 0,
        interesting_queued: 0,
        limit: limit.max(2),
        tip: tip.to_string(),
        last: last.to_string(),
    };
    p.add(tip.to_string(), tip_commit, false)?;
    let last_commit = load(src, last)?;
    p.add(last.to_string(), last_commit, true)?;

    let mut descendant = false;
    let mut order: Vec<String> = Vec::new();
    let mut oldest_interesting = i64::MAX;

    while let Some((date, _, id)) = p.queue.pop() {
        let Some(node) = p.nodes.get_mut(&id) else {
            continue;
        };
        node.queued = false;
        let uninteresting = node.uninteresting;
        if !uninteresting {
            p.interesting_queued -= 1;
            oldest_interesting = oldest_interesting.min(date);
            order.push(id.clone());
        }
        let parents = node.commit.parents.clone();
        for parent in parents {
            if !uninteresting && parent == p.last {
                descendant = true;
            }
            match p.nodes.get(&parent) {
                Some(pn) => {
                    if uninteresting && !pn.uninteresting {
                        p.mark_uninteresting(&parent);
                    }
                }
                None => {
                    let commit = load(p.src, &parent)?;
                    p.add(parent, commit, uninteresting)?;
                }
            }
        }
        if p.interesting_queued == 0 {
            let newest_queued = p.queue.peek().map_or(i64::MIN, |e| e.0);
            if newest_queued < oldest_interesting.saturating_sub(SKEW_ALLOWANCE) {
                break;
            }
        }
    }

    let mut range = Vec::new();
    for id in order {
        if let Some(node) = p.nodes.remove(&id) {
            if !node.uninteresting {
                range.push((id, node.commit));
            }
        }
    }
    Ok(RangeWalk { descendant, range })
}

#[cfg(test)]
mod tests {
    use super::super::commit::{commit_object_id, parse_commit, ObjectFormat};
    use super::*;
    use std::collections::BTreeSet;

    /// In-memory, unsigned commits (signatures are irrelevant to the walk).
    #[derive(Default)]
    struct Mem {
        raw: HashMap<String, Vec<u8>>,
        reads: std::cell::Cell<usize>,
    }

    impl Mem {
        fn add(&mut self, parents: &[&str], time: i64, msg: &str) -> String {
            let mut raw = String::from("tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n");
            for p in parents {
                raw.push_str(&format!("parent {p}\n"));
            }
            raw.push_str(&format!(
                "author A <a@x> {time} +0000\ncommitter C <c@x> {time} +0000\n\n{msg}\n"
            ));
            let id = commit_object_id(raw.as_bytes(), ObjectFormat::Sha1).expect("hash");
            self.raw.insert(id.clone(), raw.into_bytes());
            id
        }
    }

    impl CommitSource for Mem {
        fn raw_commit(&self, id: &str) -> Result<Vec<u8>, Error> {
            self.reads.set(self.reads.get() + 1);
            self.raw
                .get(id)
                .cloned()
                .ok_or_else(|| Error::commit_read(id, format!("no commit {id}")))
        }
    }

    fn walk(m: &Mem, tip: &str, last: &str, limit: usize) -> Result<RangeWalk, Error> {
        let tip_commit = load(m, tip)?;
        range_walk(m, tip, tip_commit, last, limit)
    }

    fn ids(w: &RangeWalk) -> BTreeSet<String> {
        w.range.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Exact `last..tip` by full traversal.
    fn exact_range(m: &Mem, tip: &str, last: &str) -> BTreeSet<String> {
        let reach = |start: &str| {
            let mut seen = BTreeSet::new();
            let mut stack = vec![start.to_string()];
            while let Some(id) = stack.pop() {
                if seen.insert(id.clone()) {
                    let c = parse_commit(&m.raw[&id]).expect("parse");
                    stack.extend(c.parents);
                }
            }
            seen
        };
        let from_last = reach(last);
        reach(tip).difference(&from_last).cloned().collect()
    }

    #[test]
    fn range_excludes_history_of_last_and_includes_merged_side_branch() {
        let mut m = Mem::default();
        let r = m.add(&[], 1000, "root");
        let a = m.add(&[&r], 2000, "a");
        let l = m.add(&[&a], 3000, "last");
        let s = m.add(&[&r], 2500, "side");
        let t = m.add(&[&l, &s], 4000, "merge");
        let w = walk(&m, &t, &l, 100).expect("walk");
        assert!(w.descendant);
        assert_eq!(ids(&w), BTreeSet::from([t.clone(), s.clone()]));
        assert_eq!(w.range[0].0, t, "tip comes first");
    }

    #[test]
    fn skewed_old_commit_in_range_is_not_missed() {
        let mut m = Mem::default();
        let r = m.add(&[], 100_000, "root");
        let a = m.add(&[&r], 200_000, "a");
        let l = m.add(&[&a], 300_000, "last");
        let x = m.add(&[&a], 50, "skewed, dated 1970");
        let t = m.add(&[&l, &x], 400_000, "tip");
        let w = walk(&m, &t, &l, 100).expect("walk");
        assert_eq!(ids(&w), BTreeSet::from([t, x]));
    }

    #[test]
    fn not_descendant_is_detected() {
        let mut m = Mem::default();
        let r = m.add(&[], 1000, "root");
        let a = m.add(&[&r], 2000, "a");
        let b = m.add(&[&a], 3000, "b");
        // Rollback: tip is an ancestor of last.
        let w = walk(&m, &a, &b, 100).expect("walk");
        assert!(!w.descendant);
        assert!(w.range.is_empty() || w.range.iter().all(|(id, _)| *id == a));
        // Unrelated history.
        let o = m.add(&[], 5000, "orphan");
        assert!(!walk(&m, &o, &b, 100).expect("walk").descendant);
    }

    #[test]
    fn walk_stops_early_on_long_shared_history() {
        let mut m = Mem::default();
        let mut prev = m.add(&[], 0, "root");
        for i in 1..500 {
            prev = m.add(&[&prev], i * 3600, &format!("old {i}"));
        }
        let last = prev.clone();
        let mut tip = last.clone();
        for i in 0..3 {
            tip = m.add(&[&tip], 10_000_000 + i, &format!("new {i}"));
        }
        m.reads.set(0);
        let w = walk(&m, &tip, &last, 10_000).expect("walk");
        assert_eq!(w.range.len(), 3);
        assert!(
            m.reads.get() < 40,
            "walk read {} commits of a 500-commit history",
            m.reads.get()
        );
    }

    #[test]
    fn walk_limit_is_enforced() {
        let mut m = Mem::default();
        let mut prev = m.add(&[], 0, "root");
        let base = prev.clone();
        for i in 1..50 {
            prev = m.add(&[&prev], i * 3600, "c");
        }
        match walk(&m, &prev, &base, 10) {
            Err(Error::WalkLimitExceeded { limit, .. }) => assert_eq!(limit, 10),
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("limit not enforced"),
        }
    }

    /// Random DAGs with random (skewed) dates: the walk never misses a
    /// commit of the exact range, and descendancy is exact.
    #[test]
    fn random_dags_never_miss_range_commits() {
        let mut seed: u64 = 0x5eed_1234_abcd_0001;
        let mut rnd = move |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for round in 0..150 {
            let mut m = Mem::default();
            let mut all: Vec<String> = Vec::new();
            let n = 5 + rnd(40) as usize;
            for i in 0..n {
                let mut parents = Vec::new();
                if !all.is_empty() && rnd(10) != 0 {
                    parents.push(all[rnd(all.len() as u64) as usize].clone());
                    if rnd(4) == 0 {
                        let p2 = all[rnd(all.len() as u64) as usize].clone();
                        if !parents.contains(&p2) {
                            parents.push(p2);
                        }
                    }
                }
                let refs: Vec<&str> = parents.iter().map(String::as_str).collect();
                // Mostly increasing dates, sometimes wildly skewed.
                let time = if rnd(5) == 0 {
                    rnd(10_000_000) as i64
                } else {
                    (i as i64) * 100_000
                };
                all.push(m.add(&refs, time, &format!("r{round} c{i}")));
            }
            let tip = all[rnd(n as u64) as usize].clone();
            let last = all[rnd(n as u64) as usize].clone();
            if tip == last {
                continue;
            }
            let exact = exact_range(&m, &tip, &last);
            let w = walk(&m, &tip, &last, 10_000).expect("walk");
            let got = ids(&w);
            assert!(
                exact.is_subset(&got),
                "round {round}: missed {:?}",
                exact.difference(&got).collect::<Vec<_>>()
            );
            let reach_tip = {
                let mut seen = BTreeSet::new();
                let mut stack = vec![tip.clone()];
                while let Some(id) = stack.pop() {
                    if seen.insert(id.clone()) {
                        stack.extend(parse_commit(&m.raw[&id]).expect("parse").parents);
                    }
                }
                seen
            };
            assert_eq!(w.descendant, reach_tip.contains(&last), "round {round}");
        }
    }
}
