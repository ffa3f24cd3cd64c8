//! Who serves this deployment (`GET /admin/nodes`, the console's Nodes view). In cluster
//! mode every instance reports itself to a registry in Redis once a second and reads the
//! others' reports back in the same step; an instance that stops reporting is dropped after
//! [`NODE_TIMEOUT`]. Outside cluster mode the answering server is the only node.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_core::{NodeInfo, Stats};

use crate::hub::Hub;
use crate::lock;
use crate::log::RedisLog;
use crate::redis::RedisError;

/// How often an instance reports itself.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// An instance silent for this long is taken for gone and removed from the registry (the
/// registry's keys expire after it too, when the whole deployment is gone).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// Stores this node's report and answers every live node's, with how long ago each reported,
/// as `[clash, report, ms_ago, report, ms_ago, ...]`, by Redis's clock (so machines' clocks
/// may differ). Nodes silent for longer than the timeout are removed on the way. `clash` is
/// 1 when another process (another instance token) reported under this name within the
/// last [`HEARTBEAT`] and a half: two live instances with one name.
///
/// KEYS[1]: a hash of reports by name. KEYS[2]: a sorted set of names by report time.
/// KEYS[3]: a hash of instance tokens by name.
/// ARGV[1]: this node's name. ARGV[2]: its report (JSON). ARGV[3]: the timeout, in ms.
/// ARGV[4]: this process's instance token. ARGV[5]: the clash window, in ms.
const HEARTBEAT_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local timeout = tonumber(ARGV[3])
local clash = 0
local owner = redis.call('HGET', KEYS[3], ARGV[1])
if owner and owner ~= ARGV[4] then
  local last = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if last and now - tonumber(last) < tonumber(ARGV[5]) then clash = 1 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
redis.call('ZADD', KEYS[2], now, ARGV[1])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - timeout)) do
  redis.call('HDEL', KEYS[1], gone)
  redis.call('HDEL', KEYS[3], gone)
  redis.call('ZREM', KEYS[2], gone)
end
redis.call('PEXPIRE', KEYS[1], timeout)
redis.call('PEXPIRE', KEYS[2], timeout)
redis.call('PEXPIRE', KEYS[3], timeout)
local out = {clash}
local seen = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #seen, 2 do
  local report = redis.call('HGET', KEYS[1], seen[i])
  if report then
    out[#out + 1] = report
    out[#out + 1] = now - tonumber(seen[i + 1])
  end
end
return out
";

/// Heartbeats in a row that must find another live instance under this name before it is
/// reported: one could be this instance's own previous run, just before a quick restart.
const CLASHES_BEFORE_WARNING: u32 = 2;

/// This server's name and, in cluster mode, the registry's last answer.
pub struct Nodes {
    name: String,
    /// Tells this process's reports from another's under the same name.
    instance: String,
    cluster: Option<Registry>,
    /// Set by [`Nodes::leave`]; held across each report, so a heartbeat still in flight
    /// cannot report this node again after it left.
    left: Mutex<bool>,
}

/// The Redis side of cluster mode's registry.
struct Registry {
    log: Arc<RedisLog>,
    reports_key: String,
    seen_key: String,
    owners_key: String,
    /// Heartbeats in a row that found another instance reporting under this name.
    clashes: Mutex<u32>,
    /// Every live node as of the last heartbeat that reached Redis, and when that was.
    latest: Mutex<(Vec<NodeInfo>, Instant)>,
}

impl Nodes {
    /// `name` is this server's (see [`node_name`]); `cluster` the shared log in cluster mode.
    pub fn new(name: String, cluster: Option<Arc<RedisLog>>) -> Arc<Self> {
        let cluster = cluster.map(|log| Registry {
            reports_key: format!("{}:nodes", log.prefix()),
            seen_key: format!("{}:nodes-seen", log.prefix()),
            owners_key: format!("{}:nodes-owner", log.prefix()),
            clashes: Mutex::new(0),
            log,
            latest: Mutex::new((Vec::new(), Instant::now())),
        });
        let instance = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        Arc::new(Self {
            name,
            instance,
            cluster,
            left: Mutex::new(false),
        })
    }

    /// This server's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This process's token in the registry: what tells its reports, and its share of each
    /// user's streams ([`crate::user_cap`]), from another process's.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// In cluster mode, the registry's hash of the live instances' tokens by name.
    pub fn tokens_key(&self) -> Option<&str> {
        self.cluster.as_ref().map(|r| r.owners_key.as_str())
    }

    /// True in cluster mode.
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// In cluster mode, how long ago Redis last answered this server's report (with the
    /// others'): beyond a few [`HEARTBEAT`]s, the other nodes' figures are that old, and
    /// those not seen for [`NODE_TIMEOUT`] are left out of [`Nodes::list`] though they may
    /// be running. `None` outside cluster mode.
    pub fn registry_age(&self) -> Option<Duration> {
        let registry = self.cluster.as_ref()?;
        Some(lock(&registry.latest).1.elapsed())
    }

    /// Every node, by name: the registry's last answer with this server's entry as of
    /// `own` (fresher than its last report), or this server alone outside cluster mode.
    pub fn list(&self, own: &Stats) -> Vec<NodeInfo> {
        let me = NodeInfo::from_stats(&self.name, own);
        let Some(registry) = &self.cluster else {
            return vec![me];
        };
        // While Redis cannot be reached the last answer ages: the others' reports are older by
        // that much, and those older than the timeout are gone.
        let (latest, fetched) = &*lock(&registry.latest);
        let age = u64::try_from(fetched.elapsed().as_millis()).unwrap_or(u64::MAX);
        let timeout = u64::try_from(NODE_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
        let mut nodes: Vec<NodeInfo> = latest
            .iter()
            .filter(|n| n.name != self.name)
            .map(|n| NodeInfo {
                seen_ms_ago: n.seen_ms_ago.saturating_add(age),
                ..n.clone()
            })
            .filter(|n| n.seen_ms_ago <= timeout)
            .collect();
        nodes.push(me);
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }

    /// Reports this server every [`HEARTBEAT`] until the hub stops (cluster mode only; a
    /// no-op otherwise). A Redis outage only pauses it: the reader already reports those.
    pub async fn run(self: Arc<Self>, hub: Hub) {
        if self.cluster.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let Ok(stats) = hub.stats().await else {
                return;
            };
            let nodes = Arc::clone(&self);
            let beat = tokio::task::spawn_blocking(move || nodes.heartbeat(&stats)).await;
            match beat {
                Ok(Err(error)) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "cannot report to the cluster's registry in Redis: the other nodes' figures age, and /admin/nodes leaves out those not heard of for 10 s");
                }
                Ok(Err(error)) => tracing::debug!(%error, "cluster heartbeat failed"),
                Ok(Ok(())) if failing => {
                    failing = false;
                    tracing::info!("reporting to the cluster's registry again");
                }
                _ => {}
            }
        }
    }

    /// Sends one report and keeps the answer.
    fn heartbeat(&self, stats: &Stats) -> Result<(), RedisError> {
        let Some(registry) = &self.cluster else {
            return Ok(());
        };
        let report = serde_json::to_vec(&NodeInfo::from_stats(&self.name, stats))
            .map_err(|e| RedisError::Protocol(e.to_string()))?;
        // With Sentinel, the heartbeat is also when this instance looks for a failover that
        // broke none of its connections. The sentinels being away stops nothing else.
        if let Err(error) = registry.log.recheck_master() {
            tracing::debug!(%error, "asking Sentinel where the master is failed");
        }
        let timeout = NODE_TIMEOUT.as_millis().to_string();
        let window = (HEARTBEAT + HEARTBEAT / 2).as_millis().to_string();
        let left = lock(&self.left);
        if *left {
            return Ok(());
        }
        let reply = registry.log.with_connection(|conn| {
            conn.query(&[
                b"EVAL",
                HEARTBEAT_SCRIPT.as_bytes(),
                b"3",
                registry.reports_key.as_bytes(),
                registry.seen_key.as_bytes(),
                registry.owners_key.as_bytes(),
                self.name.as_bytes(),
                &report,
                timeout.as_bytes(),
                self.instance.as_bytes(),
                window.as_bytes(),
            ])
        })?;
        drop(left);
        let items = reply
            .into_array()
            .ok_or_else(|| RedisError::Protocol("the heartbeat answer is not a list".into()))?;
        let (clash, items) = items
            .split_first()
            .ok_or_else(|| RedisError::Protocol("the heartbeat answer is empty".into()))?;
        self.note_clash(registry, clash.as_int() == Some(1));
        let nodes = items
            .chunks_exact(2)
            .filter_map(|pair| {
                let mut node: NodeInfo = serde_json::from_slice(pair[0].as_bytes()?).ok()?;
                node.seen_ms_ago = pair[1].as_int().and_then(|ms| u64::try_from(ms).ok())?;
                Some(node)
            })
            .collect();
        *lock(&registry.latest) = (nodes, Instant::now());
        Ok(())
    }

    /// Warns once another live instance has been found reporting under this name for
    /// [`CLASHES_BEFORE_WARNING`] heartbeats in a row (and again every minute it goes on):
    /// the two overwrite each other's entry, and operators see one node where there are two.
    fn note_clash(&self, registry: &Registry, clash: bool) {
        let mut clashes = lock(&registry.clashes);
        *clashes = if clash { *clashes + 1 } else { 0 };
        if *clashes >= CLASHES_BEFORE_WARNING
            && (*clashes - CLASHES_BEFORE_WARNING).is_multiple_of(60)
        {
            tracing::warn!(
                name = %self.name,
                "another live instance reports under this node name; the Nodes view shows one of \
                 them only: give each instance its own --node-name"
            );
        }
    }

    /// Heartbeats in a row that found another instance reporting under this name.
    #[cfg(test)]
    fn clashes(&self) -> u32 {
        self.cluster.as_ref().map_or(0, |r| *lock(&r.clashes))
    }

    /// Removes this server from the registry at shutdown, so the others stop listing it at
    /// once instead of after [`NODE_TIMEOUT`]. Blocking.
    pub fn leave(&self) {
        let Some(registry) = &self.cluster else {
            return;
        };
        let name = self.name.as_bytes();
        let mut left = lock(&self.left);
        *left = true;
        let removed = registry.log.with_connection(|conn| {
            conn.pipeline(&[
                vec![
                    b"HDEL".to_vec(),
                    registry.reports_key.clone().into(),
                    name.to_vec(),
                ],
                vec![
                    b"ZREM".to_vec(),
                    registry.seen_key.clone().into(),
                    name.to_vec(),
                ],
                vec![
                    b"HDEL".to_vec(),
                    registry.owners_key.clone().into(),
                    name.to_vec(),
                ],
            ])
        });
        if let Err(error) = removed {
            tracing::warn!(%error, "could not leave the cluster registry; the others drop this node within {NODE_TIMEOUT:?}");
        }
    }
}

/// This server's name in the registry: the machine's host name and the port it listens on.
pub fn node_name(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "herald".to_owned());
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{RedisLogConfig, Retention};
    use crate::redis::tests::{redis_or_skip, unique_key};

    fn names(nodes: &[NodeInfo]) -> Vec<&str> {
        nodes.iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn nodes_see_each_other_until_one_leaves_or_its_reports_grow_too_old() {
        let Some(redis) = redis_or_skip("nodes_see_each_other") else {
            return;
        };
        let prefix = unique_key("nodes");
        let log = Arc::new(
            RedisLog::open(&RedisLogConfig {
                redis,
                prefix,
                retention: Retention::default(),
            })
            .unwrap(),
        );
        let a = Nodes::new("a:1".into(), Some(log.clone()));
        let b = Nodes::new("b:2".into(), Some(log));
        let mut stats = Stats::default();
        stats.counters.connections = 3;
        stats.latency.delivery = Some(herald_core::Quantiles {
            count: 9,
            p50_us: 200,
            p99_us: 1_500,
        });
        b.heartbeat(&stats).unwrap();
        a.heartbeat(&Stats::default()).unwrap();
        let seen = a.list(&Stats::default());
        assert_eq!(names(&seen), ["a:1", "b:2"]);
        assert_eq!(seen[1].counters.connections, 3);
        assert_eq!(
            seen[1].latency, stats.latency,
            "its latency comes with its report"
        );
        // A report from a server older than the latency figures still reads.
        let mut old = serde_json::to_value(&seen[1]).unwrap();
        old.as_object_mut().unwrap().remove("latency");
        let old: NodeInfo = serde_json::from_value(old).unwrap();
        assert_eq!(old.latency, herald_core::Latency::default());

        // Redis out of reach for longer than the timeout: the last answer has aged out.
        assert!(a.registry_age().unwrap() < NODE_TIMEOUT);
        if let Some(long_ago) = Instant::now().checked_sub(NODE_TIMEOUT + HEARTBEAT) {
            lock(&a.cluster.as_ref().unwrap().latest).1 = long_ago;
            assert_eq!(names(&a.list(&Stats::default())), ["a:1"]);
            // Which the operator is told: the registry has not answered for that long.
            assert!(a.registry_age().unwrap() >= NODE_TIMEOUT + HEARTBEAT);
        }
        assert_eq!(Nodes::new("solo:3".into(), None).registry_age(), None);

        b.leave();
        // A heartbeat after leaving reports nothing, so B stays gone.
        b.heartbeat(&stats).unwrap();
        a.heartbeat(&Stats::default()).unwrap();
        assert_eq!(names(&a.list(&Stats::default())), ["a:1"]);
        a.leave();
    }

    #[test]
    fn two_live_instances_with_one_name_are_told_apart_from_a_quick_restart() {
        let Some(redis) = redis_or_skip("two_live_instances_with_one_name") else {
            return;
        };
        let log = Arc::new(
            RedisLog::open(&RedisLogConfig {
                redis,
                prefix: unique_key("nodes-clash"),
                retention: Retention::default(),
            })
            .unwrap(),
        );
        let stats = Stats::default();
        // Two instances given the same name: each heartbeat finds the other's report.
        let a = Nodes::new("edge".into(), Some(log.clone()));
        let b = Nodes::new("edge".into(), Some(log.clone()));
        a.heartbeat(&stats).unwrap();
        assert_eq!(a.clashes(), 0);
        b.heartbeat(&stats).unwrap();
        a.heartbeat(&stats).unwrap();
        b.heartbeat(&stats).unwrap();
        assert_eq!((a.clashes(), b.clashes()), (1, CLASHES_BEFORE_WARNING));
        assert_eq!(names(&a.list(&stats)), ["edge"]);
        a.leave();

        // A restart: the new process's first report follows the old one's last; after
        // that only the new one reports, so it never counts as two.
        let old = Nodes::new("box:1".into(), Some(log.clone()));
        old.heartbeat(&stats).unwrap();
        let new = Nodes::new("box:1".into(), Some(log));
        new.heartbeat(&stats).unwrap();
        assert_eq!(new.clashes(), 1);
        new.heartbeat(&stats).unwrap();
        assert_eq!(new.clashes(), 0);
        new.leave();
    }
}
