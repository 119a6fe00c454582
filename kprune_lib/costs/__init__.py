"""What a unit costs: the paper's FLOPs formula (flops), measured latency tables (latency_model: the table as a
cost model; timing: how it is measured; latency: cached, checked, read back) and the cost models of a budget
(budget)."""
