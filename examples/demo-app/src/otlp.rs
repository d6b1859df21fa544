//! OTLP export (`--otlp-endpoint`): the metrics of `/metrics`, pushed as OTLP/HTTP protobuf
//! to a collector every `--otlp-interval` and once more at a stop.
//!
//! The OpenTelemetry SDK does the work: the `metrics` facade's records reach its meter
//! through `metrics-opentelemetry` (a second recorder beside Prometheus's, see
//! [`crate::metrics`]), the demo's own counters are observed from their atomics, and a
//! periodic reader on its own thread aggregates (cumulative sums, gauges, histograms with the
//! `/metrics` buckets) and exports through `opentelemetry-otlp`. Requests never wait for it.
//! A failed export is counted in `cloakroom_demo_otlp_export_failures_total` and logged, at
//! most once a minute while it keeps failing.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};

/// How long one export may take, retries included, before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a failing exporter logs while it keeps failing.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The failure counter's name.
const FAILURES: &str = "cloakroom_demo_otlp_export_failures_total";

/// The meter of the running exporter, for the demo's own counters (see
/// [`crate::Metrics`]): set once, by [`start`].
static METER: OnceLock<Meter> = OnceLock::new();

/// Where and how often to push.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The metrics URL (`.../v1/metrics`).
    pub(crate) url: String,
    /// Between two exports.
    pub(crate) interval: Duration,
    /// The resource's `service.name`: the binary's name.
    pub(crate) service: &'static str,
}

/// A running exporter.
#[derive(Debug)]
pub(crate) struct Exporter {
    provider: SdkMeterProvider,
}

/// Builds the exporter and its meter: the `metrics` recorder to install beside Prometheus's
/// (histograms of `histogram` get the `buckets`), and the exporter, already pushing.
pub(crate) fn start(
    settings: &Settings,
    histogram: &'static str,
    buckets: &[f64],
) -> anyhow::Result<(metrics_opentelemetry::OpenTelemetryRecorder, Exporter)> {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.url.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .with_temporality(Temporality::Cumulative)
        .build()?;
    let reader = PeriodicReader::builder(Watched::new(exporter))
        .with_interval(settings.interval)
        .build();
    let provider = SdkMeterProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service)
                .build(),
        )
        .with_reader(reader)
        .build();
    let meter = provider.meter("cloakroom");
    let _ = METER.set(meter.clone());
    let mut recorder = metrics_opentelemetry::OpenTelemetryRecorder::new(
        metrics_opentelemetry::OpenTelemetryMetrics::new(meter),
    );
    recorder.set_histogram_bounds_mut(std::iter::once(histogram), buckets);
    Ok((recorder, Exporter { provider }))
}

/// The meter of the running exporter, if [`start`] started one.
pub(crate) fn meter() -> Option<&'static Meter> {
    METER.get()
}

impl Exporter {
    /// Pushes once more (what was counted since the last push) and stops. Blocks for up to
    /// the export timeout: call it outside the async runtime.
    pub(crate) fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "OTLP: the last export at the stop failed");
        }
    }
}

/// The OTLP exporter, with its failures counted and logged.
#[derive(Debug)]
struct Watched<E> {
    inner: E,
    /// Since when exports fail, and when that was last logged; `None` while they succeed.
    failing: Mutex<Option<Failing>>,
}

#[derive(Debug)]
struct Failing {
    logged: Instant,
    unlogged: u64,
}

/// Describes and registers the failure counter (at 0, so `/metrics` shows it from the
/// start), once the recorder is installed.
pub(crate) fn register_failures() {
    metrics::describe_counter!(
        FAILURES,
        "OTLP exports that failed (collector unreachable, timed out, or a non-2xx answer)."
    );
    metrics::counter!(FAILURES).increment(0);
}

impl<E> Watched<E> {
    fn new(inner: E) -> Self {
        Watched {
            inner,
            failing: Mutex::new(None),
        }
    }

    fn note(&self, result: &OTelSdkResult) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match (result, failing.as_mut()) {
            (Ok(()), None) => {}
            (Ok(()), Some(_)) => {
                *failing = None;
                tracing::info!("OTLP: exports succeed again");
            }
            (Err(error), None) => {
                metrics::counter!(FAILURES).increment(1);
                *failing = Some(Failing {
                    logged: Instant::now(),
                    unlogged: 0,
                });
                tracing::warn!(%error, "OTLP: export failed (logged again at most once a minute)");
            }
            (Err(error), Some(state)) => {
                metrics::counter!(FAILURES).increment(1);
                state.unlogged += 1;
                if state.logged.elapsed() >= WARN_EVERY {
                    tracing::warn!(%error, failures = state.unlogged, "OTLP: exports still fail");
                    state.logged = Instant::now();
                    state.unlogged = 0;
                }
            }
        }
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Watched<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.note(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}
