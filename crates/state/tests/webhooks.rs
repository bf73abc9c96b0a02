//! The webhook part of the `Store` contract (migration 0005), run against both backends like
//! tests/store.rs: every check in `checks` runs once on a fresh SQLite file and once on a fresh
//! throwaway PostgreSQL server (which needs PostgreSQL installed or `BRIDGEHEAD_SKIP_POSTGRES=1`).

#[macro_use]
mod common;

use bridgehead_state::{
    Accepted, AttemptOutcome, AttemptRecord, Backend, MessageFilter, NewDeadLetter, NewWebhookMessage,
    Redeliver, Store,
};

each_backend!(
    accept_stores_once_per_external_id_with_its_deliveries,
    claims_are_disjoint_leased_and_taken_over_when_the_lease_runs_out,
    attempts_are_recorded_only_by_the_lease_owner,
    dead_letters_are_kept_listed_and_marked_replayed,
    purge_keeps_pending_and_retained_messages,
    twenty_concurrent_accepts_of_one_id_store_one,
    concurrent_claimers_never_share_a_delivery,
    ordering_keys_release_and_redelivery,
    two_records_of_one_delivery_at_once_keep_only_the_owners,
    endpoints_and_message_listing,
);

mod checks {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;
    const DAY: i64 = 86_400_000;

    fn msg<'a>(external_id: Option<&'a str>, body: &'a [u8]) -> NewWebhookMessage<'a> {
        NewWebhookMessage {
            source: "inbound:stripe",
            external_id,
            event_type: Some("invoice.paid"),
            headers_json: r#"[["content-type","application/json"]]"#,
            body,
            retention_ms: DAY,
            ordering_key: None,
        }
    }

    fn new_id(a: Accepted) -> String {
        match a {
            Accepted::New(id) => id,
            other => panic!("expected a new message, got {other:?}"),
        }
    }

    pub async fn accept_stores_once_per_external_id_with_its_deliveries(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        let body = b"{\"id\":\"evt_1\"}\xff";
        let id =
            new_id(store.webhook_accept(&msg(Some("evt_1"), body), &["forward:stripe"], NOW).await.unwrap());
        assert!(id.starts_with("msg_") && id.len() == 36, "{id}");
        // The same id again: a replay, nothing written.
        let again =
            store.webhook_accept(&msg(Some("evt_1"), b"other"), &["forward:stripe"], NOW + 1).await.unwrap();
        assert_eq!(again, Accepted::Duplicate(id.clone()));
        // Another source, or no id: stored.
        let other = NewWebhookMessage { source: "inbound:github", ..msg(Some("evt_1"), body) };
        new_id(store.webhook_accept(&other, &["forward:github"], NOW).await.unwrap());
        let a = new_id(store.webhook_accept(&msg(None, body), &["forward:stripe"], NOW).await.unwrap());
        let b = new_id(store.webhook_accept(&msg(None, body), &["forward:stripe"], NOW).await.unwrap());
        assert_ne!(a, b);

        let deliveries = store.webhook_deliveries(&id).await.unwrap();
        assert_eq!(deliveries.len(), 1);
        let d = &deliveries[0];
        assert_eq!(
            (d.destination.as_str(), d.state.as_str(), d.attempts, d.next_attempt_at_ms),
            ("forward:stripe", "pending", 0, NOW)
        );
        // The message travels with its claim, byte for byte.
        let claimed = store.webhook_claim("node-a", "forward:stripe", NOW, 30_000, 10).await.unwrap();
        let c = claimed.iter().find(|c| c.message_id == id).unwrap();
        assert_eq!(c.body, body);
        assert_eq!(c.headers_json, r#"[["content-type","application/json"]]"#);
        assert_eq!(c.received_at_ms, NOW);
        assert_eq!(
            store.webhook_backlog().await.unwrap(),
            vec![("forward:github".to_owned(), 1, NOW), ("forward:stripe".to_owned(), 3, NOW),]
        );
    }

    pub async fn claims_are_disjoint_leased_and_taken_over_when_the_lease_runs_out(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        for i in 0..5 {
            let ext = format!("e{i}");
            store.webhook_accept(&msg(Some(&ext), b"{}"), &["forward:stripe"], NOW + i).await.unwrap();
        }
        let a = store.webhook_claim("node-a", "forward:stripe", NOW + 10, 30_000, 3).await.unwrap();
        let b = store.webhook_claim("node-b", "forward:stripe", NOW + 10, 30_000, 10).await.unwrap();
        assert_eq!((a.len(), b.len()), (3, 2));
        assert!(a.iter().all(|x| b.iter().all(|y| x.id != y.id)));
        // Oldest due first.
        assert!(a.windows(2).all(|w| w[0].id < w[1].id));
        // Nothing left while the leases hold.
        assert!(
            store
                .webhook_claim("node-c", "forward:stripe", NOW + 20_000, 30_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // node-a is known dead: its leases are released at once, and node-c takes them.
        assert_eq!(store.webhook_lease_owners().await.unwrap(), ["node-a", "node-b"]);
        assert_eq!(store.webhook_release_leases("node-a").await.unwrap(), 3);
        let c = store.webhook_claim("node-c", "forward:stripe", NOW + 20, 30_000, 10).await.unwrap();
        assert_eq!(c.len(), 3, "node-a's deliveries, not node-b's");
        // Leases that run out are taken over too.
        let c = store.webhook_claim("node-c", "forward:stripe", NOW + 20 + 30_000, 30_000, 10).await.unwrap();
        assert_eq!(c.len(), 5, "every lease ran out");
        // A delivery not yet due is not claimed.
        let due_later = NewWebhookMessage { source: "inbound:later", ..msg(Some("l"), b"{}") };
        store.webhook_accept(&due_later, &["forward:later"], NOW + 1_000_000).await.unwrap();
        assert!(
            store
                .webhook_claim("node-d", "forward:later", NOW + 999_999, 30_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.webhook_claim("node-d", "forward:later", NOW + 1_000_000, 30_000, 10).await.unwrap().len(),
            1
        );
        // Only the destination asked for.
        let other = NewWebhookMessage { source: "inbound:other", ..msg(Some("o"), b"{}") };
        store.webhook_accept(&other, &["forward:other"], NOW).await.unwrap();
        let got =
            store.webhook_claim("node-e", "forward:other", NOW + 10 + 60_000, 30_000, 10).await.unwrap();
        assert_eq!(got.iter().map(|d| d.destination.as_str()).collect::<Vec<_>>(), ["forward:other"]);
    }

    pub async fn attempts_are_recorded_only_by_the_lease_owner(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        let id =
            new_id(store.webhook_accept(&msg(Some("e1"), b"{}"), &["forward:stripe"], NOW).await.unwrap());
        let d = store.webhook_claim("node-a", "forward:stripe", NOW, 1_000, 10).await.unwrap().remove(0);
        let failed = AttemptRecord {
            status: Some(503),
            latency_ms: 12,
            error: Some("HTTP 503"),
            response: Some(b"busy"),
        };
        assert!(
            store
                .webhook_record_attempt(
                    d.id,
                    "node-a",
                    &failed,
                    AttemptOutcome::RetryAt(NOW + 5_000),
                    NOW + 20
                )
                .await
                .unwrap()
        );
        let rec = &store.webhook_deliveries(&id).await.unwrap()[0];
        assert_eq!(
            (rec.state.as_str(), rec.attempts, rec.next_attempt_at_ms, rec.last_status),
            ("pending", 1, NOW + 5_000, Some(503))
        );
        assert_eq!(rec.last_error.as_deref(), Some("HTTP 503"));
        // Not due yet.
        assert!(
            store.webhook_claim("node-a", "forward:stripe", NOW + 4_999, 1_000, 10).await.unwrap().is_empty()
        );
        let d =
            store.webhook_claim("node-a", "forward:stripe", NOW + 5_000, 1_000, 10).await.unwrap().remove(0);
        assert_eq!(d.attempts, 1);
        // node-a stalls past its lease; node-b takes over and delivers.
        let d2 =
            store.webhook_claim("node-b", "forward:stripe", NOW + 6_000, 1_000, 10).await.unwrap().remove(0);
        assert_eq!(d2.id, d.id);
        let ok = AttemptRecord { status: Some(200), latency_ms: 3, error: None, response: Some(b"ok") };
        assert!(
            store
                .webhook_record_attempt(d.id, "node-b", &ok, AttemptOutcome::Delivered, NOW + 6_010)
                .await
                .unwrap()
        );
        // node-a's late outcome is refused and changes nothing.
        assert!(
            !store
                .webhook_record_attempt(d.id, "node-a", &failed, AttemptOutcome::Dead, NOW + 6_020)
                .await
                .unwrap()
        );
        let rec = &store.webhook_deliveries(&id).await.unwrap()[0];
        assert_eq!((rec.state.as_str(), rec.attempts, rec.last_status), ("delivered", 2, Some(200)));
        let attempts = store.webhook_attempts(rec.id).await.unwrap();
        assert_eq!(attempts.len(), 2);
        assert_eq!(
            (attempts[0].attempt, attempts[0].status, attempts[0].error.as_deref()),
            (1, Some(503), Some("HTTP 503"))
        );
        assert_eq!(attempts[0].response.as_deref(), Some(&b"busy"[..]));
        assert_eq!((attempts[1].attempt, attempts[1].at_ms, attempts[1].latency_ms), (2, NOW + 6_010, 3));
        // Delivered is final: never claimed again.
        assert!(
            store.webhook_claim("node-c", "forward:stripe", NOW + DAY, 1_000, 10).await.unwrap().is_empty()
        );

        let id =
            new_id(store.webhook_accept(&msg(Some("e2"), b"{}"), &["forward:stripe"], NOW).await.unwrap());
        let d = store.webhook_claim("node-a", "forward:stripe", NOW, 1_000, 10).await.unwrap().remove(0);
        let gone =
            AttemptRecord { status: None, latency_ms: 1_000, error: Some("connect refused"), response: None };
        assert!(
            store.webhook_record_attempt(d.id, "node-a", &gone, AttemptOutcome::Dead, NOW + 1).await.unwrap()
        );
        let rec = &store.webhook_deliveries(&id).await.unwrap()[0];
        assert_eq!((rec.state.as_str(), rec.last_status), ("dead", None));
        assert!(store.webhook_backlog().await.unwrap().is_empty());
    }

    pub async fn dead_letters_are_kept_listed_and_marked_replayed(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        let dl = |source: &'static str, body: &'static [u8]| NewDeadLetter {
            source,
            reason: "schema",
            detail: "/amount: \"x\" is not of type \"integer\"",
            headers_json: r#"[["stripe-signature","[redacted]"]]"#,
            signatures_json: r#"[["stripe-signature","t=1,v1=00"]]"#,
            body,
            body_bytes: body.len() as i64,
        };
        let first =
            store.webhook_dead_letter_add(&dl("inbound:stripe", b"{\"amount\":\"x\"}"), NOW).await.unwrap();
        let second =
            store.webhook_dead_letter_add(&dl("inbound:github", b"\x00\x01"), NOW + 1).await.unwrap();
        let third = store.webhook_dead_letter_add(&dl("inbound:stripe", b"{}"), NOW + 2).await.unwrap();
        assert!(first.starts_with("dlq_"));
        let all = store.webhook_dead_letters(None, None, 10).await.unwrap();
        assert_eq!(all.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), [&third, &second, &first]);
        // A listing does not read bodies, but says how much is kept.
        assert!(all.iter().all(|d| d.body.is_empty()));
        assert_eq!(all.iter().map(|d| d.body_kept_bytes).collect::<Vec<_>>(), [2, 2, 14]);
        // Replays are taken once.
        assert!(store.webhook_dead_letter_take_for_replay(&first, NOW + 3).await.unwrap());
        assert!(!store.webhook_dead_letter_take_for_replay(&first, NOW + 4).await.unwrap());
        store.webhook_dead_letter_give_back(&first).await.unwrap();
        assert!(store.webhook_dead_letter_take_for_replay(&first, NOW + 5).await.unwrap());
        store.webhook_dead_letter_give_back(&first).await.unwrap();
        let stripe = store.webhook_dead_letters(Some("inbound:stripe"), None, 10).await.unwrap();
        assert_eq!(stripe.len(), 2);
        let page = store.webhook_dead_letters(None, Some((NOW + 2, third.as_str())), 1).await.unwrap();
        assert_eq!(page[0].id, second);
        // Two in the same millisecond: the cursor's id keeps paging from skipping one.
        let twin = store.webhook_dead_letter_add(&dl("inbound:stripe", b"{}"), NOW + 1).await.unwrap();
        let (hi, lo) =
            if twin > second { (twin.clone(), second.clone()) } else { (second.clone(), twin.clone()) };
        let page = store.webhook_dead_letters(None, Some((NOW + 2, third.as_str())), 1).await.unwrap();
        assert_eq!(page[0].id, hi);
        let page = store.webhook_dead_letters(None, Some((NOW + 1, hi.as_str())), 1).await.unwrap();
        assert_eq!(page[0].id, lo);
        let got = store.webhook_dead_letter(&second).await.unwrap().unwrap();
        assert_eq!(
            (got.body.as_slice(), got.reason.as_str(), got.received_at_ms),
            (&b"\x00\x01"[..], "schema", NOW + 1)
        );
        assert_eq!(got.body_kept_bytes, 2);
        assert_eq!(got.replayed_at_ms, None);
        assert_eq!(got.signatures_json, r#"[["stripe-signature","t=1,v1=00"]]"#);
        store.webhook_dead_letter_replayed(&second, "msg_x", NOW + 5).await.unwrap();
        let got = store.webhook_dead_letter(&second).await.unwrap().unwrap();
        assert_eq!((got.replayed_at_ms, got.message_id.as_deref()), (Some(NOW + 5), Some("msg_x")));
        assert!(store.webhook_dead_letter("dlq_missing").await.unwrap().is_none());
    }

    pub async fn purge_keeps_pending_and_retained_messages(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        let delivered =
            new_id(store.webhook_accept(&msg(Some("d"), b"{}"), &["forward:stripe"], NOW).await.unwrap());
        let pending =
            new_id(store.webhook_accept(&msg(Some("p"), b"{}"), &["forward:other"], NOW).await.unwrap());
        let d = store.webhook_claim("n", "forward:stripe", NOW, 1_000, 1).await.unwrap().remove(0);
        assert_eq!(d.message_id, delivered);
        let ok = AttemptRecord { status: Some(204), latency_ms: 1, error: None, response: None };
        store.webhook_record_attempt(d.id, "n", &ok, AttemptOutcome::Delivered, NOW).await.unwrap();
        store
            .webhook_dead_letter_add(
                &NewDeadLetter {
                    source: "inbound:stripe",
                    reason: "signature",
                    detail: "x",
                    headers_json: "[]",
                    signatures_json: "[]",
                    body: b"",
                    body_bytes: 0,
                },
                NOW,
            )
            .await
            .unwrap();
        // Within the retention: nothing goes, and the id still counts as a replay.
        assert_eq!(store.webhook_purge(NOW + DAY - 1, NOW).await.unwrap(), 0);
        assert!(matches!(
            store.webhook_accept(&msg(Some("d"), b"{}"), &["forward:stripe"], NOW + 1).await.unwrap(),
            Accepted::Duplicate(_)
        ));
        // Past it: the delivered message and the old dead letter go; the pending one stays.
        assert_eq!(store.webhook_purge(NOW + DAY, NOW + 1).await.unwrap(), 2);
        assert!(store.webhook_deliveries(&delivered).await.unwrap().is_empty());
        assert_eq!(store.webhook_deliveries(&pending).await.unwrap().len(), 1);
        // Its id is free again.
        new_id(store.webhook_accept(&msg(Some("d"), b"{}"), &["forward:stripe"], NOW + DAY).await.unwrap());
    }

    pub async fn twenty_concurrent_accepts_of_one_id_store_one(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store.webhook_accept(&msg(Some("same"), b"{}"), &["forward:stripe"], NOW).await.unwrap()
                })
            })
            .collect();
        let mut new = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Accepted::New(_)) {
                new += 1;
            }
        }
        assert_eq!(new, 1);
        assert_eq!(store.webhook_backlog().await.unwrap(), vec![("forward:stripe".to_owned(), 1, NOW)]);
        // Many distinct ones at once (committed in batches): each stored once, with its delivery.
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let ext = format!("many-{i}");
                    store.webhook_accept(&msg(Some(&ext), b"{}"), &["forward:many"], NOW).await.unwrap()
                })
            })
            .collect();
        let mut ids = std::collections::BTreeSet::new();
        for t in tasks {
            match t.await.unwrap() {
                Accepted::New(id) => assert!(ids.insert(id)),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(ids.len(), 300);
        let backlog = store.webhook_backlog().await.unwrap();
        assert!(backlog.contains(&("forward:many".to_owned(), 300, NOW)), "{backlog:?}");
    }

    pub async fn concurrent_claimers_never_share_a_delivery(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        for i in 0..40 {
            let ext = format!("c{i}");
            store.webhook_accept(&msg(Some(&ext), b"{}"), &["forward:stripe"], NOW).await.unwrap();
        }
        let tasks: Vec<_> = (0..8)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move {
                    let owner = format!("node-{n}");
                    store.webhook_claim(&owner, "forward:stripe", NOW, 30_000, 5).await.unwrap()
                })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.extend(t.await.unwrap().into_iter().map(|c| c.id));
        }
        let unique: std::collections::BTreeSet<i64> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "a delivery was claimed twice: {ids:?}");
        assert_eq!(ids.len(), 40, "eight claimers of five take all forty");
    }

    /// Migration 0006: one key at a time in order, a lease given back without an attempt, and
    /// finished deliveries made again.
    pub async fn ordering_keys_release_and_redelivery(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        let keyed = |ext: &'static str, key: Option<&'static str>| NewWebhookMessage {
            source: "outbound:shop",
            ordering_key: key,
            ..msg(Some(ext), b"{}")
        };
        let d = ["endpoint:crm"];
        let a1 = new_id(store.webhook_accept(&keyed("a1", Some("a")), &d, NOW).await.unwrap());
        let a2 = new_id(store.webhook_accept(&keyed("a2", Some("a")), &d, NOW).await.unwrap());
        let b1 = new_id(store.webhook_accept(&keyed("b1", Some("b")), &d, NOW).await.unwrap());
        let n1 = new_id(store.webhook_accept(&keyed("n1", None), &d, NOW).await.unwrap());
        let claimed = store.webhook_claim("w:1", "endpoint:crm", NOW, 30_000, 10).await.unwrap();
        let got: Vec<&str> = claimed.iter().map(|c| c.message_id.as_str()).collect();
        assert_eq!(got, [a1.as_str(), b1.as_str(), n1.as_str()], "a2 waits for a1");
        // a1 fails and waits for its retry: a2 still waits; b and the unkeyed one are done.
        let rec = AttemptRecord { status: Some(500), latency_ms: 1, error: Some("HTTP 500"), response: None };
        let a1d = claimed[0].id;
        assert!(
            store
                .webhook_record_attempt(a1d, "w:1", &rec, AttemptOutcome::RetryAt(NOW + 10), NOW)
                .await
                .unwrap()
        );
        let ok = AttemptRecord { status: Some(200), latency_ms: 1, error: None, response: None };
        for c in &claimed[1..] {
            store.webhook_record_attempt(c.id, "w:1", &ok, AttemptOutcome::Delivered, NOW).await.unwrap();
        }
        let later = store.webhook_claim("w:2", "endpoint:crm", NOW + 20, 30_000, 10).await.unwrap();
        assert_eq!(later.iter().map(|c| c.message_id.as_str()).collect::<Vec<_>>(), [a1.as_str()]);
        // Given back without an attempt (an open breaker): not counted, due when said.
        assert!(store.webhook_release(later[0].id, "w:2", NOW + 100, NOW + 20).await.unwrap());
        assert!(
            !store.webhook_release(later[0].id, "w:2", NOW + 100, NOW + 20).await.unwrap(),
            "released already"
        );
        assert!(store.webhook_claim("w:3", "endpoint:crm", NOW + 50, 30_000, 10).await.unwrap().is_empty());
        let again = store.webhook_claim("w:3", "endpoint:crm", NOW + 100, 30_000, 10).await.unwrap();
        assert_eq!((again.len(), again[0].attempts), (1, 1), "one attempt counted, the release not");
        // a1 dies: its key no longer holds a2 back.
        store
            .webhook_record_attempt(again[0].id, "w:3", &rec, AttemptOutcome::Dead, NOW + 100)
            .await
            .unwrap();
        let next = store.webhook_claim("w:4", "endpoint:crm", NOW + 100, 30_000, 10).await.unwrap();
        assert_eq!(next.iter().map(|c| c.message_id.as_str()).collect::<Vec<_>>(), [a2.as_str()]);
        store
            .webhook_record_attempt(next[0].id, "w:4", &ok, AttemptOutcome::Delivered, NOW + 100)
            .await
            .unwrap();

        // Redelivery: failed ones only, then everything in a range, never twice while pending.
        let failed =
            Redeliver { destination: Some("endpoint:crm"), only_failed: true, ..Redeliver::default() };
        assert_eq!(store.webhook_redeliver(&failed, NOW + 200).await.unwrap(), 1);
        assert_eq!(store.webhook_redeliver(&failed, NOW + 200).await.unwrap(), 0, "a1 is pending again");
        let ds = store.webhook_deliveries(&a1).await.unwrap();
        assert_eq!(
            ds.iter().map(|d| (d.state.as_str(), d.attempts)).collect::<Vec<_>>(),
            [("dead", 2), ("pending", 0)]
        );
        let all = Redeliver {
            destination: Some("endpoint:crm"),
            since_ms: Some(NOW),
            until_ms: Some(NOW + 1),
            ..Redeliver::default()
        };
        assert_eq!(
            store.webhook_redeliver(&all, NOW + 200).await.unwrap(),
            3,
            "a2, b1 and n1 (a1 is pending)"
        );
        let none =
            Redeliver { destination: Some("endpoint:crm"), since_ms: Some(NOW + 1), ..Redeliver::default() };
        assert_eq!(store.webhook_redeliver(&none, NOW + 200).await.unwrap(), 0);
        let one = Redeliver { message_id: Some(&b1), ..Redeliver::default() };
        assert_eq!(store.webhook_redeliver(&one, NOW + 200).await.unwrap(), 0, "b1's latest is pending");
    }

    pub async fn endpoints_and_message_listing(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        assert!(
            store
                .webhook_endpoint_add("crm", "https://crm.example/h", r#"["order.*"]"#, "[]", false, NOW)
                .await
                .unwrap()
        );
        assert!(
            !store.webhook_endpoint_add("crm", "https://x.example/", "[]", "[]", true, NOW).await.unwrap(),
            "taken"
        );
        // A declared endpoint gets a state row when first disabled; enabling makes its waiting
        // deliveries due.
        let m = new_id(
            store
                .webhook_accept(
                    &NewWebhookMessage { source: "outbound:shop", ..msg(Some("e1"), b"{}") },
                    &["endpoint:dash"],
                    NOW,
                )
                .await
                .unwrap(),
        );
        assert!(
            store.webhook_endpoint_set_disabled("dash", true, Some("answered 410 Gone"), NOW).await.unwrap()
        );
        let c = store.webhook_claim("w:1", "endpoint:dash", NOW, 30_000, 1).await.unwrap();
        let rec = AttemptRecord { status: Some(410), latency_ms: 1, error: None, response: None };
        store
            .webhook_record_attempt(c[0].id, "w:1", &rec, AttemptOutcome::RetryAt(NOW + 3_600_000), NOW)
            .await
            .unwrap();
        assert!(store.webhook_endpoint_set_disabled("dash", true, None, NOW + 5).await.unwrap());
        assert_eq!(store.webhook_deliveries(&m).await.unwrap()[0].next_attempt_at_ms, NOW + 5);
        assert!(!store.webhook_endpoint_set_disabled("nope", false, None, NOW).await.unwrap());
        assert!(
            store
                .webhook_endpoint_set_secrets("crm", r#"[{"secret":"whsec_x","expires_at":null}]"#, "[]", NOW)
                .await
                .unwrap()
        );
        assert!(
            !store.webhook_endpoint_set_secrets("crm", "[]", "[]", NOW).await.unwrap(),
            "changed meanwhile"
        );
        assert!(
            !store.webhook_endpoint_set_secrets("dash", "[]", "[]", NOW).await.unwrap(),
            "declared: not here"
        );
        let rows = store.webhook_endpoints().await.unwrap();
        let names: Vec<(&str, bool)> = rows.iter().map(|r| (r.name.as_str(), r.declared)).collect();
        assert_eq!(names, [("crm", false), ("dash", true)]);
        assert_eq!(rows[0].secrets_json.as_deref(), Some(r#"[{"secret":"whsec_x","expires_at":null}]"#));
        assert_eq!(rows[1].disabled_at_ms, None);
        assert!(store.webhook_endpoint_remove("crm", NOW).await.unwrap());
        // Removing ends its pending deliveries: a later endpoint of that name never gets them.
        assert!(store.webhook_endpoint_remove("dash", NOW).await.unwrap());
        assert!(!store.webhook_endpoint_remove("dash", NOW).await.unwrap(), "gone");
        let d = &store.webhook_deliveries(&m).await.unwrap()[0];
        assert_eq!((d.state.as_str(), d.last_error.as_deref()), ("dead", Some("endpoint removed")));

        // Listing with filters and a cursor.
        for (i, t) in ["order.created", "order.cancelled", "order.created"].iter().enumerate() {
            let ext = format!("l{i}");
            let msg = NewWebhookMessage {
                source: "outbound:lister",
                event_type: Some(t),
                ..msg(Some(&ext), b"{}")
            };
            store.webhook_accept(&msg, &["endpoint:crm"], NOW + 10 + i as i64).await.unwrap();
        }
        let f = MessageFilter {
            source: Some("outbound:lister"),
            event_type: Some("order.created"),
            ..MessageFilter::default()
        };
        let page = store.webhook_messages(&f, None, 1).await.unwrap();
        assert_eq!((page.len(), page[0].received_at_ms), (1, NOW + 12));
        let rest = store.webhook_messages(&f, Some((page[0].received_at_ms, &page[0].id)), 10).await.unwrap();
        assert_eq!(rest.iter().map(|m| m.received_at_ms).collect::<Vec<_>>(), [NOW + 10]);
        let by_dest = MessageFilter {
            destination: Some("endpoint:crm"),
            since_ms: Some(NOW + 11),
            ..MessageFilter::default()
        };
        assert_eq!(store.webhook_messages(&by_dest, None, 10).await.unwrap().len(), 2);
    }

    /// A stale attempt and the one that took its delivery over, recorded at the same moment
    /// (one batch): only the lease owner's counts.
    pub async fn two_records_of_one_delivery_at_once_keep_only_the_owners(url: &str, _: Backend) {
        let store = Store::open(url).await.unwrap();
        let id =
            new_id(store.webhook_accept(&msg(Some("race"), b"{}"), &["forward:stripe"], NOW).await.unwrap());
        let stale = store.webhook_claim("old:1", "forward:stripe", NOW, 10, 1).await.unwrap();
        let fresh = store.webhook_claim("new:1", "forward:stripe", NOW + 20, 30_000, 1).await.unwrap();
        assert_eq!(stale[0].id, fresh[0].id, "the lease ran out and was taken over");
        let ok = AttemptRecord { status: Some(200), latency_ms: 1, error: None, response: None };
        let (a, b) = tokio::join!(
            store.webhook_record_attempt(stale[0].id, "old:1", &ok, AttemptOutcome::Delivered, NOW + 21),
            store.webhook_record_attempt(fresh[0].id, "new:1", &ok, AttemptOutcome::Delivered, NOW + 21),
        );
        assert_eq!((a.unwrap(), b.unwrap()), (false, true));
        let d = &store.webhook_deliveries(&id).await.unwrap()[0];
        assert_eq!((d.state.as_str(), d.attempts), ("delivered", 1));
        assert_eq!(store.webhook_attempts(d.id).await.unwrap().len(), 1);
    }
}
