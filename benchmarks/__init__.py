"""``pem-bench``: latency, throughput and accuracy benchmarks (built in the benchmark issue)."""
