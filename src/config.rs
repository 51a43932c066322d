//! The node's configuration: one typed [`Config`], resolved from command-line
//! flags, `DYNOKV_*` environment variables and an optional TOML file
//! (`--config FILE`), in that order of precedence, over documented defaults.
//!
//! [`Settings`] is the raw, all-optional form shared by the flags and the
//! TOML file (each flag `--foo-bar` is the TOML key `foo_bar`); [`Config`]
//! is what the node runs with.

use crate::limits::{
    BULK_BYTES_MAX_DEFAULT, CLIENTS_MAX_DEFAULT, DETECTOR_PHI_THRESHOLD_DEFAULT,
    PARTITIONS_DEFAULT, RECORD_CACHE_BYTES_DEFAULT, SIBLINGS_MAX_DEFAULT,
};
use crate::storage::FsyncPolicy;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors resolving the configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML file is not valid for us.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting is out of range.
    #[error("invalid {name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },
}

/// Every setting, optional: what the flags, the environment and the TOML
/// file may give. Defaults are applied by [`Config::resolve`].
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on for clients and peers [default: 127.0.0.1].
    #[arg(long, env = "DYNOKV_BIND")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Port for RESP clients [default: 6379].
    #[arg(long, env = "DYNOKV_PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Port for the binary peer protocol [default: client port + 10000].
    #[arg(long, env = "DYNOKV_PEER_PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u16>,
    /// Peer address other nodes dial, HOST:PORT [default: bind address and peer port].
    #[arg(long, env = "DYNOKV_PEER_ADVERTISE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_advertise: Option<String>,
    /// Data directory [default: ./data].
    #[arg(long, env = "DYNOKV_DATA_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// When acknowledged writes are synced to disk [default: everysec].
    #[arg(long, env = "DYNOKV_FSYNC", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsync: Option<FsyncPolicy>,
    /// Seed of an existing cluster, HOST:PEERPORT (repeatable).
    #[arg(long, env = "DYNOKV_JOIN", value_delimiter = ',')]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub join: Vec<String>,
    /// This node's name [default: the client address, HOST:PORT].
    #[arg(long, env = "DYNOKV_NODE_NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The node id (16 hex digits, as DYNAMO MEMBERS shows it) for a new
    /// data directory: a member whose directory was lost comes back as
    /// itself, empty, and anti-entropy refills it [default: random].
    #[arg(long, env = "DYNOKV_NODE_ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Capacity weight: a node of weight 2 holds about twice the data [default: 1.0].
    #[arg(long, env = "DYNOKV_WEIGHT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Failure zone; replicas are spread across zones [default: none].
    #[arg(long, env = "DYNOKV_ZONE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// N, replicas per key [default: 3].
    #[arg(long, env = "DYNOKV_REPLICAS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<usize>,
    /// R, replies a read waits for [default: 2].
    #[arg(long, env = "DYNOKV_READ_QUORUM")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_quorum: Option<usize>,
    /// W, durable acknowledgements a write waits for [default: 2].
    #[arg(long, env = "DYNOKV_WRITE_QUORUM")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_quorum: Option<usize>,
    /// Name shared by the nodes of one cluster [default: dynokv].
    #[arg(long, env = "DYNOKV_CLUSTER_NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// Secret peers must prove to join [default: none].
    #[arg(long, env = "DYNOKV_CLUSTER_SECRET")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_secret: Option<String>,
    /// Password clients must AUTH with [default: none].
    #[arg(long, env = "DYNOKV_REQUIREPASS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requirepass: Option<String>,
    /// Most concurrent client connections [default: 10000].
    #[arg(long, env = "DYNOKV_MAXCLIENTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maxclients: Option<usize>,
    /// Seconds a client may stay idle before the node closes its
    /// connection; 0 never closes (Redis `timeout`) [default: 0].
    #[arg(long, env = "DYNOKV_TIMEOUT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Log filter, e.g. info or dynokv=debug [default: info].
    #[arg(long, env = "DYNOKV_LOG_LEVEL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Q, partitions of a new data directory; a power of two, fixed once
    /// the directory exists [default: 4096].
    #[arg(long, env = "DYNOKV_PARTITIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    /// Live siblings kept per key before the oldest collapse last-writer-wins [default: 64].
    #[arg(long, env = "DYNOKV_SIBLINGS_MAX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub siblings_max: Option<usize>,
    /// Largest bulk string a client may send, in bytes [default: 536870912].
    #[arg(long, env = "DYNOKV_PROTO_MAX_BULK_LEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto_max_bulk_len: Option<usize>,
    /// Threads running clients, peers and coordination; nodes sharing a
    /// machine run faster sharing its cores than each claiming all of
    /// them (`dynokv dev` splits them) [default: one per CPU core].
    #[arg(long, env = "DYNOKV_WORKER_THREADS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
    /// Memory for the record cache in front of the store, in MiB; 0 turns
    /// it off [default: 64].
    #[arg(long, env = "DYNOKV_CACHE_MB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_mb: Option<usize>,
    /// Suspicion level (phi) at which a silent peer is suspected, probed
    /// through other members, then marked down; higher waits longer
    /// (Cassandra's phi_convict_threshold) [default: 8].
    #[arg(long, env = "DYNOKV_PHI_THRESHOLD")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phi_threshold: Option<f64>,
    /// Handoff throttle: MiB per second a node receives when partitions
    /// move to it (joins, leaves, removes, reweights) [default: 32].
    #[arg(long, env = "DYNOKV_HANDOFF_RATE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff_rate: Option<u64>,
    /// Whether a fallback's hint counts towards W when a replica is down
    /// (Dynamo's sloppy quorum); off, W counts real replicas only and
    /// hints are still kept [default: on].
    #[arg(long, env = "DYNOKV_SLOPPY_QUORUM", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sloppy_quorum: Option<Toggle>,
    /// Seconds after a replica's first hint during which fallbacks keep
    /// new hints for it [default: 10800, 3 hours].
    #[arg(long, env = "DYNOKV_HINT_WINDOW")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint_window: Option<u64>,
    /// Most bytes of hints a fallback keeps for one replica; 0 keeps none
    /// [default: 268435456, 256 MiB].
    #[arg(long, env = "DYNOKV_HINT_MAX_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint_max_bytes: Option<u64>,
    /// Hint replay throttle: KiB per second a node sends to replicas that
    /// came back [default: 1024].
    #[arg(long, env = "DYNOKV_HINT_RATE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint_rate: Option<u64>,
    /// Whether reads repair the replicas they find stale [default: on].
    #[arg(long, env = "DYNOKV_READ_REPAIR", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_repair: Option<Toggle>,
    /// Seconds between anti-entropy rounds; 0 turns anti-entropy off
    /// [default: 60].
    #[arg(long, env = "DYNOKV_AAE_INTERVAL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aae_interval: Option<u64>,
    /// Anti-entropy throttle: KiB per second of records a node fetches
    /// and sends in exchanges [default: 1024].
    #[arg(long, env = "DYNOKV_AAE_RATE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aae_rate: Option<u64>,
}

/// A setting that is on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    /// On.
    On,
    /// Off.
    Off,
}

impl Toggle {
    fn from_bool(on: bool) -> Self {
        if on { Self::On } else { Self::Off }
    }
}

impl Settings {
    /// Reads a TOML settings file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
    }

    /// These settings, with every unset one taken from `fallback`.
    pub fn or(self, fallback: Settings) -> Settings {
        macro_rules! pick {
            ($($field:ident),*) => {
                Settings {
                    join: if self.join.is_empty() { fallback.join } else { self.join },
                    $($field: self.$field.or(fallback.$field),)*
                }
            };
        }
        pick!(
            bind,
            port,
            peer_port,
            peer_advertise,
            data_dir,
            fsync,
            node_name,
            node_id,
            weight,
            zone,
            replicas,
            read_quorum,
            write_quorum,
            cluster_name,
            cluster_secret,
            requirepass,
            maxclients,
            timeout,
            log_level,
            partitions,
            siblings_max,
            proto_max_bulk_len,
            worker_threads,
            cache_mb,
            phi_threshold,
            handoff_rate,
            sloppy_quorum,
            hint_window,
            hint_max_bytes,
            hint_rate,
            read_repair,
            aae_interval,
            aae_rate
        )
    }
}

/// A throttle given in KiB per second (`default` when not given), in
/// bytes per second: at least 1 KiB/s.
fn kib_per_s(name: &'static str, given: Option<u64>, default: u64) -> Result<u64, ConfigError> {
    let kib = given.unwrap_or(default);
    if kib == 0 {
        return Err(ConfigError::Invalid {
            name,
            reason: "must be at least 1 KiB/s".into(),
        });
    }
    kib.checked_mul(1 << 10).ok_or(ConfigError::Invalid {
        name,
        reason: format!("{kib} KiB/s is too large"),
    })
}

impl From<&Config> for Settings {
    /// Every resolved value, explicitly (CONFIG REWRITE writes them all).
    fn from(c: &Config) -> Self {
        Settings {
            bind: Some(c.bind.clone()),
            port: Some(c.port),
            peer_port: Some(c.peer_port),
            peer_advertise: c.peer_advertise.clone(),
            data_dir: Some(c.data_dir.clone()),
            fsync: Some(c.fsync),
            join: c.join.clone(),
            node_name: Some(c.node_name.clone()),
            node_id: c.node_id.map(|id| format!("{id:016x}")),
            weight: Some(c.weight),
            zone: c.zone.clone(),
            replicas: Some(c.replicas),
            read_quorum: Some(c.read_quorum),
            write_quorum: Some(c.write_quorum),
            cluster_name: Some(c.cluster_name.clone()),
            cluster_secret: c.cluster_secret.clone(),
            requirepass: c.requirepass.clone(),
            maxclients: Some(c.maxclients),
            timeout: Some(c.timeout_secs),
            log_level: Some(c.log_level.clone()),
            partitions: Some(c.partitions),
            siblings_max: Some(c.siblings_max),
            proto_max_bulk_len: Some(c.proto_max_bulk_len),
            worker_threads: c.worker_threads,
            cache_mb: Some(c.cache_bytes >> 20),
            phi_threshold: Some(c.phi_threshold),
            handoff_rate: Some((c.handoff_rate >> 20).max(1)),
            sloppy_quorum: Some(Toggle::from_bool(c.sloppy_quorum)),
            hint_window: Some(c.hint_window_secs),
            hint_max_bytes: Some(c.hint_max_bytes),
            hint_rate: Some(c.hint_rate >> 10),
            read_repair: Some(Toggle::from_bool(c.read_repair)),
            aae_interval: Some(c.aae_interval_secs),
            aae_rate: Some(c.aae_rate >> 10),
        }
    }
}

/// What the node runs with; every field resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Listen address. Default 127.0.0.1.
    pub bind: String,
    /// Client port. Default 6379.
    pub port: u16,
    /// Peer port. Default `port + 10000`.
    pub peer_port: u16,
    /// Peer address advertised to other nodes. Default `bind:peer_port`
    /// (with the port actually bound).
    pub peer_advertise: Option<String>,
    /// Data directory. Default `./data`.
    pub data_dir: PathBuf,
    /// Fsync policy. Default everysec.
    pub fsync: FsyncPolicy,
    /// Cluster seeds. Default none.
    pub join: Vec<String>,
    /// Node name. Default `bind:port`.
    pub node_name: String,
    /// The node id a new data directory takes. Default `None`: random.
    pub node_id: Option<u64>,
    /// Capacity weight. Default 1.0.
    pub weight: f64,
    /// Failure zone. Default none.
    pub zone: Option<String>,
    /// N. Default 3.
    pub replicas: usize,
    /// R. Default 2.
    pub read_quorum: usize,
    /// W. Default 2.
    pub write_quorum: usize,
    /// Cluster name. Default `dynokv`.
    pub cluster_name: String,
    /// Cluster secret. Default none.
    pub cluster_secret: Option<String>,
    /// Client password. Default none.
    pub requirepass: Option<String>,
    /// Most clients. Default 10000.
    pub maxclients: usize,
    /// Idle seconds before a client is closed; 0 never. Default 0.
    pub timeout_secs: u64,
    /// Log filter. Default `info`.
    pub log_level: String,
    /// Q for a new data directory. Default 4096.
    pub partitions: u32,
    /// Sibling bound. Default 64.
    pub siblings_max: usize,
    /// Largest client bulk string. Default 512 MiB.
    pub proto_max_bulk_len: usize,
    /// Async worker threads. Default `None`: one per CPU core.
    pub worker_threads: Option<usize>,
    /// Record cache budget in bytes (whole MiB). Default 64 MiB.
    pub cache_bytes: usize,
    /// The failure detector's phi threshold. Default 8.
    pub phi_threshold: f64,
    /// Handoff throttle in bytes per second (whole MiB). Default 32 MiB.
    pub handoff_rate: u64,
    /// Whether fallbacks' hints count towards W. Default on.
    pub sloppy_quorum: bool,
    /// Hint window in seconds. Default 3 hours.
    pub hint_window_secs: u64,
    /// Hint bytes kept per target. Default 256 MiB.
    pub hint_max_bytes: u64,
    /// Hint replay throttle in bytes per second (whole KiB). Default 1 MiB.
    pub hint_rate: u64,
    /// Whether reads repair stale replicas. Default on.
    pub read_repair: bool,
    /// Seconds between anti-entropy rounds; 0: none. Default 60.
    pub aae_interval_secs: u64,
    /// Anti-entropy throttle in bytes per second (whole KiB). Default 1 MiB.
    pub aae_rate: u64,
    /// The TOML file the settings came from, if any (CONFIG REWRITE target).
    pub config_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        // Resolving empty settings cannot fail: the defaults are valid.
        Config::resolve(Settings::default(), None).unwrap_or_else(|e| unreachable!("{e}"))
    }
}

impl Config {
    /// Applies defaults to `settings` and checks ranges.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for out-of-range values.
    pub fn resolve(settings: Settings, config_file: Option<PathBuf>) -> Result<Self, ConfigError> {
        let bind = settings.bind.unwrap_or_else(|| "127.0.0.1".to_owned());
        let port = settings.port.unwrap_or(6379);
        let peer_port = match settings.peer_port {
            Some(p) => p,
            // A free client port gets a free peer port too.
            None if port == 0 => 0,
            None => port.checked_add(10_000).ok_or(ConfigError::Invalid {
                name: "peer-port",
                reason: format!("client port {port} + 10000 is past 65535; set --peer-port"),
            })?,
        };
        let replicas = settings.replicas.unwrap_or(3);
        let read_quorum = settings.read_quorum.unwrap_or(2);
        let write_quorum = settings.write_quorum.unwrap_or(2);
        let invalid = |name, reason: String| Err(ConfigError::Invalid { name, reason });
        if replicas == 0 {
            return invalid("replicas", "must be at least 1".into());
        }
        for (name, q) in [("read-quorum", read_quorum), ("write-quorum", write_quorum)] {
            if q == 0 || q > replicas {
                return invalid(name, format!("{q} is not within 1..={replicas} (replicas)"));
            }
        }
        let partitions = settings.partitions.unwrap_or(PARTITIONS_DEFAULT);
        if !partitions.is_power_of_two() || partitions > crate::limits::PARTITIONS_MAX {
            return invalid(
                "partitions",
                format!("{partitions} is not a power of two up to 65536"),
            );
        }
        let weight = settings.weight.unwrap_or(1.0);
        if !(weight.is_finite() && weight > 0.0) {
            return invalid("weight", format!("{weight} is not a positive number"));
        }
        let phi_threshold = settings
            .phi_threshold
            .unwrap_or(DETECTOR_PHI_THRESHOLD_DEFAULT);
        if !(phi_threshold.is_finite() && phi_threshold > 0.0) {
            return invalid(
                "phi-threshold",
                format!("{phi_threshold} is not a positive number"),
            );
        }
        Ok(Config {
            node_name: settings
                .node_name
                .unwrap_or_else(|| format!("{bind}:{port}")),
            node_id: match settings.node_id {
                Some(hex) => Some(
                    u64::from_str_radix(&hex, 16)
                        .ok()
                        .filter(|&id| id != 0 && hex.len() == 16)
                        .ok_or(ConfigError::Invalid {
                            name: "node-id",
                            reason: format!("{hex:?} is not 16 hex digits (and not all zero)"),
                        })?,
                ),
                None => None,
            },
            bind,
            port,
            peer_port,
            peer_advertise: settings.peer_advertise,
            data_dir: settings.data_dir.unwrap_or_else(|| PathBuf::from("./data")),
            fsync: settings.fsync.unwrap_or_default(),
            join: settings.join,
            weight,
            zone: settings.zone,
            replicas,
            read_quorum,
            write_quorum,
            cluster_name: settings.cluster_name.unwrap_or_else(|| "dynokv".to_owned()),
            cluster_secret: settings.cluster_secret,
            requirepass: settings.requirepass.filter(|p| !p.is_empty()),
            maxclients: settings.maxclients.unwrap_or(CLIENTS_MAX_DEFAULT).max(1),
            timeout_secs: settings.timeout.unwrap_or(0),
            log_level: settings.log_level.unwrap_or_else(|| "info".to_owned()),
            partitions,
            siblings_max: settings.siblings_max.unwrap_or(SIBLINGS_MAX_DEFAULT).max(1),
            proto_max_bulk_len: settings
                .proto_max_bulk_len
                .unwrap_or(BULK_BYTES_MAX_DEFAULT),
            worker_threads: settings.worker_threads.map(|n| n.max(1)),
            cache_bytes: match settings.cache_mb {
                Some(mb) => mb.checked_mul(1 << 20).ok_or(ConfigError::Invalid {
                    name: "cache-mb",
                    reason: format!("{mb} MiB is more than this machine can address"),
                })?,
                None => RECORD_CACHE_BYTES_DEFAULT,
            },
            phi_threshold,
            handoff_rate: match settings.handoff_rate {
                Some(0) => return invalid("handoff-rate", "must be at least 1 MiB/s".into()),
                Some(mb) => mb.checked_mul(1 << 20).ok_or(ConfigError::Invalid {
                    name: "handoff-rate",
                    reason: format!("{mb} MiB/s is too large"),
                })?,
                None => crate::limits::HANDOFF_RATE_DEFAULT,
            },
            sloppy_quorum: settings.sloppy_quorum != Some(Toggle::Off),
            hint_window_secs: settings
                .hint_window
                .unwrap_or(crate::limits::HINT_WINDOW_SECS_DEFAULT),
            hint_max_bytes: settings
                .hint_max_bytes
                .unwrap_or(crate::limits::HINT_BYTES_MAX_DEFAULT),
            hint_rate: kib_per_s(
                "hint-rate",
                settings.hint_rate,
                crate::limits::HINT_RATE_KIB_DEFAULT,
            )?,
            read_repair: settings.read_repair != Some(Toggle::Off),
            aae_interval_secs: settings
                .aae_interval
                .unwrap_or(crate::limits::AAE_INTERVAL_SECS_DEFAULT),
            aae_rate: kib_per_s(
                "aae-rate",
                settings.aae_rate,
                crate::limits::AAE_RATE_KIB_DEFAULT,
            )?,
            config_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_defaults_fill_the_rest() {
        let file: Settings =
            toml::from_str("port = 7000\nfsync = \"always\"\njoin = [\"a:1\"]").expect("toml");
        let cli = Settings {
            port: Some(7001),
            ..Settings::default()
        };
        let config = Config::resolve(cli.or(file), None).expect("config");
        assert_eq!(config.port, 7001);
        assert_eq!(config.peer_port, 17001);
        assert_eq!(config.fsync, FsyncPolicy::Always);
        assert_eq!(config.join, vec!["a:1".to_owned()]);
        assert_eq!(config.bind, "127.0.0.1");
    }

    #[test]
    fn rewritten_settings_resolve_to_the_same_config() {
        let config = Config::default();
        let text = toml::to_string(&Settings::from(&config)).expect("toml");
        let back: Settings = toml::from_str(&text).expect("parse");
        assert_eq!(Config::resolve(back, None).expect("config"), config);
    }

    #[test]
    fn rejects_bad_values() {
        let bad = Settings {
            read_quorum: Some(4),
            ..Settings::default()
        };
        assert!(Config::resolve(bad, None).is_err());
        assert!(toml::from_str::<Settings>("no_such_key = 1").is_err());
        let port = Settings {
            port: Some(60000),
            ..Settings::default()
        };
        assert!(Config::resolve(port, None).is_err());
    }
}
