//! The OAuth part of the `Store` contract (`bridgehead_oauth_*`, migration 0003), run against both
//! backends like tests/store.rs: every check in `checks` runs once on a fresh SQLite file
//! (`sqlite::…`) and once on a fresh throwaway PostgreSQL server (`postgres::…`, which needs
//! PostgreSQL installed or `BRIDGEHEAD_SKIP_POSTGRES=1`).

#[macro_use]
mod common;

use bridgehead_state::{
    Backend, CodeRedemption, OAUTH_PURGE_GRACE_SECS, OAuthClientRecord, OAuthCodeRecord, OAuthKeyRecord,
    OAuthRefreshRecord, RefreshRotation, StateError, Store,
};

each_backend!(
    keys_insert_list_retire_delete,
    key_insert_refuses_bad_records_and_duplicates,
    revoked_jtis_are_idempotent_listed_while_active_and_purged,
    code_is_redeemed_by_exactly_one_of_ten_concurrent_callers,
    code_redeem_states_attach_and_purge,
    code_insert_and_attach_refuse_bad_input,
    refresh_rotation_then_reuse_revokes_the_family,
    refresh_is_rotated_by_exactly_one_of_ten_concurrent_callers,
    refresh_wrong_client_expiry_revoke_and_purge,
    refresh_family_with_a_revoked_member_does_not_rotate,
    refresh_insert_refuses_bad_records,
    clients_insert_list_delete,
    client_insert_refuses_bad_records_and_duplicates,
);

/// Backend-independent checks; `url` names a fresh, empty database. Times are Unix seconds around
/// an arbitrary `NOW`.
mod checks {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    /// A distinct 64-digit lower-case hex "digest" per `n`.
    fn digest(n: u32) -> String {
        format!("{n:064x}")
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn assert_invalid(err: StateError, op: &str, expected: &str) {
        assert!(matches!(err, StateError::InvalidInput { op: got, .. } if got == op), "{err:?}");
        assert!(err.to_string().contains(expected), "{err} lacks {expected:?}");
    }

    fn key(kid: &str, created_at: i64) -> OAuthKeyRecord {
        OAuthKeyRecord {
            kid: kid.to_owned(),
            alg: "ES256".to_owned(),
            private_pem: format!("-----BEGIN PRIVATE KEY-----\nsecret of {kid}\n-----END PRIVATE KEY-----\n"),
            public_jwk: format!(r#"{{"kty":"EC","crv":"P-256","kid":"{kid}","x":"…","y":"…"}}"#),
            created_at,
            activate_at: created_at + 3_600,
            retire_at: None,
        }
    }

    pub async fn keys_insert_list_retire_delete(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        assert_eq!(store.oauth_keys_all().await.unwrap(), []);

        let a = key("a", NOW);
        let b = key("b", NOW - 100);
        let c = OAuthKeyRecord { retire_at: Some(NOW + 500), ..key("c", NOW) };
        for rec in [&a, &b, &c] {
            store.oauth_key_insert(rec).await.unwrap();
        }
        // Oldest first, then by kid; read back field for field.
        assert_eq!(store.oauth_keys_all().await.unwrap(), [b.clone(), a.clone(), c.clone()]);

        // Retiring sets retire_at; it can be brought forward but never postponed.
        assert!(store.oauth_key_retire("b", NOW + 1_000).await.unwrap());
        assert!(!store.oauth_key_retire("b", NOW + 2_000).await.unwrap(), "postponing is refused");
        assert!(!store.oauth_key_retire("b", NOW + 1_000).await.unwrap(), "same time: no change");
        assert!(store.oauth_key_retire("b", NOW + 10).await.unwrap(), "brought forward");
        assert!(store.oauth_key_retire("c", NOW + 10).await.unwrap(), "a scheduled retirement moves up");
        assert!(!store.oauth_key_retire("zzz", NOW).await.unwrap(), "unknown kid");
        let b = OAuthKeyRecord { retire_at: Some(NOW + 10), ..b };
        let c = OAuthKeyRecord { retire_at: Some(NOW + 10), ..c };
        assert_eq!(store.oauth_keys_all().await.unwrap(), [b.clone(), a.clone(), c.clone()]);

        // Deleting keeps keys that retire at or after `before`, and unretired ones.
        assert_eq!(store.oauth_keys_delete_retired(NOW + 10).await.unwrap(), 0);
        assert_eq!(store.oauth_keys_delete_retired(NOW + 11).await.unwrap(), 2);
        assert_eq!(store.oauth_keys_delete_retired(i64::MAX).await.unwrap(), 0);
        assert_eq!(store.oauth_keys_all().await.unwrap(), std::slice::from_ref(&a));
        store.close().await;

        // Durable across a reopen.
        let again = Store::open(url).await.unwrap();
        assert_eq!(again.oauth_keys_all().await.unwrap(), [a]);
        again.close().await;
    }

    pub async fn key_insert_refuses_bad_records_and_duplicates(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        let good = key("k1", NOW);
        // The private key never shows in Debug output.
        let debug = format!("{good:?}");
        assert!(!debug.contains("secret of k1") && debug.contains("<redacted>"), "{debug}");

        let cases = [
            (OAuthKeyRecord { kid: String::new(), ..good.clone() }, "the kid is empty"),
            (OAuthKeyRecord { alg: String::new(), ..good.clone() }, "the alg is empty"),
            (OAuthKeyRecord { private_pem: String::new(), ..good.clone() }, "the private_pem is empty"),
            (OAuthKeyRecord { public_jwk: String::new(), ..good.clone() }, "the public_jwk is empty"),
        ];
        for (rec, expected) in cases {
            assert_invalid(store.oauth_key_insert(&rec).await.unwrap_err(), "oauth_key_insert", expected);
        }
        store.oauth_key_insert(&good).await.unwrap();
        let err = store.oauth_key_insert(&OAuthKeyRecord { alg: "EdDSA".to_owned(), ..good.clone() }).await;
        assert_invalid(err.unwrap_err(), "oauth_key_insert", "a key with kid \"k1\" already exists");
        assert_eq!(store.oauth_keys_all().await.unwrap(), [good]);
        store.close().await;
    }

    pub async fn revoked_jtis_are_idempotent_listed_while_active_and_purged(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        assert!(!store.oauth_is_revoked("j1").await.unwrap());
        assert_eq!(store.oauth_revoked_active(NOW).await.unwrap(), Vec::<String>::new());

        store.oauth_revoke_jti("j2", "client-a", NOW + 60).await.unwrap();
        store.oauth_revoke_jti("j1", "client-a", NOW + 10).await.unwrap();
        store.oauth_revoke_jti("j3", "client-b", NOW).await.unwrap();
        // A second revoke of the same jti is fine and keeps the first record.
        store.oauth_revoke_jti("j1", "client-a", NOW + 10).await.unwrap();
        store.oauth_revoke_jti("j1", "client-z", NOW + 9_999).await.unwrap();
        let err = store.oauth_revoke_jti("", "client-a", NOW).await.unwrap_err();
        assert_invalid(err, "oauth_revoke_jti", "the jti is empty");

        for jti in ["j1", "j2", "j3"] {
            assert!(store.oauth_is_revoked(jti).await.unwrap(), "{jti}");
        }
        assert!(!store.oauth_is_revoked("J1").await.unwrap(), "jtis are exact");
        // Active means expires_at > now: j3 expires at NOW itself.
        assert_eq!(store.oauth_revoked_active(NOW).await.unwrap(), ["j1", "j2"]);
        assert_eq!(store.oauth_revoked_active(NOW - 1).await.unwrap(), ["j1", "j2", "j3"]);
        assert_eq!(store.oauth_revoked_active(NOW + 10).await.unwrap(), ["j2"]);

        // The purge deletes exactly what is no longer active.
        assert_eq!(store.oauth_purge_revoked(NOW - 1).await.unwrap(), 0);
        assert_eq!(store.oauth_purge_revoked(NOW + 10).await.unwrap(), 2);
        assert!(!store.oauth_is_revoked("j1").await.unwrap());
        assert!(store.oauth_is_revoked("j2").await.unwrap());
        assert_eq!(store.oauth_purge_revoked(NOW + 10).await.unwrap(), 0);
        assert_eq!(store.oauth_revoked_active(0).await.unwrap(), ["j2"]);
        store.close().await;
    }

    fn code(n: u32, expires_at: i64) -> OAuthCodeRecord {
        OAuthCodeRecord {
            code_hash: digest(n),
            client_id: "spa".to_owned(),
            redirect_uri: "https://app.example/cb?x=1".to_owned(),
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned(),
            scope: strings(&["openid", "orders:read"]),
            subject: "user grün ✓".to_owned(),
            expires_at,
            used_at: None,
            family_id: None,
            access_jtis: vec![],
        }
    }

    pub async fn code_is_redeemed_by_exactly_one_of_ten_concurrent_callers(url: &str, _: Backend) {
        // Two "nodes" (two pools) and ten callers, released together.
        let nodes = [Store::open(url).await.unwrap(), Store::open(url).await.unwrap()];
        let rec = code(1, NOW + 60);
        nodes[0].oauth_code_insert(&rec).await.unwrap();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(10));
        let mut callers = tokio::task::JoinSet::new();
        for i in 0..10 {
            let (store, barrier, hash) = (nodes[i % 2].clone(), barrier.clone(), rec.code_hash.clone());
            callers.spawn(async move {
                barrier.wait().await;
                store.oauth_code_redeem(&hash, NOW).await
            });
        }
        let results: Vec<CodeRedemption> = callers.join_all().await.into_iter().map(Result::unwrap).collect();
        let used = OAuthCodeRecord { used_at: Some(NOW), ..rec };
        let redeemed = results.iter().filter(|r| **r == CodeRedemption::Redeemed(used.clone())).count();
        let replays = results.iter().filter(|r| **r == CodeRedemption::AlreadyUsed(used.clone())).count();
        assert_eq!((redeemed, replays), (1, 9), "{results:?}");
        for store in &nodes {
            store.close().await;
        }
    }

    pub async fn code_redeem_states_attach_and_purge(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        let live = code(1, NOW + 60);
        let expired = code(2, NOW);
        let with_history = OAuthCodeRecord {
            used_at: Some(NOW - 30),
            family_id: Some("fam-old".to_owned()),
            access_jtis: strings(&["ja", "jb"]),
            ..code(3, NOW - 10)
        };
        for rec in [&live, &expired, &with_history] {
            store.oauth_code_insert(rec).await.unwrap();
        }

        assert_eq!(store.oauth_code_redeem(&digest(99), NOW).await.unwrap(), CodeRedemption::Unknown);
        // Expired at expires_at itself; a refused redemption leaves the code untouched.
        assert_eq!(store.oauth_code_redeem(&expired.code_hash, NOW).await.unwrap(), CodeRedemption::Expired);
        assert_eq!(store.oauth_code_redeem(&expired.code_hash, NOW).await.unwrap(), CodeRedemption::Expired);
        // A used code stays AlreadyUsed after its expiry, with everything recorded for it.
        assert_eq!(
            store.oauth_code_redeem(&with_history.code_hash, NOW).await.unwrap(),
            CodeRedemption::AlreadyUsed(with_history.clone())
        );

        // Attaching needs a redeemed code.
        assert!(!store.oauth_code_attach(&live.code_hash, Some("fam-1"), "j1").await.unwrap());
        assert!(!store.oauth_code_attach(&digest(99), Some("fam-1"), "j1").await.unwrap());

        let used = OAuthCodeRecord { used_at: Some(NOW + 5), ..live.clone() };
        assert_eq!(
            store.oauth_code_redeem(&live.code_hash, NOW + 5).await.unwrap(),
            CodeRedemption::Redeemed(used.clone())
        );
        assert_eq!(
            store.oauth_code_redeem(&live.code_hash, NOW + 6).await.unwrap(),
            CodeRedemption::AlreadyUsed(used.clone()),
            "the first redemption time is kept"
        );
        assert!(store.oauth_code_attach(&live.code_hash, Some("fam-1"), "j1").await.unwrap());
        // A later attach without a family keeps the family and appends the jti.
        assert!(store.oauth_code_attach(&live.code_hash, None, "j2").await.unwrap());
        let attached = OAuthCodeRecord {
            family_id: Some("fam-1".to_owned()),
            access_jtis: strings(&["j1", "j2"]),
            ..used.clone()
        };
        assert_eq!(
            store.oauth_code_redeem(&live.code_hash, NOW + 7).await.unwrap(),
            CodeRedemption::AlreadyUsed(attached.clone())
        );
        assert!(store.oauth_code_attach(&with_history.code_hash, None, "jc").await.unwrap());

        // Purge: only codes that expired more than a day before `now`, used or not.
        assert_eq!(store.oauth_purge_codes(NOW - 10 + OAUTH_PURGE_GRACE_SECS).await.unwrap(), 0);
        assert_eq!(store.oauth_purge_codes(NOW - 10 + OAUTH_PURGE_GRACE_SECS + 1).await.unwrap(), 1);
        assert_eq!(
            store.oauth_code_redeem(&with_history.code_hash, NOW).await.unwrap(),
            CodeRedemption::Unknown
        );
        assert_eq!(store.oauth_purge_codes(NOW + OAUTH_PURGE_GRACE_SECS + 1).await.unwrap(), 1);
        assert_eq!(store.oauth_code_redeem(&expired.code_hash, NOW).await.unwrap(), CodeRedemption::Unknown);
        store.close().await;

        // Durable across a reopen.
        let again = Store::open(url).await.unwrap();
        assert_eq!(
            again.oauth_code_redeem(&live.code_hash, NOW + 8).await.unwrap(),
            CodeRedemption::AlreadyUsed(attached)
        );
        assert_eq!(again.oauth_purge_codes(i64::MAX).await.unwrap(), 1);
        assert_eq!(again.oauth_purge_codes(i64::MIN).await.unwrap(), 0, "no overflow");
        again.close().await;
    }

    pub async fn code_insert_and_attach_refuse_bad_input(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        let good = code(1, NOW + 60);
        let cases = [
            (OAuthCodeRecord { code_hash: "A".repeat(64), ..good.clone() }, "64 lower-case hex digits"),
            (OAuthCodeRecord { code_hash: "a".repeat(63), ..good.clone() }, "64 lower-case hex digits"),
            (OAuthCodeRecord { scope: strings(&["a b"]), ..good.clone() }, "scope \"a b\" is empty"),
            (OAuthCodeRecord { scope: strings(&[""]), ..good.clone() }, "scope \"\" is empty"),
            (OAuthCodeRecord { access_jtis: strings(&["j\t1"]), ..good.clone() }, "jti \"j\\t1\" is empty"),
        ];
        for (rec, expected) in cases {
            assert_invalid(store.oauth_code_insert(&rec).await.unwrap_err(), "oauth_code_insert", expected);
        }
        // An empty scope list is fine and reads back empty.
        let no_scope = OAuthCodeRecord { scope: vec![], ..good.clone() };
        store.oauth_code_insert(&no_scope).await.unwrap();
        let err = store.oauth_code_insert(&good).await.unwrap_err();
        assert!(matches!(err, StateError::Query { op: "oauth_code_insert", .. }), "{err:?}");
        assert_eq!(
            store.oauth_code_redeem(&good.code_hash, NOW).await.unwrap(),
            CodeRedemption::Redeemed(OAuthCodeRecord { used_at: Some(NOW), ..no_scope })
        );
        for jti in ["", "a b"] {
            let err = store.oauth_code_attach(&good.code_hash, None, jti).await.unwrap_err();
            assert_invalid(err, "oauth_code_attach", "is empty or contains whitespace");
        }
        store.close().await;
    }

    fn refresh(n: u32, family: &str, expires_at: i64) -> OAuthRefreshRecord {
        OAuthRefreshRecord {
            token_hash: digest(n),
            family_id: family.to_owned(),
            client_id: "spa".to_owned(),
            subject: "user-1".to_owned(),
            scope: strings(&["openid", "offline_access"]),
            expires_at,
            rotated_at: None,
            revoked_at: None,
        }
    }

    pub async fn refresh_rotation_then_reuse_revokes_the_family(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        let first = refresh(1, "fam-1", NOW + 3_600);
        let bystander = refresh(9, "fam-2", NOW + 3_600);
        store.oauth_refresh_insert(&first).await.unwrap();
        store.oauth_refresh_insert(&bystander).await.unwrap();

        let rotated = OAuthRefreshRecord { rotated_at: Some(NOW), ..first.clone() };
        assert_eq!(
            store.oauth_refresh_rotate(&first.token_hash, "spa", NOW).await.unwrap(),
            RefreshRotation::Rotated(rotated)
        );
        let second = refresh(2, "fam-1", NOW + 3_600);
        store.oauth_refresh_insert(&second).await.unwrap();
        assert!(matches!(
            store.oauth_refresh_rotate(&second.token_hash, "spa", NOW + 1).await.unwrap(),
            RefreshRotation::Rotated(_)
        ));
        let third = refresh(3, "fam-1", NOW + 3_600);
        store.oauth_refresh_insert(&third).await.unwrap();

        // The first token comes back: it was copied.
        assert_eq!(
            store.oauth_refresh_rotate(&first.token_hash, "spa", NOW + 2).await.unwrap(),
            RefreshRotation::Reused { family_id: "fam-1".to_owned() }
        );
        // The caller revokes the family: all three members, not the other family.
        assert_eq!(store.oauth_refresh_revoke_family("fam-1", NOW + 3).await.unwrap(), 3);
        assert_eq!(store.oauth_refresh_revoke_family("fam-1", NOW + 4).await.unwrap(), 0, "already revoked");
        assert_eq!(store.oauth_refresh_revoke_family("fam-zzz", NOW).await.unwrap(), 0);
        for token in [&first, &second, &third] {
            assert_eq!(
                store.oauth_refresh_rotate(&token.token_hash, "spa", NOW + 5).await.unwrap(),
                RefreshRotation::Revoked,
                "{}",
                token.token_hash
            );
        }
        assert!(matches!(
            store.oauth_refresh_rotate(&bystander.token_hash, "spa", NOW + 5).await.unwrap(),
            RefreshRotation::Rotated(_)
        ));
        store.close().await;
    }

    pub async fn refresh_is_rotated_by_exactly_one_of_ten_concurrent_callers(url: &str, _: Backend) {
        let nodes = [Store::open(url).await.unwrap(), Store::open(url).await.unwrap()];
        let rec = refresh(1, "fam-1", NOW + 3_600);
        nodes[0].oauth_refresh_insert(&rec).await.unwrap();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(10));
        let mut callers = tokio::task::JoinSet::new();
        for i in 0..10 {
            let (store, barrier, hash) = (nodes[i % 2].clone(), barrier.clone(), rec.token_hash.clone());
            callers.spawn(async move {
                barrier.wait().await;
                store.oauth_refresh_rotate(&hash, "spa", NOW).await
            });
        }
        let results: Vec<RefreshRotation> =
            callers.join_all().await.into_iter().map(Result::unwrap).collect();
        let rotated = OAuthRefreshRecord { rotated_at: Some(NOW), ..rec };
        let wins = results.iter().filter(|r| **r == RefreshRotation::Rotated(rotated.clone())).count();
        let reuses = results
            .iter()
            .filter(|r| **r == RefreshRotation::Reused { family_id: "fam-1".to_owned() })
            .count();
        assert_eq!((wins, reuses), (1, 9), "{results:?}");
        for store in &nodes {
            store.close().await;
        }
    }

    pub async fn refresh_wrong_client_expiry_revoke_and_purge(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        let live = refresh(1, "fam-1", NOW + 60);
        let expired = refresh(2, "fam-2", NOW);
        let other = refresh(3, "fam-3", NOW + 60);
        for rec in [&live, &expired, &other] {
            store.oauth_refresh_insert(rec).await.unwrap();
        }
        assert_eq!(
            store.oauth_refresh_rotate(&digest(99), "spa", NOW).await.unwrap(),
            RefreshRotation::Unknown
        );
        // Expired at expires_at itself.
        assert_eq!(
            store.oauth_refresh_rotate(&expired.token_hash, "spa", NOW).await.unwrap(),
            RefreshRotation::Expired
        );
        // Another client gets nothing, changes nothing, and cannot revoke.
        assert_eq!(
            store.oauth_refresh_rotate(&live.token_hash, "intruder", NOW).await.unwrap(),
            RefreshRotation::WrongClient
        );
        assert!(!store.oauth_refresh_revoke(&live.token_hash, "intruder", NOW).await.unwrap());
        assert!(matches!(
            store.oauth_refresh_rotate(&live.token_hash, "spa", NOW).await.unwrap(),
            RefreshRotation::Rotated(_)
        ));
        // Nor does it learn that the token was rotated (and it cannot get the family revoked).
        assert_eq!(
            store.oauth_refresh_rotate(&live.token_hash, "intruder", NOW).await.unwrap(),
            RefreshRotation::WrongClient
        );

        // Revoking one token: its own client only, once.
        assert!(store.oauth_refresh_revoke(&other.token_hash, "spa", NOW).await.unwrap());
        assert!(!store.oauth_refresh_revoke(&other.token_hash, "spa", NOW + 1).await.unwrap());
        assert!(!store.oauth_refresh_revoke(&digest(99), "spa", NOW).await.unwrap());
        assert_eq!(
            store.oauth_refresh_rotate(&other.token_hash, "spa", NOW).await.unwrap(),
            RefreshRotation::Revoked
        );
        // An expired and revoked token reads as revoked.
        assert!(store.oauth_refresh_revoke(&expired.token_hash, "spa", NOW).await.unwrap());
        assert_eq!(
            store.oauth_refresh_rotate(&expired.token_hash, "spa", NOW + 1).await.unwrap(),
            RefreshRotation::Revoked
        );

        // Purge: only tokens that expired more than a day before `now`, whatever their state.
        assert_eq!(store.oauth_purge_refresh(NOW + OAUTH_PURGE_GRACE_SECS).await.unwrap(), 0);
        assert_eq!(store.oauth_purge_refresh(NOW + OAUTH_PURGE_GRACE_SECS + 1).await.unwrap(), 1);
        assert_eq!(
            store.oauth_refresh_rotate(&expired.token_hash, "spa", NOW).await.unwrap(),
            RefreshRotation::Unknown
        );
        assert_eq!(store.oauth_purge_refresh(NOW + 60 + OAUTH_PURGE_GRACE_SECS + 1).await.unwrap(), 2);
        assert_eq!(store.oauth_purge_refresh(i64::MIN).await.unwrap(), 0, "no overflow");
        store.close().await;
    }

    pub async fn refresh_family_with_a_revoked_member_does_not_rotate(url: &str, _: Backend) {
        // The race the family check closes: a reuse revokes the family while the winner of the
        // rotation has not inserted the successor yet; the successor lands unrevoked.
        let store = Store::open(url).await.unwrap();
        let first = refresh(1, "fam-1", NOW + 3_600);
        store.oauth_refresh_insert(&first).await.unwrap();
        assert!(matches!(
            store.oauth_refresh_rotate(&first.token_hash, "spa", NOW).await.unwrap(),
            RefreshRotation::Rotated(_)
        ));
        assert_eq!(
            store.oauth_refresh_rotate(&first.token_hash, "spa", NOW).await.unwrap(),
            RefreshRotation::Reused { family_id: "fam-1".to_owned() }
        );
        assert_eq!(store.oauth_refresh_revoke_family("fam-1", NOW).await.unwrap(), 1);
        let late_successor = refresh(2, "fam-1", NOW + 3_600);
        store.oauth_refresh_insert(&late_successor).await.unwrap();
        assert_eq!(
            store.oauth_refresh_rotate(&late_successor.token_hash, "spa", NOW + 1).await.unwrap(),
            RefreshRotation::Revoked
        );
        // Once the family is revoked, the reused token itself reads as revoked.
        assert_eq!(
            store.oauth_refresh_rotate(&first.token_hash, "spa", NOW + 1).await.unwrap(),
            RefreshRotation::Revoked
        );
        store.close().await;
    }

    pub async fn refresh_insert_refuses_bad_records(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        let good = refresh(1, "fam-1", NOW + 60);
        let cases = [
            (OAuthRefreshRecord { token_hash: "0".repeat(65), ..good.clone() }, "64 lower-case hex digits"),
            (OAuthRefreshRecord { token_hash: "g".repeat(64), ..good.clone() }, "64 lower-case hex digits"),
            (OAuthRefreshRecord { family_id: String::new(), ..good.clone() }, "the family id is empty"),
            (OAuthRefreshRecord { scope: strings(&["ok", "not ok"]), ..good.clone() }, "\"not ok\""),
        ];
        for (rec, expected) in cases {
            assert_invalid(
                store.oauth_refresh_insert(&rec).await.unwrap_err(),
                "oauth_refresh_insert",
                expected,
            );
        }
        store.oauth_refresh_insert(&good).await.unwrap();
        let err = store.oauth_refresh_insert(&refresh(1, "fam-2", NOW)).await.unwrap_err();
        assert!(matches!(err, StateError::Query { op: "oauth_refresh_insert", .. }), "{err:?}");
        store.close().await;
    }

    fn client(id: &str, public: bool, created_at: i64) -> OAuthClientRecord {
        OAuthClientRecord {
            client_id: id.to_owned(),
            secret_sha256: (!public).then(|| digest(7)),
            public,
            grants: strings(&["authorization_code", "refresh_token"]),
            scopes: strings(&["openid", "orders:read"]),
            redirect_uris: strings(&["https://app.example/cb", "http://127.0.0.1:8080/cb?x=1&y=2"]),
            created_at,
        }
    }

    pub async fn clients_insert_list_delete(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        assert_eq!(store.oauth_clients_all().await.unwrap(), []);
        let spa = client("spa", true, NOW);
        let backend = client("backend", false, NOW);
        let cli = OAuthClientRecord {
            grants: strings(&["client_credentials"]),
            scopes: vec![],
            redirect_uris: vec![],
            ..client("cli", false, NOW - 5)
        };
        for rec in [&spa, &backend, &cli] {
            store.oauth_client_insert(rec).await.unwrap();
        }
        // Oldest first, then by id; read back field for field (empty lists read back empty).
        assert_eq!(store.oauth_clients_all().await.unwrap(), [cli.clone(), backend.clone(), spa.clone()]);
        assert!(store.oauth_client_delete("backend").await.unwrap());
        assert!(!store.oauth_client_delete("backend").await.unwrap());
        assert!(!store.oauth_client_delete("SPA").await.unwrap(), "ids are exact");
        store.close().await;

        let again = Store::open(url).await.unwrap();
        assert_eq!(again.oauth_clients_all().await.unwrap(), [cli, spa]);
        again.close().await;
    }

    pub async fn client_insert_refuses_bad_records_and_duplicates(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        let good = client("backend", false, NOW);
        let cases = [
            (OAuthClientRecord { client_id: String::new(), ..good.clone() }, "the client id is empty"),
            (OAuthClientRecord { public: true, ..good.clone() }, "public client \"backend\" has a secret"),
            (
                OAuthClientRecord { secret_sha256: None, ..good.clone() },
                "confidential client \"backend\" has no secret",
            ),
            (OAuthClientRecord { secret_sha256: Some("F".repeat(64)), ..good.clone() }, "64 lower-case hex"),
            (OAuthClientRecord { grants: strings(&[""]), ..good.clone() }, "grant \"\" is empty"),
            (OAuthClientRecord { scopes: strings(&["a\nb"]), ..good.clone() }, "scope \"a\\nb\""),
            (
                OAuthClientRecord { redirect_uris: strings(&["https://x/ y"]), ..good.clone() },
                "redirect URI \"https://x/ y\"",
            ),
        ];
        for (rec, expected) in cases {
            assert_invalid(
                store.oauth_client_insert(&rec).await.unwrap_err(),
                "oauth_client_insert",
                expected,
            );
        }
        assert_eq!(store.oauth_clients_all().await.unwrap(), []);

        store.oauth_client_insert(&good).await.unwrap();
        let err = store.oauth_client_insert(&client("backend", true, NOW + 1)).await.unwrap_err();
        assert_invalid(err, "oauth_client_insert", "a client with id \"backend\" already exists");
        assert_eq!(store.oauth_clients_all().await.unwrap(), [good]);
        store.close().await;
    }
}
