//! Model test of the log: random appends, reopens and reads against a `Vec` of payloads.

use bytes::Bytes;
use horizons_bus::{Envelope, Topic, TopicSpec, Topology};
use horizons_log::log::{Cursor, TopicLog};
use horizons_log::{Engine, EngineConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<usize>),
    Reopen,
    Read(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec(0usize..3000, 1..20).prop_map(Op::Append),
        1 => Just(Op::Reopen),
        2 => any::<u64>().prop_map(Op::Read),
    ]
}

fn payload(i: usize, size: usize) -> Bytes {
    Bytes::from((0..size).map(|j| (i * 31 + j) as u8).collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..25)) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let topic = Topic::new("m").unwrap();
            let cfg = EngineConfig { segment_bytes: 16 * 1024, ..EngineConfig::default() };
            let topo = Topology::new().topic(TopicSpec::new(topic.clone()));
            let mut engine = Engine::open(dir.path(), cfg.clone()).unwrap();
            engine.declare(&topo).unwrap();
            let mut model: Vec<Bytes> = Vec::new();
            for op in ops {
                match op {
                    Op::Append(sizes) => {
                        let envs = sizes.iter().enumerate()
                            .map(|(k, &s)| Envelope::new(topic.clone(), payload(model.len() + k, s)))
                            .collect::<Vec<_>>();
                        model.extend(envs.iter().map(|e| e.payload.clone()));
                        engine.publish(envs).await.unwrap();
                    }
                    Op::Reopen => {
                        engine.close().await;
                        engine = Engine::open(dir.path(), cfg.clone()).unwrap();
                    }
                    Op::Read(from) => {
                        let from = if model.is_empty() { 0 } else { from % (model.len() as u64 + 1) };
                        let log = TopicLog::open(&dir.path().join("topics/m"), topic.clone(), cfg.segment_bytes);
                        // The engine holds the directory; reading through a second handle is what
                        // a reader after a crash sees.
                        let log = log.unwrap();
                        let mut c = Cursor::at(from);
                        let mut got = Vec::new();
                        loop {
                            let b = log.read(&mut c, 4096).unwrap();
                            if b.is_empty() { break; }
                            for r in b {
                                prop_assert_eq!(r.offset, from + got.len() as u64);
                                got.push(r.envelope.payload);
                            }
                        }
                        prop_assert_eq!(&got[..], &model[from as usize..]);
                    }
                }
            }
            engine.close().await;
            Ok(())
        })?;
    }
}
