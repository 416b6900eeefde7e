"""Training runs: the online and offline loops, their shared base, replay, the divergence guard and sweeps."""
