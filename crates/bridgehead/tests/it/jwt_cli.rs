//! End-to-end: `bridgehead keys generate`, `jwt sign`, `jwt verify` and `jwt decode` as a person
//! runs them, including the RFC 8725 negative matrix through `jwt verify` and a JWK Set served
//! over HTTP by a tiny server on 127.0.0.1:0.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bridgehead_auth::jwt::{self, Algorithm};
use serde_json::{Value, json};

use crate::support::{bridgehead, bridgehead_stdin};

const ISSUER: &str = "https://issuer.example";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A key pair written by `bridgehead keys generate`.
struct Keys {
    dir: tempfile::TempDir,
    alg: &'static str,
    kid: String,
}

impl Keys {
    fn generate(alg: &'static str) -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_str().unwrap();
        let (code, stdout, stderr) = bridgehead(&["keys", "generate", "--alg", alg, "--out", out]);
        assert_eq!(code, 0, "{stdout}{stderr}");
        let kid = stdout.lines().find_map(|l| l.strip_prefix("kid: ")).expect(&stdout).to_owned();
        Keys { dir, alg, kid }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }

    /// `jwt sign` with this key and kid.
    fn sign(&self, claims: &Value) -> String {
        let (code, stdout, stderr) = bridgehead(&[
            "jwt",
            "sign",
            "--key",
            &self.arg("private.pem"),
            "--alg",
            self.alg,
            "--kid",
            &self.kid,
            "--claims",
            &claims.to_string(),
        ]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(stdout.lines().count(), 1, "the token alone: {stdout}");
        stdout.trim().to_owned()
    }

    /// `jwt verify` against jwks.json with the usual issuer and audience, plus `extra`.
    fn verify(&self, token: &str, extra: &[&str]) -> (i32, String, String) {
        let jwks = self.arg("jwks.json");
        let mut args = vec!["jwt", "verify", token, "--key", &jwks, "--issuer", ISSUER, "--audience", "api"];
        args.extend_from_slice(extra);
        bridgehead(&args)
    }
}

fn claims() -> Value {
    json!({"sub": "alice", "iss": ISSUER, "aud": "api", "exp": now() + 3600, "iat": now()})
}

fn with(edit: &[(&str, Value)]) -> Value {
    let mut c = claims();
    for (k, v) in edit {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(*k);
        } else {
            c[*k] = v.clone();
        }
    }
    c
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with an arbitrary header, signed with a PEM private key.
fn forge(header: &Value, claims: &Value, private_pem: &Path, alg: Algorithm) -> String {
    let message = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let pem = std::fs::read(private_pem).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap();
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg).unwrap();
    format!("{message}.{signature}")
}

#[test]
fn keys_generate_then_sign_then_verify_for_es256_rs256_eddsa() {
    for alg in ["ES256", "RS256", "EdDSA"] {
        let keys = Keys::generate(alg);
        for name in ["private.pem", "public.pem", "jwks.json"] {
            assert!(keys.path(name).exists(), "{alg}: {name}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(keys.path("private.pem")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{alg}");
        }
        let jwks: Value =
            serde_json::from_str(&std::fs::read_to_string(keys.path("jwks.json")).unwrap()).unwrap();
        assert_eq!(jwks["keys"][0]["kid"], keys.kid.as_str());
        assert_eq!(jwks["keys"][0]["alg"], alg);
        assert_eq!(jwks["keys"][0]["use"], "sig");

        let token = keys.sign(&claims());
        let (code, stdout, stderr) = keys.verify(&token, &[]);
        assert_eq!(
            (code, stdout.as_str()),
            (0, format!("valid: alg={alg} kid={} sub=alice\n", keys.kid).as_str()),
            "{stderr}"
        );
        // The PEM public key (no kid) verifies the same token.
        let public = keys.arg("public.pem");
        let (code, stdout, stderr) =
            bridgehead(&["jwt", "verify", &token, "--key", &public, "--issuer", ISSUER]);
        assert_eq!(code, 0, "{alg}: {stdout}{stderr}");
        // --ttl sets iat and exp.
        let (code, stdout, _) = bridgehead(&[
            "jwt",
            "sign",
            "--key",
            &keys.arg("private.pem"),
            "--alg",
            alg,
            "--claims",
            r#"{"sub":"bob"}"#,
            "--ttl",
            "1h",
        ]);
        assert_eq!(code, 0);
        let (_, decoded) = jwt::decode_unverified(stdout.trim()).unwrap();
        let (iat, exp) = (decoded["iat"].as_u64().unwrap(), decoded["exp"].as_u64().unwrap());
        assert_eq!(exp - iat, 3600);

        // Existing files are kept without --force.
        let out = keys.dir.path().to_str().unwrap();
        let (code, _, stderr) = bridgehead(&["keys", "generate", "--alg", alg, "--out", out]);
        assert_eq!(code, 1);
        assert!(stderr.contains("already exist(s); pass --force to overwrite"), "{stderr}");
        let (code, stdout, _) =
            bridgehead(&["keys", "generate", "--alg", alg, "--out", out, "--force", "--kid", "k2"]);
        assert_eq!(code, 0);
        assert!(stdout.contains("kid: k2\n"), "{stdout}");
    }
}

#[test]
fn verify_refuses_the_negative_matrix_with_exit_1_and_a_reason() {
    let keys = Keys::generate("ES256");
    let rsa = Keys::generate("RS256");
    let now = now();
    let good = keys.sign(&claims());
    let parts: Vec<&str> = good.split('.').collect();

    let unsigned = |header: Value| format!("{}.{}.", b64(header.to_string().as_bytes()), parts[1]);
    // HS256 with the RSA public key's PEM bytes as the HMAC secret, naming the RSA key.
    let rsa_pem = std::fs::read(rsa.path("public.pem")).unwrap();
    let confused = jwt::sign(&claims(), &rsa_pem, Algorithm::HS256, Some(&rsa.kid), None).unwrap();
    // The attacker's own key, embedded in the header and used to sign.
    let attacker = Keys::generate("ES256");
    let attacker_jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(attacker.path("jwks.json")).unwrap()).unwrap();
    let embedded = forge(
        &json!({"alg": "ES256", "kid": attacker.kid, "jwk": attacker_jwks["keys"][0]}),
        &claims(),
        &attacker.path("private.pem"),
        Algorithm::ES256,
    );
    let mut tampered_claims = claims();
    tampered_claims["sub"] = json!("admin");
    let tampered = format!("{}.{}.{}", parts[0], b64(tampered_claims.to_string().as_bytes()), parts[2]);
    let truncated = good[..good.len() - 2].to_owned();
    let non_base64url = format!("{}.{}+.{}", parts[0], parts[1], parts[2]);
    let four = format!("{good}.e30");
    let oversized = keys.sign(&with(&[("padding", json!("x".repeat(20_000)))]));
    let json_serialization =
        json!({"protected": parts[0], "payload": parts[1], "signature": parts[2]}).to_string();

    let cases: Vec<(&str, String, &str, Vec<&str>)> = vec![
        (
            "alg none",
            unsigned(json!({"alg": "none"})),
            "alg \"none\" (an unsigned token) is never accepted",
            vec![],
        ),
        (
            "alg NoNe",
            unsigned(json!({"alg": "NoNe", "typ": "JWT"})),
            "alg \"none\" (an unsigned token) is never accepted",
            vec![],
        ),
        ("HS/RS confusion", confused.clone(), "algorithm \"HS256\" is not allowed", vec![]),
        ("expired", keys.sign(&with(&[("exp", json!(now - 3600))])), "token expired 36", vec![]),
        ("not yet valid", keys.sign(&with(&[("nbf", json!(now + 3600))])), "token is not valid yet", vec![]),
        (
            "iat in the future",
            keys.sign(&with(&[("iat", json!(now + 3600))])),
            "token was issued in the future",
            vec![],
        ),
        (
            "wrong iss",
            keys.sign(&with(&[("iss", json!("https://evil.example"))])),
            "issuer \"https://evil.example\" is not the expected \"https://issuer.example\"",
            vec![],
        ),
        (
            "wrong aud",
            keys.sign(&with(&[("aud", json!(["other"]))])),
            "the token's aud names none of the accepted audiences",
            vec![],
        ),
        ("missing exp", keys.sign(&with(&[("exp", Value::Null)])), "required claim `exp` is missing", vec![]),
        (
            "unknown kid",
            jwt::sign(
                &claims(),
                &std::fs::read(keys.path("private.pem")).unwrap(),
                Algorithm::ES256,
                Some("nope"),
                None,
            )
            .unwrap(),
            "no configured key has kid \"nope\"",
            vec![],
        ),
        (
            "embedded jwk",
            embedded,
            "header parameter `jwk` is refused: keys come only from configuration",
            vec![],
        ),
        ("tampered payload", tampered, "signature does not verify", vec![]),
        ("truncated signature", truncated, "signature does not verify", vec![]),
        ("non-base64url", non_base64url, "the payload segment contains '+'", vec![]),
        ("four segments", four, "4 segments; a compact JWS has 3", vec![]),
        ("oversized", oversized, "bytes, over the 16384-byte limit", vec![]),
        ("JSON serialization", json_serialization, "only the compact serialization is accepted", vec![]),
    ];
    for (name, token, reason, extra) in cases {
        let (code, stdout, stderr) = keys.verify(&token, &extra);
        assert_eq!(code, 1, "{name}: {stdout}{stderr}");
        assert!(stdout.starts_with("invalid: ") && stdout.contains(reason), "{name}: {stdout}");
        // The reason never quotes the token.
        assert!(!stdout.contains(parts[2]), "{name}: {stdout}");
    }
    // Against the RSA key set the forgery names: refused by the allow-list, and when a lax
    // allow-list lets HS256 through, by the key's pin (with kid) or for want of a key (without).
    let rsa_jwks = rsa.arg("jwks.json");
    let lax = ["--algorithms", "RS256,HS256"];
    let confused_without_kid = jwt::sign(&claims(), &rsa_pem, Algorithm::HS256, None, None).unwrap();
    let expectations = [
        (&confused, &[][..], "invalid: algorithm \"HS256\" is not allowed\n".to_owned()),
        (
            &confused,
            &lax[..],
            format!(
                "invalid: alg HS256 does not match the key the token names: RSA 2048-bit key kid={} (RS256 only)\n",
                rsa.kid
            ),
        ),
        (
            &confused_without_kid,
            &lax[..],
            "invalid: the token has no kid and no configured key accepts its algorithm\n".to_owned(),
        ),
    ];
    for (token, extra, expected) in expectations {
        let mut args = vec!["jwt", "verify", token, "--key", &rsa_jwks];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = bridgehead(&args);
        assert_eq!((code, stdout.as_str()), (1, expected.as_str()), "{stderr}");
    }
}

#[test]
fn signature_only_accepts_an_expired_token() {
    let keys = Keys::generate("ES256");
    let token = keys.sign(&with(&[("exp", json!(now() - 86_400)), ("iss", json!("elsewhere"))]));
    let (code, stdout, _) = keys.verify(&token, &[]);
    assert_eq!(code, 1, "{stdout}");
    let (code, stdout, stderr) = keys.verify(&token, &["--signature-only"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("valid: alg=ES256"), "{stdout}");
    // Leeway is a duration.
    let token = keys.sign(&with(&[("exp", json!(now() - 60))]));
    assert_eq!(keys.verify(&token, &[]).0, 1);
    assert_eq!(keys.verify(&token, &["--leeway", "5m"]).0, 0);
}

#[test]
fn decode_prints_header_claims_times_and_warnings() {
    let keys = Keys::generate("ES256");
    let token = keys.sign(&with(&[("exp", json!(now() - 3 * 3600 - 100))]));
    let (code, stdout, stderr) = bridgehead(&["jwt", "decode", &token]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("header:\n{\n"), "{stdout}");
    assert!(stdout.contains("\"kid\": \""), "{stdout}");
    assert!(stdout.contains("claims:\n{\n"), "{stdout}");
    assert!(stdout.contains("\"sub\": \"alice\""), "{stdout}");
    let exp_line = stdout.lines().find(|l| l.starts_with("exp: ")).unwrap();
    assert!(exp_line.ends_with("Z (3h ago)"), "{exp_line}");
    assert!(stdout.lines().any(|l| l.starts_with("iat: ")), "{stdout}");
    assert_eq!(stderr, "warning: expired 3h ago\n");

    // From stdin, with a Bearer prefix; alg none and no exp are warned about; JSON output.
    let header = b64(br#"{"alg":"none"}"#);
    let payload = b64(br#"{"sub":"mallory"}"#);
    let unsigned = format!("Bearer {header}.{payload}.\n");
    let (code, stdout, stderr) = bridgehead_stdin(&["jwt", "decode", "-", "--output", "json"], &unsigned);
    assert_eq!(code, 0, "{stderr}");
    let out: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(out["header"]["alg"], "none");
    assert_eq!(out["claims"]["sub"], "mallory");
    let warnings: Vec<&str> =
        out["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert_eq!(
        warnings,
        [
            "alg \"none\": the token is unsigned; every verifier must refuse it",
            "no exp: the token never expires (bridgehead requires exp)"
        ]
    );
    let (code, _, stderr) = bridgehead_stdin(&["jwt", "decode", "-"], &unsigned);
    assert_eq!(code, 0);
    assert!(stderr.contains("warning: alg \"none\""), "{stderr}");
    assert!(stderr.contains("warning: no exp"), "{stderr}");

    // Not a JWT: exit 1 with the reason.
    let (code, stdout, _) = bridgehead(&["jwt", "decode", "not-a-token"]);
    assert_eq!((code, stdout.as_str()), (1, "not a JWT: malformed token: 1 segment; a compact JWS has 3\n"));
    let (code, stdout, _) = bridgehead(&["jwt", "decode", "--output", "json", "a.b+.c"]);
    assert_eq!(code, 1);
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap()["code"], "malformed");
}

/// Serves `body` to each of `requests` connections; returns the port.
fn serve(status: &'static str, body: String, requests: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    port
}

#[test]
fn verify_fetches_a_jwks_over_http() {
    let keys = Keys::generate("EdDSA");
    let token = keys.sign(&claims());
    let port = serve("200 OK", std::fs::read_to_string(keys.path("jwks.json")).unwrap(), 1);
    let url = format!("http://127.0.0.1:{port}/jwks.json");
    let (code, stdout, stderr) = bridgehead(&["jwt", "verify", &token, "--key", &url, "--audience", "api"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout, format!("valid: alg=EdDSA kid={} sub=alice\n", keys.kid));

    // A failed fetch means the check could not run: exit 2.
    let port = serve("404 Not Found", "{}".into(), 1);
    let url = format!("http://127.0.0.1:{port}/jwks.json");
    let (code, _, stderr) = bridgehead(&["jwt", "verify", &token, "--key", &url]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("HTTP 404"), "{stderr}");
}

#[test]
fn usage_errors_exit_2_and_every_command_has_an_example() {
    for command in [&["jwt", "decode"][..], &["jwt", "verify"], &["jwt", "sign"], &["keys", "generate"]] {
        let mut args = command.to_vec();
        args.push("--help");
        let (code, stdout, _) = bridgehead(&args);
        assert_eq!(code, 0);
        assert!(stdout.contains("Example: bridgehead "), "{command:?}: {stdout}");
    }
    let (code, _, stderr) = bridgehead(&["jwt", "verify", "a.b.c"]);
    assert_eq!(code, 2, "missing --key: {stderr}");
    let (code, _, stderr) = bridgehead(&["keys", "generate", "--alg", "HS256"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("shared secret, not a key pair"), "{stderr}");
    let (code, _, stderr) = bridgehead(&["jwt", "verify", "a.b.c", "--key", "k", "--algorithms", "none"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("never accepted"), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let (code, _, stderr) = bridgehead(&["jwt", "verify", "a.b.c", "--key", missing.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read the key file"), "{stderr}");
    // HMAC: the secret file's trailing newline is not part of the secret; too short is refused.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{}\n", "s".repeat(32))).unwrap();
    let (code, stdout, stderr) =
        bridgehead(&["jwt", "sign", "--key", secret.to_str().unwrap(), "--alg", "HS256", "--claims", "{}"]);
    assert_eq!(code, 0, "{stderr}");
    let keys = bridgehead_auth::jwt::KeySet::from_secret(&[b's'; 32], &[Algorithm::HS256]).unwrap();
    let policy = jwt::Policy { signature_only: true, ..Default::default() };
    assert!(jwt::verify(stdout.trim(), &keys, &policy, now()).is_ok());
    std::fs::write(&secret, "short\n").unwrap();
    let (code, _, stderr) =
        bridgehead(&["jwt", "sign", "--key", secret.to_str().unwrap(), "--alg", "HS256", "--claims", "{}"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("HMAC secret is 5 bytes; HS256 needs at least 32"), "{stderr}");
}

/// RFC 7638 thumbprints are base64url and may start with `-`; such a kid is a value, not a flag.
#[test]
fn a_kid_may_start_with_a_hyphen() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let (code, _, err) =
        bridgehead(&["keys", "generate", "--alg", "ES256", "--out", out, "--kid", "-leading"]);
    assert_eq!(code, 0, "{err}");
    let key = dir.path().join("private.pem");
    let (code, token, err) = bridgehead(&[
        "jwt",
        "sign",
        "--key",
        key.to_str().unwrap(),
        "--alg",
        "ES256",
        "--kid",
        "-leading",
        "--claims",
        "{}",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = bridgehead(&["jwt", "decode", "--output", "json", token.trim()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"-leading\""), "{out}");
}
