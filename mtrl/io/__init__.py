"""What runs write and read: checkpoints, file checks, the run logger, MuJoCo's log routing."""
