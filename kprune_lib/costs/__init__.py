"""What a unit costs: the paper's FLOPs formula (flops), measured latency tables (latency) and the cost models of
a budget (budget)."""
