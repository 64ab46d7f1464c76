"""mmenc-vl: vision-text encoders (BridgeTower) on mmenc's shared trunk."""

__version__ = "0.1.0"
