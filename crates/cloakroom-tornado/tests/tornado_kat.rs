//! Known-answer and differential tests against real Tornado (run in a Python venv made by
//! `scripts/test.sh`): signed values v1/v2 and XSRF tokens, both directions, plus every
//! tampering case checked on both sides.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;
use cloakroom_core::csrf::{Secret, decode_token};
use cloakroom_tornado::signed_value::{
    DecodeError, TornadoSecret, Version, create_signed_value, decode_signed_value,
};
use serde_json::{Value, json};

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CLOAKROOM_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with Tornado: run scripts/test.sh (it makes .venv) or set CLOAKROOM_PYTHON"
    );
    venv
}

fn oracle(request: &Value) -> Value {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/tornado_oracle.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the Tornado oracle");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "oracle failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

const NOW: i64 = 1_764_320_000;

fn versioned() -> TornadoSecret {
    TornadoSecret::Versioned {
        secrets: BTreeMap::from([(0, b"old-secret".to_vec()), (7, b"new-secret".to_vec())]),
        current: 7,
    }
}

#[test]
fn signed_values_match_tornado_byte_for_byte() {
    let values: [&[u8]; 4] = [
        b"0ca7a58c-ee4e-4a07-b606-20dbd97281e7",
        b"",
        b"caf\xc3\xa9 | with pipes | and : colons",
        b"x",
    ];
    let mut requests = Vec::new();
    let mut ours = Vec::new();
    for v in values {
        let text = std::str::from_utf8(v).unwrap();
        for (version, n) in [(Version::V1, 1), (Version::V2, 2)] {
            requests.push(json!({"secret": "s3cret", "name": "PYCKET_ID", "value": text, "version": n, "now": NOW}));
            ours.push(
                create_signed_value(
                    &TornadoSecret::single("s3cret"),
                    "PYCKET_ID",
                    v,
                    version,
                    NOW,
                )
                .unwrap(),
            );
        }
        requests.push(json!({"secret": {"0": "old-secret", "7": "new-secret"}, "name": "user", "value": text, "version": 2, "now": NOW, "key_version": 7}));
        ours.push(create_signed_value(&versioned(), "user", v, Version::V2, NOW).unwrap());
    }
    let answer = oracle(&json!({ "create": requests }));
    let theirs: Vec<String> = serde_json::from_value(answer["create"].clone()).unwrap();
    assert_eq!(ours, theirs, "tornado {}", answer["tornado"]);
    // And we decode every one of Tornado's values.
    for (req, value) in requests.iter().zip(&theirs) {
        let secret = if req["secret"].is_object() {
            versioned()
        } else {
            TornadoSecret::single("s3cret")
        };
        let name = req["name"].as_str().unwrap();
        let got = decode_signed_value(&secret, name, value, 31.0, NOW + 10).unwrap();
        assert_eq!(got, req["value"].as_str().unwrap().as_bytes());
    }
}

/// A value, the cookie name and max age to decode it with, the time, and what was done to it.
type Case = (String, &'static str, f64, i64, &'static str);

/// Valid values signed with `single` and mutations of them: every field changed, truncated
/// and lengthened signatures, expiry, v1's leading-zero timestamp.
fn tampered_cases(single: &TornadoSecret) -> Vec<Case> {
    let v1 = create_signed_value(single, "PYCKET_ID", b"abc-123", Version::V1, NOW).unwrap();
    let v2 = create_signed_value(single, "PYCKET_ID", b"abc-123", Version::V2, NOW).unwrap();
    let mut cases: Vec<Case> = Vec::new();
    for (label, v) in [("v1", &v1), ("v2", &v2)] {
        cases.push((v.clone(), "PYCKET_ID", 31.0, NOW, "valid"));
        cases.push((v.clone(), "OTHER", 31.0, NOW, "wrong name"));
        cases.push((v.clone(), "PYCKET_ID", 31.0, NOW + 32 * 86_400, "expired"));
        cases.push((
            v.clone(),
            "PYCKET_ID",
            120.0,
            NOW + 32 * 86_400,
            "long max age",
        ));
        cases.push((
            v[..v.len() - 1].to_owned(),
            "PYCKET_ID",
            31.0,
            NOW,
            "truncated sig",
        ));
        cases.push((format!("{v}0"), "PYCKET_ID", 31.0, NOW, "lengthened sig"));
        let flipped = {
            let mut b = v.clone().into_bytes();
            let i = b.len() - 5;
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            String::from_utf8(b).unwrap()
        };
        cases.push((flipped, "PYCKET_ID", 31.0, NOW, "changed sig"));
        cases.push((String::new(), "PYCKET_ID", 31.0, NOW, "empty"));
        let _ = label;
    }
    // Every field of v2 changed.
    for (from, to) in [
        ("2|1:0|", "2|1:1|"),
        ("|10:1764320000|", "|10:1764320001|"),
        ("|9:PYCKET_ID|", "|9:PYCKET_IE|"),
        ("|12:YWJjLTEyMw==|", "|12:YWJjLTEyMx==|"),
        ("2|1:0|", "3|1:0|"),
        ("2|1:0|", "2|2:0|"),
    ] {
        assert!(v2.contains(from), "{from} in {v2}");
        cases.push((v2.replacen(from, to, 1), "PYCKET_ID", 31.0, NOW, "v2 field"));
    }
    // v1: changed value, timestamp moved, future timestamp, leading zero.
    let parts: Vec<&str> = v1.split('|').collect();
    cases.push((
        format!("YWJjLTEyNA==|{}|{}", parts[1], parts[2]),
        "PYCKET_ID",
        31.0,
        NOW,
        "v1 value",
    ));
    cases.push((
        format!("{}|{}|{}", parts[0], NOW + 1, parts[2]),
        "PYCKET_ID",
        31.0,
        NOW,
        "v1 ts",
    ));
    let future =
        create_signed_value(single, "PYCKET_ID", b"abc", Version::V1, NOW + 40 * 86_400).unwrap();
    cases.push((future, "PYCKET_ID", 31.0, NOW, "v1 future"));
    // Leading zero: sign "0<ts>" by moving a digit from the value (the attack Tornado guards).
    let zero = {
        use hmac::Mac;
        let ts = format!("0{NOW}");
        let b64 = "YWJj";
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"s3cret").unwrap();
        mac.update(format!("PYCKET_ID{b64}{ts}").as_bytes());
        let sig: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{b64}|{ts}|{sig}")
    };
    cases.push((zero, "PYCKET_ID", 31.0, NOW, "v1 leading zero"));
    cases
}

/// Mutations of valid values; for each, Tornado and we must agree on accept/refuse.
#[test]
fn tampering_is_refused_exactly_where_tornado_refuses() {
    let single = TornadoSecret::single("s3cret");
    let v2 = create_signed_value(&single, "PYCKET_ID", b"abc-123", Version::V2, NOW).unwrap();
    let cases = tampered_cases(&single);
    // Unknown key version in a versioned secret.
    let other = TornadoSecret::Versioned {
        secrets: BTreeMap::from([(9, b"nine".to_vec())]),
        current: 9,
    };
    let v9 = create_signed_value(&other, "n", b"v", Version::V2, NOW).unwrap();

    let request: Vec<Value> = cases
        .iter()
        .map(|(v, n, age, now, _)| json!({"secret": "s3cret", "name": n, "value": v, "max_age_days": age, "now": now}))
        .chain([json!({"secret": {"0": "old-secret", "7": "new-secret"}, "name": "n", "value": v9, "max_age_days": 31, "now": NOW})])
        .collect();
    let answer = oracle(&json!({ "decode": request }));
    let theirs = answer["decode"].as_array().unwrap();
    for ((value, name, age, now, label), t) in cases.iter().zip(theirs) {
        let ours = decode_signed_value(&single, name, value, *age, *now);
        let theirs_ok = !t.is_null();
        assert_eq!(
            ours.is_ok(),
            theirs_ok,
            "{label}: {value} -> ours {ours:?}, tornado {t}"
        );
        if let (Ok(v), Some(t)) = (&ours, t.as_str()) {
            assert_eq!(
                *v,
                base64::engine::general_purpose::STANDARD.decode(t).unwrap()
            );
        }
    }
    assert!(theirs.last().unwrap().is_null());
    assert_eq!(
        decode_signed_value(&versioned(), "n", &v9, 31.0, NOW),
        Err(DecodeError::UnknownKeyVersion)
    );
    // The specific reasons we report.
    assert_eq!(
        decode_signed_value(&single, "OTHER", &v2, 31.0, NOW),
        Err(DecodeError::WrongName)
    );
    assert_eq!(
        decode_signed_value(&single, "PYCKET_ID", &v2, 31.0, NOW + 32 * 86_400),
        Err(DecodeError::Expired)
    );
}

#[test]
fn xsrf_tokens_match_tornado_both_ways() {
    let secrets = [[0u8; 16], [0xff; 16], *b"0123456789abcdef"];
    let masks = [[1, 2, 3, 4], [0, 0, 0, 0], [0xde, 0xad, 0xbe, 0xef]];
    let mut create = Vec::new();
    let mut ours = Vec::new();
    for s in secrets {
        for m in masks {
            // A v1 token is the secret in hex.
            let hex: String = s.iter().map(|b| format!("{b:02x}")).collect();
            let secret = decode_token(&hex).unwrap();
            create.push(json!({"secret": secret.to_hex(), "mask": format!("{:02x}{:02x}{:02x}{:02x}", m[0], m[1], m[2], m[3]), "timestamp": NOW}));
            ours.push(secret.mask_with(m, NOW));
        }
    }
    let fresh = Secret::generate();
    let decode = vec![fresh.mask(), fresh.to_hex(), fresh.mask()];
    let answer = oracle(&json!({"xsrf_create": create, "xsrf_decode": decode}));
    let theirs: Vec<String> = serde_json::from_value(answer["xsrf_create"].clone()).unwrap();
    assert_eq!(ours, theirs);
    for t in &theirs {
        decode_token(t).unwrap();
    }
    for got in answer["xsrf_decode"].as_array().unwrap() {
        assert_eq!(
            got.as_str().unwrap(),
            fresh.to_hex(),
            "Tornado decodes our tokens to our secret"
        );
    }
}
