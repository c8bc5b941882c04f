use anyhow::Result;
use lifeboat_core::model::RegionRole;
use lifeboat_core::{ControllerState, Plan, PlanKind, Step};
use lifeboat_exec::executor::{Context, Executor, Timeouts};
use lifeboat_exec::{Node, Router};
use lifeboat_postgres::{ConnInfo, InitOptions};
use lifeboat_store::{Outcome, Store};
use lifeboat_testkit::{free_port, PgCluster, TestDir};
use std::time::Duration;

fn node(name: &str, port: u16) -> Node {
    Node {
        name: name.into(),
        region: "r".into(),
        region_role: RegionRole::Primary,
        priority: 0,
        conn: ConnInfo {
            host: "127.0.0.1".into(),
            port,
            user: "postgres".into(),
            password: None,
            dbname: "postgres".into(),
        },
        addr: ([127, 0, 0, 1], port).into(),
        control: None,
        fence_command: None,
    }
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
    let nodes = [node("up", pg.port()), node("gone", free_port()?)];
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
    let exec = Executor::new(&nodes, Router::new(), store, timeouts);
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
