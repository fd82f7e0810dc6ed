use super::*;

fn now() -> Timestamp {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

fn jwt(claims: &str) -> String {
    let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!("{}.{}.sig", e(r#"{"alg":"RS256"}"#), e(claims))
}

#[test]
fn expiry_from_expires_in_then_jwt_then_default() {
    let d = Duration::from_secs(3600);
    let t = parse_tokens(
        br#"{"access_token":"a","token_type":"Bearer","expires_in":30}"#,
        d,
        now(),
    )
    .unwrap();
    assert_eq!(t.expires_at.to_string(), "2030-01-01T00:00:30Z");
    let t = parse_tokens(br#"{"access_token":"a","expires_in":"45"}"#, d, now()).unwrap();
    assert_eq!(t.expires_at.to_string(), "2030-01-01T00:00:45Z");
    let token = jwt(r#"{"sub":"x","exp":1893456100}"#);
    let body = format!(r#"{{"access_token":"{token}","token_type":"bearer"}}"#);
    let t = parse_tokens(body.as_bytes(), d, now()).unwrap();
    assert_eq!(t.expires_at.as_second(), 1_893_456_100);
    let t = parse_tokens(br#"{"access_token":"opaque"}"#, d, now()).unwrap();
    assert_eq!(t.expires_at.to_string(), "2030-01-01T01:00:00Z");
    assert!(t.refresh_token.is_none());
}

#[test]
fn malformed_responses_are_errors_without_content() {
    let d = Duration::from_secs(60);
    for body in [
        &b"not json SECRETX"[..],
        br#"{"token":"SECRETX"}"#,
        br#"{"access_token":"SECRET X"}"#,
    ] {
        let e = parse_tokens(body, d, now()).unwrap_err();
        assert!(!e.to_string().contains("SECRET"), "{e}");
    }
    let e = parse_tokens(br#"{"access_token":"a","token_type":"mac"}"#, d, now()).unwrap_err();
    assert!(
        matches!(
            e,
            TokenError::Unusable {
                refresh_token: None,
                ..
            }
        ),
        "{e:?}"
    );
    // serde quotes a wrong-typed value; the error must not.
    let e = parse_tokens(br#"{"access_token":123456789}"#, d, now()).unwrap_err();
    assert!(!e.to_string().contains("123456789"), "{e}");
    assert!(e.to_string().contains("wrong type"), "{e}");
}

/// A rotated refresh token in an otherwise unusable 2xx answer is handed
/// back to be committed: replaying the old one would revoke the grant.
#[test]
fn a_valid_refresh_token_survives_an_unusable_answer() {
    let d = Duration::from_secs(60);
    let huge = "A".repeat(MAX_TOKEN + 1);
    for body in [
        r#"{"access_token":"has space","refresh_token":"rt-NEW"}"#.to_owned(),
        r#"{"access_token":"a","token_type":"mac","refresh_token":"rt-NEW"}"#.to_owned(),
        format!(r#"{{"access_token":"{huge}","refresh_token":"rt-NEW"}}"#),
    ] {
        let e = parse_tokens(body.as_bytes(), d, now()).unwrap_err();
        let TokenError::Unusable {
            refresh_token: Some(rt),
            reason,
        } = &e
        else {
            panic!("{e:?}");
        };
        assert_eq!(rt.expose_secret(), "rt-NEW");
        assert!(
            !reason.contains("has space") && !reason.contains("AAAA"),
            "{reason}"
        );
    }
    let e = parse_tokens(
        format!(r#"{{"access_token":"{huge}"}}"#).as_bytes(),
        d,
        now(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("over the 16 KiB limit"), "{e}");
}

#[test]
fn odd_but_usable_answers() {
    let d = Duration::from_secs(3600);
    // An empty refresh token is none, not a reason to refuse the answer.
    let t = parse_tokens(br#"{"access_token":"a","refresh_token":""}"#, d, now()).unwrap();
    assert!(t.refresh_token.is_none());
    // A negative lifetime is expired on arrival, not the default hour.
    let t = parse_tokens(br#"{"access_token":"a","expires_in":-100}"#, d, now()).unwrap();
    assert_eq!(t.expires_at, now());
}

#[test]
fn jwt_claims_are_read_unverified_and_garbage_is_none() {
    assert_eq!(jwt_expiry(&jwt(r#"{"exp":100}"#)).unwrap().as_second(), 100);
    assert_eq!(
        jwt_expiry(&jwt(r#"{"exp":1.5e2}"#)).unwrap().as_second(),
        150
    );
    for bad in [
        "",
        "a.b",
        "a.b.c.d",
        "a.!!!.c",
        &jwt("[1]"),
        &jwt(r#"{"exp":"soon"}"#),
    ] {
        assert_eq!(jwt_expiry(bad), None, "{bad}");
    }
}

#[test]
fn errors_are_classified() {
    let e = classify_error(
        400,
        br#"{"error":"invalid_grant","error_description":"grant request is invalid\n"}"#,
        None,
    );
    assert!(e.is_invalid_grant());
    assert_eq!(e.to_string(), "invalid_grant: grant request is invalid");
    let e = classify_error(401, br#"{"error":"invalid_client"}"#, None);
    assert!(matches!(e, TokenError::Permanent { ref code, .. } if code == "invalid_client"));
    assert!(matches!(
        classify_error(401, b"", None),
        TokenError::Permanent { .. }
    ));
    let e = classify_error(503, b"<html>", Some(Duration::from_secs(7)));
    assert!(matches!(e, TokenError::Transient { retry_after: Some(d), .. } if d.as_secs() == 7));
    assert!(matches!(
        classify_error(429, br#"{"error":"slow_down"}"#, None),
        TokenError::Transient { .. }
    ));
    assert!(matches!(
        classify_error(500, br#"{"error":"invalid_grant"}"#, None),
        TokenError::Transient { .. }
    ));
}

#[test]
fn retry_after_forms() {
    assert_eq!(
        parse_retry_after("120", now()),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        parse_retry_after("Tue, 01 Jan 2030 00:00:30 GMT", now()),
        Some(Duration::from_secs(30))
    );
    assert_eq!(parse_retry_after("soon", now()), None);
}

#[test]
fn basic_auth_parts_are_form_encoded() {
    assert_eq!(form_urlencode("a b:c/d"), "a+b%3Ac%2Fd");
    assert_eq!(fingerprint("abc").len(), 16);
}

/// Discovery metadata for another issuer, or with endpoints off https,
/// used to be taken as it came (and the authorization endpoint handed to
/// the browser opener).
#[test]
fn discovery_metadata_must_belong_to_the_issuer_and_use_https() {
    let doc = |issuer: &str, token: &str, auth: &str| Metadata {
        issuer: Some(issuer.into()),
        token_endpoint: token.into(),
        authorization_endpoint: Some(auth.into()),
        revocation_endpoint: None,
        code_challenge_methods_supported: vec![],
        token_endpoint_auth_methods_supported: vec![],
    };
    let issuer = "https://as.example/";
    assert!(
        check_metadata(
            doc(
                "https://as.example",
                "https://as.example/t",
                "https://as.example/a"
            ),
            issuer
        )
        .is_ok()
    );
    assert!(
        check_metadata(
            doc(
                "http://127.0.0.1:9",
                "http://127.0.0.1:9/t",
                "http://[::1]:9/a"
            ),
            "http://127.0.0.1:9"
        )
        .is_ok()
    );
    for (m, what) in [
        (
            doc(
                "https://evil.example",
                "https://as.example/t",
                "https://as.example/a",
            ),
            "another issuer",
        ),
        (
            doc(issuer, "http://as.example/t", "https://as.example/a"),
            "token_endpoint",
        ),
        (
            doc(issuer, "https://as.example/t", "file:///etc/passwd"),
            "authorization_endpoint",
        ),
        (
            doc(issuer, "https://as.example/t", "javascript:alert(1)"),
            "authorization_endpoint",
        ),
    ] {
        let e = check_metadata(m, issuer).unwrap_err();
        assert!(matches!(e, TokenError::Permanent { .. }), "{e:?}");
        assert!(e.to_string().contains(what), "{e}");
    }
}
