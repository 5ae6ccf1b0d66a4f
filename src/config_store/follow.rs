//! Following the document's key: which revisions to apply, so that none is missed and none is
//! applied twice across reconnections, server restarts and a bucket made anew.
//!
//! The [`Cursor`] remembers the last revision seen and the history it belongs to (the bucket
//! stream's creation time). On every (re)start of the watch it decides where to resume; each
//! entry the watch delivers is then applied, skipped (already seen, or a newer one follows —
//! the fleet converges on the newest without replaying every step), or reported (a deletion,
//! which never empties a running configuration).

use serde::{Deserialize, Serialize};

/// What a follower has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The last revision seen (applied or skipped), if any.
    pub revision: Option<u64>,
    /// The history it belongs to: the bucket stream's creation time.
    pub history: Option<String>,
}

/// Where the watch (re)starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The key's latest value, then every new one.
    Latest,
    /// Every revision after this one.
    After(u64),
}

/// What (re)starting the watch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restart {
    /// The same history: resume as given.
    Continue(Resume),
    /// The bucket was made anew, or the key's revision went backwards: what was seen belongs to
    /// another history; the latest value is taken as new.
    NewHistory {
        /// The revision seen last, in the old history.
        previous: Option<u64>,
        /// The key's revision now.
        now: Option<u64>,
    },
}

/// One entry the watch delivered, as the cursor needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Its revision.
    pub revision: u64,
    /// How many newer entries of the key the watch has still to deliver.
    pub pending: u64,
    /// A deletion or purge rather than a value.
    pub deleted: bool,
}

/// What to do with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Apply it.
    Apply,
    /// Seen before (a redelivery): nothing to do.
    AlreadySeen,
    /// A newer revision follows at once: only the newest is applied.
    Superseded,
    /// The key was deleted: keep the running configuration, say so.
    Deleted,
}

impl Cursor {
    /// The watch (re)starts on the history `history`, where the key is now at `current`.
    pub fn restart(&mut self, history: &str, current: Option<u64>) -> Restart {
        let other_history = self.history.as_deref().is_some_and(|h| h != history);
        let backwards = matches!((self.revision, current), (Some(seen), Some(now)) if now < seen)
            || (self.revision.is_some() && current.is_none() && self.history.is_some());
        self.history = Some(history.to_string());
        if other_history || backwards {
            let previous = self.revision.take();
            return Restart::NewHistory { previous, now: current };
        }
        Restart::Continue(match self.revision {
            Some(seen) => Resume::After(seen),
            None => Resume::Latest,
        })
    }

    /// Where the watch resumes (after [`restart`](Self::restart)).
    pub fn resume(&self) -> Resume {
        self.revision.map_or(Resume::Latest, Resume::After)
    }

    /// The watch delivered `entry`.
    pub fn next(&mut self, entry: Seen) -> Step {
        if self.revision.is_some_and(|seen| entry.revision <= seen) {
            return Step::AlreadySeen;
        }
        self.revision = Some(entry.revision);
        if entry.pending > 0 {
            Step::Superseded
        } else if entry.deleted {
            Step::Deleted
        } else {
            Step::Apply
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: u64, pending: u64) -> Seen {
        Seen { revision, pending, deleted: false }
    }

    #[test]
    fn a_new_follower_starts_from_the_latest_and_applies_each_new_revision_once() {
        let mut c = Cursor::default();
        assert_eq!(c.restart("t1", Some(5)), Restart::Continue(Resume::Latest));
        assert_eq!(c.next(put(5, 0)), Step::Apply);
        assert_eq!(c.next(put(5, 0)), Step::AlreadySeen, "a redelivery is not applied again");
        assert_eq!(c.next(put(4, 0)), Step::AlreadySeen);
        assert_eq!(c.next(put(9, 0)), Step::Apply);
        assert_eq!(c.revision, Some(9));
    }

    #[test]
    fn a_restart_resumes_after_the_last_revision_seen() {
        let mut c = Cursor { revision: Some(9), history: Some("t1".into()) };
        assert_eq!(c.restart("t1", Some(12)), Restart::Continue(Resume::After(9)));
        // 10 and 11 were pushed while the watch was down: only the newest is applied.
        assert_eq!(c.next(put(10, 2)), Step::Superseded);
        assert_eq!(c.next(put(11, 1)), Step::Superseded);
        assert_eq!(c.next(put(12, 0)), Step::Apply);
        assert_eq!(c.restart("t1", Some(12)), Restart::Continue(Resume::After(12)));
        assert_eq!(c.resume(), Resume::After(12));
    }

    #[test]
    fn a_cursor_from_the_cache_file_knows_no_history_yet() {
        let mut c = Cursor { revision: Some(7), history: None };
        assert_eq!(c.restart("t1", Some(7)), Restart::Continue(Resume::After(7)));
        assert_eq!(c.history.as_deref(), Some("t1"));
    }

    #[test]
    fn a_revision_going_backwards_or_a_bucket_made_anew_is_a_new_history() {
        let mut c = Cursor { revision: Some(40), history: Some("t1".into()) };
        assert_eq!(c.restart("t1", Some(3)), Restart::NewHistory { previous: Some(40), now: Some(3) });
        assert_eq!(c.resume(), Resume::Latest);
        assert_eq!(c.next(put(3, 0)), Step::Apply, "revision 3 of the new history is new");

        let mut c = Cursor { revision: Some(40), history: Some("t1".into()) };
        assert_eq!(c.restart("t2", Some(41)), Restart::NewHistory { previous: Some(40), now: Some(41) });
        assert_eq!(c.next(put(41, 0)), Step::Apply);

        let mut c = Cursor { revision: Some(40), history: Some("t1".into()) };
        assert_eq!(c.restart("t1", None), Restart::NewHistory { previous: Some(40), now: None });
    }

    #[test]
    fn a_deletion_is_reported_not_applied() {
        let mut c = Cursor::default();
        c.restart("t1", Some(2));
        assert_eq!(c.next(Seen { revision: 2, pending: 0, deleted: true }), Step::Deleted);
        assert_eq!(c.next(put(3, 0)), Step::Apply);
    }
}
