"""`comp doctor`: is this machine ready to train."""
