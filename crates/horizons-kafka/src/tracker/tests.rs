//! The tracker's rules, one scenario per test: commit positions never pass an unsettled
//! message, `BlockKey` releases a key only when its holder is done, leases and retries
//! bring messages back with growing attempts.

use std::time::{Duration, Instant};

use horizons_bus::{Envelope, OrderingMode, Settlement, Topic};

use super::{Action, Tracker};

const TP: (usize, i32) = (0, 0);

fn msg(key: &str) -> Envelope {
    Envelope::new(Topic::new("t").unwrap(), "x").with_key(key)
}

fn tracker(mode: OrderingMode, keys: &[&str]) -> Tracker {
    let mut t = Tracker::new(mode, Duration::from_secs(30));
    for (i, k) in keys.iter().enumerate() {
        let id = t.push(TP, i as i64 + 10, msg(k), None, 1);
        t.admit(id, None);
    }
    t
}

fn deliver_all(t: &mut Tracker) -> Vec<(u64, u32)> {
    std::iter::from_fn(|| t.next_delivery(Instant::now())).collect()
}

fn retry(d: Duration) -> Settlement {
    Settlement::RetryAfter { delay: d, error: "e".into() }
}

#[test]
fn commit_stops_at_first_unsettled() {
    let mut t = tracker(OrderingMode::Requeue, &["a", "b", "c"]);
    let d = deliver_all(&mut t);
    assert_eq!(d.len(), 3);
    assert_eq!(t.settle(d[1].0, d[1].1, Settlement::Ack, Instant::now()), Action::None);
    assert_eq!(t.commits(), [(TP, 10)]);
    t.committed(TP, 10);
    assert!(t.commits().is_empty());
    t.settle(d[0].0, d[0].1, Settlement::Ack, Instant::now());
    assert_eq!(t.commits(), [(TP, 12)]);
    t.settle(d[2].0, d[2].1, Settlement::Ack, Instant::now());
    assert_eq!(t.commits(), [(TP, 13)]);
}

#[test]
fn block_key_holds_later_messages_of_the_key() {
    let mut t = tracker(OrderingMode::BlockKey, &["a", "a", "b"]);
    let d = deliver_all(&mut t);
    assert_eq!(d.len(), 2, "the second 'a' must wait: {d:?}");
    let now = Instant::now();
    assert_eq!(t.settle(d[0].0, d[0].1, retry(Duration::from_millis(1)), now), Action::None);
    assert!(t.next_delivery(now).is_none(), "the key is blocked while its holder waits");
    t.fire_timers(now + Duration::from_millis(5));
    let again = t.next_delivery(now).unwrap();
    assert_eq!(again.0, d[0].0);
    assert_eq!(t.slot(again.0).unwrap().attempt, 2);
    t.settle(again.0, again.1, Settlement::Ack, now);
    let second = t.next_delivery(now).unwrap();
    assert_eq!(t.slot(second.0).unwrap().offset, 11);
}

#[test]
fn requeue_retry_moves_without_blocking() {
    let mut t = tracker(OrderingMode::Requeue, &["a", "a"]);
    let d = deliver_all(&mut t);
    assert_eq!(d.len(), 2);
    let a = t.settle(d[0].0, d[0].1, retry(Duration::from_secs(3)), Instant::now());
    assert_eq!(a, Action::Retry { slot: d[0].0, delay: Duration::from_secs(3) });
    assert_eq!(t.commits(), [(TP, 10)], "not committed before the copy is written");
    t.moved(d[0].0);
    assert_eq!(t.commits(), [(TP, 11)]);
}

#[test]
fn stale_and_released_deliveries() {
    let mut t = tracker(OrderingMode::Requeue, &["a"]);
    let (id, seq) = t.next_delivery(Instant::now()).unwrap();
    t.release(id, seq);
    let (id2, seq2) = t.next_delivery(Instant::now()).unwrap();
    assert_eq!((id2, seq2), (id, seq + 1));
    assert_eq!(t.slot(id).unwrap().attempt, 2);
    assert_eq!(t.settle(id, seq, Settlement::Ack, Instant::now()), Action::Stale);
    t.fire_timers(Instant::now() + Duration::from_secs(31));
    assert_eq!(t.settle(id2, seq2, Settlement::Ack, Instant::now()), Action::Stale, "lease ran out");
    let (_, seq3) = t.next_delivery(Instant::now()).unwrap();
    assert_eq!(t.slot(id).unwrap().attempt, 3);
    assert_eq!(t.delivered_in(TP), [(10, 3)]);
    assert_eq!(t.settle(id, seq3, Settlement::Ack, Instant::now()), Action::None);
    assert_eq!(t.outstanding(), 0);
}

#[test]
fn dropping_a_partition_frees_its_keys() {
    let mut t = tracker(OrderingMode::BlockKey, &["a"]);
    let other = t.push((1, 0), 0, msg("a"), None, 1);
    t.admit(other, None);
    let (id, _) = t.next_delivery(Instant::now()).unwrap();
    assert!(t.next_delivery(Instant::now()).is_none());
    t.drop_partition(TP);
    assert!(t.slot(id).is_none());
    assert_eq!(t.outstanding(), 0);
    assert_eq!(t.next_delivery(Instant::now()).map(|d| d.0), Some(other));
}

#[test]
fn passed_offsets_move_the_commit_position_without_a_delivery() {
    let mut t = Tracker::new(OrderingMode::Requeue, Duration::from_secs(30));
    let tp = (0, 0);
    for o in 10..13 {
        t.pass(tp, o);
    }
    assert_eq!(t.commits(), vec![(tp, 13)]);
    assert_eq!(t.position(tp), Some(13));
    let id = t.push(tp, 13, msg("k"), None, 1);
    t.admit(id, None);
    assert_eq!(t.position(tp), Some(13), "an open message holds the position");
    assert!(t.next_delivery(Instant::now()).is_some());
    assert_eq!(t.outstanding(), 1);
}

#[test]
fn a_freed_slot_id_never_finds_the_next_occupant() {
    let mut t = tracker(OrderingMode::Requeue, &["a"]);
    let (old, seq) = t.next_delivery(Instant::now()).unwrap();
    assert_eq!(t.settle(old, seq, Settlement::Ack, Instant::now()), Action::None);
    let new = t.push(TP, 11, msg("b"), None, 1);
    t.admit(new, None);
    assert_ne!(new, old, "the index is reused under a new id");
    let (id, seq2) = t.next_delivery(Instant::now()).unwrap();
    assert_eq!((id, seq2), (new, seq), "same index, same lease number");
    assert_eq!(t.settle(old, seq, Settlement::Ack, Instant::now()), Action::Stale);
    assert_eq!(t.outstanding(), 1, "the stale id settled nothing");
    assert_eq!(t.settle(new, seq2, Settlement::Ack, Instant::now()), Action::None);
}

#[test]
fn out_of_order_offsets_still_hold_the_commit_position() {
    let mut t = Tracker::new(OrderingMode::Requeue, Duration::from_secs(30));
    for o in [20, 22, 21] {
        let id = t.push(TP, o, msg("k"), None, 1);
        t.admit(id, None);
    }
    let per = msg("k").payload.len();
    assert_eq!(t.open_in(TP), (3, 3 * per));
    let d = deliver_all(&mut t);
    assert_eq!(t.position(TP), Some(20));
    t.settle(d[0].0, d[0].1, Settlement::Ack, Instant::now());
    assert_eq!(t.position(TP), Some(21), "21 arrived late but sits before 22");
    t.settle(d[2].0, d[2].1, Settlement::Ack, Instant::now());
    assert_eq!(t.position(TP), Some(22));
    t.settle(d[1].0, d[1].1, Settlement::Ack, Instant::now());
    assert_eq!(t.commits(), vec![(TP, 23)]);
    assert_eq!(t.open_in(TP), (0, 0));
}

#[test]
fn settled_leases_do_not_pile_up_and_expired_ones_come_back() {
    let mut t = Tracker::new(OrderingMode::Requeue, Duration::from_millis(10));
    let start = Instant::now();
    for round in 0..1000 {
        let id = t.push(TP, round, msg("k"), None, 1);
        t.admit(id, None);
        let (id, seq) = t.next_delivery(start).unwrap();
        t.settle(id, seq, Settlement::Ack, start);
        t.fire_timers(start);
    }
    assert!(t.leases.len() <= 1, "{} lease entries kept for settled deliveries", t.leases.len());
    let id = t.push(TP, 1000, msg("k"), None, 1);
    t.admit(id, None);
    let (id, seq) = t.next_delivery(start).unwrap();
    t.fire_timers(start + Duration::from_millis(5));
    assert_eq!(t.outstanding(), 1, "not yet expired");
    assert_eq!(t.next_timer(), Some(start + Duration::from_millis(10)));
    t.fire_timers(start + Duration::from_millis(11));
    assert_eq!(t.outstanding(), 0, "expired lease taken back");
    assert_eq!(t.settle(id, seq, Settlement::Ack, start), Action::Stale);
    let (again, _) = t.next_delivery(start).unwrap();
    assert_eq!(t.slot(again).map(|s| s.attempt), Some(2));
}
