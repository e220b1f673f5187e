//! Commit signature verification and trust policy against fixtures made by the real `git`,
//! `ssh-keygen` and `gpg` (`tests/fixtures/make-trust-fixtures.sh`).

mod common;
mod policy;
mod verify_commits;
