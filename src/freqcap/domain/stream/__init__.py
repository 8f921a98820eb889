"""The stream's pure rules: time buckets and window sums, message parsing, and the batch/stream seam."""
