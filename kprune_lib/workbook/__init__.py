"""What the notebooks and sweeps use: one call per notebook section (steps), figures (plots), sweeps over a grid
(sweep) and where their points run (executors)."""
