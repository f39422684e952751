"""The common training loop and what it needs: device, seeding, cost, checkpoints, progress."""
