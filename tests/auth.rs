//! Policy-server authentication (UAA check_token, local JWT verification, static tokens), the
//! `auth` config section, and the HTTP Cloud Controller client, against a fake UAA + CC that speak
//! the real wire formats.

mod support;
use support::fake_cf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fake_cf::{FakeCf, CLIENT_ID, CLIENT_SECRET};
use netman::config::Validate;
use netman::policy::auth::jwt::{JwtAuthenticator, JwtConfig};
use netman::policy::auth::tokens::StaticTokens;
use netman::policy::auth::uaa::{ClientCredentials, UaaAuthenticator, UaaClientConfig};
use netman::policy::auth::{self, AuthConfig, AuthMode, Authenticator, Identity};
use netman::policy::cc::{CcConfig, CloudController, HttpCloudController};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn uaa_config(fake: &FakeCf) -> UaaClientConfig {
    UaaClientConfig {
        url: fake.url.clone(),
        client: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        ca_cert_file: fake.ca_cert_file.as_ref().map(|p| p.display().to_string()),
        skip_ssl_validation: false,
        timeout: Duration::from_secs(5),
    }
}

fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

// ---- UAA check_token ------------------------------------------------------------------------

#[test]
fn uaa_check_token_success_sends_the_original_request() {
    let fake = FakeCf::start();
    let token = "eyJ+odd/token=";
    fake.add_user(token, "user-sub-1", "alice", &["network.write", "openid"]);
    let uaa = UaaAuthenticator::new(&uaa_config(&fake)).unwrap();
    let who = uaa.authenticate(token).unwrap();
    assert_eq!(
        who,
        Identity {
            subject: "user-sub-1".into(),
            user_name: "alice".into(),
            scopes: vec!["network.write".into(), "openid".into()],
        }
    );
    let reqs = fake.requests_to("/check_token");
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(r.body, "token=eyJ%2Bodd%2Ftoken%3D");
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    assert_eq!(r.authorization.as_deref(), Some(expected.as_str()));
}

#[test]
fn uaa_check_token_failures_are_errors_with_context() {
    let fake = FakeCf::start();
    fake.add_user("good", "sub", "bob", &["network.admin"]);
    let uaa = UaaAuthenticator::new(&uaa_config(&fake)).unwrap();

    let err = uaa.authenticate("unknown").unwrap_err().0;
    assert!(
        err.contains("status 400") && err.contains("invalid_token"),
        "{err}"
    );

    let mut bad_client = uaa_config(&fake);
    bad_client.client_secret = "wrong".into();
    let err = UaaAuthenticator::new(&bad_client)
        .unwrap()
        .authenticate("good")
        .unwrap_err()
        .0;
    assert!(err.contains("status 401"), "{err}");

    fake.set_failing(true);
    let err = uaa.authenticate("good").unwrap_err().0;
    assert!(err.contains("status 500"), "{err}");
    fake.set_failing(false);
    assert!(uaa.authenticate("good").unwrap().is_admin());

    let mut down = uaa_config(&fake);
    down.url = closed_port_url();
    let err = UaaAuthenticator::new(&down)
        .unwrap()
        .authenticate("good")
        .unwrap_err()
        .0;
    assert!(err.contains("check_token"), "{err}");
}

#[test]
fn uaa_check_token_falls_back_to_user_id_and_rejects_non_json() {
    // A UAA answer without `sub` uses `user_id` (netman-era); garbage is an error.
    let server = netman::http::Server::start(
        "127.0.0.1:0",
        Default::default(),
        |req: &netman::http::Request| {
            if req.body == b"token=old" {
                netman::http::Response::json(
                    200,
                    &json!({"user_id": "uid-7", "scope": ["network.admin"]}),
                )
            } else {
                netman::http::Response::text(200, "not json")
            }
        },
    )
    .unwrap();
    let mut config = UaaClientConfig {
        url: format!("http://{}", server.local_addr()),
        client: "c".into(),
        client_secret: "s".into(),
        ca_cert_file: None,
        skip_ssl_validation: false,
        timeout: Duration::from_secs(5),
    };
    let uaa = UaaAuthenticator::new(&config).unwrap();
    let who = uaa.authenticate("old").unwrap();
    assert_eq!(who.subject, "uid-7");
    assert_eq!(who.user_name, "");
    let err = uaa.authenticate("other").unwrap_err().0;
    assert!(err.contains("bad response body"), "{err}");
    config.ca_cert_file = Some("/nonexistent/ca.pem".into());
    assert!(UaaAuthenticator::new(&config)
        .err()
        .unwrap()
        .contains("/nonexistent/ca.pem"));
    drop(uaa); // closes its keep-alive connection, so the shutdown does not wait for it
    server.shutdown();
}

#[test]
fn uaa_over_tls_needs_the_ca_or_skip_ssl_validation() {
    let fake = FakeCf::start_tls();
    fake.add_user("tok", "sub", "carol", &["network.write"]);
    let config = uaa_config(&fake);
    assert_eq!(
        UaaAuthenticator::new(&config)
            .unwrap()
            .authenticate("tok")
            .unwrap()
            .user_name,
        "carol"
    );
    let mut no_ca = config.clone();
    no_ca.ca_cert_file = None;
    let err = UaaAuthenticator::new(&no_ca)
        .unwrap()
        .authenticate("tok")
        .unwrap_err()
        .0;
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("tls"),
        "{err}"
    );
    no_ca.skip_ssl_validation = true;
    assert!(UaaAuthenticator::new(&no_ca)
        .unwrap()
        .authenticate("tok")
        .is_ok());
}

// ---- static tokens --------------------------------------------------------------------------

#[test]
fn static_tokens_map_tokens_to_identities() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    std::fs::write(
        &path,
        json!({
            "admin-token": {"subject": "admin-id", "user_name": "admin", "scopes": ["network.admin"]},
            "dev-token": {"subject": "dev-id", "scopes": ["network.write"]},
        })
        .to_string(),
    )
    .unwrap();
    let tokens = StaticTokens::load(&path).unwrap();
    assert_eq!(tokens.len(), 2);
    let admin = tokens.authenticate("admin-token").unwrap();
    assert!(admin.is_admin());
    assert_eq!(admin.user_name, "admin");
    let dev = tokens.authenticate("dev-token").unwrap();
    assert_eq!(
        (dev.subject.as_str(), dev.user_name.as_str()),
        ("dev-id", "")
    );
    assert!(!dev.is_admin());
    assert!(tokens.authenticate("admin-toke").is_err());
    assert!(tokens.authenticate("").is_err());

    // The same file through the config section.
    let built = auth::build(&AuthConfig::tokens(&path)).unwrap();
    assert_eq!(built.authenticate("dev-token").unwrap(), dev);
}

#[test]
fn bad_tokens_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("{", "EOF"),
        ("{}", "no tokens defined"),
        (
            r#"{"t": {"subject": "s", "scope": []}}"#,
            "unknown field `scope`",
        ),
        (r#"{"t": {"subject": ""}}"#, "empty subject"),
        (r#"{"": {"subject": "s"}}"#, "empty or contains whitespace"),
        (
            r#"{"a b": {"subject": "s"}}"#,
            "empty or contains whitespace",
        ),
        (r#"{"t": {"user_name": "x"}}"#, "missing field `subject`"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("t{i}.json"));
        std::fs::write(&path, text).unwrap();
        let err = StaticTokens::load(&path).err().unwrap();
        assert!(err.contains(want), "{text}: {err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        let err = auth::build(&AuthConfig::tokens(&path)).err().unwrap();
        assert!(err.contains("auth.tokens_file"), "{err}");
    }
    let err = StaticTokens::load(&dir.path().join("missing.json"))
        .err()
        .unwrap();
    assert!(err.contains("missing.json"), "{err}");
}

#[test]
fn tokens_mode_is_refused_off_loopback_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    std::fs::write(&path, r#"{"t": {"subject": "s"}}"#).unwrap();
    let mut config = AuthConfig::tokens(&path);
    config.check_listen_host("127.0.0.1").unwrap();
    config.check_listen_host("::1").unwrap();
    let err = config.check_listen_host("0.0.0.0").unwrap_err();
    assert!(
        err.contains("allow_non_loopback") && err.contains("0.0.0.0"),
        "{err}"
    );
    assert!(config.check_listen_host("10.1.2.3").is_err());
    config.allow_non_loopback = true;
    config.check_listen_host("0.0.0.0").unwrap();
    // Other modes do not care.
    let uaa: AuthConfig = serde_json::from_value(json!({
        "mode": "uaa", "uaa_url": "https://uaa", "uaa_client": "c", "uaa_client_secret": "s"
    }))
    .unwrap();
    uaa.check_listen_host("0.0.0.0").unwrap();
}

// ---- the auth config section ----------------------------------------------------------------

fn parse(v: Value) -> Result<AuthConfig, String> {
    let c: AuthConfig = serde_json::from_value(v).map_err(|e| e.to_string())?;
    c.validate()?;
    Ok(c)
}

#[test]
fn auth_config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.json");
    std::fs::write(&tokens, r#"{"t": {"subject": "s"}}"#).unwrap();
    let t = tokens.display().to_string();
    let cases = [
        (json!({"mode": "ldap"}), "unknown variant `ldap`"),
        (json!({"tokens_file": t}), "missing field `mode`"),
        (
            json!({"mode": "tokens", "tokens_fil": t}),
            "unknown field `tokens_fil`",
        ),
        (json!({"mode": "tokens"}), "'auth.tokens_file'"),
        (
            json!({"mode": "tokens", "tokens_file": "/nope.json"}),
            "'auth.tokens_file'",
        ),
        (
            json!({"mode": "uaa", "uaa_client": "c", "uaa_client_secret": "s"}),
            "'auth.uaa_url'",
        ),
        (
            json!({"mode": "uaa", "uaa_url": "uaa:8443", "uaa_client": "c", "uaa_client_secret": "s"}),
            "'auth.uaa_url'",
        ),
        (
            json!({"mode": "uaa", "uaa_url": "https://u", "uaa_client_secret": "s"}),
            "'auth.uaa_client'",
        ),
        (
            json!({"mode": "uaa", "uaa_url": "https://u", "uaa_client": "c"}),
            "'auth.uaa_client_secret'",
        ),
        (
            json!({"mode": "uaa", "uaa_url": "https://u", "uaa_client": "c", "uaa_client_secret": "s", "uaa_ca_cert_file": "/nope.crt"}),
            "'auth.uaa_ca_cert_file'",
        ),
        (
            json!({"mode": "uaa", "uaa_url": "https://u", "uaa_client": "c", "uaa_client_secret": "s", "request_timeout_seconds": 0}),
            "'auth.request_timeout_seconds'",
        ),
        (
            json!({"mode": "jwt", "jwt_issuer": "i"}),
            "'auth.jwt_public_key_files' or 'auth.jwt_jwks_file'",
        ),
        (
            json!({"mode": "jwt", "jwt_jwks_file": "/nope.json", "jwt_issuer": "i"}),
            "'auth.jwt_jwks_file'",
        ),
        (
            json!({"mode": "jwt", "jwt_jwks_file": t}),
            "'auth.jwt_issuer'",
        ),
        (
            json!({"mode": "tokens", "tokens_file": t, "jwt_issuer": "i"}),
            "'auth.jwt_issuer' belongs to auth mode 'jwt'",
        ),
        (
            json!({"mode": "jwt", "jwt_jwks_file": t, "jwt_issuer": "i", "tokens_file": t}),
            "'auth.tokens_file' belongs to auth mode 'tokens'",
        ),
    ];
    for (v, want) in cases {
        let err = parse(v.clone())
            .err()
            .unwrap_or_else(|| panic!("{v} accepted"));
        assert!(err.contains(want), "{v}: {err}");
    }
    let ok = parse(json!({"mode": "tokens", "tokens_file": t})).unwrap();
    assert_eq!(ok.mode, AuthMode::Tokens);
    // A JWKS file that is not one is caught when building.
    let err =
        auth::build(&parse(json!({"mode": "jwt", "jwt_jwks_file": t, "jwt_issuer": "i"})).unwrap())
            .err()
            .unwrap();
    assert!(
        err.contains("auth (jwt)") && err.contains("JWKS file"),
        "{err}"
    );
}

#[test]
fn auth_config_builds_a_uaa_authenticator_with_port() {
    let fake = FakeCf::start();
    fake.add_user("tok", "s-1", "dave", &["network.admin"]);
    let (host, port) = fake.url.rsplit_once(':').unwrap();
    let config = parse(json!({
        "mode": "uaa", "uaa_url": host, "uaa_port": port.parse::<u16>().unwrap(),
        "uaa_client": CLIENT_ID, "uaa_client_secret": CLIENT_SECRET
    }))
    .unwrap();
    let who = auth::build(&config).unwrap().authenticate("tok").unwrap();
    assert_eq!(who.subject, "s-1");
    assert_eq!(config.uaa_client_config().unwrap().url, fake.url);
}

// ---- JWT ------------------------------------------------------------------------------------

struct Keys {
    dir: tempfile::TempDir,
    rsa: RsaKeyPair,
    rsa_pub: PathBuf,
    rsa_n: Vec<u8>,
    other_rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
    ec_pub: PathBuf,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn genkey(dir: &Path, name: &str, args: &[&str]) -> (Vec<u8>, PathBuf) {
    let key = dir.join(format!("{name}.pem"));
    let der = dir.join(format!("{name}.der"));
    let public = dir.join(format!("{name}.pub.pem"));
    let mut gen = vec!["genpkey", "-out", key.to_str().unwrap()];
    gen.extend_from_slice(args);
    openssl(&gen);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        key.to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        der.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (std::fs::read(&der).unwrap(), public)
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let rsa_args = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];
    let (rsa_der, rsa_pub) = genkey(dir.path(), "rsa", &rsa_args);
    let (other_der, _) = genkey(dir.path(), "other", &rsa_args);
    let (ec_der, ec_pub) = genkey(
        dir.path(),
        "ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let modulus = String::from_utf8(openssl(&[
        "pkey",
        "-pubin",
        "-in",
        rsa_pub.to_str().unwrap(),
        "-noout",
        "-text",
    ]))
    .unwrap();
    // "Modulus:\n    00:c4:...\nExponent: 65537 (0x10001)"
    let hex: String = modulus
        .split("Modulus:")
        .nth(1)
        .unwrap()
        .split("Exponent")
        .next()
        .unwrap()
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect();
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .skip_while(|b| *b == 0)
        .collect();
    assert_eq!(n.len(), 256);
    Keys {
        rsa: RsaKeyPair::from_pkcs8(&rsa_der).unwrap(),
        other_rsa: RsaKeyPair::from_pkcs8(&other_der).unwrap(),
        ec: EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &ec_der,
            &SystemRandom::new(),
        )
        .unwrap(),
        rsa_pub,
        rsa_n: n,
        ec_pub,
        dir,
    }
}

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

fn sign_rs256(key: &RsaKeyPair, header: &Value, claims: &Value) -> String {
    let input = signing_input(header, claims);
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", b64(&sig))
}

fn sign_es256(key: &EcdsaKeyPair, header: &Value, claims: &Value) -> String {
    let input = signing_input(header, claims);
    let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    format!("{input}.{}", b64(sig.as_ref()))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const ISSUER: &str = "https://uaa.example.com/oauth/token";

fn claims() -> Value {
    json!({
        "sub": "user-1", "user_name": "erin", "iss": ISSUER,
        "aud": ["network", "openid"], "exp": now() + 600, "iat": now(),
        "scope": ["network.write", "openid"]
    })
}

fn jwt_config(keys: &Keys, audience: Option<&str>) -> JwtConfig {
    JwtConfig {
        public_key_files: vec![
            keys.rsa_pub.display().to_string(),
            keys.ec_pub.display().to_string(),
        ],
        jwks_file: None,
        issuer: ISSUER.into(),
        audience: audience.map(str::to_string),
    }
}

#[test]
fn jwt_rs256_and_es256_verify_against_pem_keys() {
    let keys = keys();
    let jwt = JwtAuthenticator::new(&jwt_config(&keys, Some("network"))).unwrap();
    assert_eq!(jwt.key_count(), 2);
    let rs = sign_rs256(&keys.rsa, &json!({"alg": "RS256", "typ": "JWT"}), &claims());
    let who = jwt.authenticate(&rs).unwrap();
    assert_eq!(
        who,
        Identity {
            subject: "user-1".into(),
            user_name: "erin".into(),
            scopes: vec!["network.write".into(), "openid".into()],
        }
    );
    // ES256, scope as a space-separated string, aud as a string, user_id without sub.
    let mut c = claims();
    c["scope"] = json!("network.admin openid");
    c["aud"] = json!("network");
    c.as_object_mut().unwrap().remove("sub");
    c["user_id"] = json!("uid-9");
    let es = sign_es256(&keys.ec, &json!({"alg": "ES256"}), &c);
    let who = jwt.authenticate(&es).unwrap();
    assert!(who.is_admin());
    assert_eq!(who.subject, "uid-9");
    assert_eq!(who.scopes, vec!["network.admin", "openid"]);

    // The same through the config section.
    let config = parse(json!({
        "mode": "jwt",
        "jwt_public_key_files": [keys.rsa_pub, keys.ec_pub],
        "jwt_issuer": ISSUER, "jwt_audience": "network"
    }))
    .unwrap();
    assert_eq!(
        auth::build(&config)
            .unwrap()
            .authenticate(&rs)
            .unwrap()
            .subject,
        "user-1"
    );
}

#[test]
fn jwt_refuses_every_kind_of_bad_token() {
    let keys = keys();
    let jwt = JwtAuthenticator::new(&jwt_config(&keys, Some("network"))).unwrap();
    let rs = json!({"alg": "RS256"});
    let good = sign_rs256(&keys.rsa, &rs, &claims());
    jwt.authenticate(&good).unwrap();

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        sign_rs256(&keys.rsa, &rs, &c)
    };
    let (h, c, s) = {
        let p: Vec<&str> = good.split('.').collect();
        (p[0].to_string(), p[1].to_string(), p[2].to_string())
    };
    let mut tampered_claims = claims();
    tampered_claims["scope"] = json!(["network.admin"]);
    let tampered = format!("{h}.{}.{s}", b64(tampered_claims.to_string().as_bytes()));
    // alg none, and HS256 keyed with the public key (algorithm confusion).
    let none = format!("{}.{c}.", b64(br#"{"alg":"none"}"#));
    let hs_header = b64(br#"{"alg":"HS256"}"#);
    let hs_key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &std::fs::read(&keys.rsa_pub).unwrap(),
    );
    let hs_sig = ring::hmac::sign(&hs_key, format!("{hs_header}.{c}").as_bytes());
    let hs = format!("{hs_header}.{c}.{}", b64(hs_sig.as_ref()));

    let cases: Vec<(String, &str)> = vec![
        (with(&|c| c["exp"] = json!(now() - 120)), "expired"),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "no exp",
        ),
        (with(&|c| c["exp"] = json!("soon")), "exp is not a number"),
        (with(&|c| c["nbf"] = json!(now() + 600)), "not valid yet"),
        (
            with(&|c| c["iss"] = json!("https://evil.example.com")),
            "issuer",
        ),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
            "no iss",
        ),
        (
            with(&|c| c["aud"] = json!(["cloud_controller"])),
            "audience",
        ),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            "audience",
        ),
        (
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
            "no sub",
        ),
        (with(&|c| c["scope"] = json!(7)), "scope"),
        (with(&|c| c["scope"] = json!(["a", 1])), "scope"),
        (tampered, "bad signature"),
        (sign_rs256(&keys.other_rsa, &rs, &claims()), "bad signature"),
        (none, "\"none\" is not accepted"),
        (hs, "\"HS256\" is not accepted"),
        (
            sign_rs256(&keys.rsa, &json!({"typ": "JWT"}), &claims()),
            "no alg",
        ),
        (
            sign_rs256(
                &keys.rsa,
                &json!({"alg": "RS256", "crit": ["exp"]}),
                &claims(),
            ),
            "critical",
        ),
        ("a.b".to_string(), "three dot-separated parts"),
        ("a.b.c.d".to_string(), "three dot-separated parts"),
        (format!("{h}.{c}.***"), "signature encoding"),
        (format!("!!.{c}.{s}"), "header"),
        ("x".repeat(70 * 1024), "too long"),
    ];
    for (token, want) in cases {
        let err = jwt.authenticate(&token).unwrap_err().0;
        assert!(err.contains(want), "want {want:?}, got {err}");
    }
    // An ES256 token when only RSA keys are configured.
    let rsa_only = JwtAuthenticator::new(&JwtConfig {
        public_key_files: vec![keys.rsa_pub.display().to_string()],
        ..jwt_config(&keys, None)
    })
    .unwrap();
    let es = sign_es256(&keys.ec, &json!({"alg": "ES256"}), &claims());
    assert!(rsa_only
        .authenticate(&es)
        .unwrap_err()
        .0
        .contains("no ES256 key"));
    // Without a configured audience any aud is fine; leeway covers a little clock skew.
    let mut c = claims();
    c["aud"] = json!("anything");
    c["exp"] = json!(now() - 10);
    rsa_only
        .authenticate(&sign_rs256(&keys.rsa, &rs, &c))
        .unwrap();
}

#[test]
fn jwt_keys_from_a_jwks_file_are_found_by_kid() {
    let keys = keys();
    let ec_point = keys.ec.public_key().as_ref();
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "key-1", "alg": "RS256", "use": "sig", "n": b64(&keys.rsa_n), "e": "AQAB"},
        {"kty": "EC", "kid": "key-2", "crv": "P-256", "x": b64(&ec_point[1..33]), "y": b64(&ec_point[33..])},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
    ]});
    let path = keys.dir.path().join("token_keys.json");
    std::fs::write(&path, jwks.to_string()).unwrap();
    let jwt = JwtAuthenticator::new(&JwtConfig {
        public_key_files: vec![],
        jwks_file: Some(path.display().to_string()),
        issuer: ISSUER.into(),
        audience: None,
    })
    .unwrap();
    assert_eq!(jwt.key_count(), 2);
    let ok = sign_rs256(
        &keys.rsa,
        &json!({"alg": "RS256", "kid": "key-1"}),
        &claims(),
    );
    assert_eq!(jwt.authenticate(&ok).unwrap().subject, "user-1");
    let es = sign_es256(
        &keys.ec,
        &json!({"alg": "ES256", "kid": "key-2"}),
        &claims(),
    );
    assert_eq!(jwt.authenticate(&es).unwrap().subject, "user-1");
    let no_kid = sign_rs256(&keys.rsa, &json!({"alg": "RS256"}), &claims());
    jwt.authenticate(&no_kid).unwrap();
    let unknown = sign_rs256(
        &keys.rsa,
        &json!({"alg": "RS256", "kid": "key-9"}),
        &claims(),
    );
    assert!(jwt
        .authenticate(&unknown)
        .unwrap_err()
        .0
        .contains("kid \"key-9\""));
    // kid of an EC key on an RS256 token.
    let wrong = sign_rs256(
        &keys.rsa,
        &json!({"alg": "RS256", "kid": "key-2"}),
        &claims(),
    );
    assert!(jwt.authenticate(&wrong).is_err());

    // Bad key material is refused at start, naming the file and the key.
    let bad = [
        (json!({"keys": []}), "no signing keys"),
        (
            json!({"keys": [{"kty": "oct", "k": "AAAA"}]}),
            "\"oct\" is not supported",
        ),
        (
            json!({"keys": [{"kty": "RSA", "kid": "k", "n": b64(&[1; 128]), "e": "AQAB"}]}),
            "too small",
        ),
        (
            json!({"keys": [{"kty": "RSA", "kid": "k", "e": "AQAB"}]}),
            "missing n",
        ),
        (
            json!({"keys": [{"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}]}),
            "P-256",
        ),
        (json!({"nokeys": 1}), "missing field `keys`"),
    ];
    for (doc, want) in bad {
        std::fs::write(&path, doc.to_string()).unwrap();
        let err = JwtAuthenticator::new(&JwtConfig {
            jwks_file: Some(path.display().to_string()),
            issuer: ISSUER.into(),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(
            err.contains(want) && err.contains("token_keys.json"),
            "{doc}: {err}"
        );
    }
    // A private key is not a public key file; an RSA PUBLIC KEY (PKCS#1) file is.
    let err = JwtAuthenticator::new(&JwtConfig {
        public_key_files: vec![keys.dir.path().join("rsa.pem").display().to_string()],
        issuer: ISSUER.into(),
        ..Default::default()
    })
    .err()
    .unwrap();
    assert!(
        err.contains("PRIVATE KEY block is not a public key"),
        "{err}"
    );
    let pkcs1 = keys.dir.path().join("rsa.pkcs1.pem");
    openssl(&[
        "rsa",
        "-pubin",
        "-in",
        keys.rsa_pub.to_str().unwrap(),
        "-RSAPublicKey_out",
        "-out",
        pkcs1.to_str().unwrap(),
    ]);
    let jwt = JwtAuthenticator::new(&JwtConfig {
        public_key_files: vec![pkcs1.display().to_string()],
        issuer: ISSUER.into(),
        ..Default::default()
    })
    .unwrap();
    jwt.authenticate(&ok).unwrap();
}

// ---- Cloud Controller -----------------------------------------------------------------------

fn cc(fake: &FakeCf) -> HttpCloudController {
    let mut config = CcConfig::new(&fake.url);
    config.cc_ca_cert_file = fake.ca_cert_file.as_ref().map(|p| p.display().to_string());
    HttpCloudController::new(&config, &uaa_config(fake)).unwrap()
}

fn guids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Org o1 with spaces s1 (dev: user-a) and s2 (dev: user-b, member: user-a); apps in both.
fn populated() -> FakeCf {
    let fake = FakeCf::start();
    fake.add_org("o1", "org-one");
    fake.add_space("s1", "dev", "o1", &["user-a"]);
    fake.add_space("s2", "prod", "o1", &["user-b"]);
    fake.add_member("s2", "user-a");
    fake.add_app("app-1", "frontend", "s1");
    fake.add_app("app-2", "backend", "s1");
    fake.add_app("app-3", "db", "s2");
    fake
}

#[test]
fn cc_app_spaces_and_existing_apps() {
    let fake = populated();
    let cc = cc(&fake);
    let map = cc
        .app_spaces(&guids(&["app-1", "app-3", "gone", "app-1"]))
        .unwrap();
    assert_eq!(map.len(), 2);
    assert_eq!(map["app-1"], "s1");
    assert_eq!(map["app-3"], "s2");
    let reqs = fake.requests_to("/v3/apps");
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].params("guids"), vec!["app-1,app-3,gone"]);
    assert_eq!(reqs[0].params("per_page"), vec!["3"]);
    assert!(reqs[0]
        .authorization
        .as_ref()
        .unwrap()
        .starts_with("bearer client-token-"));
    let existing = cc.existing_apps(&guids(&["app-2", "nope"])).unwrap();
    assert_eq!(existing, HashSet::from(["app-2".to_string()]));
    // Nothing asked, nothing requested.
    fake.clear_requests();
    assert!(cc.app_spaces(&[]).unwrap().is_empty());
    assert!(fake.requests_to("/v3/apps").is_empty());
}

#[test]
fn cc_chunks_by_100_and_follows_pagination() {
    let fake = FakeCf::start();
    fake.add_org("o", "org");
    fake.add_space("s", "space", "o", &[]);
    let all: Vec<String> = (0..250).map(|i| format!("app-{i:03}")).collect();
    for g in &all {
        fake.add_app(g, g, "s");
    }
    let cc = cc(&fake);
    assert_eq!(cc.existing_apps(&all).unwrap().len(), 250);
    let reqs = fake.requests_to("/v3/apps");
    let sizes: Vec<usize> = reqs
        .iter()
        .map(|r| r.params("guids")[0].split(',').count())
        .collect();
    assert_eq!(sizes, vec![100, 100, 50]);

    // The CC caps page sizes: the client follows `pagination.next`.
    fake.state().max_page_size = Some(7);
    fake.clear_requests();
    let map = cc.app_spaces(&all[..30]).unwrap();
    assert_eq!(map.len(), 30);
    let reqs = fake.requests_to("/v3/apps");
    assert_eq!(reqs.len(), 5);
    assert_eq!(reqs[4].params("page"), vec!["5"]);
}

#[test]
fn cc_space_developer_checks() {
    let fake = populated();
    let cc = cc(&fake);
    assert!(cc.is_space_developer("user-a", "s1").unwrap());
    assert!(!cc.is_space_developer("user-a", "s2").unwrap()); // member, not developer
    assert!(cc.is_space_developer("user-b", "s2").unwrap());
    assert!(!cc.is_space_developer("user-a", "no-such-space").unwrap()); // 404
    let q = fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/v2/spaces")
        .unwrap();
    assert_eq!(
        q.params("q"),
        vec!["developer_guid:user-a", "name:dev", "organization_guid:o1"]
    );
    // Two spaces of the same name in the same org is a CC inconsistency: an error.
    fake.add_space("s1-dup", "dev", "o1", &["user-a"]);
    let err = cc.is_space_developer("user-a", "s1").unwrap_err().0;
    assert!(err.contains("at most one space"), "{err}");
}

#[test]
fn cc_user_spaces_follow_next_url() {
    let fake = populated();
    for i in 0..5 {
        fake.add_space(&format!("x{i}"), &format!("extra-{i}"), "o1", &["user-c"]);
    }
    fake.state().max_page_size = Some(2);
    let cc = cc(&fake);
    let spaces = cc.user_spaces("user-c").unwrap();
    assert_eq!(spaces.len(), 5);
    let reqs = fake.requests_to("/v2/users/user-c/spaces");
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].params("results-per-page"), vec!["100"]);
    assert_eq!(
        cc.user_spaces("user-a").unwrap(),
        HashSet::from(["s1".to_string(), "s2".to_string()])
    );
    // A user the CC has never seen is in no space.
    assert!(cc.user_spaces("stranger").unwrap().is_empty());
}

#[test]
fn cc_client_token_is_cached_renewed_and_retried() {
    let fake = populated();
    let cc = cc(&fake);
    for _ in 0..3 {
        cc.app_spaces(&guids(&["app-1"])).unwrap();
    }
    let token_reqs = fake.requests_to("/oauth/token");
    assert_eq!(token_reqs.len(), 1);
    assert_eq!(
        token_reqs[0].body,
        format!("client_id={CLIENT_ID}&grant_type=client_credentials")
    );

    // A token the CC no longer accepts: renewed once, the call succeeds.
    fake.revoke_client_tokens();
    assert_eq!(cc.app_spaces(&guids(&["app-1"])).unwrap().len(), 1);
    assert_eq!(fake.requests_to("/oauth/token").len(), 2);

    // Short-lived tokens are renewed when they expire.
    fake.state().token_ttl_seconds = 1;
    let client = ClientCredentials::new(&uaa_config(&fake)).unwrap();
    let first = client.token().unwrap();
    assert_eq!(client.token().unwrap(), first);
    std::thread::sleep(Duration::from_millis(1100));
    assert_ne!(client.token().unwrap(), first);
}

#[test]
fn cc_failures_are_errors_with_context() {
    let fake = populated();
    let cc = cc(&fake);
    fake.state().fail_cc = true;
    for err in [
        cc.app_spaces(&guids(&["app-1"])).unwrap_err().0,
        cc.is_space_developer("user-a", "s1").unwrap_err().0,
        cc.user_spaces("user-a").unwrap_err().0,
        cc.existing_apps(&guids(&["app-1"])).unwrap_err().0,
    ] {
        assert!(
            err.contains("cc GET") && err.contains("status 500"),
            "{err}"
        );
    }
    fake.state().fail_cc = false;
    fake.state().fail_uaa = true;
    let fresh = self::cc(&fake);
    let err = fresh.app_spaces(&guids(&["app-1"])).unwrap_err().0;
    assert!(
        err.contains("getting a token from UAA") && err.contains("500"),
        "{err}"
    );
    fake.state().fail_uaa = false;

    let mut bad = uaa_config(&fake);
    bad.client_secret = "nope".into();
    let bad_cc = HttpCloudController::new(&CcConfig::new(&fake.url), &bad).unwrap();
    let err = bad_cc.user_spaces("user-a").unwrap_err().0;
    assert!(err.contains("status 401"), "{err}");

    let down =
        HttpCloudController::new(&CcConfig::new(&closed_port_url()), &uaa_config(&fake)).unwrap();
    let err = down.user_spaces("user-a").unwrap_err().0;
    assert!(err.contains("cc GET"), "{err}");

    let err = HttpCloudController::new(&CcConfig::new("cc.internal:9023"), &uaa_config(&fake))
        .err()
        .unwrap();
    assert!(err.contains("'cc_url'"), "{err}");
    let mut c = CcConfig::new(&fake.url);
    c.cc_app_request_chunk_size = 0;
    assert!(c
        .validate()
        .unwrap_err()
        .contains("'cc_app_request_chunk_size'"));
}

#[test]
fn cc_and_uaa_over_tls() {
    let fake = FakeCf::start_tls();
    fake.add_org("o1", "org");
    fake.add_space("s1", "dev", "o1", &["u"]);
    fake.add_app("a", "app", "s1");
    let cc = cc(&fake);
    assert_eq!(cc.app_spaces(&guids(&["a"])).unwrap()["a"], "s1");
    assert!(cc.is_space_developer("u", "s1").unwrap());
    let untrusted = HttpCloudController::new(
        &CcConfig::new(&fake.url),
        &UaaClientConfig {
            ca_cert_file: None,
            skip_ssl_validation: true,
            ..uaa_config(&fake)
        },
    )
    .unwrap();
    // UAA skips verification, the CC does not: the CC call fails on the certificate.
    assert!(untrusted.app_spaces(&guids(&["a"])).is_err());
}

#[test]
fn malformed_uaa_and_cc_answers_are_errors() {
    use netman::http::{Request, Response, Server};
    // A UAA + CC that answers 200 with bodies that are not what the APIs document.
    let server = Server::start("127.0.0.1:0", Default::default(), |req: &Request| {
        let body = String::from_utf8_lossy(&req.body).to_string();
        match req.path.as_str() {
            "/oauth/token" if body.contains("client_id=no-token") => {
                Response::json(200, &json!({"access_token": "", "token_type": "bearer"}))
            }
            "/oauth/token" if body.contains("client_id=mac") => {
                Response::json(200, &json!({"access_token": "t", "token_type": "mac"}))
            }
            "/oauth/token" => Response::json(
                200,
                &json!({"access_token": "t", "token_type": "bearer", "expires_in": 600}),
            ),
            "/check_token" => Response::json(200, &json!({"sub": "", "scope": ["a"]})),
            "/v3/apps" if req.query_param("guids") == Some("no-space") => Response::json(
                200,
                &json!({"pagination": {"next": null}, "resources": [{"guid": "no-space"}]}),
            ),
            "/v3/apps" => Response::json(200, &json!({"pagination": {}})),
            "/v2/spaces/no-name" => Response::json(200, &json!({"metadata": {}, "entity": {}})),
            "/v2/spaces/s" => Response::json(
                200,
                &json!({"metadata": {"guid": "s"}, "entity": {"name": "n", "organization_guid": "o"}}),
            ),
            "/v2/spaces" => Response::json(200, &json!({"total_results": 0})),
            _ => Response::text(200, "<html>not json</html>"),
        }
    })
    .unwrap();
    let url = format!("http://{}", server.local_addr());
    let uaa = |client: &str| UaaClientConfig {
        url: url.clone(),
        client: client.into(),
        client_secret: "s".into(),
        ca_cert_file: None,
        skip_ssl_validation: false,
        timeout: Duration::from_secs(5),
    };
    let err = UaaAuthenticator::new(&uaa("c"))
        .unwrap()
        .authenticate("x")
        .unwrap_err()
        .0;
    assert!(err.contains("no sub, user_id or client_id"), "{err}");

    let cc = HttpCloudController::new(&CcConfig::new(&url), &uaa("c")).unwrap();
    let cases = [
        (
            cc.app_spaces(&guids(&["x"])).unwrap_err().0,
            "no resources array",
        ),
        (
            cc.app_spaces(&guids(&["no-space"])).unwrap_err().0,
            "app no-space has no space link",
        ),
        (
            cc.is_space_developer("u", "no-name").unwrap_err().0,
            "space without entity.name",
        ),
        (
            cc.is_space_developer("u", "s").unwrap_err().0,
            "no resources array",
        ),
        (cc.user_spaces("u").unwrap_err().0, "bad JSON"),
    ];
    for (err, want) in cases {
        assert!(
            err.contains(want) && err.contains("cc"),
            "want {want:?}: {err}"
        );
    }
    for (client, want) in [("no-token", "empty access_token"), ("mac", "is not bearer")] {
        let cc = HttpCloudController::new(&CcConfig::new(&url), &uaa(client)).unwrap();
        let err = cc.user_spaces("u").unwrap_err().0;
        assert!(err.contains(want), "{err}");
    }
    drop(cc);
    server.shutdown();
}
