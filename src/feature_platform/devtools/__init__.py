"""The demo, the data generator and the process launcher the demo, tests and benchmarks use."""
