"""The command-line tools: the benchmark, the demo, the self-check."""
