//! Not a check: what a store's event log costs a write.

use super::*;

/// Not a check: what a store's event log costs a write, printed (BENCHMARKS.md). Each
/// "write" is one of a create + delete pair, through the log on `logged` and plainly on
/// `plain`; 5 rounds of 2000 pairs one at a time and 16 tasks at once, the best of each.
pub async fn measure_event_log_cost(
    name: &str,
    plain: Arc<dyn SessionStore>,
    logged: Arc<dyn SessionStore>,
) {
    use std::time::Instant;

    use cloakroom_core::session::{EndReason, Event, EventKind, SessionId, Timestamp};
    use cloakroom_core::store::Record;

    const N: usize = 2000;
    const TASKS: usize = 16;
    fn record() -> Record {
        let now = Timestamp::now();
        let mut r = Record::new(now, now.plus(Duration::from_secs(600)));
        r.meta.user = Some("ada".into());
        r.data.insert("cart".into(), "[1,2,3]".into());
        r
    }
    fn event(kind: EventKind, session: cloakroom_core::session::SessionKey) -> Event {
        Event {
            kind,
            session,
            user: None,
            at: Timestamp::now(),
        }
    }
    /// One create and one delete; with the log, through it.
    async fn pair(store: Arc<dyn SessionStore>, log: bool) {
        let placement = store.placement();
        let key =
            cloakroom_core::store::placed(placement, Some("ada"), SessionId::generate, |id| {
                id.key()
            })
            .key();
        match store.event_log().filter(|_| log) {
            Some(l) => {
                l.create_logged(&key, &record(), None, &event(EventKind::Created, key))
                    .await
                    .unwrap();
                let end = event(EventKind::Ended(EndReason::Logout), key);
                assert!(l.delete_logged(&key, &end).await.unwrap());
            }
            None => {
                store.create(&key, &record()).await.unwrap();
                assert!(store.delete(&key).await.unwrap());
            }
        }
    }
    let mut best = [[Duration::MAX; 2]; 2];
    for round in 0..5 {
        for (i, name, store, log) in [(0, "unlogged", &plain, false), (1, "logged", &logged, true)]
        {
            let started = Instant::now();
            for _ in 0..N {
                pair(store.clone(), log).await;
            }
            let one = started.elapsed() / (2 * N) as u32;
            let started = Instant::now();
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        for _ in 0..N / TASKS {
                            pair(store.clone(), log).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let many = started.elapsed() / (2 * N) as u32;
            best[i] = [best[i][0].min(one), best[i][1].min(many)];
            println!(
                "{name} round {round} {name:>8}: one at a time {one:?}/write, {TASKS} at once {many:?}/write"
            );
        }
    }
    println!(
        "{name} best of 5: unlogged {:?} / {:?}, logged {:?} / {:?} (one at a time / {} at once)",
        best[0][0], best[0][1], best[1][0], best[1][1], TASKS
    );
}
