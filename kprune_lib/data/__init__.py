"""Tasks and data: task definitions (tasks), GLUE and SQuAD files or the hub (glue, squad, squad_features), the
pruning sample and batches (batching), metrics and evaluation (metrics, squad_metrics, evaluate)."""
