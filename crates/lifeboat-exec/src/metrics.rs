//! Prometheus metrics of the failover core, named `lifeboat_<area>_<name>_<unit>`. Label
//! values are bounded: service and node names from the config, plan kinds and outcomes from
//! fixed lists. Every series carries its `service`.

use lifeboat_store::Figures;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

type Labels = Vec<(&'static str, String)>;
type FGauge = Gauge<f64, AtomicU64>;

type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    plans: Family<Labels, Counter>,
    failover_seconds: Histograms,
    last_detect: Family<Labels, FGauge>,
    last_first_write: Family<Labels, FGauge>,
    node_up: Family<Labels, Gauge>,
    lag_bytes: Family<Labels, Gauge>,
    lag_seconds: Family<Labels, FGauge>,
    epoch: Family<Labels, Gauge>,
    paused: Family<Labels, Gauge>,
    exposure_bytes: Family<Labels, Gauge>,
    exposure_seconds: Family<Labels, FGauge>,
    connections: Family<Labels, Gauge>,
    rpo_target: Family<Labels, FGauge>,
    rto_target: Family<Labels, FGauge>,
}

fn failover_histogram() -> Histogram {
    Histogram::new([0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0].into_iter())
}

fn service(service: &str) -> Labels {
    vec![("service", service.to_owned())]
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            plans: Family::default(),
            failover_seconds: Family::new_with_constructor(failover_histogram),
            last_detect: Family::default(),
            last_first_write: Family::default(),
            node_up: Family::default(),
            lag_bytes: Family::default(),
            lag_seconds: Family::default(),
            epoch: Family::default(),
            paused: Family::default(),
            exposure_bytes: Family::default(),
            exposure_seconds: Family::default(),
            connections: Family::default(),
            rpo_target: Family::default(),
            rto_target: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("lifeboat");
        r.register(
            "plans",
            "Plans executed, by kind and outcome",
            m.plans.clone(),
        );
        r.register(
            "failover_duration_seconds",
            "Fault to first write on the new primary (measured RTO)",
            m.failover_seconds.clone(),
        );
        r.register(
            "failover_last_detect_seconds",
            "Fault to loss confirmed, in the last failover",
            m.last_detect.clone(),
        );
        r.register(
            "failover_last_rto_seconds",
            "Fault to first write, in the last failover",
            m.last_first_write.clone(),
        );
        r.register(
            "node_up",
            "1 when the node's last probes succeeded",
            m.node_up.clone(),
        );
        r.register(
            "replication_lag_bytes",
            "WAL bytes a standby is behind the primary",
            m.lag_bytes.clone(),
        );
        r.register(
            "replication_lag_seconds",
            "Replay lag of a standby as the primary reports it",
            m.lag_seconds.clone(),
        );
        r.register(
            "controller_epoch",
            "Fencing token: raised by every change of primary",
            m.epoch.clone(),
        );
        r.register(
            "controller_paused",
            "1 when automatic failover is paused",
            m.paused.clone(),
        );
        r.register(
            "rpo_exposure_bytes",
            "What a failover now could lose: lag of the best standby",
            m.exposure_bytes.clone(),
        );
        r.register(
            "rpo_exposure_seconds",
            "What a failover now could lose, in seconds",
            m.exposure_seconds.clone(),
        );
        r.register(
            "endpoint_connections_active",
            "Client connections open through the endpoint",
            m.connections.clone(),
        );
        r.register(
            "service_rpo_target_seconds",
            "The RPO target of the service's tier: the most data a failover may lose",
            m.rpo_target.clone(),
        );
        r.register(
            "service_rto_target_seconds",
            "The RTO target of the service's tier: the longest a failover may take",
            m.rto_target.clone(),
        );
        m
    }

    /// The targets of a service's tier, set once when its controller is built (the alert
    /// rules compare the exposure with them).
    pub fn targets(&self, svc: &str, rpo: Duration, rto: Duration) {
        let l = service(svc);
        self.rpo_target.get_or_create(&l).set(rpo.as_secs_f64());
        self.rto_target.get_or_create(&l).set(rto.as_secs_f64());
    }

    pub fn plan_finished(&self, svc: &str, kind: &str, outcome: &str, f: &Figures) {
        let mut l = service(svc);
        l.push(("kind", kind.to_owned()));
        l.push(("outcome", outcome.to_owned()));
        self.plans.get_or_create(&l).inc();
        let l = service(svc);
        if let Some(ms) = f.first_write_ms {
            self.failover_seconds
                .get_or_create(&l)
                .observe(ms as f64 / 1000.0);
            self.last_first_write
                .get_or_create(&l)
                .set(ms as f64 / 1000.0);
        }
        if let Some(ms) = f.detect_ms {
            self.last_detect.get_or_create(&l).set(ms as f64 / 1000.0);
        }
    }

    pub fn node(
        &self,
        svc: &str,
        name: &str,
        up: bool,
        lag_bytes: Option<u64>,
        lag_seconds: Option<f64>,
    ) {
        let mut l = service(svc);
        l.push(("node", name.to_owned()));
        self.node_up.get_or_create(&l).set(i64::from(up));
        match lag_bytes {
            Some(b) => {
                self.lag_bytes.get_or_create(&l).set(b as i64);
            }
            None => {
                self.lag_bytes.remove(&l);
            }
        }
        match lag_seconds {
            Some(s) => {
                self.lag_seconds.get_or_create(&l).set(s);
            }
            None => {
                self.lag_seconds.remove(&l);
            }
        }
    }

    pub fn cluster(
        &self,
        svc: &str,
        epoch: u64,
        paused: bool,
        exposure: Option<(u64, f64)>,
        connections: u64,
    ) {
        let l = service(svc);
        self.epoch.get_or_create(&l).set(epoch as i64);
        self.paused.get_or_create(&l).set(i64::from(paused));
        let (b, s) = exposure.unwrap_or((0, 0.0));
        self.exposure_bytes.get_or_create(&l).set(b as i64);
        self.exposure_seconds.get_or_create(&l).set(s);
        self.connections.get_or_create(&l).set(connections as i64);
    }
}
