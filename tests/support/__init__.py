"""Code the tests import: cases, assertions, the device doubles, the bad-input table,
the fuzzing harness, the concurrency and resources workloads."""
