use http::Request;

use super::*;

fn parts(headers: &[(&str, &str)], uri: &str) -> Parts {
    let mut b = Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

#[test]
fn bearer_tokens_come_from_authorization_by_default() {
    let src = TokenSource::new(None, None).unwrap();
    assert_eq!(src.extract(&parts(&[("authorization", "Bearer abc.def.ghi")], "/")), Ok(Some("abc.def.ghi")));
    assert_eq!(src.extract(&parts(&[("authorization", "bearer   abc ")], "/")), Ok(Some("abc")));
    assert_eq!(src.extract(&parts(&[("authorization", "Bearer\tabc")], "/")), Ok(Some("abc")));
    assert_eq!(src.extract(&parts(&[("authorization", "Basic dXNlcjpwdw==")], "/")), Ok(None));
    assert_eq!(src.extract(&parts(&[("authorization", "Bearer ")], "/")), Ok(None));
    assert_eq!(src.extract(&parts(&[], "/")), Ok(None));
    // Ambiguity is refused, not resolved by picking one.
    let two = parts(&[("authorization", "Basic x"), ("authorization", "Bearer forged")], "/");
    assert!(src.extract(&two).is_err());
}

#[test]
fn a_configured_header_and_cookie_are_alternatives() {
    let src = TokenSource::new(Some("X-Token"), Some("session")).unwrap();
    assert_eq!(src.extract(&parts(&[("x-token", "raw")], "/")), Ok(Some("raw")));
    assert_eq!(src.extract(&parts(&[("x-token", "Bearer pref")], "/")), Ok(Some("pref")));
    assert_eq!(src.extract(&parts(&[("cookie", "a=1; session=tok; b=2")], "/")), Ok(Some("tok")));
    assert_eq!(src.extract(&parts(&[("cookie", "a=1"), ("cookie", "session=\"q\"")], "/")), Ok(Some("q")));
    assert_eq!(src.extract(&parts(&[("authorization", "Bearer ignored")], "/")), Ok(None));
    assert!(src.extract(&parts(&[("cookie", "session=a; session=b")], "/")).is_err());
    let mut p = parts(&[("x-token", "raw"), ("cookie", "a=1; session=tok; b=2")], "/");
    src.strip(&mut p);
    assert!(p.headers.get("x-token").is_none());
    assert_eq!(p.headers["cookie"], "a=1; b=2");
    let mut p = parts(&[("cookie", "session=tok")], "/");
    src.strip(&mut p);
    assert!(p.headers.get("cookie").is_none());
}

#[test]
fn stripping_leaves_other_authorization_schemes() {
    let src = TokenSource::new(None, None).unwrap();
    let mut p = parts(&[("authorization", "Basic dXNlcjpwdw==")], "/");
    src.strip(&mut p);
    assert!(p.headers.get("authorization").is_some());
    let mut p = parts(&[("authorization", "Bearer x")], "/");
    src.strip(&mut p);
    assert!(p.headers.get("authorization").is_none());
    // With forwarding off, a bearer value after another scheme is removed too.
    let mut p = parts(&[("authorization", "Basic x"), ("authorization", "bearer\tforged")], "/");
    src.strip(&mut p);
    let left: Vec<_> = p.headers.get_all("authorization").iter().collect();
    assert_eq!(left, ["Basic x"]);
}

#[test]
fn identity_headers_and_their_underscore_aliases_are_removed() {
    let protected = [X_CONSUMER_ID.clone(), HeaderName::from_static("x-tenant")];
    let mut p = parts(
        &[("x-consumer-id", "admin"), ("x_consumer_id", "admin"), ("X_Tenant", "t"), ("x_other", "kept")],
        "/",
    );
    strip_identity(&mut p.headers, &protected);
    let names: Vec<_> = p.headers.keys().map(http::HeaderName::as_str).collect();
    assert_eq!(names, ["x_other"]);
}

#[test]
fn challenges_follow_rfc_6750() {
    assert_eq!(bearer_challenge(None), "Bearer realm=\"bridgehead\"");
    let c = bearer_challenge(Some(("invalid_token", "token \"expired\" \u{e9}")));
    assert_eq!(
        c,
        "Bearer realm=\"bridgehead\", error=\"invalid_token\", error_description=\"token 'expired' '\""
    );
    assert!(HeaderValue::from_str(&c).is_ok());
}

#[test]
fn consumer_and_scopes_from_claims() {
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"client_id":"svc","scope":"a b","scp":["c"],"n":7}"#).unwrap();
    assert_eq!(consumer_from_claims(&claims, None).as_deref(), Some("svc"));
    assert_eq!(consumer_from_claims(&claims, Some("n")).as_deref(), Some("7"));
    assert_eq!(consumer_from_claims(&claims, Some("missing")), None);
    assert_eq!(scopes_from_claims(&claims), ["a", "b", "c"]);
    let headers =
        ClaimHeaders::new(&[("scp".to_string(), "X-Scp".to_string())].into_iter().collect()).unwrap();
    let v = headers.values(&claims);
    assert_eq!(v[0].1, "c");
}
