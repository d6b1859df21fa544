"""A small Tornado + pycket app sharing sessions, notifications and _xsrf with the demo.

Started by examples/demo/tests/interop.rs with the venv's Python:

    app.py --redis-port P --db-sessions 5 --db-notifications 11 --cookie-secret S

It listens on a free loopback port and prints "listening on http://127.0.0.1:PORT" once
ready. It exits on SIGTERM and by itself when its parent process dies.

Sessions use pycket's SessionMixin and NotificationMixin with transactional writes
(pycket_watch.py); xsrf_cookies is on, so every POST needs the _xsrf token.
"""
import argparse
import json
import os
import signal
import sys

import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pycket_watch import WatchedNotificationMixin, WatchedSessionMixin  # noqa: E402


def plain(value):
    """A JSON-able view of a session value."""
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


class Handler(WatchedSessionMixin, WatchedNotificationMixin, tornado.web.RequestHandler):
    def reply(self, obj):
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(obj))

    def has_session_cookie(self):
        # pycket makes a new session id (and cookie) on every session access without a
        # cookie: read-only pages check first.
        return self.get_secure_cookie("PYCKET_ID") is not None


class Xsrf(Handler):
    def get(self):
        self.reply({"token": self.xsrf_token.decode()})


class Login(Handler):
    def post(self):
        self.session.set("ID", self.get_argument("name"))
        self.reply({"ok": True})


class WhoAmI(Handler):
    def get(self):
        if not self.has_session_cookie():
            return self.reply({"id": None, "keys": []})
        keys = sorted(str(k) for k in self.session.keys())
        self.reply({"id": plain(self.session.get("ID")), "keys": keys})


class Session(Handler):
    def get(self):
        if not self.has_session_cookie():
            return self.reply({})
        self.reply({str(k): plain(self.session.get(k)) for k in self.session.keys()})


class Set(Handler):
    def post(self):
        self.session.set(self.get_argument("key"), self.get_argument("value"))
        self.reply({"ok": True})


class Notify(Handler):
    def post(self):
        self.notifications.set(self.get_argument("level"), self.get_argument("text"))
        self.reply({"ok": True})


class Notification(Handler):
    def get(self, name):
        if not self.has_session_cookie():
            return self.reply({"text": None})
        self.reply({"text": plain(self.notifications.get(name))})


class Echo(Handler):
    def post(self):
        self.reply({"ok": True})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--db-sessions", type=int, default=0)
    parser.add_argument("--db-notifications", type=int, default=1)
    parser.add_argument("--cookie-secret", required=True)
    args = parser.parse_args()

    app = tornado.web.Application(
        [
            (r"/xsrf", Xsrf),
            (r"/login", Login),
            (r"/whoami", WhoAmI),
            (r"/session", Session),
            (r"/set", Set),
            (r"/notify", Notify),
            (r"/notification/(\w+)", Notification),
            (r"/echo", Echo),
        ],
        cookie_secret=args.cookie_secret,
        xsrf_cookies=True,
        pycket={
            "engine": "redis",
            "storage": {
                "host": "127.0.0.1",
                "port": args.redis_port,
                "db_sessions": args.db_sessions,
                "db_notifications": args.db_notifications,
            },
        },
    )
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    parent = os.getppid()

    def watch_parent():
        if os.getppid() != parent:
            os._exit(0)

    tornado.ioloop.PeriodicCallback(watch_parent, 500).start()
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
