//! With cloakroom-core's `metrics` feature, a refusal of the actix CSRF middleware is counted
//! (by the core, as for the tower layer): `cloakroom_csrf_rejections_total`, label `reason`
//! (the stable reason string), one per refused request, none for an accepted one.

use std::sync::{Arc, Mutex};

use actix_web::dev::Service;
use actix_web::http::Method;
use actix_web::test::{self, TestRequest};
use actix_web::{App, web};
use cloakroom_actix::csrf::ProtectionError;
use cloakroom_actix::{CsrfMiddleware, CsrfSettings, SessionMiddleware, SessionSettings};
use cloakroom_core::{Key, KeyRing, MemoryStore};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key as MetricKey, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// Every counter increment, as (name, labels, value).
type Log = Arc<Mutex<Vec<(String, Vec<(String, String)>, u64)>>>;

/// A recorder that logs counter increments (no gauges or histograms).
#[derive(Default)]
struct Recording(Log);

struct Handle {
    key: MetricKey,
    log: Log,
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        let labels = self
            .key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        self.log
            .lock()
            .unwrap()
            .push((self.key.name().to_owned(), labels, value));
    }

    fn absolute(&self, value: u64) {
        self.increment(value);
    }
}

impl Recorder for Recording {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &MetricKey, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Handle {
            key: key.clone(),
            log: self.0.clone(),
        }))
    }

    fn register_gauge(&self, _: &MetricKey, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &MetricKey, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

async fn ok() -> &'static str {
    "ok"
}

#[test]
fn a_refusal_is_counted_with_its_reason() {
    let recorder = Recording::default();
    let log = recorder.0.clone();
    let reasons = metrics::with_local_recorder(&recorder, || {
        actix_web::rt::System::new().block_on(async {
            let keys = KeyRing::single(Key::from_bytes(&[9; 32]).unwrap());
            let app = test::init_service(
                App::new()
                    .wrap(CsrfMiddleware::new(CsrfSettings::new()))
                    .wrap(SessionMiddleware::new(
                        SessionSettings::new(MemoryStore::new(), keys).build(),
                    ))
                    .route("/", web::get().to(ok))
                    .route("/notes", web::post().to(ok)),
            )
            .await;
            // A safe request is not checked, so not counted.
            let res = app
                .call(TestRequest::get().uri("/").to_request())
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            // A POST with no token: refused.
            let res = app
                .call(
                    TestRequest::default()
                        .method(Method::POST)
                        .uri("/notes")
                        .to_request(),
                )
                .await
                .unwrap();
            assert_eq!(res.status(), 403);
            res.response()
                .extensions()
                .get::<ProtectionError>()
                .map(|e| e.kind().as_str().to_owned())
        })
    });
    let reason = reasons.expect("the refusal carries its ProtectionError");
    let log = log.lock().unwrap();
    assert_eq!(
        *log,
        [(
            "cloakroom_csrf_rejections_total".to_owned(),
            vec![("reason".to_owned(), reason)],
            1
        )]
    );
}
