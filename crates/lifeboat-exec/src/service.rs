//! A protected service at run time: its configured nodes, resolved (addresses, secrets,
//! local control), and the datastore provider of its kind.

use crate::providers::{self, Datastore};
use lifeboat_config::{NodeConfig, ServiceConfig, ServiceKind};
use lifeboat_core::model::RegionRole;
use lifeboat_postgres::LocalServer;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("node {node}: cannot resolve {host}:{port}: {reason}")]
    Resolve {
        node: String,
        host: String,
        port: u16,
        reason: String,
    },
    #[error("node {node}: password: {source}")]
    Password {
        node: String,
        source: lifeboat_config::SecretError,
    },
    #[error("node {node}: {source}")]
    Postgres {
        node: String,
        source: lifeboat_postgres::PgError,
    },
}

/// A configured node, resolved: what the controller, the executor and the providers need.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub region: String,
    pub region_role: RegionRole,
    pub priority: i32,
    pub addr: SocketAddr,
    pub config: NodeConfig,
    /// From the node's password-file or password-env, read once at start.
    pub password: Option<String>,
    /// Local control of a PostgreSQL server (stop, start, rewind).
    pub control: Option<LocalServer>,
}

/// One service: its name, kind, nodes and datastore provider.
#[derive(Clone)]
pub struct Service {
    pub name: String,
    pub kind: ServiceKind,
    pub config: ServiceConfig,
    pub nodes: Vec<Node>,
    pub datastore: Arc<dyn Datastore>,
}

impl Service {
    /// Resolves every node of `cfg`. Fails on the first node that cannot be set up.
    pub fn new(name: &str, cfg: &ServiceConfig) -> Result<Service, SetupError> {
        let nodes = cfg
            .nodes()
            .map(|(region, rc, n)| node(region, rc.role, rc.priority, n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Service {
            name: name.to_owned(),
            kind: cfg.kind,
            datastore: providers::datastore(cfg.kind, &nodes),
            config: cfg.clone(),
            nodes,
        })
    }
}

fn node(region: &str, role: RegionRole, priority: i32, n: &NodeConfig) -> Result<Node, SetupError> {
    let addr = (n.host.as_str(), n.port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut a| a.next().ok_or_else(|| "no address".to_string()))
        .map_err(|reason| SetupError::Resolve {
            node: n.name.clone(),
            host: n.host.clone(),
            port: n.port,
            reason,
        })?;
    let password =
        lifeboat_config::read_secret(n.password_file.as_deref(), n.password_env.as_deref())
            .map_err(|source| SetupError::Password {
                node: n.name.clone(),
                source,
            })?;
    let control = match &n.control {
        None => None,
        Some(c) => {
            let bin_dir = match &c.bin_dir {
                Some(b) => b.clone(),
                None => LocalServer::find_bin_dir().map_err(|source| SetupError::Postgres {
                    node: n.name.clone(),
                    source,
                })?,
            };
            Some(LocalServer {
                bin_dir,
                data_dir: c.data_dir.clone(),
                os_user: c.os_user.clone(),
                port: n.port,
            })
        }
    };
    Ok(Node {
        name: n.name.clone(),
        region: region.to_owned(),
        region_role: role,
        priority,
        addr,
        config: n.clone(),
        password,
        control,
    })
}
