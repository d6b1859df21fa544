"""pycket with transactional writes, for Tornado apps that share sessions with Cloakroom.

pycket 0.3 changes a session with an unguarded read-modify-write (GET the pickle, change
the dict, SET, EXPIRE): two writers of one session (two Tornado processes, or Tornado and
Cloakroom) lose each other's updates. The managers here make every change one Redis
transaction (WATCH / GET / MULTI / SET / EXPIRE / EXEC, retried by redis-py on conflict),
and make NotificationManager.get's read-then-delete a single transaction, so a
notification is returned once even when two requests race for it. The storage format,
the cookie and every other behaviour stay pycket's.

Use the mixins in place of pycket's:

    class Handler(WatchedSessionMixin, WatchedNotificationMixin, RequestHandler): ...
"""
import pickle

from pycket.notification import NotificationManager, NotificationMixin
from pycket.session import SessionManager, SessionMixin, create_mixin


def change(client, session_id, callback, expire_seconds):
    """Runs callback(dict) on the pickled dict under session_id in one transaction.

    callback returns (result, changed); the dict is written back (SET + EXPIRE, as pycket
    does) only when changed. Returns result.
    """

    def txn(pipe):
        raw = pipe.get(session_id)
        session = {} if raw is None else pickle.loads(raw)
        result, changed = callback(session)
        pipe.multi()
        if changed:
            pipe.set(session_id, pickle.dumps(session))
            pipe.expire(session_id, expire_seconds)
        return result

    return client.transaction(txn, session_id, value_from_callable=True)


def _change_session(manager, callback):
    session_id = manager._SessionManager__get_session_id()
    manager.driver._setup_client()

    def apply(session):
        callback(session)
        return None, True

    change(manager.driver.client, session_id, apply, manager.driver.EXPIRE_SECONDS)


class WatchedSessionManager(SessionManager):
    # Replaces SessionManager's private __change_session (used by set and delete).
    def _SessionManager__change_session(self, callback):
        _change_session(self, callback)


class WatchedNotificationManager(NotificationManager):
    def _SessionManager__change_session(self, callback):
        _change_session(self, callback)

    def get(self, name, default=None):
        """The notification, removed in the same transaction (one-time read)."""
        session_id = self._SessionManager__get_session_id()
        self.driver._setup_client()

        def take(notes):
            if notes.get(name) is None:
                return None, False
            return notes.pop(name), True

        value = change(self.driver.client, session_id, take, self.driver.EXPIRE_SECONDS)
        return default if value is None else value


class WatchedSessionMixin(SessionMixin):
    @property
    def session(self):
        return create_mixin(self, '__session_manager', WatchedSessionManager)


class WatchedNotificationMixin(NotificationMixin):
    @property
    def notifications(self):
        return create_mixin(self, '__notification_manager', WatchedNotificationManager)
