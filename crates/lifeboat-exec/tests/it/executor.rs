use anyhow::Result;
use lifeboat_core::{ControllerState, Plan, PlanKind, Step};
use lifeboat_exec::executor::{Context, Executor, Timeouts};
use lifeboat_exec::{Router, Service};
use lifeboat_postgres::InitOptions;
use lifeboat_store::{Outcome, Store};
use lifeboat_testkit::{free_port, PgCluster, TestDir};
use std::time::Duration;

/// A PostgreSQL service of two nodes on loopback ports, as the config would give it.
fn service(nodes: &[(&str, u16)]) -> Result<Service> {
    let nodes: Vec<String> = nodes
        .iter()
        .map(|(n, p)| format!("{{ name = \"{n}\", host = \"127.0.0.1\", port = {p} }}"))
        .collect();
    let text = format!(
        "[tiers.t]\nrto = \"5s\"\nrpo = \"1s\"\n[services.s]\nkind = \"postgres\"\ntier = \"t\"\n\
         endpoint = {{ listen = \"127.0.0.1:1\" }}\n\
         [services.s.regions.r]\nrole = \"primary\"\nnodes = [{}]\n",
        nodes.join(", ")
    );
    let (cfg, _) = lifeboat_config::parse(&text, std::path::Path::new("."))
        .map_err(|r| anyhow::anyhow!("{r}"))?;
    Ok(Service::new("s", &cfg.services["s"])?)
}

fn sync_plan(node: &str, names: &[&str]) -> Plan {
    Plan {
        kind: PlanKind::SyncOff,
        epoch: 1,
        old_primary: None,
        target: Some(node.into()),
        steps: vec![Step::SetSyncStandbys {
            node: node.into(),
            names: names.iter().map(|n| n.to_string()).collect(),
        }],
        reasons: vec![],
        fault_at: None,
        lag_bytes: None,
    }
}

/// A step that cannot reach its server changed nothing and is not reported as touching it,
/// so the controller keeps what it knew of that server: a primary lost just as a step tried
/// to reach it keeps its last WAL position, and can still be failed over. A step that
/// reached its server is reported.
#[tokio::test]
async fn only_steps_that_may_have_changed_a_server_count_as_touching_it() -> Result<()> {
    let dir = TestDir::new("executor")?;
    let pg = PgCluster::primary(&dir, "pg", InitOptions::default()).await?;
    let service = service(&[("up", pg.port()), ("gone", free_port()?)])?;
    let t = Duration::from_secs(5);
    let timeouts = Timeouts {
        probe: t,
        promote: t,
        fence: t,
        fence_retry_for: t,
        catch_up: t,
        rejoin: t,
    };
    let store = std::sync::Arc::new(Store::open(&dir.subdir("state")?)?);
    let exec = Executor::new(
        &service,
        std::sync::Arc::new(Router::new()),
        store,
        timeouts,
    );
    let mut state = ControllerState {
        epoch: 1,
        ..Default::default()
    };

    let ex = exec
        .run(&sync_plan("gone", &[]), &mut state, Context::default())
        .await;
    assert_eq!(ex.outcome, Outcome::Failed, "{:?}", ex.problem);
    assert_eq!(ex.touched, vec![]);

    let plan = sync_plan("up", &["standby-a"]);
    let ex = exec.run(&plan, &mut state, Context::default()).await;
    assert_eq!(ex.outcome, Outcome::Ok, "{:?}", ex.problem);
    assert_eq!(ex.touched, plan.steps);
    pg.stop().await?;
    Ok(())
}
