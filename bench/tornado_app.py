"""The original system for the benchmark: Tornado 6.6 + pycket 0.3 sessions in Redis.

Started by cloakroom-bench (`serve` case tornado-pycket) with the venv's Python:

    python bench/tornado_app.py --redis-port PORT

Answers the same routes as the Rust servers (see bench/src/serve.rs), listens on a free
loopback port, prints `port=N` once it accepts connections, and exits when its parent (the
harness) goes away. One process, one thread: Tornado's IOLoop, like the Rust servers' single
tokio thread. pycket is used exactly as its README shows: SessionMixin, default settings
(sessions in db 0, a new Redis client per request, SET + EXPIRE on every write).
"""
import argparse
import itertools
import os
import sys

import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web
from pycket.session import SessionMixin

LARGE_KEYS = 19
LARGE_VALUE = "x" * 512
SEQ = itertools.count()


class Base(tornado.web.RequestHandler, SessionMixin):
    def compute_etag(self):
        # The Rust servers send no ETag either.
        return None


class Init(Base):
    def get(self):
        self.session.set("counter", 0)
        self.write("0")


class InitLarge(Base):
    def get(self):
        for i in range(LARGE_KEYS):
            self.session.set("blob%02d" % i, LARGE_VALUE)
        self.write("0")


class Read(Base):
    def get(self):
        self.write(str(self.session.get("counter", 0)))


class Write(Base):
    def get(self):
        n = self.session.get("counter", 0) + 1
        self.session.set("counter", n)
        self.write(str(n))


class BlindWrite(Base):
    def get(self):
        self.session.set("last", next(SEQ))
        self.write("0")


class New(Base):
    def get(self):
        self.session.set("counter", 1)
        self.write("1")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-port", type=int, required=True)
    args = parser.parse_args()
    app = tornado.web.Application(
        [
            (r"/init", Init),
            (r"/init-large", InitLarge),
            (r"/read", Read),
            (r"/write", Write),
            (r"/blind-write", BlindWrite),
            (r"/new", New),
            (r"/large", Write),
        ],
        cookie_secret="cloakroom-bench-not-a-secret-0123456789abcdef",
        pycket={
            "engine": "redis",
            "storage": {"host": "127.0.0.1", "port": args.redis_port},
        },
    )
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    parent = os.getppid()

    def watch_parent():
        if os.getppid() != parent:
            os._exit(0)

    tornado.ioloop.PeriodicCallback(watch_parent, 500).start()
    print("port=%d" % sockets[0].getsockname()[1], flush=True)
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    sys.exit(main())
