//! Signature verification against fixtures made by git, ssh-keygen and gpg.

use std::path::Path;

use crate::common::{fixtures, store};
use tend::trust::{AllowedSigners, Error, ExpiryCheck, SignatureKind, Signer, TrustStore};

fn verify(name: &str) -> Result<Signer, Error> {
    let fx = fixtures();
    store().verify_commit(fx.get(name), &fx.raw(name))
}

fn key_id(fpr: &str) -> &str {
    &fpr[fpr.len() - 16..]
}

#[test]
fn good_ssh_signatures() {
    let fx = fixtures();
    for (commit, key, principal) in [
        ("ssh_ed25519", "ed25519", "ssh-ed25519@example.com"),
        ("ssh_ecdsa", "ecdsa", "ssh-ecdsa@example.com"),
        ("ssh_ecdsa384", "ecdsa384", "ssh-ecdsa384@example.com"),
        ("ssh_rsa", "rsa", "ssh-rsa@example.com,ops@example.com"),
    ] {
        let signer = verify(commit).unwrap_or_else(|e| panic!("{commit}: {e}"));
        let fpr = fx.get(&format!("ssh_fpr_{key}"));
        assert_eq!(
            signer,
            Signer {
                kind: SignatureKind::Ssh,
                identity: principal.to_string(),
                fingerprint: fpr.to_string(),
                signing_key: fpr.to_string(),
            },
            "{commit}"
        );
    }
}

#[test]
fn good_openpgp_signatures() {
    let fx = fixtures();
    for (commit, fpr_name, signing_name, uid) in [
        (
            "pgp_ed25519",
            "pgp_ed_fpr",
            "pgp_ed_fpr",
            "PGP Ed25519 <pgp-ed25519@example.com>",
        ),
        (
            "pgp_rsa",
            "pgp_rsa_fpr",
            "pgp_rsa_fpr",
            "PGP RSA <pgp-rsa@example.com>",
        ),
        (
            "pgp_subkey",
            "pgp_sub_fpr",
            "pgp_sub_signing_fpr",
            "PGP Subkey <pgp-subkey@example.com>",
        ),
    ] {
        let signer = verify(commit).unwrap_or_else(|e| panic!("{commit}: {e}"));
        assert_eq!(signer.kind, SignatureKind::OpenPgp, "{commit}");
        assert_eq!(signer.identity, uid, "{commit}");
        assert_eq!(signer.fingerprint, fx.get(fpr_name), "{commit}");
        assert_eq!(signer.signing_key, key_id(fx.get(signing_name)), "{commit}");
    }
    // The subkey is really a different key from the primary.
    assert_ne!(fx.get("pgp_sub_fpr"), fx.get("pgp_sub_signing_fpr"));
}

#[test]
fn good_signed_merge_commit() {
    let fx = fixtures();
    let parsed = tend::trust::parse_commit(&fx.raw("merge")).expect("parse");
    assert_eq!(
        parsed.parents,
        vec![fx.get("g2").to_string(), fx.get("s1").to_string()]
    );
    assert_eq!(parsed.subject, "Merge side branch s1");
    let signer = verify("merge").expect("merge verifies");
    assert_eq!(signer.identity, "ssh-ed25519@example.com");
}

#[test]
fn unsigned_commit_is_refused() {
    let fx = fixtures();
    match verify("unsigned") {
        Err(Error::Unsigned { commit }) => assert_eq!(commit, fx.get("unsigned")),
        other => panic!("expected Unsigned, got {other:?}"),
    }
}

#[test]
fn untrusted_ssh_key_is_unknown() {
    let fx = fixtures();
    let err = verify("ssh_untrusted").expect_err("untrusted");
    match &err {
        Error::UnknownKey {
            commit,
            kind,
            key,
            trust_file,
        } => {
            assert_eq!(commit, fx.get("ssh_untrusted"));
            assert_eq!(*kind, SignatureKind::Ssh);
            assert_eq!(key, fx.get("ssh_fpr_untrusted"));
            assert_eq!(trust_file.as_deref(), Some(fx.allowed_signers().as_path()));
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
    let msg = err.to_string();
    let expected = format!(
        "commit {}: signed by unknown SSH key {} (not in {})",
        &fx.get("ssh_untrusted")[..12],
        fx.get("ssh_fpr_untrusted"),
        fx.allowed_signers().display()
    );
    assert_eq!(msg, expected);
}

#[test]
fn untrusted_openpgp_key_is_unknown() {
    let fx = fixtures();
    match verify("pgp_untrusted") {
        Err(Error::UnknownKey { kind, key, .. }) => {
            assert_eq!(kind, SignatureKind::OpenPgp);
            assert_eq!(key, fx.get("pgp_untrusted_fpr"));
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
}

#[test]
fn forged_commits_have_bad_signatures() {
    let fx = fixtures();
    for (commit, kind, key) in [
        (
            "forged_ssh_message",
            SignatureKind::Ssh,
            fx.get("ssh_fpr_ed25519"),
        ),
        (
            "forged_ssh_tree",
            SignatureKind::Ssh,
            fx.get("ssh_fpr_ed25519"),
        ),
        (
            "forged_pgp_message",
            SignatureKind::OpenPgp,
            fx.get("pgp_ed_fpr"),
        ),
    ] {
        match verify(commit) {
            Err(Error::BadSignature {
                kind: k,
                key: got_key,
                reason,
                ..
            }) => {
                assert_eq!(k, kind, "{commit}");
                assert_eq!(got_key, key, "{commit}");
                assert!(reason.contains("does not match"), "{commit}: {reason}");
            }
            other => panic!("{commit}: expected BadSignature, got {other:?}"),
        }
    }
}

#[test]
fn expired_openpgp_key_is_refused_now_but_was_valid_then() {
    let fx = fixtures();
    let id = fx.get("pgp_expired");
    let raw = fx.raw("pgp_expired");
    // Key created 2024-01-01T00:00Z, expires one day later.
    let expiry = 1_704_067_200 + 86_400;
    match store().verify_commit(id, &raw) {
        Err(Error::Expired {
            expired_at,
            checked_against,
            what,
            ..
        }) => {
            assert_eq!(expired_at, expiry);
            assert_eq!(checked_against, ExpiryCheck::Now);
            assert_eq!(what, "key");
        }
        other => panic!("expected Expired, got {other:?}"),
    }
    // At 2024-01-01T13:00Z the key was valid.
    let signer = store()
        .verify_commit_at(id, &raw, 1_704_114_000)
        .expect("valid before expiry");
    assert_eq!(signer.identity, "PGP Expired <pgp-expired@example.com>");
    assert!(matches!(
        store().verify_commit_at(id, &raw, expiry),
        Err(Error::Expired { .. })
    ));
}

#[test]
fn revoked_openpgp_key_is_refused() {
    let fx = fixtures();
    match verify("pgp_revoked") {
        Err(err @ Error::Revoked { .. }) => {
            let Error::Revoked { key, what, .. } = &err else {
                unreachable!()
            };
            assert_eq!(key, fx.get("pgp_rev_fpr"));
            assert_eq!(*what, "key");
            assert!(
                err.to_string()
                    .ends_with(", whose key is revoked (reason: no reason specified)"),
                "{err}"
            );
        }
        other => panic!("expected Revoked, got {other:?}"),
    }
}

#[test]
fn revoked_signing_subkey_is_refused() {
    let fx = fixtures();
    match verify("pgp_subkey_revoked") {
        Err(err @ Error::Revoked { .. }) => {
            let Error::Revoked {
                key,
                what,
                reason,
                signing_subkey,
                ..
            } = &err
            else {
                unreachable!()
            };
            let sub_id = key_id(fx.get("pgp_subrev_signing_fpr"));
            assert_eq!(key, fx.get("pgp_subrev_fpr"));
            assert_eq!(*what, "subkey");
            assert_eq!(signing_subkey.as_deref(), Some(sub_id));
            assert_eq!(reason.as_deref(), Some("key retired: rotated out"));
            assert!(
                err.to_string()
                    .contains("(reason: key retired: rotated out)"),
                "{err}"
            );
        }
        other => panic!("expected Revoked, got {other:?}"),
    }
}

#[test]
fn expired_signing_subkey_is_refused() {
    let fx = fixtures();
    let id = fx.get("pgp_subkey_expired");
    let raw = fx.raw("pgp_subkey_expired");
    match store().verify_commit(id, &raw) {
        Err(Error::Expired {
            what,
            expired_at,
            checked_against,
            signing_subkey,
            ..
        }) => {
            let sub_id = key_id(fx.get("pgp_subexp_signing_fpr"));
            assert_eq!(what, "subkey");
            assert_eq!(signing_subkey.as_deref(), Some(sub_id));
            assert_eq!(expired_at, 1_704_067_200 + 86_400);
            assert_eq!(checked_against, ExpiryCheck::Now);
        }
        other => panic!("expected Expired, got {other:?}"),
    }
    // Signed 2024-01-01T12:00Z while the subkey was valid.
    let signer = store()
        .verify_commit_at(id, &raw, 1_704_114_000)
        .expect("valid then");
    assert_eq!(signer.fingerprint, fx.get("pgp_subexp_fpr"));
    assert_eq!(signer.signing_key, key_id(fx.get("pgp_subexp_signing_fpr")));
}

#[test]
fn principal_outside_validity_is_refused() {
    let fx = fixtures();
    match verify("ssh_outside_validity") {
        Err(err @ Error::OutsideValidity { .. }) => {
            let Error::OutsideValidity {
                principal,
                fingerprint,
                valid_before,
                valid_after,
                commit_time,
                ..
            } = &err
            else {
                unreachable!()
            };
            assert_eq!(principal, "validity@example.com");
            assert_eq!(fingerprint, fx.get("ssh_fpr_validity"));
            assert_eq!(*valid_before, Some(1_577_836_800)); // 2020-01-01
            assert_eq!(*valid_after, None);
            assert!(*commit_time > 1_704_067_200);
            assert!(
                err.to_string()
                    .contains("valid-before 2020-01-01T00:00:00Z"),
                "{err}"
            );
        }
        other => panic!("expected OutsideValidity, got {other:?}"),
    }
    let ok = verify("ssh_within_validity").expect("inside window");
    assert_eq!(ok.identity, "window@example.com");
}

#[test]
fn namespace_file_only_is_refused() {
    match verify("ssh_ns_file") {
        Err(Error::NamespaceNotAllowed {
            principal,
            namespaces,
            ..
        }) => {
            assert_eq!(principal, "nsfile@example.com");
            assert_eq!(namespaces, "file");
        }
        other => panic!("expected NamespaceNotAllowed, got {other:?}"),
    }
}

#[test]
fn content_must_match_commit_id() {
    let fx = fixtures();
    // Raw bytes of one commit presented under another commit's id.
    match store().verify_commit(fx.get("ssh_ecdsa"), &fx.raw("ssh_ed25519")) {
        Err(Error::CommitIdMismatch { commit, reason }) => {
            assert_eq!(commit, fx.get("ssh_ecdsa"));
            assert!(reason.contains(fx.get("ssh_ed25519")), "{reason}");
        }
        other => panic!("expected CommitIdMismatch, got {other:?}"),
    }
    assert!(matches!(
        store().verify_commit(&fx.get("ssh_ed25519")[..12], &fx.raw("ssh_ed25519")),
        Err(Error::MalformedCommit { .. })
    ));
    // Uppercase ids are accepted.
    store()
        .verify_commit(
            &fx.get("ssh_ed25519").to_ascii_uppercase(),
            &fx.raw("ssh_ed25519"),
        )
        .expect("uppercase id");
}

#[test]
fn signature_kind_without_configured_trust_file_is_unknown() {
    let fx = fixtures();
    let ssh_only = TrustStore::load(Some(&fx.allowed_signers()), None).expect("ssh only");
    let err = ssh_only
        .verify_commit(fx.get("pgp_ed25519"), &fx.raw("pgp_ed25519"))
        .expect_err("no keyring");
    assert!(
        matches!(
            &err,
            Error::UnknownKey {
                kind: SignatureKind::OpenPgp,
                trust_file: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .ends_with("(no OpenPGP keyring is configured)"),
        "{err}"
    );

    let pgp_only = TrustStore::load(None, Some(&fx.keyring())).expect("pgp only");
    assert!(matches!(
        pgp_only.verify_commit(fx.get("ssh_ed25519"), &fx.raw("ssh_ed25519")),
        Err(Error::UnknownKey {
            kind: SignatureKind::Ssh,
            trust_file: None,
            ..
        })
    ));
    pgp_only
        .verify_commit(fx.get("pgp_rsa"), &fx.raw("pgp_rsa"))
        .expect("pgp only store verifies pgp");
}

#[test]
fn same_key_on_several_lines_first_admitting_line_wins() {
    let fx = fixtures();
    let key = fx.ssh_pub("ed25519");
    let path = Path::new("/etc/tend/allowed_signers");
    let signers = AllowedSigners::parse(
        path,
        &format!("files-only namespaces=\"file\" {key}\nold valid-before=\"20200101\" {key}\ndeployer {key}\n"),
    )
    .expect("parse");
    let store = TrustStore::from_parts(Some(signers), None).expect("store");
    let signer = store
        .verify_commit(fx.get("ssh_ed25519"), &fx.raw("ssh_ed25519"))
        .expect("third line admits");
    assert_eq!(signer.identity, "deployer");

    // No admitting line: the first line's reason is reported.
    let signers = AllowedSigners::parse(
        path,
        &format!("files-only namespaces=\"file\" {key}\nold valid-before=\"20200101\" {key}\n"),
    )
    .expect("parse");
    let store = TrustStore::from_parts(Some(signers), None).expect("store");
    assert!(matches!(
        store.verify_commit(fx.get("ssh_ed25519"), &fx.raw("ssh_ed25519")),
        Err(Error::NamespaceNotAllowed { .. })
    ));
}

#[test]
fn load_errors_name_the_file() {
    let fx = fixtures();
    assert!(matches!(
        TrustStore::load(None, None),
        Err(Error::NoTrustRoots)
    ));
    let missing = fx.dir.join("does-not-exist");
    match TrustStore::load(Some(&missing), None) {
        Err(err @ Error::ReadTrustFile { .. }) => {
            assert!(err.to_string().contains("does-not-exist"), "{err}");
            assert!(std::error::Error::source(&err).is_some(), "io error kept");
        }
        other => panic!("expected ReadTrustFile, got {other:?}"),
    }
    // An allowed signers file is not a keyring.
    match TrustStore::load(None, Some(&fx.allowed_signers())) {
        Err(Error::KeyringParse { path, reason, .. }) => {
            assert_eq!(path, fx.allowed_signers());
            assert!(
                reason.contains("no armored OpenPGP public key block"),
                "{reason}"
            );
        }
        other => panic!("expected KeyringParse, got {other:?}"),
    }
    // A damaged keyring keeps the pgp error as source.
    let damaged = std::fs::read_to_string(fx.keyring())
        .expect("keyring")
        .replacen("\n", "\n!!!garbage!!!\n", 3);
    let dir = fx.dir.join("damaged");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let damaged_path = dir.join("keyring.asc");
    std::fs::write(&damaged_path, damaged).expect("write");
    match TrustStore::load(None, Some(&damaged_path)) {
        Err(err @ Error::KeyringParse { .. }) => {
            assert!(
                err.to_string()
                    .starts_with(&damaged_path.display().to_string()),
                "{err}"
            );
        }
        other => panic!("expected KeyringParse, got {other:?}"),
    }
}

#[test]
fn keyring_lists_keys_with_primary_user_ids() {
    let fx = fixtures();
    let keyring = store().openpgp_keyring().expect("keyring");
    let keys: Vec<(String, String)> = keyring
        .keys()
        .map(|(f, u)| (f.to_string(), u.to_string()))
        .collect();
    assert_eq!(keys.len(), 7);
    assert!(keys.contains(&(
        fx.get("pgp_sub_fpr").to_string(),
        "PGP Subkey <pgp-subkey@example.com>".to_string()
    )));
    assert!(!keys.iter().any(|(f, _)| f == fx.get("pgp_untrusted_fpr")));
}

#[test]
fn signer_serializes() {
    let signer = verify("pgp_subkey").expect("verifies");
    let json = serde_json::to_string(&signer).expect("serialize");
    assert!(json.contains("\"kind\":\"OpenPgp\""), "{json}");
    let back: Signer = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, signer);
}
