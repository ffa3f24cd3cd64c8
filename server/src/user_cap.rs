//! `--max-connections-per-user` across a cluster.
//!
//! Outside cluster mode the engine counts each user's streams. In cluster mode one user's
//! streams may be spread over every instance, so each instance also keeps its count of each
//! user's streams in Redis: one hash per user (`{prefix}:user-streams:{user}`) with a field per
//! instance process. A new stream is admitted only if the sum over the live instances (those
//! in the node registry) stays within the limit; checking and counting are one script, so two
//! instances cannot both take a user's last place.
//!
//! A field holds its instance's count itself, not a change to it, and only that instance
//! writes it, one batch at a time (this module's task). So an update that Redis lost (it
//! restarted without its data, or was away) is made good by the next batch that touches that
//! user, and every [`RESYNC`] for all of them. The fields of an instance that stopped
//! reporting to the registry are not counted, and are removed when next seen (two live
//! instances under one name, which the registry warns about, share one entry there: one of
//! them is not counted). While Redis cannot be reached, streams are admitted on this
//! instance's own count alone (the engine's).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::log::RedisLog;
use crate::redis::{RedisError, Value};

/// How often every count this instance holds is written again.
pub const RESYNC: Duration = Duration::from_secs(30);
/// A user's hash expires this long after an instance last wrote it (each resync renews it).
const KEY_LIFETIME: Duration = Duration::from_secs(90);
/// The most users one script call takes.
const BATCH: usize = 500;
/// After Redis failed to answer, how long admissions go by this instance's own count without
/// asking it again (each try may wait for the command timeout).
const BACKOFF: Duration = Duration::from_secs(5);

/// Sets this instance's counts for `(user, count before, new streams asked)` and answers each
/// one's grant: the Redis script, or a stand-in in tests.
type Count = dyn Fn(&[(String, u64, u64)]) -> Result<Vec<u64>, RedisError> + Send + Sync;

/// Sets this instance's count for each user and answers how many new streams each may open.
///
/// KEYS[1]: the node registry's tokens (a hash, name to token). KEYS[2..]: the users' hashes.
/// ARGV[1]: this instance's token. ARGV[2]: the limit. ARGV[3]: the hashes' lifetime, ms.
/// Then for the j-th user (KEYS[j + 1]): this instance's count before (ARGV[2 + 2j]) and how
/// many new streams it asks for (ARGV[3 + 2j]). Answers each user's grant; this instance's
/// count for that user becomes before + grant.
const ADMIT_SCRIPT: &str = r"
local live = {}
local owners = redis.call('HGETALL', KEYS[1])
for i = 2, #owners, 2 do live[owners[i]] = true end
local me, limit, lifetime = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local out = {}
for j = 1, #KEYS - 1 do
  local key = KEYS[j + 1]
  local held = tonumber(ARGV[2 + 2 * j])
  local want = tonumber(ARGV[3 + 2 * j])
  local others = 0
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    if fields[i] ~= me then
      if live[fields[i]] then
        others = others + tonumber(fields[i + 1])
      else
        redis.call('HDEL', key, fields[i])
      end
    end
  end
  local grant = math.max(0, math.min(want, limit - others - held))
  if held + grant > 0 then
    redis.call('HSET', key, me, held + grant)
    redis.call('PEXPIRE', key, lifetime)
  else
    redis.call('HDEL', key, me)
  end
  out[#out + 1] = grant
end
return out
";

/// The cluster-wide count of each user's streams, as seen from this instance.
#[derive(Debug)]
pub struct UserCap {
    ops: mpsc::UnboundedSender<Op>,
    limit: usize,
}

#[derive(Debug)]
enum Op {
    Admit {
        user: String,
        reply: oneshot::Sender<bool>,
    },
    Release(String),
}

/// One admitted stream's place in its user's count; dropping it gives the place back.
#[derive(Debug)]
pub struct Lease {
    user: String,
    ops: mpsc::UnboundedSender<Op>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = self.ops.send(Op::Release(std::mem::take(&mut self.user)));
    }
}

/// Where the counts live: the keys and this instance's token.
struct Keys {
    log: Arc<RedisLog>,
    owners: String,
    users: String,
    instance: String,
    limit: usize,
}

impl UserCap {
    /// Starts counting on the current runtime. `owners` is the node registry's hash of live
    /// instances' tokens, `instance` this process's token in it.
    pub fn start(log: Arc<RedisLog>, owners: String, instance: String, limit: usize) -> Self {
        let keys = Keys {
            users: format!("{}:user-streams:", log.prefix()),
            log,
            owners,
            instance,
            limit,
        };
        Self::start_with(
            Arc::new(move |asked: &[(String, u64, u64)]| keys.admit(asked)),
            limit,
        )
    }

    fn start_with(count: Arc<Count>, limit: usize) -> Self {
        let (ops, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(count, rx, ops.clone()));
        Self { ops, limit }
    }

    /// The most streams one user may hold across the cluster.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A place for one more of `user`'s streams, or `None` when the user's streams on the
    /// live instances already reach the limit.
    pub async fn admit(&self, user: &str) -> Option<Lease> {
        let (reply, granted) = oneshot::channel();
        let user = user.to_owned();
        self.ops
            .send(Op::Admit {
                user: user.clone(),
                reply,
            })
            .ok()?;
        // A stopped counter (the server is shutting down) admits nobody.
        granted.await.ok()?.then(|| Lease {
            user,
            ops: self.ops.clone(),
        })
    }
}

async fn run(
    count: Arc<Count>,
    mut rx: mpsc::UnboundedReceiver<Op>,
    ops: mpsc::UnboundedSender<Op>,
) {
    let mut held: HashMap<String, u64> = HashMap::new();
    // Users whose count Redis may not have: its last write failed or was skipped. The resync
    // writes them too, also those whose count went to zero meanwhile (which `held` forgets),
    // or their stale places would count for as long as the user's hash lives.
    let mut unwritten: HashSet<String> = HashSet::new();
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    // Since when Redis has not answered, if it has not.
    let mut unreachable: Option<tokio::time::Instant> = None;
    loop {
        let mut batch = Vec::new();
        tokio::select! {
            op = rx.recv() => {
                let Some(op) = op else { return };
                batch.push(op);
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
            }
            _ = resync.tick() => {}
        }
        // Every user the batch touches, in order, with the admissions it asks for. Releases
        // count at once: a place given back in this batch may be taken in it.
        let mut wants: Vec<(String, Vec<oneshot::Sender<bool>>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let resyncing = batch.is_empty();
        for op in batch {
            let (user, reply) = match op {
                Op::Release(user) => {
                    if let Some(n) = held.get_mut(&user) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            held.remove(&user);
                        }
                    }
                    (user, None)
                }
                Op::Admit { user, reply } => (user, Some(reply)),
            };
            let slot = *index.entry(user.clone()).or_insert_with(|| {
                wants.push((user, Vec::new()));
                wants.len() - 1
            });
            wants[slot].1.extend(reply);
        }
        if resyncing {
            let users: HashSet<&String> = held.keys().chain(&unwritten).collect();
            wants = users.into_iter().map(|u| (u.clone(), Vec::new())).collect();
        }
        for chunk in wants.chunks_mut(BATCH) {
            let asked: Vec<(String, u64, u64)> = chunk
                .iter()
                .map(|(user, replies)| {
                    let before = held.get(user).copied().unwrap_or(0);
                    (user.clone(), before, replies.len() as u64)
                })
                .collect();
            let own_count = || chunk.iter().map(|(_, r)| r.len() as u64).collect();
            // Within the back-off only the resync asks Redis: admissions do not wait on it.
            let grants: Vec<u64> = match unreachable {
                Some(since) if !resyncing && since.elapsed() < BACKOFF => {
                    unwritten.extend(chunk.iter().map(|(user, _)| user.clone()));
                    own_count()
                }
                _ => {
                    let count = count.clone();
                    match tokio::task::spawn_blocking(move || count(&asked)).await {
                        Ok(Ok(grants)) if grants.len() == chunk.len() => {
                            if unreachable.take().is_some() {
                                tracing::info!("counting users' streams in Redis again");
                            }
                            for (user, _) in chunk.iter() {
                                unwritten.remove(user);
                            }
                            grants
                        }
                        failed => {
                            let why = match failed {
                                Ok(Err(e)) => e.to_string(),
                                Ok(Ok(_)) => "a short answer".to_owned(),
                                Err(e) => e.to_string(),
                            };
                            if unreachable.is_none() {
                                tracing::warn!(
                                    "cannot count users' streams across the cluster ({why}); \
                                     each instance admits on its own count until Redis answers"
                                );
                            }
                            unreachable = Some(tokio::time::Instant::now());
                            unwritten.extend(chunk.iter().map(|(user, _)| user.clone()));
                            own_count()
                        }
                    }
                }
            };
            for ((user, replies), grant) in chunk.iter_mut().zip(grants) {
                for (i, reply) in replies.drain(..).enumerate() {
                    let admitted = (i as u64) < grant;
                    if admitted {
                        *held.entry(user.clone()).or_default() += 1;
                    }
                    if reply.send(admitted).is_err() && admitted {
                        // The stream's client left while it waited: its place goes back.
                        let _ = ops.send(Op::Release(user.clone()));
                    }
                }
            }
        }
    }
}

impl Keys {
    /// Runs [`ADMIT_SCRIPT`] for `(user, count before, new streams asked)`: each one's grant.
    fn admit(&self, asked: &[(String, u64, u64)]) -> Result<Vec<u64>, RedisError> {
        let user_keys: Vec<String> = asked
            .iter()
            .map(|(user, _, _)| format!("{}{user}", self.users))
            .collect();
        let numbers: Vec<String> = asked
            .iter()
            .flat_map(|(_, before, want)| [before.to_string(), want.to_string()])
            .collect();
        let numkeys = (1 + user_keys.len()).to_string();
        let limit = self.limit.to_string();
        let lifetime = KEY_LIFETIME.as_millis().to_string();
        let mut args: Vec<&[u8]> = vec![
            b"EVAL",
            ADMIT_SCRIPT.as_bytes(),
            numkeys.as_bytes(),
            self.owners.as_bytes(),
        ];
        args.extend(user_keys.iter().map(|k| k.as_bytes()));
        args.extend([
            self.instance.as_bytes(),
            limit.as_bytes(),
            lifetime.as_bytes(),
        ]);
        args.extend(numbers.iter().map(|n| n.as_bytes()));
        match self.log.with_connection(|conn| conn.query(&args))? {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::Int(n) => Ok(u64::try_from(n).unwrap_or(0)),
                    other => Err(RedisError::Protocol(format!(
                        "unexpected grant from the user count script: {other:?}"
                    ))),
                })
                .collect(),
            other => Err(RedisError::Protocol(format!(
                "unexpected answer from the user count script: {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{RedisLogConfig, Retention};
    use crate::redis::tests::{Cleanup, redis_or_skip, unique_key};

    fn open(test: &str) -> Option<Arc<RedisLog>> {
        let redis = redis_or_skip(test)?;
        Some(Arc::new(
            RedisLog::open(&RedisLogConfig {
                redis,
                prefix: unique_key("users"),
                retention: Retention::default(),
            })
            .unwrap(),
        ))
    }

    fn keys(log: &Arc<RedisLog>, instance: &str, limit: usize) -> Keys {
        Keys {
            log: log.clone(),
            owners: format!("{}:nodes-owner", log.prefix()),
            users: format!("{}:user-streams:", log.prefix()),
            instance: instance.to_owned(),
            limit,
        }
    }

    fn query(log: &RedisLog, args: &[&str]) -> Value {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        log.with_connection(|c| c.query(&args)).unwrap()
    }

    fn ask(keys: &Keys, asked: &[(&str, u64, u64)]) -> Vec<u64> {
        let asked: Vec<(String, u64, u64)> = asked
            .iter()
            .map(|&(user, before, want)| (user.to_owned(), before, want))
            .collect();
        keys.admit(&asked).unwrap()
    }

    #[test]
    fn live_instances_share_a_users_limit_and_a_gone_ones_streams_do_not_count() {
        let Some(log) = open("live_instances_share_a_users_limit") else {
            return;
        };
        let (a, b) = (keys(&log, "A", 3), keys(&log, "B", 3));
        let alice = format!("{}alice", a.users);
        let bob = format!("{}bob", a.users);
        let redis = log.redis().clone();
        let _cleanup = [
            Cleanup(&redis, &a.owners),
            Cleanup(&redis, &alice),
            Cleanup(&redis, &bob),
        ];
        query(&log, &["HSET", &a.owners, "a:1", "A", "b:2", "B"]);

        assert_eq!(ask(&a, &[("alice", 0, 2)]), [2]);
        assert_eq!(ask(&b, &[("alice", 0, 2)]), [1], "A holds 2 of 3");
        assert_eq!(ask(&b, &[("alice", 1, 1)]), [0]);
        // A gives one back (its count is now 1), and B may take it; bob is counted apart.
        assert_eq!(ask(&a, &[("alice", 1, 0), ("bob", 0, 4)]), [0, 3]);
        assert_eq!(ask(&b, &[("alice", 1, 1)]), [1]);
        assert_eq!(
            query(&log, &["HGET", &alice, "B"]),
            Value::Data(b"2".to_vec())
        );
        assert!(matches!(query(&log, &["PTTL", &alice]), Value::Int(ms) if ms > 0));

        // An instance that left the registry: what it held is not counted, and is removed.
        query(&log, &["HDEL", &a.owners, "b:2"]);
        assert_eq!(ask(&a, &[("alice", 1, 5)]), [2]);
        assert_eq!(query(&log, &["HEXISTS", &alice, "B"]), Value::Int(0));
        // An instance that holds none has no field.
        assert_eq!(ask(&a, &[("bob", 0, 0)]), [0]);
        assert_eq!(query(&log, &["HEXISTS", &bob, "A"]), Value::Int(0));
    }

    #[tokio::test(start_paused = true)]
    async fn without_redis_streams_are_admitted_at_once_and_redis_is_asked_again_after_a_while() {
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count: Arc<Count> = {
            let asked = asked.clone();
            Arc::new(move |_: &[(String, u64, u64)]| {
                asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(RedisError::Protocol("Redis is away".into()))
            })
        };
        let cap = UserCap::start_with(count, 1);
        let asked = move || asked.load(std::sync::atomic::Ordering::SeqCst);
        // Admitted on this instance's count (the engine's own cap still applies to it).
        let first = cap.admit("alice").await;
        assert!(first.is_some());
        assert_eq!(asked(), 1);
        // Within the back-off Redis is not asked again.
        let second = cap.admit("bob").await;
        assert!(second.is_some());
        assert_eq!(asked(), 1);
        tokio::time::advance(BACKOFF).await;
        assert!(cap.admit("carol").await.is_some());
        assert_eq!(asked(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_place_given_back_while_redis_was_away_is_written_at_the_next_resync() {
        let away = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let count: Arc<Count> = {
            let (away, written) = (away.clone(), written.clone());
            Arc::new(move |asked: &[(String, u64, u64)]| {
                if away.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(RedisError::Protocol("Redis is away".into()));
                }
                crate::lock(&written).extend(asked.iter().cloned());
                Ok(asked.iter().map(|(_, _, want)| *want).collect())
            })
        };
        let cap = UserCap::start_with(count, 2);
        let lease = cap.admit("alice").await.expect("a place");
        away.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(lease);
        // Let the release reach Redis, and fail there.
        tokio::time::sleep(Duration::from_millis(10)).await;
        away.store(false, std::sync::atomic::Ordering::SeqCst);
        crate::lock(&written).clear();
        tokio::time::sleep(RESYNC).await;
        // Alice holds nothing here any more, and Redis is told so (a count of 0 removes the
        // field), rather than keep her old place counted.
        assert_eq!(
            *crate::lock(&written),
            [("alice".to_owned(), 0, 0)],
            "what the resync wrote"
        );
    }

    #[tokio::test]
    async fn a_place_given_back_by_dropping_its_lease_can_be_taken_again() {
        let Some(log) = open("a_place_given_back") else {
            return;
        };
        let owners = format!("{}:nodes-owner", log.prefix());
        let alice = format!("{}:user-streams:alice", log.prefix());
        let bob = format!("{}:user-streams:bob", log.prefix());
        let redis = log.redis().clone();
        let _cleanup = [
            Cleanup(&redis, &owners),
            Cleanup(&redis, &alice),
            Cleanup(&redis, &bob),
        ];
        // Another live instance holds one of alice's two places.
        query(&log, &["HSET", &owners, "b:2", "B"]);
        query(&log, &["HSET", &alice, "B", "1"]);
        let cap = UserCap::start(log.clone(), owners.clone(), "A".into(), 2);
        let first = cap.admit("alice").await.expect("one place is free");
        assert!(cap.admit("alice").await.is_none(), "both places are taken");
        assert!(
            cap.admit("bob").await.is_some(),
            "bob has places of his own"
        );
        drop(first);
        let again = cap.admit("alice").await;
        assert!(again.is_some(), "the place came back");
        assert_eq!(
            query(&log, &["HGET", &alice, "A"]),
            Value::Data(b"1".to_vec())
        );
    }
}
