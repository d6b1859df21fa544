//! The commit: carries out the [`plan`](super::plan::plan) of what the request's session
//! needs written against the store. At most one store operation, two for a renewal or a
//! logout that starts a new session (create the new record, delete the old).

use std::fmt;

use super::admission::{limit_for, refused};
use super::forward::{forward_key, forward_record};
use super::handle::Session;
use super::lifecycle::{EndReason, EventKind};
use super::limits::{deadline, timed, truncate};
use super::plan::{CommitPlan, plan};
use super::seal::{seal_patch, sealed_record};
use super::state::{Live, Phase, State};
use super::{MAX_USER_AGENT, Result, SessionId, SessionKey, Timestamp};
use crate::store::{self, Admitted, Applied, Created, Limit, Patch, Record};
use crate::store::{create_session, end_session};
use crate::telemetry::{self, SessionEvent};

/// How many ids a create tries before it gives up (a collision of 256-bit random ids means
/// a broken store or random source, not bad luck).
const CREATE_ATTEMPTS: usize = 4;

/// What the adapter must add to the response after [`SessionEngine::commit`](super::SessionEngine::commit).
///
/// `Debug` does not print the ticket header's value.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct CommitOutcome {
    /// A `Set-Cookie` header value to send (new ticket, refreshed Max-Age, or removal).
    pub set_cookie: Option<String>,
    /// For a session that travels by header ([`Transport`](super::Transport)), the value of
    /// [`TICKET_RESPONSE_HEADER`](super::TICKET_RESPONSE_HEADER) to send instead of a
    /// cookie: the new ticket, or empty when the session ended.
    pub ticket_header: Option<String>,
    /// Which state-machine branch ran (for logs, metrics and tests).
    pub action: CommitAction,
}

impl fmt::Debug for CommitOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "REDACTED");
        f.debug_struct("CommitOutcome")
            .field("set_cookie", &redacted(&self.set_cookie))
            .field("ticket_header", &redacted(&self.ticket_header))
            .field("action", &self.action)
            .finish()
    }
}

/// What a response tells the client about its ticket.
enum Issued<'a> {
    /// The ticket of `id`, persistent until the expiry when `remember`.
    Ticket(&'a SessionId, bool, Timestamp),
    /// The ticket is void: remove the cookie (or send an empty ticket header).
    Removal,
}

/// The branch of the commit state machine that ran.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitAction {
    /// Nothing to do.
    #[default]
    None,
    /// A new session was created.
    Created,
    /// Changed fields were patched in.
    Patched,
    /// The id was renewed (login, `cycle_id`).
    Renewed,
    /// The session was destroyed.
    Destroyed,
    /// Only the expiry moved.
    Touched,
    /// The session vanished while the request ran (logged out elsewhere, expired); its
    /// changes were dropped rather than resurrect it.
    Vanished,
}

/// The records a request ended, taken from its state for the commit.
struct Retired {
    /// Sessions it ended (logout): each deleted, and told to the lifecycle.
    keys: Vec<SessionKey>,
    /// Their user, when known.
    user: Option<String>,
    /// Records deleted with them that are no sessions: the forward the session was reached
    /// through, the tombstone of a session the limit ended (told when it ended).
    silent: Vec<SessionKey>,
}

impl Retired {
    fn take(
        keys: &mut Vec<SessionKey>,
        user: &mut Option<String>,
        forward: &mut Option<SessionKey>,
        tombstone: &mut Option<SessionKey>,
    ) -> Self {
        let mut keys = std::mem::take(keys);
        let tombstone = tombstone.take();
        keys.retain(|k| Some(*k) != tombstone);
        Retired {
            keys,
            user: user.take(),
            silent: forward.take().into_iter().chain(tombstone).collect(),
        }
    }
}

impl Session {
    /// Writes the session to the store: the commit state machine. Call once, when the
    /// response is ready; later changes fail with [`ErrorKind::Committed`](super::ErrorKind::Committed).
    /// `user_agent` (the request's `User-Agent`) is recorded if this creates the session:
    /// taken here, not per request, so requests that create nothing copy nothing.
    ///
    /// # Errors
    /// Store failures (answer 503: nothing the handler did to the session was saved, except
    /// that a failed renewal leaves the old session usable).
    pub(crate) async fn commit(&self, user_agent: Option<&str>) -> Result<CommitOutcome> {
        let mut guard = self.inner.state.lock().await;
        let st: &mut State = &mut guard;
        if st.committed {
            return Ok(CommitOutcome::default());
        }
        st.committed = true;
        let now = Timestamp::now();
        let plan = plan(st, self.inner.had_cookie, now, self.config());
        self.execute(st, plan, now, user_agent).await
    }

    /// The commit, done at once when it needs no store operation (the usual case of a request
    /// that only read its session, or had none): `None` when it does, and then
    /// `Session::commit` must run. Lets an adapter skip an asynchronous step (and its
    /// allocation) on most requests.
    pub(crate) fn commit_now(&self) -> Option<CommitOutcome> {
        let mut st = self.inner.state.try_lock().ok()?;
        if st.committed {
            return Some(CommitOutcome::default());
        }
        // A read-only request decides at the time its record was loaded (a touch due a few
        // milliseconds later happens on the next request).
        let now = st.loaded_at.unwrap_or_else(Timestamp::now);
        let plan = plan(&st, self.inner.had_cookie, now, self.config());
        let CommitPlan::Nothing { clear_cookie } = plan else {
            return None;
        };
        st.committed = true;
        Some(self.answer(CommitAction::None, clear_cookie.then_some(Issued::Removal)))
    }

    /// Carries out `plan` on `st`: one store operation (two for a renewal or a new session
    /// after a logout), each under the store timeout.
    async fn execute(
        &self,
        st: &mut State,
        plan: CommitPlan,
        now: Timestamp,
        user_agent: Option<&str>,
    ) -> Result<CommitOutcome> {
        match plan {
            CommitPlan::Nothing { clear_cookie } => {
                Ok(self.answer(CommitAction::None, clear_cookie.then_some(Issued::Removal)))
            }
            CommitPlan::Delete { clear_cookie } => {
                let retired = Retired::take(
                    &mut st.retired,
                    &mut st.retired_user,
                    &mut st.retired_forward,
                    &mut st.retired_tombstone,
                );
                self.end_retired(retired, now).await?;
                let removal = clear_cookie.then_some(Issued::Removal);
                Ok(self.answer(CommitAction::Destroyed, removal))
            }
            CommitPlan::Blind {
                expires_at,
                max_lifetime,
                max_idle,
            } => {
                let mut patch = Patch::new(now, expires_at);
                patch.max_lifetime = Some(max_lifetime);
                patch.max_idle = Some(max_idle);
                self.commit_blind(st, patch, user_agent).await
            }
            CommitPlan::Create {
                last_seen,
                expires_at,
                renewed,
            } => {
                let times = (last_seen, expires_at);
                self.commit_create(st, times, renewed, user_agent).await
            }
            CommitPlan::Patch {
                expires_at,
                remember,
                send_cookie,
            } => {
                let mut patch = Patch::new(now, expires_at);
                patch.remember = remember;
                self.commit_patch(st, patch, send_cookie).await
            }
            CommitPlan::Touch {
                expires_at,
                send_cookie,
            } => self.commit_touch(st, now, expires_at, send_cookie).await,
        }
    }

    /// Writes the live session as a new record (under its reserved id, or a fresh one), then
    /// deletes what it replaces: the record a renewal leaves, those a logout retired.
    async fn commit_create(
        &self,
        st: &mut State,
        (last_seen, expires_at): (Timestamp, Timestamp),
        renewed: bool,
        user_agent: Option<&str>,
    ) -> Result<CommitOutcome> {
        let State {
            phase: Phase::Live(live),
            retired,
            retired_user,
            retired_forward,
            retired_tombstone,
            changes,
            ..
        } = st
        else {
            return Ok(CommitOutcome::default());
        };
        let meta = &mut live.record.meta;
        let old_expiry = meta.expires_at;
        meta.last_seen = last_seen;
        meta.expires_at = expires_at;
        if meta.user_agent.is_none() {
            meta.user_agent = user_agent.map(|ua| truncate(ua, MAX_USER_AGENT).to_owned());
        }
        let replacing = live.stored.filter(|_| live.renew);
        let limit = limit_for(self.config(), &live.record, replacing);
        let kind = match replacing {
            Some(previous) => EventKind::Rotated { previous },
            None => EventKind::Created,
        };
        let (id, key) = (self.create(live.id.take(), &live.record, limit, kind)).await?;
        // The new record is in: now the old ones go (a failure here leaves them to expire;
        // the response is still a 503, so the client keeps its old ticket).
        let replaced = if live.renew { live.stored.take() } else { None };
        if let Some(old) = &replaced {
            self.lifecycle().moved(old, &key);
        }
        let grace = self.config().rotation_grace;
        let limit = self.config().store_timeout;
        let mut forward = None;
        if let (Some(old), true, false) = (&replaced, live.grace, grace.is_zero()) {
            // A rotation that changes no privilege: the old ticket reaches the new record
            // until the grace ends. The forward goes in before the old record goes out, so
            // a parallel request with the old ticket always finds one or the other.
            let until = last_seen.plus(grace).min(old_expiry);
            let via = forward_key(old);
            let record = forward_record(&key, last_seen, until);
            match timed(limit, self.store().create(&via, &record)).await? {
                Created::Done => forward = Some(via),
                Created::Collision => {
                    tracing::warn!("a rotation grace forward already existed; kept the older one");
                }
            }
        }
        let retired = Retired::take(retired, retired_user, retired_forward, retired_tombstone);
        self.end_retired(retired, last_seen).await?;
        if let Some(via) = &live.forward {
            timed(limit, self.store().delete(via)).await?;
        }
        if let Some(old) = &replaced {
            let was_live = timed(limit, self.store().delete(old)).await?;
            if let (false, Some(via)) = (was_live, &forward) {
                // The old session ended while this request ran (a logout, a revocation):
                // its ticket must not live on through the forward.
                timed(limit, self.store().delete(via)).await?;
            }
        }
        // A renewal replaces a stored record; anything else (a login without one, say) is new.
        let event = match replaced {
            Some(previous) => EventKind::Rotated { previous },
            None => EventKind::Created,
        };
        self.lifecycle()
            .emit(event, &key, live.record.meta.user.as_deref());
        let remember = live.record.meta.remember;
        let outcome = self.answer(
            if renewed {
                CommitAction::Renewed
            } else {
                CommitAction::Created
            },
            Some(Issued::Ticket(&id, remember, expires_at)),
        );
        live.id = Some(id);
        live.stored = Some(key);
        live.forward = None;
        live.renew = false;
        live.remember_changed = false;
        changes.clear();
        Ok(outcome)
    }

    /// Deletes the records this request ended (logout), with the forward it was reached
    /// through, and tells the lifecycle of each session that was still there.
    async fn end_retired(&self, retired: Retired, now: Timestamp) -> Result<()> {
        let Retired { keys, user, silent } = retired;
        let limit = self.config().store_timeout;
        for key in keys {
            // A logout made without reading the session does not know its user: with a
            // listener, one load tells it (the event names the user).
            let user = match (&user, self.lifecycle().has_listener()) {
                (None, true) => timed(limit, self.store().load(&key))
                    .await?
                    .and_then(|r| r.meta.user),
                _ => user.clone(),
            };
            if let Some(ended) = self.end(&key, user.as_deref(), now).await? {
                let kind = EventKind::Ended(EndReason::Logout);
                self.lifecycle().emit(kind, &ended, user.as_deref());
            }
        }
        for key in silent {
            timed(limit, self.store().delete(&key)).await?;
        }
        Ok(())
    }

    /// Deletes the record under `key`, which this request ended (logout); the key of the
    /// session record it deleted, if any. When there is none and a rotation grace is
    /// configured, `key` may be an old ticket's: the record its forward names is deleted too,
    /// and the forward, so both tickets end at once.
    async fn end(
        &self,
        key: &SessionKey,
        user: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<SessionKey>> {
        let limit = self.config().store_timeout;
        let store = &**self.store();
        let logout = EndReason::Logout;
        if timed(limit, end_session(store, key, logout, user)).await? {
            return Ok(Some(*key));
        }
        if let Some((via, to)) = self.forward_of(key, now).await? {
            let deleted = timed(limit, end_session(store, &to, logout, user)).await?;
            timed(limit, self.store().delete(&via)).await?;
            return Ok(deleted.then_some(to));
        }
        Ok(None)
    }

    /// Patches the changed fields (taken from the state, not copied) into the stored record.
    async fn commit_patch(
        &self,
        st: &mut State,
        mut patch: Patch,
        send_cookie: bool,
    ) -> Result<CommitOutcome> {
        let State {
            phase: Phase::Live(live),
            changes,
            seal_key,
            ..
        } = st
        else {
            return Ok(CommitOutcome::default());
        };
        let Some(key) = &live.stored else {
            return Ok(CommitOutcome::default());
        };
        for (name, change) in std::mem::take(changes) {
            match change {
                Some(json) => patch.set.push((name, json)),
                None => patch.remove.push(name),
            }
        }
        match &live.id {
            Some(id) => seal_patch(self.config(), seal_key, (id, key), &mut patch),
            // Reached through a grace forward: never with sealing (the settings refuse both).
            None => debug_assert!(!self.config().seal_data),
        }
        live.record.meta.last_seen = patch.last_seen;
        live.record.meta.expires_at = patch.expires_at;
        let limit = self.config().store_timeout;
        Ok(match timed(limit, self.store().apply(key, &patch)).await? {
            // A session reached through an old ticket (no `id`) sends no ticket: the old
            // one is not renewed, the new one went to the request that rotated it.
            Applied::Done => {
                let remember = live.record.meta.remember;
                let issued = (live.id.as_ref())
                    .filter(|_| send_cookie)
                    .map(|id| Issued::Ticket(id, remember, patch.expires_at));
                self.answer(CommitAction::Patched, issued)
            }
            Applied::Missing => self.vanished(),
        })
    }

    /// Moves the stored record's expiry (the cookie's too, for a remembered session).
    async fn commit_touch(
        &self,
        st: &mut State,
        now: Timestamp,
        expires_at: Timestamp,
        send_cookie: bool,
    ) -> Result<CommitOutcome> {
        let Phase::Live(live) = &mut st.phase else {
            return Ok(CommitOutcome::default());
        };
        let Some(key) = &live.stored else {
            return Ok(CommitOutcome::default());
        };
        live.record.meta.last_seen = now;
        live.record.meta.expires_at = expires_at;
        let limit = self.config().store_timeout;
        Ok(
            match timed(limit, self.store().touch(key, now, expires_at)).await? {
                Applied::Done => {
                    let issued = (live.id.as_ref())
                        .filter(|_| send_cookie)
                        .map(|id| Issued::Ticket(id, true, expires_at));
                    self.answer(CommitAction::Touched, issued)
                }
                Applied::Missing => self.vanished(),
            },
        )
    }

    /// Commits writes made without a load: one `patch` (its times and bounds set by the
    /// plan); if the ticket's session is gone, or one a load would refuse, a new session (new
    /// id) holding the values set, as a write without any session would.
    async fn commit_blind(
        &self,
        st: &mut State,
        mut patch: Patch,
        user_agent: Option<&str>,
    ) -> Result<CommitOutcome> {
        let shared = &*self.inner.shared;
        let Phase::Unloaded { first, .. } = &st.phase else {
            return Ok(CommitOutcome::default());
        };
        let key = shared.format.store_key(first);
        let now = patch.last_seen;
        for (name, change) in &st.changes {
            match change {
                Some(json) => patch.set.push((name.clone(), json.clone())),
                None => patch.remove.push(name.clone()),
            }
        }
        seal_patch(self.config(), &mut None, (first, &key), &mut patch);
        let limit = shared.config.store_timeout;
        let mut applied = timed(limit, shared.store.apply(&key, &patch)).await?;
        if applied == Applied::Missing {
            // An old ticket within a rotation grace (never with sealed data): the write lands
            // in the new record.
            if let Some((_, to)) = self.forward_of(&key, now).await? {
                applied = timed(limit, shared.store.apply(&to, &patch)).await?;
            }
        }
        if applied == Applied::Done {
            st.changes.clear();
            return Ok(self.answer(CommitAction::Patched, None));
        }
        // The ticket's session is gone (or one a load would refuse).
        telemetry::sessions(SessionEvent::Ended("expired"), 1);
        let mut record = Record::new(now, deadline(&shared.config, now, now));
        record.meta.user_agent = user_agent.map(|ua| truncate(ua, MAX_USER_AGENT).to_owned());
        // The values as set (the patch's are sealed for the gone session).
        let set = st
            .changes
            .iter()
            .filter_map(|(n, c)| Some((n.clone(), c.clone()?)));
        record.data.extend(set);
        if record.data.is_empty() {
            return Ok(self.answer(CommitAction::Vanished, Some(Issued::Removal)));
        }
        let (id, key) = self.create(None, &record, None, EventKind::Created).await?;
        self.lifecycle().emit(EventKind::Created, &key, None);
        let issued = Issued::Ticket(&id, false, record.meta.expires_at);
        let outcome = self.answer(CommitAction::Created, Some(issued));
        st.phase = Phase::Live(Live::loaded(Some(id), key, record, None));
        st.changes.clear();
        Ok(outcome)
    }

    /// Creates `record` under `reserved` (or a fresh id), retrying with fresh ids on a
    /// collision: the id and store key it went in under. Under a `limit` (a login with the
    /// concurrent-session limit on), in one atomic store step that may end the user's least
    /// recently seen sessions or refuse ([`ErrorKind::SessionLimit`](super::ErrorKind::SessionLimit)).
    async fn create(
        &self,
        reserved: Option<SessionId>,
        record: &Record,
        limit: Option<Limit>,
        kind: EventKind,
    ) -> Result<(SessionId, SessionKey)> {
        let shared = &*self.inner.shared;
        let mut id = reserved.unwrap_or_else(|| shared.new_id(record));
        for _ in 0..CREATE_ATTEMPTS {
            let key = shared.format.store_key(&id);
            let stored = sealed_record(self.config(), &id, &key, record);
            let record = stored.as_ref().unwrap_or(record);
            let timeout = shared.config.store_timeout;
            let create = create_session(&*shared.store, &key, record, limit.as_ref(), kind.clone());
            let created = match timed(timeout, create).await? {
                Admitted::Done { ended } => {
                    let user = record.meta.user.as_deref();
                    for gone in &ended {
                        let kind = EventKind::Ended(EndReason::Limit);
                        self.lifecycle().emit(kind, gone, user);
                    }
                    Created::Done
                }
                Admitted::Collision => Created::Collision,
                Admitted::Refused => return Err(refused()),
            };
            match created {
                Created::Done => return Ok((id, key)),
                Created::Collision => {
                    tracing::warn!("session id collision; retrying with a new id");
                    id = shared.new_id(record);
                }
            }
        }
        Err(store::Error::new(
            store::ErrorKind::Backend,
            "session create kept colliding; is the store returning stale data?",
        )
        .into())
    }

    fn vanished(&self) -> CommitOutcome {
        tracing::info!("session ended while the request ran; its changes were dropped");
        telemetry::sessions(SessionEvent::Ended("vanished"), 1);
        self.answer(CommitAction::Vanished, Some(Issued::Removal))
    }

    /// The outcome of `action`, telling the client about its ticket (`issued`) the way this
    /// session travels: a `Set-Cookie` value (the ticket persistent until its expiry when
    /// remembered, a browser-session cookie otherwise; or a removal), or for a header
    /// session the ticket header's value (the ticket, or empty).
    fn answer(&self, action: CommitAction, issued: Option<Issued<'_>>) -> CommitOutcome {
        let shared = &*self.inner.shared;
        let cookie = &shared.config.cookie;
        let ticket = |id| shared.format.encode(&cookie.name, id);
        let (set_cookie, ticket_header) = match (issued, self.by_header()) {
            (None, _) => (None, None),
            (Some(Issued::Removal), false) => (Some(cookie.removal()), None),
            (Some(Issued::Removal), true) => (None, Some(String::new())),
            (Some(Issued::Ticket(id, remember, expires_at)), false) => {
                let max_age = remember.then(|| Timestamp::now().until(expires_at));
                (Some(cookie.set_cookie(&ticket(id), max_age)), None)
            }
            (Some(Issued::Ticket(id, ..)), true) => (None, Some(ticket(id))),
        };
        CommitOutcome {
            set_cookie,
            ticket_header,
            action,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionConfig;

    /// Regression: `logout()` then a write in the same request created the new session under
    /// the old id (a collision, retried) and never deleted the old record: its ticket kept
    /// working.
    #[tokio::test]
    async fn logout_then_a_write_really_ends_the_old_session() {
        use crate::keys::{Key, KeyRing};
        use crate::store::MemoryStore;
        let engine = super::super::SessionEngine::new(
            std::sync::Arc::new(MemoryStore::new()),
            KeyRing::single(Key::generate()),
            SessionConfig::default(),
        );
        let first = engine.session(None);
        first.login("ada").await.unwrap();
        let cookie = first.commit(None).await.unwrap().set_cookie.unwrap();
        let old = cookie.split(';').next().unwrap().to_owned();

        let next = engine.session(Some(&old));
        next.logout().await.unwrap();
        next.set("bye", "see you").await.unwrap();
        let outcome = next.commit(None).await.unwrap();
        let new = outcome.set_cookie.unwrap();
        let new = new.split(';').next().unwrap();
        assert_ne!(new, old);

        assert!(
            !engine.session(Some(&old)).exists().await.unwrap(),
            "old ticket still works"
        );
        let after = engine.session(Some(new));
        assert_eq!(after.user().await.unwrap(), None);
        assert_eq!(
            after.get::<String>("bye").await.unwrap().as_deref(),
            Some("see you")
        );
        assert_eq!(engine.sessions_of("ada").await.unwrap().len(), 0);
    }

    /// `commit_now` finishes the requests that need no store operation, and only those.
    #[tokio::test]
    async fn commit_now_takes_only_commits_without_store_work() {
        use crate::keys::{Key, KeyRing};
        use crate::store::MemoryStore;
        let engine = super::super::SessionEngine::new(
            MemoryStore::new(),
            KeyRing::single(Key::generate()),
            SessionConfig::default(),
        );
        let first = engine.session(None);
        assert_eq!(
            first.commit_now(),
            Some(CommitOutcome::default()),
            "no session"
        );
        let first = engine.session(None);
        first.set("a", &1).await.unwrap();
        assert_eq!(first.commit_now(), None, "a new session needs a create");
        let cookie = first.commit(None).await.unwrap().set_cookie.unwrap();
        let ticket = cookie.split(';').next().unwrap().to_owned();

        let read = engine.session(Some(&ticket));
        assert_eq!(read.get::<i32>("a").await.unwrap(), Some(1));
        assert_eq!(read.commit_now(), Some(CommitOutcome::default()), "a read");
        assert!(read.set("a", &2).await.is_err(), "committed");

        let write = engine.session(Some(&ticket));
        write.set("a", &3).await.unwrap();
        assert_eq!(write.commit_now(), None, "a blind write needs a patch");
        assert_eq!(
            write.commit(None).await.unwrap().action,
            CommitAction::Patched
        );
    }
}
