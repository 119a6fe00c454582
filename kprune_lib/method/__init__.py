"""K-prune itself: knowledge measurement (§4.1, measurement), KPMS (§4.2, search), KPWT (§4.3, tuning), the loop of
Algorithm 1 (loop) and its schedules, the method registry (methods) and the baselines and ablations (baselines)."""
