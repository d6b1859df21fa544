//! OTLP export from both demos (`--otlp-endpoint`), each its real binary pushing to a
//! collector stand-in on loopback that decodes every request with the OTLP protobuf types
//! (`opentelemetry-proto`): the figures of `/metrics` after a scripted visit, the last push
//! at a stop, and a collector that is down or failing, which breaks no request.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus, header};
use common::{Demo, get, login, post, register};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, HistogramDataPoint, Metric, NumberDataPoint, metric::Data,
    number_data_point,
};
use prost::Message as _;
use reqwest::StatusCode;

/// The store histogram's bucket bounds, as the demos set them (also on `/metrics`).
const BUCKETS: [f64; 12] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.1, 0.5, 2.0,
];

/// A collector stand-in: `POST /v1/metrics` with a protobuf body, decoded and kept.
struct Collector {
    url: String,
    received: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

/// What the stand-in answers.
#[derive(Clone)]
struct Answer {
    status: AxumStatus,
    received: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

impl Collector {
    /// Listens on 127.0.0.1:0, answering `status` (and keeping what it decoded).
    async fn start(status: AxumStatus) -> Collector {
        let received = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/v1/metrics", axum::routing::post(receive))
            .with_state(Answer {
                status,
                received: Arc::clone(&received),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Collector { url, received }
    }

    /// The requests received so far.
    fn received(&self) -> Vec<ExportMetricsServiceRequest> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (up to 30 s) for a request that `ok` accepts, and answers it; on timeout,
    /// panics with the last request's metric names.
    async fn wait_for(
        &self,
        what: &str,
        ok: impl Fn(&ExportMetricsServiceRequest) -> bool,
    ) -> ExportMetricsServiceRequest {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = self.received().into_iter().rev().find(|r| ok(r)) {
                return found;
            }
            if Instant::now() > deadline {
                let last = self.received().pop();
                let names: Vec<_> = last.iter().flat_map(metrics).map(|m| &m.name).collect();
                panic!("no OTLP export with {what}; the last one has {names:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Decodes and keeps the request; answers an OTLP response (empty: no partial success).
async fn receive(
    State(answer): State<Answer>,
    headers: HeaderMap,
    body: Bytes,
) -> (AxumStatus, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "application/x-protobuf"
    );
    let request = ExportMetricsServiceRequest::decode(body).expect("an OTLP metrics request");
    answer.received.lock().unwrap().push(request);
    let response = ExportMetricsServiceResponse::default().encode_to_vec();
    (
        answer.status,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        response,
    )
}

/// Every metric of a request.
fn metrics(request: &ExportMetricsServiceRequest) -> impl Iterator<Item = &Metric> {
    (request.resource_metrics.iter())
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
}

/// The metric `name`, if the request has it.
fn metric<'a>(request: &'a ExportMetricsServiceRequest, name: &str) -> Option<&'a Metric> {
    metrics(request).find(|m| m.name == name)
}

/// Whether `attributes` are exactly `expected` (string values), in any order.
fn attributes_are(attributes: &[KeyValue], expected: &[(&str, &str)]) -> bool {
    let text = |kv: &KeyValue| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Some((kv.key.clone(), s.clone())),
        _ => None,
    };
    let mut got: Vec<_> = attributes.iter().map(text).collect();
    let mut want: Vec<_> = (expected.iter())
        .map(|(k, v)| Some(((*k).to_owned(), (*v).to_owned())))
        .collect();
    got.sort();
    want.sort();
    got == want
}

/// The value of counter `name` with `labels`: a monotonic, cumulative OTLP Sum.
fn counter(
    request: &ExportMetricsServiceRequest,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<i64> {
    let Some(Data::Sum(sum)) = metric(request, name)?.data.as_ref() else {
        panic!("{name} is not a Sum");
    };
    assert!(sum.is_monotonic, "{name}");
    assert_eq!(
        sum.aggregation_temporality,
        AggregationTemporality::Cumulative as i32,
        "{name}"
    );
    let point: &NumberDataPoint =
        (sum.data_points.iter()).find(|p| attributes_are(&p.attributes, labels))?;
    match point.value {
        Some(number_data_point::Value::AsInt(n)) => Some(n),
        ref other => panic!("{name}: {other:?}"),
    }
}

/// The store histogram's point for `store`/`operation`.
fn store_histogram<'a>(
    request: &'a ExportMetricsServiceRequest,
    store: &str,
    operation: &str,
) -> Option<&'a HistogramDataPoint> {
    let name = "cloakroom_store_operation_duration_seconds";
    let found = metric(request, name)?;
    assert_eq!(found.unit, "s");
    let Some(Data::Histogram(histogram)) = found.data.as_ref() else {
        panic!("{name} is not a Histogram");
    };
    assert_eq!(
        histogram.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    (histogram.data_points.iter())
        .find(|p| attributes_are(&p.attributes, &[("store", store), ("operation", operation)]))
}

/// The resource's `service.name`.
fn service_name(request: &ExportMetricsServiceRequest) -> Option<String> {
    let resource = request.resource_metrics.first()?.resource.as_ref()?;
    resource.attributes.iter().find_map(|kv| {
        match (kv.key == "service.name", kv.value.as_ref()?.value.as_ref()?) {
            (true, any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        }
    })
}

/// The scrape test's visit: register (a session created), log in again (rotated), log out
/// (ended), log in (created), a form posted without a token (a CSRF refusal).
async fn visit(demo: Demo, base: &str) {
    let c = common::client();
    register(&c, base, "ada").await;
    login(&c, base, "ada").await;
    let res = post(&c, base, "/logout", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
    login(&c, base, "ada").await;
    let res = (c.post(format!("{base}/notes")).form(&[("text", "hi")]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "{demo:?}");
}

/// The counts of the visit, as `metrics_count_sessions_and_store_operations` (scenarios.rs)
/// scrapes them from `/metrics`: whether `request` has them all.
fn has_the_visit(request: &ExportMetricsServiceRequest) -> bool {
    let count = |store: &str, op: &str| store_histogram(request, store, op).map(|p| p.count);
    counter(request, "cloakroom_sessions_created_total", &[]) == Some(2)
        && counter(request, "cloakroom_sessions_rotated_total", &[]) == Some(1)
        && counter(
            request,
            "cloakroom_sessions_ended_total",
            &[("reason", "logout")],
        ) == Some(1)
        && counter(
            request,
            "cloakroom_csrf_rejections_total",
            &[("reason", "token missing")],
        ) == Some(1)
        && count("memory", "create") == Some(3)
        && count("memory", "delete") == Some(2)
        && counter(request, "cloakroom_demo_logins_total", &[("result", "ok")]) == Some(2)
}

/// Starts `demo` with sessions in memory, accounts in `dir`, and `args`.
async fn start(
    demo: Demo,
    dir: &std::path::Path,
    args: &[&str],
) -> cloakroom_testkit::process::ServerProcess {
    let users = format!("sqlite://{}", dir.join(format!("{demo:?}.db")).display());
    let mut all = vec!["--store", "memory://", "--users", &users];
    all.extend_from_slice(args);
    demo.start(&all, dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_export_carries_the_metrics_of_a_visit() {
    let dir = tempfile::tempdir().unwrap();
    for demo in Demo::BOTH {
        let collector = Collector::start(AxumStatus::OK).await;
        let args = [
            "--otlp-endpoint",
            &collector.url,
            "--otlp-interval",
            "200ms",
        ];
        let server = start(demo, dir.path(), &args).await;
        visit(demo, &server.base()).await;
        let export = collector
            .wait_for("the visit's counts", has_the_visit)
            .await;
        let name = demo
            .bin()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(service_name(&export), Some(name), "{demo:?}");
        let create = store_histogram(&export, "memory", "create").unwrap();
        assert_eq!(create.explicit_bounds, BUCKETS, "{demo:?}");
        assert_eq!(create.bucket_counts.len(), BUCKETS.len() + 1, "{demo:?}");
        assert_eq!(create.bucket_counts.iter().sum::<u64>(), 3, "{demo:?}");
        assert!(create.sum.is_some_and(|s| s > 0.0), "{demo:?}");
        let failures = "cloakroom_demo_otlp_export_failures_total";
        assert_eq!(counter(&export, failures, &[]), Some(0), "{demo:?}");
        // The same counts on /metrics (Prometheus text) as in the export.
        let (status, text) = get(&common::client(), &server.base(), "/metrics").await;
        assert_eq!(status, StatusCode::OK, "{demo:?}");
        assert!(
            text.contains("cloakroom_sessions_created_total 2\n"),
            "{demo:?}: {text}"
        );
        assert!(
            text.contains(&format!("{failures} 0\n")),
            "{demo:?}: {text}"
        );
    }
}

/// With an interval longer than the test, the only export is the last one, at the stop
/// (SIGTERM): it has the visit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_pushes_once_more_at_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    for demo in Demo::BOTH {
        let collector = Collector::start(AxumStatus::OK).await;
        let args = ["--otlp-endpoint", &collector.url, "--otlp-interval", "1h"];
        let mut server = start(demo, dir.path(), &args).await;
        visit(demo, &server.base()).await;
        assert!(
            collector.received().is_empty(),
            "{demo:?}: pushed before the stop"
        );
        let exited = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(20)))
            .await
            .unwrap();
        assert_eq!(
            exited,
            Some(true),
            "{demo:?}: SIGTERM must stop the demo with exit 0"
        );
        let received = collector.received();
        assert_eq!(received.len(), 1, "{demo:?}");
        assert!(has_the_visit(&received[0]), "{demo:?}");
    }
}

/// A collector that is not there, or that answers 503: every request still succeeds, and
/// the failed exports are counted on `/metrics` (`cloakroom_demo_otlp_export_failures_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_down_or_failing_breaks_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let failing = Collector::start(AxumStatus::SERVICE_UNAVAILABLE).await;
    let nobody = format!(
        "http://127.0.0.1:{}",
        cloakroom_testkit::process::free_port()
    );
    for (demo, url) in [
        (Demo::Axum, &nobody),
        (Demo::Actix, &nobody),
        (Demo::Axum, &failing.url),
        (Demo::Actix, &failing.url),
    ] {
        let args = ["--otlp-endpoint", url, "--otlp-interval", "100ms"];
        let server = start(demo, dir.path(), &args).await;
        let base = server.base();
        let c = common::client();
        let name = format!("ada{}", server.port());
        register(&c, &base, &name).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Requests go on while exports fail.
            login(&c, &base, &name).await;
            let (status, text) = get(&c, &base, "/metrics").await;
            assert_eq!(status, StatusCode::OK, "{demo:?} {url}");
            let failed = (text.lines())
                .find_map(|l| l.strip_prefix("cloakroom_demo_otlp_export_failures_total "))
                .and_then(|n| n.parse::<u64>().ok());
            if failed.is_some_and(|n| n >= 1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{demo:?} {url}: no failed export counted\n{text}\n{}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            server.log_text().contains("OTLP: export failed"),
            "{demo:?} {url}: {}",
            server.log_text()
        );
    }
    assert!(
        !failing.received().is_empty(),
        "the failing collector was asked"
    );
}
