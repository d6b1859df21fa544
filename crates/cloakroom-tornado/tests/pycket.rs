//! [`PycketStore`] against real Python: pickles of every protocol Python writes, Python
//! reading what the store writes, records and notifications written by pycket's own driver,
//! and concurrent writers (several tasks of two stores, and a Python pycket writer with
//! transactional writes) on one session.
//!
//! Needs the venv made by `scripts/test.sh` (Python with pycket and redis-py): found through
//! `CLOAKROOM_PYTHON` or at `<workspace>/.venv/bin/python`. Missing, the tests fail saying so.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cloakroom_core::cookie::TicketFormat as _;
use cloakroom_core::flash::{Level, Message};
use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{Applied, Created, ErrorKind, Fields, Patch, Record, SessionStore};
use cloakroom_testkit::redis_server::RedisServer;
use cloakroom_tornado::PycketStore;
use cloakroom_tornado::TornadoSecret;
use cloakroom_tornado::pycket::{PycketTicket, pycket_key, pycket_uuid};
use cloakroom_tornado::pycket::{fields_from_pickle, pickle_from_fields};
use serde_json::{Value, json};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CLOAKROOM_PYTHON") {
        return p.into();
    }
    let venv = workspace().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with pycket: run scripts/test.sh (it makes .venv) or set CLOAKROOM_PYTHON"
    );
    venv
}

/// Prelude of every snippet: pickle, json, pycket's helpers, and `client(db)`.
const PRELUDE: &str = r#"
import datetime, json, os, pickle, sys
import redis
from pycket_watch import change
PORT = int(os.environ.get("REDIS_PORT", "0"))
def client(db):
    return redis.Redis(host="127.0.0.1", port=PORT, db=db)
"#;

/// Runs a Python snippet (after [`PRELUDE`]) and returns its standard output.
fn run_python(port: u16, code: &str) -> String {
    run_python_with_input(port, code, "")
}

/// [`run_python`] with `input` on the snippet's standard input.
fn run_python_with_input(port: u16, code: &str, input: &str) -> String {
    let mut child = Command::new(python())
        .arg("-c")
        .arg(format!("{PRELUDE}\n{code}"))
        .env("PYTHONPATH", workspace().join("tests/interop"))
        .env("REDIS_PORT", port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("write to python");
    let out = child.wait_with_output().expect("python's output");
    assert!(
        out.status.success(),
        "python failed: {}\n{code}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The dict of the brief, and what its fields read as.
const SAMPLE: &str = "{'ID': 42, 'name': 'ada', 'f': 1.5, 'l': [1, 'a', None], 'd': {'x': True}}";

fn sample_fields() -> Fields {
    fields(&[
        ("ID", "42"),
        ("name", "\"ada\""),
        ("f", "1.5"),
        ("l", "[1,\"a\",null]"),
        ("d", "{\"x\":true}"),
    ])
}

#[test]
fn pickles_of_every_protocol_decode() {
    let out = run_python(
        0,
        &format!("print(json.dumps([pickle.dumps({SAMPLE}, protocol=p).hex() for p in range(6)]))"),
    );
    let pickles: Vec<String> = serde_json::from_str(&out).unwrap();
    assert_eq!(pickles.len(), 6);
    for (protocol, p) in pickles.iter().enumerate() {
        assert_eq!(
            fields_from_pickle(&unhex(p)).unwrap(),
            sample_fields(),
            "protocol {protocol}"
        );
    }

    // Python-only types, every protocol: tuples, sets and frozensets read as lists, bytes as
    // base64, big ints exactly, non-string keys as text.
    let out = run_python(
        0,
        "v = {'t': (1, 2), 's': {3}, 'fs': frozenset(['a']), 'b': b'\\xff\\x00', \
         'ba': bytearray(b'hi'), 'big': 2**80, 'u': 'ünï 🔑', 'k': {1: 'one', None: 0}, \
         'neg': -7, 'fl': -0.25, 't0': (), 2: 'int key'}\n\
         print(json.dumps([pickle.dumps(v, protocol=p).hex() for p in range(6)]))",
    );
    let pickles: Vec<String> = serde_json::from_str(&out).unwrap();
    let expected = fields(&[
        ("t", "[1,2]"),
        ("s", "[3]"),
        ("fs", "[\"a\"]"),
        ("b", "\"/wA=\""),
        ("ba", "\"aGk=\""),
        ("big", "1208925819614629174706176"),
        ("u", "\"ünï 🔑\""),
        ("k", "{\"null\":0,\"1\":\"one\"}"),
        ("neg", "-7"),
        ("fl", "-0.25"),
        ("t0", "[]"),
    ]);
    for (protocol, p) in pickles.iter().enumerate() {
        assert_eq!(
            fields_from_pickle(&unhex(p)).unwrap(),
            expected,
            "protocol {protocol}"
        );
    }
}

#[test]
fn python_reads_what_we_write() {
    let pickle = pickle_from_fields(&sample_fields()).unwrap();
    assert_eq!(&pickle[..2], b"\x80\x03", "protocol 3");
    let out = run_python(
        0,
        &format!(
            "v = pickle.loads(bytes.fromhex('{}'))\nprint(v == {SAMPLE}, type(v['ID']).__name__)",
            hex(&pickle)
        ),
    );
    assert_eq!(out.trim(), "True int");

    // Odd values: every one comes back as the value Python's json.loads gives.
    let odd = fields(&[
        ("big", "12345678901234567890123"),
        ("neg", "-0"),
        ("float", "2.50"),
        ("esc", "\"a\\u0000b \\ud83d\\ude00 \\/\""),
        ("nested", " { \"a\" : [1, 2.50, \"x\", {\"b\": null}] } "),
        ("empty", "\"\""),
    ]);
    let pickle = pickle_from_fields(&odd).unwrap();
    let expected: serde_json::Map<String, Value> = odd
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let out = run_python_with_input(
        0,
        &format!(
            "v = pickle.loads(bytes.fromhex('{}'))\n\
             expected = {{k: json.loads(t) for k, t in json.load(sys.stdin).items()}}\n\
             print(v == expected)",
            hex(&pickle)
        ),
        &Value::Object(expected).to_string(),
    );
    assert_eq!(out.trim(), "True");

    // The known live record of REFERENCES.md is what Python's protocol 4 makes.
    let known = b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x02ID\x94K*s.";
    let out = run_python(0, "print(pickle.dumps({'ID': 42}, protocol=4).hex())");
    assert_eq!(out.trim(), hex(known));
    assert_eq!(fields_from_pickle(known).unwrap(), fields(&[("ID", "42")]));
}

fn url(server: &RedisServer, db: u32, notes: u32) -> String {
    format!(
        "pycket+redis://127.0.0.1:{}/{db}?notifications_db={notes}",
        server.port()
    )
}

/// A fresh uuid4 session, as pycket's `str(uuid4())` makes them.
fn uuid4() -> (String, SessionKey) {
    let ticket = PycketTicket::new(TornadoSecret::single("unused"), 31.0).unwrap();
    let key = ticket.store_key(&ticket.generate());
    let uuid = pycket_uuid(&key);
    assert_eq!(pycket_key(&uuid), Some(key));
    (uuid, key)
}

/// What pycket's driver wrote in `records_written_by_pycket_load_and_keep_their_values`,
/// as a record: values as JSON, times from the TTL, notifications as flash messages.
fn assert_loaded_from_pycket(record: &Record, now: Timestamp) {
    assert_eq!(record.data["ID"], "\"bob\"");
    assert_eq!(record.data["visits"], "3");
    assert_eq!(record.data["pair"], "[1,\"x\"]");
    assert_eq!(record.meta.user, None);
    let day = 86_400_000;
    assert!(
        (record.meta.expires_at.as_millis() - (now.as_millis() + day)).abs() < 5_000,
        "expiry from the TTL: {:?}",
        record.meta.expires_at
    );
    assert!((record.meta.last_seen.as_millis() - now.as_millis()).abs() < 5_000);
    let flash: Vec<Message> = serde_json::from_str(&record.data["__cr.flash"]).unwrap();
    assert_eq!(
        flash,
        [
            Message {
                level: Level::Info,
                text: "hi".into()
            },
            Message {
                level: Level::Success,
                text: "Welcome back, bob".into()
            },
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_by_pycket_load_and_keep_their_values() {
    let server = RedisServer::start();
    let port = server.port();
    let store = PycketStore::open(&url(&server, 5, 11)).await.unwrap();
    let (uuid, key) = uuid4();

    // pycket's own driver writes the session and a notification, as Tornado would.
    run_python(
        port,
        &format!(
            "from pycket.driver import DriverFactory\n\
             f = DriverFactory()\n\
             s = f.create('redis', {{'host': '127.0.0.1', 'port': PORT, 'db_sessions': 5, 'db_notifications': 11}}, 'db_sessions')\n\
             n = f.create('redis', {{'host': '127.0.0.1', 'port': PORT, 'db_sessions': 5, 'db_notifications': 11}}, 'db_notifications')\n\
             s.set('{uuid}', {{'ID': 'bob', 'visits': 3, 'pair': (1, 'x')}})\n\
             n.set('{uuid}', {{'success': 'Welcome back, bob', 'custom': 'hi'}})\n"
        ),
    );
    let now = Timestamp::now();
    let record = store
        .load(&key)
        .await
        .unwrap()
        .expect("pycket's record loads");
    assert_loaded_from_pycket(&record, now);
    let day = 86_400_000;

    // A patch from our side keeps Tornado's values (the tuple stays a tuple), adds ours,
    // and takes the notifications (one-time read).
    let expires = now.plus(Duration::from_secs(3600));
    let patch = Patch::new(now, expires)
        .set("theme", "\"dark\"")
        .set("visits", "4")
        .remove("__cr.flash");
    assert_eq!(store.apply(&key, &patch).await.unwrap(), Applied::Done);
    let out = run_python(
        port,
        &format!(
            "s = pickle.loads(client(5).get('{uuid}'))\n\
             meta = s.pop('__cr.meta')\n\
             print(json.dumps({{'types': {{k: type(v).__name__ for k, v in s.items()}}, 's': s, \
             'exp': meta['exp'], 'pttl': client(5).pttl('{uuid}'), \
             'notes': client(11).exists('{uuid}')}}))"
        ),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["types"],
        json!({"ID": "str", "visits": "int", "pair": "tuple", "theme": "str"})
    );
    assert_eq!(v["s"]["theme"], "dark");
    assert_eq!(v["s"]["visits"], 4);
    assert_eq!(v["exp"], expires.as_millis());
    let pttl = v["pttl"].as_i64().unwrap();
    assert!(pttl > 3_590_000 && pttl <= 3_600_000, "TTL set: {pttl}");
    assert_eq!(v["notes"], 0, "the taken notifications are gone");

    // Our flash is Tornado's notification.
    let messages = json!([
        {"level": "success", "text": "Note saved"},
        {"level": "success", "text": "And another"},
        {"level": "warning", "text": "Careful"},
    ]);
    let patch = Patch::new(now, expires).set("__cr.flash", messages.to_string());
    assert_eq!(store.apply(&key, &patch).await.unwrap(), Applied::Done);
    let out = run_python(
        port,
        &format!(
            "print(json.dumps(pickle.loads(client(11).get('{uuid}'))), client(11).pttl('{uuid}') > 0)"
        ),
    );
    assert_eq!(
        out.trim(),
        "{\"success\": \"Note saved\\nAnd another\", \"warning\": \"Careful\"} True"
    );

    // A Tornado write (SET + EXPIRE 86400) keeps our metadata and counts as activity.
    run_python(
        port,
        &format!(
            "c = client(5)\ns = pickle.loads(c.get('{uuid}'))\ns['ID'] = 'carol'\n\
             c.set('{uuid}', pickle.dumps(s))\nc.expire('{uuid}', 86400)"
        ),
    );
    let record = store.load(&key).await.unwrap().unwrap();
    assert_eq!(record.data["ID"], "\"carol\"");
    assert_eq!(record.data["theme"], "\"dark\"");
    assert!(
        record.meta.expires_at.as_millis() > now.as_millis() + day - 5_000,
        "the TTL wins"
    );

    // Deleting removes the session and its notifications.
    assert!(store.delete(&key).await.unwrap());
    let out = run_python(
        port,
        &format!("print(client(5).exists('{uuid}'), client(11).exists('{uuid}'))"),
    );
    assert_eq!(out.trim(), "0 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_holding_python_objects_load_but_are_not_rewritten() {
    let server = RedisServer::start();
    let port = server.port();
    let store = PycketStore::open(&url(&server, 2, 3)).await.unwrap();
    let (uuid, key) = uuid4();
    run_python(
        port,
        &format!(
            "c = client(2)\nc.set('{uuid}', pickle.dumps({{'ID': 'dan', 'when': datetime.datetime(2025, 1, 2)}}))\n\
             c.expire('{uuid}', 86400)"
        ),
    );
    let record = store.load(&key).await.unwrap().expect("loads");
    assert_eq!(record.data["ID"], "\"dan\"");
    assert_eq!(record.data["when"], "null");
    let now = Timestamp::now();
    let patch = Patch::new(now, now.plus(Duration::from_secs(60))).set("x", "1");
    let err = store.apply(&key, &patch).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let out = run_python(
        port,
        &format!("print(pickle.loads(client(2).get('{uuid}'))['when'].year)"),
    );
    assert_eq!(out.trim(), "2025", "the datetime survived");
    // A reserved field name is refused.
    let patch = Patch::new(now, now.plus(Duration::from_secs(60))).set("__cr.meta", "1");
    let (_, other) = uuid4();
    let mut record = Record::new(now, now.plus(Duration::from_secs(60)));
    record.data.insert("a".into(), "1".into());
    assert_eq!(store.create(&other, &record).await.unwrap(), Created::Done);
    assert_eq!(
        store.apply(&other, &patch).await.unwrap_err().kind(),
        ErrorKind::Config
    );
}

/// Several tasks of two stores (two "processes": their own locks and connections) and a
/// Python writer using pycket's format with transactional writes, all writing different
/// fields of one session at once: no write is lost. The Rust tasks keep writing until the
/// Python writer is done, so the two overlap however slowly Python starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_nothing() {
    const TASKS: usize = 4;
    const MIN_WRITES: usize = 10;
    const MAX_WRITES: usize = 2000;
    const PYTHON_WRITES: usize = 60;
    let server = RedisServer::start();
    let port = server.port();
    let a = Arc::new(PycketStore::open(&url(&server, 5, 11)).await.unwrap());
    let b = Arc::new(PycketStore::open(&url(&server, 5, 11)).await.unwrap());
    let (uuid, key) = uuid4();
    let now = Timestamp::now();
    let mut record = Record::new(now, now.plus(Duration::from_secs(600)));
    record.data.insert("ID".into(), "\"ada\"".into());
    assert_eq!(a.create(&key, &record).await.unwrap(), Created::Done);

    let code = format!(
        "c = client(5)\nfor i in range({PYTHON_WRITES}):\n\
         \x20   def put(s, i=i):\n\
         \x20       s['py%d' % i] = i\n\
         \x20       return None, True\n\
         \x20   change(c, '{uuid}', put, 86400)\n\
         print('done')"
    );
    let python_done = Arc::new(AtomicBool::new(false));
    let done = python_done.clone();
    let python = tokio::task::spawn_blocking(move || {
        let out = run_python(port, &code);
        done.store(true, Ordering::SeqCst);
        out
    });
    let mut tasks = Vec::new();
    for (name, store) in [("a", a.clone()), ("b", b.clone())] {
        for t in 0..TASKS {
            let store = store.clone();
            let python_done = python_done.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while i < MAX_WRITES && (i < MIN_WRITES || !python_done.load(Ordering::SeqCst)) {
                    let now = Timestamp::now();
                    let patch = Patch::new(now, now.plus(Duration::from_secs(600)))
                        .set(format!("{name}{t}-{i}"), i.to_string());
                    assert_eq!(store.apply(&key, &patch).await.unwrap(), Applied::Done);
                    i += 1;
                }
                (format!("{name}{t}"), i)
            }));
        }
    }
    let mut written = Vec::new();
    for t in tasks {
        written.push(t.await.unwrap());
    }
    assert_eq!(python.await.unwrap().trim(), "done");

    let loaded = a.load(&key).await.unwrap().expect("the session");
    let mut lost = Vec::new();
    for (task, count) in &written {
        for i in 0..*count {
            let field = format!("{task}-{i}");
            if loaded.data.get(&field) != Some(&i.to_string()) {
                lost.push(field);
            }
        }
    }
    for i in 0..PYTHON_WRITES {
        let field = format!("py{i}");
        if loaded.data.get(&field) != Some(&i.to_string()) {
            lost.push(field);
        }
    }
    assert!(lost.is_empty(), "lost writes: {lost:?}");
    assert_eq!(loaded.data["ID"], "\"ada\"");
    let ours: usize = written.iter().map(|(_, n)| n).sum();
    assert_eq!(loaded.data.len(), 1 + ours + PYTHON_WRITES);
}

/// The near-cache is the Redis store's: `cache=N` on a pycket URL is refused at open.
#[tokio::test]
async fn bad_cache_options_fail_at_open() {
    let server = RedisServer::shared();
    let err = PycketStore::open(&format!("pycket+{}?cache=5", server.url()))
        .await
        .expect_err("pycket");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("pycket"), "{err}");
}
