"""What a run ships: the pruned checkpoint (checkpoint), its model card (model_card) and the ONNX export (onnx)."""
