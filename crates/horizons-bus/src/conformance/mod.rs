//! The conformance suite: one set of cases every backend must pass (work in progress).
