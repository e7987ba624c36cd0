"""The feature server's own read path: read plans, pipelined Redis reads, decoding."""
