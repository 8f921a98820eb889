"""The domain: what freqcap computes, without I/O.

Events and feature definitions, exposure curves and caps, the policy contract and its engine, the simulator, the
stream's buckets and batch/stream seam, the conversion model's maths, offline evaluation and monitoring metrics.
Nothing here talks to a store, a service or an engine (import-linter enforces it: `make lint`); adapters
(`freqcap.adapters`) bring data in and out, jobs (`freqcap.jobs`) wire the two.
"""
