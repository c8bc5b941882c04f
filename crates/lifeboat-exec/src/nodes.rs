//! The runtime view of configured nodes: resolved addresses, credentials and control.

use lifeboat_config::{Config, NodeConfig};
use lifeboat_core::model::RegionRole;
use lifeboat_postgres::{ConnInfo, LocalServer};
use std::net::{SocketAddr, ToSocketAddrs};

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

/// A node as the executor and probers need it.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub region: String,
    pub region_role: RegionRole,
    pub priority: i32,
    pub conn: ConnInfo,
    pub addr: SocketAddr,
    pub control: Option<LocalServer>,
    pub fence_command: Option<Vec<String>>,
}

/// Resolves every node of the config. Fails on the first node that cannot be set up.
pub fn nodes(cfg: &Config) -> Result<Vec<Node>, SetupError> {
    cfg.nodes()
        .map(|(region, rc, n)| node(region, rc.role, rc.priority, n))
        .collect()
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
        conn: ConnInfo {
            host: n.host.clone(),
            port: n.port,
            user: n.user.clone(),
            password,
            dbname: n.dbname.clone(),
        },
        addr,
        control,
        fence_command: n.fence_command.clone(),
    })
}
