//! The admin paths under `/__mock/`: never recorded, counted, delayed, limited or failed.

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize as _;
use serde_json::{Map, Value};

use crate::body::{MockBody, ReceivedBody, read_bounded};
use crate::faults::Faults;
use crate::options::InvalidOptions;
use crate::problem::Rejection;
use crate::service::Shared;

/// Every path under this prefix is an admin path, known or not.
pub(crate) const PREFIX: &str = "/__mock/";
/// The recording: GET lists it, DELETE clears it.
const REQUESTS: &str = "/__mock/requests";
/// The faults in force: GET shows them, PUT replaces them, DELETE resets them to none.
const FAULTS: &str = "/__mock/faults";
/// The largest `PUT /__mock/faults` body; a real one is a hundred bytes.
const FAULTS_BODY: usize = 64 * 1024;

pub(crate) async fn handle(
    shared: &Shared,
    request: Request<Incoming>,
) -> Result<Response<MockBody>, hyper::Error> {
    let (parts, body) = request.into_parts();
    Ok(match (parts.uri.path(), &parts.method) {
        (REQUESTS, &Method::GET) => json(StatusCode::OK, &shared.recorder.snapshot()),
        (REQUESTS, &Method::DELETE) => {
            shared.recorder.clear();
            no_content()
        }
        (REQUESTS, _) => Rejection::AdminMethod {
            path: REQUESTS,
            methods: "GET (list) and DELETE (clear)",
            allow: "GET, DELETE",
        }
        .into_response(),
        (FAULTS, &Method::GET) => json(StatusCode::OK, &shared.faults.load().faults),
        (FAULTS, &Method::PUT) => {
            let body = read_bounded(body, FAULTS_BODY).await?;
            match parse_faults(&body) {
                Ok(faults) => {
                    let shown = json(StatusCode::OK, &faults);
                    shared.faults.set(faults).expect("parse_faults validated the faults");
                    shown
                }
                Err(rejection) => rejection.into_response(),
            }
        }
        (FAULTS, &Method::DELETE) => {
            shared.faults.set(Faults::default()).expect("no faults are valid faults");
            no_content()
        }
        (FAULTS, _) => Rejection::AdminMethod {
            path: FAULTS,
            methods: "GET (show), PUT (replace) and DELETE (reset)",
            allow: "GET, PUT, DELETE",
        }
        .into_response(),
        (path, _) => Rejection::NoSuchAdminPath(path.to_owned()).into_response(),
    })
}

/// A `PUT /__mock/faults` body into valid [`Faults`], or a rejection naming the bad field.
fn parse_faults(body: &ReceivedBody) -> Result<Faults, Rejection> {
    let whole = |detail: String| Rejection::BadFaults { field: None, detail };
    let example = r#"e.g. {"fail_first":3,"retry_after":2}; DELETE resets to no faults"#;
    if body.len > FAULTS_BODY as u64 {
        return Err(whole(format!("the body is over {} KiB", FAULTS_BODY / 1024)));
    }
    let value: Value = match serde_json::from_slice(&body.head) {
        Ok(value) => value,
        Err(_) if body.head.iter().all(u8::is_ascii_whitespace) => {
            return Err(whole(format!("the body is empty; it must be a JSON object, {example}")));
        }
        Err(error) => return Err(whole(format!("the body is not JSON ({error}); {example}"))),
    };
    let Value::Object(fields) = &value else {
        return Err(whole(format!("the body must be a JSON object, {example}")));
    };
    let faults = Faults::deserialize(&value).map_err(|error| {
        // Deserialize field by field to name the culprit; serde's message alone may not.
        let culprit = fields.iter().find_map(|(name, value)| {
            let alone = Value::Object(Map::from_iter([(name.clone(), value.clone())]));
            Faults::deserialize(&alone).err().map(|error| (name, error))
        });
        match culprit {
            Some((name, error)) => {
                Rejection::BadFaults { field: Some(name.clone()), detail: format!("{name}: {error}") }
            }
            None => whole(error.to_string()),
        }
    })?;
    faults.validate().map_err(|error| {
        let field = match error {
            InvalidOptions::FailRate(_) => "fail_rate",
            InvalidOptions::FailStatus(_) => "fail_status",
        };
        Rejection::BadFaults { field: Some(field.into()), detail: error.to_string() }
    })?;
    Ok(faults)
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<MockBody> {
    let json = serde_json::to_vec(value).expect("admin answers serialize");
    let mut response = Response::new(MockBody::full(json));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn no_content() -> Response<MockBody> {
    let mut response = Response::new(MockBody::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Faults, Rejection> {
        parse_faults(&ReceivedBody { head: body.as_bytes().to_vec(), len: body.len() as u64 })
    }

    fn refused(body: &str) -> (Option<String>, String) {
        match parse(body) {
            Err(Rejection::BadFaults { field, detail }) => (field, detail),
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn parses_partial_bodies() {
        assert_eq!(parse("{}").unwrap(), Faults::default());
        let faults = parse(r#"{"fail_first":3,"latency":"100ms","retry_after":null}"#).unwrap();
        assert_eq!(faults.fail_first, 3);
        assert_eq!(faults.latency, Some(std::time::Duration::from_millis(100)));
        assert_eq!((faults.fail_rate, faults.fail_status, faults.retry_after), (0.0, 503, None));
    }

    #[test]
    fn names_the_bad_field() {
        for (body, field, needle) in [
            (r#"{"fail_rate":1.5}"#, "fail_rate", "fail_rate 1.5 is not between 0.0 and 1.0"),
            (r#"{"fail_rate":"often"}"#, "fail_rate", "fail_rate: invalid type: string"),
            (r#"{"fail_status":99}"#, "fail_status", "fail_status 99 is not a status code"),
            (r#"{"fail_status":70000}"#, "fail_status", "fail_status: invalid value"),
            (r#"{"fail_first":3,"retry_after":-1}"#, "retry_after", "retry_after: invalid value"),
            (r#"{"fail_first":-3}"#, "fail_first", "fail_first: invalid value"),
            (r#"{"latency":"soon"}"#, "latency", "latency: \"soon\" is not a duration"),
            (r#"{"rate_limit":"5/d"}"#, "rate_limit", "rate_limit: \"5/d\" is not a quota"),
            (r#"{"fail_rates":0.5}"#, "fail_rates", "fail_rates: unknown field `fail_rates`"),
        ] {
            let (named, detail) = refused(body);
            assert_eq!(named.as_deref(), Some(field), "{body}: {detail}");
            assert!(detail.starts_with(needle), "{body}: {detail:?} should start with {needle:?}");
        }
    }

    #[test]
    fn refuses_bodies_that_are_not_an_object() {
        for (body, needle) in [
            ("", "the body is empty"),
            ("{", "the body is not JSON"),
            ("[1]", "the body must be a JSON object"),
            ("null", "the body must be a JSON object"),
        ] {
            let (field, detail) = refused(body);
            assert_eq!(field, None, "{body}");
            assert!(detail.starts_with(needle), "{body}: {detail}");
        }
        let huge = ReceivedBody { head: vec![b' '; FAULTS_BODY], len: FAULTS_BODY as u64 + 1 };
        assert!(matches!(parse_faults(&huge), Err(Rejection::BadFaults { field: None, .. })));
    }
}
