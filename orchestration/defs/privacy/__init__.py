"""Privacy: per-device erasure (a job over a batch of requests) and bronze PCM retention."""
