//! The store's Redis user is checked when the store opens and by `ping` (the health check):
//! an ACL that does not allow the store's commands, or whose key pattern leaves out the
//! store's prefix, is a configuration error naming what is missing, not a store that opens
//! and then answers every login with 503.

use std::time::Duration;

use cloakroom_core::session::{SessionId, Timestamp};
use cloakroom_core::store::{ErrorKind, Record, SessionStore};
use cloakroom_redis::RedisStore;
use cloakroom_testkit::redis_server::{RedisServer, Resp};

/// A server with an ACL user `name` (password `pw`) of `rules`; the store URL for it.
fn user(server: &RedisServer, name: &str, rules: &[&str]) -> String {
    let mut acl = vec!["ACL", "SETUSER", name, "reset", "on", ">pw"];
    acl.extend_from_slice(rules);
    assert_eq!(server.command(&acl).unwrap(), Resp::Simple("OK".into()));
    format!("redis://{name}:pw@127.0.0.1:{}/0", server.port())
}

/// A login: a session bound to a user, so the user index is written too.
async fn login(store: &RedisStore) {
    let key = SessionId::generate().key();
    let now = Timestamp::now();
    let mut record = Record::new(now, now.plus(Duration::from_secs(60)));
    record.meta.user = Some("ada".into());
    store.create(&key, &record).await.expect("login");
    assert!(store.load(&key).await.unwrap().is_some());
    assert_eq!(store.delete_user("ada", None).await.unwrap(), 1);
}

/// Asserts that opening `url` is a configuration error whose message contains `says`.
async fn refused(url: &str, says: &str) {
    let err = RedisStore::open(url).await.expect_err(url);
    println!("{url}: {err}");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains(says), "{says:?} in {err}");
    assert!(!format!("{err} {err:?}").contains(":pw@"), "{err:?}");
}

#[tokio::test]
async fn a_user_without_the_script_commands_is_refused_at_open() {
    let server = RedisServer::start();
    let url = user(&server, "noscripts", &["~*", "+@all", "-evalsha", "-eval"]);
    refused(&url, "evalsha").await;
    let url = user(&server, "noload", &["~*", "+@all", "-script"]);
    refused(&url, "script").await;
}

/// A command the scripts run (not the call of the script itself) is checked too.
#[tokio::test]
async fn a_user_without_a_command_of_the_scripts_is_refused_at_open() {
    let server = RedisServer::start();
    let url = user(&server, "nohset", &["~*", "+@all", "-hset"]);
    refused(&url, "`HSET cloakroom:s:").await;
    let url = user(&server, "nosadd", &["~*", "+@all", "-sadd"]);
    refused(&url, "`SADD cloakroom:u:").await;
}

#[tokio::test]
async fn a_key_pattern_without_the_prefix_is_refused_at_open() {
    let server = RedisServer::start();
    let url = user(&server, "other", &["~other:*", "+@all"]);
    refused(&url, "cloakroom:").await;
    // Read-only keys under the prefix: the script call (which may write) is refused.
    let url = user(&server, "reader", &["%R~cloakroom:*", "+@all"]);
    refused(&url, "cloakroom:s:").await;
    // Sessions allowed, user indexes not.
    let url = user(&server, "half", &["~cloakroom:s:*", "+@all"]);
    refused(&url, "`SADD cloakroom:u:").await;
    // The prefix of the URL is the one checked.
    let url = user(&server, "app", &["~app:*", "+@all"]);
    refused(&url, "cloakroom:").await;
    let store = RedisStore::open(&format!("{url}?prefix=app:"))
        .await
        .expect("the user's own prefix");
    login(&store).await;
}

#[tokio::test]
async fn a_user_with_the_rights_it_needs_opens() {
    let server = RedisServer::start();
    let url = user(&server, "full", &["~cloakroom:*", "+@all"]);
    let store = RedisStore::open(&url).await.expect("full rights");
    login(&store).await;
    store.ping().await.expect("healthy");
    // The grant the error message suggests is enough, `?wait=1` included.
    let url = user(
        &server,
        "least",
        &[
            "~cloakroom:*",
            "+@read",
            "+@write",
            "+@scripting",
            "+@transaction",
            "+@connection",
        ],
    );
    let store = RedisStore::open(&url).await.expect("the suggested grant");
    login(&store).await;
    let store = RedisStore::builder(format!("{url}?wait=1"))
        .build()
        .await
        .expect("wait");
    store.ping().await.expect("healthy");
}

/// Permissions revoked after the store opened: the health check (`ping`) says so.
#[tokio::test]
async fn the_health_check_sees_a_revoked_permission() {
    let server = RedisServer::start();
    let url = user(&server, "later", &["~cloakroom:*", "+@all"]);
    let store = RedisStore::open(&url).await.expect("open");
    store.ping().await.expect("healthy");
    for revoke in [&["-evalsha"][..], &["+evalsha", "-hset"]] {
        let mut acl = vec!["ACL", "SETUSER", "later"];
        acl.extend_from_slice(revoke);
        assert_eq!(server.command(&acl).unwrap(), Resp::Simple("OK".into()));
        let err = store.ping().await.expect_err("revoked");
        println!("{revoke:?}: {err}");
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    }
    server
        .command(&["ACL", "SETUSER", "later", "+@all"])
        .unwrap();
    store.ping().await.expect("granted again");
}
