use super::*;
use proptest::prelude::*;

const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_TS: i64 = 1_614_265_330;
const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| (HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap()))
        .collect()
}

fn verifier(scheme: Scheme, secrets: &[&str]) -> Verifier {
    let keys = secrets.iter().map(|s| Key::parse(&scheme, s).unwrap()).collect();
    Verifier::new(scheme, keys, DEFAULT_TOLERANCE).unwrap()
}

fn signer(scheme: Scheme, secrets: &[&str]) -> Signer {
    let keys = secrets.iter().map(|s| Key::parse(&scheme, s).unwrap()).collect();
    Signer::new(scheme, keys).unwrap()
}

fn reason(r: Result<Verified, VerifyError>) -> (String, Reason) {
    let e = r.unwrap_err();
    (e.header.to_string(), e.reason)
}

fn standard_headers(sig: &str, ts: &str) -> HeaderMap {
    headers(&[("webhook-id", SW_ID), ("webhook-timestamp", ts), ("webhook-signature", sig)])
}

#[test]
fn standard_webhooks_published_vector_verifies_and_is_what_we_sign() {
    let v = verifier(Scheme::Standard, &[SW_SECRET]);
    let ok = v.verify(&standard_headers(SW_SIG, "1614265330"), SW_BODY, SW_TS).unwrap();
    assert_eq!(ok, Verified { id: Some(SW_ID.into()), timestamp: Some(SW_TS), key: 0 });
    let signed = signer(Scheme::Standard, &[SW_SECRET]).sign(SW_ID, SW_TS, SW_BODY).unwrap();
    let get = |n: &str| signed.iter().find(|(k, _)| k == n).unwrap().1.to_str().unwrap().to_owned();
    assert_eq!(get("webhook-signature"), SW_SIG);
    assert_eq!(get("webhook-id"), SW_ID);
    assert_eq!(get("webhook-timestamp"), "1614265330");
}

#[test]
fn standard_accepts_any_of_several_signatures_and_keys_and_ignores_unknown_versions() {
    let other = "whsec_QWxsIHRoZSB3b3JsZCdzIGEgc3RhZ2U=";
    let v = verifier(Scheme::Standard, &[other, SW_SECRET]);
    let sig = format!("v2,abc v1,AAAA{} {SW_SIG}", "A".repeat(40));
    let ok = v.verify(&standard_headers(&sig, "1614265330"), SW_BODY, SW_TS).unwrap();
    assert_eq!(ok.key, 1, "the second (rotated-in) secret matched");
    // Only unknown versions: nothing to check.
    let (h, r) = reason(v.verify(&standard_headers("v2,abc", "1614265330"), SW_BODY, SW_TS));
    assert_eq!((h.as_str(), r), ("webhook-signature", Reason::Malformed("no v1 or v1a signature".into())));
    // Rotation on the sending side: one signature per secret, each verifiable alone.
    let signed = signer(Scheme::Standard, &[other, SW_SECRET]).sign(SW_ID, SW_TS, SW_BODY).unwrap();
    let sig = signed.iter().find(|(k, _)| k == "webhook-signature").unwrap().1.to_str().unwrap();
    assert_eq!(sig.split(' ').count(), 2);
    assert!(sig.ends_with(SW_SIG), "{sig}");
}

#[test]
fn standard_rejections_name_the_header_and_the_reason() {
    let v = verifier(Scheme::Standard, &[SW_SECRET]);
    let ts = "1614265330";
    assert_eq!(
        reason(v.verify(&standard_headers(SW_SIG, ts), br#"{"test": 2432232315}"#, SW_TS)),
        ("webhook-signature".into(), Reason::NoMatch)
    );
    assert_eq!(
        reason(v.verify(&standard_headers(SW_SIG, ts), SW_BODY, SW_TS + 301)),
        ("webhook-timestamp".into(), Reason::Expired { age_secs: 301, tolerance_secs: 300 })
    );
    assert_eq!(
        reason(v.verify(&standard_headers(SW_SIG, ts), SW_BODY, SW_TS - 301)),
        ("webhook-timestamp".into(), Reason::InFuture { ahead_secs: 301, tolerance_secs: 300 })
    );
    // At the tolerance exactly: accepted both ways.
    assert!(v.verify(&standard_headers(SW_SIG, ts), SW_BODY, SW_TS + 300).is_ok());
    assert!(v.verify(&standard_headers(SW_SIG, ts), SW_BODY, SW_TS - 300).is_ok());
    for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut h = standard_headers(SW_SIG, ts);
        h.remove(missing);
        assert_eq!(reason(v.verify(&h, SW_BODY, SW_TS)), (missing.into(), Reason::Missing));
    }
    let (h, r) = reason(v.verify(&standard_headers(SW_SIG, "16142653e0"), SW_BODY, SW_TS));
    assert_eq!(h, "webhook-timestamp");
    assert!(matches!(r, Reason::Malformed(ref m) if m.contains("not a Unix timestamp")), "{r}");
    let (h, r) = reason(v.verify(&standard_headers("g0hM9SsE", ts), SW_BODY, SW_TS));
    assert_eq!(h, "webhook-signature");
    assert!(matches!(r, Reason::Malformed(ref m) if m.contains("<version>,<base64>")), "{r}");
    let (_, r) = reason(v.verify(&standard_headers("v1,***", ts), SW_BODY, SW_TS));
    assert_eq!(r, Reason::Malformed("the v1 signature is not base64".into()));
}

#[test]
fn standard_v1a_ed25519_signs_with_whsk_and_verifies_with_whpk() {
    let seed = [7u8; 32];
    let pair = sig::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    let whsk = format!("whsk_{}", B64.encode(seed));
    let whpk = format!("whpk_{}", B64.encode(sig::KeyPair::public_key(&pair).as_ref()));
    let signed = signer(Scheme::Standard, &[&whsk]).sign(SW_ID, SW_TS, SW_BODY).unwrap();
    let h: HeaderMap = signed.into_iter().collect();
    assert!(h["webhook-signature"].to_str().unwrap().starts_with("v1a,"));
    let v = verifier(Scheme::Standard, &[SW_SECRET, &whpk]);
    assert_eq!(v.verify(&h, SW_BODY, SW_TS).unwrap().key, 1);
    assert_eq!(reason(v.verify(&h, b"{}", SW_TS)).1, Reason::NoMatch);
    // A public key cannot sign.
    let pk = Key::parse(&Scheme::Standard, &whpk).unwrap();
    assert!(Signer::new(Scheme::Standard, vec![pk]).unwrap_err().to_string().contains("verifies only"));
}

#[test]
fn standard_keys_are_checked_without_showing_them() {
    let cases = [
        ("whsec_***", "not valid base64"),
        ("whpk_AAAA", "32 bytes, not 3"),
        ("whsk_AAAA", "32 or 64 bytes, not 3"),
        ("", "empty"),
        ("whsec_", "decodes to no bytes"),
    ];
    for (secret, want) in cases {
        let e = Key::parse(&Scheme::Standard, secret).unwrap_err().to_string();
        assert!(e.contains(want), "{secret}: {e}");
    }
    // Plain base64 without the prefix is accepted, as the Standard Webhooks libraries do.
    let v = verifier(Scheme::Standard, &["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
    assert!(v.verify(&standard_headers(SW_SIG, "1614265330"), SW_BODY, SW_TS).is_ok());
}

#[test]
fn stripe_signs_t_dot_body_with_the_secret_string_and_ignores_v0() {
    let secret = "whsec_test_secret";
    let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
    // Computed independently (Python hmac).
    let mac = "c0475716eb2200f1fe97fcf35a3c05d1fd4f8ba9a07a596730c8d18bb87c0672";
    let v = verifier(Scheme::Stripe, &[secret]);
    let h = headers(&[("stripe-signature", &format!("t=1700000000,v1={mac},v0=deadbeef"))]);
    assert_eq!(
        v.verify(&h, body, 1_700_000_100).unwrap(),
        Verified { id: None, timestamp: Some(1_700_000_000), key: 0 }
    );
    let signed: HeaderMap =
        signer(Scheme::Stripe, &[secret]).sign("evt_1", 1_700_000_000, body).unwrap().into_iter().collect();
    assert_eq!(signed["stripe-signature"], format!("t=1700000000,v1={mac}"));
    // A second v1 (a rolled secret) may match instead.
    let h = headers(&[("stripe-signature", &format!("t=1700000000,v1={},v1={mac}", "0".repeat(64)))]);
    assert!(v.verify(&h, body, 1_700_000_000).is_ok());
    let cases = [
        ("v1=00", "no t= timestamp"),
        ("t=1700000000,v0=00", "no v1 signature"),
        ("t=1700000000,t=1700000001,v1=00", "more than one t="),
        ("t=1700000000,v1=zz", "not hex"),
        ("t=1700000000,garbage", "not key=value"),
    ];
    for (value, want) in cases {
        let (h, r) = reason(v.verify(&headers(&[("stripe-signature", value)]), body, 1_700_000_000));
        assert_eq!(h, "stripe-signature");
        assert!(matches!(r, Reason::Malformed(ref m) if m.contains(want)), "{value}: {r}");
    }
    let h = headers(&[("stripe-signature", &format!("t=1700000000,v1={mac}"))]);
    assert_eq!(
        reason(v.verify(&h, body, 1_700_000_301)).1,
        Reason::Expired { age_secs: 301, tolerance_secs: 300 }
    );
    assert_eq!(reason(v.verify(&h, b"{}", 1_700_000_000)).1, Reason::NoMatch);
}

#[test]
fn github_published_example() {
    let v = verifier(Scheme::Github, &["It's a Secret to Everybody"]);
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let h = headers(&[
        ("x-hub-signature-256", sig),
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    ]);
    let ok = v.verify(&h, b"Hello, World!", 0).unwrap();
    assert_eq!(ok.id.as_deref(), Some("72d3162e-cc78-11e3-81ab-4c9367dc0958"));
    let signed: HeaderMap = signer(Scheme::Github, &["It's a Secret to Everybody"])
        .sign("d-1", 0, b"Hello, World!")
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(signed["x-hub-signature-256"], sig);
    assert_eq!(reason(v.verify(&h, b"Hello, World?", 0)), ("x-hub-signature-256".into(), Reason::NoMatch));
    let (_, r) = reason(v.verify(&headers(&[("x-hub-signature-256", "sha1=00")]), b"", 0));
    assert_eq!(r, Reason::Malformed("expected sha256=<hex>".into()));
}

#[test]
fn slack_published_example_and_its_timestamp_window() {
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    let h = headers(&[("x-slack-signature", sig), ("x-slack-request-timestamp", "1531420618")]);
    let v = verifier(Scheme::Slack, &[secret]);
    assert_eq!(v.verify(&h, body.as_bytes(), 1_531_420_678).unwrap().timestamp, Some(1_531_420_618));
    let signed: HeaderMap = signer(Scheme::Slack, &[secret])
        .sign("x", 1_531_420_618, body.as_bytes())
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(signed["x-slack-signature"], sig);
    assert_eq!(
        reason(v.verify(&h, body.as_bytes(), 1_531_420_618 + 3600)),
        ("x-slack-request-timestamp".into(), Reason::Expired { age_secs: 3600, tolerance_secs: 300 })
    );
    let mut no_ts = h.clone();
    no_ts.remove("x-slack-request-timestamp");
    assert_eq!(
        reason(v.verify(&no_ts, body.as_bytes(), 0)),
        ("x-slack-request-timestamp".into(), Reason::Missing)
    );
}

fn custom() -> Scheme {
    Scheme::Hmac(Box::new(HmacScheme {
        header: HeaderName::from_static("x-signature"),
        prefix: String::new(),
        algorithm: Algorithm::Sha512,
        encoding: Encoding::Base64,
        content: Template::parse("{id}:{timestamp}:{body}").unwrap(),
        timestamp_header: Some(HeaderName::from_static("x-timestamp")),
        id_header: Some(HeaderName::from_static("x-id")),
    }))
}

#[test]
fn hmac_scheme_signs_its_template_with_sha512_base64() {
    // Computed independently (Python hmac + base64).
    let mac = "CepHhGkLOHCnj1Rlz3OZMUgS3PuMMyYP4pxUS/D6Si0Rwx52IKmQZDoTkmzHSIB1jE6li+qSWT+4i90/x04Q3w==";
    let v = verifier(custom(), &["custom-secret"]);
    let h = headers(&[("x-signature", mac), ("x-timestamp", "1700000000"), ("x-id", "msg-7")]);
    let ok = v.verify(&h, br#"{"a":1}"#, 1_700_000_000).unwrap();
    assert_eq!(ok, Verified { id: Some("msg-7".into()), timestamp: Some(1_700_000_000), key: 0 });
    let signed: HeaderMap = signer(custom(), &["custom-secret"])
        .sign("msg-7", 1_700_000_000, br#"{"a":1}"#)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(signed["x-signature"], mac);
    assert_eq!(signed["x-id"], "msg-7");
    let mut no_id = h.clone();
    no_id.remove("x-id");
    assert_eq!(reason(v.verify(&no_id, br#"{"a":1}"#, 1_700_000_000)), ("x-id".into(), Reason::Missing));
    let (_, r) = reason(v.verify(
        &headers(&[("x-signature", "%%"), ("x-timestamp", "1700000000"), ("x-id", "m")]),
        b"",
        1_700_000_000,
    ));
    assert_eq!(r, Reason::Malformed("the signature is not base64".into()));
}

#[test]
fn hmac_scheme_checks_its_setup() {
    let mut s = HmacScheme {
        header: HeaderName::from_static("x-sig"),
        prefix: "sha256=".into(),
        algorithm: Algorithm::Sha256,
        encoding: Encoding::Hex,
        content: Template::parse("{timestamp}.{body}").unwrap(),
        timestamp_header: None,
        id_header: None,
    };
    assert_eq!(s.check().unwrap_err(), "content signs {timestamp}: set timestamp_header");
    s.timestamp_header = Some(HeaderName::from_static("x-ts"));
    assert!(s.check().is_ok());
    s.prefix = "sha 256=".into();
    assert!(s.check().unwrap_err().contains("visible ASCII"));
    let key = Key::parse(&Scheme::Hmac(Box::new(s.clone())), "k").unwrap();
    s.prefix = "sha256=".into();
    let scheme = Scheme::Hmac(Box::new(s));
    let err = Signer::new(scheme.clone(), vec![key.clone(), key.clone()]).unwrap_err();
    assert!(err.to_string().contains("one signature"), "{err}");
    let signed = Signer::new(scheme, vec![key]).unwrap();
    assert!(signed.sign("has space", 0, b"").unwrap_err().to_string().contains("visible ASCII"));
}

#[test]
fn templates_parse_placeholders_and_refuse_mistakes() {
    assert!(Template::parse("{{literal}}.{body}").unwrap().uses("body"));
    assert!(!Template::parse("{body}").unwrap().uses("timestamp"));
    for (t, want) in [
        ("{timestamp}", "does not sign {body}"),
        ("{body}{body}", "more than once"),
        ("{bdy}", "unknown placeholder {bdy}"),
        ("{body", "unclosed"),
        ("body}", "unmatched"),
    ] {
        let e = Template::parse(t).unwrap_err();
        assert!(e.contains(want), "{t}: {e}");
    }
}

#[test]
fn errors_never_show_the_secret() {
    let secret = "whsec_c2VjcmV0LWJ5dGVzLXRoYXQtbXVzdC1ub3Qtc2hvdw==";
    let v = verifier(Scheme::Standard, &[secret]);
    let e = v.verify(&standard_headers(SW_SIG, "1614265330"), SW_BODY, SW_TS).unwrap_err();
    assert!(!format!("{e} {e:?} {v:?}").contains("c2VjcmV0"), "{e:?}");
}

fn schemes() -> Vec<(Scheme, &'static str)> {
    vec![
        (Scheme::Standard, SW_SECRET),
        (Scheme::Stripe, "whsec_abc"),
        (Scheme::Github, "gh-secret"),
        (Scheme::Slack, "slack-secret"),
        (custom(), "custom-secret"),
    ]
}

proptest! {
    /// What we sign, we verify; a flipped body byte or a foreign secret never verifies.
    #[test]
    fn signing_and_verifying_agree(body in proptest::collection::vec(any::<u8>(), 0..512), flip in any::<usize>(), ts in 1_000_000_000i64..2_000_000_000) {
        for (scheme, secret) in schemes() {
            let signed: HeaderMap = signer(scheme.clone(), &[secret]).sign("msg_1", ts, &body).unwrap().into_iter().collect();
            let v = verifier(scheme.clone(), &[secret]);
            prop_assert!(v.verify(&signed, &body, ts).is_ok(), "{}", scheme.name());
            if !body.is_empty() {
                let mut tampered = body.clone();
                tampered[flip % body.len()] ^= 1;
                prop_assert_eq!(v.verify(&signed, &tampered, ts).unwrap_err().reason, Reason::NoMatch);
            }
            let other = verifier(scheme.clone(), &[if matches!(scheme, Scheme::Standard) { "whsec_b3RoZXI=" } else { "other" }]);
            prop_assert_eq!(other.verify(&signed, &body, ts).unwrap_err().reason, Reason::NoMatch);
        }
    }
}
