//! `GET /metrics`, in the Prometheus text exposition format: the demo's own counters (a
//! handful of atomics per app), then the library's metrics (sessions, store operations, CSRF
//! refusals, the Redis near-cache) from the process's `metrics` recorder. With
//! `--otlp-endpoint`, the same figures also go to a collector (see [`crate::otlp`]).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::OnceLock;

use http::Method;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::FanoutBuilder;
use opentelemetry::KeyValue;

use crate::otlp;

/// The process's recorder, when [`install_recorder`] installed it (the binaries do; in-process
/// tests do not, and `/metrics` then shows the demo's counters only).
static LIBRARY: OnceLock<PrometheusHandle> = OnceLock::new();

/// Upper bounds of the store latency histogram's buckets, in seconds: from a memory store's
/// microseconds to the store timeout's seconds.
const BUCKETS: [f64; 12] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.1, 0.5, 2.0,
];

/// The library's histogram (the only one), which gets [`BUCKETS`] in OTLP too.
const STORE_HISTOGRAM: &str = "cloakroom_store_operation_duration_seconds";

/// Installs the Prometheus recorder of the `metrics` facade for this process, before any
/// engine or store is built (they register their metrics then), and with `otlp` also the
/// OpenTelemetry one beside it (both see every figure); answers the OTLP exporter. Logs a
/// warning and goes on without the library's metrics (or without OTLP) when that fails.
pub(crate) fn install_recorder(otlp: Option<&otlp::Settings>) -> Option<otlp::Exporter> {
    let prometheus = match PrometheusBuilder::new().set_buckets(&BUCKETS) {
        Ok(builder) => builder.build_recorder(),
        Err(error) => {
            tracing::warn!(%error, "/metrics will not show the library's metrics");
            return None;
        }
    };
    let handle = prometheus.handle();
    let started = otlp.and_then(|settings| {
        otlp::start(settings, STORE_HISTOGRAM, &BUCKETS)
            .inspect_err(|error| tracing::warn!("OTLP export not started: {error:#}"))
            .ok()
    });
    let (installed, exporter) = match started {
        Some((bridge, exporter)) => {
            let both = FanoutBuilder::default()
                .add_recorder(prometheus)
                .add_recorder(bridge)
                .build();
            (install(both), Some(exporter))
        }
        None => (install(prometheus), None),
    };
    if let Err(error) = installed {
        tracing::warn!(%error, "/metrics will not show the library's metrics");
        return None;
    }
    // Histograms keep their samples until drained: every 5 s, scraped or not.
    let upkeep = handle.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            upkeep.run_upkeep();
        }
    });
    let _ = LIBRARY.set(handle);
    if exporter.is_some() {
        otlp::register_failures();
    }
    exporter
}

/// Installs `recorder` as the process's.
fn install<R: metrics::Recorder + Sync + 'static>(recorder: R) -> Result<(), String> {
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())
}

/// Which kind of route a request hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteClass {
    /// HTML pages (GET).
    Page,
    /// HTML form posts.
    Form,
    /// The JSON API under `/api`.
    Api,
    /// `/healthz` and `/metrics`.
    Ops,
    /// No route matched.
    NotFound,
}

impl RouteClass {
    const ALL: [RouteClass; 5] = [
        RouteClass::Page,
        RouteClass::Form,
        RouteClass::Api,
        RouteClass::Ops,
        RouteClass::NotFound,
    ];

    /// The class of a request to the route `matched` (`None`: no route matched).
    pub fn of(method: &Method, matched: Option<&str>) -> Self {
        match matched {
            None => RouteClass::NotFound,
            Some(p) if p.starts_with("/api/") => RouteClass::Api,
            Some("/healthz" | "/metrics") => RouteClass::Ops,
            Some(_) if method == Method::GET || method == Method::HEAD => RouteClass::Page,
            Some(_) => RouteClass::Form,
        }
    }

    fn label(self) -> &'static str {
        match self {
            RouteClass::Page => "page",
            RouteClass::Form => "form",
            RouteClass::Api => "api",
            RouteClass::Ops => "ops",
            RouteClass::NotFound => "not_found",
        }
    }
}

/// The demo's counters. Shared by every request through an `Arc`.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [AtomicU64; RouteClass::ALL.len()],
    logins_ok: AtomicU64,
    logins_failed: AtomicU64,
    logins_throttled: AtomicU64,
    registrations: AtomicU64,
    sessions_created: AtomicU64,
    store_errors: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// A request to a route of `class`.
    pub fn request(&self, class: RouteClass) {
        bump(&self.requests[class as usize]);
    }

    /// A successful login; it also starts a new session (login renews the id).
    pub fn login_ok(&self) {
        bump(&self.logins_ok);
        bump(&self.sessions_created);
    }

    /// A login refused for a wrong name or password.
    pub fn login_failed(&self) {
        bump(&self.logins_failed);
    }

    /// A login refused with 429 before any hashing: too many recent failures.
    pub fn login_throttled(&self) {
        bump(&self.logins_throttled);
    }

    /// A registration; it also logs in, starting a new session.
    pub fn registration(&self) {
        bump(&self.registrations);
        bump(&self.sessions_created);
    }

    /// A session store failure (a 503 answered, or a failed health check).
    pub fn store_error(&self) {
        bump(&self.store_errors);
    }

    /// Has the running OTLP exporter, if any, observe these counters at each export, under
    /// the names, descriptions and labels of [`Metrics::render`].
    pub(crate) fn observe(self: &Arc<Self>) {
        let Some(meter) = otlp::meter() else {
            return;
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let m = Arc::clone(self);
        meter
            .u64_observable_counter("cloakroom_demo_requests_total")
            .with_description("HTTP requests by route class.")
            .with_callback(move |o| {
                for class in RouteClass::ALL {
                    let attributes = [KeyValue::new("class", class.label())];
                    o.observe(get(&m.requests[class as usize]), &attributes);
                }
            })
            .build();
        let m = Arc::clone(self);
        meter
            .u64_observable_counter("cloakroom_demo_logins_total")
            .with_description("Login attempts by result.")
            .with_callback(move |o| {
                o.observe(get(&m.logins_ok), &[KeyValue::new("result", "ok")]);
                o.observe(get(&m.logins_failed), &[KeyValue::new("result", "failed")]);
            })
            .build();
        for (name, help, pick) in Self::PLAIN {
            let m = Arc::clone(self);
            meter
                .u64_observable_counter(name)
                .with_description(help)
                .with_callback(move |o| o.observe(get(pick(&m)), &[]))
                .build();
        }
        meter
            .u64_observable_counter(Self::HASH_QUEUE_FULL.0)
            .with_description(Self::HASH_QUEUE_FULL.1)
            .with_callback(|o| o.observe(crate::passwords::queue_full_total(), &[]))
            .build();
    }

    /// The counters without labels: name, help, which field.
    const PLAIN: [(&'static str, &'static str, fn(&Metrics) -> &AtomicU64); 4] = [
        (
            "cloakroom_demo_registrations_total",
            "Accounts registered.",
            |m| &m.registrations,
        ),
        (
            "cloakroom_demo_sessions_created_total",
            "Logged-in sessions started (registrations and logins).",
            |m| &m.sessions_created,
        ),
        (
            "cloakroom_demo_logins_throttled_total",
            "Logins refused (429) for too many recent failures, before hashing.",
            |m| &m.logins_throttled,
        ),
        (
            "cloakroom_demo_store_errors_total",
            "Requests failed by the session store.",
            |m| &m.store_errors,
        ),
    ];

    /// Process-wide, like the hashing threads (see `passwords`).
    const HASH_QUEUE_FULL: (&'static str, &'static str) = (
        "cloakroom_demo_hash_queue_full_total",
        "Logins and registrations refused (503) because the password hashing queue was full.",
    );

    /// The counters in the Prometheus text format, then the library's metrics (when
    /// `init_telemetry` installed the recorder).
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let header = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        };
        header(
            &mut out,
            "cloakroom_demo_requests_total",
            "HTTP requests by route class.",
        );
        for class in RouteClass::ALL {
            let _ = writeln!(
                out,
                "cloakroom_demo_requests_total{{class=\"{}\"}} {}",
                class.label(),
                get(&self.requests[class as usize])
            );
        }
        header(
            &mut out,
            "cloakroom_demo_logins_total",
            "Login attempts by result.",
        );
        let _ = writeln!(
            out,
            "cloakroom_demo_logins_total{{result=\"ok\"}} {}\ncloakroom_demo_logins_total{{result=\"failed\"}} {}",
            get(&self.logins_ok),
            get(&self.logins_failed)
        );
        for (name, help, pick) in Self::PLAIN {
            header(&mut out, name, help);
            let _ = writeln!(out, "{name} {}", get(pick(self)));
        }
        let (name, help) = Self::HASH_QUEUE_FULL;
        header(&mut out, name, help);
        let _ = writeln!(out, "{name} {}", crate::passwords::queue_full_total());
        if let Some(library) = LIBRARY.get() {
            out.push_str(&library.render());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_counter() {
        let m = Metrics::default();
        m.request(RouteClass::Api);
        m.login_ok();
        m.login_failed();
        m.login_failed();
        m.store_error();
        let text = m.render();
        assert!(text.contains("cloakroom_demo_requests_total{class=\"api\"} 1\n"));
        assert!(text.contains("cloakroom_demo_requests_total{class=\"page\"} 0\n"));
        assert!(text.contains("cloakroom_demo_logins_total{result=\"failed\"} 2\n"));
        assert!(text.contains("cloakroom_demo_sessions_created_total 1\n"));
        assert!(text.contains("cloakroom_demo_store_errors_total 1\n"));
        assert!(text.contains("cloakroom_demo_logins_throttled_total 0\n"));
        assert!(text.contains("# TYPE cloakroom_demo_registrations_total counter\n"));
        assert!(text.contains("# TYPE cloakroom_demo_hash_queue_full_total counter\n"));
    }

    #[test]
    fn routes_are_classified() {
        assert_eq!(RouteClass::of(&Method::GET, Some("/")), RouteClass::Page);
        assert_eq!(
            RouteClass::of(&Method::POST, Some("/notes")),
            RouteClass::Form
        );
        assert_eq!(
            RouteClass::of(&Method::POST, Some("/api/notes")),
            RouteClass::Api
        );
        assert_eq!(
            RouteClass::of(&Method::GET, Some("/healthz")),
            RouteClass::Ops
        );
        assert_eq!(RouteClass::of(&Method::GET, None), RouteClass::NotFound);
    }
}
