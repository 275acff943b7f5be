//! The conformance suite on the in-memory store.

durable_testing::conformance_tests!(durable_testing::MemoryStoreBuilder);
