//! Update policy over the fixture repository (git history made by git).

use crate::common::{fixtures, store, GitSource};
use tend::trust::{check, check_with_limit, CommitSource, Error, Require, SignatureKind, Verdict};

fn run(
    tip: &str,
    last: Option<&str>,
    require: Require,
    rollback: Option<&str>,
) -> Result<Verdict, Error> {
    let fx = fixtures();
    let last_id = last.map(|n| fx.get(n));
    let rollback_id = rollback.map(|n| fx.get(n));
    check(
        store(),
        &fx.git(),
        fx.get(tip),
        last_id,
        require,
        rollback_id,
    )
}

fn assert_unsigned(result: Result<Verdict, Error>, name: &str) {
    let fx = fixtures();
    match result {
        Err(Error::Unsigned { commit }) => assert_eq!(commit, fx.get(name), "expected {name}"),
        other => panic!("expected Unsigned({name}), got {other:?}"),
    }
}

fn assert_not_descendant(result: Result<Verdict, Error>, tip: &str, last: &str) {
    let fx = fixtures();
    match result {
        Err(Error::NotDescendant {
            tip: t,
            last_applied,
        }) => {
            assert_eq!(t, fx.get(tip));
            assert_eq!(last_applied, fx.get(last));
        }
        other => panic!("expected NotDescendant, got {other:?}"),
    }
}

#[test]
fn first_deployment_checks_only_the_tip() {
    // c4's parent c3 is unsigned; without a last applied commit only the
    // tip is checked, whatever `require` says.
    for require in [Require::Tip, Require::All] {
        let v = run("c4", None, require, None).expect("tip verifies");
        assert_eq!(v.checked_commits, 1);
        assert_eq!(v.signer.identity, "ssh-ed25519@example.com");
    }
}

#[test]
fn unchanged_tip_is_accepted() {
    let v = run("c2", Some("c2"), Require::All, None).expect("same commit");
    assert_eq!(v.checked_commits, 1);
}

#[test]
fn unsigned_tip_is_refused_even_when_descendant() {
    assert_unsigned(run("c3", Some("c2"), Require::Tip, None), "c3");
    assert_unsigned(run("unsigned", None, Require::All, None), "unsigned");
}

#[test]
fn require_tip_ignores_unsigned_commit_in_range() {
    let v = run("c4", Some("c1"), Require::Tip, None).expect("tip ok");
    assert_eq!(v.checked_commits, 1);
}

#[test]
fn require_all_reports_unsigned_commit_in_the_middle() {
    assert_unsigned(run("c4", Some("c1"), Require::All, None), "c3");
    // Starting after c3, the range is just c4.
    let v = run("c4", Some("c3"), Require::All, None).expect("c3..c4");
    assert_eq!(v.checked_commits, 1);
}

#[test]
fn require_all_accepts_mixed_signers() {
    let v = run("g2", Some("c1"), Require::All, None).expect("c1..g2");
    assert_eq!(v.checked_commits, 2);
    assert_eq!(v.signer.kind, SignatureKind::OpenPgp);
    assert_eq!(v.signer.identity, "PGP Ed25519 <pgp-ed25519@example.com>");
}

#[test]
fn require_all_checks_merged_side_branch_but_not_old_history() {
    // c1..merge = g1, g2, s1 (side branch from the unsigned root), merge;
    // the unsigned root is reachable from c1 and is not checked.
    let v = run("merge", Some("c1"), Require::All, None).expect("range verifies");
    assert_eq!(v.checked_commits, 4);
    assert_eq!(v.signer.identity, "ssh-ed25519@example.com");
}

#[test]
fn require_all_refuses_unsigned_side_branch() {
    assert_unsigned(run("merge_bad_side", Some("c1"), Require::All, None), "s2");
    let v = run("merge_bad_side", Some("c1"), Require::Tip, None).expect("tip only");
    assert_eq!(v.checked_commits, 1);
}

#[test]
fn rollback_to_ancestor_is_refused_unless_allowed() {
    for require in [Require::Tip, Require::All] {
        assert_not_descendant(run("c1", Some("g2"), require, None), "c1", "g2");
        // Permission for another commit does not count.
        assert_not_descendant(run("c1", Some("g2"), require, Some("c2")), "c1", "g2");
        let v = run("c1", Some("g2"), require, Some("c1")).expect("explicit rollback");
        assert_eq!(v.checked_commits, 1);
    }
}

#[test]
fn force_push_to_unrelated_history_is_refused() {
    for require in [Require::Tip, Require::All] {
        let result = run("orphan", Some("c1"), require, None);
        assert_not_descendant(result, "orphan", "c1");
    }
    let err = run("orphan", Some("c1"), Require::Tip, None).expect_err("refused");
    assert!(
        err.to_string()
            .contains("not a descendant of last applied commit"),
        "{err}"
    );
}

#[test]
fn allowed_rollback_still_requires_a_good_tip() {
    // s2 is unsigned: permission to roll back does not bypass verification.
    assert_unsigned(run("s2", Some("c1"), Require::Tip, Some("s2")), "s2");
}

#[test]
fn walk_limit_is_reported() {
    let fx = fixtures();
    // c4 -> c3 -> c2 -> c1 -> root: root is 4 commits down.
    let result = check_with_limit(
        store(),
        &fx.git(),
        fx.get("c4"),
        Some(fx.get("root")),
        Require::Tip,
        None,
        2,
    );
    match result {
        Err(Error::WalkLimitExceeded { limit, .. }) => assert_eq!(limit, 2),
        other => panic!("expected WalkLimitExceeded, got {other:?}"),
    }
    let ok = check_with_limit(
        store(),
        &fx.git(),
        fx.get("c4"),
        Some(fx.get("root")),
        Require::Tip,
        None,
        10,
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn commit_source_errors_are_propagated() {
    struct Broken(GitSource, String);
    impl CommitSource for Broken {
        fn raw_commit(&self, id: &str) -> Result<Vec<u8>, Error> {
            if id == self.1 {
                return Err(Error::commit_read(id, "object store is corrupt"));
            }
            self.0.raw_commit(id)
        }
    }
    let fx = fixtures();
    let src = Broken(fx.git(), fx.get("g1").to_string());
    let err = check(
        store(),
        &src,
        fx.get("g2"),
        Some(fx.get("c1")),
        Require::All,
        None,
    )
    .expect_err("g1 unreadable");
    match &err {
        Error::CommitRead { commit, source } => {
            assert_eq!(commit, fx.get("g1"));
            assert_eq!(source.to_string(), "object store is corrupt");
        }
        other => panic!("expected CommitRead, got {other:?}"),
    }
}

#[test]
fn unreadable_last_applied_after_force_push_is_not_descendant() {
    struct Gone(GitSource, String);
    impl CommitSource for Gone {
        fn raw_commit(&self, id: &str) -> Result<Vec<u8>, Error> {
            if id == self.1 {
                return Err(Error::commit_read(id, "fatal: Not a valid object name"));
            }
            self.0.raw_commit(id)
        }
    }
    let fx = fixtures();
    // last applied = c2, which the new (unrelated) history no longer has.
    let src = Gone(fx.git(), fx.get("c2").to_string());
    for require in [Require::Tip, Require::All] {
        let result = check(
            store(),
            &src,
            fx.get("orphan"),
            Some(fx.get("c2")),
            require,
            None,
        );
        assert_not_descendant(result, "orphan", "c2");
    }
    // If the unreadable commit is an ancestor, the read error is reported.
    let result = check(
        store(),
        &src,
        fx.get("c4"),
        Some(fx.get("c2")),
        Require::All,
        None,
    );
    assert!(
        matches!(&result, Err(Error::CommitRead { commit, .. }) if commit == fx.get("c2")),
        "{result:?}"
    );
}
