"""mtrl: a PyTorch framework for multi-task reinforcement learning."""
