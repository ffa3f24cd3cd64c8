use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use herald_core::{
    ConnId, Event, EventId, HistoryPage, HistoryRequest, LogBounds, Subscription, Target, Topic,
    TopicPattern, UserId,
};

use super::replay::SCAN_BUDGET;
use super::*;

fn event(id: u64, topics: &[&str], users: &[&str], broadcast: bool) -> Arc<Event> {
    Arc::new(Event {
        id: EventId::new(1_000 + id, id),
        target: Target {
            topics: topics.iter().map(|t| Topic::new(t).unwrap()).collect(),
            users: users.iter().map(|u| UserId::new(u).unwrap()).collect(),
            broadcast,
        },
        event_type: None,
        data: format!("payload {id}"),
    })
}

fn id(n: u64) -> EventId {
    EventId::new(1_000 + n, n)
}

fn config(dir: &std::path::Path) -> LogConfig {
    LogConfig {
        data_dir: dir.to_path_buf(),
        ..LogConfig::default()
    }
}

/// Opens the log in `cfg`, waiting out a lock still held by a log of this process that was
/// just dropped: sled's background IO threads let go of the data dir shortly after the drop.
fn open_log(cfg: &LogConfig) -> Result<SledLog, OpenError> {
    let mut waited = Duration::ZERO;
    loop {
        match SledLog::open(cfg) {
            Err(OpenError::Locked { .. }) if waited < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(10));
                waited += Duration::from_millis(10);
            }
            opened => return opened,
        }
    }
}

/// A log in `dir` that retains at most `max_events`.
fn keeping(dir: &std::path::Path, max_events: u64) -> LogConfig {
    LogConfig {
        retention: Retention {
            max_events,
            ..Retention::default()
        },
        ..config(dir)
    }
}

fn subscription(patterns: &[&str], user: Option<&str>) -> Subscription {
    Subscription {
        patterns: patterns
            .iter()
            .map(|p| TopicPattern::parse(p).unwrap())
            .collect(),
        user: user.map(|u| UserId::new(u).unwrap()),
    }
}

fn request(after: Option<EventId>, subscription: Subscription) -> HistoryRequest {
    HistoryRequest {
        conn: ConnId(1),
        after,
        through: EventId::MAX,
        subscription,
        max_events: 10_000,
        max_bytes: usize::MAX,
    }
}

fn ids(page: &HistoryPage) -> Vec<u64> {
    page.events.iter().map(|e| e.id.seq).collect()
}

/// Events 1..=12: topics a, b, news/eu, news/us, user alice or bob, every 6th broadcast.
fn mixed_events() -> Vec<Arc<Event>> {
    (1..=12)
        .map(|n| match n % 6 {
            0 => event(n, &[], &[], true),
            1 => event(n, &["a"], &[], false),
            2 => event(n, &["b"], &[], false),
            3 => event(n, &["news/eu"], &[], false),
            4 => event(n, &["news/us", "a"], &["alice"], false),
            _ => event(n, &[], &["bob"], false),
        })
        .collect()
}

fn mixed_log(log: &SledLog) {
    log.append(&mixed_events(), &[]).unwrap();
}

#[test]
fn appended_events_read_back_in_order_with_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(&config(dir.path())).unwrap();
    assert_eq!(log.last_id(), None);
    mixed_log(&log);
    let page = log
        .read(&request(None, subscription(&["*"], Some("alice"))))
        .unwrap();
    assert_eq!(ids(&page), vec![1, 2, 3, 4, 6, 7, 8, 9, 10, 12]);
    assert_eq!(
        page.events[3],
        *event(4, &["news/us", "a"], &["alice"], false)
    );
    assert!(!page.more);
    assert_eq!(log.last_id(), Some(id(12)));
    let bounds = log.bounds();
    assert_eq!(
        (bounds.oldest, bounds.floor, bounds.events),
        (Some(id(1)), None, 12)
    );
    assert!(bounds.bytes > 12 * 16);
}

#[test]
fn exact_topics_replay_only_their_events_and_broadcasts() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(&config(dir.path())).unwrap();
    mixed_log(&log);
    let page = log
        .read(&request(None, subscription(&["a"], None)))
        .unwrap();
    assert_eq!(ids(&page), vec![1, 4, 6, 7, 10, 12]);
    let page = log
        .read(&request(Some(id(4)), subscription(&["a", "b"], None)))
        .unwrap();
    assert_eq!(ids(&page), vec![6, 7, 8, 10, 12]);
    let page = log
        .read(&request(None, subscription(&["nothing"], None)))
        .unwrap();
    assert_eq!(ids(&page), vec![6, 12]);
}

#[test]
fn prefix_patterns_replay_every_topic_under_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(&config(dir.path())).unwrap();
    mixed_log(&log);
    let page = log
        .read(&request(None, subscription(&["news/*"], None)))
        .unwrap();
    assert_eq!(ids(&page), vec![3, 4, 6, 9, 10, 12]);
    // Overlapping patterns name each event once.
    let page = log
        .read(&request(
            None,
            subscription(&["news/*", "news/eu", "a"], None),
        ))
        .unwrap();
    assert_eq!(ids(&page), vec![1, 3, 4, 6, 7, 9, 10, 12]);
    let page = log
        .read(&request(None, subscription(&["*"], None)))
        .unwrap();
    assert_eq!(ids(&page), vec![1, 2, 3, 4, 6, 7, 8, 9, 10, 12]);
    let page = log
        .read(&request(None, subscription(&["new/*"], None)))
        .unwrap();
    assert_eq!(ids(&page), vec![6, 12]);
}

#[test]
fn user_replay_reads_the_users_own_events_and_broadcasts() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(&config(dir.path())).unwrap();
    mixed_log(&log);
    let page = log
        .read(&request(None, subscription(&[], Some("bob"))))
        .unwrap();
    assert_eq!(ids(&page), vec![5, 6, 11, 12]);
    let page = log
        .read(&request(None, subscription(&[], Some("carol"))))
        .unwrap();
    assert_eq!(ids(&page), vec![6, 12]);
    // `alice` is a prefix of no other user here, but `bo` must not match `bob`'s entries.
    let page = log
        .read(&request(None, subscription(&[], Some("bo"))))
        .unwrap();
    assert_eq!(ids(&page), vec![6, 12]);
}

#[test]
fn a_range_is_exclusive_below_and_inclusive_above() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(&config(dir.path())).unwrap();
    mixed_log(&log);
    let mut req = request(Some(id(2)), subscription(&["*"], Some("bob")));
    req.through = id(6);
    assert_eq!(ids(&log.read(&req).unwrap()), vec![3, 4, 5, 6]);
    req.after = Some(id(6));
    assert_eq!(log.read(&req).unwrap(), HistoryPage::default());
    req.after = Some(EventId::MAX);
    req.through = EventId::MAX;
    assert_eq!(log.read(&req).unwrap(), HistoryPage::default());
}

#[test]
fn pages_stop_at_their_limits_and_say_there_is_more() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(&config(dir.path())).unwrap();
    mixed_log(&log);
    let mut req = request(None, subscription(&["*"], Some("bob")));
    req.max_events = 5;
    let page = log.read(&req).unwrap();
    assert_eq!((ids(&page), page.more), (vec![1, 2, 3, 4, 5], true));
    req.after = Some(id(5));
    let page = log.read(&req).unwrap();
    assert_eq!((ids(&page), page.more), (vec![6, 7, 8, 9, 10], true));
    req.after = Some(id(10));
    let page = log.read(&req).unwrap();
    assert_eq!((ids(&page), page.more), (vec![11, 12], false));

    // Exactly filling the page with nothing after it is not `more`.
    req.after = Some(id(10));
    req.max_events = 2;
    assert!(!log.read(&req).unwrap().more);

    // "payload N" is 9 or 10 bytes: a 20-byte budget holds two events.
    req.after = None;
    req.max_events = 100;
    req.max_bytes = 20;
    let page = log.read(&req).unwrap();
    assert_eq!((ids(&page), page.more), (vec![1, 2], true));
    // A page always holds at least one event, however small the budget.
    req.max_bytes = 0;
    let page = log.read(&req).unwrap();
    assert_eq!((ids(&page), page.more), (vec![1], true));
    req.max_events = 0;
    req.max_bytes = usize::MAX;
    let page = log.read(&req).unwrap();
    assert_eq!((ids(&page), page.more), (vec![1], true));
}

#[test]
fn very_many_topics_under_a_prefix_give_the_same_answer_by_scanning() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(&config(dir.path())).unwrap();
    let names: Vec<String> = (0..300).map(|n| format!("t/{n}")).collect();
    let batch: Vec<Arc<Event>> = (1..=600)
        .map(|n| {
            let topic = if n % 3 == 0 {
                "other".to_owned()
            } else {
                names[n as usize % 300].clone()
            };
            event(n, &[&topic], &[], false)
        })
        .collect();
    log.append(&batch, &[]).unwrap();
    let page = log
        .read(&request(None, subscription(&["t/*"], None)))
        .unwrap();
    let expected: Vec<u64> = (1..=600).filter(|n| n % 3 != 0).collect();
    assert_eq!(ids(&page), expected);
    let page = log
        .read(&request(Some(id(590)), subscription(&["t/*"], None)))
        .unwrap();
    assert_eq!(ids(&page), vec![592, 593, 595, 596, 598, 599]);
}

#[test]
fn a_scan_reads_at_most_its_budget_per_page_and_says_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(&config(dir.path())).unwrap();
    // 300 topics under `t/` (too many to merge), then a long run of events none of them
    // sees, then three more for `t/1`.
    let quiet = 2 * SCAN_BUDGET as u64;
    let batch: Vec<Arc<Event>> = (1..=300 + quiet + 3)
        .map(|n| match n {
            1..=300 => event(n, &[&format!("t/{n}")], &[], false),
            n if n <= 300 + quiet => event(n, &["other"], &["bob"], false),
            n => event(n, &["t/1"], &[], false),
        })
        .collect();
    log.append(&batch, &[]).unwrap();
    let mut req = request(None, subscription(&["t/*"], None));
    let mut pages = Vec::new();
    loop {
        let page = log.read(&req).unwrap();
        let next = page.read_through.or(page.events.last().map(|e| e.id));
        pages.push((ids(&page), page.more, page.read_through));
        if !page.more {
            break;
        }
        req.after = next;
    }
    let budget = SCAN_BUDGET as u64;
    let tail: Vec<u64> = (301 + quiet..=303 + quiet).collect();
    assert_eq!(
        pages,
        [
            ((1..=300).collect(), true, Some(id(budget))),
            (vec![], true, Some(id(2 * budget))),
            (tail, false, None),
        ]
    );
}

#[test]
fn appends_must_ascend_and_a_refused_batch_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(&config(dir.path())).unwrap();
    log.append(&[event(5, &["a"], &[], false)], &[]).unwrap();
    let err = log.append(
        &[event(6, &["a"], &[], false), event(4, &["a"], &[], false)],
        &[],
    );
    assert!(matches!(err, Err(LogError::OutOfOrder { .. })), "{err:?}");
    assert!(!err.unwrap_err().is_fatal());
    let err = log.append(&[event(5, &["a"], &[], false)], &[]);
    assert!(matches!(err, Err(LogError::OutOfOrder { .. })));
    assert_eq!(log.last_id(), Some(id(5)));
    assert_eq!(
        ids(&log
            .read(&request(None, subscription(&["a"], None)))
            .unwrap()),
        vec![5]
    );
    assert_eq!(log.bounds().events, 1);
}

#[test]
fn reopening_keeps_the_events_last_id_totals_and_floor() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = keeping(dir.path(), 4);
    let before = {
        let log = open_log(&cfg).unwrap();
        mixed_log(&log);
        let report = log.trim(0, 100).unwrap();
        assert_eq!(
            (report.removed, report.floor, report.more),
            (8, Some(id(8)), false)
        );
        log.bounds()
    };
    assert_eq!(before.events, 4);
    let log = open_log(&cfg).unwrap();
    assert_eq!(log.bounds(), before);
    assert_eq!(log.last_id(), Some(id(12)));
    assert_eq!(
        ids(&log
            .read(&request(None, subscription(&["*"], None)))
            .unwrap()),
        vec![9, 10, 12]
    );
}

#[test]
fn the_last_id_survives_trimming_everything() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = keeping(dir.path(), 0);
    {
        let log = open_log(&cfg).unwrap();
        mixed_log(&log);
        log.trim(0, 100).unwrap();
        assert_eq!(
            log.bounds(),
            LogBounds {
                floor: Some(id(12)),
                ..LogBounds::default()
            }
        );
    }
    let log = open_log(&cfg).unwrap();
    assert_eq!(log.last_id(), Some(id(12)));
    let err = log.append(&[event(12, &["a"], &[], false)], &[]);
    assert!(matches!(err, Err(LogError::OutOfOrder { .. })));
}

#[test]
fn trimming_by_count_goes_in_bounded_steps_and_takes_index_entries_along() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = keeping(dir.path(), 5);
    let log = open_log(&cfg).unwrap();
    mixed_log(&log);
    let step = log.trim(0, 3).unwrap();
    assert_eq!(
        (step.removed, step.floor, step.more),
        (3, Some(id(3)), true)
    );
    let step = log.trim(0, 3).unwrap();
    assert_eq!(
        (step.removed, step.floor, step.more),
        (3, Some(id(6)), true)
    );
    let step = log.trim(0, 3).unwrap();
    assert_eq!(
        (step.removed, step.floor, step.more),
        (1, Some(id(7)), false)
    );
    let step = log.trim(0, 3).unwrap();
    assert_eq!(
        (step.removed, step.floor, step.more),
        (0, Some(id(7)), false)
    );
    assert_eq!(log.bounds().oldest, Some(id(8)));
    assert_eq!(log.bounds().events, 5);
    assert_eq!(
        ids(&log
            .read(&request(None, subscription(&["*"], Some("bob"))))
            .unwrap()),
        vec![8, 9, 10, 11, 12]
    );
}

fn index_entries(log: &SledLog) -> usize {
    log.by_topic.len() + log.by_user.len() + log.broadcast.len()
}

#[test]
fn index_entries_go_with_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let retain = |max_events| LogConfig {
        retention: Retention {
            max_events,
            ..Retention::default()
        },
        ..config(dir.path())
    };
    {
        let log = open_log(&retain(5)).unwrap();
        // One batch per event: one index entry per name per event.
        for event in mixed_events() {
            log.append(&[event], &[]).unwrap();
        }
        assert_eq!(index_entries(&log), 16);
        log.trim(0, 100).unwrap();
        // Only the entries of events 8..=12 remain (event 10 has three).
        assert_eq!(index_entries(&log), 7);
    }
    {
        let log = open_log(&retain(0)).unwrap();
        log.trim(0, 100).unwrap();
        assert_eq!(index_entries(&log), 0);
        assert_eq!(log.bounds().events, 0);
    }
}

#[test]
fn one_batch_shares_index_entries_that_stay_until_their_last_event_goes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = keeping(dir.path(), 3);
    let log = open_log(&cfg).unwrap();
    mixed_log(&log);
    // a, b, news/eu, news/us, alice, bob, broadcast: one entry each for the whole batch.
    assert_eq!(index_entries(&log), 7);
    log.trim(0, 100).unwrap();
    // 10..=12 remain: the entries of a, news/us, alice (10), bob (11), broadcast (12).
    assert_eq!(index_entries(&log), 5);
    assert_eq!(
        ids(&log
            .read(&request(None, subscription(&["*"], Some("bob"))))
            .unwrap()),
        vec![10, 11, 12]
    );
    assert_eq!(
        ids(&log
            .read(&request(None, subscription(&["b"], None)))
            .unwrap()),
        vec![12]
    );
}

#[test]
fn trimming_by_age_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention: Retention {
            max_age: Duration::from_millis(1_000),
            max_bytes: u64::MAX,
            ..Retention::default()
        },
        ..config(dir.path())
    };
    let log = open_log(&cfg).unwrap();
    mixed_log(&log); // event n was published at ms 1000 + n
    // At 2004 ms, events published before 1004 ms are over a second old.
    let step = log.trim(2_004, 100).unwrap();
    assert_eq!((step.removed, step.floor), (3, Some(id(3))));
    drop(log);

    let bytes_each = {
        let log = open_log(&config(dir.path())).unwrap();
        log.bounds().bytes / log.bounds().events
    };
    let cfg = LogConfig {
        retention: Retention {
            max_bytes: bytes_each * 4,
            ..Retention::default()
        },
        ..config(dir.path())
    };
    let log = open_log(&cfg).unwrap();
    let step = log.trim(0, 100).unwrap();
    assert!(log.bounds().bytes <= bytes_each * 4, "{:?}", log.bounds());
    assert!(step.removed >= 4, "{step:?}");
}

#[test]
fn a_corrupt_record_is_skipped_counted_and_still_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = keeping(dir.path(), 10);
    let log = open_log(&cfg).unwrap();
    mixed_log(&log);
    // Damage event 1 (topic a) and event 7 (topic a): a length prefix claiming 2^40 bytes.
    let mut garbage = vec![codec::RECORD_VERSION, 0xFD];
    garbage.extend_from_slice(&(1u64 << 40).to_le_bytes());
    log.events
        .insert(id(1).to_bytes(), garbage.clone())
        .unwrap();
    log.events
        .insert(id(7).to_bytes(), &b"\x01\xff"[..])
        .unwrap();

    let page = log
        .read(&request(None, subscription(&["a"], None)))
        .unwrap();
    assert_eq!(ids(&page), vec![4, 6, 10, 12]);
    assert_eq!(log.corrupt_records(), 2);
    let page = log
        .read(&request(None, subscription(&["*"], None)))
        .unwrap();
    assert_eq!(ids(&page), vec![2, 3, 4, 6, 8, 9, 10, 12]);
    assert_eq!(log.corrupt_records(), 4);

    let step = log.trim(0, 100).unwrap();
    assert_eq!((step.removed, step.floor), (2, Some(id(2))));
    assert_eq!(log.corrupt_records(), 5);
    assert_eq!(log.bounds().oldest, Some(id(3)));
    // Event 1's index entry is left behind, but below the floor where replay never looks.
    let page = log
        .read(&request(None, subscription(&["a"], None)))
        .unwrap();
    assert_eq!(ids(&page), vec![4, 6, 10, 12]);
    assert_eq!(log.corrupt_records(), 6);
}

#[test]
fn a_data_dir_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _log = SledLog::open(&config(dir.path())).unwrap();
    let err = SledLog::open(&config(dir.path())).unwrap_err();
    assert!(matches!(err, OpenError::Locked { .. }), "{err:?}");
    assert!(
        err.to_string().contains("in use by another herald process"),
        "{err}"
    );
}

/// A data dir holding a log of a few thousand events, closed.
fn filled_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(&config(dir.path())).unwrap();
    let events: Vec<_> = (1..=3_000).map(|n| event(n, &["t"], &[], false)).collect();
    for chunk in events.chunks(500) {
        log.append(chunk, &[]).unwrap();
    }
    drop(log);
    dir
}

#[test]
fn a_damaged_log_is_an_error_never_a_fresh_log_over_it() {
    let source = filled_dir();
    // Cut short, with and without sled's snapshot beside it, so that sled fails, panics or
    // finds no event: each is an error that says what to do. (A cut that leaves sled an
    // earlier consistent state, some of the events, opens as that state: sled cannot tell.)
    for (cut, keep_snapshot) in [(1, true), (4096, true), (1, false), (4096, false)] {
        let copy = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(source.path()).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            let is_snapshot = name.to_string_lossy().starts_with("snap.");
            if entry.file_type().unwrap().is_file() && (keep_snapshot || !is_snapshot) {
                std::fs::copy(entry.path(), copy.path().join(&name)).unwrap();
            }
        }
        let db = std::fs::OpenOptions::new()
            .write(true)
            .open(copy.path().join("db"))
            .unwrap();
        db.set_len(cut).unwrap();
        drop(db);
        match SledLog::open(&config(copy.path())) {
            Ok(log) => panic!(
                "cut to {cut} (snapshot kept: {keep_snapshot}): opened with {} events",
                log.bounds().events
            ),
            Err(err) => assert!(
                matches!(err, OpenError::Damaged { .. } | OpenError::Storage { .. })
                    && err.to_string().contains("cannot"),
                "cut to {cut}: {err}"
            ),
        }
    }

    // Someone else's file named `db` is not written over.
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("db"), b"my own notes").unwrap();
    let err = SledLog::open(&config(foreign.path())).unwrap_err();
    assert!(matches!(err, OpenError::Damaged { .. }), "{err:?}");
    assert_eq!(
        std::fs::read(foreign.path().join("db")).unwrap(),
        b"my own notes"
    );
}

#[test]
fn a_log_from_before_the_marker_opens_and_is_marked_and_is_refused_when_cut() {
    let dir = filled_dir();
    std::fs::remove_file(dir.path().join("HERALD_LOG")).unwrap();
    let log = open_log(&config(dir.path())).unwrap();
    assert_eq!(log.bounds().events, 3_000);
    drop(log);
    assert!(dir.path().join("HERALD_LOG").exists());

    let old = filled_dir();
    std::fs::remove_file(old.path().join("HERALD_LOG")).unwrap();
    let db = std::fs::OpenOptions::new()
        .write(true)
        .open(old.path().join("db"))
        .unwrap();
    // Cut to where sled finds no layout at all.
    db.set_len(1).unwrap();
    drop(db);
    let err = open_log(&config(old.path())).unwrap_err();
    assert!(matches!(err, OpenError::Damaged { .. }), "{err:?}");
}

#[test]
fn a_data_dir_of_another_format_version_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open_log(&config(dir.path())).unwrap();
        log.meta
            .insert("layout_version", &99u32.to_be_bytes())
            .unwrap();
        log.meta.flush().unwrap();
    }
    let err = open_log(&config(dir.path())).unwrap_err();
    assert!(
        matches!(err, OpenError::FormatVersion { found: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("format version 99"), "{err}");
}

#[test]
fn the_group_committer_batches_appends_and_reports_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<SledLog> = Arc::new(open_log(&config(dir.path())).unwrap());
    let (reports, received) = mpsc::channel();
    let committer = GroupCommitter::start(log.clone(), move |report| {
        reports.send(report).unwrap();
    });
    for n in 1..=500 {
        committer.append(event(n, &["a"], &[], false), None);
    }
    let metrics = committer.metrics();
    committer.shutdown();
    let mut next = 1;
    let mut batches = 0;
    for report in received.try_iter() {
        let CommitReport::Committed { up_to, count, .. } = report else {
            panic!("{report:?}");
        };
        next += count as u64;
        assert_eq!(up_to, id(next - 1));
        batches += 1;
    }
    assert_eq!(next, 501);
    let snapshot = metrics.snapshot();
    assert_eq!(
        (snapshot.committed_events, snapshot.committed_batches),
        (500, batches)
    );
    assert_eq!(snapshot.pending(), 0);
    assert_eq!(log.bounds().events, 500);
}

/// A log whose every append fails, fatally or not.
struct FailingLog {
    fatal: bool,
    calls: Mutex<usize>,
}

impl AppendLog for FailingLog {
    fn append(&self, batch: &[Arc<Event>], _: &[(EventId, Arc<str>)]) -> Result<(), LogError> {
        *self.calls.lock().unwrap() += 1;
        if self.fatal {
            Err(LogError::Sync {
                path: "db".into(),
                source: std::io::Error::other("disk on fire"),
            })
        } else {
            Err(LogError::OutOfOrder {
                id: batch[0].id,
                last: EventId::MAX,
            })
        }
    }
    fn idempotency_keys(&self, _: usize) -> Result<Vec<(EventId, String)>, LogError> {
        Ok(Vec::new())
    }
}

impl EventLog for FailingLog {
    fn read(&self, _: &HistoryRequest) -> Result<HistoryPage, LogError> {
        Ok(HistoryPage::default())
    }
    fn last_id(&self) -> Option<EventId> {
        None
    }
    fn bounds(&self) -> LogBounds {
        LogBounds::default()
    }
    fn trim(&self, _: u64, _: usize) -> Result<TrimReport, LogError> {
        Ok(TrimReport::default())
    }
    fn corrupt_records(&self) -> u64 {
        0
    }
}

#[test]
fn after_a_storage_failure_nothing_more_is_acknowledged() {
    for fatal in [true, false] {
        let log = Arc::new(FailingLog {
            fatal,
            calls: Mutex::new(0),
        });
        let (reports, received) = mpsc::channel();
        let committer = GroupCommitter::start(log.clone(), move |report| {
            reports.send(report).unwrap();
        });
        committer.append(event(1, &["a"], &[], false), None);
        // Wait for the first report so the second event is a batch of its own.
        let first = received.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(matches!(&first, CommitReport::Failed { ids, .. } if ids == &[id(1)]));
        committer.append(event(2, &["a"], &[], false), None);
        let metrics = committer.metrics();
        committer.shutdown();
        let second = received.recv_timeout(Duration::from_secs(10)).unwrap();
        let CommitReport::Failed { ids, error } = second else {
            panic!("{second:?}")
        };
        assert_eq!(ids, vec![id(2)]);
        // A fatal failure stops the committer: the second batch is not even tried.
        assert_eq!(*log.calls.lock().unwrap(), if fatal { 1 } else { 2 });
        assert_eq!(error.contains("stopped accepting"), fatal, "{error}");
        assert_eq!(metrics.snapshot().stopped, fatal);
        assert_eq!(metrics.stopped_by().is_some(), fatal);
        assert_eq!(metrics.snapshot().failed_events, 2);
    }
}

#[test]
fn the_trimmer_keeps_the_log_within_its_limits_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        // The test ids are from 1970: only the count limit should apply.
        retention: Retention {
            max_events: 3,
            max_age: Duration::MAX,
            ..Retention::default()
        },
        ..config(dir.path())
    };
    let log = Arc::new(open_log(&cfg).unwrap());
    mixed_log(&log);
    let trimmed = Arc::new(AtomicBool::new(false));
    let (floors, received) = mpsc::channel();
    let flag = trimmed.clone();
    let trimmer = Trimmer::start(log.clone(), Duration::from_millis(10), move |report| {
        flag.store(true, Ordering::SeqCst);
        floors.send(report.floor).unwrap();
    });
    let floor = received.recv_timeout(Duration::from_secs(10)).unwrap();
    trimmer.shutdown();
    assert!(trimmed.load(Ordering::SeqCst));
    assert_eq!(floor, Some(id(9)));
    assert_eq!(log.bounds().events, 3);
}

#[test]
fn fsync_policies_parse_from_their_flag_values() {
    assert_eq!("every-batch".parse(), Ok(FsyncPolicy::EveryBatch));
    assert_eq!("never".parse(), Ok(FsyncPolicy::Never));
    assert!("sometimes".parse::<FsyncPolicy>().is_err());
    assert_eq!(FsyncPolicy::Never.to_string(), "never");
}

#[test]
fn idempotency_keys_are_kept_across_a_reopen_and_outlive_their_events_up_to_their_own_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = keeping(dir.path(), 2);
    let key = |n: u64, k: &str| (id(n), Arc::<str>::from(k));
    {
        let log = open_log(&cfg).unwrap();
        let batch = [event(1, &["a"], &[], false), event(2, &["a"], &[], false)];
        log.append(&batch, &[key(1, "first")]).unwrap();
        log.append(&[event(3, &["a"], &[], false)], &[key(3, "third")])
            .unwrap();
        log.flush().unwrap();
    }
    let log = open_log(&cfg).unwrap();
    let both = vec![(id(1), "first".to_owned()), (id(3), "third".to_owned())];
    assert_eq!(log.idempotency_keys(10).unwrap(), both);
    // The newest ones first when there are more than asked for.
    assert_eq!(log.idempotency_keys(1).unwrap(), both[1..]);
    // Retention keeps 2 events: event 1 goes, its key stays (a retry is still answered
    // with its id, as the engine does until it restarts).
    assert_eq!(log.trim(0, 10).unwrap().removed, 1);
    assert_eq!(log.idempotency_keys(10).unwrap(), both);
    drop(log);
    // Keeping one key: the oldest goes, in steps of at most `max_step`, across a reopen.
    cfg.retention.max_keys = 1;
    let log = open_log(&cfg).unwrap();
    assert_eq!(log.idempotency_keys(10).unwrap(), both);
    let step = log.trim(0, 10).unwrap();
    assert_eq!((step.removed, step.more), (0, false));
    assert_eq!(log.idempotency_keys(10).unwrap(), both[1..]);
    log.append(&[event(4, &["a"], &[], false)], &[key(4, "fourth")])
        .unwrap();
    log.append(&[event(5, &["a"], &[], false)], &[key(5, "fifth")])
        .unwrap();
    assert!(log.trim(0, 1).unwrap().more, "two keys over, one per step");
    log.trim(0, 1).unwrap();
    assert_eq!(
        log.idempotency_keys(10).unwrap(),
        vec![(id(5), "fifth".to_owned())]
    );
}

#[test]
fn the_committer_stores_the_keys_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open_log(&config(dir.path())).unwrap());
    let (tx, rx) = mpsc::channel();
    let committer = GroupCommitter::start(log.clone(), move |report| {
        let _ = tx.send(report);
    });
    committer.append(event(1, &["a"], &[], false), Some(Arc::from("k1")));
    committer.append(event(2, &["a"], &[], false), None);
    committer.shutdown();
    let committed: usize = rx
        .try_iter()
        .map(|r| match r {
            CommitReport::Committed { count, .. } => count,
            CommitReport::Failed { error, .. } => panic!("{error}"),
        })
        .sum();
    assert_eq!(committed, 2);
    assert_eq!(
        log.idempotency_keys(10).unwrap(),
        [(id(1), "k1".to_owned())]
    );
}
