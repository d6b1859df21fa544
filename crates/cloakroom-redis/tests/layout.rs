//! The hash layout: new records are compact (one-letter metadata fields, only those that say
//! something), and records written in the first layout (`m:created`, `m:seen`, `m:exp`,
//! `m:rem`, `m:user`, `m:ua`), which deployments still hold, keep working: loaded, listed,
//! patched, touched and deleted in place, in their own layout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cloakroom_core::session::{SessionId, SessionKey, Timestamp};
use cloakroom_core::store::{Applied, Created, Cursor, Patch, Record, SessionStore};
use cloakroom_redis::RedisStore;
use cloakroom_testkit::redis_server::{RedisServer, Resp};

const HOUR: Duration = Duration::from_secs(3600);

fn unique_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "layout-{}-{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn store(server: &RedisServer) -> RedisStore {
    store_with(server, "").await
}

/// A store opened with the URL query `options` (e.g. `?cache=1000`, the near-cache).
async fn store_with(server: &RedisServer, options: &str) -> RedisStore {
    RedisStore::builder(format!("{}{options}", server.url()))
        .prefix(unique_prefix())
        .build()
        .await
        .expect("open")
}

fn ok(server: &RedisServer, args: &[&str]) -> Resp {
    let reply = server.command(args).expect("redis command");
    assert!(!matches!(reply, Resp::Error(_)), "{args:?}: {reply:?}");
    reply
}

/// The hash at `key`, field by field.
fn hash(server: &RedisServer, key: &str) -> BTreeMap<String, String> {
    let Resp::Array(Some(flat)) = ok(server, &["HGETALL", key]) else {
        panic!("no hash reply for {key}");
    };
    flat.chunks(2)
        .map(|c| {
            (
                c[0].as_str().unwrap().to_owned(),
                c[1].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn field_names(h: &BTreeMap<String, String>) -> Vec<&str> {
    h.keys().map(String::as_str).collect()
}

fn pexpiretime(server: &RedisServer, key: &str) -> i64 {
    match ok(server, &["PEXPIRETIME", key]) {
        Resp::Int(t) => t,
        other => panic!("PEXPIRETIME: {other:?}"),
    }
}

/// Writes a record the way the first layout did (the old create script's `HSET` and
/// `PEXPIREAT`, and the login's `SADD`), by raw commands.
fn write_first_layout(
    server: &RedisServer,
    store: &RedisStore,
    key: &SessionKey,
    record: &Record,
    redis_expiry: Timestamp,
) {
    let rkey = store.session_key(key);
    let m = &record.meta;
    let times = [m.created_at, m.last_seen, m.expires_at].map(|t| t.as_millis().to_string());
    let mut args: Vec<String> = vec!["HSET".into(), rkey.clone()];
    for (name, value) in [
        ("m:created", &times[0]),
        ("m:seen", &times[1]),
        ("m:exp", &times[2]),
    ] {
        args.extend([name.to_owned(), value.clone()]);
    }
    args.extend(["m:rem".into(), if m.remember { "1" } else { "0" }.into()]);
    if let Some(user) = &m.user {
        args.extend(["m:user".into(), user.clone()]);
    }
    if let Some(ua) = &m.user_agent {
        args.extend(["m:ua".into(), ua.clone()]);
    }
    for (name, value) in &record.data {
        args.extend([format!("d:{name}"), value.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(server, &args);
    let at = redis_expiry.as_millis().to_string();
    ok(server, &["PEXPIREAT", &rkey, &at]);
    if let Some(user) = &m.user {
        ok(server, &["SADD", &store.user_key(user), &key.to_handle()]);
    }
}

fn first_layout_record(user: Option<&str>) -> Record {
    let now = Timestamp::now();
    let mut r = Record::new(now.plus(Duration::from_secs(0)), now.plus(HOUR));
    r.meta.created_at = Timestamp(now.as_millis() - 60_000);
    r.meta.last_seen = Timestamp(now.as_millis() - 30_000);
    r.meta.user = user.map(str::to_owned);
    r.meta.user_agent = Some("old agent".into());
    r.data.insert("counter".into(), "1".into());
    r.data.insert("gone".into(), "true".into());
    r.data
        .insert("m:exp".into(), "\"data, not metadata\"".into());
    r
}

const FIRST_LAYOUT_META: [&str; 6] = ["m:created", "m:exp", "m:rem", "m:seen", "m:ua", "m:user"];

/// A record in the first layout loads, lists, takes patches and touches (in its own
/// layout: no new-layout field appears, none of its fields goes stale) and is deleted with
/// its user-index entry.
#[tokio::test]
async fn first_layout_records_keep_working() {
    first_layout_round(RedisServer::shared(), "").await;
}

/// The same with the near-cache on (its writes run the tracked variants of the scripts).
#[tokio::test]
async fn first_layout_records_keep_working_with_the_near_cache() {
    first_layout_round(RedisServer::shared(), "?cache=1000").await;
}

async fn first_layout_round(server: &RedisServer, options: &str) {
    let store = store_with(server, options).await;
    let key = SessionId::generate().key();
    let rkey = store.session_key(&key);
    let mut expected = first_layout_record(Some("ada"));
    write_first_layout(server, &store, &key, &expected, expected.meta.expires_at);

    assert_eq!(store.load(&key).await.unwrap(), Some(expected.clone()));
    let listed = store.sessions_of("ada").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].meta, expected.meta);
    let page = store.scan(Cursor::default(), 10).await.unwrap();
    assert_eq!(page.sessions.len(), 1);
    assert_eq!(page.sessions[0].meta, expected.meta);

    // A patch: data set and removed, remember set, metadata in the old fields.
    let now = Timestamp::now();
    let mut patch = Patch::new(now, now.plus(2 * HOUR))
        .set("counter", "2")
        .remove("gone");
    patch.remember = Some(true);
    assert_eq!(store.apply(&key, &patch).await.unwrap(), Applied::Done);
    expected.apply(&patch);
    assert_eq!(store.load(&key).await.unwrap(), Some(expected.clone()));
    let h = hash(server, &rkey);
    let mut names = FIRST_LAYOUT_META.to_vec();
    names.extend(["d:counter", "d:m:exp"]);
    names.sort_unstable();
    assert_eq!(field_names(&h), names, "still the first layout: {h:?}");
    assert_eq!(h["m:rem"], "1");
    assert_eq!(h["m:seen"], now.as_millis().to_string());
    assert_eq!(pexpiretime(server, &rkey), now.plus(2 * HOUR).as_millis());

    // The absolute lifetime counts from `m:created`.
    let later = Timestamp::now();
    let mut capped = Patch::new(later, later.plus(4 * HOUR)).set("counter", "3");
    capped.max_lifetime = Some(HOUR);
    assert_eq!(store.apply(&key, &capped).await.unwrap(), Applied::Done);
    expected.apply(&capped);
    assert_eq!(
        expected.meta.expires_at.as_millis(),
        expected.meta.created_at.as_millis() + 3_600_000,
        "the cap applied"
    );
    assert_eq!(store.load(&key).await.unwrap(), Some(expected.clone()));
    assert_eq!(
        pexpiretime(server, &rkey),
        expected.meta.expires_at.as_millis()
    );

    // A touch.
    let seen = Timestamp::now();
    let until = seen.plus(3 * HOUR);
    assert_eq!(store.touch(&key, seen, until).await.unwrap(), Applied::Done);
    expected.meta.last_seen = seen;
    expected.meta.expires_at = until;
    assert_eq!(store.load(&key).await.unwrap(), Some(expected.clone()));
    assert_eq!(field_names(&hash(server, &rkey)), names);
    assert_eq!(pexpiretime(server, &rkey), until.as_millis());

    // A collision with it is one; deleting it drops the index entry too.
    assert_eq!(
        store.create(&key, &Record::new(seen, until)).await.unwrap(),
        Created::Collision
    );
    assert!(store.delete(&key).await.unwrap());
    assert_eq!(ok(server, &["EXISTS", &rkey]), Resp::Int(0));
    assert_eq!(ok(server, &["SCARD", &store.user_key("ada")]), Resp::Int(0));
    assert!(!store.delete(&key).await.unwrap());
}

/// Revoking a user's sessions finds those in the first layout (bound by `m:user`) and
/// leaves another user's alone; an anonymous one deletes and reports no user.
#[tokio::test]
async fn first_layout_records_are_revoked_by_user() {
    let server = RedisServer::shared();
    let store = store(server).await;
    let (old, new, other, anonymous) = (
        SessionId::generate().key(),
        SessionId::generate().key(),
        SessionId::generate().key(),
        SessionId::generate().key(),
    );
    let r = first_layout_record(Some("bob"));
    write_first_layout(server, &store, &old, &r, r.meta.expires_at);
    let mut fresh = Record::new(Timestamp::now(), Timestamp::now().plus(HOUR));
    fresh.meta.user = Some("bob".into());
    assert_eq!(store.create(&new, &fresh).await.unwrap(), Created::Done);
    let eve = first_layout_record(Some("eve"));
    write_first_layout(server, &store, &other, &eve, eve.meta.expires_at);
    // Someone else's session listed under bob (a stale entry) is not deleted.
    ok(
        server,
        &["SADD", &store.user_key("bob"), &other.to_handle()],
    );
    let anon = first_layout_record(None);
    write_first_layout(server, &store, &anonymous, &anon, anon.meta.expires_at);

    assert_eq!(store.sessions_of("bob").await.unwrap().len(), 2);
    assert_eq!(store.delete_user("bob", None).await.unwrap(), 2);
    assert_eq!(store.load(&old).await.unwrap(), None);
    assert_eq!(store.load(&new).await.unwrap(), None);
    assert_eq!(store.load(&other).await.unwrap(), Some(eve));
    assert!(store.delete(&anonymous).await.unwrap());
}

/// A first-layout record whose `m:exp` passed by the application's clock (Redis has not
/// expired the key yet) counts as gone: no load, no patch, no touch, and a create replaces it
/// with a record in the new layout.
#[tokio::test]
async fn first_layout_record_expired_by_the_clock_is_gone() {
    let server = RedisServer::shared();
    let store = store(server).await;
    let key = SessionId::generate().key();
    let rkey = store.session_key(&key);
    let mut r = first_layout_record(None);
    let now = Timestamp::now();
    r.meta.expires_at = Timestamp(now.as_millis() - 1_000);
    write_first_layout(server, &store, &key, &r, now.plus(HOUR));

    assert_eq!(store.load(&key).await.unwrap(), None);
    let patch = Patch::new(now, now.plus(HOUR)).set("counter", "2");
    assert_eq!(store.apply(&key, &patch).await.unwrap(), Applied::Missing);
    assert_eq!(
        store.touch(&key, now, now.plus(HOUR)).await.unwrap(),
        Applied::Missing
    );
    assert_eq!(hash(server, &rkey)["d:counter"], "1", "nothing written");

    let mut fresh = Record::new(now, now.plus(HOUR));
    fresh.data.insert("counter".into(), "9".into());
    assert_eq!(store.create(&key, &fresh).await.unwrap(), Created::Done);
    assert_eq!(field_names(&hash(server, &rkey)), ["c", "d:counter", "e"]);
    assert_eq!(store.load(&key).await.unwrap(), Some(fresh));
}

/// A new anonymous one-field session is `e`, `c` and its data field, nothing else (last seen
/// is the creation time, remember me is off, no user, no user agent); Redis keeps it as a
/// listpack smaller than the same record in the first layout. Patches and touches add `s`
/// (and `r`), and every field reads back.
#[tokio::test]
async fn new_records_are_compact() {
    let server = RedisServer::shared();
    let store = store(server).await;
    let key = SessionId::generate().key();
    let rkey = store.session_key(&key);
    let now = Timestamp::now();
    let mut r = Record::new(now, now.plus(HOUR));
    r.data.insert("counter".into(), "1".into());
    assert_eq!(store.create(&key, &r).await.unwrap(), Created::Done);
    let h = hash(server, &rkey);
    assert_eq!(field_names(&h), ["c", "d:counter", "e"]);
    assert_eq!(h["e"], now.plus(HOUR).as_millis().to_string());
    assert_eq!(h["c"], now.as_millis().to_string());
    assert_eq!(pexpiretime(server, &rkey), now.plus(HOUR).as_millis());
    assert_eq!(
        ok(server, &["OBJECT", "ENCODING", &rkey]),
        Resp::Bulk(Some(b"listpack".to_vec()))
    );
    let Resp::Int(new_size) = ok(server, &["MEMORY", "USAGE", &rkey]) else {
        panic!("MEMORY USAGE");
    };
    let old_key = SessionId::generate().key();
    write_first_layout(server, &store, &old_key, &r, r.meta.expires_at);
    let Resp::Int(old_size) = ok(server, &["MEMORY", "USAGE", &store.session_key(&old_key)]) else {
        panic!("MEMORY USAGE");
    };
    assert!(
        new_size < old_size,
        "new layout {new_size} bytes, first layout {old_size}"
    );
    assert_eq!(store.load(&key).await.unwrap(), Some(r.clone()));

    let later = Timestamp(now.as_millis() + 5);
    let mut patch = Patch::new(later, later.plus(2 * HOUR)).set("counter", "2");
    patch.remember = Some(true);
    assert_eq!(store.apply(&key, &patch).await.unwrap(), Applied::Done);
    r.apply(&patch);
    assert_eq!(
        field_names(&hash(server, &rkey)),
        ["c", "d:counter", "e", "r", "s"]
    );
    assert_eq!(store.load(&key).await.unwrap(), Some(r.clone()));
    patch.remember = Some(false);
    assert_eq!(store.apply(&key, &patch).await.unwrap(), Applied::Done);
    r.apply(&patch);
    assert_eq!(store.load(&key).await.unwrap(), Some(r.clone()));
    let seen = Timestamp(now.as_millis() + 10);
    assert_eq!(
        store.touch(&key, seen, seen.plus(HOUR)).await.unwrap(),
        Applied::Done
    );
    r.meta.last_seen = seen;
    r.meta.expires_at = seen.plus(HOUR);
    assert_eq!(store.load(&key).await.unwrap(), Some(r));
    assert_eq!(pexpiretime(server, &rkey), seen.plus(HOUR).as_millis());
}

/// Patches with more fields than one `unpack` holds, on both layouts.
#[tokio::test]
async fn big_patches_on_both_layouts() {
    let server = RedisServer::shared();
    let store = store(server).await;
    let now = Timestamp::now();
    let mut patch = Patch::new(now, now.plus(HOUR));
    for i in 0..1_500 {
        patch = patch.set(format!("f{i}"), i.to_string());
    }
    patch.remember = Some(true);
    let (new, old) = (SessionId::generate().key(), SessionId::generate().key());
    let mut fresh = Record::new(now, now.plus(HOUR));
    for i in 0..1_200 {
        fresh.data.insert(format!("g{i}"), "0".into());
    }
    assert_eq!(store.create(&new, &fresh).await.unwrap(), Created::Done);
    assert_eq!(store.load(&new).await.unwrap(), Some(fresh.clone()));
    let first = first_layout_record(None);
    write_first_layout(server, &store, &old, &first, first.meta.expires_at);
    for (key, mut expected) in [(new, fresh), (old, first)] {
        assert_eq!(store.apply(&key, &patch).await.unwrap(), Applied::Done);
        expected.apply(&patch);
        assert_eq!(store.load(&key).await.unwrap(), Some(expected));
    }
}

/// `layout=1` (for a rolling upgrade): new records get exactly the first layout's fields,
/// all four times-and-flag fields included (what a binary from before the compact layout
/// requires), whether created by `RESTORE` or, where the server refuses it, by the script;
/// the store then uses them like any first-layout record.
#[tokio::test]
async fn layout_1_creates_first_layout_records() {
    let server = RedisServer::start();
    let acl = [
        "ACL",
        "SETUSER",
        "norestore",
        "on",
        ">pw",
        "~*",
        "+@all",
        "-restore",
    ];
    ok(&server, &acl);
    let by_script = format!("redis://norestore:pw@127.0.0.1:{}/0", server.port());
    for (url, how) in [(server.url(), "RESTORE"), (by_script, "script")] {
        let store = RedisStore::builder(format!("{url}?layout=1"))
            .prefix(unique_prefix())
            .build()
            .await
            .expect("open");
        let key = SessionId::generate().key();
        let now = Timestamp::now();
        let mut record = Record::new(now, now.plus(HOUR));
        record.meta.user = Some("ada".into());
        record.data.insert("counter".into(), "1".into());
        assert_eq!(store.create(&key, &record).await.unwrap(), Created::Done);
        let h = hash(&server, &store.session_key(&key));
        assert_eq!(
            field_names(&h),
            [
                "d:counter",
                "m:created",
                "m:exp",
                "m:rem",
                "m:seen",
                "m:user"
            ],
            "{how}"
        );
        assert_eq!(h["m:rem"], "0", "{how}");
        assert_eq!(
            store.load(&key).await.unwrap(),
            Some(record.clone()),
            "{how}"
        );
        let later = Timestamp::now();
        let patch = Patch::new(later, later.plus(HOUR)).set("counter", "2");
        assert_eq!(store.apply(&key, &patch).await.unwrap(), Applied::Done);
        let h = hash(&server, &store.session_key(&key));
        assert_eq!(h["d:counter"], "2", "{how}");
        assert!(!h.contains_key("e") && !h.contains_key("s"), "{how}: {h:?}");
        assert_eq!(store.sessions_of("ada").await.unwrap().len(), 1, "{how}");
        assert!(store.delete(&key).await.unwrap(), "{how}");
    }
    for bad in ["?layout=3", "?layout=first"] {
        let err = RedisStore::open(&format!("{}{bad}", server.url()))
            .await
            .expect_err(bad);
        assert_eq!(
            err.kind(),
            cloakroom_core::store::ErrorKind::Config,
            "{bad}"
        );
    }
}
