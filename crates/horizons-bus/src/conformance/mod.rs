//! The conformance suite: one set of cases every bus backend must pass.
//!
//! Modelled on Watermill's `pubsub/tests/test_pubsub.go` (one generic function per behaviour,
//! capabilities declared by the backend and checked both ways) and apalis' `generic_storage_test!`
//! (a macro that stamps out one test per case). A backend crate implements [`Harness`] and writes,
//! in an integration test:
//!
//! ```ignore
//! fn harness() -> MyHarness { MyHarness::start() }
//! horizons_bus::conformance_suite!(harness);
//! ```
//!
//! The calling crate needs `tokio` (features `macros`, `rt-multi-thread`) as a dev-dependency.
//!
//! Every case isolates itself with a unique topic ([`unique_topic`]), declares its topology
//! before publishing, bounds every wait so that a broken backend fails instead of hanging, and
//! panics with a message saying what was expected. Payloads start with an 8-byte big-endian
//! sequence number ([`seq_payload`], [`parse_seq`]), so a case can name exactly which messages
//! were lost or duplicated. The helpers here are public so backends can reuse them in their own
//! backend-specific tests.

mod basic;
mod declare;
mod groups;
mod ordering;
mod replay;
mod restart;
mod retries;
mod scheduling;
mod stress;
mod support;

use std::sync::Arc;

pub use async_trait::async_trait;

pub use self::basic::{ack_is_final, large_message, redelivery_after_drop, redelivery_after_visibility_timeout, round_trip};
pub use self::declare::{capabilities_are_declared_honestly, idempotent_topology, oversize_and_unknown_topic_rejected};
pub use self::groups::{concurrent_producers, members_split_the_work, two_groups_each_see_everything};
pub use self::ordering::{ordering_block_key_under_retries, ordering_requeue_keeps_throughput};
pub use self::replay::{replay_from_offset, replay_from_time};
pub use self::restart::restart_mid_stream;
pub use self::retries::{dlq_list_and_redrive, malformed_payload_to_dlq, retries_then_dlq, retry_after_is_honoured};
pub use self::scheduling::{delayed_delivery, priorities};
pub use self::stress::stress;
pub use self::support::*;

use crate::backend::Backend;

/// What a backend's test crate provides to run the suite: a connected backend and a way to
/// restart the system under test.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// A backend connected to the system under test. Cases isolate themselves by unique topic
    /// names, so one broker (or one embedded data directory) may serve every case.
    async fn backend(&self) -> Arc<dyn Backend>;

    /// Stops the backend (the broker process, or the embedded engine) and starts it again, while
    /// the clients made by [`Harness::backend`] stay alive; they must recover by themselves.
    async fn restart(&self, backend: &Arc<dyn Backend>);

    /// Messages in [`restart_mid_stream`]'s stream (at least 50 000 for brokers).
    fn restart_stream_len(&self) -> usize {
        50_000
    }

    /// Messages in [`stress`] (at least 100 000).
    fn stress_len(&self) -> usize {
        100_000
    }
}

/// Expands into one `#[tokio::test]` per conformance case, each running the case against
/// `$make()`, a path to a `fn() -> H` where `H: Harness` (called once per test).
///
/// Invoke it once per test module; the tests are named after the cases.
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::conformance_suite!(@cases $make;
            round_trip,
            large_message,
            ack_is_final,
            redelivery_after_drop,
            redelivery_after_visibility_timeout,
            two_groups_each_see_everything,
            members_split_the_work,
            concurrent_producers,
            idempotent_topology,
            oversize_and_unknown_topic_rejected,
            capabilities_are_declared_honestly,
            retry_after_is_honoured,
            retries_then_dlq,
            dlq_list_and_redrive,
            malformed_payload_to_dlq,
            ordering_block_key_under_retries,
            ordering_requeue_keeps_throughput,
            priorities,
            delayed_delivery,
            replay_from_offset,
            replay_from_time,
            stress,
            restart_mid_stream,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::conformance::$case(&$make()).await;
            }
        )*
    };
}
