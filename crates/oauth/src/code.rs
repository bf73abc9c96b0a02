//! The authorization-code grant with PKCE (RFC 6749 §4.1, RFC 7636, RFC 9700) and refresh-token
//! rotation:
//!
//! - `GET /oauth2/authorize` checks the client and its exactly registered `redirect_uri` (errors
//!   before that are shown, never redirected), then the request (`response_type=code`, an S256
//!   `code_challenge`, scopes), and renders the login and consent page.
//! - `POST /oauth2/authorize` checks the user's argon2 password and answers 303 to the redirect
//!   URI with a single-use code that expires in 60 s, the `state`, and `iss` (RFC 9207).
//! - The token endpoint redeems a code once, atomically; a second redemption revokes what the
//!   first one issued. Refresh tokens rotate; presenting a rotated one revokes its whole family.
//!
//! Codes and refresh tokens are stored as SHA-256 digests only.

use base64::Engine as _;
use bridgehead_auth::apikey::sha256_hex;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;

use super::{Client, Form, OAuthServer, json_response, new_id, oauth_error};
use bridgehead_http::clock::unix_now;

/// Lifetime of an authorization code.
const CODE_TTL: i64 = 60;

/// An authorization request that passed every check.
struct AuthzRequest {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    scope: Vec<String>,
    challenge: String,
}

/// Either a page to show (unknown client, bad redirect URI) or a redirect carrying the error.
enum AuthzError {
    Page(StatusCode, String),
    Redirect(Box<Response<Bytes>>),
}

impl OAuthServer {
    fn check_authz(&self, p: &Form) -> Result<AuthzRequest, AuthzError> {
        let client = p
            .get("client_id")
            .and_then(|id| self.client(id))
            .ok_or_else(|| AuthzError::Page(StatusCode::BAD_REQUEST, "Unknown client.".into()))?;
        // RFC 6749 §4.1.2.1: with a bad redirect URI, tell the user, never redirect.
        let redirect_uri = p
            .get("redirect_uri")
            .filter(|r| client.redirect_uris.iter().any(|x| x == r))
            .ok_or_else(|| {
                AuthzError::Page(
                    StatusCode::BAD_REQUEST,
                    "The redirect URI is missing or not registered for this client.".into(),
                )
            })?
            .to_owned();
        let state = p.get("state").map(str::to_owned);
        let fail = |error: &str, description: &str| {
            AuthzError::Redirect(Box::new(self.redirect(
                &redirect_uri,
                &[("error", error), ("error_description", description)],
                state.as_deref(),
            )))
        };
        match p.get("response_type") {
            Some("code") => {}
            Some("token") => {
                return Err(fail(
                    "unsupported_response_type",
                    "the implicit flow is not supported (RFC 9700 §2.1.2)",
                ));
            }
            _ => return Err(fail("unsupported_response_type", "response_type must be code")),
        }
        if !client.grants.iter().any(|g| g == "authorization_code") {
            return Err(fail("unauthorized_client", "this client may not use the authorization code grant"));
        }
        let Some(challenge) = p.get("code_challenge") else {
            return Err(fail("invalid_request", "a PKCE code_challenge (S256) is required"));
        };
        if p.get("code_challenge_method") != Some("S256") {
            return Err(fail("invalid_request", "code_challenge_method must be S256"));
        }
        if challenge.len() != 43
            || !challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(fail(
                "invalid_request",
                "code_challenge must be a base64url SHA-256 (43 characters)",
            ));
        }
        let scope = match p.get("scope") {
            None => client.scopes.clone(),
            Some(req) => {
                let req: Vec<String> = req.split_ascii_whitespace().map(str::to_owned).collect();
                if req.iter().any(|r| !client.scopes.contains(r)) {
                    return Err(fail("invalid_scope", "a requested scope is not allowed for this client"));
                }
                req
            }
        };
        Ok(AuthzRequest {
            client_id: client.id.clone(),
            redirect_uri,
            state,
            scope,
            challenge: challenge.to_owned(),
        })
    }

    /// 303 to `uri` with `params`, `state` and `iss` (RFC 9207) added to its query.
    fn redirect(&self, uri: &str, params: &[(&str, &str)], state: Option<&str>) -> Response<Bytes> {
        let issuer = self.settings.load().issuer.clone();
        let mut query: Vec<String> =
            params.iter().map(|(k, v)| format!("{k}={}", bridgehead_http::codec::form_encode(v))).collect();
        if let Some(s) = state {
            query.push(format!("state={}", bridgehead_http::codec::form_encode(s)));
        }
        query.push(format!("iss={}", bridgehead_http::codec::form_encode(&issuer)));
        let sep = if uri.contains('?') { '&' } else { '?' };
        let location = format!("{uri}{sep}{}", query.join("&"));
        let mut res = Response::new(Bytes::new());
        *res.status_mut() = StatusCode::SEE_OTHER;
        if let Ok(v) = HeaderValue::from_str(&location) {
            res.headers_mut().insert(header::LOCATION, v);
        }
        page_headers(res.headers_mut());
        res
    }

    pub(super) fn authorize_get(&self, query: &Form) -> Response<Bytes> {
        match self.check_authz(query) {
            Ok(req) => login_page(&req, None),
            Err(AuthzError::Page(status, msg)) => error_page(status, &msg),
            Err(AuthzError::Redirect(res)) => *res,
        }
    }

    pub(super) async fn authorize_post(&self, form: &Form) -> Response<Bytes> {
        let req = match self.check_authz(form) {
            Ok(r) => r,
            Err(AuthzError::Page(status, msg)) => return error_page(status, &msg),
            Err(AuthzError::Redirect(res)) => return *res,
        };
        if form.get("decision") != Some("approve") {
            return self.redirect(
                &req.redirect_uri,
                &[("error", "access_denied"), ("error_description", "the user declined")],
                req.state.as_deref(),
            );
        }
        let username = form.get("username").unwrap_or("");
        if !self.check_password(username, form.get("password").unwrap_or("")) {
            return login_page(&req, Some("Wrong user name or password."));
        }
        let code = format!("{}{}", new_id(), new_id());
        let rec = bridgehead_state::OAuthCodeRecord {
            code_hash: sha256_hex(&code),
            client_id: req.client_id.clone(),
            redirect_uri: req.redirect_uri.clone(),
            code_challenge: req.challenge.clone(),
            scope: req.scope.clone(),
            subject: username.to_owned(),
            expires_at: unix_now() as i64 + CODE_TTL,
            used_at: None,
            family_id: None,
            access_jtis: Vec::new(),
        };
        if let Err(e) = self.store.oauth_code_insert(&rec).await {
            tracing::error!(error = %e, "cannot store an authorization code");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The authorization could not be stored; try again.",
            );
        }
        self.redirect(&req.redirect_uri, &[("code", &code)], req.state.as_deref())
    }

    /// Checks a user's password against its argon2 PHC string. Unknown users cost the same.
    fn check_password(&self, username: &str, password: &str) -> bool {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let s = self.settings.load();
        let (hash, known) = match s.users.get(username) {
            Some(h) => (h.as_str(), true),
            None => (DUMMY_HASH, false),
        };
        let Ok(parsed) = PasswordHash::new(hash) else { return false };
        let ok = argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
        ok && known
    }

    /// `grant_type=authorization_code`.
    pub(super) async fn grant_code(&self, client: &Client, form: &Form) -> Response<Bytes> {
        if !client.grants.iter().any(|g| g == "authorization_code") {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                "this client may not use the authorization code grant",
            );
        }
        let (Some(code), Some(redirect_uri)) = (form.get("code"), form.get("redirect_uri")) else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "code and redirect_uri are required",
            );
        };
        let Some(verifier) = form.get("code_verifier") else {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "code_verifier is required (PKCE)");
        };
        if !(43..=128).contains(&verifier.len())
            || !verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "code_verifier must be 43 to 128 unreserved characters (RFC 7636 §4.1)",
            );
        }
        let now = unix_now() as i64;
        let code_hash = sha256_hex(code);
        let redemption = match self.store.oauth_code_redeem(&code_hash, now).await {
            Ok(r) => r,
            Err(e) => return self.unavailable(e),
        };
        use bridgehead_state::CodeRedemption::*;
        let rec = match redemption {
            Redeemed(rec) => rec,
            AlreadyUsed(rec) => {
                // RFC 6749 §4.1.2: a replayed code revokes what it was exchanged for.
                if let Some(family) = &rec.family_id {
                    let _ = self.store.oauth_refresh_revoke_family(family, now).await;
                }
                let exp = now + self.settings.load().access_ttl as i64;
                for jti in &rec.access_jtis {
                    if self.store.oauth_revoke_jti(jti, &rec.client_id, exp).await.is_ok() {
                        self.keys.revoked_locally(jti);
                    }
                }
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the code was already used; the tokens issued for it are revoked",
                );
            }
            Expired => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the code has expired"),
            Unknown => return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown code"),
        };
        if rec.client_id != client.id || rec.redirect_uri != redirect_uri {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the code was issued to another client or redirect_uri",
            );
        }
        let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(bridgehead_auth::apikey::sha256(verifier));
        if !bool::from(computed.as_bytes().ct_eq(rec.code_challenge.as_bytes())) {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "code_verifier does not match the code_challenge",
            );
        }
        let family = client.grants.iter().any(|g| g == "refresh_token").then(new_id);
        self.issue(client, &rec.subject, &rec.scope, family, Some(&code_hash)).await
    }

    /// `grant_type=refresh_token`, with rotation.
    pub(super) async fn grant_refresh(&self, client: &Client, form: &Form) -> Response<Bytes> {
        if !client.grants.iter().any(|g| g == "refresh_token") {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                "this client may not use refresh tokens",
            );
        }
        let Some(token) = form.get("refresh_token") else {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "refresh_token is required");
        };
        let now = unix_now() as i64;
        let rotation = match self.store.oauth_refresh_rotate(&sha256_hex(token), &client.id, now).await {
            Ok(r) => r,
            Err(e) => return self.unavailable(e),
        };
        use bridgehead_state::RefreshRotation::*;
        let rec = match rotation {
            Rotated(rec) => rec,
            Reused { family_id } => {
                // RFC 9700 §4.14.2: a rotated token seen again was copied; end the whole family.
                let _ = self.store.oauth_refresh_revoke_family(&family_id, now).await;
                tracing::warn!(client = %client.id, "refresh token reuse detected; the family is revoked");
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "refresh token reuse detected; the token family is revoked",
                );
            }
            Revoked => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the refresh token was revoked",
                );
            }
            Expired => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the refresh token has expired",
                );
            }
            WrongClient | Unknown => {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown refresh token");
            }
        };
        let scope = match form.get("scope") {
            None => rec.scope.clone(),
            Some(req) => {
                let req: Vec<String> = req.split_ascii_whitespace().map(str::to_owned).collect();
                if req.iter().any(|r| !rec.scope.contains(r)) {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        "a refresh cannot widen the granted scope",
                    );
                }
                req
            }
        };
        self.issue(client, &rec.subject, &scope, Some(rec.family_id.clone()), None).await
    }

    /// Issues an access token (and a refresh token in `family`), recording both against `code`.
    pub(super) async fn issue(
        &self,
        client: &Client,
        subject: &str,
        scope: &[String],
        family: Option<String>,
        code: Option<&str>,
    ) -> Response<Bytes> {
        let s = self.settings.load();
        let now = unix_now();
        let jti = new_id();
        let scope = scope.join(" ");
        let claims = json!({
            "iss": s.issuer, "sub": subject, "aud": s.audience, "exp": now + s.access_ttl, "iat": now,
            "jti": jti, "client_id": client.id, "scope": scope,
        });
        let access = match self.keys.sign(&claims) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign an access token");
                return oauth_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "the token could not be signed",
                );
            }
        };
        let mut body = json!({"access_token": access, "token_type": "Bearer", "expires_in": s.access_ttl});
        if !scope.is_empty() {
            body["scope"] = Value::String(scope.clone());
        }
        if let Some(family) = &family {
            let refresh = format!("{}{}", new_id(), new_id());
            let rec = bridgehead_state::OAuthRefreshRecord {
                token_hash: sha256_hex(&refresh),
                family_id: family.clone(),
                client_id: client.id.clone(),
                subject: subject.to_owned(),
                scope: scope.split_ascii_whitespace().map(str::to_owned).collect(),
                expires_at: now as i64 + s.refresh_ttl as i64,
                rotated_at: None,
                revoked_at: None,
            };
            if let Err(e) = self.store.oauth_refresh_insert(&rec).await {
                return self.unavailable(e);
            }
            body["refresh_token"] = Value::String(refresh);
        }
        if let Some(code) = code
            && let Err(e) = self.store.oauth_code_attach(code, family.as_deref(), &jti).await
        {
            tracing::warn!(error = %e, "cannot record what a code was exchanged for");
        }
        json_response(StatusCode::OK, &body, &[])
    }

    fn unavailable(&self, e: bridgehead_state::StateError) -> Response<Bytes> {
        tracing::error!(error = %e, "the authorization server cannot reach its state");
        oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again later")
    }
}

/// A valid argon2id hash of a random password, checked for unknown users so that they take as
/// long as known ones.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Zb4dFuQ2sTQ6Z3Nn7cTgkXh5Bzl8Tq2c9Hk4nHq0u2A";

fn page_headers(h: &mut http::HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

fn html_response(status: StatusCode, body: String) -> Response<Bytes> {
    let mut res = Response::new(Bytes::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    page_headers(res.headers_mut());
    res
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn error_page(status: StatusCode, message: &str) -> Response<Bytes> {
    html_response(
        status,
        format!(
            "<!doctype html><meta charset=utf-8><title>Authorization error</title><h1>Authorization error</h1><p>{}</p>",
            esc(message)
        ),
    )
}

fn login_page(req: &AuthzRequest, error: Option<&str>) -> Response<Bytes> {
    let hidden = |k: &str, v: &str| format!("<input type=hidden name=\"{}\" value=\"{}\">", esc(k), esc(v));
    let mut fields = vec![
        hidden("response_type", "code"),
        hidden("client_id", &req.client_id),
        hidden("redirect_uri", &req.redirect_uri),
        hidden("scope", &req.scope.join(" ")),
        hidden("code_challenge", &req.challenge),
        hidden("code_challenge_method", "S256"),
    ];
    if let Some(s) = &req.state {
        fields.push(hidden("state", s));
    }
    let scopes: String = req.scope.iter().map(|s| format!("<li>{}</li>", esc(s))).collect();
    let error =
        error.map(|e| format!("<p role=alert style=\"color:#b00\">{}</p>", esc(e))).unwrap_or_default();
    html_response(
        StatusCode::OK,
        format!(
            "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\"><title>Sign in</title>\
<body style=\"font-family:sans-serif;max-width:28em;margin:3em auto\"><h1>Sign in</h1>\
<p><b>{client}</b> asks for access:</p><ul>{scopes}</ul>{error}\
<form method=post action=\"/oauth2/authorize\">{fields}\
<p><label>User name <input name=username autocomplete=username required></label></p>\
<p><label>Password <input name=password type=password autocomplete=current-password required></label></p>\
<p><button name=decision value=approve>Allow</button> <button name=decision value=deny formnovalidate>Deny</button></p></form>",
            client = esc(&req.client_id),
            fields = fields.join(""),
        ),
    )
}
