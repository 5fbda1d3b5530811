//! Cost of authenticating one external API request in each auth mode: static tokens, local JWT
//! verification (RS256, ES256), and UAA `check_token` over loopback HTTP (against the fake UAA,
//! keep-alive). Prints calls/s and p50/p99 per call on one thread; asserts nothing.
//!
//! `cargo bench --bench auth` (needs `openssl` for the keys).

#[path = "../tests/support/mod.rs"]
mod support;
use support::fake_cf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use netman::policy::auth::jwt::{JwtAuthenticator, JwtConfig};
use netman::policy::auth::tokens::StaticTokens;
use netman::policy::auth::uaa::{UaaAuthenticator, UaaClientConfig};
use netman::policy::auth::Authenticator;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RUN_FOR: Duration = Duration::from_secs(2);

fn measure(name: &str, auth: &dyn Authenticator, token: &str) {
    auth.authenticate(token).expect("token must verify");
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < RUN_FOR {
        let t = Instant::now();
        auth.authenticate(token).unwrap();
        samples.push(t.elapsed());
    }
    let total = started.elapsed();
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "{name:<28} {:>10.0} calls/s   p50 {:>8.1} us   p99 {:>8.1} us",
        samples.len() as f64 / total.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
    );
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}");
}

/// (PKCS#8 DER private key, public key PEM path)
fn genkey(dir: &Path, name: &str, args: &[&str]) -> (Vec<u8>, String) {
    let key = dir.join(format!("{name}.pem")).display().to_string();
    let der = dir.join(format!("{name}.der")).display().to_string();
    let public = dir.join(format!("{name}.pub.pem")).display().to_string();
    let mut gen = vec!["genpkey", "-out", &key];
    gen.extend_from_slice(args);
    openssl(&gen);
    openssl(&[
        "pkcs8", "-topk8", "-nocrypt", "-in", &key, "-outform", "DER", "-out", &der,
    ]);
    openssl(&["pkey", "-in", &key, "-pubout", "-out", &public]);
    (std::fs::read(&der).unwrap(), public)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "sub": "user-1", "user_name": "bench", "iss": "https://uaa.example.com/oauth/token",
        "aud": ["network"], "exp": now + 3600, "scope": ["network.write", "openid"]
    });
    let input = |alg: &str| {
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(json!({"alg": alg}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    };

    let (rsa_der, rsa_pub) = genkey(
        dir.path(),
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let (ec_der, ec_pub) = genkey(
        dir.path(),
        "ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let rsa = RsaKeyPair::from_pkcs8(&rsa_der).unwrap();
    let rs_input = input("RS256");
    let mut sig = vec![0; rsa.public().modulus_len()];
    rsa.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        rs_input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    let rs_token = format!("{rs_input}.{}", URL_SAFE_NO_PAD.encode(&sig));
    let ec = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &ec_der,
        &SystemRandom::new(),
    )
    .unwrap();
    let es_input = input("ES256");
    let es_sig = ec.sign(&SystemRandom::new(), es_input.as_bytes()).unwrap();
    let es_token = format!("{es_input}.{}", URL_SAFE_NO_PAD.encode(es_sig.as_ref()));
    let jwt = JwtAuthenticator::new(&JwtConfig {
        public_key_files: vec![rsa_pub, ec_pub],
        jwks_file: None,
        issuer: "https://uaa.example.com/oauth/token".into(),
        audience: Some("network".into()),
    })
    .unwrap();

    let tokens_file = dir.path().join("tokens.json");
    let mut map = serde_json::Map::new();
    for i in 0..1000 {
        map.insert(
            format!("token-{i}"),
            json!({"subject": format!("s{i}"), "scopes": ["network.write"]}),
        );
    }
    std::fs::write(&tokens_file, serde_json::Value::Object(map).to_string()).unwrap();
    let tokens = StaticTokens::load(&tokens_file).unwrap();

    let fake = fake_cf::FakeCf::start();
    fake.add_user("uaa-token", "user-1", "bench", &["network.write"]);
    let uaa = UaaAuthenticator::new(&UaaClientConfig {
        url: fake.url.clone(),
        client: fake_cf::CLIENT_ID.into(),
        client_secret: fake_cf::CLIENT_SECRET.into(),
        ca_cert_file: None,
        skip_ssl_validation: false,
        timeout: Duration::from_secs(5),
    })
    .unwrap();

    println!("auth: one thread, {} s per mode", RUN_FOR.as_secs());
    measure("tokens (1,000 in file)", &tokens, "token-777");
    measure("jwt RS256 (2048-bit)", &jwt, &rs_token);
    measure("jwt ES256 (P-256)", &jwt, &es_token);
    // The fake records every request; clear the record as it grows.
    let recorder = fake.state.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let cleaner = std::thread::spawn(move || {
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            recorder.lock().unwrap().requests.clear();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    measure("uaa check_token (loopback)", &uaa, "uaa-token");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    cleaner.join().unwrap();
}
