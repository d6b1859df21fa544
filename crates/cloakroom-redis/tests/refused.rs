//! A server that refuses `RESTORE` (here an ACL user without it: it is in `@dangerous`) still
//! gets its sessions: by the create script, from the first refusal on; other stores in the
//! process keep using `RESTORE`. One that refuses `MULTI` gets its patches by script.

use std::time::Duration;

use cloakroom_core::session::{SessionId, Timestamp};
use cloakroom_core::store::{Applied, Created, Patch, Record, SessionStore};
use cloakroom_redis::RedisStore;
use cloakroom_testkit::redis_server::{RedisServer, Resp};

/// `RESTORE`s the ACL log recorded as refused (its entries count repeats).
fn refusals(server: &RedisServer) -> i64 {
    refusals_of(server, "restore")
}

/// Calls of `command` the ACL log recorded as refused.
fn refusals_of(server: &RedisServer, command: &str) -> i64 {
    let Ok(Resp::Array(Some(entries))) = server.command(&["ACL", "LOG"]) else {
        panic!("ACL LOG");
    };
    let mut refused = 0;
    for entry in &entries {
        let Resp::Array(Some(fields)) = entry else {
            continue;
        };
        let field = |name: &str| fields.chunks(2).find(|kv| kv[0].as_str() == Some(name));
        if field("object").and_then(|kv| kv[1].as_str()) == Some(command) {
            if let Some([_, Resp::Int(n)]) = field("count") {
                refused += n;
            }
        }
    }
    refused
}

#[tokio::test]
async fn sessions_are_created_by_script_when_restore_is_refused() {
    let server = RedisServer::start();
    let acl = [
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">app-password",
        "~*",
        "&*",
        "+@all",
        "-restore",
    ];
    assert_eq!(server.command(&acl).unwrap(), Resp::Simple("OK".into()));
    let url = format!("redis://app:app-password@127.0.0.1:{}/", server.port());
    let store = RedisStore::open(&url).await.expect("open");

    let now = Timestamp::now();
    let mut record = Record::new(now, now.plus(Duration::from_secs(3600)));
    record.data.insert("counter".into(), "1".into());
    for round in ["first", "second"] {
        let key = SessionId::generate().key();
        server.reset_stats();
        assert_eq!(
            store.create(&key, &record).await.unwrap(),
            Created::Done,
            "{round}"
        );
        let sent = server.commands_sent();
        // A command refused by ACL does not run (no slow-log entry): only the script shows,
        // loaded on first use; the refusal is in the ACL log, once.
        let expected: &[&str] = if round == "first" {
            &["evalsha", "script", "evalsha"]
        } else {
            &["evalsha"]
        };
        assert_eq!(sent, expected, "{round} create");
        assert_eq!(refusals(&server), 1, "{round} create");
        assert_eq!(store.load(&key).await.unwrap(), Some(record.clone()));
    }
}

/// The refusal is the store's: another store in the same process, on a server that allows
/// `RESTORE`, keeps creating sessions with it.
#[tokio::test]
async fn a_refusal_turns_restore_off_for_that_store_only() {
    let (refusing, allowing) = (RedisServer::start(), RedisServer::start());
    let acl = [
        "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-restore",
    ];
    assert_eq!(refusing.command(&acl).unwrap(), Resp::Simple("OK".into()));
    let url = format!("redis://app:pw@127.0.0.1:{}/", refusing.port());
    let refused = RedisStore::open(&url).await.expect("open");
    let other = RedisStore::open(&allowing.url()).await.expect("open");

    let now = Timestamp::now();
    let record = Record::new(now, now.plus(Duration::from_secs(3600)));
    let key = SessionId::generate().key();
    assert_eq!(refused.create(&key, &record).await.unwrap(), Created::Done);
    assert_eq!(refusals(&refusing), 1);
    for round in ["first", "second"] {
        allowing.reset_stats();
        let key = SessionId::generate().key();
        assert_eq!(other.create(&key, &record).await.unwrap(), Created::Done);
        assert_eq!(allowing.commands_sent(), ["restore"], "{round} create");
    }
}

/// A user who may not run `MULTI` (as a proxy that does not know it, or Redis 6.2, which
/// refuses the transaction's `PEXPIREAT` flags): the first patch's transaction is refused and
/// the patch made by the apply script, and so is every later one; a patch of a missing
/// session still leaves nothing behind.
#[tokio::test]
async fn patches_are_made_by_script_when_multi_is_refused() {
    let server = RedisServer::start();
    let acl = [
        "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-multi",
    ];
    assert_eq!(server.command(&acl).unwrap(), Resp::Simple("OK".into()));
    let url = format!("redis://app:pw@127.0.0.1:{}/", server.port());
    let store = RedisStore::open(&url).await.expect("open");

    let now = Timestamp::now();
    let hour = Duration::from_secs(3600);
    let mut record = Record::new(now, now.plus(hour));
    record.data.insert("counter".into(), "1".into());
    let key = SessionId::generate().key();
    assert_eq!(store.create(&key, &record).await.unwrap(), Created::Done);
    for (round, counter) in [("first", "2"), ("second", "3")] {
        let patch = Patch::new(now, now.plus(hour)).set("counter", counter);
        server.reset_stats();
        assert_eq!(store.apply(&key, &patch).await.unwrap(), Applied::Done);
        let sent = server.commands_sent();
        // The refused `MULTI` runs nothing, the commands behind it run one by one (harmless
        // in this order), then the script, loaded on first use.
        let expected: &[&str] = if round == "first" {
            &[
                "hset",
                "pexpireat",
                "pexpireat",
                "evalsha",
                "script",
                "evalsha",
            ]
        } else {
            &["evalsha"]
        };
        assert_eq!(sent, expected, "{round} patch");
        assert_eq!(refusals_of(&server, "multi"), 1, "{round} patch");
        record.apply(&patch);
        assert_eq!(store.load(&key).await.unwrap(), Some(record.clone()));
    }
    let gone = SessionId::generate().key();
    let patch = Patch::new(now, now.plus(hour)).set("counter", "1");
    assert_eq!(store.apply(&gone, &patch).await.unwrap(), Applied::Missing);
    assert_eq!(store.load(&gone).await.unwrap(), None);
    assert_eq!(server.command(&["DBSIZE"]).unwrap(), Resp::Int(1));
}
