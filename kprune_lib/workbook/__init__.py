"""What the notebooks and sweeps use: one call per notebook section (steps), notebook 05's views of results
(results), figures (plots), sweeps over a grid (sweep, points) and where their points run (executors, slurm)."""
